"""The shadow step: before a version serves any episode, it scores every request beside the
serving version, and its would-be decisions are judged on what then happened.

Two readings over the decisions made since the shadow started: agreement (the share of requests
on which it would have sent what was sent: the same action, the same forced or offered tools),
and the off-policy estimate of its reward on the live version's decisions in finished episodes:
the evaluation gate's estimate (`agentgym.trainer.gate`), here on data that came after the
version was trained. Once `rollout.min_episodes` such episodes have finished, a shadow whose
estimate is confidently worse than the live version's or no planner's (the whole 95% interval of
the difference below `-trainer.gate_margin`) is rolled back, having served nothing; any other
starts its canary at the first step. Only confidently: the estimate reads the live version's
logged actions, and a version that acts very differently (one that offers where the live one
defers) is estimated from the few requests where the two agree, which the canary then measures
for real.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import duckdb

from agentgym.config import PlannerConfig, RolloutConfig, TrainerConfig
from agentgym.store.queries import Scope
from agentgym.trainer.batch import read_batch
from agentgym.trainer.encoder import Encoder
from agentgym.trainer.engine import chosen_probabilities, usable
from agentgym.trainer.gate import evaluate
from agentgym.trainer.registry import Registry

log = logging.getLogger(__name__)

# the shadow's decisions beside the served ones, request by request
AGREEMENT_SQL = """
SELECT count(*), count(*) FILTER (s.action = d.action),
       count(*) FILTER (s.action = d.action AND s.tool IS NOT DISTINCT FROM d.tool AND s.offered = d.offered)
FROM decisions s JOIN decisions d ON d.inference_id = s.inference_id AND d.arm <> 'shadow'
WHERE s.arm = 'shadow' AND s.policy_version = $version AND s.created_at >= $since
"""


def agreement(con: duckdb.DuckDBPyConnection, version: str, since: datetime) -> str:
    pairs, same_action, same = con.execute(AGREEMENT_SQL, {"version": version, "since": since}).fetchone()
    if not pairs:
        return "agreement: no request scored beside a served decision yet"
    return (f"agreement: would have sent the same request {same / pairs:.1%} of {pairs} times "
            f"(the same action {same_action / pairs:.1%})")


def look(con: duckdb.DuckDBPyConnection, registry: Registry, encoder: Encoder, rollout: RolloutConfig,
         trainer: TrainerConfig, planner: PlannerConfig, scope: Scope) -> dict[str, Any]:
    """One look at the running shadow, and what it led to."""
    index = registry.index()
    shadow = index.shadow
    if shadow is None:
        return {"status": "no shadow"}
    since = datetime.fromtimestamp(shadow.started_at, UTC)
    lines = [agreement(con, shadow.version, since)]
    if index.live is None:
        lines.append("off-policy estimate: no live version's decisions to judge it on; start its canary by hand")
        registry.note_analysis(shadow.version, lines)
        return {"status": "waiting", "version": shadow.version, "analysis": lines}
    batch = usable(read_batch(con, trainer.reward, replace(scope, since=since), versions={index.live}))
    episodes = len(set(batch.episodes))
    if episodes < rollout.min_episodes:
        lines.append(f"off-policy estimate: {episodes} of {rollout.min_episodes} finished episodes of {index.live}")
        registry.note_analysis(shadow.version, lines)
        return {"status": "waiting", "version": shadow.version, "analysis": lines}
    (_, candidate), (_, live) = registry.load(shadow.version), registry.load(index.live)
    gate = evaluate(batch, *chosen_probabilities(batch, encoder, planner.epsilon, candidate, live),
                    margin=trainer.gate_margin, seed=trainer.seed)
    worse = [c for c in (gate, gate["untrained"]) if c and c["ci95"][1] < -trainer.gate_margin]
    untrained = gate["untrained"]
    against = (f", {untrained['difference']:+.4f} (95% {untrained['ci95']}) against no planner" if untrained else "")
    lines.append(f"off-policy estimate: {gate['new']:.4f} against {index.live}'s {gate['current']:.4f} over "
                 f"{gate['episodes']} episodes, difference {gate['difference']:+.4f} (95% {gate['ci95']}){against}, "
                 f"effective sample size {gate['effective_sample_size']:g}: "
                 + ("fail, confidently worse" if worse else "pass, not confidently worse"))
    registry.note_analysis(shadow.version, lines)
    if not worse and index.canary is not None:
        return {"status": "waiting for the canary to end", "version": shadow.version, "analysis": lines}
    outcome = "rollback" if worse else rollout.steps[0]
    why = "shadow " + ("failed" if worse else "passed") + ": " + "; ".join(lines)
    if not registry.settle_shadow(shadow.version, outcome, by="rollout", reason=why):
        return {"status": "changed meanwhile", "version": shadow.version, "analysis": lines}
    status = "rolled back" if outcome == "rollback" else "canary"
    log.log(logging.WARNING if outcome == "rollback" else logging.INFO, "shadow %s: %s (%s)", shadow.version, status,
            why)
    return {"status": status, "version": shadow.version, "analysis": lines}
