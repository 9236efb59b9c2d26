"""The admin API for policies and rollouts, and the admin check every `/admin` route makes.

The changes `agentgym policies promote / shadow / rollback` make, made on the running proxy:
each is recorded in the registry as by "admin:" and who the body names, and this proxy's planner
loads it before the response, so a 200 means the new versions serve now. A change the registry
refuses (unknown version, percentage out of range, another canary running, corrupt artifact)
changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentgym.config import Settings
from agentgym.proxy.upstream import error_body
from agentgym.store import live_server
from agentgym.trainer import by_hand
from agentgym.trainer.registry import CorruptPolicy

if TYPE_CHECKING:
    from agentgym.proxy.app import Proxy

Handler = Callable[[Request], Awaitable[Response]]


class Change(BaseModel):
    # strict, and no unknown fields: a misspelt {"percent": 5} must not promote a version to live
    model_config = ConfigDict(extra="forbid", strict=True)

    reason: str | None = Field(None, description="recorded with the change")
    by: str | None = Field(None, description='who made it, recorded after "admin:" (default "api")')


class Promotion(Change):
    canary: float | None = Field(None, description="serve the version to this percentage of episodes beside the "
                                 "live one (start or move its canary) instead of making it live")


def admin_allowed(request: Request, settings: Settings, note: live_server.LiveServer | None) -> bool:
    """The admin key (or the server's local token) as `Authorization: Bearer KEY`, as
    `X-AgentGym-Admin-Key`, or as the password of HTTP Basic authentication (what a browser
    sends for /dashboard after asking its user; the user name is ignored)."""
    accepted = [k for k in (settings.server.admin_key, note.token if note else None) if k]
    return any(hmac.compare_digest(_presented(request).encode(), key.encode()) for key in accepted)


def _presented(request: Request) -> str:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return request.headers.get("x-agentgym-admin-key", "")


def denied() -> Response:
    """401, with the challenge that makes a browser ask for the key (RFC 7235 wants one)."""
    response = _error(401, "admin key required: send it as `Authorization: Bearer KEY`, or as the password when "
                      "the browser asks (with no server.admin_key set, the local token in the store's "
                      ".server.json note)", "invalid_admin_key", "authentication_error")
    response.headers["www-authenticate"] = 'Basic realm="AgentGym admin", charset="UTF-8"'
    return response


class PolicyAdmin:
    """`/admin/policies`, `/admin/rollout`, `/admin/rollback` on one proxy."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.registry = proxy.planner.registry

    def routes(self) -> list[Route]:
        return [Route(path, self._admin_only(handler), methods=[method]) for path, handler, method in (
            ("/admin/policies", self.index, "GET"),
            ("/admin/policies/{version}", self.version, "GET"),
            ("/admin/policies/{version}/promote", self.promote, "POST"),
            ("/admin/policies/{version}/shadow", self.shadow, "POST"),
            ("/admin/rollout", self.rollout, "GET"),
            ("/admin/rollback", self.rollback, "POST"),
        )]

    async def index(self, request: Request) -> Response:
        """What `agentgym policies list --format json` prints."""
        return _json((await run_in_threadpool(self.registry.index)).model_dump())

    async def version(self, request: Request) -> Response:
        name = request.path_params["version"]
        found = (await run_in_threadpool(self.registry.index)).versions.get(name)
        return _json(found.model_dump()) if found else _error(404, f"no policy version {name!r}", "unknown_version")

    async def rollout(self, request: Request) -> Response:
        return _json(await run_in_threadpool(self._state))

    async def promote(self, request: Request) -> Response:
        version = request.path_params["version"]

        def act(body: Promotion, by: str, reason: str) -> None:
            by_hand.promote(self.registry, version, canary=body.canary, by=by, reason=reason)

        return await self._change(request, Promotion, "promotion", act)

    async def shadow(self, request: Request) -> Response:
        version = request.path_params["version"]

        def act(body: Change, by: str, reason: str) -> None:
            self.registry.start_shadow(version, by=by, reason=reason)

        return await self._change(request, Change, "shadow", act)

    async def rollback(self, request: Request) -> Response:
        def act(body: Change, by: str, reason: str) -> None:
            self.registry.rollback(by=by, reason=reason)

        return await self._change(request, Change, "rollback", act)

    async def _change(self, request: Request, form: type[Change], what: str,
                      act: Callable[[Any, str, str], None]) -> Response:
        """Read the body, make the change, and answer once the planner serves it: the new state."""
        try:
            body = form.model_validate(orjson.loads(await request.body() or b"{}"))
        except orjson.JSONDecodeError as exc:
            return _error(400, f"request body is not valid JSON: {exc}", "invalid_json")
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            return _error(400, details, "invalid_body")
        by = by_hand.made_by("admin", body.by or "api")
        try:
            await run_in_threadpool(act, body, by, body.reason or f"manual {what} through the admin API")
        except KeyError as exc:
            return _error(404, exc.args[0], "unknown_version")
        except CorruptPolicy as exc:
            return _error(409, str(exc), "corrupt_policy")
        except ValueError as exc:
            return _error(409, str(exc), "refused")
        return _json(await run_in_threadpool(self._serve_now))

    def _serve_now(self) -> dict[str, Any]:
        self.proxy.planner.refresh()
        return self._state()

    def _state(self) -> dict[str, Any]:
        """The registry's rollout (as `agentgym rollout status`), and what this proxy has loaded of it."""
        return {**by_hand.rollout_status(self.registry.index(), self.proxy.settings.planner.control_share), "serving": self.proxy.planner.loaded()}

    def _admin_only(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            if not admin_allowed(request, self.proxy.settings, self.proxy.server_note):
                return denied()
            return await handler(request)

        return guarded


def _json(data: Any) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _error(status: int, message: str, code: str, type_: str = "invalid_request_error") -> Response:
    return Response(error_body(message, type_, code), status, media_type="application/json")
