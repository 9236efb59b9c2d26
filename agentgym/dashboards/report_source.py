"""Where a report comes from: the store file itself, or the server that holds it open.

DuckDB allows no other process to open a file a server is writing, so when the file is
locked we ask the server that announced itself for it (see store.live_server) to build
the same report from inside its process. The report's scope travels as the query of
`/admin/report` (`to_query`, `from_query`), which the web dashboard uses too.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import duckdb
import httpx

from agentgym.config import EpisodeConfig, Settings
from agentgym.dashboards.report import build_report
from agentgym.store import live_server
from agentgym.store.queries import Scope
from agentgym.store.schema import SchemaError, open_store
from agentgym.trainer.registry import Registry, default_dir


class ReportError(RuntimeError):
    pass


def to_query(scope: Scope, window: int | None) -> dict[str, str]:
    """The query string of `/admin/report` for this scope and window (None: "auto")."""
    given = {"since": scope.since, "until": scope.until, "model": scope.model, "scenario": scope.scenario}
    query = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in given.items() if v is not None}
    return {**query, "window": "auto" if window is None else str(window)}


def from_query(query: Mapping[str, str], episodes: EpisodeConfig) -> tuple[Scope, int | None]:
    """The scope and window a query asks for; ValueError saying which value is wrong."""

    def moment(name: str) -> datetime | None:
        value = query.get(name)
        if not value:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{name}: {value!r} is not an ISO time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

    raw_window = query.get("window", "100")
    if raw_window == "auto":
        window = None
    elif raw_window.isdigit() and int(raw_window) >= 1:
        window = int(raw_window)
    else:
        raise ValueError(f"window: {raw_window!r} is neither a whole number of episodes (1 or more) nor 'auto'")
    scope = Scope.configured(episodes, moment("since"), until=moment("until"), model=query.get("model") or None,
                             scenario=query.get("scenario") or None)
    return scope, window


def fetch_report(settings: Settings, scope: Scope, window: int | None) -> dict[str, Any]:
    path = settings.store.path
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
        return build_report(con, scope, window, registry=Registry(settings.planner.policies_dir or default_dir(path)),
                            control_share=settings.planner.control_share)


def _from_server(path, scope: Scope, window: int | None, lock_error: Exception) -> dict[str, Any]:
    server = live_server.find(path)
    if server is None:
        raise ReportError(f"{path} is locked by a process that is not a running AgentGym server: {lock_error}")
    try:
        response = httpx.get(
            f"{server.url}/admin/report", params=to_query(scope, window),
            headers={"authorization": f"Bearer {server.token}"}, timeout=120,
        )
    except httpx.HTTPError as exc:
        raise ReportError(f"{path} is held by the AgentGym server at {server.url}, which did not answer: {exc}") from exc
    if response.status_code != 200:
        raise ReportError(f"the AgentGym server at {server.url} answered {response.status_code}: {response.text[:500]}")
    return response.json()
