"""The reliability and cost report: one JSON object (PRODUCT.md, "Report JSON"), or rich tables.

Rates are over the outcomes that are known: a tool call whose result never came back
(`unknown`) or an episode without feedback that is still running counts in `total` but not
in `success_rate`. The web dashboard and the HTML report draw this object and nothing else,
so every number they show is one `agentgym report --format json` prints.

Beyond PRODUCT.md's keys: `scope` (since, until, model, scenario, window), `requests`,
`tokens.cost_usd_per_request`, `latency_ms` (p50/p90/p95/p99), `by_model`; in each `timeline`
window completion tokens, cost per request and per successful episode, latency p50/p95/p99;
`timeline_by` (tool-call success per window by tool, policy version and arm); `policies` (the
registry's versions with `traffic_pct`); `rollout` (as `agentgym rollout status`);
`filter_values` (every model and scenario the store has seen).
"""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from agentgym.store.queries import Scope, with_base
from agentgym.trainer import by_hand
from agentgym.trainer.lightning import last_fit
from agentgym.trainer.registry import Registry

# How many points the timeline has when the window is left to the report (the dashboard's default).
AUTO_WINDOWS = 50


def _rate(part: Any, whole: Any) -> float | None:
    return round(part / whole, 4) if whole else None


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


# The scope's records, read once per report into temporary tables of the report's own cursor
# (the shared CTEs cost most of a report, and every figure needs them): its episodes, numbered in
# order of their end while finished (`seq`); its requests and its tool calls, each with its
# episode's policy version, arm and timeline window (`win`). Tool calls are counted by everything a
# figure splits them by (a few thousand rows at the dashboard's ~50 windows), so no figure reads them again.
SCOPED_EPISODES = """
    SELECT episode_id, ok, finished, ended_at, policy_version, arm,
           CASE WHEN finished THEN row_number() OVER (PARTITION BY finished ORDER BY ended_at, episode_id) - 1
           END AS seq
    FROM episodes
"""
SCOPED_INF = """
    SELECT i.model, i.provider, i.status, i.prompt_tokens, i.completion_tokens, i.cost_usd, i.latency_ms,
           e.episode_id IS NOT NULL AS in_episode, e.policy_version, e.arm, e.seq // $window AS win
    FROM inf i LEFT JOIN scoped_episodes e USING (episode_id)
"""
CALL_COUNTS = """
    SELECT c.name, c.error_message, e.episode_id IS NOT NULL AS in_episode, e.policy_version, e.arm,
           e.seq // $window AS win, count(*) calls, count(*) FILTER (c.outcome = 'success') success,
           count(*) FILTER (c.outcome = 'error') error, count(*) FILTER (c.outcome = 'unknown') unknown
    FROM calls c LEFT JOIN scoped_episodes e USING (episode_id)
    GROUP BY ALL
"""


