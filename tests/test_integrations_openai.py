"""The `openai` Python SDK, unchanged but for its base URL, through a real `agentgym serve` in front of
the simulated model: sync, async and streamed tool loops over a scenario task, an agent with no
AgentGym import at all, a live policy's decision reaching the SDK, and examples/openai_sdk.py."""

from __future__ import annotations

import asyncio
import json
import sys

from conftest import stopped_store
from helpers import check_recorded_run, forcing, recorded_episode, register_policy, run_script, wait_for_planner
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessage

from agentgym.integrations import async_http_client, episode, http_client
from agentgym.scenarios.framework_tools import TaskTools
from agentgym.scenarios.scenario import Scenario, Task, load_scenario
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.registry import Registry, default_dir

MODEL = "agentgym-sim"
MAX_REQUESTS = 8


def opening(scenario: Scenario, task: Task) -> list[dict]:
    return [{"role": "system", "content": scenario.system_prompt}, {"role": "user", "content": task.user}]


def went_on(messages: list[dict], message: ChatCompletionMessage, tools: TaskTools) -> bool:
    """The agent's side of a turn: keep the model's message, run the tools it called; False once it answered."""
    messages.append(message.model_dump(exclude_none=True, exclude={"annotations", "audio", "refusal", "parsed"}))
    specs = {spec.name: spec for spec in tools.specs}
    for call in message.tool_calls or ():
        content = specs[call.function.name].function(**json.loads(call.function.arguments))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": content})
    return bool(message.tool_calls)


def sync_loop(client: OpenAI, scenario: Scenario, task: Task, tools: TaskTools) -> None:
    messages = opening(scenario, task)
    for _ in range(MAX_REQUESTS):
        completion = client.chat.completions.create(model=MODEL, messages=messages, tools=scenario.tools, seed=0)
        if not went_on(messages, completion.choices[0].message, tools):
            return


async def async_loop(client: AsyncOpenAI, scenario: Scenario, task: Task, tools: TaskTools) -> None:
    messages = opening(scenario, task)
    for _ in range(MAX_REQUESTS):
        completion = await client.chat.completions.create(model=MODEL, messages=messages, tools=scenario.tools, seed=0)
        if not went_on(messages, completion.choices[0].message, tools):
            return


def streamed_loop(client: OpenAI, scenario: Scenario, task: Task, tools: TaskTools) -> None:
    """The SDK's own stream helper, which assembles the streamed tool calls."""
    messages = opening(scenario, task)
    for _ in range(MAX_REQUESTS):
        with client.chat.completions.stream(model=MODEL, messages=messages, tools=scenario.tools, seed=0,
                                            stream_options={"include_usage": True}) as stream:
            completion = stream.get_final_completion()
        assert completion.usage is not None and completion.usage.prompt_tokens > 0
        if not went_on(messages, completion.choices[0].message, tools):
            return


def test_sync_async_and_streamed_tool_loops_are_recorded_as_their_episodes(tiny, proxy):
    scenario = load_scenario(str(tiny))
    base_url = f"{proxy.url}/v1"
    client = OpenAI(base_url=base_url, api_key="sk-any", max_retries=0, http_client=http_client())
    aclient = AsyncOpenAI(base_url=base_url, api_key="sk-any", max_retries=0, http_client=async_http_client())
    runs: dict[str, tuple[str, TaskTools]] = {}
    for mode, task in zip(("sync", "async", "stream"), scenario.tasks, strict=False):
        tools = TaskTools(scenario, task)
        with episode(base_url=base_url) as ep:
            if mode == "sync":
                sync_loop(client, scenario, task, tools)
            elif mode == "async":
                asyncio.run(async_loop(aclient, scenario, task, tools))
            else:
                streamed_loop(client, scenario, task, tools)
            ep.success = tools.complete
        runs[ep.id] = (mode, tools)

    con = stopped_store(proxy)
    outcomes = set()
    for episode_id, (mode, tools) in runs.items():
        outcomes |= check_recorded_run(con, episode_id, tools.runs, tools.complete, streamed=mode == "stream",
                                       label=mode)
    assert outcomes == {"success", "error"}  # the model picked the deprecated twin once: both outcomes were read
    assert con.execute("SELECT count(DISTINCT episode_id) FROM inferences").fetchone()[0] == 3


