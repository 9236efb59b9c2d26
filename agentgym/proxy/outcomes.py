"""Reading a tool's result message as success, error or unknown.

Agents report tool failures in many shapes: `{"error": "..."}`, `{"status": "failed"}`,
an exception's text, or "Error: ...". The rules are configuration (`outcomes:` in
agentgym.yaml) so a deployment can teach the proxy its own tools' conventions. Several agent
frameworks (the OpenAI Agents SDK, AutoGen, CrewAI) send a tool's dict return value as Python's
`repr` (`{'error': 'not found'}`), so such a literal is read like JSON.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from agentgym.config import OutcomeRules

Outcome = Literal["success", "error", "unknown"]
MESSAGE_CHARS = 300
LITERAL_CHARS = 20_000  # a Python literal longer than this is read as text (parsing is linear but not free)


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    outcome: Outcome
    error_message: str | None = None


def message_text(content: Any) -> str:
    """The text of a message's content, which may be a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") if isinstance(part, dict) else str(part) for part in content
        )
    return str(content)


class OutcomeClassifier:
    def __init__(self, rules: OutcomeRules) -> None:
        self.rules = rules
        self._error_keys = {k.lower() for k in rules.error_keys}
        self._status_keys = {k.lower() for k in rules.status_keys}
        self._error_statuses = {s.lower() for s in rules.error_statuses}
        self._success_statuses = {s.lower() for s in rules.success_statuses}
        self._error_patterns = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in rules.error_patterns]

    def classify(self, content: Any) -> ToolOutcome:
        text = message_text(content).strip()
        if not text:
            return ToolOutcome(self.rules.empty_is)
        if text[0] in "{[":
            try:
                return self._classify_json(orjson.loads(text), text)
            except orjson.JSONDecodeError:
                if (value := _python_literal(text)) is not None:
                    return self._classify_json(value, text)
        for pattern in self._error_patterns:
            if pattern.search(text):
                return ToolOutcome("error", text[:MESSAGE_CHARS])
        return ToolOutcome(self.rules.text_is)

    def _classify_json(self, value: Any, text: str) -> ToolOutcome:
        if not isinstance(value, dict):
            return ToolOutcome("success")
        lowered = {str(k).lower(): v for k, v in value.items()}
        for key in self._error_keys:
            error = lowered.get(key)
            if error not in (None, False, "", [], {}):
                return ToolOutcome("error", _short(error))
        for key in self._status_keys:
            status = lowered.get(key)
            if isinstance(status, str):
                word = status.strip().lower()
                if word in self._error_statuses:
                    detail = lowered.get("message") or lowered.get("detail") or text
                    return ToolOutcome("error", _short(detail))
                if word in self._success_statuses:
                    return ToolOutcome("success")
        return ToolOutcome("success")


def _python_literal(text: str) -> Any:
    """A dict or list written as a Python literal (`repr`), or None; `ast.literal_eval` runs no code."""
    if len(text) > LITERAL_CHARS:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict | list) else None


def _short(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("message") or value.get("detail") or orjson.dumps(value).decode()
    elif not isinstance(value, str):
        value = orjson.dumps(value, default=str).decode()
    return value[:MESSAGE_CHARS]
