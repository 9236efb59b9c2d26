"""Recorded contexts: each request that offered tools, as the client sent it, with the tool the
model then called first, how that call went, and how its episode ended.

They are the Agent Lightning engine's data: the replay rollouts' inputs (a planner is asked again
on the same conversation and tools, nothing is re-executed) and the reward model's examples.
They need the request bodies (`store.record_bodies`, on by default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import orjson

from agentgym.store.queries import Scope, with_base

CONTEXTS_SQL = """
WITH first_call AS (  -- the tool the model called first in answer to the request, and how it went
    SELECT c.inference_id, arg_min(c.name, tc.position) AS name, arg_min(c.outcome, tc.position) AS outcome
    FROM calls c JOIN tool_calls tc ON tc.id = c.id GROUP BY c.inference_id
)
SELECT i.id, i.episode_id, i.request, f.name, f.outcome, e.ok
FROM inf i
JOIN episodes e USING (episode_id)
LEFT JOIN first_call f ON f.inference_id = i.id
WHERE i.tools_offered > 0 AND i.status = 200
ORDER BY i.created_at, i.id
"""


@dataclass(frozen=True)
class Context:
    """One recorded request that offered tools."""

    inference_id: str
    episode_id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    called: str | None  # the tool the model called first; None: it answered in text
    call_ok: bool | None  # that call's outcome; None: no call, or its outcome unknown
    episode_ok: bool | None  # the episode's outcome; None: not finished or no outcome known

    def tool(self, name: str) -> dict[str, Any] | None:
        """The offered function named `name`, if any."""
        return next((t["function"] for t in self.tools if isinstance(t, dict)
                     and isinstance(t.get("function"), dict) and t["function"].get("name") == name), None)

    def replay_row(self) -> dict[str, Any]:
        """What a replay rollout is given: the conversation and tools as the client sent them, and
        the tool the model called (to score a planner that leaves the choice to it)."""
        return {"data_id": self.inference_id, "episode_id": self.episode_id, "messages": self.messages,
                "tools": self.tools, "called": self.called}


def replayable(contexts: list[Context]) -> list[Context]:
    """The contexts a replay rollout asks the planner about: those where the model called a tool.
    Where it answered in text instead (a final answer, mostly), the question was not which tool,
    and a replay scoring only tool choices would punish the right answer."""
    return [c for c in contexts if c.called is not None]


class MissingBodies(RuntimeError):
    pass


def read_contexts(con: duckdb.DuckDBPyConnection, scope: Scope) -> list[Context]:
    """The recorded contexts in `scope`, oldest first. Raises MissingBodies if requests offered
    tools but none was recorded with its body."""
    rows = con.execute(with_base(CONTEXTS_SQL), scope.params()).fetchall()
    out = []
    for inference_id, episode_id, request, called, outcome, episode_ok in rows:
        if request is None:
            continue
        try:
            body = orjson.loads(request)
        except orjson.JSONDecodeError:
            continue  # a body cut short by a crash: nothing to replay
        messages, tools = body.get("messages"), body.get("tools")
        if not isinstance(messages, list) or not isinstance(tools, list) or not tools:
            continue
        out.append(Context(inference_id, episode_id, messages, tools, called,
                           {"success": True, "error": False}.get(outcome), episode_ok))
    if rows and not out:
        raise MissingBodies(f"{len(rows)} recorded requests offered tools but none has its body: the Agent "
                            "Lightning engine replays recorded requests; set store.record_bodies: true")
    return out
