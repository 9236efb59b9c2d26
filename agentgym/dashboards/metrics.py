"""Prometheus metrics for the proxy, on a registry of its own (served at /metrics)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from agentgym.store.recorder import Recorder

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class RecorderCollector(Collector):
    """Reads the recorder's own counters at scrape time, so the write path keeps no metric objects."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def collect(self) -> Iterator:
        recorder = self.recorder
        yield GaugeMetricFamily("agentgym_recorder_queue_depth", "Rows waiting to be written to DuckDB", value=recorder.queue_depth)
        yield GaugeMetricFamily("agentgym_recorder_healthy", "1 if the DuckDB writer is healthy", value=int(recorder.healthy))
        written = CounterMetricFamily("agentgym_recorder_rows_written", "Rows written to DuckDB", labels=["table"])
        for table, count in sorted(recorder.written.items()):
            written.add_metric([table], count)
        yield written
        dropped = CounterMetricFamily("agentgym_recorder_rows_dropped", "Rows dropped instead of written", labels=["reason"])
        for reason in ("queue_full", "write_error"):
            dropped.add_metric([reason], recorder.dropped[reason])
        yield dropped


class ProxyMetrics:
    def __init__(self, recorder: Recorder) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agentgym_requests", "HTTP requests answered by the proxy", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "agentgym_request_duration_seconds",
            "Time from request arrival to the last byte of the answer",
            ["route", "stream"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttfb = Histogram(
            "agentgym_time_to_first_byte_seconds",
            "Time from request arrival to the first streamed byte",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "agentgym_upstream_errors", "Failed upstream calls by kind", ["kind"], registry=self.registry
        )
        self.tool_calls = Counter(
            "agentgym_tool_calls", "Tool calls made by the model", ["tool"], registry=self.registry
        )
        self.tool_outcomes = Counter(
            "agentgym_tool_outcomes", "Tool results seen, by outcome", ["tool", "outcome"], registry=self.registry
        )
        self.internal_errors = Counter(
            "agentgym_internal_errors",
            "Failures inside AgentGym that the request was passed through despite",
            ["stage"],
            registry=self.registry,
        )
        self.registry.register(RecorderCollector(recorder))

    def render(self) -> bytes:
        return generate_latest(self.registry)
