"""The simulated upstream model as an OpenAI-compatible server (`agentgym scenarios serve-model`).

It is the one stand-in AgentGym allows (no real model is reachable from a demo machine or
CI). How it chooses tools and fills arguments is `simulated_model.SimulatedModel`; this
module speaks the API: chat completions, streaming in OpenAI's chunk format (with
`stream_options.include_usage`), `/v1/models`, usage (~4 bytes per token, so prompt tokens
grow with the tool schemas offered).

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

from agentgym.scenarios.simulated_model import ModelKnobs, SimulatedModel, text_of

MODEL_ID = "agentgym-sim"
_DIRECTIVE = re.compile(r"#(status|delay)=([0-9.]+)")


def _tokens(value: Any) -> int:
    return max(1, len(orjson.dumps(value)) // 4)


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": {"message": message, "type": "simulated_error", "param": None, "code": status}}, status)


async def chat_completions(request: Request) -> Response:
    model: SimulatedModel = request.app.state.model
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return _error(400, f"invalid JSON: {exc}")
    messages = payload.get("messages") or []
    last_user = next((text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    directives = dict(_DIRECTIVE.findall(last_user)) if "#" in last_user else {}
    if "delay" in directives:
        await asyncio.sleep(float(directives["delay"]))
    if "status" in directives:
        return _error(int(float(directives["status"])), f"simulated upstream error {directives['status']}")

    message, finish_reason = model.answer(payload)
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


def create_model_app(knobs: ModelKnobs | None = None, seed: int = 0) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
        ]
    )
    app.state.model = SimulatedModel(knobs, seed)
    return app
