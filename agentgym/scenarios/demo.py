"""`agentgym demo`: a scenario's agents, through the real proxy, in front of the simulated model.

Everything is real but the model: the simulated model and `agentgym serve` are separate
processes talking HTTP, the agents run tool loops with the `openai` SDK against the scenario's
environment and send feedback, the proxy's trainer runs rounds on the scenario's schedule and
hands each version that passes its gate to the rollout (shadow, canary steps, live; paced for a
demo), and the live view (dashboards.terminal) reads the proxy's own report while it runs.
The store is kept for `agentgym report --db FILE`.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from agentgym.config import load_settings
from agentgym.dashboards.report import print_tables
from agentgym.dashboards.report_source import ReportError, fetch_report
from agentgym.dashboards.terminal import dashboard, rollout_panel
from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import MODEL, EpisodeResult, run_episodes
from agentgym.scenarios.scenario import Scenario
from agentgym.store.queries import Scope

# The simulated model is priced like a small hosted model, so that cost shows as it would.
DEMO_PRICE = {MODEL: {"input_cost_per_token": 0.15e-6, "output_cost_per_token": 0.60e-6}}
# A rollout paced for a few minutes' traffic: the gate lets in a version estimated at most 2 points
# below the live one (its estimate rests on a few dozen held-out episodes here; the canary then
# measures it), each spends 50 episodes in shadow, then serves half of the episodes until the
# analysis decides (production's defaults: a gate margin of 0; 100 episodes, 5% / 25% / 50%, 3
# points' tolerance; agentgym.example.yaml). Latency is left out: the simulated model's latency
# measures how busy the demo's machine is, not a policy.
DEMO_PACE = {"AGENTGYM_TRAINER__GATE_MARGIN": "0.02",
                "AGENTGYM_ROLLOUT__STEPS": "[50]", "AGENTGYM_ROLLOUT__MIN_EPISODES": "50",
                "AGENTGYM_ROLLOUT__CHECK_S": "1",
                "AGENTGYM_ROLLOUT__METRICS": json.dumps({"episode_success": 0.10, "tool_success": 0.05,
                                                         "cost_per_success": 0.25})}


@dataclass
class Tally:
    """What the agents saw, for the progress line (the proxy's report is the record)."""

    episodes: int = 0
    successes: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    recent: list[EpisodeResult] = field(default_factory=list)

    def add(self, result: EpisodeResult) -> None:
        self.episodes += 1
        self.successes += result.success
        self.tool_calls += result.tool_calls
        self.tool_errors += result.tool_errors
        self.recent = [*self.recent[-99:], result]


def _report(db: Path, window: int) -> dict[str, Any]:
    settings = load_settings(store={"path": db})
    return fetch_report(settings, Scope.configured(settings.episodes), window)


def _live_report(db: Path) -> dict[str, Any] | None:
    try:
        return _report(db, 100)
    except ReportError:
        return None


def run_demo(*, scenario: Scenario, episodes: int, seed: int, db: Path, port: int, concurrency: int,
             console: Console) -> None:
    logs = Path(tempfile.mkdtemp(prefix="agentgym-demo-"))
    model = local_stack.start_model(logs, args=["--scenario", scenario.name, "--seed", str(seed)])
    every = scenario.round_every(episodes)
    proxy = None
    try:
        proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs, port=port or None,
                                        env={"AGENTGYM_PRICING": json.dumps(DEMO_PRICE), **scenario.proxy_env(),
                                             **scenario.learning_env(seed, every), **DEMO_PACE})
        console.print(f"proxy [bold]{proxy.url}/v1[/bold] -> simulated model {model.url}/v1; store {db}; logs {logs}; "
                      f"a training round every {every} finished episodes")
        _drive(scenario, proxy.url, db, episodes=episodes, seed=seed, concurrency=concurrency, console=console)
        if not proxy.stop():
            console.print(f"[red]the proxy did not shut down cleanly[/red]\n{proxy.log()}")
    finally:
        if proxy is not None:
            proxy.stop()
        model.stop()
    final = _report(db, max(1, episodes // 5))
    print_tables(final, console)
    console.print(rollout_panel(final))
    console.print(f"\nThe store is kept: [bold]agentgym report --db {db}[/bold]")


def _view(scenario: Scenario, progress: Progress, tally: Tally, report: dict[str, Any] | None) -> Group:
    recent_calls = sum(r.tool_calls for r in tally.recent)
    recent_errors = sum(r.tool_errors for r in tally.recent)
    agents = [("agents: tool success (last 100 episodes)",
               f"{(recent_calls - recent_errors) / recent_calls:.1%}" if recent_calls else "-"),
              ("agents: episode success (last 100)",
               f"{sum(r.success for r in tally.recent) / len(tally.recent):.1%}" if tally.recent else "-")]
    return dashboard(report, title=f"AgentGym demo: {scenario.name} ({len(scenario.tools)} tools, "
                     f"{len(scenario.tasks)} tasks)", progress=progress, extra=agents)


def _drive(scenario: Scenario, proxy_url: str, db: Path, *, episodes: int, seed: int, concurrency: int,
           console: Console) -> None:
    tally = Tally()
    progress = Progress(TextColumn("[bold]episodes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        TextColumn("left"), TimeRemainingColumn(), console=console)
    bar = progress.add_task("episodes", total=episodes)
    latest: dict[str, Any] = {}
    stop = threading.Event()

    def poll() -> None:  # the proxy's report, every couple of seconds, off the agents' event loop
        while not stop.wait(2.0):
            latest["report"] = _live_report(db) or latest.get("report")

    def on_result(result: EpisodeResult) -> None:
        tally.add(result)
        progress.advance(bar)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    with Live(_view(scenario, progress, tally, None), console=console, refresh_per_second=4) as live:
        async def run() -> None:
            task = asyncio.ensure_future(run_episodes(proxy_url, scenario, episodes=episodes, seed=seed,
                                                      concurrency=concurrency, on_result=on_result))
            while not task.done():
                live.update(_view(scenario, progress, tally, latest.get("report")))
                await asyncio.sleep(0.25)
            task.result()

        started = time.monotonic()
        asyncio.run(run())
        stop.set()
        latest["report"] = _live_report(db) or latest.get("report")
        live.update(_view(scenario, progress, tally, latest.get("report")))
    elapsed = time.monotonic() - started
    console.print(f"{episodes} episodes in {elapsed:.1f}s ({episodes / elapsed:.1f} episodes/s)")
