"""Forwarding a chat-completions call to the model.

OpenAI-compatible upstreams get the client's bytes unchanged over a pooled httpx client.
Models named `provider/model` for a provider litellm knows (other than OpenAI) go through
`litellm.acompletion`, which translates to and from the provider's API; the client still
sees the OpenAI shape. Transport failures become `UpstreamFailure` (502 unreachable,
504 timed out) so the handler answers in OpenAI's error shape.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from agentgym.config import ProviderConfig, UpstreamConfig

# Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus ones we set ourselves.
HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length", "content-encoding", "accept-encoding",
    }
)
OPENAI_PREFIXES = frozenset({"openai", "custom_openai", "text-completion-openai"})


class UpstreamFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class UpstreamReply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None  # set for a streaming reply with a 2xx status
    close: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def aclose(self) -> None:
        if self.close is not None:
            await self.close()


def error_body(message: str, type_: str, code: str | int | None = None, param: str | None = None) -> bytes:
    """OpenAI's error shape."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def as_openai_error(status: int, body: bytes) -> bytes:
    """The upstream's error body if it already has OpenAI's shape, else that shape around it."""
    try:
        parsed = orjson.loads(body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            return body
    except orjson.JSONDecodeError:
        pass
    text = body.decode(errors="replace").strip()[:2000] or f"upstream returned HTTP {status}"
    return error_body(text, "upstream_error", status)


def forwarded_headers(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP and not k.lower().startswith("x-agentgym")}


class OpenAICompatible:
    """Any server that speaks OpenAI's /v1 API: OpenAI itself, vLLM, Ollama, the simulator."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.base_url = config.url.rstrip("/")
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(config.timeout_s, connect=config.connect_timeout_s),
            limits=httpx.Limits(max_connections=config.max_connections, max_keepalive_connections=100),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def send(self, path: str, body: bytes | None, headers: dict[str, str], *, stream: bool,
                   base_url: str | None = None) -> UpstreamReply:
        """`path` at the upstream (or at `base_url`, another server of the same kind)."""
        request = self.client.build_request(
            "POST" if body is not None else "GET",
            (base_url or self.base_url) + path,
            content=body,
            headers={**headers, "accept-encoding": "identity"},
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamFailure(504, "upstream_timeout", f"upstream timed out: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UpstreamFailure(502, "upstream_unreachable", f"upstream unreachable: {exc!r}") from exc
        reply_headers = forwarded_headers(dict(response.headers))
        if stream and response.status_code < 400:
            return UpstreamReply(response.status_code, reply_headers, chunks=self._relay(response), close=response.aclose)
        try:
            content = await response.aread()
        except httpx.TimeoutException as exc:
            raise UpstreamFailure(504, "upstream_timeout", f"upstream timed out: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UpstreamFailure(502, "upstream_unreachable", f"upstream broke off: {exc!r}") from exc
        finally:
            await response.aclose()
        return UpstreamReply(response.status_code, reply_headers, body=content)

    @staticmethod
    async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamFailure(504, "upstream_timeout", f"upstream timed out mid-stream: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise UpstreamFailure(502, "upstream_unreachable", f"upstream broke off mid-stream: {exc!r}") from exc


class LiteLLMProviders:
    """Non-OpenAI providers (Anthropic, Bedrock, Vertex, ...) through litellm's translation."""

    def __init__(self, providers: dict[str, ProviderConfig], *, automatic: bool = True) -> None:
        self.providers = providers
        self.automatic = automatic  # route any prefix litellm knows, not only the configured ones
        self._known: frozenset[str] | None = None

    async def route(self, model: str) -> str | None:
        """The provider for a `provider/model` name that should go through litellm, else None."""
        prefix, slash, _ = model.partition("/")
        if not slash or prefix in OPENAI_PREFIXES:
            return None
        if prefix in self.providers:
            return prefix
        if not self.automatic:
            return None
        if self._known is None:  # litellm may still be importing: wait for it off the event loop
            self._known = await asyncio.to_thread(_litellm_providers)
        return prefix if prefix in self._known else None

    async def send(self, provider: str, payload: dict[str, Any], *, stream: bool) -> UpstreamReply:
        import litellm

        config = self.providers.get(provider, ProviderConfig())
        options: dict[str, Any] = {"drop_params": True}
        if config.api_base:
            options["api_base"] = config.api_base
        if config.api_key_env and os.environ.get(config.api_key_env):
            options["api_key"] = os.environ[config.api_key_env]
        try:
            result = await litellm.acompletion(**payload, **options)
        except Exception as exc:  # noqa: BLE001 - litellm raises its own hierarchy
            raise _litellm_failure(exc) from exc
        headers = {"content-type": "text/event-stream" if stream else "application/json"}
        if not stream:
            return UpstreamReply(200, headers, body=result.model_dump_json(exclude_none=True).encode())
        return UpstreamReply(200, headers, chunks=_sse(result))


def _litellm_providers() -> frozenset[str]:
    import litellm

    return frozenset(str(p) for p in litellm.provider_list)


async def _sse(chunks: Any) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            yield b"data: " + chunk.model_dump_json(exclude_none=True).encode() + b"\n\n"
    except Exception as exc:  # noqa: BLE001
        raise _litellm_failure(exc) from exc
    yield b"data: [DONE]\n\n"


def _litellm_failure(exc: Exception) -> UpstreamFailure:
    import litellm

    if isinstance(exc, litellm.Timeout):
        return UpstreamFailure(504, "upstream_timeout", str(exc))
    if isinstance(exc, litellm.APIConnectionError):
        return UpstreamFailure(502, "upstream_unreachable", str(exc))
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 600:
        return UpstreamFailure(status, getattr(exc, "code", None) or "upstream_error", getattr(exc, "message", str(exc)))
    return UpstreamFailure(502, "upstream_error", str(exc))
