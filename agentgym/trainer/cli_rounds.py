"""`agentgym train` beside or without a running proxy: where a round can run.

DuckDB lets no other process open a store a server is writing, so when the file is locked
the round runs inside the server that holds it (`POST /admin/train`, found through the note
it leaves beside the store); otherwise here, on the file itself.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from typing import Any

import duckdb
import httpx

from agentgym.config import Settings
from agentgym.store import live_server
from agentgym.store.queries import Scope
from agentgym.store.schema import SchemaError, open_store
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.registry import Registry, default_dir
from agentgym.trainer.rounds import train_round
from agentgym.trainer.wandb_export import WandbExport


class RoundError(RuntimeError):
    pass


def round_once(settings: Settings, export: WandbExport | None = None) -> dict[str, Any]:
    """One round; a round run here (not inside a server, which exports its own) goes to `export`,
    else to a W&B run of its own if one is configured."""
    path = settings.store.path
    try:
        con = open_store(path, read_only=True)
    except (FileNotFoundError, SchemaError) as exc:
        raise RoundError(str(exc)) from exc
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise RoundError(f"cannot open {path}: {exc}") from exc
        return _in_server(settings, exc)
    registry = Registry(settings.planner.policies_dir or default_dir(path))
    started = time.perf_counter()
    with closing(con):
        result = train_round(con, registry, shared_encoder(), settings.trainer, settings.planner, settings.rollout,
                             Scope.configured(settings.episodes), by="cli")
    exporting = export or WandbExport(settings.trainer.wandb)
    exporting(result["status"], time.perf_counter() - started, result)
    if export is None:
        exporting.close()
    return result


def _in_server(settings: Settings, lock_error: Exception) -> dict[str, Any]:
    server = live_server.find(settings.store.path)
    if server is None:
        raise RoundError(f"{settings.store.path} is locked by a process that is not a running AgentGym server: "
                         f"{lock_error}")
    try:
        response = httpx.post(f"{server.url}/admin/train", params={"by": "cli"},
                              headers={"authorization": f"Bearer {server.token}"}, timeout=600)
    except httpx.HTTPError as exc:
        raise RoundError(f"the AgentGym server at {server.url} did not answer: {exc}") from exc
    if response.status_code != 200:
        raise RoundError(f"the AgentGym server at {server.url} answered {response.status_code}: {response.text[:500]}")
    return response.json()


def run_schedule(settings: Settings, on_round: Callable[[dict[str, Any]], None], *, rounds: int | None = None,
                 tick: Callable[[], None] | None = None) -> None:
    """Rounds every `trainer.every_s` (default 300 s, the first now) on APScheduler, until interrupted
    (Ctrl-C, or SIGTERM, which `docker compose stop` sends) or `rounds` have run; `tick` is called
    about twice a second meanwhile (the terminal dashboard). A round that fails is reported as
    such and the schedule goes on."""
    from apscheduler.schedulers.background import BackgroundScheduler

    done: list[dict[str, Any]] = []
    export = WandbExport(settings.trainer.wandb)  # one W&B run for the rounds run here
    stopping = threading.Event()

    def job() -> None:
        if rounds is not None and len(done) >= rounds:
            return  # due while the caller was busy after the last round asked for: not run
        try:
            result = round_once(settings, export)
        except RoundError as exc:
            result = {"status": "failed", "reason": str(exc)}
        on_round(result)
        done.append(result)
        if rounds is not None and len(done) >= rounds:
            stopping.set()

    # "skipped: a round is running" is normal when a round outlasts the interval: not for the screen
    quiet = logging.getLogger("agentgym.trainer.cli_scheduler")
    quiet.setLevel(logging.ERROR)
    scheduler = BackgroundScheduler(daemon=True, logger=quiet)
    scheduler.add_job(job, "interval", seconds=every_s(settings), next_run_time=datetime.now().astimezone(),
                      max_instances=1, coalesce=True)
    in_main = threading.current_thread() is threading.main_thread()  # only it may take signals
    previous = signal.signal(signal.SIGTERM, lambda *_: stopping.set()) if in_main else None
    scheduler.start()
    try:
        while not stopping.is_set():
            if tick is not None:
                tick()
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        scheduler.shutdown(wait=False)
        export.close()
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def every_s(settings: Settings) -> float:
    return settings.trainer.every_s or 300
