"""/metrics against the store: after simulated agents' traffic through a real proxy (live,
canary and control arms, streamed and plain requests, an upstream error, tools beyond the label
cap) and two training rounds through `agentgym train --once`, every counter equals what the
DuckDB file, the policy registry and the rounds themselves recorded; the rounds reached the
proxy's W&B run (offline) too."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import TOOLS, write_tiny
from prometheus_client.parser import text_string_to_metric_families

from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import MODEL, run_episodes
from agentgym.scenarios.scenario import load_scenario
from agentgym.store.queries import Scope, with_base
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.registry import Index, Registry, default_dir
from helpers import forcing, register_policy, wait_for_planner
from wandb_records import history_rows, run_record

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
LABEL_LIMIT = 2
Samples = dict[tuple[str, frozenset], float]


@dataclass
class Run:
    text: str
    samples: Samples
    store: duckdb.DuckDBPyConnection
    index: Index
    rounds: list[dict]
    wandb_dir: Path

    def series(self, name: str, *labels: str) -> dict[tuple, float]:
        """`name`'s samples keyed by the values of `labels`, summed over the others."""
        found: dict[tuple, float] = {}
        for (sample, pairs), value in self.samples.items():
            if sample == name:
                key = tuple(dict(pairs)[label] for label in labels)
                found[key] = found.get(key, 0.0) + value
        return found

    def sql(self, query: str) -> dict[tuple, float]:
        """Rows of (labels..., count) as {labels: count}, the shared CTEs (`episodes`, ...) available."""
        rows = self.store.execute(with_base(query), Scope().params()).fetchall()
        return {tuple(str(v) for v in row[:-1]): float(row[-1]) for row in rows}


