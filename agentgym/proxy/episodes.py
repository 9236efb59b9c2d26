"""Linking chat-completion calls into episodes.

An agent's task is a loop: the client sends the conversation, the model answers (often with
`tool_calls`), the client appends the answer and the tool results and calls again. So a
request whose messages extend an earlier request's messages *and* that earlier answer belongs
to the same episode. We keep, per answer we forwarded, a hash of the conversation up to and
including that answer; a new request matches if any prefix of it ending in an assistant
message has a known hash (the longest match wins). Tool results whose `tool_call_id` we
handed out link too, which covers clients that trim or rewrite older history.

Assistant messages are compared by text and tool-call ids, not by re-serialised arguments,
because frameworks re-encode arguments (spacing, key order) when they echo them back.
State is in memory, bounded (LRU) and per process; `X-AgentGym-Episode-Id` always wins.
"""

from __future__ import annotations

import hashlib
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from agentgym.proxy.outcomes import message_text

LinkKind = Literal["header", "prefix", "tool_call", "new"]


@dataclass(frozen=True, slots=True)
class PendingToolCall:
    episode_id: str
    inference_id: str
    name: str


@dataclass(frozen=True, slots=True)
class EpisodeLink:
    episode_id: str
    kind: LinkKind
    conversation_hash: bytes  # of all the request's messages; the answer's hash chains from it


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def _canonical(message: dict[str, Any]) -> bytes:
    role = str(message.get("role", ""))
    parts = [role, message_text(message.get("content"))]
    tool_calls = message.get("tool_calls")
    if tool_calls:
        parts.extend(str(call.get("id", "")) for call in tool_calls if isinstance(call, dict))
    if role == "tool":
        parts.append(str(message.get("tool_call_id", "")))
    return "\x1f".join(parts).encode()


def chain(previous: bytes, message: dict[str, Any]) -> bytes:
    return hashlib.blake2b(previous + _canonical(message), digest_size=16).digest()


class _LRU(OrderedDict):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        if len(self) > self.capacity:
            self.popitem(last=False)


class EpisodeLinker:
    def __init__(self, capacity: int = 200_000) -> None:
        self._answers: _LRU = _LRU(capacity)  # conversation hash ending in an answer -> episode
        self._tool_calls: _LRU = _LRU(capacity)  # tool_call_id -> PendingToolCall awaiting its result
        self._owners: _LRU = _LRU(capacity)  # episode, inference or tool_call id -> episode, for feedback

    def link(self, messages: list[dict[str, Any]], header_episode_id: str | None) -> EpisodeLink:
        digest = b""
        match: str | None = None
        for message in messages:
            digest = chain(digest, message)
            if message.get("role") == "assistant":
                episode = self._answers.get(digest)
                if episode is not None:
                    match = episode  # later (longer) matches overwrite earlier ones
        if header_episode_id:
            link = EpisodeLink(header_episode_id, "header", digest)
        elif match is not None:
            link = EpisodeLink(match, "prefix", digest)
        else:
            link = self._by_tool_result(messages, digest) or EpisodeLink(new_id("ep"), "new", digest)
        self._owners.put(link.episode_id, link.episode_id)
        return link

    def _by_tool_result(self, messages: list[dict[str, Any]], digest: bytes) -> EpisodeLink | None:
        for message in reversed(messages):
            if message.get("role") == "tool":
                pending = self._tool_calls.get(message.get("tool_call_id"))
                if pending is not None:
                    return EpisodeLink(pending.episode_id, "tool_call", digest)
        return None

    def answered(self, link: EpisodeLink, inference_id: str, answer: dict[str, Any]) -> None:
        """Remember the answer forwarded for this request, and the tool calls it made."""
        self._answers.put(chain(link.conversation_hash, answer), link.episode_id)
        self._owners.put(inference_id, link.episode_id)
        for call in answer.get("tool_calls") or ():
            call_id = call.get("id")
            if call_id:
                name = (call.get("function") or {}).get("name", "")
                self._tool_calls.put(call_id, PendingToolCall(link.episode_id, inference_id, name))
                self._owners.put(call_id, link.episode_id)

    def take_results(self, messages: list[dict[str, Any]]) -> list[tuple[PendingToolCall, str, Any]]:
        """Tool results in this request for calls still waiting on one: (call, id, content)."""
        found = []
        for message in messages:
            if message.get("role") == "tool":
                call_id = message.get("tool_call_id")
                pending = self._tool_calls.pop(call_id, None) if call_id else None
                if pending is not None:
                    found.append((pending, call_id, message.get("content")))
        return found

    def episode_of(self, inference_or_tool_call_id: str) -> str | None:
        """The episode of a recent episode, inference or tool call id (None if not recent)."""
        return self._owners.get(inference_or_tool_call_id)
