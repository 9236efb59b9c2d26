"""`POST /v1/chat/completions`: forward, stream back, and record, in that order of importance.

Read top to bottom: check the client, read and parse the body, link the episode and collect
the tool results it carries, let the planner apply the live policy, forward (httpx or
litellm), answer the client, record. Anything
that goes wrong in linking or recording is counted and logged, and the request goes through
unchanged (fail open).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from agentgym.config import Settings
from agentgym.dashboards.metrics import ProxyMetrics
from agentgym.proxy.episodes import EpisodeLink, EpisodeLinker, new_id
from agentgym.proxy.outcomes import OutcomeClassifier
from agentgym.proxy.planner import Planner
from agentgym.proxy.stream_assembly import StreamAssembler
from agentgym.proxy.upstream_planner import Route, through_gateway
from agentgym.proxy.upstream import (
    LiteLLMProviders,
    OpenAICompatible,
    UpstreamFailure,
    UpstreamReply,
    as_openai_error,
    error_body,
    forwarded_headers,
)
from agentgym.proxy.usage import InferenceRecord
from agentgym.store.recorder import Recorder

log = logging.getLogger(__name__)

EPISODE_HEADER = "x-agentgym-episode-id"
INFERENCE_HEADER = "x-agentgym-inference-id"
PROXY_KEY_HEADER = "x-agentgym-key"
CLIENT_CLOSED = 499  # nginx's status for a client that went away mid-answer


class BadRequest(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def response(self) -> Response:
        return Response(error_body(self.message, self.type, self.code), self.status, media_type="application/json")


def _bearer(value: str | None) -> str | None:
    if value and value[:7].lower() == "bearer ":
        return value[7:].strip()
    return None


class ChatCompletions:
    def __init__(
        self,
        settings: Settings,
        *,
        upstream: OpenAICompatible,
        providers: LiteLLMProviders,
        linker: EpisodeLinker,
        classifier: OutcomeClassifier,
        recorder: Recorder,
        metrics: ProxyMetrics,
        planner: Planner,
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.providers = providers
        self.linker = linker
        self.classifier = classifier
        self.recorder = recorder
        self.metrics = metrics
        self.planner = planner
        self._proxy_keys = frozenset(settings.server.proxy_keys)
        self._env_key = os.environ.get(settings.upstream.api_key_env)

    # --- the handler -----------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        created_at = time.time()
        try:
            upstream_headers = self.upstream_headers(request)
            body = await self._read_body(request)
            payload = self._parse(body)
        except BadRequest as exc:
            self.metrics.requests.labels("chat_completions", str(exc.status)).inc()
            return exc.response()

        messages = payload["messages"]
        stream = bool(payload.get("stream"))
        model = payload.get("model") if isinstance(payload.get("model"), str) else None
        link = self._link(messages, request.headers.get(EPISODE_HEADER))
        record = InferenceRecord(
            id=new_id("inf"),
            episode_id=link.episode_id,
            episode_link=link.kind,
            created_at=created_at,
            model=model,
            provider="openai",
            stream=stream,
            tools_offered=len(payload["tools"]) if isinstance(payload.get("tools"), list) else 0,
            tool_choice=_tool_choice_label(payload.get("tool_choice")),
            request_body=body,
        )
        self._record_tool_results(messages, record)
        ours = {EPISODE_HEADER: link.episode_id, INFERENCE_HEADER: record.id}
        route = None
        with self._fail_open("planner"):
            planned = await self.planner.plan(payload, record)
            if planned is not None:
                payload, body = planned, orjson.dumps(planned)
            route = self.planner.route(record.episode_id, stream=stream)

        try:
            provider = await self.providers.route(model) if model else None
            if provider:
                record.provider = provider
                reply = await self.providers.send(provider, payload, stream=stream)
            else:
                reply = await self._send_upstream(route, payload, body, upstream_headers, record, stream=stream)
        except UpstreamFailure as failure:
            self.metrics.upstream_errors.labels(failure.code, str(failure.status)).inc()
            record.status, record.error_type, record.error_message = failure.status, failure.code, failure.message
            self._finish(record, link, started)
            return Response(
                error_body(failure.message, "upstream_error", failure.code), failure.status,
                headers=ours, media_type="application/json",
            )

        if reply.chunks is not None:
            return StreamingResponse(
                self._relay(reply, record, link, started), reply.status, headers={**reply.headers, **ours}
            )
        return self._answer(reply, record, link, started, ours)

    # --- steps -----------------------------------------------------------------------------
    def upstream_headers(self, request: Request) -> dict[str, str]:
        """Check the proxy key, and choose the credentials the upstream sees."""
        client_auth = request.headers.get("authorization")
        presented = request.headers.get(PROXY_KEY_HEADER) or _bearer(client_auth)
        if self._proxy_keys and presented not in self._proxy_keys:
            raise BadRequest(401, "missing or invalid AgentGym proxy key", "authentication_error", "invalid_api_key")
        if client_auth and _bearer(client_auth) in self._proxy_keys:
            client_auth = None  # the proxy key is ours, never the upstream's
        headers = forwarded_headers(dict(request.headers))
        headers.pop("authorization", None)
        mode = self.settings.upstream.auth
        key = None
        if mode == "passthrough" or (mode == "auto" and client_auth):
            key = client_auth
        elif self._env_key:
            key = f"Bearer {self._env_key}"
        if key:
            headers["authorization"] = key
        return headers

    async def _send_upstream(self, route: Route | None, payload: dict[str, Any], body: bytes,
                             headers: dict[str, str], record: InferenceRecord, *, stream: bool) -> UpstreamReply:
        """The OpenAI-compatible upstream; in upstream mode (`route`), through Agent Lightning's
        gateway (failing that, straight upstream) or to an LLM canary's own server."""
        if route is not None and route.gateway:
            sent = await through_gateway(self.planner.llm, payload, record.episode_id, self.settings.upstream.timeout_s)
            if sent is not None:
                reply, message, propensity = sent
                with self._fail_open("planner"):
                    self.planner.answered(record.id, message, propensity)
                return reply
        elif route is not None:
            return await self.upstream.send("/chat/completions", orjson.dumps({**payload, "model": route.model}),
                                            headers, stream=stream, base_url=route.server)
        return await self.upstream.send("/chat/completions", body, headers, stream=stream)

    async def _read_body(self, request: Request) -> bytes:
        limit = self.settings.server.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise BadRequest(413, f"request body over {limit} bytes", code="request_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadRequest(413, f"request body over {limit} bytes", code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse(body: bytes) -> dict[str, Any]:
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(400, f"request body is not valid JSON: {exc}", code="invalid_json") from exc
        if not isinstance(payload, dict):
            raise BadRequest(400, "request body must be a JSON object", code="invalid_json")
        messages = payload.get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequest(400, "'messages' must be a list of message objects", code="invalid_messages")
        return payload

    def _link(self, messages: list[dict[str, Any]], header: str | None) -> EpisodeLink:
        with self._fail_open("link"):
            return self.linker.link(messages, header)
        return EpisodeLink(header or new_id("ep"), "header" if header else "new", b"")

    def _record_tool_results(self, messages: list[dict[str, Any]], record: InferenceRecord) -> None:
        with self._fail_open("outcomes"):
            for pending, call_id, content in self.linker.take_results(messages):
                outcome = self.classifier.classify(content)
                self.metrics.tool_outcome(pending.episode_id, pending.name, outcome.outcome)
                text = content if isinstance(content, str) else orjson.dumps(content).decode()
                self.recorder.add(
                    "tool_results",
                    (call_id, pending.episode_id, record.id, record.created_at, outcome.outcome,
                     outcome.error_message, text[:2000]),
                )

    def _answer(
        self, reply: UpstreamReply, record: InferenceRecord, link: EpisodeLink, started: float, ours: dict[str, str]
    ) -> Response:
        record.status = reply.status
        if reply.status >= 400:
            self.metrics.upstream_errors.labels(f"http_{reply.status}", str(reply.status)).inc()
            body = as_openai_error(reply.status, reply.body)
            record.error_type = "upstream_status"
            record.error_message = body.decode(errors="replace")[:2000]
            self._finish(record, link, started)
            return Response(body, reply.status, headers={**reply.headers, **ours}, media_type="application/json")
        with self._fail_open("parse_answer"):
            parsed = orjson.loads(reply.body)
            choice = (parsed.get("choices") or [{}])[0]
            record.answer = choice.get("message")
            record.finish_reason = choice.get("finish_reason")
            record.usage = parsed.get("usage")
            record.response_body = reply.body
        self._finish(record, link, started)
        return Response(reply.body, reply.status, headers={**reply.headers, **ours})

    async def _relay(
        self, reply: UpstreamReply, record: InferenceRecord, link: EpisodeLink, started: float
    ) -> AsyncIterator[bytes]:
        assembler = StreamAssembler()
        record.status = reply.status
        try:
            assert reply.chunks is not None
            async for chunk in reply.chunks:
                if record.ttfb_ms is None:
                    record.ttfb_ms = (time.perf_counter() - started) * 1000
                    self.metrics.ttfb.observe(record.ttfb_ms / 1000)
                with self._fail_open("assemble_stream"):
                    assembler.feed(chunk)
                yield chunk
        except UpstreamFailure as failure:
            self.metrics.upstream_errors.labels(failure.code, str(failure.status)).inc()
            record.status, record.error_type, record.error_message = failure.status, failure.code, failure.message
            yield b"data: " + error_body(failure.message, "upstream_error", failure.code) + b"\n\n"
        except BaseException:  # the client went away: record what was sent, then let it unwind
            record.status, record.error_type = CLIENT_CLOSED, "client_closed"
            raise
        finally:
            await reply.aclose()
            with self._fail_open("assemble_stream"):
                record.answer = assembler.message()
                record.finish_reason = assembler.finish_reason
                record.usage = assembler.usage
                record.model = record.model or assembler.model
                if assembler.error and record.error_type is None:
                    record.error_type = "stream_error"
                    record.error_message = orjson.dumps(assembler.error).decode()[:2000]
            self._finish(record, link, started)

    def _finish(self, record: InferenceRecord, link: EpisodeLink, started: float) -> None:
        """Link the answer into its episode and queue the rows; never raises."""
        record.latency_ms = (time.perf_counter() - started) * 1000
        self.metrics.finished(record)
        with self._fail_open("record"):
            answer = record.answer
            if answer and record.status == 200:
                self.linker.answered(link, record.id, answer)
                for position, call in enumerate(answer.get("tool_calls") or ()):
                    function = call.get("function") or {}
                    name = function.get("name", "")
                    self.metrics.tool_called(name)
                    self.recorder.add(
                        "tool_calls",
                        (call.get("id"), record.id, record.episode_id, record.created_at, position, name,
                         function.get("arguments")),
                    )
            self.recorder.add("inferences", record)
            self.planner.answered(record.id, answer if record.status == 200 else None, None)

    @contextmanager
    def _fail_open(self, stage: str) -> Iterator[None]:
        try:
            yield
        except Exception:  # noqa: BLE001 - AgentGym's own failure must never fail the agent's request
            self.metrics.internal_errors.labels(stage).inc()
            log.exception("AgentGym %s failed; the request goes through unchanged", stage)


def _tool_choice_label(choice: Any) -> str | None:
    if choice is None or isinstance(choice, str):
        return choice
    if isinstance(choice, dict):
        return (choice.get("function") or {}).get("name") or choice.get("type")
    return str(choice)
