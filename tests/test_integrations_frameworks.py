"""The OpenAI Agents SDK, AutoGen and CrewAI, each running its own agent loop through a real proxy in
front of the simulated model: what the proxy recorded, and the planner's decision reaching the agent.

Each framework's agent runs as a process of its own (tests/framework_runs.py, the examples), in a
Python that has the framework: CrewAI's pins clash with AgentGym's own, so it has a venv of its own
(`make .venv-crewai/.installed`); the others are test dependencies.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import sys
from pathlib import Path

import pytest
from conftest import stopped_store
from helpers import (ROOT, check_recorded_run, expected_calls, forcing, recorded_episode, register_policy, run_script,
                     wait_for_planner)

from agentgym.scenarios.framework_tools import TaskResult, ToolRun
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.registry import Registry, default_dir

FRAMEWORKS = ["openai_agents", "autogen", "crewai"]
EXAMPLES = {"openai_agents": "examples/openai_agents.py", "autogen": "examples/autogen_agent.py",
            "crewai": "examples/crewai_agent.py"}


def framework_python(framework: str) -> str:
    """The Python that has the framework: CrewAI's own venv (the Makefile makes it), else this one."""
    if framework != "crewai":
        return sys.executable
    python = ROOT / ".venv-crewai" / "bin" / "python"
    assert python.exists(), "CrewAI runs in a venv of its own: make .venv-crewai/.installed"
    return str(python)


def framework_env(home: Path) -> dict[str, str]:
    """CrewAI's telemetry off (it would wait on servers it cannot reach), its files in `home`."""
    return {"CREWAI_DISABLE_TELEMETRY": "true", "HOME": str(home)}


def run_tasks(framework: str, base_url: str, scenario_file: Path, runs: list[tuple[int, int, bool]],
              workdir: Path) -> list[TaskResult]:
    """(task index, seed, stream) runs through the framework's `run_task`, in a process of its own."""
    out = workdir / f"{framework}-runs.json"
    run_script([framework_python(framework), "tests/framework_runs.py", framework, base_url, str(scenario_file),
                str(out), json.dumps(runs)], base_url, framework_env(workdir))
    return [TaskResult(r["episode_id"], r["success"], tuple(ToolRun(**run) for run in r["tool_runs"]))
            for r in json.loads(out.read_text())]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_task_through_the_frameworks_loop_is_one_recorded_episode_streamed_or_not(framework, proxy, tiny, tmp_path):
    plain, streamed = run_tasks(framework, f"{proxy.url}/v1", tiny, [(0, 7, False), (1, 8, True)], tmp_path)
    con = stopped_store(proxy)
    for result, stream, seed in ((plain, False, 7), (streamed, True, 8)):
        check_recorded_run(con, result.episode_id, result.tool_runs, result.success, streamed=stream,
                           label=f"{framework}, stream={stream}")
        seeds = con.execute("SELECT DISTINCT request::JSON->>'seed' FROM inferences WHERE episode_id = ?",
                            [result.episode_id]).fetchall()
        assert seeds == [(str(seed),)], framework  # run_task's seed reached the model on every request


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_planners_forced_tool_is_what_the_frameworks_agent_calls(framework, start_proxy, tiny, tmp_path):
    """A live version forcing send_invoice (no use to an order-status question), on streamed requests:
    the agent calls it, and once it has returned, the planner offers it alone and leaves the choice
    to the model, which answers: the agent's loop ends there instead of at its turn limit. Each
    decision is recorded."""
    db = tmp_path / "forcing.duckdb"
    registry = Registry(default_dir(db))
    version = register_policy(registry, forcing(shared_encoder().dimensions, "send_invoice"))
    registry.promote(version, by="test", reason="force send_invoice")
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__REFRESH_S": "0.1", "AGENTGYM_PLANNER__EPSILON": "0"})
    wait_for_planner(proxy.url, live=version)
    (result,) = run_tasks(framework, f"{proxy.url}/v1", tiny, [(0, 0, True)], tmp_path)
    recorded = recorded_episode(stopped_store(proxy), result.episode_id)
    assert [run.name for run in result.tool_runs] == ["send_invoice"] and not result.success
    assert recorded.decisions == [(version, "live", "force", "send_invoice", ["send_invoice"])] * 2
    assert recorded.calls == expected_calls(result.tool_runs)  # its result was sent back
    assert recorded.links == ["header"] * 2 and recorded.feedback == [False]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_example_runs_through_the_proxy(framework, proxy, tmp_path):
    out = run_script([framework_python(framework), EXAMPLES[framework]], f"{proxy.url}/v1", framework_env(tmp_path))
    episode_id = re.search(r"^episode (\S+):", out, re.MULTILINE).group(1)
    recorded = recorded_episode(stopped_store(proxy), episode_id)
    assert recorded.calls == [("get_order_status", {"order_id": "A-1002"}, "success")]
    assert recorded.links == ["header", "header"] and recorded.feedback == [True]
    assert "processing" in out


def test_the_agents_sdks_default_responses_model_cannot_go_through_the_proxy(proxy):
    """The limit: the SDK's default model speaks the Responses API, which the proxy does not serve
    (404, nothing recorded). The workaround, with the agent unchanged: a run config whose provider
    uses chat completions (or `chat_model`, or `set_default_openai_api("chat_completions")`)."""
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
