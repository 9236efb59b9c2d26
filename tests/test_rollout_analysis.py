"""The rollout's analysis and decision without a proxy: each metric on synthetic episodes, the
baseline the planner's records give, pausing, and the configuration's checks."""

from __future__ import annotations

import asyncio
import math
import time

import duckdb
import numpy as np
import pytest
from conftest import TOOLS
from pydantic import ValidationError

from agentgym.config import PlannerConfig, RolloutConfig, Settings
from agentgym.proxy.planner import Planner
from agentgym.proxy.usage import InferenceRecord
from agentgym.store.queries import Scope
from agentgym.store.recorder import Recorder
from agentgym.trainer.analysis import Estimate, compare, mean
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.policy import PolicyWeights
from agentgym.trainer.registry import Registry
from agentgym.trainer.rollout import Episode, baseline_of, check, decide, episodes, measure


def _arm(canary: bool, n: int, rng: np.random.Generator, *, success: float = 0.8, cost: float | None = 0.01,
         latency_ms: float | None = 800.0) -> list[Episode]:
    """`n` episodes: gamma-distributed costs around `cost` (None: no cost recorded), one to seven
    requests each with log-normal latencies around `latency_ms` (None: none recorded)."""
    return [Episode(canary, float(rng.random() < success), None,
                    None if cost is None else float(rng.gamma(16, cost / 16)),
                    None if latency_ms is None else list(np.exp(rng.normal(math.log(latency_ms), 0.5,
                                                                           rng.integers(1, 8)))))
            for _ in range(n)]


def _verdicts(metric: str, n: int, canary: dict, seeds=range(5)) -> set[str]:
    config = RolloutConfig(metrics={metric: RolloutConfig().metrics[metric]}, guardrails=[])
    out = set()
    for seed in seeds:
        rng = np.random.default_rng(seed)
        [comparison] = measure(_arm(True, n, rng, **canary) + _arm(False, n, rng), config)
        out.add(comparison.verdict)
    return out


def test_cost_per_success_passes_an_equal_canary_and_fails_a_costlier_one():
    assert _verdicts("cost_per_success", 1500, {}) == {"pass"}
    assert _verdicts("cost_per_success", 300, {"cost": 0.015}) == {"fail"}  # 50% dearer
    assert _verdicts("cost_per_success", 300, {"success": 0.55}) == {"fail"}  # as dear per episode, fewer succeed


def test_latency_p95_passes_an_equal_canary_and_fails_a_slower_one():
    assert _verdicts("latency_p95", 600, {}) == {"pass"}
    assert _verdicts("latency_p95", 300, {"latency_ms": 1300.0}) == {"fail"}  # p95 60% higher
    rng = np.random.default_rng(0)
    [comparison] = measure(_arm(True, 300, rng) + _arm(False, 300, rng),
                           RolloutConfig(metrics={"latency_p95": 0.2}, guardrails=[]))
    assert comparison.describe().startswith("latency_p95 (share of requests over 1.2 x the baseline's p95, ")


def test_a_metric_with_no_value_in_either_arm_is_not_measured_and_left_out():
    config = RolloutConfig(min_episodes=50, steps=[5, 25])
    rng = np.random.default_rng(0)
    unpriced = _arm(True, 60, rng, cost=None, latency_ms=None) + _arm(False, 60, rng, cost=None, latency_ms=None)
    verdicts = {c.metric: c.verdict for c in measure(unpriced, config)}
    assert verdicts["cost_per_success"] == verdicts["latency_p95"] == "not measured"
    comparisons = measure(unpriced[:40] + unpriced[60:100], config)  # too few episodes yet to say
    assert {c.verdict for c in comparisons} == {"inconclusive"}
    no_success = _arm(True, 60, rng, success=0.0) + _arm(False, 60, rng, success=0.0)
    assert measure(no_success, RolloutConfig(min_episodes=50, metrics={"cost_per_success": 0.1}))[0].verdict \
        == "not measured"
    one_arm = _arm(True, 60, rng, cost=None) + _arm(False, 60, rng)  # it may yet come: not "not measured"
    assert measure(one_arm, RolloutConfig(min_episodes=50, metrics={"cost_per_success": 0.1}))[0].verdict \
        == "inconclusive"

    def judged(verdicts: list[str]) -> list:
        estimate = Estimate(0.5, 1e-4, 100, 100)
        return [compare(f"m{i}", estimate, estimate, tolerance=0.5 if v == "pass" else 0.0, min_episodes=50)
                if v != "not measured" else compare(f"m{i}", Estimate(math.nan, math.nan, 0, 100),
                                                    Estimate(math.nan, math.nan, 0, 100), tolerance=0, min_episodes=50)
                for i, v in enumerate(verdicts)]

    outcome, why = decide(judged(["pass", "not measured"]), 5, config)
    assert outcome == 25 and "m1: not measured" in why and "left out of the decision" in why
    assert decide(judged(["not measured", "not measured"]), 5, config)[0] == "wait"  # nothing judged: no pass


