"""AutoGen through an AgentGym proxy: an `AssistantAgent` on `OpenAIChatCompletionClient`.

The client's `base_url` is the proxy; its `model_info` says what the model behind it can do
(AutoGen knows only OpenAI's own model names), and its `AsyncOpenAI` gets an httpx client that
stamps the run's episode id. Task tools are `BaseTool`s validating arguments with the spec's
pydantic model but offered with the scenario's JSON schema as it is, so the proxy and its planner
see the tools the scenario declares. `AssistantAgent` stops after one round of tool calls unless
told otherwise; `run_task` lets it go on to MAX_TURNS, as an agent that works a task through does.
AutoGen does not ask for streamed usage; a streaming `run_task` does (`stream_options`, a create
argument of the whole client, so only on a streaming agent's), and the proxy records the model's
token counts rather than estimating them.
"""

from __future__ import annotations

from typing import Any

try:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core import CancellationToken
    from autogen_core.models import ModelFamily, ModelInfo
    from autogen_core.tools import BaseTool, ToolSchema
    from autogen_ext.models.openai import OpenAIChatCompletionClient
    from pydantic import BaseModel
except ImportError as exc:
    raise ImportError("agentgym.integrations.autogen needs AutoGen: pip install 'agentgym[autogen]'") from exc

from agentgym.integrations import async_http_client, episode
from agentgym.scenarios.framework_tools import MAX_TURNS, TaskResult, TaskTools, ToolSpec
from agentgym.scenarios.scenario import Scenario, Task

# A chat-completions model with tool calls and JSON output; nothing more is assumed of it.
MODEL_INFO = ModelInfo(vision=False, function_calling=True, json_output=True, family=ModelFamily.UNKNOWN,
                       structured_output=False)


def chat_model(base_url: str, *, model: str, api_key: str = "agentgym", **kwargs: Any) -> OpenAIChatCompletionClient:
    """`OpenAIChatCompletionClient` on the proxy; `kwargs` go to it (`model_info` for a model AutoGen
    should know more of, `http_client` replacing the one that stamps the episode id)."""
    return OpenAIChatCompletionClient(**{"model": model, "base_url": base_url, "api_key": api_key,
                                         "model_info": MODEL_INFO, "http_client": async_http_client(), **kwargs})


class TaskTool(BaseTool[BaseModel, str]):
    """One of a task's tools."""

    def __init__(self, spec: ToolSpec) -> None:
        super().__init__(spec.args_model, str, spec.name, spec.description)
        self.spec = spec

    @property
    def schema(self) -> ToolSchema:
        return ToolSchema(name=self.spec.name, description=self.spec.description, parameters=self.spec.parameters)

    async def run(self, args: BaseModel, cancellation_token: CancellationToken) -> str:
        return self.spec.function(**args.model_dump())


async def run_task(base_url: str, scenario: Scenario, task: Task, *, model: str = "agentgym-sim", seed: int = 0,
                   stream: bool = False) -> TaskResult:
    """One task through `AssistantAgent.run` (`model_client_stream` when `stream`)."""
    tools = TaskTools(scenario, task)
    usage = {"stream_options": {"include_usage": True}} if stream else {}
    client = chat_model(base_url, model=model, seed=seed, **usage)
    agent = AssistantAgent("assistant", model_client=client, tools=[TaskTool(spec) for spec in tools.specs],
                           system_message=scenario.system_prompt, model_client_stream=stream,
                           max_tool_iterations=MAX_TURNS)
    try:
        async with episode(base_url=base_url) as ep:
            await agent.run(task=task.user)
            ep.success = tools.complete
    finally:
        await client.close()
    return tools.result(ep.id)
