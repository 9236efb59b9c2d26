"""What one inference cost: tokens and dollars, from litellm, computed on the writer thread.

The request handler only collects facts (the model, the upstream's `usage` if any); turning
them into a stored row happens in the recorder's thread, so litellm's token counting and
price lookups never add latency to a request. Tokens missing from the upstream's answer
(a stream without `include_usage`) are counted with litellm's tokenizer and flagged
`usage_estimated`. Models litellm has no price for get the prices from `pricing:`, or none.

litellm takes seconds to import, so the proxy serves before it is ready; rows recorded in
that time are stored at once without cost and filled in (`backfill`) when it is.
"""

from __future__ import annotations

import functools
import gc
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from agentgym.config import ModelPrice

log = logging.getLogger(__name__)


class UsageCosting:
    """Turns InferenceRecords into stored rows with tokens and cost; owns the litellm import."""

    def __init__(self, pricing: dict[str, ModelPrice] | None = None, *, record_bodies: bool = True,
                 on_measured: Callable[[str | None, int | None, int | None, float | None], None] | None = None) -> None:
        self.pricing = pricing or {}
        self.record_bodies = record_bodies
        self.on_measured = on_measured  # told each row's final tokens and cost (model, prompt, completion, cost)
        self._lock = threading.Lock()
        self._litellm: Any = None
        self._cost = functools.lru_cache(maxsize=65_536)(self._uncached_cost)
        self._unpriced: set[str] = set()
        self._deferred: list[InferenceRecord] = []  # writer thread only

    DEFERRED_MAX = 100_000

    def litellm(self) -> Any:
        """litellm, imported once (it takes seconds) with our `pricing:` registered."""
        with self._lock:
            if self._litellm is None:
                import litellm

                litellm.suppress_debug_info = True  # no banners on stdout for unpriced models
                if self.pricing:
                    litellm.register_model(
                        {
                            model: {**price.model_dump(), "litellm_provider": "openai", "mode": "chat"}
                            for model, price in self.pricing.items()
                        }
                    )
                self._litellm = litellm
                # litellm leaves ~10^6 long-lived objects; every full GC would walk them all (pauses of
                # 100+ ms on the request path). Move them out of the collector's reach.
                gc.freeze()
        return self._litellm

    def warm(self) -> threading.Thread:
        """Start importing litellm in the background so the first row does not wait on it."""
        thread = threading.Thread(target=self.litellm, name="agentgym-litellm-import", daemon=True)
        thread.start()
        return thread

    def row(self, record: InferenceRecord) -> tuple:
        """The stored row; runs on the recorder's thread."""
        if self._litellm is None:
            if len(self._deferred) < self.DEFERRED_MAX:
                self._deferred.append(record)
            usage = record.usage or {}
            return record.to_row(usage.get("prompt_tokens"), usage.get("completion_tokens"), False, None,
                                 with_bodies=self.record_bodies)
        return record.to_row(*self._measure(record), with_bodies=self.record_bodies)

    @property
    def pending(self) -> int:
        """Rows stored before litellm was ready, still waiting for their tokens and cost."""
        return len(self._deferred)

    def settle(self) -> None:
        """Before the final flush: if rows wait for litellm, finish importing it so they get filled in."""
        if self._deferred:
            self.litellm()

    def backfill(self, con: Any) -> bool:
        """Fill in tokens and cost of rows stored while litellm was importing (recorder maintenance);
        True if it did."""
        if not self._deferred or self._litellm is None:
            return False
        measured = [(r.id, *self._measure(r)) for r in self._deferred]
        self._deferred = []  # after measuring (same thread as `row`): `pending` is 0 once all are counted
        con.execute(
            "UPDATE inferences SET prompt_tokens = v.p, completion_tokens = v.c, usage_estimated = v.e, cost_usd = v.cost "
            "FROM (SELECT unnest($1) AS id, unnest($2) AS p, unnest($3) AS c, unnest($4) AS e, unnest($5) AS cost) v "
            "WHERE inferences.id = v.id",
            [list(column) for column in zip(*measured, strict=True)],
        )
        return True

    def _measure(self, record: InferenceRecord) -> tuple[int | None, int | None, bool, float | None]:
        prompt, completion, estimated = self._tokens(record)
        cost = self._cost(record.model, prompt, completion) if record.model and prompt is not None else None
        if self.on_measured is not None:
            self.on_measured(record.model, prompt, completion, cost)
        return prompt, completion, estimated, cost

    def _tokens(self, record: InferenceRecord) -> tuple[int | None, int | None, bool]:
        usage = record.usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if prompt is not None and completion is not None:
            return prompt, completion, False
        if record.status != 200 or record.request_body is None or not record.model:
            return prompt, completion, False
        try:
            return self._estimate(record.model, record.request_body, record.answer)
        except Exception as exc:  # noqa: BLE001 - an estimate is best-effort
            log.debug("token estimate failed for %s: %s", record.model, exc)
            return None, None, False

    def _estimate(self, model: str, request_body: bytes, answer: dict[str, Any] | None) -> tuple[int, int, bool]:
        litellm = self.litellm()
        request = orjson.loads(request_body)
        prompt = litellm.token_counter(model=model, messages=request.get("messages"), tools=request.get("tools"))
        text = ""
        if answer:
            text = (answer.get("content") or "") + "".join(
                call["function"]["name"] + call["function"]["arguments"] for call in answer.get("tool_calls") or ()
            )
        completion = litellm.token_counter(model=model, text=text, count_response_tokens=True) if text else 0
        return prompt, completion, True

    def _uncached_cost(self, model: str, prompt_tokens: int, completion_tokens: int | None) -> float | None:
        if model in self._unpriced:
            return None
        try:
            prompt_cost, completion_cost = self.litellm().cost_per_token(
                model=model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens or 0
            )
        except Exception:  # noqa: BLE001 - a model litellm has no price for: no cost, not an error
            self._unpriced.add(model)
            return None
        return prompt_cost + completion_cost


@dataclass(slots=True)
class InferenceRecord:
    id: str
    episode_id: str
    episode_link: str
    created_at: float
    model: str | None
    provider: str
    stream: bool
    tools_offered: int
    tool_choice: str | None
    request_body: bytes | None = None
    status: int = 0
    error_type: str | None = None
    error_message: str | None = None
    usage: dict[str, Any] | None = None
    latency_ms: float | None = None
    ttfb_ms: float | None = None
    finish_reason: str | None = None
    policy_version: str | None = None
    arm: str = "control"
    answer: dict[str, Any] | None = None  # the assistant message, for recording and token estimates
    response_body: bytes | None = None

    def to_row(
        self, prompt: int | None, completion: int | None, estimated: bool, cost: float | None, *, with_bodies: bool
    ) -> tuple:
        """The `inferences` row, in store.schema's column order."""
        return (
            self.id, self.episode_id, self.episode_link, self.created_at, self.model, self.provider,
            self.stream, self.status, self.error_type, self.error_message, prompt, completion, estimated, cost,
            self.latency_ms, self.ttfb_ms, self.tools_offered, self.tool_choice, self.finish_reason,
            self.policy_version, self.arm,
            self.request_body.decode(errors="replace") if with_bodies and self.request_body is not None else None,
            self._response_text() if with_bodies else None,
        )

    def _response_text(self) -> str | None:
        if self.response_body is not None:
            return self.response_body.decode(errors="replace")
        if self.answer is None:
            return None
        return orjson.dumps(
            {"choices": [{"message": self.answer, "finish_reason": self.finish_reason}], "usage": self.usage}
        ).decode()
