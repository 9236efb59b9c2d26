"""A scenario task's tools as plain Python functions, for agent frameworks' own tool loops.

The simulated agents (`agents.py`) run their own loop with the `openai` SDK; a LangChain,
Agents SDK, AutoGen or CrewAI agent runs its framework's loop instead and needs the tools as
functions it can call, each with a name, a description and an argument schema. `TaskTools`
gives them, backed by the task's `Environment`, so what the framework's tools answer (and so
what the proxy reads as each call's outcome) is what the scenario's backend answers. Each
framework wraps `ToolSpec` its own way: the JSON schema as it is, or the pydantic model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, create_model

from agentgym.scenarios.environment import Environment
from agentgym.scenarios.scenario import Scenario, Task

# Model calls a framework's run of one task may make (the simulated agents' limit too): a run that
# a planner keeps forcing a tool on stops here, judged by what its tools did.
MAX_TURNS = 12

_JSON_TYPES: dict[str, Any] = {"string": str, "integer": int, "number": float, "boolean": bool, "object": dict}


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]  # the JSON schema, as the scenario declares it
    args_model: type[BaseModel]  # the same schema as a pydantic model, for frameworks that want one
    function: Callable[..., str]  # keyword arguments in, the backend's answer (JSON text) out


@dataclass(frozen=True)
class ToolRun:
    name: str
    arguments: dict[str, Any]
    ok: bool


@dataclass(frozen=True)
class TaskResult:
    """One task run through a framework's agent loop: what `agentgym.integrations.<framework>.run_task` returns."""
    episode_id: str
    success: bool
    tool_runs: tuple[ToolRun, ...]

    @property
    def tool_errors(self) -> int:
        return sum(not run.ok for run in self.tool_runs)


def _python_type(schema: dict[str, Any]) -> Any:
    if schema.get("type") == "array":
        return list[_python_type(schema.get("items") or {})]
    return _JSON_TYPES.get(schema.get("type", ""), Any)


def args_model(name: str, parameters: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model of a tool's JSON-schema parameters; optional ones default to None."""
    required = set(parameters.get("required", ()))
    fields: dict[str, Any] = {}
    for key, schema in (parameters.get("properties") or {}).items():
        kind = _python_type(schema)
        description = schema.get("description")
        if key in required:
            fields[key] = (kind, Field(description=description))
        else:
            fields[key] = (kind | None, Field(default=None, description=description))
    return create_model(f"{name}_arguments", __config__=ConfigDict(extra="allow"), **fields)


class TaskTools:
    """The tools of one task's run; `runs` keeps every call in order, `complete` says the task is done."""

    def __init__(self, scenario: Scenario, task: Task) -> None:
        descriptions = {t["function"]["name"]: t["function"].get("description", "") for t in scenario.tools}
        self.env = Environment(task, descriptions)
        self.runs: list[ToolRun] = []
        self._functions = [tool["function"] for tool in scenario.tools]

    @cached_property
    def specs(self) -> list[ToolSpec]:
        """Built on first use: an agent loop that executes the model's calls itself (`agents.run_episode`)
        never needs the pydantic models, whose making costs more than the episode's own work."""
        return [self._spec(function) for function in self._functions]

    @property
    def complete(self) -> bool:
        """Every step done; for a task that needs no tool, no tool called."""
        return self.env.complete and (bool(self.env.task.steps) or not self.runs)

    def result(self, episode_id: str) -> TaskResult:
        return TaskResult(episode_id, self.complete, tuple(self.runs))

    def call(self, name: str, arguments: dict[str, Any]) -> str:
        """Run one call against the backend; arguments left at None were not given."""
        given = {k: v for k, v in arguments.items() if v is not None}
        return self.execute(name, orjson.dumps(given).decode())[1]

    def execute(self, name: str, raw_arguments: str | None) -> tuple[bool, str]:
        """Run one call with its arguments as the model wrote them (JSON text, perhaps malformed):
        (succeeded, the tool message content)."""
        ok, content = self.env.execute(name, raw_arguments)
        try:
            arguments = orjson.loads(raw_arguments or "{}")
        except orjson.JSONDecodeError:
            arguments = {}
        self.runs.append(ToolRun(name, arguments if isinstance(arguments, dict) else {}, ok))
        return ok, content

    def _spec(self, function: dict[str, Any]) -> ToolSpec:
        name = function["name"]
        parameters = function.get("parameters") or {"type": "object", "properties": {}}

        def run(**kwargs: Any) -> str:
            return self.call(name, kwargs)

        run.__name__ = name
        run.__doc__ = function.get("description", "")
        return ToolSpec(name, function.get("description", ""), parameters, args_model(name, parameters), run)