def scrape(url: str) -> tuple[str, Samples]:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples = {(s.name, frozenset(s.labels.items())): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return text, samples


def train_once(db: Path) -> dict:
    """`agentgym train --once`, as a user runs it beside the server (the round runs inside it)."""
    done = subprocess.run([sys.executable, "-m", "agentgym", "train", "--once", "--db", str(db)],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def settled(url: str) -> tuple[str, Samples]:
    """A scrape once every row is written and has its tokens and cost (litellm imports in the background)."""
    deadline = time.monotonic() + 60
    while True:
        text, samples = scrape(url)
        if (samples[("agentgym_recorder_queue_depth", frozenset())] == 0
                and samples[("agentgym_recorder_rows_awaiting_cost", frozenset())] == 0):
            return text, samples
        assert time.monotonic() < deadline, "rows still queued or waiting for their cost after 60 s"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def run(tmp_path_factory, logs) -> Iterator[Run]:
    folder = tmp_path_factory.mktemp("metrics")
    tiny = write_tiny(folder)
    scenario = load_scenario(str(tiny))
    db, wandb_dir = folder / "metrics.duckdb", folder / "wandb"
    wandb_dir.mkdir()
    registry = Registry(default_dir(db))
    live = register_policy(registry, b_defer=2.0)  # offers often: decisions to train on
    canary = register_policy(registry, forcing(shared_encoder().dimensions, "get_order_status"))
    registry.promote(live, by="test", reason="start")
    registry.start_canary(canary, 30, by="cli:someone", reason="measure it")
    model = local_stack.start_model(logs, args=["--scenario", str(tiny), "--seed", "1"])
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs, env={
        "AGENTGYM_PLANNER__REFRESH_S": "0.1", "AGENTGYM_PLANNER__CONTROL_SHARE": "0.2",
        "AGENTGYM_ROLLOUT__AUTOMATIC": "false", "AGENTGYM_TRAINER__MIN_DECISIONS": "10",
        "AGENTGYM_TRAINER__STEPS": "5", "AGENTGYM_TRAINER__PROMOTE": "manual",
        "AGENTGYM_PRICING": json.dumps({MODEL: PRICE}), "AGENTGYM_SERVER__METRICS_LABEL_LIMIT": str(LABEL_LIMIT),
        "AGENTGYM_TRAINER__WANDB__PROJECT": "agentgym-metrics-test", "WANDB_MODE": "offline",
        "WANDB_DIR": str(wandb_dir), "WANDB_SILENT": "true"})
    try:
        wait_for_planner(proxy.url, live=live, canary=canary)
        rounds = [train_once(db)]  # no decisions yet: waiting
        asyncio.run(run_episodes(proxy.url, scenario, episodes=30, seed=5, concurrency=4, stream_share=0.3))
        for tool in TOOLS:  # more tool names than the label cap keeps
            name = tool["function"]["name"]
            reply = httpx.post(f"{proxy.url}/v1/chat/completions", timeout=30, json={
                "model": MODEL, "tools": TOOLS, "messages": [{"role": "user", "content": f"{name} please"}]})
            assert reply.status_code == 200, reply.text
        failed = httpx.post(f"{proxy.url}/v1/chat/completions", timeout=30, json={
            "model": MODEL, "messages": [{"role": "user", "content": "hello #status=500"}]})
        assert failed.status_code == 500
        rounds.append(train_once(db))
        text, samples = settled(proxy.url)
        index = registry.index()
    finally:
        assert proxy.stop(), proxy.log()
        model.stop()
    assert "Traceback" not in proxy.log(), proxy.log()
    store = duckdb.connect(str(db), read_only=True)
    yield Run(text, samples, store, index, rounds, wandb_dir)
    store.close()


def test_requests_latency_and_upstream_errors_equal_the_stored_inferences(run):
    stored = run.sql("SELECT status, count(*) FROM inferences GROUP BY ALL")
    assert run.series("agentgym_requests_total", "status") == stored
    assert stored[("500",)] == 1
    assert run.series("agentgym_upstream_errors_total", "kind", "status") == {("http_500", "500"): 1}
    assert sum(run.series("agentgym_request_duration_seconds_count").values()) == sum(stored.values())
    streamed = run.sql("SELECT count(*) FROM inferences WHERE stream")[()]
    assert streamed > 0 and run.series("agentgym_time_to_first_byte_seconds_count")[()] == streamed


def test_tool_calls_and_outcomes_per_tool_equal_the_store_with_names_past_the_cap_as_other(run):
    calls = run.sql("SELECT name, count(*) FROM tool_calls GROUP BY ALL")
    outcomes = run.sql("SELECT c.name, r.outcome, count(*) FROM tool_results r JOIN tool_calls c "
                       "ON c.id = r.tool_call_id GROUP BY ALL")
    assert len(calls) > LABEL_LIMIT and {"success", "error"} <= {outcome for _, outcome in outcomes}
    metric_calls = run.series("agentgym_tool_calls_total", "tool")
    kept = {name for (name,) in metric_calls} - {"other"}
    assert len(kept) == LABEL_LIMIT
    folded_calls, folded_outcomes = Counter(), Counter()
    for (name,), count in calls.items():
        folded_calls[(name if name in kept else "other",)] += count
    for (name, outcome), count in outcomes.items():
        folded_outcomes[(name if name in kept else "other", outcome)] += count
    assert metric_calls == dict(folded_calls)
    assert run.series("agentgym_tool_outcomes_total", "tool", "outcome") == dict(folded_outcomes)


def test_requests_episodes_feedback_and_tool_outcomes_per_arm_and_version_equal_the_store(run):
    requests = run.sql("SELECT arm, coalesce(policy_version, 'none'), count(*) FROM inferences GROUP BY ALL")
    assert {arm for arm, _ in requests} == {"control", "live", "canary"}
    assert run.series("agentgym_policy_requests_total", "arm", "version") == requests
    assert run.series("agentgym_policy_episodes_total", "arm", "version") == run.sql(
        "SELECT arm, coalesce(policy_version, 'none'), count(*) FROM episodes GROUP BY ALL")
    feedback = run.sql("SELECT arm, coalesce(policy_version, 'none'), CASE WHEN ok THEN 'success' ELSE 'failure' END, "
                       "count(*) FROM episodes WHERE ok IS NOT NULL GROUP BY ALL")
    assert sum(feedback.values()) == 30
    assert run.series("agentgym_policy_episode_feedback_total", "arm", "version", "outcome") == feedback
    assert run.series("agentgym_policy_tool_outcomes_total", "arm", "version", "outcome") == run.sql(
        "SELECT e.arm, coalesce(e.policy_version, 'none'), r.outcome, count(*) FROM tool_results r "
        "JOIN episodes e USING (episode_id) GROUP BY ALL")


def test_tokens_cost_and_rows_written_equal_the_store(run):
    tokens = run.sql("SELECT model, 'prompt', sum(prompt_tokens) FROM inferences WHERE prompt_tokens > 0 GROUP BY ALL "
                     "UNION ALL SELECT model, 'completion', sum(completion_tokens) FROM inferences "
                     "WHERE completion_tokens > 0 GROUP BY ALL")
    assert tokens and run.series("agentgym_tokens_total", "model", "kind") == tokens
    cost = run.sql("SELECT model, sum(cost_usd) FROM inferences WHERE cost_usd > 0 GROUP BY ALL")
    measured = run.series("agentgym_cost_usd_total", "model")
    assert cost.keys() == measured.keys() == {(MODEL,)}
    assert measured[(MODEL,)] == pytest.approx(cost[(MODEL,)], rel=1e-9)
    tables = ("inferences", "tool_calls", "tool_results", "feedback", "decisions", "tool_specs")
    stored = {(t,): float(run.store.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables}
    assert run.series("agentgym_recorder_rows_written_total", "table") == stored
    assert run.series("agentgym_recorder_rows_dropped_total", "reason") == {("queue_full",): 0, ("write_error",): 0}
    assert run.series("agentgym_recorder_healthy")[()] == 1
    assert 0 <= run.series("agentgym_recorder_last_flush_age_seconds")[()] < 5


def test_training_rounds_and_policy_state_equal_the_rounds_and_the_registry(run):
    waiting, trained = run.rounds
    assert waiting["status"] == "waiting" and trained["status"] in ("registered", "refused"), run.rounds
    expected = {("registered",): 0, ("refused",): 0, ("waiting",): 1, ("skipped",): 0, ("failed",): 0}
    expected[(trained["status"],)] = 1
    assert run.series("agentgym_trainer_rounds_total", "result") == expected
    assert run.series("agentgym_trainer_round_duration_seconds_count", "result") == {
        ("waiting",): 1, (trained["status"],): 1}
    assert run.index.versions[trained["version"]].status == ("candidate" if trained["status"] == "registered"
                                                             else "refused")
    assert run.series("agentgym_policy_serving", "role", "version") == {
        ("live", run.index.live): 1, ("canary", run.index.canary.version): 1}
    assert run.series("agentgym_canary_percent")[()] == 30
    statuses = Counter(v.status for v in run.index.versions.values())
    versions = run.series("agentgym_policy_versions", "status")
    assert {k: v for k, v in versions.items() if v} == {(s,): n for s, n in statuses.items()}
    moves = Counter((h["to"], h["by"].split(":")[0]) for v in run.index.versions.values() for h in v.history)
    assert run.series("agentgym_policy_transitions_total", "to", "by") == dict(moves)
    assert ("canary", "cli") in moves  # "cli:someone" is labelled by kind, not by person


def test_the_proxys_training_rounds_are_in_its_wandb_run(run):
    files = list(run.wandb_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1, files
    assert run_record(files[0]).project == "agentgym-metrics-test"
    rows = history_rows(files[0])
    waiting, trained = run.rounds
    assert [row["round/status"] for row in rows] == [waiting["status"], trained["status"]]
    assert rows[1]["round/version"] == int(trained["version"][1:])
    assert rows[1]["training/loss"] == pytest.approx(trained["training"]["loss"])
    assert rows[1]["training/kl"] == pytest.approx(trained["training"]["kl"])
    assert rows[1].get("gate/difference") == trained["gate"]["difference"]  # absent where the gate had no estimate
    assert rows[1]["gate/passed"] == int(trained["gate"]["passed"])


DASHBOARD = Path(__file__).parent.parent / "agentgym" / "dashboards" / "grafana" / "agentgym.json"
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "6h"}


def _uses(node) -> tuple[set[str], list[tuple[str, set[str]]]]:
    """The metric names a PromQL expression selects, and each label name it relies on with the
    metrics under the node that uses it (matchers, by/without, on/ignoring/group_left)."""
    import promql_parser as promql

    if isinstance(node, promql.VectorSelector):
        return {node.name}, [(m.name, {node.name}) for m in node.matchers.matchers]
    if isinstance(node, promql.MatrixSelector):
        return _uses(node.vector_selector)
    children = {promql.AggregateExpr: ("expr", "param"), promql.BinaryExpr: ("lhs", "rhs"), promql.Call: (),
                promql.ParenExpr: ("expr",), promql.UnaryExpr: ("expr",), promql.SubqueryExpr: ("expr",)}
    parts = [getattr(node, name) for name in children.get(type(node), ())]
    parts += list(node.args) if isinstance(node, promql.Call) else []
    names, labels = set(), []
    for part in parts:
        if part is not None and not isinstance(part, promql.NumberLiteral | promql.StringLiteral | float | int):
            more_names, more_labels = _uses(part)
            names, labels = names | more_names, labels + more_labels
    modifier = getattr(node, "modifier", None)
    grouped = []
    if isinstance(node, promql.AggregateExpr) and modifier is not None:
        grouped = modifier.labels
    elif isinstance(node, promql.BinaryExpr) and modifier is not None:
        grouped = [*(modifier.matching.labels if modifier.matching else []), *modifier.group_labels]
    return names, labels + [(label, names) for label in grouped]


def test_every_grafana_query_reads_metrics_and_labels_a_real_scrape_has(run):
    """The dashboard cannot drift from /metrics: each panel's PromQL parses, and every metric and
    label it names is in the scrape of the proxy above."""
    import promql_parser as promql

    dashboard = json.loads(DASHBOARD.read_text())
    labels_of: dict[str, set[str]] = {}
    for name, pairs in run.samples:
        labels_of.setdefault(name, set()).update(label for label, _ in pairs)
    queries = [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert len(queries) >= 25
    for title, expr in queries:
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        names, labels = _uses(promql.parse(expr))
        # no test traffic fails inside AgentGym, so that counter has no series (its HELP line is there)
        sampled = names - {"agentgym_internal_errors_total"}
        assert sampled <= labels_of.keys(), f"{title!r}: {sorted(sampled - labels_of.keys())} not in /metrics"
        for label, under in labels:
            known = set().union(*(labels_of[name] for name in under & sampled)) if under & sampled else None
            assert known is None or label in known, f"{title!r}: no label {label!r} on {sorted(under)}"
    assert "# TYPE agentgym_internal_errors_total counter" in run.text
    panels = {panel["title"] for panel in dashboard["panels"]}
    assert {"Tool-call success rate per tool", "Tool-call success rate per arm", "Episode success rate per arm",
            "Cost per successful episode", "Request latency percentiles", "Serving now", "Training rounds by result",
            "Since the writer last caught up"} <= panels
    assert all(target["datasource"]["uid"] == "${datasource}"
               for panel in dashboard["panels"] for target in panel.get("targets", ()))
