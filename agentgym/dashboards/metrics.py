"""Prometheus metrics for the proxy, on a registry of its own (served at /metrics).

What a Prometheus user alerts on: requests, latency and upstream errors; tool calls and their
outcomes per tool; requests, episodes, episode feedback and tool outcomes per arm and policy
version; tokens and cost per model; the versions serving and the registry's moves; training
rounds; the recorder's health. Counters count events as the proxy sees them (a tool result's
outcome as read from the tool message; each feedback); the store stays the record.

Tool and model names come from clients, so those labels are capped
(`server.metrics_label_limit`): later names are counted as "other". Arms, outcomes, statuses
and training results are fixed sets; policy versions grow by one per registered round.
"""

from __future__ import annotations

import logging
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agentgym.store.recorder import Recorder

if typing.TYPE_CHECKING:
    from agentgym.proxy.planner import Planner
    from agentgym.proxy.usage import InferenceRecord, UsageCosting

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
ROUND_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
ROUND_RESULTS = ("registered", "refused", "waiting", "skipped", "failed")
OTHER = "other"
UNKNOWN = "unknown"  # an episode this process did not see begin (before a restart, or long ago)


class CappedLabel:
    """A label whose values clients choose: the first `limit` distinct values keep their name,
    later ones are "other", so no client can grow /metrics without bound."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: set[str] = set()
        self._lock = threading.Lock()  # the event loop and the recorder's thread both name values

    def __call__(self, value: str | None) -> str:
        value = value or ""
        if value in self._kept:
            return value
        with self._lock:
            if len(self._kept) < self.limit:
                self._kept.add(value)
                return value
        return OTHER


class EpisodeArms:
    """The arm and policy version each recent episode began on (the store's reading of an
    episode's arm: its first request's), so its tool results and feedback count there too."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._arms: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def begin(self, episode_id: str, arm: str, version: str) -> bool:
        """Note an episode's request; True if it is the episode's first."""
        if episode_id in self._arms:
            self._arms.move_to_end(episode_id)
            return False
        self._arms[episode_id] = (arm, version)
        if len(self._arms) > self.capacity:
            self._arms.popitem(last=False)
        return True

    def of(self, episode_id: str) -> tuple[str, str]:
        return self._arms.get(episode_id, (UNKNOWN, UNKNOWN))


class RecorderCollector(Collector):
    """Reads the recorder's own counters at scrape time, so the write path keeps no metric objects."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator:
        recorder = self.recorder
        yield GaugeMetricFamily("agentgym_recorder_queue_depth", "Rows waiting to be written to DuckDB", value=recorder.queue_depth)
        yield GaugeMetricFamily("agentgym_recorder_healthy", "1 if the DuckDB writer is healthy", value=int(recorder.healthy))
        yield GaugeMetricFamily("agentgym_recorder_last_flush_age_seconds",
                                "Seconds since the writer last had everything queued written (grows while it cannot)",
                                value=time.monotonic() - recorder.caught_up_at)
        written = CounterMetricFamily("agentgym_recorder_rows_written", "Rows written to DuckDB", labels=["table"])
        for table, count in sorted(recorder.written.items()):
            written.add_metric([table], count)
        yield written
        dropped = CounterMetricFamily("agentgym_recorder_rows_dropped", "Rows dropped instead of written", labels=["reason"])
        for reason in ("queue_full", "write_error"):
            dropped.add_metric([reason], recorder.dropped[reason])
        yield dropped


class PolicyCollector(Collector):
    """What serves, read at scrape time: the versions this proxy has loaded, the canary's share,
    and the registry's versions by status and its recorded moves."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner

    def collect(self) -> Iterator:
        from agentgym.trainer.registry import Status

        serving = GaugeMetricFamily("agentgym_policy_serving", "1 for each policy version this proxy has loaded, "
                                    "by role (live, canary, shadow)", labels=["role", "version"])
        for role, version in self.planner.loaded().items():
            if version is not None:
                serving.add_metric([role, version], 1)
        yield serving
        try:
            index = self.planner.registry.index()
        except Exception:  # noqa: BLE001 - an unreadable index must not take /metrics down with it
            log.exception("reading the policy registry for /metrics failed")
            return
        canary = index.canary
        yield GaugeMetricFamily("agentgym_canary_percent", "Share of episodes the canary serves (0: no canary)",
                                value=canary.percent if canary else 0)
        yield GaugeMetricFamily("agentgym_canary_paused", "1 while the canary is paused at its step",
                                value=int(bool(canary and canary.paused)))
        statuses = GaugeMetricFamily("agentgym_policy_versions", "Versions in the registry, by status", labels=["status"])
        for status in typing.get_args(Status):
            statuses.add_metric([status], sum(v.status == status for v in index.versions.values()))
        yield statuses
        moves: dict[tuple[str, str], int] = {}
        for version in index.versions.values():
            for move in version.history:
                key = (move["to"], str(move["by"]).split(":", 1)[0])  # cli:alice -> cli: who, not which person
                moves[key] = moves.get(key, 0) + 1
        transitions = CounterMetricFamily("agentgym_policy_transitions", "Status changes recorded in the registry, by "
                                          "the status moved to and what moved it", labels=["to", "by"])
        for (to, by), count in sorted(moves.items()):
            transitions.add_metric([to, by], count)
        yield transitions


