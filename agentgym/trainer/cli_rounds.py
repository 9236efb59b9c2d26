"""`agentgym train` beside or without a running proxy: where a round can run.

DuckDB lets no other process open a store a server is writing, so when the file is locked
the round runs inside the server that holds it (`POST /admin/train`, found through the note
it leaves beside the store); otherwise here, on the file itself.
"""

from __future__ import annotations

from collections.abc import Callable
import time
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


def run_schedule(settings: Settings, report: Callable[[dict[str, Any]], None]) -> None:
    """Rounds every `trainer.every_s` (default 300 s) until interrupted, on APScheduler."""
    from apscheduler.schedulers.blocking import BlockingScheduler

    scheduler = BlockingScheduler()
    export = WandbExport(settings.trainer.wandb)  # one W&B run for the rounds run here
    scheduler.add_job(lambda: report(round_once(settings, export)), "interval",
                      seconds=settings.trainer.every_s or 300, next_run_time=datetime.now().astimezone(), max_instances=1, coalesce=True)
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        export.close()

