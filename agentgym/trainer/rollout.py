"""The rollout controller: moves a running canary to its next step, promotes it, or rolls it
back, on what the proxy measured.

Each check compares the canary's finished episodes with the live version's, both begun since
the canary's current step started (same time, same traffic), per metric, with the sequential
test of `agentgym.trainer.analysis`: any metric failing rolls the canary back at once, with the
analysis as the reason; every metric passing moves it to the next step of `rollout.steps`, or
promotes it after the last; otherwise it waits for more episodes (or, past `max_episodes`, does
what `on_inconclusive` says). Every transition is recorded in the registry by "rollout".
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np

from agentgym.config import RolloutConfig
from agentgym.store.queries import Scope, with_base
from agentgym.trainer.analysis import Comparison, compare
from agentgym.trainer.registry import Registry

log = logging.getLogger(__name__)

# per finished episode of either arm begun since the step started: did it succeed, and what
# share of its tool calls with a known outcome worked (NULL when it made none)
ARMS_SQL = """
SELECT e.arm, e.ok::DOUBLE AS episode_success,
       count(c.id) FILTER (c.outcome = 'success') / nullif(count(c.id) FILTER (c.outcome IN ('success', 'error')), 0)
           AS tool_success
FROM episodes e LEFT JOIN calls c USING (episode_id)
WHERE e.ok IS NOT NULL AND e.started_at >= $step_start
  AND ((e.arm = 'canary' AND e.policy_version = $canary) OR (e.arm = 'live' AND e.policy_version = $live))
GROUP BY e.episode_id, e.arm, e.ok
"""


def analyse(con: duckdb.DuckDBPyConnection, config: RolloutConfig, scope: Scope, canary: str, live: str | None,
            step_start: float) -> list[Comparison]:
    rows = con.execute(with_base(ARMS_SQL), {**scope.params(), "step_start": datetime.fromtimestamp(step_start, UTC),
                                             "canary": canary, "live": live}).fetchall()
    out = []
    for column, metric in enumerate(("episode_success", "tool_success"), start=1):
        values = {arm: np.array([r[column] for r in rows if r[0] == arm and r[column] is not None], float)
                  for arm in ("canary", "live")}
        out.append(compare(metric, values["canary"], values["live"], tolerance=config.tolerance[metric],
                           min_episodes=config.min_episodes, alpha=config.alpha, tau=config.tau))
    return out


def check(con: duckdb.DuckDBPyConnection, registry: Registry, config: RolloutConfig, scope: Scope) -> dict[str, Any]:
    """One look at the running canary, and what it led to."""
    index = registry.index()
    canary = index.canary
    if canary is None:
        return {"status": "no canary"}
    comparisons = analyse(con, config, scope, canary.version, index.live, canary.step_started_at)
    lines = [c.describe() for c in comparisons]
    registry.note_analysis(canary.version, lines)
    failed = [c for c in comparisons if c.verdict == "fail"]
    episodes = min(c.episodes[0] for c in comparisons)
    if failed or (config.on_inconclusive == "rollback" and episodes >= config.max_episodes
                  and any(c.verdict == "inconclusive" for c in comparisons)):
        outcome, status = "rollback", "rolled back"
        why = f"{canary.percent:g}% step: " + "; ".join(c.describe() for c in (failed or comparisons))
    elif all(c.verdict == "pass" for c in comparisons):
        later = [step for step in config.steps if step > canary.percent]
        outcome, status = (later[0], "next step") if later else ("promote", "promoted")
        why = f"{canary.percent:g}% step passed: " + "; ".join(lines)
    else:
        return {"status": "waiting", "version": canary.version, "analysis": lines}
    if not registry.settle_canary(canary.version, outcome, by="rollout", reason=why):
        return {"status": "changed meanwhile", "version": canary.version, "analysis": lines}
    log.log(logging.WARNING if outcome == "rollback" else logging.INFO, "canary %s: %s (%s)", canary.version, status, why)
    return {"status": status, "version": canary.version, "analysis": lines}
