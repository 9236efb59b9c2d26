"""The rollout controller: moves a running canary to its next step, promotes it, or rolls it
back, on what the proxy measured.

Each check compares the canary's finished episodes with the baseline's, both begun since the
canary's current step started (same time, same traffic), on each metric of `rollout.metrics`,
with the sequential test of `agentgym.trainer.analysis`. The baseline is the live version's
episodes, or those served by no policy (the planner records them as arm "control", version NULL)
with `rollout.baseline: control` or while no version is live. `decide` turns the comparisons into
what happens: any metric failing rolls the canary back at once, with the analysis as the reason;
every measured metric passing (a guardrail, `rollout.guardrails`, need only not fail) moves it
to the next step of `rollout.steps`, or promotes it after the last; otherwise it waits for more episodes (or, past `max_episodes`, does what
`on_inconclusive` says: wait, pause the canary at its step, or roll it back). A paused canary is
left alone until started again by hand. Every transition is recorded in the registry by "rollout".
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np

from agentgym.config import RolloutConfig
from agentgym.store.queries import Scope, with_base
from agentgym.trainer.analysis import Comparison, compare, latency_shares, mean, ratio
from agentgym.trainer.registry import Registry

if TYPE_CHECKING:  # a type only: the engine and the benchmarks run without the database driver
    import duckdb

log = logging.getLogger(__name__)

Outcome = Literal["rollback", "promote", "wait", "pause"] | float  # a float: the next step's percentage


class Episode(NamedTuple):
    """A finished episode of either arm, as the analysis reads it."""

    canary: bool
    episode_success: float  # 1 or 0
    tool_success: float | None  # the share of its tool calls with a known outcome that worked; None: no such call
    cost: float | None  # its requests' cost_usd; None: none recorded, or all zero (a model litellm has no price for)
    latencies: list[float] | None  # each request's latency_ms


# per finished episode of either arm begun since the step started
EPISODES_SQL = """
WITH arms AS (
    SELECT episode_id, arm = 'canary' AS canary, ok::DOUBLE AS episode_success
    FROM episodes
    WHERE ok IS NOT NULL AND started_at >= $step_start
      AND ((arm = 'canary' AND policy_version = $canary)
           OR (arm = $baseline_arm AND policy_version IS NOT DISTINCT FROM $baseline_version))
),
tools AS (
    SELECT episode_id,
           count(*) FILTER (outcome = 'success') / nullif(count(*) FILTER (outcome IN ('success', 'error')), 0)
               AS tool_success
    FROM calls WHERE episode_id IN (SELECT episode_id FROM arms) GROUP BY episode_id
),
requests AS (
    SELECT episode_id, nullif(sum(cost_usd), 0) AS cost,
           list(latency_ms) FILTER (latency_ms IS NOT NULL) AS latencies
    FROM inf WHERE episode_id IN (SELECT episode_id FROM arms) GROUP BY episode_id
)
SELECT a.canary, a.episode_success, t.tool_success, r.cost, r.latencies
FROM arms a LEFT JOIN tools t USING (episode_id) LEFT JOIN requests r USING (episode_id)
"""


def baseline_of(config: RolloutConfig, live: str | None) -> tuple[str, str | None]:
    """The arm and policy version of the episodes a canary is compared with."""
    return ("live", live) if config.baseline == "live" and live is not None else ("control", None)


def episodes(con: duckdb.DuckDBPyConnection, scope: Scope, *, step_start: float, canary: str,
             baseline: tuple[str, str | None]) -> list[Episode]:
    rows = con.execute(with_base(EPISODES_SQL), {
        **scope.params(), "step_start": datetime.fromtimestamp(step_start, UTC), "canary": canary,
        "baseline_arm": baseline[0], "baseline_version": baseline[1]}).fetchall()
    return [Episode(*row) for row in rows]


def measure(episodes: list[Episode], config: RolloutConfig) -> list[Comparison]:
    """The canary against the baseline on each metric of `config.metrics`, in its order."""
    arms = [e for e in episodes if e.canary], [e for e in episodes if not e.canary]

    def column(name: str) -> list[np.ndarray]:  # canary's, baseline's; None -> NaN
        return [np.array([getattr(e, name) for e in arm], float) for arm in arms]

    test = {"min_episodes": config.min_episodes, "alpha": config.alpha, "tau": config.tau}
    out = []
    for metric, tolerance in config.metrics.items():
        if metric == "cost_per_success":
            (cost_c, cost_b), (ok_c, ok_b) = column("cost"), column("episode_success")
            out.append(compare(metric, ratio(cost_c, ok_c), ratio(cost_b, ok_b), tolerance=tolerance, better="lower",
                               relative=True, **test))
        elif metric == "latency_p95":
            canary, baseline, threshold = latency_shares(
                *([np.array(e.latencies or [], float) for e in arm] for arm in arms), tolerance)
            note = f"share of requests over {1 + tolerance:g} x the baseline's p95, {threshold:.0f} ms"
            out.append(compare(metric, canary, baseline, tolerance=0.0, better="lower", **test,
                               note="" if math.isnan(threshold) else note))
        else:
            canary, baseline = column(metric)
            out.append(compare(metric, mean(canary), mean(baseline), tolerance=tolerance, **test))
    return out


def decide(comparisons: list[Comparison], percent: float, config: RolloutConfig) -> tuple[Outcome, str]:
    """What a look at a step at `percent`% leads to, and why. No I/O: recorded episodes can be
    replayed through `measure` and this."""
    judged = [c for c in comparisons if c.verdict != "not measured"]
    failed = [c for c in judged if c.verdict == "fail"]
    if failed:
        return "rollback", f"{percent:g}% step: " + "; ".join(c.describe() for c in failed)
    analysis = "; ".join(c.describe() for c in comparisons)
    shown = [c for c in judged if c.metric not in config.guardrails]  # guardrails only have to not fail
    if shown and all(c.verdict == "pass" for c in shown):
        later = [step for step in config.steps if step > percent]
        return (later[0] if later else "promote"), f"{percent:g}% step passed: {analysis}"
    finished = max(c.canary.finished for c in comparisons)
    if finished >= config.max_episodes:
        return config.on_inconclusive, (f"{percent:g}% step still inconclusive after {finished} canary episodes: "
                                        f"{analysis}")
    return "wait", analysis


def check(con: duckdb.DuckDBPyConnection, registry: Registry, config: RolloutConfig, scope: Scope) -> dict[str, Any]:
    """One look at the running canary, and what it led to."""
    index = registry.index()
    canary = index.canary
    if canary is None:
        return {"status": "no canary"}
    if canary.paused:
        return {"status": "paused", "version": canary.version, "reason": canary.paused}
    baseline = baseline_of(config, index.live)
    comparisons = measure(episodes(con, scope, step_start=canary.step_started_at, canary=canary.version,
                                   baseline=baseline), config)
    lines = [c.describe() for c in comparisons]
    registry.note_analysis(canary.version, lines)
    outcome, why = decide(comparisons, canary.percent, config)
    if outcome == "wait":
        return {"status": "waiting", "version": canary.version, "analysis": lines}
    why += f" (compared with {f'live {baseline[1]}' if baseline[1] else 'the episodes served by no policy'})"
    if not registry.settle_canary(canary.version, outcome, by="rollout", reason=why,
                                   step_started_at=canary.step_started_at):
        return {"status": "changed meanwhile", "version": canary.version, "analysis": lines}
    status = {"rollback": "rolled back", "promote": "promoted", "pause": "paused"}.get(outcome, "next step")
    log.log(logging.WARNING if outcome == "rollback" else logging.INFO, "canary %s: %s (%s)", canary.version, status, why)
    return {"status": status, "version": canary.version, "analysis": lines}
