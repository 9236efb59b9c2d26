"""LangChain through a real proxy in front of the simulated model: `ChatOpenAI.bind_tools`, the
`create_agent` (LangGraph) tool loop invoked, awaited and streamed over scenario tasks, live
policies' decisions reaching both, and examples/langchain_agent.py."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys

import pytest
from conftest import stopped_store
from helpers import (check_recorded_run, expected_calls, forcing, recorded_episode, register_policy, run_script,
                     wait_for_planner)

from agentgym.integrations import episode
from agentgym.integrations import langchain as integration
from agentgym.scenarios.framework_tools import TaskTools
from agentgym.scenarios.scenario import load_scenario
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.registry import Registry, default_dir


def test_importing_it_without_langchain_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain_openai", None)  # as if it were not installed
    monkeypatch.delitem(sys.modules, "agentgym.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install 'agentgym\[langchain\]'"):
        importlib.import_module("agentgym.integrations.langchain")


def test_models_langchain_sends_to_the_responses_api_stay_on_chat_completions_through_chat_model(tiny, proxy):
    """The proxy serves Chat Completions only. LangChain moves `gpt-6` models with tools to the Responses
    API: a ChatOpenAI of the user's own gets 404 from the proxy; `chat_model` keeps it on Chat Completions."""
    from langchain_openai import ChatOpenAI
    from openai import NotFoundError

    scenario = load_scenario(str(tiny))
    tools = [integration.tool(spec) for spec in TaskTools(scenario, scenario.tasks[0]).specs]
    own = ChatOpenAI(base_url=f"{proxy.url}/v1", model="gpt-6-mini", api_key="sk-any", max_retries=0)
    with pytest.raises(NotFoundError):
        own.bind_tools(tools).invoke(scenario.tasks[0].user)
    through = integration.chat_model(f"{proxy.url}/v1", model="gpt-6-mini", max_retries=0)
    assert through.bind_tools(tools).invoke(scenario.tasks[0].user).tool_calls


def test_the_agent_loop_invoked_awaited_and_streamed_is_recorded_as_its_episodes(tiny, proxy):
    scenario = load_scenario(str(tiny))
    base_url = f"{proxy.url}/v1"
    awaited = asyncio.run(integration.run_task(base_url, scenario, scenario.tasks[1]))
    runs = {awaited.episode_id: ("run_task", awaited.tool_runs, awaited.success)}
    for mode, task in (("invoke", scenario.tasks[0]), ("stream", scenario.tasks[2])):
        tools = TaskTools(scenario, task)
        agent = integration.agent(base_url, scenario, tools, streaming=mode == "stream")
        state = {"messages": [{"role": "user", "content": task.user}]}
        with episode(base_url=base_url) as ep:
            if mode == "invoke":
                agent.invoke(state)
            else:
                chunks = list(agent.stream(state, stream_mode="messages"))
                assert any(getattr(message, "tool_call_chunks", None) for message, _ in chunks)  # streamed calls
            ep.success = tools.complete
        runs[ep.id] = (mode, tuple(tools.runs), tools.complete)

    con = stopped_store(proxy)
    outcomes = set()
    for episode_id, (mode, tool_runs, success) in runs.items():
        outcomes |= check_recorded_run(con, episode_id, tool_runs, success, streamed=mode == "stream", label=mode)
    assert outcomes == {"success", "error"}
    # LangChain sent the scenario's tools as they are declared (StructuredTool over the JSON schema)
    sent = json.loads(con.execute("SELECT request FROM inferences LIMIT 1").fetchone()[0])["tools"]
    assert sent == scenario.tools


def test_live_policies_reach_bind_tools_and_the_agent_loop(tiny, start_proxy, tmp_path):
    """A version forcing send_invoice makes `bind_tools`' one call come back with it; then one that
    offers only the deprecated twin steers the whole `create_agent` loop onto it."""
    scenario = load_scenario(str(tiny))
    db = tmp_path / "steered.duckdb"
    registry = Registry(default_dir(db))
    dimensions = shared_encoder().dimensions
    forcing_version = register_policy(registry, forcing(dimensions, "send_invoice"))
    offering_version = register_policy(registry, forcing(dimensions, "fetch_order_status", action="offer"))
    registry.promote(forcing_version, by="test", reason="force a tool")
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__REFRESH_S": "0.1", "AGENTGYM_PLANNER__EPSILON": "0"})
    base_url = f"{proxy.url}/v1"
    wait_for_planner(proxy.url, live=forcing_version)
    tools = TaskTools(scenario, scenario.tasks[0])
    llm = integration.chat_model(base_url, model="agentgym-sim").bind_tools([integration.tool(s) for s in tools.specs])
    with episode(base_url=base_url, feedback=False) as forced:
        message = llm.invoke([("system", scenario.system_prompt), ("user", scenario.tasks[0].user)])
    assert [call["name"] for call in message.tool_calls] == ["send_invoice"]

    registry.promote(offering_version, by="test", reason="offer one tool")
    wait_for_planner(proxy.url, live=offering_version)
    result = asyncio.run(integration.run_task(base_url, scenario, scenario.tasks[0]))
    assert [run.name for run in result.tool_runs] == ["fetch_order_status"] and not result.success

    con = stopped_store(proxy)
    assert recorded_episode(con, forced.id).decisions == [
        (forcing_version, "live", "force", "send_invoice", ["send_invoice"])]
    steered = recorded_episode(con, result.episode_id)
    offered = (offering_version, "live", "offer", None, ["fetch_order_status"])
    assert steered.decisions == [offered, offered]  # the call, then the answer after its error
    assert steered.calls == expected_calls(result.tool_runs) and steered.feedback == [False]


def test_the_langchain_example_runs_through_the_proxy(proxy):
    out = run_script([sys.executable, "examples/langchain_agent.py"], f"{proxy.url}/v1")
    episode_id = out.split()[1].rstrip(":")
    recorded = recorded_episode(stopped_store(proxy), episode_id)
    assert recorded.calls == [("get_order_status", {"order_id": "A-1002"}, "success")]
    assert recorded.links == ["header", "header"] and recorded.feedback == [True]
    assert "processing" in out
