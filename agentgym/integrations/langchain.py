"""LangChain through an AgentGym proxy: `ChatOpenAI` pointed at it, and a `create_agent` tool loop.

`ChatOpenAI` takes httpx clients of its own (`http_client` for `invoke`, `http_async_client` for
`ainvoke` and the agent's async loop), so the AgentGym-aware ones stamp the current episode's id on
every request the model makes, with nothing else changed. `run_task` runs one scenario task through
LangChain 1.x's own agent loop (`create_agent`, a LangGraph graph): the task's tools as
`StructuredTool`s with the scenario's JSON schemas as they are, so the model, and the planner, see
exactly the tools the scenario declares.
"""

from __future__ import annotations

from typing import Any

try:
    from langchain.agents import create_agent
    from langchain_core.tools import StructuredTool
    from langchain_openai import ChatOpenAI
    from langgraph.errors import GraphRecursionError
except ImportError as exc:  # the framework is an optional extra
    raise ImportError("agentgym.integrations.langchain needs LangChain: pip install 'agentgym[langchain]'") from exc

from agentgym.integrations import async_http_client, episode, http_client
from agentgym.scenarios.framework_tools import TaskResult, TaskTools, ToolSpec
from agentgym.scenarios.scenario import Scenario, Task

MAX_STEPS = 25  # LangGraph's recursion limit for one task: a model call and its tool calls are two steps


def chat_model(base_url: str, *, model: str, api_key: str = "agentgym", **kwargs: Any) -> ChatOpenAI:
    """`ChatOpenAI` pointed at the proxy (`base_url` ends with /v1), stamping the current episode's id.

    It stays on Chat Completions, the API the proxy serves: left to itself, LangChain moves some
    models (`gpt-5-pro`, codex, `gpt-6` with tools) and some options (`reasoning`, built-in tools) to
    the Responses API. Streamed calls ask for usage (`stream_options.include_usage`, which LangChain
    leaves off for a base URL other than OpenAI's), so the proxy records the model's token counts."""
    options = {"http_client": http_client(), "http_async_client": async_http_client(), "stream_usage": True,
               "use_responses_api": False, **kwargs}
    return ChatOpenAI(base_url=base_url, model=model, api_key=api_key, **options)


def tool(spec: ToolSpec) -> StructuredTool:
    """A task's tool as LangChain's, its JSON schema as the scenario declares it."""
    return StructuredTool.from_function(spec.function, name=spec.name, description=spec.description,
                                        args_schema=spec.parameters)


def agent(base_url: str, scenario: Scenario, tools: TaskTools, *, model: str = "agentgym-sim", seed: int = 0,
          **kwargs: Any) -> Any:
    """The scenario's agent as LangChain builds one: its system prompt, its tools, the proxied model
    (`kwargs` go to `ChatOpenAI`, e.g. `streaming=True`)."""
    llm = chat_model(base_url, model=model, seed=seed, max_retries=0, **kwargs)
    return create_agent(llm, [tool(spec) for spec in tools.specs], system_prompt=scenario.system_prompt)


async def run_task(base_url: str, scenario: Scenario, task: Task, *, model: str = "agentgym-sim",
                   seed: int = 0) -> TaskResult:
    """One task through `create_agent`'s loop inside `episode()`; its outcome goes to the proxy as feedback."""
    tools = TaskTools(scenario, task)
    graph = agent(base_url, scenario, tools, model=model, seed=seed)
    async with episode(base_url=base_url) as ep:
        try:
            await graph.ainvoke({"messages": [{"role": "user", "content": task.user}]},
                                {"recursion_limit": MAX_STEPS})
        except GraphRecursionError:
            pass  # out of steps: the task is judged on what its tools did, as any other run
        ep.success = tools.complete
    return tools.result(ep.id)
