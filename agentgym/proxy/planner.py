"""The planner: applies the live policy version to each request that offers tools, and records
what it decided (the `decisions` table) for the trainer.

With no live version, or when the client chose `tool_choice` itself, requests pass unchanged.
The live version is re-read from the registry when its index changes (`refresh`, every
`planner.refresh_s`); a version whose artifact fails its checksum is refused and the one
serving keeps serving. The swap is one reference assignment: a request in flight finishes
with the version it started with. Everything here runs inside the proxy's fail-open guard.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import orjson

from agentgym.config import PlannerConfig
from agentgym.proxy.episodes import new_id
from agentgym.proxy.outcomes import message_text
from agentgym.proxy.usage import InferenceRecord
from agentgym.store.recorder import Recorder
from agentgym.trainer.encoder import Encoder, shared_encoder
from agentgym.trainer.policy import PolicyWeights, bucket, decide
from agentgym.trainer.registry import CorruptPolicy, Registry, Version

log = logging.getLogger(__name__)

CONTEXT_CHARS = 1200
TOOL_CACHE = 4096


def context_text(messages: list[dict[str, Any]]) -> str:
    """What the policy reads: the latest user turn, then what tools returned since (errors included)."""
    last_user = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), default=-1)
    user = message_text(messages[last_user].get("content")) if last_user >= 0 else ""
    results = [message_text(m.get("content"))[:300] for m in messages[last_user + 1 :]
               if isinstance(m, dict) and m.get("role") == "tool"]
    return "\n".join([user[-CONTEXT_CHARS:], *results[-3:]])


def tool_text(function: dict[str, Any]) -> str:
    """What the policy reads of a tool: its name in words, its description, its parameters' names."""
    parameters = (function.get("parameters") or {}).get("properties") or {}
    name = str(function.get("name", "")).replace("_", " ").replace(".", " ")
    return f"{name}: {function.get('description') or ''} ({', '.join(parameters)})"


def spec_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Planner:
    def __init__(self, config: PlannerConfig, registry: Registry, recorder: Recorder, *,
                 encoder: Encoder | None = None) -> None:
        self.config = config
        self.registry = registry
        self.recorder = recorder
        self.live: tuple[Version, PolicyWeights] | None = None
        self.refused: set[str] = set()
        self._encoder = encoder
        self._stamp: float | None = None
        self._rng = np.random.default_rng(config.seed)
        self._tools: OrderedDict[str, np.ndarray] = OrderedDict()  # spec hash -> vector, most recent last

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = shared_encoder()
        return self._encoder

    def refresh(self) -> None:
        """Serve the registry's live version; keep the current one if the new artifact is refused.

        Blocking (it may load, or at a machine's first use distil, the encoder): run it off the
        event loop."""
        stamp = self.registry.stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        live = self.registry.index().live
        if live is None:
            self.live = None
        elif (self.live is None or self.live[0].version != live) and live not in self.refused:
            try:
                loaded = self.registry.load(live)
            except CorruptPolicy:
                self.refused.add(live)
                log.exception("policy %s refused; %s keeps serving", live, self.live[0].version if self.live else "none")
                return
            if loaded[0].encoder_checksum != self.encoder.checksum:
                self.refused.add(live)
                log.error("policy %s was trained on another encoder; refused", live)
                return
            self.live = loaded
            log.info("now serving policy %s", live)

    def plan(self, payload: dict[str, Any], record: InferenceRecord) -> dict[str, Any] | None:
        """The request as the policy would send it, or None to send it unchanged. Records the decision."""
        live = self.live  # set only once the encoder is loaded (refresh)
        tools = payload.get("tools")
        if live is None or not self.config.enabled or not isinstance(tools, list) or not tools:
            return None
        if payload.get("tool_choice") not in (None, "auto"):
            return None  # the client chose; the planner does not overrule it
        functions = [t.get("function") for t in tools if isinstance(t, dict) and t.get("type") == "function"]
        if len(functions) != len(tools) or not all(isinstance(f, dict) and f.get("name") for f in functions):
            return None
        version, weights = live
        context = context_text(payload.get("messages") or [])
        hashes, vectors = zip(*(self._tool(f) for f in functions), strict=True)
        buckets = np.array([bucket(f["name"]) for f in functions])
        choice = decide(weights, self.encoder.encode(context), np.stack(vectors), buckets, self.config, self._rng)
        names = [f["name"] for f in functions]
        record.policy_version, record.arm = version.version, "live"
        self.recorder.add("decisions", (
            new_id("dec"), record.id, record.episode_id, record.created_at, version.version, "live", choice.action,
            names[choice.tool] if choice.action == "force" else None, choice.tool, choice.propensity,
            orjson.dumps(list(hashes)).decode(), orjson.dumps([names[i] for i in choice.offered]).decode(), context))
        if choice.action == "defer":
            return None
        changed = {**payload, "tools": [tools[i] for i in choice.offered]}
        if choice.action == "force":
            changed["tool_choice"] = {"type": "function", "function": {"name": names[choice.tool]}}
        return changed

    def _tool(self, function: dict[str, Any]) -> tuple[str, np.ndarray]:
        text = tool_text(function)
        key = spec_hash(text)
        vector = self._tools.get(key)
        if vector is None:
            vector = self.encoder.encode(text)
            self._tools[key] = vector
            if len(self._tools) > TOOL_CACHE:
                self._tools.popitem(last=False)
            self.recorder.add("tool_specs", (key, time.time(), str(function["name"]), text))
        else:
            self._tools.move_to_end(key)
        return key, vector
