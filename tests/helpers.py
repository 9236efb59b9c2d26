"""Servers the tests run on loopback beside the real proxy process.

- `ThreadServer` (from local_stack) runs an ASGI app under uvicorn on a thread of the test process.
- `anthropic_app` speaks Anthropic's Messages API (the shape litellm translates to), so the
  proxy's litellm route is exercised over real HTTP without any network.
- `recording_app` is an OpenAI-compatible upstream that remembers the headers it was sent.
- `register_policy` and `wait_for_planner` put policy versions in a registry and wait until a
  running proxy serves them.
- `recorded_episode` reads back what a stopped proxy's store holds of one episode;
  `check_recorded_run` checks it against a framework's run of `TaskTools`; `run_script` runs a
  user's script (an example) against a proxy.
- `AglServer` runs Agent Lightning's `agl-server`; `token_ids_app` and `PlannerStandIn` answer as
  vLLM does for an LLM planner, the latter failing, stalling or babbling when a test says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentgym.scenarios.framework_tools import ToolRun
from agentgym.scenarios.local_stack import ThreadServer, start_agl_server  # noqa: F401 - ThreadServer: tests import it from here
from agentgym.scenarios.model_server import chat_completions as sim_chat_completions
from agentgym.scenarios.simulated_model import ModelKnobs, SimulatedModel
from agentgym.trainer.policy import PolicyWeights, bucket
from agentgym.trainer.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
KEY = "agentgym-test-key"  # agl-server's key in the tests


def recording_app(seen: list[dict[str, str]]) -> Starlette:
    """The stand-in model, plus a log of the headers each request arrived with."""

    async def chat(request: Request) -> Response:
        seen.append(dict(request.headers))
        return await sim_chat_completions(request)

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    app.state.model = SimulatedModel(ModelKnobs(argument_error_rate=0))
    return app


def anthropic_app(seen: list[dict[str, Any]]) -> Starlette:
    """A Messages API server: calls the first tool offered until a tool result comes back."""

    async def messages(request: Request) -> Response:
        body = orjson.loads(await request.body())
        seen.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
        last = body["messages"][-1]
        has_result = isinstance(last.get("content"), list) and any(
            block.get("type") == "tool_result" for block in last["content"]
        )
        tools = body.get("tools") or []
        if tools and not has_result:
            tool = tools[0]
            block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": tool["name"], "input": {"city": "Paris"}}
            stop = "tool_use"
        else:
            block = {"type": "text", "text": "It is sunny in Paris."}
            stop = "end_turn"
        usage = {"input_tokens": 120, "output_tokens": 30}
        message = {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant", "model": body["model"],
                   "content": [block], "stop_reason": stop, "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return JSONResponse(message)
        return StreamingResponse(_anthropic_events(message, block), media_type="text/event-stream")

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


def _anthropic_events(message: dict[str, Any], block: dict[str, Any]):
    def event(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    start = {**message, "content": [], "stop_reason": None, "usage": {"input_tokens": 120, "output_tokens": 1}}
    yield event("message_start", {"type": "message_start", "message": start})
    if block["type"] == "tool_use":
        yield event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {**block, "input": {}}})
        text = json.dumps(block["input"])
        for piece in (text[: len(text) // 2], text[len(text) // 2 :]):
            yield event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "input_json_delta", "partial_json": piece}})
    else:
        yield event("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}})
        yield event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                            "delta": {"type": "text_delta", "text": block["text"]}})
    yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
    yield event("message_delta", {"type": "message_delta", "delta": {"stop_reason": message["stop_reason"],
                                                                     "stop_sequence": None},
                                  "usage": {"output_tokens": 30}})
    yield event("message_stop", {"type": "message_stop"})


def report_json(db: str, *extra: str) -> dict[str, Any]:
    """`agentgym report --db DB --format json`, run as the user would."""
    result = subprocess.run(
        [sys.executable, "-m", "agentgym", "report", "--db", db, "--format", "json", *extra],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def register_policy(registry: Registry, weights: PolicyWeights | None = None, *, b_defer: float = 0.0,
                    parent: str | None = None, gate: dict | None = None) -> str:
    """A version on the proxy's encoder (zero-shot, leaning to defer by `b_defer`, unless `weights`
    are given), admitted on `gate` (none by default): its name."""
    from agentgym.trainer.encoder import shared_encoder

    encoder = shared_encoder()
    weights = weights or PolicyWeights.zero_shot(encoder.dimensions, b_defer=b_defer)
    return registry.register(weights, parent=parent, encoder="e", encoder_checksum=encoder.checksum, training={},
                             gate=gate or {}).version


def forcing(dimensions: int, tool: str, *, action: str = "force") -> PolicyWeights:
    """A version that forces `tool` on every request; with `action="offer"`, that offers only `tool`
    (the model still chooses whether to call it, so a tool loop ends as it would)."""
    weights = PolicyWeights.zero_shot(dimensions)
    weights.b[bucket(tool)] = 50.0
    getattr(weights, f"b_{action}")[0] = 30.0
    return weights


@dataclass
class RecordedEpisode:
    links: list[str]  # how each request was linked to the episode (header | prefix | tool_call | new), in order
    streamed: list[bool]
    usage_estimated: list[bool]
    calls: list[tuple[str, dict[str, Any], str | None]]  # tool calls in order: name, arguments, outcome
    feedback: list[bool | None]  # the success flag of each feedback on the episode
    decisions: list[tuple[str, str, str, str | None, list[str]]]  # version, arm, action, forced tool, offered


def recorded_episode(con: duckdb.DuckDBPyConnection, episode_id: str) -> RecordedEpisode:
    """What a proxy recorded of one episode (open its store with `stopped_store`)."""
    def rows(sql: str) -> list[tuple]:
        return con.execute(sql, [episode_id]).fetchall()

    inferences = rows("SELECT episode_link, stream, usage_estimated FROM inferences WHERE episode_id = ? "
                      "ORDER BY created_at")
    calls = rows("SELECT c.name, c.arguments, r.outcome FROM tool_calls c LEFT JOIN tool_results r "
                 "ON r.tool_call_id = c.id WHERE c.episode_id = ? ORDER BY c.created_at, c.position")
    decisions = rows("SELECT policy_version, arm, action, tool, offered FROM decisions WHERE episode_id = ? "
                     "ORDER BY created_at")
    return RecordedEpisode(
        [link for link, _, _ in inferences], [stream for _, stream, _ in inferences],
        [estimated for _, _, estimated in inferences],
        [(name, json.loads(arguments), outcome) for name, arguments, outcome in calls],
        [success for (success,) in rows("SELECT success FROM feedback WHERE episode_id = ? ORDER BY created_at")],
        [(version, arm, action, tool, json.loads(offered)) for version, arm, action, tool, offered in decisions])


def expected_calls(runs: Sequence[ToolRun]) -> list[tuple[str, dict[str, Any], str]]:
    """The tool calls a run of `TaskTools` made, as `recorded_episode` should read them back."""
    return [(run.name, run.arguments, "success" if run.ok else "error") for run in runs]


def check_recorded_run(con: duckdb.DuckDBPyConnection, episode_id: str, runs: Sequence[ToolRun], success: bool, *,
                       streamed: bool, label: str) -> set[str]:
    """Asserts that a framework's run of `TaskTools` inside `episode()` was recorded as that episode: each
    request linked by the header, streamed or not, with the model's usage; the tool calls with their
    outcomes; the feedback. The outcomes it read."""
    recorded = recorded_episode(con, episode_id)
    assert runs and recorded.calls == expected_calls(runs), label
    assert recorded.links == ["header"] * (len(runs) + 1), label  # one request per tool call here, then the answer
    assert recorded.streamed == [streamed] * len(recorded.links), label
    assert not any(recorded.usage_estimated), label  # streamed too: include_usage reached the model and came back
    assert recorded.feedback == [success], label
    return {outcome for _, _, outcome in recorded.calls}


def run_script(command: list[str], base_url: str, env: dict[str, str] | None = None) -> str:
    """A user's script (its path relative to the repository), run as they would: a process of its own,
    OPENAI_BASE_URL pointing at the proxy (and `env` set). Its standard output."""
    env = {**os.environ, "OPENAI_BASE_URL": base_url, "OPENAI_API_KEY": "sk-any", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for_planner(url: str, *, live: str | None, canary: str | None = None, shadow: str | None = None) -> None:
    """Until the proxy's planner has loaded the versions the registry names (before that, requests
    pass unplanned: it fails open)."""
    wanted = {"live": live, "canary": canary, "shadow": shadow}
    for _ in range(200):
        loaded = httpx.get(f"{url}/readyz", timeout=5).json()["planner"]
        if loaded == wanted:
            return
        time.sleep(0.05)
    raise AssertionError(f"the planner loaded {loaded}, not {wanted}")


async def token_ids_chat(request: Request) -> Response:
    """The stand-in model answering as vLLM does when asked (`return_token_ids`, `logprobs`): the
    prompt's and the answer's token ids (here the UTF-8 bytes of their JSON) and a log-probability
    per answer token, which Agent Lightning's gateway records and its triplet export reads."""
    asked = orjson.loads(await request.body())
    answered = await sim_chat_completions(request)
    body = orjson.loads(answered.body)
    if asked.get("return_token_ids"):
        body["prompt_token_ids"] = list(orjson.dumps(asked.get("messages")))
        for choice in body["choices"]:
            choice["token_ids"] = list(orjson.dumps(choice["message"]))
    if asked.get("logprobs"):
        for choice in body["choices"]:
            tokens = choice.get("token_ids") or list(orjson.dumps(choice["message"]))
            choice["logprobs"] = {"content": [{"token": str(t), "logprob": -0.01, "bytes": [t], "top_logprobs": []}
                                              for t in tokens]}
    return JSONResponse(body, answered.status_code)


