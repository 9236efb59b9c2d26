"""A stand-in upstream model: an OpenAI-compatible server that needs no weights and no network.

It is the one stand-in AgentGym allows (no real model is reachable from a demo machine or
CI), and it behaves like a plain tool-calling model: offered tools, it calls the ones the
last user message names (in parallel when several are named and `parallel_tool_calls` is
not false), else the first one; it obeys `tool_choice` (a named function, "none",
"required"); once tool results come back it answers in text. Arguments are filled from
`key=value` pairs in the user's message, else with type defaults. Usage counts ~4 bytes per
token. Streaming follows OpenAI's chunk format, including `stream_options.include_usage`.

Directives in the last user message drive failure tests: `#status=429` answers that HTTP
status in OpenAI's error shape, `#delay=0.5` waits that many seconds first, `#abort` breaks
the connection in the middle of a stream.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL_ID = "agentgym-sim"
_DIRECTIVE = re.compile(r"#(status|delay)=([0-9.]+)")
_ARGUMENT = re.compile(r"(\w+)=(\"[^\"]*\"|'[^']*'|[^\s,;]+)")
_TYPE_DEFAULTS: dict[str, Any] = {"string": "demo", "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _tokens(value: Any) -> int:
    return max(1, len(orjson.dumps(value)) // 4)


def _arguments(schema: dict[str, Any], user_text: str) -> dict[str, Any]:
    given = {k: v.strip("\"'") for k, v in _ARGUMENT.findall(user_text)}
    properties = schema.get("properties") or {}
    arguments: dict[str, Any] = {}
    for name in schema.get("required") or list(properties)[:1]:
        if name in given:
            arguments[name] = given[name]
        else:
            arguments[name] = _TYPE_DEFAULTS.get((properties.get(name) or {}).get("type", "string"), "demo")
    return arguments


def answer(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The assistant message and finish reason this model gives for a request."""
    messages = payload.get("messages") or []
    tools = [t["function"] for t in payload.get("tools") or () if t.get("type") == "function"]
    choice = payload.get("tool_choice") or ("auto" if tools else "none")
    last = messages[-1] if messages else {}
    user_text = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")

    forced = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    wants_text = not tools or choice == "none" or (last.get("role") == "tool" and choice != "required" and not forced)
    if wants_text:
        results = [_text(m.get("content")) for m in messages[-8:] if m.get("role") == "tool"]
        content = ("Done. " + " | ".join(r[:200] for r in results)) if results else f"You said: {user_text[:200]}"
        return {"role": "assistant", "content": content}, "stop"

    by_name = {t["name"]: t for t in tools}
    if forced:
        chosen = [by_name[forced]] if forced in by_name else tools[:1]
    else:
        named = sorted((user_text.find(name), name) for name in by_name if name in user_text)
        chosen = [by_name[name] for _, name in named] or tools[:1]
        if payload.get("parallel_tool_calls") is False:
            chosen = chosen[:1]
    calls = [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": tool["name"], "arguments": orjson.dumps(_arguments(tool.get("parameters") or {}, user_text)).decode()},
        }
        for tool in chosen
    ]
    return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": {"message": message, "type": "simulated_error", "param": None, "code": status}}, status)


async def chat_completions(request: Request) -> Response:
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"invalid JSON: {exc}")
    messages = payload.get("messages") or []
    last_user = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    directives = dict(_DIRECTIVE.findall(last_user)) if "#" in last_user else {}
    if "delay" in directives:
        await asyncio.sleep(float(directives["delay"]))
    if "status" in directives:
        return _error(int(float(directives["status"])), f"simulated upstream error {directives['status']}")

    message, finish_reason = answer(payload)
    usage = {
        "prompt_tokens": _tokens(messages) + _tokens(payload.get("tools") or []),
        "completion_tokens": _tokens(message),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": payload.get("model") or MODEL_ID}
    if payload.get("stream"):
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        chunks = _chunks(base, message, finish_reason, usage if include_usage else None, abort="#abort" in last_user)
        return StreamingResponse(chunks, media_type="text/event-stream")
    body = {
        **base,
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": usage,
    }
    return Response(orjson.dumps(body), media_type="application/json")


async def _chunks(
    base: dict[str, Any], message: dict[str, Any], finish_reason: str, usage: dict[str, int] | None, *, abort: bool
) -> AsyncIterator[bytes]:
    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {**base, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    yield event({"role": "assistant", "content": "" if message.get("content") else None})
    content = message.get("content") or ""
    for start in range(0, len(content), 16):
        yield event({"content": content[start : start + 16]})
    if abort:
        raise ConnectionAbortedError("simulated mid-stream failure (#abort)")
    for index, call in enumerate(message.get("tool_calls") or ()):
        arguments = call["function"]["arguments"]
        half = len(arguments) // 2
        yield event({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                     "function": {"name": call["function"]["name"], "arguments": ""}}]})
        for part in (arguments[:half], arguments[half:]):
            yield event({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
    yield event({}, finish_reason)
    if usage is not None:
        yield b"data: " + orjson.dumps({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}) + b"\n\n"
    yield b"data: [DONE]\n\n"


async def models(request: Request) -> Response:
    return JSONResponse({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "agentgym"}]})


def create_model_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )
