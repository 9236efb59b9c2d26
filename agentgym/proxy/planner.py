"""The planner: applies the live policy version to each request that offers tools, and records
what it decided (the `decisions` table) for the trainer.

With no live version, or when the client chose `tool_choice` itself, requests pass unchanged.
While a canary runs, its version serves its share of episodes instead (`arm` "canary"), and
`planner.control_share` of episodes get no policy at all (`arm` "control"): an episode's place
is a hash of its id, so all its requests stay on one arm. A shadow version scores every request
the planner sees and its would-be decision is recorded beside the served one (`arm` "shadow");
it never reaches the model. The versions are
re-read from the registry when its index changes (`refresh`, every `planner.refresh_s`); a
version whose artifact fails its checksum is refused and the one serving keeps serving. The
swap is one reference assignment: a request in flight finishes with the version it started
with. Everything here runs inside the proxy's fail-open guard.
"""

from __future__ import annotations

import hashlib
import logging
import threading
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
from agentgym.trainer.policy import Choice, PolicyWeights, bucket, decide
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


def episode_share(episode_id: str) -> float:
    """A stable place in [0, 1) for an episode: the same in every process and after restarts."""
    return int.from_bytes(hashlib.blake2b(episode_id.encode(), digest_size=8).digest(), "little") / 2**64


class Planner:
    def __init__(self, config: PlannerConfig, registry: Registry, recorder: Recorder, *,
                 encoder: Encoder | None = None) -> None:
        self.config = config
        self.registry = registry
        self.recorder = recorder
        self.live: tuple[Version, PolicyWeights] | None = None
        self.canary: tuple[Version, PolicyWeights, float] | None = None  # and its percentage of episodes
        self.shadow: tuple[Version, PolicyWeights] | None = None
        self.refused: set[str] = set()
        self._encoder = encoder
        self._stamp: float | None = None
        self._refreshing = threading.Lock()  # the watcher and an admin change may refresh at once
        self._rng = np.random.default_rng(config.seed)
        self._shadow_rng = np.random.default_rng(None if config.seed is None else config.seed + 1)
        self._tools: OrderedDict[str, np.ndarray] = OrderedDict()  # spec hash -> vector, most recent last

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = shared_encoder()
        return self._encoder

    def refresh(self) -> None:
        """Serve the registry's live and canary versions, and score with its shadow version; keep
        the current ones if a new artifact is refused.

        Blocking (it may load, or at a machine's first use distil, the encoder): run it off the
        event loop. One at a time: a refresh that read the index earlier must not finish after
        one that read it later, leaving the older versions serving."""
        with self._refreshing:
            stamp = self.registry.stamp()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            index = self.registry.index()
            self.live = self._serving(index.live, self.live)
            canary = index.canary
            loaded = self._serving(canary.version if canary else None, self.canary[:2] if self.canary else None,
                                   keep_on_refusal=False)
            self.canary = (*loaded, canary.percent) if loaded and canary else None
            self.shadow = self._serving(index.shadow_version, self.shadow, keep_on_refusal=False)

    def loaded(self) -> dict[str, str | None]:
        """The versions loaded now, live, canary and shadow (what serves may lag the registry by a
        refresh, or keep an older live version when a new one is refused)."""
        name = lambda served: served[0].version if served else None  # noqa: E731
        return {"live": name(self.live), "canary": name(self.canary), "shadow": name(self.shadow)}

    def _serving(self, wanted: str | None, current: tuple[Version, PolicyWeights] | None, *,
                 keep_on_refusal: bool = True) -> tuple[Version, PolicyWeights] | None:
        """`wanted`'s weights (`current` if it is that version already). If `wanted` is refused:
        `current` for the live version (the one serving keeps serving), none for a canary or a
        shadow (another version must not take a place the registry gave to `wanted`)."""
        if wanted is None:
            return None
        if current is not None and current[0].version == wanted:
            return current
        fallback = current if keep_on_refusal else None
        if wanted in self.refused:
            return fallback
        try:
            loaded = self.registry.load(wanted)
        except CorruptPolicy:
            self.refused.add(wanted)
            log.exception("policy %s refused; %s serves", wanted, fallback[0].version if fallback else "none")
            return fallback
        if loaded[0].encoder_checksum != self.encoder.checksum:
            self.refused.add(wanted)
            log.error("policy %s was trained on another encoder; refused", wanted)
            return fallback
        log.info("now serving policy %s", wanted)
        return loaded

    def arm(self, episode_id: str) -> tuple[str, tuple[Version, PolicyWeights] | None]:
        """The arm an episode is on and the version serving it: "control" (none) for
        `control_share` of episodes, "canary" for the canary's share, else "live"."""
        share = episode_share(episode_id)
        if share < self.config.control_share:
            return "control", None
        canary = self.canary
        if canary is not None and share < self.config.control_share + canary[2] / 100:
            return "canary", canary[:2]
        return "live", self.live

    def plan(self, payload: dict[str, Any], record: InferenceRecord) -> dict[str, Any] | None:
        """The request as the policy would send it, or None to send it unchanged. Records the
        decision, and the shadow version's would-be decision beside it (never applied)."""
        arm, serving = self.arm(record.episode_id)  # set only once the encoder is loaded (refresh)
        shadow = self.shadow
        tools = payload.get("tools")
        if serving is None and shadow is None or not self.config.enabled or not isinstance(tools, list) or not tools:
            return None
        if payload.get("tool_choice") not in (None, "auto"):
            return None  # the client chose; the planner does not overrule it
        functions = [t.get("function") for t in tools if isinstance(t, dict) and t.get("type") == "function"]
        if len(functions) != len(tools) or not all(isinstance(f, dict) and f.get("name") for f in functions):
            return None
        context = context_text(payload.get("messages") or [])
        hashes, vectors = zip(*(self._tool(f) for f in functions), strict=True)
        scored = (self.encoder.encode(context), np.stack(vectors), np.array([bucket(f["name"]) for f in functions]))
        names = [f["name"] for f in functions]

        def record_decision(version: Version, as_arm: str, choice: Choice) -> None:
            self.recorder.add("decisions", (
                new_id("dec"), record.id, record.episode_id, record.created_at, version.version, as_arm, choice.action,
                names[choice.tool] if choice.action == "force" else None, choice.tool, choice.propensity,
                orjson.dumps(list(hashes)).decode(), orjson.dumps([names[i] for i in choice.offered]).decode(),
                context))

        if shadow is not None:  # its own draws: the served decisions are the same with or without a shadow
            record_decision(shadow[0], "shadow", decide(shadow[1], *scored, self.config, self._shadow_rng))
        if serving is None:
            return None
        version, weights = serving
        choice = decide(weights, *scored, self.config, self._rng)
        record.policy_version, record.arm = version.version, arm
        record_decision(version, arm, choice)
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