def _rows(con: duckdb.DuckDBPyConnection, select: str, **params: object) -> list[dict[str, Any]]:
    cursor = con.execute(select, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def build_report(con: duckdb.DuckDBPyConnection, scope: Scope, window: int | None = 100, *,
                 registry: Registry, control_share: float = 0.0) -> dict[str, Any]:
    """The report over `scope`: timeline windows of `window` finished episodes (None: as many as
    make about AUTO_WINDOWS windows), and the policy versions and rollout `registry` holds."""
    if window is not None and window < 1:
        raise ValueError("--window must be at least 1")
    # a cursor of its own: its temporary tables go with it; one transaction: one snapshot of the store
    with closing(con.cursor()) as cur:
        cur.execute("BEGIN TRANSACTION")
        cur.execute(f"CREATE TEMP TABLE scoped_episodes AS {with_base(SCOPED_EPISODES)}", scope.params())
        episodes = _rows(
            cur,
            "SELECT count(*) total, count(*) FILTER (ok) success, count(*) FILTER (NOT ok) failure, "
            "count(*) FILTER (finished) finished FROM scoped_episodes",
        )[0]
        if window is None:
            window = max(1, -(-episodes["finished"] // AUTO_WINDOWS))
        cur.execute(f"CREATE TEMP TABLE scoped_inf AS {with_base(SCOPED_INF)}", {**scope.params(), "window": window})
        cur.execute(f"CREATE TEMP TABLE call_counts AS {with_base(CALL_COUNTS)}", {**scope.params(), "window": window})
        return {
            "generated_at": datetime.now(UTC).isoformat(),
            "since": _iso(scope.since),
            "scope": {"since": _iso(scope.since), "until": _iso(scope.until), "model": scope.model,
                      "scenario": scope.scenario, "window": window},
            **_summary(cur, episodes),
            "by_tool": _by_tool(cur),
            "by_model": _by_model(cur),
            "by_policy": _by_policy(cur),
            "timeline": _timeline(cur, window),
            "timeline_by": _timeline_by(cur),
            **registry_part(registry, control_share),
            "reward_model": last_fit.summary(registry.folder),  # the LLM gate's reward model, if one was fitted
            "filter_values": _filter_values(cur),
        }


def _summary(con: duckdb.DuckDBPyConnection, episodes: dict[str, int]) -> dict[str, Any]:
    calls = _rows(
        con,
        "SELECT coalesce(sum(calls), 0) total, coalesce(sum(success), 0) success, coalesce(sum(error), 0) error, "
        "coalesce(sum(unknown), 0) unknown FROM call_counts",
    )[0]
    tokens = _rows(
        con,
        "SELECT count(*) requests, avg(prompt_tokens) prompt, avg(completion_tokens) completion, "
        "coalesce(sum(cost_usd), 0) cost, count(*) FILTER (status >= 400) errors, "
        "quantile_cont(latency_ms, [0.5, 0.9, 0.95, 0.99]) latency FROM scoped_inf",
    )[0]
    latency = tokens["latency"] or [None] * 4
    return {
        "tool_calls": {
            **calls,
            "success_rate": _rate(calls["success"], calls["success"] + calls["error"]),
        },
        "episodes": {
            "total": episodes["total"],
            "finished": episodes["finished"],
            "success": episodes["success"],
            "failure": episodes["failure"],
            "success_rate": _rate(episodes["success"], episodes["success"] + episodes["failure"]),
        },
        "requests": {"total": tokens["requests"], "errors": tokens["errors"]},
        "tokens": {
            "prompt_per_request": _round(tokens["prompt"]),
            "completion_per_request": _round(tokens["completion"]),
            "cost_usd_total": round(tokens["cost"], 6),
            "cost_usd_per_request": _per(tokens["cost"], tokens["requests"]),
            "cost_per_successful_episode": _per(tokens["cost"], episodes["success"]),
        },
        "latency_ms": dict(zip(("p50", "p90", "p95", "p99"), map(_round, latency), strict=True)),
    }


def _per(cost: float, count: int) -> float | None:
    return round(cost / count, 6) if count else None


def _round(value: float | None, digits: int = 2) -> float | None:
    return round(value, digits) if value is not None else None


def _by_tool(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = _rows(
        con,
        """
        SELECT name AS tool, sum(calls) calls, sum(success) success, sum(error) error, sum(unknown) unknown
        FROM call_counts GROUP BY name ORDER BY calls DESC, tool
        """,
    )
    errors = _rows(
        con,
        """
        SELECT name AS tool, error_message AS message, sum(error) AS count
        FROM call_counts WHERE error > 0 AND error_message IS NOT NULL
        GROUP BY name, error_message QUALIFY row_number() OVER (PARTITION BY name ORDER BY sum(error) DESC, message) <= 3
        ORDER BY tool, count DESC
        """,
    )
    top: dict[str, list[dict[str, Any]]] = {}
    for row in errors:
        top.setdefault(row["tool"], []).append({"message": row["message"], "count": row["count"]})
    return [
        {
            "tool": row["tool"],
            "calls": row["calls"],
            "success": row["success"],
            "error": row["error"],
            "unknown": row["unknown"],
            "success_rate": _rate(row["success"], row["success"] + row["error"]),
            "error_rate": _rate(row["error"], row["success"] + row["error"]),
            "top_errors": top.get(row["tool"], []),
        }
        for row in rows
    ]


def _by_model(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = _rows(
        con,
        """
        SELECT model, provider, count(*) requests, count(*) FILTER (status >= 400) errors,
               coalesce(sum(prompt_tokens), 0) prompt_tokens, coalesce(sum(completion_tokens), 0) completion_tokens,
               coalesce(sum(cost_usd), 0) cost_usd,
               quantile_cont(latency_ms, 0.5) latency_ms_p50, quantile_cont(latency_ms, 0.95) latency_ms_p95
        FROM scoped_inf GROUP BY ALL ORDER BY requests DESC, model
        """,
    )
    for row in rows:
        row["cost_usd"] = round(row["cost_usd"], 6)
        row["latency_ms_p50"] = _round(row["latency_ms_p50"])
        row["latency_ms_p95"] = _round(row["latency_ms_p95"])
    return rows


def _by_policy(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    rows = _rows(
        con,
        """
        WITH ep AS (
            SELECT policy_version AS version, arm, count(*) episodes,
                   count(*) FILTER (ok) success, count(*) FILTER (NOT ok) failure
            FROM scoped_episodes GROUP BY ALL
        ),
        tc AS (
            SELECT policy_version AS version, arm, sum(success) success, sum(error) error
            FROM call_counts WHERE in_episode GROUP BY ALL
        ),
        tok AS (
            SELECT policy_version AS version, arm, avg(prompt_tokens) prompt
            FROM scoped_inf WHERE in_episode GROUP BY ALL
        )
        SELECT ep.version, ep.arm, ep.episodes, ep.success, ep.failure,
               tc.success AS tool_success, tc.error AS tool_error, tok.prompt
        FROM ep
        LEFT JOIN tc ON tc.version IS NOT DISTINCT FROM ep.version AND tc.arm IS NOT DISTINCT FROM ep.arm
        LEFT JOIN tok ON tok.version IS NOT DISTINCT FROM ep.version AND tok.arm IS NOT DISTINCT FROM ep.arm
        ORDER BY ep.episodes DESC
        """,
    )
    return [
        {
            "version": row["version"],
            "arm": row["arm"],
            "episodes": row["episodes"],
            "tool_success_rate": _rate(row["tool_success"] or 0, (row["tool_success"] or 0) + (row["tool_error"] or 0)),
            "episode_success_rate": _rate(row["success"], row["success"] + row["failure"]),
            "prompt_tokens_per_request": _round(row["prompt"]),
        }
        for row in rows
    ]


def _timeline(con: duckdb.DuckDBPyConnection, window: int) -> list[dict[str, Any]]:
    """Consecutive windows of `window` finished episodes, in order of their end: the timeline's x axis."""
    rows = _rows(
        con,
        """
        WITH tc AS (
            SELECT win, sum(success) success, sum(error) error FROM call_counts WHERE win IS NOT NULL GROUP BY win
        ),
        tok AS (
            SELECT win, count(*) requests, avg(prompt_tokens) prompt,
                   avg(completion_tokens) completion, coalesce(sum(cost_usd), 0) cost,
                   quantile_cont(latency_ms, [0.5, 0.95, 0.99]) latency
            FROM scoped_inf WHERE win IS NOT NULL GROUP BY win
        ),
        w AS (
            SELECT seq // $window AS win, min(ended_at) first_at, max(ended_at) last_at, count(*) episodes,
                   count(*) FILTER (ok) success, count(*) FILTER (NOT ok) failure,
                   list_sort(list_distinct(list(policy_version))) versions
            FROM scoped_episodes WHERE seq IS NOT NULL GROUP BY win
        )
        SELECT w.*, tc.success AS tool_success, tc.error AS tool_error, tok.requests, tok.prompt, tok.completion,
               tok.cost, tok.latency
        FROM w LEFT JOIN tc USING (win) LEFT JOIN tok USING (win)
        ORDER BY w.win
        """,
        window=window,
    )
    return [
        {
            "first_episode_at": _iso(row["first_at"]),
            "last_episode_at": _iso(row["last_at"]),
            "episodes": row["episodes"],
            "tool_success_rate": _rate(row["tool_success"] or 0, (row["tool_success"] or 0) + (row["tool_error"] or 0)),
            "episode_success_rate": _rate(row["success"], row["success"] + row["failure"]),
            "prompt_tokens_per_request": _round(row["prompt"]),
            "completion_tokens_per_request": _round(row["completion"]),
            "cost_usd_per_request": _per(row["cost"] or 0, row["requests"] or 0),
            "cost_per_successful_episode": _per(row["cost"] or 0, row["success"]),
            **dict(zip(("latency_ms_p50", "latency_ms_p95", "latency_ms_p99"),
                       map(_round, row["latency"] or [None] * 3), strict=True)),
            "policy_versions": row["versions"],
        }
        for row in rows
    ]


def _timeline_by(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Tool-call success in each timeline window, split by tool, by policy version and by arm:
    `{window, by, name, tool_calls, tool_success_rate}`, `window` indexing `timeline`."""
    rows = _rows(
        con,
        """
        SELECT win, grouping(name) = 0 AS by_tool, grouping(policy_version) = 0 AS by_policy,
               name, policy_version, arm, sum(calls) calls, sum(success) success, sum(error) error
        FROM call_counts WHERE win IS NOT NULL
        GROUP BY GROUPING SETS ((win, name), (win, policy_version), (win, arm))
        ORDER BY win, by_tool DESC, by_policy DESC, name, policy_version, arm
        """,
    )
    return [
        {
            "window": row["win"],
            "by": "tool" if row["by_tool"] else "policy" if row["by_policy"] else "arm",
            "name": row["name"] if row["by_tool"] else row["policy_version"] if row["by_policy"] else row["arm"],
            "tool_calls": row["calls"],
            "tool_success_rate": _rate(row["success"], row["success"] + row["error"]),
        }
        for row in rows
    ]


def registry_part(registry: Registry, control_share: float = 0.0) -> dict[str, Any]:
    """`policies`: every version as `agentgym policies list --format json` has it, plus the share
    of episodes it serves now; `rollout`: what `agentgym rollout status` shows."""
    index = registry.index()
    rollout = by_hand.rollout_status(index, control_share)
    traffic = {index.live: rollout["live_percent"]} if index.live else {}
    if index.canary is not None:
        traffic[index.canary.version] = index.canary.percent
    return {
        "policies": [{**v.model_dump(), "traffic_pct": traffic.get(v.version, 0)} for v in index.versions.values()],
        "rollout": rollout,
    }


def _filter_values(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    """Every model and scenario the store has seen, whatever the scope: the filters' choices."""
    models = con.execute("SELECT list(DISTINCT model ORDER BY model) FROM inferences WHERE model IS NOT NULL").fetchone()
    scenarios = con.execute(
        "SELECT list(DISTINCT s ORDER BY s) FROM (SELECT metadata->>'$.scenario' s FROM feedback) WHERE s IS NOT NULL"
    ).fetchone()
    return {"models": models[0] or [], "scenarios": scenarios[0] or []}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, fmt: str = "{:,.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def print_tables(report: dict[str, Any], console: Console) -> None:
    calls, episodes, tokens = report["tool_calls"], report["episodes"], report["tokens"]
    summary = Table(title="AgentGym report", show_header=False)
    summary.add_row("tool calls", f"{calls['total']:,}  success {_pct(calls['success_rate'])}  "
                    f"(error {calls['error']:,}, unknown {calls['unknown']:,})")
    summary.add_row("episodes", f"{episodes['total']:,}  success {_pct(episodes['success_rate'])}  "
                    f"({episodes['success']:,} ok, {episodes['failure']:,} failed)")
    summary.add_row("requests", f"{report['requests']['total']:,}  ({report['requests']['errors']:,} errors)")
    summary.add_row("tokens / request", f"prompt {_num(tokens['prompt_per_request'])}, "
                    f"completion {_num(tokens['completion_per_request'])}")
    summary.add_row("cost", f"${tokens['cost_usd_total']:.4f} total, "
                    f"{_num(tokens['cost_usd_per_request'], '${:.6f}')} per request, "
                    f"{_num(tokens['cost_per_successful_episode'], '${:.4f}')} per successful episode")
    summary.add_row("latency", ", ".join(f"{name} {_num(value)} ms" for name, value in report["latency_ms"].items()))
    console.print(summary)

    by_tool = Table(title="By tool")
    for column in ("tool", "calls", "success", "error", "unknown", "top error"):
        by_tool.add_column(column, justify="left" if column in ("tool", "top error") else "right")
    for row in report["by_tool"]:
        top = row["top_errors"][0] if row["top_errors"] else None
        by_tool.add_row(row["tool"], f"{row['calls']:,}", _pct(row["success_rate"]), _pct(row["error_rate"]),
                        f"{row['unknown']:,}", f"{top['message'][:60]} ({top['count']})" if top else "")
    console.print(by_tool)

    by_model = Table(title="By model")
    for column in ("model", "provider", "requests", "errors", "prompt tok", "completion tok", "cost $", "p50 ms", "p95 ms"):
        by_model.add_column(column, justify="left" if column in ("model", "provider") else "right")
    for row in report["by_model"]:
        by_model.add_row(str(row["model"]), str(row["provider"]), f"{row['requests']:,}", f"{row['errors']:,}",
                         f"{row['prompt_tokens']:,}", f"{row['completion_tokens']:,}", f"{row['cost_usd']:.4f}",
                         _num(row["latency_ms_p50"]), _num(row["latency_ms_p95"]))
    console.print(by_model)

    by_policy = Table(title="By policy")
    for column in ("version", "arm", "episodes", "tool success", "episode success", "prompt tok/req"):
        by_policy.add_column(column, justify="left" if column in ("version", "arm") else "right")
    for row in report["by_policy"]:
        by_policy.add_row(str(row["version"] or "none"), str(row["arm"]), f"{row['episodes']:,}",
                          _pct(row["tool_success_rate"]), _pct(row["episode_success_rate"]),
                          _num(row["prompt_tokens_per_request"]))
    console.print(by_policy)

    timeline = Table(title="Timeline (finished episodes)")
    for column in ("ended", "episodes", "tool success", "episode success", "prompt tok/req", "policies"):
        timeline.add_column(column, justify="left" if column in ("ended", "policies") else "right")
    for row in report["timeline"]:
        timeline.add_row(str(row["last_episode_at"])[:19], f"{row['episodes']:,}", _pct(row["tool_success_rate"]),
                         _pct(row["episode_success_rate"]), _num(row["prompt_tokens_per_request"]),
                         ", ".join(v or "none" for v in row["policy_versions"]))
    console.print(timeline)

    rollout = report["rollout"]
    trials = [f"canary {rollout['canary']['version']} at {rollout['canary']['percent']:g}%"] if rollout["canary"] else []
    trials += [f"shadow {rollout['shadow']['version']}"] if rollout["shadow"] else []
    policies = Table(title=f"Policies (live: {rollout['live'] or 'none'}{''.join(', ' + t for t in trials)})")
    for column in ("version", "status", "traffic", "gate difference", "gate ci95", "last change"):
        policies.add_column(column, justify="right" if column == "traffic" else "left")
    for row in report["policies"]:
        last = row["history"][-1] if row["history"] else None
        policies.add_row(row["version"], row["status"], f"{row['traffic_pct']:g}%", str(row["gate"].get("difference", "-")),
                         str(row["gate"].get("ci95", "-")), f"{last['to']} by {last['by']}: {last['reason']}" if last else "")
    console.print(policies)
    for trial in (rollout["canary"], rollout["shadow"]):
        for line in trial["analysis"] if trial else []:
            console.print(f"{trial['version']} analysis: {line}")
    if report.get("reward_model"):
        console.print(last_fit.line(report["reward_model"]))
