"""The terminal dashboard that `agentgym demo` and `agentgym train --watch` show live.

One rich layout drawn from the report JSON (`dashboards.report`) and nothing else, so every
figure on it is one `agentgym report --format json` prints: tool reliability against its target,
episode success, tokens and cost per request, the most failing tools, the policy in charge and
the rollout (shadow, canary, their analyses, the latest moves), then the caller's progress bar
(episodes and time left in the demo; the next scheduled round in `train --watch`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table

from agentgym.dashboards.report import _num, _pct

# What a team usually asks of its agents' tool calls; `--target` changes it.
TOOL_SUCCESS_TARGET = 0.95


def dashboard(report: dict[str, Any] | None, *, title: str, progress: RenderableType,
              target: float = TOOL_SUCCESS_TARGET, extra: Sequence[tuple[str, str]] = ()) -> Group:
    """The whole view; `extra` rows go first (the demo's agents' own tally, the last training round)."""
    return Group(Panel(figures(report, target, extra), title=title), rollout_panel(report), progress)


def figures(report: dict[str, Any] | None, target: float, extra: Sequence[tuple[str, str]] = ()) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in extra:
        grid.add_row(label, escape(value))
    if report is None:
        grid.add_row("proxy report", "waiting for the first one")
        return grid
    calls, episodes, tokens = report["tool_calls"], report["episodes"], report["tokens"]
    grid.add_row("tool reliability", _reliability(calls["success_rate"], target, calls["total"]))
    if report["timeline"]:
        latest = report["timeline"][-1]
        grid.add_row("latest window", f"tool success {_pct(latest['tool_success_rate'])}, episode success "
                     f"{_pct(latest['episode_success_rate'])} over {latest['episodes']:,} episodes")
    grid.add_row("episode success", f"{_pct(episodes['success_rate'])} of {episodes['finished']:,} finished "
                 f"({episodes['total']:,} in all)")
    grid.add_row("tokens / request", f"prompt {_num(tokens['prompt_per_request'])}, "
                 f"completion {_num(tokens['completion_per_request'])}")
    grid.add_row("cost", f"${tokens['cost_usd_total']:.4f} total, "
                 f"{_num(tokens['cost_usd_per_request'], '${:.6f}')} per request, "
                 f"{_num(tokens['cost_per_successful_episode'], '${:.5f}')} per successful episode")
    worst = sorted((t for t in report["by_tool"] if t["error"]), key=lambda t: (-t["error"], t["tool"]))[:3]
    grid.add_row("most failing tools", ", ".join(f"{escape(t['tool'])} ({_pct(t['error_rate'])})" for t in worst) or "-")
    grid.add_row("policy in charge", _in_charge(report))
    return grid


def _reliability(rate: float | None, target: float, total: int) -> RenderableType:
    """A bar filled to the success rate, its text, and how far from the target it is."""
    row = Table.grid(padding=(0, 1))
    if rate is None:
        row.add_row(f"- (no tool call with a known outcome yet), target {_pct(target)}")
        return row
    gap = (rate - target) * 100
    verdict = "[green]on target[/green]" if gap >= 0 else f"[yellow]{-gap:.1f} points below[/yellow]"
    row.add_row(ProgressBar(total=1.0, completed=rate, width=24,
                            complete_style="green" if gap >= 0 else "yellow"),
                f"{_pct(rate)} of {total:,} calls, target {_pct(target)}: {verdict}")
    return row


def _in_charge(report: dict[str, Any]) -> str:
    rollout, versions = report["rollout"], report["policies"]
    text = (f"{rollout['live']}, {rollout['live_percent']:g}% of episodes" if rollout["live"]
            else "none (requests unchanged)")
    if rollout["canary"]:
        text += f"; canary {rollout['canary']['version']} at {rollout['canary']['percent']:g}%"
    if rollout.get("control_percent"):
        text += f"; control (no policy) {rollout['control_percent']:g}%"
    if rollout["shadow"]:
        text += f"; shadow {rollout['shadow']['version']}"
    trained = sum(v["engine"] == "torch" for v in versions)
    refused = sum(v["status"] == "refused" for v in versions)
    return f"{text}; {trained} trained, {refused} refused by the gate"


def rollout_panel(report: dict[str, Any] | None) -> Panel:
    """Where each version stands: the shadow and the canary with their latest analysis, and the
    latest moves (by whom, and why)."""
    rows = Table.grid(padding=(0, 2))
    rows.add_column(style="bold")
    rows.add_column(overflow="fold")
    rollout = report["rollout"] if report else {"shadow": None, "canary": None}
    for name in ("shadow", "canary"):
        trial = rollout[name]
        if trial is None:
            rows.add_row(name, "-")
            continue
        share = f", {trial['percent']:g}% of episodes" if name == "canary" else ""
        rows.add_row(name, f"{trial['version']}{share}")
        for line in trial["analysis"]:
            rows.add_row("", f"[dim]{escape(line)}[/dim]")
    moves = sorted(((h["at"], v["version"], h) for v in (report or {}).get("policies", []) for h in v["history"]),
                   key=lambda m: m[0])
    for _, version, move in moves[-4:]:
        rows.add_row("", f"{version}: {move['from']} -> {move['to']} by {move['by']}: {escape(move['reason'][:160])}")
    return Panel(rows, title="rollout: shadow -> canary -> live")
