"""The `openai` Python SDK through an AgentGym proxy: its clients, and a scenario task through its loop.

The SDK needs nothing but the base URL; the clients here add the episode header of the run in
progress (`agentgym.integrations.episode()`) through the SDK's own `http_client` argument.
`run_task` is the simulated agents' loop (`agentgym.scenarios.agents.run_episode`: the SDK's
chat completions, the task's tools run as the model calls them) inside an episode, so that
`Trainer(framework="openai")` trains on the same agent as `agentgym demo`.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI, OpenAI

from agentgym.integrations import async_http_client, episode, http_client
from agentgym.scenarios.agents import run_episode, through_proxy
from agentgym.scenarios.framework_tools import TaskResult, TaskTools
from agentgym.scenarios.scenario import Scenario, Task


def chat_model(base_url: str, *, model: str, api_key: str = "agentgym", **kwargs: Any) -> OpenAI:
    """An `openai.OpenAI` client on the proxy that stamps the current episode's id on every request.
    `model` is not kept: the SDK names the model on each call (`client.chat.completions.create(model=...)`).
    For asyncio, `async_chat_model` takes the same arguments and returns an `AsyncOpenAI`."""
    return OpenAI(base_url=base_url, api_key=api_key, http_client=http_client(), **kwargs)


def async_chat_model(base_url: str, *, model: str, api_key: str = "agentgym", **kwargs: Any) -> AsyncOpenAI:
    """The `AsyncOpenAI` twin of `chat_model`."""
    return AsyncOpenAI(base_url=base_url, api_key=api_key, http_client=async_http_client(), **kwargs)


async def run_task(base_url: str, scenario: Scenario, task: Task, *, model: str = "agentgym-sim",
                   seed: int = 0) -> TaskResult:
    """One task through the SDK's tool loop in an episode of its own; its outcome sent as feedback."""
    tools = TaskTools(scenario, task)
    async with async_chat_model(base_url, model=model, max_retries=0) as client, episode(base_url=base_url) as run:
        run.metadata = {"scenario": scenario.name, "task": task.id}
        await run_episode(through_proxy(client, scenario.tools, seed=seed, stream=False, model=model), scenario, task,
                          tools=tools)
        run.success = tools.complete
    return tools.result(run.id)
