"""Proxy overhead: open-loop load against the stand-in model, direct and through proxies.

Everything runs as real processes on 127.0.0.1: the stand-in upstream model
(`agentgym scenarios serve-model`), AgentGym with recording on (`agentgym serve --db ...`),
the Python floor (benchmarks/floor_proxy.py: Starlette + httpx passthrough) and LiteLLM's
proxy (from benchmarks/.venv-litellm, see BENCHMARKS.md). One stand-in model serves all targets.

The load is open-loop: request i is due at t0 + i/rate whether or not earlier ones have
finished, and its latency is measured from that due time, so a server (or generator) that
falls behind shows it in the latency instead of hiding it (no coordinated omission). The
client is a minimal HTTP/1.1 keep-alive client on raw asyncio streams (uvloop), to keep the
generator's own CPU small; its CPU per request is reported.

Per target, mode (non-streaming / streaming with stream_options.include_usage) and rate:
p50/p99 latency (streaming: time to the first body byte, i.e. the first SSE event), the
overhead against `direct` at the same rate, errors, and the CPU milliseconds per request of
the proxy's process tree (utime+stime from /proc). Then the highest rate each target
sustains (non-streaming) with < 1% errors and p99 < 100 ms, stepping the rate up and
stopping at the first failure.

    .venv/bin/python benchmarks/proxy_overhead.py              # the full run (~15-20 min)
    .venv/bin/python benchmarks/proxy_overhead.py --quick      # a smoke run (~2 min)

Raw results go to benchmarks/results/proxy_overhead-<date>.json; a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import math
import datetime as dt
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from agentgym.scenarios.local_stack import Service, free_port, start_model, start_proxy

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LITELLM_VENV = HERE / ".venv-litellm"
TICKS = os.sysconf("SC_CLK_TCK")
ALL_TARGETS = ("direct", "agentgym", "floor", "litellm")

TOOLS = [
    {"type": "function", "function": {
        "name": "get_order_details", "description": "Look up an order by id.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "e.g. W1001"}},
                       "required": ["order_id"]}}},
    {"type": "function", "function": {
        "name": "cancel_order", "description": "Cancel an order that has not shipped.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}, "reason": {"type": "string"}},
                       "required": ["order_id", "reason"]}}},
    {"type": "function", "function": {
        "name": "find_user", "description": "Find a customer by email.",
        "parameters": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]}}},
]


# --- the load generator ---------------------------------------------------------------------
class Client:
    """A minimal HTTP/1.1 keep-alive client for one host: a pool of raw asyncio connections."""

    IDLE_S = 3.0  # reuse a connection only if it was idle for less than this

    def __init__(self, port: int, path: str, auth: str, max_conns: int) -> None:
        self.port, self.path, self.max_conns = port, path, max_conns
        self.head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Accept: */*\r\nAuthorization: Bearer {auth}\r\n"
        ).encode()
        self.idle: list = []  # ((reader, writer), last used)
        self.open = 0
        self.waiters: collections.deque[asyncio.Future] = collections.deque()

    async def _acquire(self):
        while True:
            while self.idle:
                conn, used = self.idle.pop()
                if time.monotonic() - used < self.IDLE_S:
                    return conn
                self._discard(conn)  # servers close idle keep-alive connections (uvicorn: after 5 s)
            if self.open < self.max_conns:
                self.open += 1
                try:
                    return await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
                except BaseException:
                    self._wake(None)
                    self.open -= 1
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter  # a connection handed over, or None: a slot was freed, try again
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self._release(waiter.result())  # handed over just as we gave up: pass it on
                raise
            if conn is not None:
                return conn

    def _wake(self, conn) -> bool:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _release(self, conn) -> None:
        if not self._wake(conn):
            self.idle.append((conn, time.monotonic()))

    def _discard(self, conn) -> None:
        self.open -= 1
        try:
            conn[1].transport.abort()
        except Exception:  # noqa: BLE001
            pass
        self._wake(None)

    def close(self) -> None:
        for conn, _ in self.idle:
            self._discard(conn)
        self.idle.clear()

    async def request(self, body: bytes, stream: bool) -> tuple[int, float | None, bool]:
        """Send one request, read the whole answer. (status, first body byte time, complete)."""
        conn = await self._acquire()
        reader, writer = conn
        try:
            writer.write(self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            first = None
            complete = True
            if b"transfer-encoding: chunked" in lower:
                last = b""
                while True:
                    line = await reader.readuntil(b"\r\n")
                    size = int(line.split(b";", 1)[0], 16)
                    if size == 0:
                        await reader.readuntil(b"\r\n")  # no trailers from these servers
                        break
                    data = await reader.readexactly(size + 2)
                    if first is None:
                        first = time.perf_counter()
                    last = data
                if stream:
                    complete = b"[DONE]" in last
            else:
                start = lower.find(b"content-length:")
                if start < 0:
                    raise RuntimeError("response without content-length or chunked encoding")
                length = int(lower[start + 15 : lower.index(b"\r\n", start)])
                if length:
                    await reader.readexactly(length)
                first = time.perf_counter()
            if b"connection: close" in lower:
                self._discard(conn)
            else:
                self._release(conn)
            return status, first, complete
        except BaseException:
            self._discard(conn)
            raise


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]


def proc_tree_cpu_s(pid: int | None) -> float:
    """utime+stime of a process and all its live descendants, in seconds (0 if no pid)."""
    if pid is None:
        return 0.0
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        stats[int(entry)] = fields
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        if p in stats:
            total += int(stats[p][11]) + int(stats[p][12])  # utime, stime (fields 14, 15)
        todo.extend(children.get(p, ()))
    return total / TICKS


@dataclass
class Level:
    target: str
    mode: str
    rate: float
    duration_s: float
    sent: int = 0
    ok: int = 0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)  # non-streaming: whole answer; streaming: first byte
    totals_ms: list[float] = field(default_factory=list)  # streaming: whole stream
    lag_ms: list[float] = field(default_factory=list)  # generator: actual send - due time
    proxy_cpu_s: float = 0.0
    model_cpu_s: float = 0.0
    generator_cpu_s: float = 0.0
    wall_s: float = 0.0

    def summary(self) -> dict:
        n = max(self.sent, 1)
        return {
            "target": self.target, "mode": self.mode, "rate": self.rate, "duration_s": self.duration_s,
            "sent": self.sent, "ok": self.ok, "errors": self.errors, "error_rate": self.errors / n,
            "error_kinds": self.error_kinds,
            "p50_ms": _pct(self.latencies_ms, 50), "p90_ms": _pct(self.latencies_ms, 90),
            "p99_ms": _pct(self.latencies_ms, 99), "max_ms": max(self.latencies_ms, default=None),
            "stream_total_p50_ms": _pct(self.totals_ms, 50), "stream_total_p99_ms": _pct(self.totals_ms, 99),
            "generator_lag_p99_ms": _pct(self.lag_ms, 99),
            "achieved_rps": self.ok / self.wall_s if self.wall_s else None,
            "proxy_cpu_ms_per_req": 1000 * self.proxy_cpu_s / self.ok if self.ok else None,
            "model_cpu_ms_per_req": 1000 * self.model_cpu_s / self.ok if self.ok else None,
            "generator_cpu_ms_per_req": 1000 * self.generator_cpu_s / self.sent if self.sent else None,
        }


def _bodies(model: str, stream: bool):
    prefix = (
        '{"model":"%s","messages":[{"role":"system","content":"You are a support agent. Use the tools."},'
        '{"role":"user","content":"Please get_order_details order_id=W' % model
    ).encode()
    suffix = b'"}],"tools":' + json.dumps(TOOLS, separators=(",", ":")).encode()
    if stream:
        suffix += b',"stream":true,"stream_options":{"include_usage":true}'
    suffix += b"}"
    return lambda i: prefix + str(1000 + i).encode() + suffix


async def run_level(client: Client, level: Level, *, proxy_pid: int | None, model_pid: int | None,
                    timeout_s: float, measure: bool = True, counter: list[int]) -> Level:
    stream = level.mode == "stream"
    body_of = _bodies("agentgym-sim", stream)
    n = int(level.rate * level.duration_s)
    interval = 1.0 / level.rate
    pending: set[asyncio.Task] = set()

    async def one(due: float, body: bytes) -> None:
        level.lag_ms.append((time.perf_counter() - due) * 1000)
        try:
            async with asyncio.timeout(timeout_s):
                status, first, complete = await client.request(body, stream)
        except TimeoutError:
            level.errors += 1
            level.error_kinds["timeout"] = level.error_kinds.get("timeout", 0) + 1
            return
        except Exception as exc:  # noqa: BLE001
            kind = type(exc).__name__
            level.errors += 1
            level.error_kinds[kind] = level.error_kinds.get(kind, 0) + 1
            return
        done = time.perf_counter()
        if status != 200 or not complete:
            level.errors += 1
            kind = f"http_{status}" if status != 200 else "incomplete_stream"
            level.error_kinds[kind] = level.error_kinds.get(kind, 0) + 1
            return
        level.ok += 1
        if stream:
            level.latencies_ms.append((first - due) * 1000)
            level.totals_ms.append((done - due) * 1000)
        else:
            level.latencies_ms.append((done - due) * 1000)

    cpu0 = (proc_tree_cpu_s(proxy_pid), proc_tree_cpu_s(model_pid), resource.getrusage(resource.RUSAGE_SELF))
    t0 = time.perf_counter() + 0.01
    for i in range(n):
        due = t0 + i * interval
        delay = due - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        counter[0] += 1
        task = asyncio.create_task(one(due, body_of(counter[0])))
        pending.add(task)
        task.add_done_callback(pending.discard)
    level.sent = n
    if pending:
        _, still = await asyncio.wait(set(pending), timeout=timeout_s + 1)
        for task in still:  # should not happen (each request has its own timeout); bounded anyway
            task.cancel()
            level.errors += 1
            level.error_kinds["unfinished"] = level.error_kinds.get("unfinished", 0) + 1
    level.wall_s = time.perf_counter() - t0
    ru = resource.getrusage(resource.RUSAGE_SELF)
    level.proxy_cpu_s = proc_tree_cpu_s(proxy_pid) - cpu0[0]
    level.model_cpu_s = proc_tree_cpu_s(model_pid) - cpu0[1]
    level.generator_cpu_s = (ru.ru_utime + ru.ru_stime) - (cpu0[2].ru_utime + cpu0[2].ru_stime)
    return level


def settle(pids: list[int | None], max_s: float = 90.0, busy_below: float = 0.08) -> float:
    """Wait until the servers are idle (CPU over 0.5 s below busy_below of a core); bounded."""
    start = time.monotonic()
    while time.monotonic() - start < max_s:
        before = sum(proc_tree_cpu_s(p) for p in pids)
        time.sleep(0.5)
        if (sum(proc_tree_cpu_s(p) for p in pids) - before) / 0.5 < busy_below:
            break
    else:
        print(f"  warning: servers still busy after {max_s:.0f}s of waiting", flush=True)
    return time.monotonic() - start


# --- the targets ------------------------------------------------------------------------------
@dataclass
class Target:
    name: str
    port: int
    path: str
    service: Service | None = None
    process: subprocess.Popen | None = None
    db: Path | None = None
    notes: dict = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        if self.service is not None:
            return self.service.process.pid
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        elif self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{url} not ready within {timeout}s:\n{log.read_text(errors='replace')[-4000:]}")


def start_target(name: str, model: Service, workdir: Path, master_key: str) -> Target:
    upstream = model.url + "/v1"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    if name == "direct":
        return Target(name, model.port, "/v1/chat/completions")
    if name == "agentgym":
        db = workdir / "agentgym-bench.duckdb"
        for stale in (db, db.with_suffix(".duckdb.wal")):
            stale.unlink(missing_ok=True)
        last: Exception | None = None
        for attempt in range(3):  # the package may be mid-edit; retry after a pause
            try:
                service = start_proxy(upstream, db, workdir, env={"OPENAI_API_KEY": ""})
                return Target(name, service.port, "/v1/chat/completions", service=service, db=db)
            except RuntimeError as exc:
                last = exc
                print(f"agentgym serve failed to start (attempt {attempt + 1}):\n{exc}", file=sys.stderr)
                time.sleep(60)
        raise RuntimeError(f"agentgym serve did not start: {last}")
    port = free_port()
    log = workdir / f"{name}-{port}.log"
    if name == "floor":
        cmd = [sys.executable, str(HERE / "floor_proxy.py"), "--upstream", upstream, "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/healthz"
    elif name == "litellm":
        exe = LITELLM_VENV / "bin" / "litellm"
        if not exe.exists():
            raise RuntimeError(f"{exe} is missing; see BENCHMARKS.md for how to install LiteLLM's proxy there")
        config = workdir / "litellm_config.yaml"
        config.write_text((HERE / "litellm_config.yaml").read_text().replace("{API_BASE}", upstream))
        cmd = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
        env |= {"LITELLM_MASTER_KEY": master_key, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
        ready = f"http://127.0.0.1:{port}/health/liveliness"
    else:
        raise ValueError(name)
    with log.open("wb") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    _wait_ready(ready, process, log, timeout=120)
    return Target(name, port, "/v1/chat/completions", process=process, notes={"log": str(log)})


# --- the run ----------------------------------------------------------------------------------
async def bench_phase(target: Target, model: Service, args, master_key: str, results: dict, counter: list[int],
                      phase: str) -> None:
    """One phase on a freshly started target: the latency levels of one mode, or the sustained search."""
    pids = [target.pid, model.process.pid]
    client = Client(target.port, target.path, master_key, args.max_conns)
    # Warm-up: light traffic while the proxy finishes starting (AgentGym imports litellm in the
    # background for ~10 s), then wait until everything is idle.
    if args.warmup > 0 and target.pid is not None:
        await run_level(client, Level(target.name, "stream" if phase == "stream" else "nonstream", 20, args.warmup),
                        proxy_pid=None, model_pid=None, timeout_s=args.timeout, counter=counter)
    settle(pids)
    for mode in [phase] if phase != "sustain" else []:
        for rate in args.rates:
            await run_level(client, Level(target.name, mode, rate, args.level_warmup),
                            proxy_pid=None, model_pid=None, timeout_s=args.timeout, counter=counter)
            level = await run_level(client, Level(target.name, mode, rate, args.duration),
                                    proxy_pid=target.pid, model_pid=model.process.pid,
                                    timeout_s=args.timeout, counter=counter)
            s = level.summary()
            results["levels"].append(s)
            print(f"  {target.name:9s} {mode:9s} {rate:6.0f}/s  p50 {s['p50_ms'] or float('nan'):8.2f} ms  "
                  f"p99 {s['p99_ms'] or float('nan'):8.2f} ms  err {s['errors']:5d}/{s['sent']}  "
                  f"proxy {s['proxy_cpu_ms_per_req'] or 0:6.2f} CPU-ms/req  gen {s['generator_cpu_ms_per_req'] or 0:5.2f}",
                  flush=True)
            client.close()
            settle(pids)
            client = Client(target.port, target.path, master_key, args.max_conns)

    if phase == "sustain":
        steps, passed, failed = [], None, None
        rate = args.sustain_start
        while rate <= args.sustain_max:
            ok = await _sustain_step(client, target, model, rate, args, counter, steps, pids)
            client.close()
            client = Client(target.port, target.path, master_key, args.max_conns)
            if ok:
                passed = rate
                rate += args.sustain_step
            else:
                failed = rate
                break
        if failed is not None and args.sustain_refine and passed is not None:
            mid = passed + args.sustain_step / 2
            if await _sustain_step(client, target, model, mid, args, counter, steps, pids):
                passed = mid
            client.close()
        elif failed is not None and passed is None and args.sustain_start > 50:
            # below the first step: try a few lower rates
            for low in (args.sustain_start / 2, args.sustain_start / 4, args.sustain_start / 10):
                if await _sustain_step(client, target, model, low, args, counter, steps, pids):
                    passed = low
                    break
            client.close()
        results["sustained"][target.name] = {
            "max_rps": passed, "first_failure_rps": failed, "capped": failed is None, "steps": steps,
            "criterion": f"errors < 1% and p99 < {args.sustain_p99_ms} ms, non-streaming, {args.sustain_duration}s per step",
        }
        print(f"  {target.name:9s} sustained: {passed}/s (first failure: {failed})", flush=True)
    client.close()


async def _sustain_step(client, target, model, rate, args, counter, steps, pids) -> bool:
    await run_level(client, Level(target.name, "nonstream", rate, args.level_warmup),
                    proxy_pid=None, model_pid=None, timeout_s=args.sustain_timeout, counter=counter)
    level = await run_level(client, Level(target.name, "nonstream", rate, args.sustain_duration),
                            proxy_pid=target.pid, model_pid=model.process.pid,
                            timeout_s=args.sustain_timeout, counter=counter)
    s = level.summary()
    ok = s["error_rate"] < 0.01 and s["p99_ms"] is not None and s["p99_ms"] < args.sustain_p99_ms
    s["pass"] = ok
    steps.append(s)
    print(f"    sustain {target.name:9s} {rate:6.0f}/s  p50 {s['p50_ms'] or float('nan'):8.2f}  "
          f"p99 {s['p99_ms'] or float('nan'):8.2f} ms  err {s['errors']}/{s['sent']}  "
          f"proxy {s['proxy_cpu_ms_per_req'] or 0:.2f} CPU-ms/req  {'PASS' if ok else 'FAIL'}", flush=True)
    settle(pids)
    return ok


def agentgym_checks(target: Target) -> dict:
    """What AgentGym recorded (read after it stopped, so the file is closed and flushed)."""
    out: dict = {}
    try:
        ready = httpx.get(f"http://127.0.0.1:{target.port}/readyz", timeout=5).json()
        out["readyz"] = ready
        metrics = httpx.get(f"http://127.0.0.1:{target.port}/metrics", timeout=5).text
        out["internal_errors"] = [line for line in metrics.splitlines()
                                  if line.startswith("agentgym_internal_errors") and not line.endswith(" 0.0")]
    except Exception as exc:  # noqa: BLE001
        out["readyz_error"] = repr(exc)
    return out


def agentgym_rows(db: Path) -> dict:
    import duckdb

    try:
        con = duckdb.connect(str(db), read_only=True)
        try:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("inferences", "tool_calls")}
        finally:
            con.close()
    except Exception as exc:  # noqa: BLE001
        return {"error": repr(exc)}


def _versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("uvicorn", "starlette", "httpx", "uvloop", "httptools", "duckdb", "litellm"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    py = LITELLM_VENV / "bin" / "python"
    if py.exists():
        try:
            out["litellm_proxy_venv"] = subprocess.run(
                [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                capture_output=True, text=True, timeout=60).stdout.strip()
        except subprocess.TimeoutExpired:
            pass
    try:
        out["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                    text=True, timeout=10).stdout.strip()
        out["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "agentgym"], cwd=ROOT,
                                               capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        pass
    return out


def markdown(results: dict) -> str:
    levels = results["levels"]
    direct = {(lv["mode"], lv["rate"]): lv for lv in levels if lv["target"] == "direct"}

    def f(x, nd=2):
        return "–" if x is None else f"{x:.{nd}f}"

    lines = [
        "| target | mode | rate/s | p50 ms | p99 ms | overhead p50 ms | overhead p99 ms | errors | proxy CPU-ms/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for lv in levels:
        base = direct.get((lv["mode"], lv["rate"]))
        o50 = o99 = None
        if base and lv["target"] != "direct" and lv["p50_ms"] is not None and base["p50_ms"] is not None:
            o50, o99 = lv["p50_ms"] - base["p50_ms"], lv["p99_ms"] - base["p99_ms"]
        mode = "stream (TTFB)" if lv["mode"] == "stream" else "non-stream"
        cpu = "–" if lv["target"] == "direct" else f(lv["proxy_cpu_ms_per_req"])
        lines.append(
            f"| {lv['target']} | {mode} | {lv['rate']:.0f} | {f(lv['p50_ms'])} | {f(lv['p99_ms'])} | "
            f"{f(o50) if lv['target'] != 'direct' else '–'} | {f(o99) if lv['target'] != 'direct' else '–'} | "
            f"{lv['errors']}/{lv['sent']} | {cpu} |"
        )
    if results["sustained"]:
        lines += ["", "| target | sustained req/s (errors < 1%, p99 < 100 ms, non-stream) | first failing step | "
                      "proxy CPU-ms/req at the highest passing step |", "|---|---:|---:|---:|"]
        for name, s in results["sustained"].items():
            passing = [st for st in s["steps"] if st["pass"]]
            cpu = passing[-1]["proxy_cpu_ms_per_req"] if passing and name != "direct" else None
            first = "none up to cap" if s["capped"] else f"{s['first_failure_rps']:.0f}"
            lines.append(f"| {name} | {f(s['max_rps'], 0) if s['max_rps'] else '< lowest step'} | {first} | {f(cpu)} |")
    gen = [lv["generator_cpu_ms_per_req"] for lv in levels if lv["generator_cpu_ms_per_req"]]
    lag = [lv["generator_lag_p99_ms"] for lv in levels if lv["generator_lag_p99_ms"] is not None]
    if gen:
        lines += ["", f"Load generator: {min(gen):.3f}–{max(gen):.3f} CPU-ms per request; "
                      f"send lag behind schedule p99 {min(lag):.2f}–{max(lag):.2f} ms."]
    return "\n".join(lines)


async def main_async(args) -> dict:
    master_key = "sk-bench-" + secrets.token_hex(16)  # a throwaway key for the local LiteLLM proxy
    workdir = Path(tempfile.mkdtemp(prefix="agentgym-bench-"))
    results: dict = {
        "date": dt.date.today().isoformat(), "started": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()},
        "versions": _versions(), "args": {k: v for k, v in vars(args).items()},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "levels": [], "sustained": {}, "targets": {},
    }
    counter = [0]
    model = start_model(workdir)
    try:
        for name in args.targets:
            print(f"== {name}", flush=True)
            info: dict = {"phases": {}}
            results["targets"][name] = info
            phases = [*args.modes, *(["sustain"] if args.sustain else [])]
            for phase in phases:  # each phase on a fresh process: an overloaded level must not taint the next
                try:
                    target = start_target(name, model, workdir, master_key)
                except RuntimeError as exc:
                    print(f"  {name} could not start: {exc}", flush=True)
                    info["phases"][phase] = {"error": str(exc)[-4000:]}
                    continue
                phase_info: dict = {}
                try:
                    started = time.monotonic()
                    await bench_phase(target, model, args, master_key, results, counter, phase)
                    phase_info = {"seconds": round(time.monotonic() - started, 1), **target.notes}
                    if name == "agentgym":
                        phase_info |= agentgym_checks(target)
                finally:
                    target.stop()
                if target.db is not None:
                    phase_info["rows_after_stop"] = agentgym_rows(target.db)
                    print(f"  agentgym recorded ({phase}): {phase_info['rows_after_stop']}", flush=True)
                info["phases"][phase] = phase_info
    finally:
        model.stop()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    results["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    return results


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Open-loop proxy overhead benchmark (all on 127.0.0.1).")
    p.add_argument("--targets", default=",".join(ALL_TARGETS), help="comma list of " + ",".join(ALL_TARGETS))
    p.add_argument("--rates", default="50,200,500", help="arrival rates (req/s) for the latency table")
    p.add_argument("--modes", default="nonstream,stream", help="nonstream,stream")
    p.add_argument("--duration", type=float, default=12.0, help="measured seconds per level")
    p.add_argument("--level-warmup", type=float, default=2.0, help="unmeasured seconds at each level's rate first")
    p.add_argument("--warmup", type=float, default=16.0, help="seconds of light traffic after each proxy starts")
    p.add_argument("--timeout", type=float, default=5.0, help="per-request timeout in the latency levels (s)")
    p.add_argument("--max-conns", type=int, default=256, help="client connections per target")
    p.add_argument("--no-sustain", dest="sustain", action="store_false", help="skip the sustained-rate search")
    p.add_argument("--sustain-start", type=float, default=100)
    p.add_argument("--sustain-step", type=float, default=100)
    p.add_argument("--sustain-max", type=float, default=1500, help="cap of the search (req/s)")
    p.add_argument("--sustain-duration", type=float, default=8.0, help="measured seconds per step")
    p.add_argument("--sustain-timeout", type=float, default=2.0, help="per-request timeout in the search (s)")
    p.add_argument("--sustain-p99-ms", type=float, default=100.0)
    p.add_argument("--no-refine", dest="sustain_refine", action="store_false",
                   help="do not try half a step above the last passing rate")
    p.add_argument("--quick", action="store_true", help="smoke run: short levels, small search")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/proxy_overhead-DATE.json)")
    p.add_argument("--keep-workdir", action="store_true", help="keep logs and the AgentGym store in the temp dir")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.level_warmup, args.warmup = 3.0, 1.0, 12.0
        args.sustain_duration, args.sustain_max, args.sustain_step, args.sustain_refine = 3.0, 400, 200, False
        args.sustain_start = 200
    args.targets = [t for t in args.targets.split(",") if t]
    bad = set(args.targets) - set(ALL_TARGETS)
    if bad:
        p.error(f"unknown targets {sorted(bad)}")
    if "direct" in args.targets:  # the baseline runs first
        args.targets.remove("direct")
        args.targets.insert(0, "direct")
    args.rates = [float(r) for r in args.rates.split(",") if r]
    args.modes = [m for m in args.modes.split(",") if m]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    results = runner(main_async(args))
    out = args.out or HERE / "results" / f"proxy_overhead-{results['date']}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=str))
    print()
    print(markdown(results))
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