class ProxyMetrics:
    def __init__(self, *, label_limit: int = 200, episode_capacity: int = 200_000,
                 success_reward_threshold: float = 0.5) -> None:
        self.registry = CollectorRegistry()
        self.tool_label, self.model_label = CappedLabel(label_limit), CappedLabel(label_limit)
        self.arms = EpisodeArms(episode_capacity)
        self.success_reward_threshold = success_reward_threshold
        registry = self.registry
        self.requests = Counter("agentgym_requests", "HTTP requests answered by the proxy", ["route", "status"],
                                registry=registry)
        self.latency = Histogram("agentgym_request_duration_seconds",
                                 "Time from request arrival to the last byte of the answer", ["route", "stream"],
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.ttfb = Histogram("agentgym_time_to_first_byte_seconds",
                              "Time from request arrival to the first streamed byte", buckets=LATENCY_BUCKETS,
                              registry=registry)
        self.upstream_errors = Counter("agentgym_upstream_errors", "Failed upstream calls by kind and the status "
                                       "answered", ["kind", "status"], registry=registry)
        self.tool_calls = Counter("agentgym_tool_calls", "Tool calls made by the model", ["tool"], registry=registry)
        self.tool_outcomes = Counter("agentgym_tool_outcomes", "Tool results seen, by outcome", ["tool", "outcome"],
                                     registry=registry)
        self.policy_requests = Counter("agentgym_policy_requests", "Chat-completion requests by the arm and policy "
                                       "version of their episode", ["arm", "version"], registry=registry)
        self.policy_episodes = Counter("agentgym_policy_episodes", "Episodes begun, by arm and policy version",
                                       ["arm", "version"], registry=registry)
        self.policy_feedback = Counter("agentgym_policy_episode_feedback", "Episode feedback, success or failure, by "
                                       "the episode's arm and policy version", ["arm", "version", "outcome"],
                                       registry=registry)
        self.policy_tool_outcomes = Counter("agentgym_policy_tool_outcomes", "Tool results seen, by the episode's arm "
                                            "and policy version and the outcome", ["arm", "version", "outcome"],
                                            registry=registry)
        self.tokens = Counter("agentgym_tokens", "Tokens of recorded inferences (as stored: the upstream's usage or "
                              "litellm's estimate)", ["model", "kind"], registry=registry)
        self.cost = Counter("agentgym_cost_usd", "Cost of recorded inferences in US dollars (models with a known "
                            "price)", ["model"], registry=registry)
        self.trainer_rounds = Counter("agentgym_trainer_rounds", "Training rounds run by this process, by result",
                                      ["result"], registry=registry)
        self.trainer_duration = Histogram("agentgym_trainer_round_duration_seconds", "How long training rounds took",
                                          ["result"], buckets=ROUND_BUCKETS, registry=registry)
        self.trainer_last = Gauge("agentgym_trainer_last_round_timestamp_seconds", "When the last round of each "
                                  "result ended (Unix time)", ["result"], registry=registry)
        for result in ROUND_RESULTS:  # every series exists from the start, so `increase()` sees the first round
            self.trainer_rounds.labels(result)
        self.internal_errors = Counter(
            "agentgym_internal_errors",
            "Failures inside AgentGym that the request was passed through despite",
            ["stage"],
            registry=registry,
        )

    def watch(self, recorder: Recorder, planner: Planner, costing: UsageCosting) -> None:
        """Read the recorder's health, the rows waiting for their cost and the policies serving at every scrape."""
        self.registry.register(RecorderCollector(recorder))
        self.registry.register(PolicyCollector(planner))
        Gauge("agentgym_recorder_rows_awaiting_cost", "Rows stored before litellm was ready, waiting for their "
              "tokens and cost (counted in agentgym_tokens_total once filled in)",
              registry=self.registry).set_function(lambda: costing.pending)

    # --- events ------------------------------------------------------------------------------
    def finished(self, record: InferenceRecord) -> None:
        """A chat completion answered (or failed upstream) and recorded."""
        route = "chat_completions"
        self.requests.labels(route, str(record.status)).inc()
        self.latency.labels(route, "true" if record.stream else "false").observe((record.latency_ms or 0) / 1000)
        arm, version = record.arm, record.policy_version or "none"
        self.policy_requests.labels(arm, version).inc()
        if self.arms.begin(record.episode_id, arm, version):
            self.policy_episodes.labels(arm, version).inc()

    def tool_called(self, name: str) -> None:
        self.tool_calls.labels(self.tool_label(name)).inc()

    def tool_outcome(self, episode_id: str, name: str, outcome: str) -> None:
        self.tool_outcomes.labels(self.tool_label(name), outcome).inc()
        self.policy_tool_outcomes.labels(*self.arms.of(episode_id), outcome).inc()

    def episode_feedback(self, episode_id: str, reward: float | None, success: bool | None) -> None:
        """Feedback on an episode, read as the store reads it: the flag, else the reward against the threshold."""
        ok = success if success is not None else reward is not None and reward >= self.success_reward_threshold
        self.policy_feedback.labels(*self.arms.of(episode_id), "success" if ok else "failure").inc()

    def measured(self, model: str | None, prompt: int | None, completion: int | None, cost: float | None) -> None:
        """An inference's tokens and cost as the recorder stores them (its thread)."""
        label = self.model_label(model)
        if prompt:
            self.tokens.labels(label, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(label, "completion").inc(completion)
        if cost:
            self.cost.labels(label).inc(cost)

    def trainer_round(self, result: str, seconds: float, details: dict[str, Any] | None) -> None:
        """A training round ended (`result`: its status, or "failed")."""
        self.trainer_rounds.labels(result).inc()
        self.trainer_duration.labels(result).observe(seconds)
        self.trainer_last.labels(result).set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)
