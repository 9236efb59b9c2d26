"""The terminal dashboard (`agentgym demo`, `agentgym train --watch`): drawn from the report JSON
of a real proxy filled by the simulator, its figures are the ones `agentgym report --format json` prints."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from conftest import write_tiny
from helpers import register_policy, report_json
from rich.console import Console
from rich.progress import Progress

from agentgym.dashboards.terminal import dashboard
from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario
from agentgym.trainer.registry import Registry, default_dir


@pytest.fixture(scope="module")
def filled(logs, tmp_path_factory):
    """A proxy after 16 episodes of the `tiny` scenario, whose registry has a live version and a
    canary at 30%."""
    folder = tmp_path_factory.mktemp("terminal")
    scenario = load_scenario(str(write_tiny(folder)))
    model = local_stack.start_model(logs, args=["--scenario", str(folder / "tiny_orders.yaml"), "--seed", "1"])
    db = folder / "terminal.duckdb"
    registry = Registry(default_dir(db))
    live, canary = register_policy(registry, b_defer=3.0), register_policy(registry)
    registry.promote(live, by="test", reason="start")
    registry.start_canary(canary, 30, by="test", reason="try it")
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs, env={"AGENTGYM_ROLLOUT__AUTOMATIC": "false"})
    try:
        asyncio.run(run_episodes(proxy.url, scenario, episodes=16, seed=5, concurrency=4))
        yield proxy, live, canary
    finally:
        proxy.stop()
        model.stop()


def _shown(report: dict, text: str) -> None:
    """The figures of `report` on the rendered dashboard `text`, written here from the JSON."""
    calls, episodes, tokens = report["tool_calls"], report["episodes"], report["tokens"]
    assert f"{calls['success_rate']:.1%} of {calls['total']:,} calls, target 95.0%" in text
    gap = (0.95 - calls["success_rate"]) * 100
    assert (f"{gap:.1f} points below" if gap > 0 else "on target") in text
    assert f"{episodes['success_rate']:.1%} of {episodes['finished']:,} finished ({episodes['total']:,} in all)" in text
    assert f"prompt {tokens['prompt_per_request']:,.1f}, completion {tokens['completion_per_request']:,.1f}" in text
    assert f"${tokens['cost_usd_total']:.4f} total" in text
    latest = report["timeline"][-1]
    assert f"tool success {latest['tool_success_rate']:.1%}, episode success {latest['episode_success_rate']:.1%} " \
           f"over {latest['episodes']:,} episodes" in text
    failing = [t for t in report["by_tool"] if t["error"]]
    assert failing and all(f"{t['tool']} ({t['error_rate']:.1%})" in text for t in failing[:3])


def test_the_view_shows_the_report_json(filled):
    proxy, live, canary = filled
    report = report_json(str(proxy.db), "--window", "5")
    assert report["episodes"]["total"] == 16 and report["tool_calls"]["total"] > 0
    console = Console(record=True, width=200, color_system=None)
    progress = Progress(console=console)
    progress.add_task("episodes", total=16, completed=16)
    console.print(dashboard(report, title="AgentGym test", progress=progress, extra=[("agents", "16 done")]))
    text = console.export_text()
    _shown(report, text)
    assert f"policy in charge    {live}, 70% of episodes; canary {canary} at 30%" in text
    assert f"canary  {canary}, 30% of episodes" in text
    assert f"{canary}: candidate -> canary by test: try it" in text  # the rollout's latest moves
    assert "agents              16 done" in text


def test_train_watch_shows_the_rounds_and_stops_when_told(filled):
    proxy, live, _ = filled
    env = {**os.environ, "COLUMNS": "200", "AGENTGYM_TRAINER__EVERY_S": "1"}
    watch = subprocess.run([sys.executable, "-m", "agentgym", "train", "--db", str(proxy.db), "--watch", "--rounds", "2",
                            "--target", "0.5"], capture_output=True, text=True, timeout=120, env=env)
    assert watch.returncode == 0, watch.stderr
    report = report_json(str(proxy.db), "--window", "100")
    screen = watch.stdout
    # the round ran inside the server that holds the store; too few decisions to train on yet
    # on failure, what the screen and the proxy said
    said = f"{screen}\n--- proxy log ---\n{proxy.log_path.read_text()[-4000:] if proxy.log_path else ''}"
    assert "last round          #2 waiting: live " + live in screen, said
    calls = report["tool_calls"]
    gap = (calls["success_rate"] - 0.5) * 100
    assert f"{calls['success_rate']:.1%} of {calls['total']:,} calls, target 50.0%" in screen
    assert ("on target" if gap >= 0 else f"{-gap:.1f} points below") in screen
    assert f"prompt {report['tokens']['prompt_per_request']:,.1f}" in screen
    assert "next round" in screen