def token_ids_app() -> Starlette:
    app = Starlette(routes=[Route("/v1/chat/completions", token_ids_chat, methods=["POST"])])
    app.state.model = SimulatedModel(ModelKnobs(argument_error_rate=0))
    return app


class PlannerStandIn:
    """A planner model on loopback: `token_ids_chat`, or as `mode` says, "fail" (HTTP 500), "slow"
    (the answer after `delay_s`) or "text" (it answers `text`). Keeps every body it was sent."""

    def __init__(self) -> None:
        self.mode = "answer"
        self.delay_s = 3.0
        self.text = "any"
        self.asked: list[dict[str, Any]] = []

    def app(self) -> Starlette:
        async def chat(request: Request) -> Response:
            self.asked.append(orjson.loads(await request.body()))
            if self.mode == "fail":
                return JSONResponse({"error": {"message": "planner down", "type": "server_error"}}, 500)
            if self.mode == "slow":
                await asyncio.sleep(self.delay_s)
            answered = await token_ids_chat(request)
            if self.mode == "text":
                body = orjson.loads(answered.body)
                body["choices"][0]["message"] = {"role": "assistant", "content": self.text}
                body["choices"][0]["logprobs"] = None
                return JSONResponse(body)
            return answered

        app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
        app.state.model = SimulatedModel(ModelKnobs(argument_error_rate=0))
        return app


class AglServer:
    """`agl-server` on 127.0.0.1, with a client holding its key."""

    def __init__(self, workdir: Path, model_name: str) -> None:
        self.service = start_agl_server(workdir, model_name=model_name, key=KEY)
        self.port, self.url = self.service.port, self.service.url

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"authorization": f"Bearer {KEY}"}, timeout=30)

    def stop(self) -> None:
        self.service.stop(15)
