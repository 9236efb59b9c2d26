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
for real. Where the shadow or the live version is an LLM planner, whose probability of a logged
choice is not known, the estimate is the reward model's instead
(`agentgym.trainer.lightning.llm_gate`), over `rollout.min_episodes` episodes the shadow scored,
judged by the same rule.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from agentgym.config import PlannerConfig, RewardModelConfig, RolloutConfig, TrainerConfig
from agentgym.store.queries import Scope
from agentgym.trainer.batch import read_batch
from agentgym.trainer.encoder import Encoder
from agentgym.trainer.engine import chosen_probabilities, usable
from agentgym.trainer.gate import evaluate
from agentgym.trainer.registry import LLM_ENGINE, Registry

if TYPE_CHECKING:  # a type only: the engine and the benchmarks run without the database driver
    import duckdb

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
         trainer: TrainerConfig, planner: PlannerConfig, scope: Scope,
         reward_model: RewardModelConfig | None = None) -> dict[str, Any]:
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
    if LLM_ENGINE not in (index.versions[shadow.version].engine, index.versions[index.live].engine):
        worse, line = _off_policy(con, registry, shadow.version, index.live, since, encoder, rollout, trainer, planner,
                                  scope)
    else:
        worse, line = _reward_model(con, registry, shadow.version, index.live, since, encoder, rollout, trainer, scope,
                                    reward_model or RewardModelConfig())
    lines.append(line)
    registry.note_analysis(shadow.version, lines)
    if worse is None:
        return {"status": "waiting", "version": shadow.version, "analysis": lines}
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


def _off_policy(con: duckdb.DuckDBPyConnection, registry: Registry, version: str, live_version: str,
                since: datetime, encoder: Encoder, rollout: RolloutConfig, trainer: TrainerConfig,
                planner: PlannerConfig, scope: Scope) -> tuple[bool | None, str]:
    """Whether the gate's estimate on the live version's decisions in episodes finished since
    `since` is confidently worse than live's or no planner's (None until there are
    `rollout.min_episodes`), and its analysis line."""
    batch = usable(read_batch(con, trainer.reward, replace(scope, since=since), versions={live_version}))
    episodes = len(set(batch.episodes))
    if episodes < rollout.min_episodes:
        return None, f"off-policy estimate: {episodes} of {rollout.min_episodes} finished episodes of {live_version}"
    # the weights are read only once there is enough to judge them on: a waiting look costs a count
    (_, candidate), (_, live) = registry.load(version), registry.load(live_version)
    gate = evaluate(batch, *chosen_probabilities(batch, encoder, planner.epsilon, candidate, live),
                    margin=trainer.gate_margin, seed=trainer.seed)
    if gate["difference"] is None:  # it would take none of live's choices: not shown worse; the canary measures it
        return False, (f"off-policy estimate: none over {gate['episodes']} episodes of {live_version}, "
                       f"{gate['reason']}: " + _verdict(False))
    worse = any(c and c["ci95"][1] < -trainer.gate_margin for c in (gate, gate["untrained"]))
    untrained = gate["untrained"]
    against = (f", {untrained['difference']:+.4f} (95% {untrained['ci95']}) against no planner" if untrained else "")
    return worse, (f"off-policy estimate: {gate['new']:.4f} against {live_version}'s {gate['current']:.4f} over "
                   f"{gate['episodes']} episodes, difference {gate['difference']:+.4f} (95% {gate['ci95']}){against}, "
                   f"effective sample size {gate['effective_sample_size']:g}: " + _verdict(worse))


def _verdict(worse: bool) -> str:
    return "fail, confidently worse" if worse else "pass, not confidently worse"


def _reward_model(con: duckdb.DuckDBPyConnection, registry: Registry, version: str, live_version: str, since: datetime,
                  encoder: Encoder, rollout: RolloutConfig, trainer: TrainerConfig, scope: Scope,
                  config: RewardModelConfig) -> tuple[bool | None, str]:
    """Whether the reward model's estimate of the shadow beside the served decisions is confidently
    worse (None until it has scored requests of `rollout.min_episodes` episodes, or while too few
    outcomes are recorded to fit the reward model), and its analysis line. The reward model fitted
    is kept as the last fit (`lightning.last_fit`), for the report."""
    from agentgym.trainer.lightning import last_fit
    from agentgym.trainer.lightning.llm_gate import estimate, scored_episodes
    from agentgym.trainer.lightning.reward_model import NotEnoughData

    episodes = scored_episodes(con, version, since)
    if episodes < rollout.min_episodes:
        return None, (f"reward-model estimate: requests of {episodes} of {rollout.min_episodes} episodes scored "
                      "beside the served decisions")
    try:
        gate = estimate(con, version, since, scope, encoder, config, margin=trainer.gate_margin, seed=trainer.seed)
    except NotEnoughData as exc:
        return None, f"reward-model estimate: no reward model yet ({exc})"
    last_fit.save(registry.folder, gate["reward_model"], by=f"the shadow step judging {version}")
    held = gate["reward_model_held_out"]
    return not gate["passed"], (
        f"reward-model estimate: {gate['new']:.4f} against {live_version}'s {gate['current']:.4f} on "
        f"{gate['requests']} requests of {gate['episodes']} episodes, difference {gate['difference']:+.4f} "
        f"(95% {gate['ci95']}); the reward model's held-out accuracy {held['accuracy']} (majority "
        f"{held['majority_accuracy']}), AUC {held['auc']}: " + _verdict(not gate["passed"]))
