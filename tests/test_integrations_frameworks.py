"""The OpenAI Agents SDK, AutoGen and CrewAI, each running its own agent loop through a real proxy in
front of the simulated model: what the proxy recorded, and the planner's decision reaching the agent.

Each framework's agent runs as a process of its own, in a Python that has the framework (CrewAI's
pins clash with AgentGym's own, so it has a venv of its own: `make .venv-crewai/.installed`).
"""

from __future__ import annotations

import asyncio
import importlib
import re
import subprocess
import sys

import pytest
from conftest import stopped_store
from recorded import ROOT, expected_outcomes, forcing_proxy, framework_env, framework_python, recorded, run_tasks

from agentgym.scenarios.framework_tools import MAX_TURNS

FRAMEWORKS = ["openai_agents", "autogen", "crewai"]
# CrewAI stops an agent that makes the same call with the same arguments, and gets the same result, 5 times.
FORCED_TURNS = {"openai_agents": MAX_TURNS, "autogen": MAX_TURNS, "crewai": 5}
EXAMPLES = {"openai_agents": "openai_agents.py", "autogen": "autogen_agent.py", "crewai": "crewai_agent.py"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_task_through_the_frameworks_loop_is_one_recorded_episode_streamed_or_not(framework, proxy, tiny, tmp_path):
    plain, streamed = run_tasks(framework, f"{proxy.url}/v1", tiny, [(0, 7, False), (1, 8, True)], tmp_path)
    con = stopped_store(proxy)
    for result, stream, seed in ((plain, False, 7), (streamed, True, 8)):
        seen = recorded(con, result.episode_id)
        assert result.tool_runs and seen.links == {"header"}  # every request carried the run's episode id
        assert len(seen.streamed) >= 2 and seen.streamed == [stream] * len(seen.streamed)
        assert seen.seeds == [seed] * len(seen.seeds)
        assert [name for name, _ in seen.calls] == [run.name for run in result.tool_runs]
        assert seen.outcomes == expected_outcomes(result)  # the agent answered: every result came back
        assert seen.feedback == [result.success]
    assert con.execute("SELECT count(DISTINCT episode_id) FROM inferences").fetchone()[0] == 2


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_planners_forced_tool_is_what_the_frameworks_agent_calls(framework, start_proxy, tiny, tmp_path):
    """A live version forcing send_invoice (no use to an order-status question), on streamed requests:
    the agent calls it on every turn until its loop stops it, and each decision is recorded."""
    proxy, version = forcing_proxy(start_proxy, tmp_path, "send_invoice")
    (result,) = run_tasks(framework, f"{proxy.url}/v1", tiny, [(0, 0, True)], tmp_path)
    seen = recorded(stopped_store(proxy), result.episode_id)
    turns = FORCED_TURNS[framework]
    assert [run.name for run in result.tool_runs] == ["send_invoice"] * turns and not result.success
    assert seen.decisions == [(version, "live", "force", "send_invoice")] * turns
    assert seen.offered_tools == turns and [name for name, _ in seen.calls] == ["send_invoice"] * turns
    assert seen.outcomes == ["error"] * (turns - 1) + [None]  # the last result was never sent back
    assert seen.feedback == [False]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_example_runs_as_a_user_would(framework, proxy, tmp_path):
    env = {**framework_env(tmp_path), "OPENAI_BASE_URL": f"{proxy.url}/v1", "MODEL": "agentgym-sim"}
    done = subprocess.run([str(framework_python(framework)), str(ROOT / "examples" / EXAMPLES[framework])],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-4000:]
    con = stopped_store(proxy)
    (episode_id,) = con.execute("SELECT DISTINCT episode_id FROM inferences").fetchone()
    seen = recorded(con, episode_id)
    assert seen.links == {"header"} and seen.calls == [("get_order_status", "success")]
    assert seen.feedback == [True] and "shipped" in done.stdout


def test_the_agents_sdks_default_responses_model_cannot_go_through_the_proxy(proxy):
    """The limit: the SDK's default model speaks the Responses API, which the proxy does not serve
    (404, nothing recorded). The workaround, with the agent unchanged: a run config whose provider
    uses chat completions."""
    from agents import Agent, OpenAIProvider, RunConfig, Runner
    from openai import AsyncOpenAI, NotFoundError

    agent = Agent(name="support", instructions="You help customers.", model="gpt-4o-mini")

    def run(use_responses: bool):
        client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="agentgym", max_retries=0)
        provider = OpenAIProvider(openai_client=client, use_responses=use_responses)
        return asyncio.run(Runner.run(agent, "Hello", run_config=RunConfig(model_provider=provider,
                                                                            tracing_disabled=True)))

    with pytest.raises(NotFoundError):
        run(use_responses=True)
    assert run(use_responses=False).final_output.startswith("I can help with that.")
    con = stopped_store(proxy)
    assert con.execute("SELECT count(*), min(model) FROM inferences").fetchone() == (1, "gpt-4o-mini")


@pytest.mark.parametrize(("framework", "package", "extra"), [("openai_agents", "agents", "openai-agents"),
                                                             ("autogen", "autogen_agentchat", "autogen"),
                                                             ("crewai", "crewai", "crewai")])
def test_a_missing_framework_says_which_extra_to_install(framework, package, extra, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, f"agentgym.integrations.{framework}", raising=False)
    with pytest.raises(ImportError, match=re.escape(f"pip install 'agentgym[{extra}]'")):
        importlib.import_module(f"agentgym.integrations.{framework}")
