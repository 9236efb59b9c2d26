"""The proxy's Starlette app: routes, and the parts they share, built from Settings."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from agentgym.config import Settings
from agentgym.dashboards.metrics import ProxyMetrics
from agentgym.dashboards.report import build_report, registry_part
from agentgym.dashboards.report_cache import ReportCache
from agentgym.dashboards.report_source import from_query
from agentgym.proxy.admin import PolicyAdmin, admin_allowed, denied
from agentgym.proxy.chat_completions import BadRequest, ChatCompletions
from agentgym.proxy.episodes import EpisodeLinker
from agentgym.proxy.feedback import FeedbackEndpoint
from agentgym.proxy.llm_planner import LlmPlanner
from agentgym.proxy.outcomes import OutcomeClassifier
from agentgym.proxy.planner import Planner
from agentgym.proxy.upstream import (
    LiteLLMProviders,
    OpenAICompatible,
    UpstreamFailure,
    as_openai_error,
    error_body,
)
from agentgym.proxy.usage import UsageCosting
from agentgym.store import live_server
from agentgym.store.queries import Scope
from agentgym.store.recorder import Recorder, StoreUnavailable
from agentgym.trainer.registry import Registry, default_dir
from agentgym.trainer.rounds import Schedule
from agentgym.trainer.wandb_export import WandbExport

log = logging.getLogger(__name__)


@dataclass
class Proxy:
    """Everything the routes share; one per app."""

    settings: Settings
    recorder: Recorder
    costing: UsageCosting
    linker: EpisodeLinker
    upstream: OpenAICompatible
    metrics: ProxyMetrics
    chat: ChatCompletions
    feedback: FeedbackEndpoint
    planner: Planner
    schedule: Schedule
    server_note: live_server.LiveServer | None = None


def build_proxy(settings: Settings) -> Proxy:
    metrics = ProxyMetrics(label_limit=settings.server.metrics_label_limit,
                           episode_capacity=settings.episodes.link_cache_size,
                           success_reward_threshold=settings.episodes.success_reward_threshold)
    costing = UsageCosting(settings.pricing, record_bodies=settings.store.record_bodies, on_measured=metrics.measured)
    recorder = Recorder(
        settings.store.path,
        flush_interval_s=settings.store.flush_interval_s,
        batch_max_rows=settings.store.batch_max_rows,
        queue_max_rows=settings.store.queue_max_rows,
        prepare={"inferences": costing.row},
        maintenance=costing.backfill,
    )
    linker = EpisodeLinker(settings.episodes.link_cache_size)
    upstream = OpenAICompatible(settings.upstream)
    registry = Registry(settings.planner.policies_dir or default_dir(settings.store.path))
    llm = LlmPlanner(settings.lightning, settings.trainer.reward,
                     lambda stage: metrics.internal_errors.labels(stage).inc(), upstream_url=settings.upstream.url,
                     agent_timeout_s=settings.upstream.timeout_s)
    planner = Planner(settings.planner, registry, recorder, llm=llm)
    metrics.watch(recorder, planner, costing)
    chat = ChatCompletions(
        settings,
        upstream=upstream,
        providers=LiteLLMProviders(settings.providers, automatic=settings.upstream.provider_routing),
        linker=linker,
        classifier=OutcomeClassifier(settings.outcomes),
        recorder=recorder,
        metrics=metrics,
        planner=planner,
    )
    schedule = Schedule(settings.trainer, settings.planner, Scope.configured(settings.episodes), registry,
                        recorder.reader, lambda: planner.encoder, settings.rollout, settings.lightning.reward_model,
                        observers=[metrics.trainer_round, WandbExport(settings.trainer.wandb)])

    def episode_outcome(episode_id: str, reward: float | None, success: bool | None) -> None:
        metrics.episode_feedback(episode_id, reward, success)
        llm.episode_ended(episode_id, reward, success)

    return Proxy(settings, recorder, costing, linker, upstream, metrics, chat,
                 FeedbackEndpoint(linker, recorder, on_episode_outcome=episode_outcome), planner, schedule)


async def _watch_policies(planner: Planner, every_s: float) -> None:
    """Swap in a newly promoted policy version within `every_s`; a failure here never stops serving."""
    while True:
        try:
            await run_in_threadpool(planner.refresh)
        except Exception:  # noqa: BLE001 - the proxy keeps serving with the version it has
            log.exception("checking the policy registry failed")
        await asyncio.sleep(every_s)


async def _close_idle_rollouts(llm: LlmPlanner, idle_s: float) -> None:
    """Close the Agent Lightning rollouts of episodes gone idle without feedback, as the store counts
    them finished (looked at four times an idle timeout, at most every 30 s)."""
    while True:
        await asyncio.sleep(min(max(idle_s / 4, 0.05), 30.0))
        try:
            llm.close_idle(idle_s)
        except Exception:  # noqa: BLE001 - serving goes on; the next look tries again
            log.exception("closing idle Agent Lightning rollouts failed")


def create_app(settings: Settings, *, public_url: str | None = None) -> Starlette:
    """The ASGI app. `public_url` is where this server listens, announced beside the store file."""
    proxy = build_proxy(settings)
    reports = ReportCache()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        gc.freeze()  # what start-up built lives as long as the server: keep it out of every GC pass
        proxy.costing.warm()
        proxy.recorder.start()
        if public_url:
            proxy.server_note = live_server.announce(settings.store.path, public_url)
        watchers = [asyncio.create_task(_watch_policies(proxy.planner, settings.planner.refresh_s))]
        if settings.lightning.gateway and proxy.planner.llm is not None:
            watchers.append(asyncio.create_task(_close_idle_rollouts(proxy.planner.llm,
                                                                     settings.episodes.idle_timeout_s)))
        if settings.trainer.enabled or settings.rollout.automatic:
            proxy.schedule.start()
        try:
            yield
        finally:
            for watcher in watchers:
                watcher.cancel()
            await run_in_threadpool(proxy.schedule.stop)
            if proxy.server_note is not None:
                live_server.withdraw(settings.store.path, proxy.server_note)
            await proxy.upstream.aclose()
            if proxy.planner.llm is not None:
                await proxy.planner.llm.aclose()
            await run_in_threadpool(proxy.recorder.flush)
            await run_in_threadpool(proxy.costing.settle)
            await run_in_threadpool(proxy.recorder.close)

    async def models(request: Request) -> Response:
        try:
            headers = proxy.chat.upstream_headers(request)
        except BadRequest as exc:
            return exc.response()
        configured = settings.upstream.models
        if configured:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "agentgym"} for m in configured]
            return JSONResponse({"object": "list", "data": data})
        try:
            reply = await proxy.upstream.send("/models", None, headers, stream=False)
        except UpstreamFailure as failure:
            return Response(error_body(failure.message, "upstream_error", failure.code), failure.status,
                            media_type="application/json")
        body = reply.body if reply.status < 400 else as_openai_error(reply.status, reply.body)
        return Response(body, reply.status, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        recorder = proxy.recorder
        body = {
            "ready": recorder.healthy,
            "recorder": {
                "healthy": recorder.healthy,
                "queue_depth": recorder.queue_depth,
                "dropped": dict(recorder.dropped),
                "last_error": recorder.last_error,
            },
            # the versions the planner has loaded (requests before that pass unchanged: it fails open)
            "planner": proxy.planner.loaded(),
            # the LLM planner version Agent Lightning's gateway was pointed at (lightning.gateway)
            "agent_lightning_gateway": proxy.planner.llm.gateway_version if proxy.planner.llm else None,
        }
        return JSONResponse(body, 200 if recorder.healthy else 503)

    async def metrics(request: Request) -> Response:
        return Response(proxy.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def admin_report(request: Request) -> Response:
        if not admin_allowed(request, settings, proxy.server_note):
            return denied()
        try:
            scope, window = from_query(request.query_params, settings.episodes)
        except ValueError as exc:
            return Response(error_body(str(exc), "invalid_request_error", "invalid_query"), 400,
                            media_type="application/json")

        def build() -> dict:
            with proxy.recorder.reader() as con:
                return build_report(con, scope, window, registry=proxy.planner.registry,
                                    control_share=settings.planner.control_share)

        def report() -> dict:
            proxy.recorder.flush(timeout=5)
            data = reports.get((scope, window), proxy.recorder.writes, build)
            # a kept report's figures are the store's now; the registry may have moved since
            return {**data, "generated_at": datetime.now(UTC).isoformat(), **registry_part(proxy.planner.registry, settings.planner.control_share)}

        try:
            data = await run_in_threadpool(report)
        except StoreUnavailable as exc:
            return Response(error_body(f"store unavailable: {exc}", "server_error", "store_unavailable"), 503,
                            media_type="application/json")
        except ValueError as exc:
            return Response(error_body(str(exc), "invalid_request_error", "invalid_query"), 400,
                            media_type="application/json")
        return Response(orjson.dumps(data), media_type="application/json")

    async def dashboard(request: Request) -> Response:
        """The web dashboard's page; what it shows it reads from /admin/report, with the same key."""
        if not admin_allowed(request, settings, proxy.server_note):
            return denied()
        from agentgym.dashboards import web

        return HTMLResponse(await run_in_threadpool(web.page), headers={"cache-control": "no-store"})

    async def dashboard_asset(request: Request) -> Response:
        """The page's scripts and style: no data in them, so no key needed; cached for good (their
        URLs carry a digest of their content)."""
        from agentgym.dashboards import web

        name = request.path_params["name"]
        try:
            plain, packed = await run_in_threadpool(web.asset, name)
        except KeyError:
            return Response(error_body(f"no dashboard asset {name!r}", "invalid_request_error", "not_found"), 404,
                            media_type="application/json")
        gzipped = "gzip" in request.headers.get("accept-encoding", "")
        headers = {"cache-control": "public, max-age=31536000, immutable", "vary": "accept-encoding"}
        if gzipped:
            headers["content-encoding"] = "gzip"
        return Response(packed if gzipped else plain, media_type=web.ASSET_TYPES[name], headers=headers)

    async def admin_train(request: Request) -> Response:
        """One training round now, on what this proxy recorded (`agentgym train --once`)."""
        if not admin_allowed(request, settings, proxy.server_note):
            return denied()

        def round_now() -> dict:
            proxy.recorder.flush(timeout=5)
            return proxy.schedule.run(force=True, by=request.query_params.get("by", "admin"))

        try:
            result = await run_in_threadpool(round_now)
        except StoreUnavailable as exc:
            return Response(error_body(f"store unavailable: {exc}", "server_error", "store_unavailable"), 503,
                            media_type="application/json")
        except Exception as exc:  # noqa: BLE001 - the round failed; serving goes on, the caller learns why
            log.exception("training round failed")
            return Response(error_body(f"training round failed: {exc}", "server_error", "training_failed"), 500,
                            media_type="application/json")
        await run_in_threadpool(proxy.planner.refresh)
        return Response(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", proxy.chat.handle, methods=["POST"]),
            Route("/chat/completions", proxy.chat.handle, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/feedback", proxy.feedback.handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/admin/report", admin_report, methods=["GET"]),
            Route("/dashboard", dashboard, methods=["GET"]),
            Route("/dashboard/assets/{name}", dashboard_asset, methods=["GET"]),
            Route("/admin/train", admin_train, methods=["POST"]),
            *PolicyAdmin(proxy).routes(),
        ],
        lifespan=lifespan,
    )
    app.state.proxy = proxy
    return app

