"""Where a report comes from: the store file itself, or the server that holds it open.

DuckDB allows no other process to open a file a server is writing, so when the file is
locked we ask the server that announced itself for it (see store.live_server) to build
the same report from inside its process.
"""

from __future__ import annotations

from contextlib import closing
from datetime import datetime
from typing import Any

import duckdb
import httpx

from agentgym.config import Settings
from agentgym.dashboards.report import build_report
from agentgym.store import live_server
from agentgym.store.queries import Scope
from agentgym.store.schema import SchemaError, open_store


class ReportError(RuntimeError):
    pass


def fetch_report(settings: Settings, *, since: datetime | None, window: int) -> dict[str, Any]:
    path = settings.store.path
    scope = Scope.configured(settings.episodes, since)
    try:
        con = open_store(path, read_only=True)
    except FileNotFoundError as exc:
        raise ReportError(f"no AgentGym store at {path}") from exc
    except SchemaError as exc:
        raise ReportError(str(exc)) from exc
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise ReportError(f"cannot open {path}: {exc}") from exc
        return _from_server(path, scope, window, exc)
    with closing(con):
        return build_report(con, scope, window)


def _from_server(path, scope: Scope, window: int, lock_error: Exception) -> dict[str, Any]:
    server = live_server.find(path)
    if server is None:
        raise ReportError(f"{path} is locked by a process that is not a running AgentGym server: {lock_error}")
    params: dict[str, Any] = {"window": window}
    if scope.since is not None:
        params["since"] = scope.since.isoformat()
    try:
        response = httpx.get(
            f"{server.url}/admin/report", params=params,
            headers={"authorization": f"Bearer {server.token}"}, timeout=120,
        )
    except httpx.HTTPError as exc:
        raise ReportError(f"{path} is held by the AgentGym server at {server.url}, which did not answer: {exc}") from exc
    if response.status_code != 200:
        raise ReportError(f"the AgentGym server at {server.url} answered {response.status_code}: {response.text[:500]}")
    return response.json()
