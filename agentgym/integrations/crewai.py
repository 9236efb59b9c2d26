"""CrewAI through an AgentGym proxy: an `Agent` with tools on `LLM(base_url=...)`, in a one-task `Crew`.

With `provider="openai"` and a `base_url`, CrewAI's `LLM` is its native OpenAI client (not
litellm) on the proxy, whatever the model's name. CrewAI takes no httpx client; its hook for
requests is an interceptor on its own transport, which here stamps the run's episode id.
Task tools are CrewAI `BaseTool`s with the spec's pydantic model as their arguments (CrewAI
writes the JSON schema from it). CrewAI is synchronous: `run_task` runs the crew in a thread,
which keeps the run's context (and so its episode id).

CrewAI sends usage telemetry to its own servers unless `CREWAI_DISABLE_TELEMETRY=true`; where
they cannot be reached each run waits for that to time out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

try:
    from crewai import LLM, Agent, Crew
    from crewai import Task as CrewTask
    from crewai.llms.hooks.base import BaseInterceptor
    from crewai.tools import BaseTool
    from crewai.tools.tool_failure import ToolExecutionFailedError, ToolFailureReason
except ImportError as exc:
    raise ImportError("agentgym.integrations.crewai needs CrewAI: pip install 'agentgym[crewai]'") from exc

from agentgym.integrations import episode, episode_headers
from agentgym.scenarios.framework_tools import MAX_TURNS, TaskResult, TaskTools, ToolSpec
from agentgym.scenarios.scenario import Scenario, Task


class EpisodeStamp(BaseInterceptor[httpx.Request, httpx.Response]):
    """Puts the current run's episode id on each request CrewAI's client sends (unless it has one)."""

    def on_outbound(self, message: httpx.Request) -> httpx.Request:
        for name, value in episode_headers().items():
            message.headers.setdefault(name, value)
        return message

    def on_inbound(self, message: httpx.Response) -> httpx.Response:
        return message

    async def aon_outbound(self, message: httpx.Request) -> httpx.Request:
        return self.on_outbound(message)

    async def aon_inbound(self, message: httpx.Response) -> httpx.Response:
        return message


def chat_model(base_url: str, *, model: str, api_key: str = "agentgym", **kwargs: Any) -> LLM:
    """CrewAI's `LLM` on the proxy; `kwargs` go to it (`stream=True`, `seed`, ...)."""
    return LLM(**{"model": model, "provider": "openai", "base_url": base_url, "api_key": api_key,
                  "interceptor": EpisodeStamp(), **kwargs})


def crew_tool(spec: ToolSpec) -> BaseTool:
    class TaskTool(BaseTool):
        name: str = spec.name
        description: str = spec.description
        args_schema: type = spec.args_model

        def _run(self, **arguments: Any) -> str:
            return spec.function(**arguments)

    return TaskTool()


def _kickoff(base_url: str, scenario: Scenario, task: Task, model: str, seed: int, stream: bool) -> TaskResult:
    tools = TaskTools(scenario, task)
    agent = Agent(role=scenario.title, goal=scenario.description, backstory=scenario.system_prompt,
                  llm=chat_model(base_url, model=model, seed=seed, stream=stream),
                  tools=[crew_tool(spec) for spec in tools.specs], max_iter=MAX_TURNS)
    work = CrewTask(description=task.user, expected_output="The answer to the user.", agent=agent)
    with episode(base_url=base_url) as ep:
        try:
            Crew(agents=[agent], tasks=[work]).kickoff()
        except ToolExecutionFailedError as exc:
            if exc.record.failure.reason != ToolFailureReason.REPEATED_CALL:
                raise
            # CrewAI stopped an agent repeating one call: judged, as any run, by what its tools did
        ep.success = tools.complete
    return tools.result(ep.id)


async def run_task(base_url: str, scenario: Scenario, task: Task, *, model: str = "agentgym-sim", seed: int = 0,
                   stream: bool = False) -> TaskResult:
    """One task through a one-agent `Crew.kickoff()`, in a thread (`LLM(stream=True)` when `stream`)."""
    return await asyncio.to_thread(_kickoff, base_url, scenario, task, model, seed, stream)
