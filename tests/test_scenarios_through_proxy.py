"""Every scenario runs end to end: simulated agents, through the real proxy process, recorded and reported."""

from __future__ import annotations

import asyncio

from helpers import report_json

from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario, scenario_files


def test_each_scenario_runs_through_the_proxy(proxy):
    names = sorted(scenario_files())
    assert names == ["airline", "code_review", "customer_support", "data_analysis", "email_automation", "qa_testing"]
    agent_calls = unreported = 0
    for name in names:
        results = asyncio.run(run_episodes(proxy.url, load_scenario(name), episodes=3, seed=5, concurrency=3,
                                           stream_share=0.5))
        assert len(results) == 3 and all(r.episode_id for r in results), name
        agent_calls += sum(r.tool_calls for r in results)
        unreported += sum(r.unreported for r in results)
    report = report_json(str(proxy.db))
    assert report["episodes"]["total"] == 18 and report["episodes"]["finished"] == 18
    assert report["episodes"]["success"] + report["episodes"]["failure"] == 18  # every episode sent feedback
    assert report["tool_calls"]["total"] == agent_calls  # streamed or not, every call the agents saw was recorded
    # Every result the agents sent back was read; only those of agents that hit their request limit are unknown.
    assert report["tool_calls"]["unknown"] == unreported
    assert report["requests"]["errors"] == 0
