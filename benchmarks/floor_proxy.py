"""The Python floor: the simplest Starlette + httpx passthrough proxy.

POST /v1/chat/completions is forwarded to the upstream with one pooled httpx.AsyncClient
and the answer returned; a streaming answer is passed through chunk for chunk
(`aiter_raw`). Nothing is parsed, linked or recorded. It runs under uvicorn with the same
settings `agentgym serve` uses (uvicorn's default loop/http, i.e. uvloop/httptools when
installed, access log off), so the gap between this and AgentGym is AgentGym's own work.

    python benchmarks/floor_proxy.py --upstream http://127.0.0.1:8090/v1 --port 8081
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length", "content-encoding", "accept-encoding",
    }
)


def _headers(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


def create_floor_app(upstream: str) -> Starlette:
    base = upstream.rstrip("/")
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(600.0, connect=10.0),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=1000),
    )

    async def chat_completions(request: Request) -> Response:
        body = await request.body()
        upstream_request = client.build_request(
            "POST", base + "/chat/completions", content=body,
            headers={**_headers(request.headers), "accept-encoding": "identity"},
        )
        response = await client.send(upstream_request, stream=True)
        headers = _headers(response.headers)
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return StreamingResponse(
                response.aiter_raw(), response.status_code, headers=headers, background=BackgroundTask(response.aclose)
            )
        try:
            content = await response.aread()
        finally:
            await response.aclose()
        return Response(content, response.status_code, headers=headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8090/v1")
    parser.add_argument("--port", type=int, default=8081)
    args = parser.parse_args()
    # The same uvicorn settings as `agentgym serve` (agentgym/cli.py).
    uvicorn.run(
        create_floor_app(args.upstream), host="127.0.0.1", port=args.port, log_level="warning",
        access_log=False, timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
