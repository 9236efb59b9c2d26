"""Every scenario runs end to end: simulated agents, through the real proxy process, recorded and reported."""

from __future__ import annotations

import asyncio

from helpers import report_json

from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario, scenario_files


def test_each_scenario_runs_through_the_proxy(start_proxy):
    """Each scenario's agents through a proxy configured as that deployment: the proxy reads every
    tool result as the scenario's backend meant it."""
    names = sorted(scenario_files())
    assert names == ["airline", "code_review", "customer_support", "data_analysis", "email_automation", "qa_testing"]
    for name in names:
        scenario = load_scenario(name)
        proxy = start_proxy(env=scenario.proxy_env())
        results = asyncio.run(run_episodes(proxy.url, scenario, episodes=4, seed=5, concurrency=4, stream_share=0.5))
        assert len(results) == 4 and all(r.episode_id for r in results), name
        report = report_json(str(proxy.db))
        assert report["episodes"]["total"] == 4 and report["episodes"]["finished"] == 4, name
        assert report["episodes"]["success"] == sum(r.success for r in results), name  # every episode sent feedback
        calls = report["tool_calls"]
        assert calls["total"] == sum(r.tool_calls for r in results), name  # streamed or not, every call was recorded
        # Every result the agents sent back was read as the backend meant it; only those of agents that hit
        # their request limit are unknown.
        assert calls["unknown"] == sum(r.unreported for r in results), name
        assert calls["error"] == sum(r.tool_errors for r in results), name
        assert report["requests"]["errors"] == 0, name
        proxy.stop()
