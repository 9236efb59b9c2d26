"""Executing an episode's tool calls, as the scenario's real backend would.

The environment knows the task (a real backend knows its own state): the right call with the
right arguments succeeds and returns its result; a call out of order fails with a missing
prerequisite, wrong arguments fail as "not found", and a tool that does not fit the request
fails as a real API does when asked to act on the wrong thing. These are the failures agents
meet in production, and the only outcome signal the proxy sees is the tool message we return.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from agentgym.scenarios.scenario import Step, Task


def _same(expected: Any, given: Any) -> bool:
    if isinstance(expected, list):
        return isinstance(given, list) and sorted(map(_norm, expected)) == sorted(map(_norm, given))
    if isinstance(expected, bool) or isinstance(given, bool):
        return expected == given
    if isinstance(expected, int | float) and isinstance(given, int | float | str):
        try:
            return abs(float(given) - float(expected)) < 1e-6
        except ValueError:
            return False
    return _norm(expected) == _norm(given)


def _norm(value: Any) -> str:
    return str(value).strip().casefold()


def _error(message: str) -> str:
    return orjson.dumps({"error": message}).decode()


class Environment:
    def __init__(self, task: Task, tool_descriptions: dict[str, str] | None = None) -> None:
        self.task = task
        self.done = [False] * len(task.steps)
        self.descriptions = tool_descriptions or {}

    @property
    def complete(self) -> bool:
        return all(self.done)

    @property
    def next_step(self) -> Step | None:
        """The first step not done yet."""
        return next((step for step, done in zip(self.task.steps, self.done, strict=True) if not done), None)

    def still_needed(self) -> str:
        """What the user still wants done, in plain words (the pending action as the backend's docs
        word it): what a user who knows their goal says when the agent stops short."""
        pending = self.next_step
        if pending is None:
            return "nothing more"
        what = self.descriptions.get(pending.tool, "").split(".")[0].strip()
        return (what[:1].lower() + what[1:]) if what else pending.tool.replace("_", " ")

    def execute(self, name: str, raw_arguments: str | None) -> tuple[bool, str]:
        """(succeeded, the tool message content)."""
        try:
            arguments = orjson.loads(raw_arguments or "{}")
        except orjson.JSONDecodeError as exc:
            return False, _error(f"invalid arguments for {name}: {exc}")
        if not isinstance(arguments, dict):
            return False, _error(f"arguments for {name} must be an object")
        pending = [i for i, done in enumerate(self.done) if not done]
        if pending and self.task.steps[pending[0]].tool == name:
            # the next calls of this tool may come in any order (look up these three reservations)
            run = list(itertools.takewhile(lambda i: self.task.steps[i].tool == name, pending))
            right = next((i for i in run if _matches(self.task.steps[i], arguments) is None), pending[0])
            return self._run(right, arguments)
        if pending and name in self.task.steps[pending[0]].equivalents:
            return self._run(pending[0], arguments, by_value=True)
        later = next((i for i in pending[1:] if self.task.steps[i].tool == name), None)
        if later is not None:
            needed = self.task.steps[pending[0]].tool
            return False, _error(f"cannot {name.replace('_', ' ')} yet: {needed} must succeed first")
        repeat = next((s for i, s in enumerate(self.task.steps) if self.done[i] and s.tool == name
                       and _matches(s, arguments) is None), None)
        if repeat is not None:  # asking again for what was already done: a real API answers the same
            return True, orjson.dumps(repeat.result).decode()
        what = self.descriptions.get(name, "").split(".")[0].lower() or name.replace("_", " ")
        return False, _error(f"{name} failed: this request is not one it can serve ({what})")

    def _run(self, index: int, arguments: dict[str, Any], *, by_value: bool = False) -> tuple[bool, str]:
        step = self.task.steps[index]
        problem = _values_match(step, arguments) if by_value else _matches(step, arguments)
        if problem is not None:
            return False, _error(problem)
        self.done[index] = True
        return True, orjson.dumps(step.result).decode()


def _matches(step: Step, arguments: dict[str, Any]) -> str | None:
    """None if the arguments are right for the step, else the error a real API would give."""
    for name, expected in step.arguments.items():
        if name not in arguments:
            return f"missing required argument '{name}'"
        if not _same(expected, arguments[name]):
            return f"{name} {arguments[name]!r} not found"
    return None


def _values_match(step: Step, arguments: dict[str, Any]) -> str | None:
    """For an equivalent tool, whose parameters have other names: each value the step needs, given once."""
    given = list(arguments.values())
    for name, expected in step.arguments.items():
        found = next((i for i, value in enumerate(given) if _same(expected, value)), None)
        if found is None:
            return f"no result for {orjson.dumps(arguments).decode()}: check the arguments"
        given.pop(found)
    return None