def _estimate(value: float) -> Estimate:
    return Estimate(value, 1e-6, 1000, 1000)


def test_direction_and_relative_tolerance():
    def verdict(canary: float, baseline: float, **kw) -> str:
        return compare("m", _estimate(canary), _estimate(baseline), min_episodes=100, **kw).verdict

    assert verdict(0.5, 0.4, tolerance=0.05) == "pass" and verdict(0.5, 0.4, tolerance=0.05, better="lower") == "fail"
    assert verdict(0.38, 0.4, tolerance=0.05, better="higher") == "pass"
    assert verdict(0.3, 0.4, tolerance=0.05, better="higher") == "fail"
    lower = {"tolerance": 0.10, "relative": True, "better": "lower"}
    assert verdict(1.08, 1.0, **lower) == "pass" and verdict(1.3, 1.0, **lower) == "fail"
    assert verdict(10.8, 10.0, **lower) == "pass"  # a fraction of the baseline, whatever its scale
    assert verdict(0.85, 1.0, tolerance=0.10, relative=True) == "fail"
    assert verdict(0.95, 1.0, tolerance=0.10, relative=True) == "pass"
    comparison = compare("cost", _estimate(1.3), _estimate(1.0), min_episodes=100, **lower)
    assert comparison.low < 0.3 < comparison.high and "relative difference in [+2" in comparison.describe()


def test_decide_steps_promotes_rolls_back_and_follows_on_inconclusive():
    passing, failing = _estimate(0.5), _estimate(0.2)
    steps = RolloutConfig(steps=[5, 25])
    ok = compare("episode_success", passing, passing, tolerance=0.03, min_episodes=100)
    bad = compare("tool_success", failing, passing, tolerance=0.03, min_episodes=100)
    assert decide([ok], 5, steps)[0] == 25 and decide([ok], 25, steps)[0] == "promote"
    outcome, why = decide([ok, bad], 5, steps)
    assert outcome == "rollback" and why.startswith("5% step: tool_success") and "episode_success" not in why
    unsure = compare("episode_success", Estimate(0.5, 0.01, 3000, 3000), passing, tolerance=0.03, min_episodes=100)
    assert unsure.verdict == "inconclusive"
    for action in ("wait", "pause", "rollback"):
        config = RolloutConfig(on_inconclusive=action, max_episodes=3000)
        outcome, why = decide([unsure, ok], 5, config)
        assert outcome == action and "still inconclusive after 3000 canary episodes" in why
        assert decide([unsure, ok], 5, config.model_copy(update={"max_episodes": 3001}))[0] == "wait"


def test_a_guardrail_rolls_back_when_worse_but_need_not_pass():
    """p95 latency is a guardrail by default: inconclusive, it does not hold a step back; credibly
    worse, it rolls the canary back; named in `metrics` alone, it cannot pass a step."""
    passing = _estimate(0.5)
    ok = compare("episode_success", passing, passing, tolerance=0.03, min_episodes=100)
    unsure = compare("latency_p95", Estimate(0.04, 0.01, 3000, 3000), _estimate(0.05), tolerance=0.0,
                     min_episodes=100, better="lower")
    slower = compare("latency_p95", _estimate(0.3), _estimate(0.05), tolerance=0.0, min_episodes=100, better="lower")
    assert unsure.verdict == "inconclusive" and slower.verdict == "fail"
    config = RolloutConfig(steps=[5, 25])
    assert decide([ok, unsure], 5, config)[0] == 25
    assert decide([ok, slower], 5, config)[0] == "rollback"
    assert decide([ok, unsure], 5, config.model_copy(update={"guardrails": []}))[0] == "wait"
    with pytest.raises(ValidationError, match="must not be a guardrail"):
        RolloutConfig(metrics={"latency_p95": 0.2})


