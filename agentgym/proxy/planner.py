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

A version is the default planner's weights (`agentgym.trainer.policy`, scored here) or an LLM
planner (engine "lightning"), asked by `agentgym.proxy.llm_planner`; the arms, the records and
the actions are the same for both. An LLM shadow is asked beside the request, not before it:
its decision is recorded when it answers, and the served request never waits for it.

With `lightning.planner: upstream` an LLM version is not asked: the agent's own requests are
its (`agentgym.proxy.upstream_planner`). `route` says where each goes, the model's answer is
recorded as the decision (`answered`), and an LLM shadow is sent the agent's own request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import orjson

from agentgym.config import PlannerConfig
from agentgym.proxy.episodes import new_id
from agentgym.proxy.outcomes import message_text
from agentgym.proxy.usage import InferenceRecord
from agentgym.trainer.encoder import Encoder, shared_encoder
from agentgym.trainer.policy import Choice, PolicyWeights, bucket, decide
from agentgym.trainer.registry import CorruptPolicy, LlmSpec, Registry, Version

if TYPE_CHECKING:
    from agentgym.proxy.llm_planner import LlmPlanner
    from agentgym.proxy.upstream_planner import Route
    from agentgym.store.recorder import Recorder

log = logging.getLogger(__name__)

CONTEXT_CHARS = 1200
TOOL_CACHE = 4096
GATEWAY_RETRY_S = 10.0  # after a failure to point Agent Lightning's gateway at the live version
AWAITING = 10_000  # upstream mode: requests whose answer is still to be recorded as a decision, at most
Served = tuple[Version, PolicyWeights | LlmSpec]


def latest_user_turn(messages: list[dict[str, Any]]) -> int:
    """The index of the latest user message; -1 if none."""
    return max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"), default=-1)


def context_text(messages: list[dict[str, Any]]) -> str:
    """What the policy reads: the latest user turn, then what tools returned since (errors included)."""
    last_user = latest_user_turn(messages)
    user = message_text(messages[last_user].get("content")) if last_user >= 0 else ""
    results = [message_text(m.get("content"))[:300] for m in messages[last_user + 1 :]
               if isinstance(m, dict) and m.get("role") == "tool"]
    return "\n".join([user[-CONTEXT_CHARS:], *results[-3:]])