def test_a_policy_promoted_live_reaches_the_sdk_and_its_decision_is_recorded(tiny, start_proxy, tmp_path):
    scenario = load_scenario(str(tiny))
    db = tmp_path / "steered.duckdb"
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__REFRESH_S": "0.1", "AGENTGYM_PLANNER__EPSILON": "0"})
    client = OpenAI(base_url=f"{proxy.url}/v1", api_key="sk-any", max_retries=0, http_client=http_client())
    messages = opening(scenario, scenario.tasks[0])

    def called() -> list[str]:
        completion = client.chat.completions.create(model=MODEL, messages=messages, tools=scenario.tools, seed=0)
        return [call.function.name for call in completion.choices[0].message.tool_calls]

    def streamed() -> list[str]:
        with client.chat.completions.stream(model=MODEL, messages=messages, tools=scenario.tools, seed=0) as stream:
            return [call.function.name for call in stream.get_final_completion().choices[0].message.tool_calls]

    with episode(base_url=f"{proxy.url}/v1", feedback=False) as before:
        assert called() == ["get_order_status"]  # the model's own pick for "What's the status of order A-1000?"
    registry = Registry(default_dir(db))
    version = register_policy(registry, forcing(shared_encoder().dimensions, "send_invoice"))
    registry.promote(version, by="test", reason="force a tool")
    wait_for_planner(proxy.url, live=version)
    with episode(base_url=f"{proxy.url}/v1", feedback=False) as steered:
        assert called() == ["send_invoice"] and streamed() == ["send_invoice"]
        # once a tool has returned in this turn, "force" offers its tool alone and lets the model answer
        completion = client.chat.completions.create(model=MODEL, messages=messages, tools=scenario.tools, seed=0)
        messages += [completion.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": completion.choices[0].message.tool_calls[0].id,
                      "content": '{"status": "sent"}'}]
        after = client.chat.completions.create(model=MODEL, messages=messages, tools=scenario.tools, seed=0)
        assert after.choices[0].message.tool_calls is None and after.choices[0].message.content

    con = stopped_store(proxy)
    assert recorded_episode(con, before.id).decisions == []
    forced = (version, "live", "force", "send_invoice", ["send_invoice"])
    assert recorded_episode(con, steered.id).decisions == [forced] * 4
    assert [name for name, _, _ in recorded_episode(con, steered.id).calls] == ["send_invoice"] * 3


def test_an_agent_with_no_agentgym_in_it_is_linked_into_episodes_with_its_tool_outcomes(proxy):
    """tests/agents/plain_openai_agent.py: two conversations, no episode header, no feedback."""
    said = [json.loads(line) for line in run_script([sys.executable, "tests/agents/plain_openai_agent.py"],
                                                    f"{proxy.url}/v1").splitlines()]
    con = stopped_store(proxy)
    episodes = [e for (e,) in con.execute("SELECT DISTINCT episode_id FROM inferences").fetchall()]
    assert len(episodes) == 2  # the two conversations, kept apart
    recorded = [recorded_episode(con, e) for e in episodes]
    expected = [[(c["name"], c["arguments"], "success" if c["ok"] else "error") for c in run["calls"]] for run in said]
    assert sorted(map(repr, (r.calls for r in recorded))) == sorted(map(repr, expected))
    assert {outcome for run in expected for _, _, outcome in run} == {"success", "error"}
    for r in recorded:  # the first request opens the episode; the next carries the tool's result back
        assert r.links[0] == "new" and set(r.links[1:]) <= {"prefix", "tool_call"} and len(r.links) >= 2
        assert r.feedback == []


def test_the_openai_sdk_example_runs_through_the_proxy(proxy):
    out = run_script([sys.executable, "examples/openai_sdk.py"], f"{proxy.url}/v1")
    episode_id = out.split()[1].rstrip(":")  # "episode ep-...: <answer>"
    con = stopped_store(proxy)
    recorded = recorded_episode(con, episode_id)
    assert recorded.calls == [("get_order_status", {"order_id": "A-1001"}, "success")]
    assert recorded.links == ["header", "header"] and recorded.feedback == [True]