def _serve(tmp_path, registry: Registry, planner: PlannerConfig, succeeds: dict[str, float],
           n: int) -> duckdb.DuckDBPyConnection:
    """`n` one-request episodes through the planner, recorded as the proxy records them, with
    episode feedback: success with each arm's chance in `succeeds` (by the arm recorded)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "s.duckdb"
    recorder = Recorder(path, flush_interval_s=0.05)
    recorder.start()
    served = Planner(planner, registry, recorder, encoder=shared_encoder())
    served.refresh()
    body = {"model": "m", "tools": TOOLS, "messages": [{"role": "user", "content": "Weather in Paris?"}]}

    async def serve() -> None:
        for i in range(n):
            record = InferenceRecord(id=f"inf-{i}", episode_id=f"ep-{i}", episode_link="header",
                                     created_at=time.time(), model="m", provider="openai", stream=False,
                                     tools_offered=3, tool_choice=None, status=200,
                                     latency_ms=float(rng.uniform(50, 150)))
            await served.plan(body, record)
            recorder.add("inferences", record.to_row(10, 5, False, 0.001 if i % 3 else None, with_bodies=False))
            recorder.add("feedback", (f"fb-{i}", time.time(), "episode", record.episode_id, record.episode_id, None,
                                      bool(rng.random() < succeeds[record.arm]), None))

    asyncio.run(serve())
    recorder.close()
    return duckdb.connect(str(path), read_only=True)


def test_a_request_the_policy_leaves_alone_is_still_its_episodes_arm(tmp_path):
    """An episode that opens without tools (or with the client's own tool_choice) is on its arm
    all the same: recorded as control with no version, it would leave its arm's analysis."""
    registry, (v1, v2) = _versions(tmp_path, 2)
    registry.promote(v1, by="test", reason="live")
    registry.start_canary(v2, 50, by="test", reason="canary")
    planner = Planner(PlannerConfig(seed=0), registry, Recorder(tmp_path / "r.duckdb"), encoder=shared_encoder())
    planner.refresh()
    plain = {"model": "m", "messages": [{"role": "user", "content": "Hello"}]}
    chosen = {**plain, "tools": TOOLS, "tool_choice": "required"}
    for i in range(40):
        arm, serving = planner.arm(f"ep-{i}")
        for body in (plain, chosen):
            record = InferenceRecord(id=f"inf-{i}", episode_id=f"ep-{i}", episode_link="header", created_at=time.time(),
                                     model="m", provider="openai", stream=False, tools_offered=0, tool_choice=None)
            assert asyncio.run(planner.plan(body, record)) is None  # sent unchanged
            assert (record.arm, record.policy_version) == (arm, serving[0].version)
    assert {planner.arm(f"ep-{i}")[0] for i in range(40)} == {"live", "canary"}


def _versions(tmp_path, count: int) -> tuple[Registry, list[str]]:
    registry, encoder = Registry(tmp_path / "policies"), shared_encoder()
    return registry, [registry.register(PolicyWeights.zero_shot(encoder.dimensions), parent=None, encoder="e",
                                        encoder_checksum=encoder.checksum, training={}, gate={}).version
                      for _ in range(count)]


def test_the_first_canary_is_compared_with_the_episodes_served_by_no_policy(tmp_path):
    registry, [v1] = _versions(tmp_path, 1)
    registry.start_canary(v1, 50, by="test", reason="the first version")
    con = _serve(tmp_path, registry, PlannerConfig(seed=0), {"canary": 1.0, "control": 1.0}, 80)
    assert set(con.execute("SELECT DISTINCT arm, policy_version FROM inferences").fetchall()) == {
        ("canary", v1), ("control", None)}  # no live version: the rest pass unchanged, as control
    config = RolloutConfig(min_episodes=20, steps=[50], metrics={"episode_success": 0.05, "cost_per_success": 0.1})
    step = registry.index().canary.step_started_at
    rows = episodes(con, Scope(), step_start=step, canary=v1, baseline=baseline_of(config, None))
    canary, baseline = [e for e in rows if e.canary], [e for e in rows if not e.canary]
    assert len(canary) >= 25 and len(baseline) >= 25 and len(rows) == 80
    assert all(len(e.latencies) == 1 and 50 <= e.latencies[0] <= 150 for e in rows)
    assert {e.cost for e in rows} == {0.001, None}
    result = check(con, registry, config, Scope())
    assert result["status"] == "promoted", result
    assert registry.index().live == v1
    assert "compared with the episodes served by no policy" in registry.index().versions[v1].history[-1]["reason"]


def test_baseline_control_compares_with_the_control_arm_not_the_live_version(tmp_path):
    registry, [v1, v2] = _versions(tmp_path, 2)
    registry.promote(v1, by="test", reason="first")
    registry.start_canary(v2, 30, by="test", reason="try")
    con = _serve(tmp_path, registry, PlannerConfig(seed=0, control_share=0.3),
                 {"control": 1.0, "live": 0.0, "canary": 0.0}, 150)
    step = registry.index().canary.step_started_at
    for baseline, expected in (("live", 60.0), ("control", "rollback")):
        config = RolloutConfig(baseline=baseline, min_episodes=20, steps=[30, 60], metrics={"episode_success": 0.05})
        rows = episodes(con, Scope(), step_start=step, canary=v2, baseline=baseline_of(config, v1))
        assert decide(measure(rows, config), 30, config)[0] == expected, baseline


def test_an_inconclusive_step_pauses_until_started_again_by_hand(tmp_path):
    registry, [v1, v2] = _versions(tmp_path, 2)
    registry.promote(v1, by="test", reason="first")
    registry.start_canary(v2, 50, by="test", reason="try")
    con = _serve(tmp_path, registry, PlannerConfig(seed=0), {"live": 0.5, "canary": 0.5}, 40)
    config = RolloutConfig(on_inconclusive="pause", min_episodes=2, max_episodes=10, metrics={"episode_success": 0.0})
    assert check(con, registry, config, Scope())["status"] == "paused"
    canary = registry.index().canary
    assert canary.percent == 50 and canary.paused.startswith("50% step still inconclusive after")
    change = registry.index().versions[v2].history[-1]
    assert change["by"] == "rollout" and change["to"] == "canary" and change["reason"].startswith("paused: ")
    analysed = registry.index().canary.analysis
    assert check(con, registry, config, Scope()) == {"status": "paused", "version": v2, "reason": canary.paused}
    assert registry.index().canary.analysis == analysed  # left alone
    registry.start_canary(v2, 50, by="person", reason="look again")
    restarted = registry.index().canary
    assert restarted.paused is None and restarted.step_started_at > canary.step_started_at
    assert check(con, registry, config, Scope())["status"] == "waiting"  # a fresh step: no episodes of its own yet


def test_rollout_configuration_errors_are_clear():
    with pytest.raises(ValidationError, match="at least one metric"):
        RolloutConfig(metrics={})
    with pytest.raises(ValidationError, match="latency_p99"):
        RolloutConfig(metrics={"latency_p99": 0.2})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        RolloutConfig(metrics={"cost_per_success": -0.1})
    with pytest.raises(ValidationError, match="tolerance"):
        RolloutConfig(tolerance={"episode_success": 0.03})  # the old key: an error, not silently ignored
    with pytest.raises(ValidationError, match="set planner.control_share above 0"):
        Settings(rollout={"baseline": "control"})
    assert Settings(rollout={"baseline": "control"}, planner={"control_share": 0.1}).rollout.baseline == "control"


def test_a_few_canary_episodes_alike_do_not_make_the_interval_narrow():
    """Three failures in a row have no spread of their own: before min_episodes the canary is
    given the baseline's, so three is not enough to fail it, and fifteen is."""
    baseline = np.array([1.0] * 74 + [0.0] * 26)
    verdict = lambda n: compare("episode_success", mean(np.zeros(n)), mean(baseline), tolerance=0.03,  # noqa: E731
                                min_episodes=100).verdict
    assert verdict(3) == "inconclusive" and verdict(15) == "fail"
