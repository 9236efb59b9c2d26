"""Rebuilding the answer from a chat-completions SSE stream, while it passes through untouched.

The client gets the upstream's bytes chunk for chunk; the recorder gets what a non-streaming
call would have returned: the assistant message (tool calls reassembled from their
argument fragments), the finish reason and the usage when the stream carries it.
"""

from __future__ import annotations

from typing import Any

import orjson


class StreamAssembler:
    def __init__(self) -> None:
        self._buffer = b""
        self._content: list[str] = []
        self._tool_calls: dict[int, dict[str, Any]] = {}
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.finish_reason: str | None = None
        self.error: dict[str, Any] | None = None
        self.done = False

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if b"\r" in self._buffer:
            self._buffer = self._buffer.replace(b"\r\n", b"\n")
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return
            event, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    self._data(line[5:].strip())

    def _data(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done = True
            return
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(chunk, dict):
            return
        if "error" in chunk:
            self.error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return
        self.model = chunk.get("model") or self.model
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._content.append(delta["content"])
            for fragment in delta.get("tool_calls") or ():
                self._merge_tool_call(fragment)

    def _merge_tool_call(self, fragment: dict[str, Any]) -> None:
        call = self._tool_calls.setdefault(
            fragment.get("index", len(self._tool_calls)),
            {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
        )
        if fragment.get("id"):
            call["id"] = fragment["id"]
        function = fragment.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]

    def message(self) -> dict[str, Any]:
        """The assistant message as a non-streaming response would carry it."""
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self._content) or None}
        if self._tool_calls:
            message["tool_calls"] = [self._tool_calls[i] for i in sorted(self._tool_calls)]
        return message
