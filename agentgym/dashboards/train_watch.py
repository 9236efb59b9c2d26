"""`agentgym train --watch`: the training schedule under the terminal dashboard.

The rounds run as without --watch (`trainer.cli_rounds.run_schedule`: in the server that holds
the store, or on the file); the view shows the report (asked of that server, or read from the
file, every REPORT_EVERY_S and after each round), the last round's result and the time to the next.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn

from agentgym.config import Settings
from agentgym.dashboards.report_source import ReportError, fetch_report
from agentgym.dashboards.terminal import TOOL_SUCCESS_TARGET, dashboard
from agentgym.store.queries import Scope
from agentgym.trainer.cli_rounds import every_s, run_schedule

REPORT_EVERY_S = 10.0


def watch(settings: Settings, console: Console, *, rounds: int | None, target: float = TOOL_SUCCESS_TARGET) -> None:
    every = every_s(settings)
    progress = Progress(TextColumn("[bold]next round"), BarColumn(), TextColumn("{task.fields[when]}"), console=console)
    bar = progress.add_task("next round", total=every, when="the first one now")
    state: dict[str, Any] = {"report": None, "error": None, "fetched_at": None, "round_at": None, "rounds": []}

    def fetch() -> None:
        try:
            state["report"], state["error"] = fetch_report(settings, Scope.configured(settings.episodes), 100), None
        except ReportError as exc:
            state["error"] = str(exc)
        state["fetched_at"] = time.monotonic()

    def on_round(result: dict[str, Any]) -> None:
        state["rounds"].append(result)
        state["round_at"] = time.monotonic()
        state["fetched_at"] = None  # what the round changed shows at once

    def view():
        extra = [("last round", _round_line(len(state["rounds"]), state["rounds"][-1]))] if state["rounds"] else []
        if state["error"]:
            extra.append(("proxy report", state["error"]))
        return dashboard(state["report"], title=f"AgentGym training: {settings.store.path}", progress=progress,
                         target=target, extra=extra)

    def tick() -> None:
        now = time.monotonic()
        if state["fetched_at"] is None or now - state["fetched_at"] >= REPORT_EVERY_S:
            fetch()
        if state["round_at"] is not None:
            left = max(0.0, every - (now - state["round_at"]))
            progress.update(bar, completed=every - left, when=f"in {left:,.0f} s" if left else "due")
        live.update(view())

    with Live(view(), console=console, refresh_per_second=2) as live:
        run_schedule(settings, on_round, rounds=rounds, tick=tick)
        fetch()
        live.update(view())


def _round_line(number: int, result: dict[str, Any]) -> str:
    """`#3 registered: version v4, promoted True`: the round's status and its plain fields."""
    fields = ", ".join(f"{k} {v}" for k, v in result.items() if k != "status" and not isinstance(v, dict | list))
    return f"#{number} {result.get('status', '?')}" + (f": {fields[:200]}" if fields else "")