def tools_ran_this_turn(messages: list[dict[str, Any]]) -> bool:
    """Whether a tool has returned since the latest user turn. "force" names the tool only for a
    turn's first call: later in the turn its tool is offered alone and the model may answer
    instead, as the OpenAI Agents SDK resets `tool_choice` after a call (`reset_tool_choice`).
    Forced at every request, a model that had done what was asked called the same tool again
    until the episode ran out of turns (BENCHMARKS.md, "Force once a turn")."""
    return any(isinstance(m, dict) and m.get("role") == "tool" for m in messages[latest_user_turn(messages) + 1 :])


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
                 encoder: Encoder | None = None, llm: LlmPlanner | None = None) -> None:
        self.config = config
        self.registry = registry
        self.recorder = recorder
        self.llm = llm  # asks LLM planner versions; without it they are refused
        self.live: Served | None = None
        self.canary: tuple[Version, PolicyWeights | LlmSpec, float] | None = None  # and its percentage of episodes
        self.shadow: Served | None = None
        self.refused: set[str] = set()
        self._encoder = encoder
        self._stamp: float | None = None
        self._refreshing = threading.Lock()  # the watcher and an admin change may refresh at once
        self._point_after = 0.0  # when to try again to point the gateway at the live version
        self._rng = np.random.default_rng(config.seed)
        self._shadow_rng = np.random.default_rng(None if config.seed is None else config.seed + 1)
        self._tools: OrderedDict[str, np.ndarray | None] = OrderedDict()  # spec hash -> vector, most recent last
        # upstream mode: inference id -> records the model's answer to it as the decision
        self._awaiting: OrderedDict[str, Callable[[dict[str, Any] | None, float | None], None]] = OrderedDict()

    @property
    def upstream_mode(self) -> bool:
        """The agent's own requests are the LLM planner's (`lightning.planner: upstream`)."""
        return self.llm is not None and self.llm.config.planner == "upstream"

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = shared_encoder()
        return self._encoder

    def refresh(self) -> None:
        """Serve the registry's live and canary versions, and score with its shadow version; keep
        the current ones if a new artifact is refused. With `lightning.gateway` on, keep Agent
        Lightning's gateway on the live LLM version.

        Blocking (it may load, or at a machine's first use distil, the encoder): run it off the
        event loop. One at a time: a refresh that read the index earlier must not finish after
        one that read it later, leaving the older versions serving."""
        with self._refreshing:
            stamp = self.registry.stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                index = self.registry.index()
                self.live = self._serving(index.live, self.live)
                canary = index.canary
                loaded = self._serving(canary.version if canary else None, self.canary[:2] if self.canary else None,
                                       keep_on_refusal=False)
                self.canary = (*loaded, canary.percent) if loaded and canary else None
                self.shadow = self._serving(index.shadow_version, self.shadow, keep_on_refusal=False)
            self._keep_gateway_on_live()

    def _keep_gateway_on_live(self) -> None:
        """The gateway on the live LLM version; in upstream mode, while none is live, on the agent's
        upstream itself (BASE)."""
        from agentgym.proxy.llm_planner import BASE

        live, llm = self.live, self.llm
        if llm is None or not llm.config.gateway:
            return
        if live is not None and isinstance(live[1], LlmSpec):
            target = live[0].version, live[1]
        elif self.upstream_mode:
            target = BASE, LlmSpec(model=llm.config.planner_model, server=llm.upstream_url)
        else:
            return
        if llm.gateway_version == target[0] or time.monotonic() < self._point_after:
            return
        if not llm.point_gateway(*target):
            self._point_after = time.monotonic() + GATEWAY_RETRY_S

    def loaded(self) -> dict[str, str | None]:
        """The versions loaded now, live, canary and shadow (what serves may lag the registry by a
        refresh, or keep an older live version when a new one is refused)."""
        name = lambda served: served[0].version if served else None  # noqa: E731
        return {"live": name(self.live), "canary": name(self.canary), "shadow": name(self.shadow)}

    def _serving(self, wanted: str | None, current: Served | None, *, keep_on_refusal: bool = True) -> Served | None:
        """`wanted`'s weights or spec (`current` if it is that version already). If `wanted` is
        refused: `current` for the live version (the one serving keeps serving), none for a canary
        or a shadow (another version must not take a place the registry gave to `wanted`)."""
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
        if isinstance(loaded[1], LlmSpec):
            if self.llm is None:
                self.refused.add(wanted)
                log.error("policy %s is an LLM planner and this planner asks none; refused", wanted)
                return fallback
        elif loaded[0].encoder_checksum != self.encoder.checksum:
            self.refused.add(wanted)
            log.error("policy %s was trained on another encoder; refused", wanted)
            return fallback
        log.info("now serving policy %s", wanted)
        return loaded

    def arm(self, episode_id: str) -> tuple[str, Served | None]:
        """The arm an episode is on and the version serving it: "control" (none) for
        `control_share` of episodes, "canary" for the canary's share, else "live"."""
        share = episode_share(episode_id)
        if share < self.config.control_share:
            return "control", None
        canary = self.canary
        if canary is not None and share < self.config.control_share + canary[2] / 100:
            return "canary", canary[:2]
        return "live", self.live

    def route(self, episode_id: str, *, stream: bool) -> Route | None:
        """Upstream mode: where the episode's request goes (`upstream_planner.Route`); None: the
        configured upstream, as ever."""
        from agentgym.proxy.llm_planner import BASE
        from agentgym.proxy.upstream_planner import Route

        if not self.upstream_mode:
            return None
        _, serving = self.arm(episode_id)
        gateway = self.llm.gateway_version
        if serving is not None and isinstance(serving[1], LlmSpec):
            if serving[0].version == gateway and not stream:
                return Route(gateway=True)
            return Route(server=serving[1].server, model=serving[1].model)
        return Route(gateway=True) if gateway == BASE and not stream else None

    def answered(self, inference_id: str, message: dict[str, Any] | None, propensity: float | None) -> None:
        """Upstream mode: the model's answer to a request the planner left to it, recorded as the
        decision (once; a request that failed records none)."""
        record = self._awaiting.pop(inference_id, None)
        if record is not None and message is not None:
            record(message, propensity)

    async def plan(self, payload: dict[str, Any], record: InferenceRecord) -> dict[str, Any] | None:
        """The request as the policy would send it, or None to send it unchanged. Records the
        decision, and the shadow version's would-be decision beside it (never applied)."""
        arm, serving = self.arm(record.episode_id)  # set only once the encoder is loaded (refresh)
        if serving is not None and self.config.enabled:
            # every request of the episode is its arm's, those the policy leaves alone (no tools, the
            # client's own tool_choice) included: an episode is judged by the arm it is on
            record.policy_version, record.arm = serving[0].version, arm
        shadow = self.shadow
        tools = payload.get("tools")
        if serving is None and shadow is None or not self.config.enabled or not isinstance(tools, list) or not tools:
            return None
        if payload.get("tool_choice") not in (None, "auto"):
            return None  # the client chose; the planner does not overrule it
        functions = [t.get("function") for t in tools if isinstance(t, dict) and t.get("type") == "function"]
        if len(functions) != len(tools) or not all(isinstance(f, dict) and f.get("name") for f in functions):
            return None
        messages = payload.get("messages") or []
        context = context_text(messages)
        specs = [self._tool(f) for f in functions]
        names = [f["name"] for f in functions]
        scored: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # the default planner's inputs, once

        def weigh(weights: PolicyWeights, rng: np.random.Generator) -> Choice:
            if not scored:
                scored.append((self.encoder.encode_with_words(context), np.stack([self._vector(*spec) for spec in specs]),
                               np.array([bucket(name) for name in names])))
            return decide(weights, *scored[0], self.config, rng)

        def record_decision(version: Version, as_arm: str, choice: Choice) -> None:
            self.recorder.add("decisions", (
                new_id("dec"), record.id, record.episode_id, record.created_at, version.version, as_arm, choice.action,
                names[choice.tool] if choice.action == "force" else None, choice.tool, choice.propensity,
                orjson.dumps([key for key, _ in specs]).decode(),
                orjson.dumps([names[i] for i in choice.offered]).decode(),
                context))

        if shadow is not None:  # its own draws: the served decisions are the same with or without a shadow
            if isinstance(shadow[1], LlmSpec) and self.upstream_mode:
                self.llm.spawn(self._shadow_as_agent(shadow, payload, names, record_decision))
            elif isinstance(shadow[1], LlmSpec):
                self.llm.spawn(self._ask_shadow(shadow, messages, functions, record.episode_id, record_decision))
            else:
                record_decision(shadow[0], "shadow", weigh(shadow[1], self._shadow_rng))
        if serving is None:
            return None
        version, policy = serving
        if isinstance(policy, LlmSpec) and self.upstream_mode:  # the model's own answer is the decision
            self._await_answer(record.id, lambda message, propensity: self._record_answer(
                version, arm, message, propensity, names, record_decision))
            return None
        if isinstance(policy, LlmSpec):
            choice = await self.llm.choose(version, policy, messages, functions, record.episode_id)
            if choice is None:
                return None  # it failed (counted): the request goes unchanged
        else:
            choice = weigh(policy, self._rng)
        record_decision(version, arm, choice)
        if choice.action == "defer":
            return None
        changed = {**payload, "tools": [tools[i] for i in choice.offered]}
        if choice.action == "force" and not tools_ran_this_turn(messages):
            changed["tool_choice"] = {"type": "function", "function": {"name": names[choice.tool]}}
        return changed

    async def _ask_shadow(self, shadow: Served, messages: list[dict[str, Any]], functions: list[dict[str, Any]],
                          episode_id: str, record_decision: Callable[[Version, str, Choice], None]) -> None:
        choice = await self.llm.choose(shadow[0], shadow[1], messages, functions, episode_id)
        if choice is not None:
            record_decision(shadow[0], "shadow", choice)

    def _await_answer(self, inference_id: str, record: Callable[[dict[str, Any] | None, float | None], None]) -> None:
        self._awaiting[inference_id] = record
        if len(self._awaiting) > AWAITING:  # answers never reported (a handler that broke): forgotten
            self._awaiting.popitem(last=False)

    @staticmethod
    def _record_answer(version: Version, arm: str, message: dict[str, Any] | None, propensity: float | None,
                       names: list[str], record_decision: Callable[[Version, str, Choice], None]) -> None:
        from agentgym.proxy.upstream_planner import agent_choice

        choice = agent_choice(message, names, propensity)
        if choice is not None:
            record_decision(version, arm, choice)

    async def _shadow_as_agent(self, shadow: Served, payload: dict[str, Any], names: list[str],
                               record_decision: Callable[[Version, str, Choice], None]) -> None:
        """Upstream mode: an LLM shadow sent the agent's own request; its answer, recorded (a failure counted)."""
        from agentgym.proxy.upstream_planner import shadow_answer

        spec = shadow[1]
        try:
            message, propensity = await shadow_answer(self.llm, spec.server, spec.model, payload,
                                                      self.llm.agent_timeout_s)
        except (httpx.HTTPError, KeyError, IndexError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
            self.llm.count_failure("llm_planner_shadow")
            log.warning("LLM shadow %s failed: %s", shadow[0].version, exc)
            return
        self._record_answer(shadow[0], "shadow", message, propensity, names, record_decision)

    def _tool(self, function: dict[str, Any]) -> tuple[str, str]:
        """A tool's spec hash and text, its spec recorded the first time (the trainer reads tools' texts there)."""
        text = tool_text(function)
        key = spec_hash(text)
        if key in self._tools:
            self._tools.move_to_end(key)
        else:
            self._tools[key] = None
            if len(self._tools) > TOOL_CACHE:
                self._tools.popitem(last=False)
            self.recorder.add("tool_specs", (key, time.time(), str(function["name"]), text))
        return key, text

    def _vector(self, key: str, text: str) -> np.ndarray:
        vector = self._tools.get(key)
        if vector is None:
            vector = self.encoder.encode_with_words(text)
            self._tools[key] = vector
        return vector
