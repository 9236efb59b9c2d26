"""The OpenAI Agents SDK through an AgentGym proxy: `Agent` + `Runner` on the proxy's chat completions.

The SDK's default model speaks the Responses API; the proxy serves chat completions, so the
agent's model is the SDK's `OpenAIChatCompletionsModel` over an `AsyncOpenAI` client on the
proxy, whose httpx client stamps the run's episode id. Task tools are `FunctionTool`s with the
scenario's JSON schema as it is (not rewritten to strict mode), so the proxy and its planner see
the tools the scenario declares. The SDK asks for streamed usage only from OpenAI's own URL, so
`run_task`'s agent asks for it (`ModelSettings(include_usage=True)`): the proxy records the model's
token counts rather than estimating them. The SDK's tracing exports to OpenAI; `run_task` turns it off.
"""

from __future__ import annotations

from typing import Any

try:
    from agents import (Agent, FunctionTool, MaxTurnsExceeded, ModelSettings, OpenAIChatCompletionsModel, RunConfig,
                        Runner)
    from openai import AsyncOpenAI
except ImportError as exc:
    raise ImportError("agentgym.integrations.openai_agents needs the OpenAI Agents SDK: "
                      "pip install 'agentgym[openai-agents]'") from exc

from agentgym.integrations import async_http_client, episode
from agentgym.scenarios.framework_tools import MAX_TURNS, TaskResult, TaskTools, ToolSpec
from agentgym.scenarios.scenario import Scenario, Task


def chat_model(base_url: str, *, model: str, api_key: str = "agentgym", **kwargs: Any) -> OpenAIChatCompletionsModel:
    """The SDK's chat-completions model on the proxy; `kwargs` go to `AsyncOpenAI` (an `http_client`
    given there replaces the one that stamps the episode id)."""
    client = AsyncOpenAI(base_url=base_url, api_key=api_key, **{"http_client": async_http_client(), **kwargs})
    return OpenAIChatCompletionsModel(model=model, openai_client=client)


def function_tool(tools: TaskTools, spec: ToolSpec) -> FunctionTool:
    """A task's tool; the model's arguments go to its backend as written (malformed JSON is a failed call)."""
    async def invoke(_context: Any, arguments: str) -> str:
        return tools.execute(spec.name, arguments)[1]

    return FunctionTool(name=spec.name, description=spec.description, params_json_schema=spec.parameters,
                        on_invoke_tool=invoke, strict_json_schema=False)


async def run_task(base_url: str, scenario: Scenario, task: Task, *, model: str = "agentgym-sim", seed: int = 0,
                   stream: bool = False) -> TaskResult:
    """One task through `Runner.run` (or `Runner.run_streamed`), at most MAX_TURNS model calls."""
    tools = TaskTools(scenario, task)
    async with async_http_client() as http:
        agent = Agent(name=scenario.name, instructions=scenario.system_prompt,
                      model=chat_model(base_url, model=model, http_client=http),
                      tools=[function_tool(tools, spec) for spec in tools.specs],
                      model_settings=ModelSettings(include_usage=True, extra_args={"seed": seed}))
        config = RunConfig(tracing_disabled=True)
        async with episode(base_url=base_url) as ep:
            try:
                if stream:
                    run = Runner.run_streamed(agent, task.user, max_turns=MAX_TURNS, run_config=config)
                    async for _ in run.stream_events():
                        pass
                else:
                    await Runner.run(agent, task.user, max_turns=MAX_TURNS, run_config=config)
            except MaxTurnsExceeded:
                pass  # out of turns: judged, as any run, by what its tools did
            ep.success = tools.complete
    return tools.result(ep.id)
