"""The stand-in model, the proxy and Agent Lightning's server as real processes on loopback, for the
demo, tests and benchmarks; and `ThreadServer`, an ASGI app under uvicorn on a thread of this process
(TrainedAgent's in-process proxy, the tests' stand-in servers)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Service:
    """A child process serving HTTP on 127.0.0.1."""

    name: str
    port: int
    process: subprocess.Popen
    log_path: Path | None = None
    db: Path | None = None  # the store file, for a proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 30) -> bool:
        """SIGTERM, then wait (a graceful shutdown flushes the recorder); SIGKILL if it hangs.

        True if it shut down cleanly: exit 0, or uvicorn's re-raised SIGTERM after a graceful stop.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                return False
        return self.process.returncode in (0, -signal.SIGTERM)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


def start(name: str, args: list[str], *, port: int, ready_path: str, log_dir: Path, env: dict[str, str] | None = None,
          timeout: float = 60, command: list[str] | None = None) -> Service:
    """Run `python -m agentgym ARGS` (or `command`, in `log_dir`) and wait until GET ready_path answers 200."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    child_env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **(env or {})}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command or [sys.executable, "-m", "agentgym", *args], stdout=log, stderr=subprocess.STDOUT, env=child_env,
            cwd=log_dir if command else None,
        )
    service = Service(name, port, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log()}")
        try:
            if httpx.get(service.url + ready_path, timeout=1).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    service.stop()
    raise RuntimeError(f"{name} was not ready within {timeout}s:\n{service.log()}")


def start_model(log_dir: Path, port: int | None = None, *, args: list[str] | None = None) -> Service:
    """The simulated model; `args` are serve-model options (--scenario, --seed, --knob)."""
    port = port or free_port()
    return start("model", ["scenarios", "serve-model", "--port", str(port), *(args or [])], port=port,
                 ready_path="/v1/models", log_dir=log_dir)


def start_proxy(upstream: str, db: Path, log_dir: Path, *, port: int | None = None, extra_args: list[str] | None = None,
                env: dict[str, str] | None = None) -> Service:
    port = port or free_port()
    args = ["serve", "--upstream", upstream, "--port", str(port), "--db", str(db), *(extra_args or [])]
    service = start("proxy", args, port=port, ready_path="/healthz", log_dir=log_dir, env=env)
    service.db = db
    return service


class ThreadServer:
    """`app` served by uvicorn on 127.0.0.1 (`port`, or a free one) on a daemon thread; `config` goes to uvicorn."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        import uvicorn

        self.port = port or free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    **{"log_level": "warning", **config}))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"uvicorn-{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.server.should_exit = True
                raise RuntimeError(f"the server for {self.url} did not start (its error is logged above)")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def __enter__(self) -> ThreadServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_agl_server(log_dir: Path, *, model_name: str, key: str, port: int | None = None) -> Service:
    """Agent Lightning's `agl-server` (Hydra overrides on its command line; its files in `log_dir`):
    its gateway serves `model_name`, its API wants `key`."""
    port = port or free_port()
    command = [str(Path(sys.executable).parent / "agl-server"), "host=127.0.0.1", f"port={port}", f"key={key}",
               f"default_proxy.model_name={model_name}", f"hydra.run.dir={log_dir / f'agl-{port}'}"]
    return start("agl-server", [], port=port, ready_path="/healthz", log_dir=log_dir, command=command)
