"""`POST /v1/feedback`: a reward or a success flag for an episode, an inference or a tool call."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentgym.proxy.episodes import EpisodeLinker, new_id
from agentgym.proxy.upstream import error_body
from agentgym.store.recorder import Recorder, StoreUnavailable

TARGETS = ("episode_id", "inference_id", "tool_call_id")
# Where each kind of id is recorded, and the column holding its episode.
_LOOKUP = {
    "episode_id": "SELECT episode_id FROM inferences WHERE episode_id = ? LIMIT 1",
    "inference_id": "SELECT episode_id FROM inferences WHERE id = ? LIMIT 1",
    "tool_call_id": "SELECT episode_id FROM tool_calls WHERE id = ? LIMIT 1",
}


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episode_id: str | None = None
    inference_id: str | None = None
    tool_call_id: str | None = None
    reward: float | None = None
    success: bool | None = None
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_target_and_a_value(self) -> Feedback:
        named = [t for t in TARGETS if getattr(self, t)]
        if len(named) != 1:
            raise ValueError("give exactly one of episode_id, inference_id, tool_call_id")
        if self.reward is None and self.success is None:
            raise ValueError("give a reward, a success flag, or both")
        if self.reward is not None and not math.isfinite(self.reward):
            raise ValueError("reward must be a finite number")
        return self

    @property
    def target(self) -> tuple[str, str]:
        key = next(t for t in TARGETS if getattr(self, t))
        return key, getattr(self, key)


class FeedbackEndpoint:
    def __init__(self, linker: EpisodeLinker, recorder: Recorder,
                 on_episode_outcome: Callable[[str, float | None, bool | None], None] | None = None) -> None:
        self.linker = linker
        self.recorder = recorder
        self.on_episode_outcome = on_episode_outcome  # told an episode's own feedback (its Agent Lightning reward)

    async def handle(self, request: Request) -> Response:
        try:
            feedback = Feedback.model_validate(orjson.loads(await request.body()))
        except orjson.JSONDecodeError as exc:
            return _error(400, f"request body is not valid JSON: {exc}", "invalid_json")
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            return _error(422, details, "invalid_feedback")
        key, value = feedback.target
        try:
            episode_id = self.linker.episode_of(value) or await run_in_threadpool(self._stored_episode, key, value)
        except StoreUnavailable as exc:
            return _error(503, f"cannot check {key} {value!r}: store unavailable ({exc})", "store_unavailable")
        if episode_id is None:
            return _error(404, f"unknown {key} {value!r}", "not_found")
        feedback_id = new_id("fb")
        self.recorder.add(
            "feedback",
            (feedback_id, time.time(), key.removesuffix("_id"), value, episode_id, feedback.reward, feedback.success,
             orjson.dumps(feedback.metadata).decode() if feedback.metadata is not None else None),
        )
        if key == "episode_id" and self.on_episode_outcome is not None:
            self.on_episode_outcome(episode_id, feedback.reward, feedback.success)
        return JSONResponse({"id": feedback_id, "episode_id": episode_id, "recorded": True})

    def _stored_episode(self, key: str, value: str) -> str | None:
        with self.recorder.reader() as con:
            row = con.execute(_LOOKUP[key], [value]).fetchone()
        return row[0] if row else None


def _error(status: int, message: str, code: str) -> Response:
    type_ = "invalid_request_error" if status < 500 else "server_error"
    return Response(error_body(message, type_, code), status, media_type="application/json")
