"""Gated rollouts end to end: the proxy's controller rolls a harmful canary back and walks a
better one through its steps to live, on episodes of the simulated model through the real proxy."""

from __future__ import annotations

import asyncio
import json

import duckdb
import numpy as np

from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.policy import PolicyWeights
from agentgym.trainer.registry import Registry, default_dir
from helpers import forcing


def _live_harmful_better(registry: Registry) -> tuple[str, str, str]:
    """Three versions, the first live: one that leaves the model to choose, one forcing the
    deprecated twin (always fails), one forcing the tool that works."""
    encoder = shared_encoder()

    def register(weights: PolicyWeights) -> str:
        return registry.register(weights, parent=None, encoder="e", encoder_checksum=encoder.checksum, training={},
                                 gate={}).version

    live = register(PolicyWeights.zero_shot(encoder.dimensions, b_defer=13.0))
    harmful = register(forcing(encoder.dimensions, "fetch_order_status"))
    better = register(forcing(encoder.dimensions, "get_order_status"))
    registry.promote(live, by="test", reason="start")
    return live, harmful, better


def _until(registry: Registry, proxy_url: str, scenario, done, *, chunks: int, seed: int) -> int:
    """Episodes in chunks of 40 until `done(index)`; how many it took."""
    for chunk in range(chunks):
        if done(registry.index()):
            return chunk * 40
        asyncio.run(run_episodes(proxy_url, scenario, episodes=40, seed=seed + chunk, concurrency=6))
        asyncio.run(asyncio.sleep(0.6))  # two looks of the controller
    assert done(registry.index()), registry.index()
    return chunks * 40


def test_the_controller_rolls_a_harmful_canary_back_and_promotes_a_better_one(tiny, logs, tmp_path):
    """`tiny` (conftest): two look-alike order tools, of which only get_order_status works."""
    scenario = load_scenario(str(tiny))
    model = local_stack.start_model(logs, args=["--scenario", str(tiny), "--seed", "1"])
    db = tmp_path / "rollout.duckdb"
    registry = Registry(default_dir(db))
    live, harmful, better = _live_harmful_better(registry)
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs, env={
        "AGENTGYM_PLANNER__REFRESH_S": "0.1", "AGENTGYM_ROLLOUT__CHECK_S": "0.3",
        "AGENTGYM_ROLLOUT__MIN_EPISODES": "20", "AGENTGYM_ROLLOUT__STEPS": json.dumps([20, 50]),
        "AGENTGYM_ROLLOUT__METRICS": json.dumps({"episode_success": 0.05, "tool_success": 0.05})})
    try:
        registry.start_canary(harmful, 20, by="test", reason="a bad idea")
        took = _until(registry, proxy.url, scenario, lambda i: i.canary is None, chunks=15, seed=100)
        rolled = registry.index().versions[harmful]
        assert rolled.status == "rolled_back" and rolled.history[-1]["by"] == "rollout", rolled.history
        assert "fail" in rolled.history[-1]["reason"] and "20% step" in rolled.history[-1]["reason"]
        assert took <= 320  # at 20% of episodes: it served about 60 or fewer before the controller saw enough

        registry.start_canary(better, 20, by="test", reason="a good idea")
        _until(registry, proxy.url, scenario, lambda i: i.live == better, chunks=30, seed=200)
        history = registry.index().versions[better].history
        assert [(h["to"], h["by"]) for h in history] == [("canary", "test"), ("canary", "rollout"),
                                                           ("live", "rollout")], history
        assert "20% step passed" in history[1]["reason"] and "50% step passed" in history[2]["reason"]
        assert registry.index().versions[live].status == "retired"
        assert proxy.stop(), proxy.log()
    finally:
        proxy.stop()
        model.stop()


def _first_verdict(p_canary: float, p_live: float, seed: int, tolerance: float) -> tuple[str, int]:
    """Looks every 20 episodes a side, up to 2,000: the first verdict that is not inconclusive."""
    from agentgym.trainer.analysis import compare, mean

    rng = np.random.default_rng(seed)
    canary, live = (rng.random(2000) < p_canary).astype(float), (rng.random(2000) < p_live).astype(float)
    for n in range(20, 2001, 20):
        verdict = compare("episode_success", mean(canary[:n]), mean(live[:n]), tolerance=tolerance,
                          min_episodes=100).verdict
        if verdict != "inconclusive":
            return verdict, n
    return "inconclusive", 2000


def test_the_sequential_test_stays_valid_under_repeated_looks():
    """100 looks per run: an equal canary is failed at most alpha (5%) of the time, even with no
    tolerance; a much worse one is failed, and soon; a better one passes."""
    equal = [_first_verdict(0.7, 0.7, seed, 0.0)[0] for seed in range(200)]
    assert equal.count("fail") <= 10, equal.count("fail")
    worse = [_first_verdict(0.4, 0.7, seed, 0.03) for seed in range(50)]
    assert all(v == "fail" for v, _ in worse) and np.median([n for _, n in worse]) <= 120
    better = [_first_verdict(0.78, 0.7, seed, 0.03)[0] for seed in range(50)]
    assert better.count("pass") >= 45 and "fail" not in better


def test_a_shadow_judged_worse_is_rolled_back_having_served_nothing_and_a_better_one_starts_its_canary(
        tiny, logs, tmp_path):
    """The shadow's off-policy estimate, on the live version's decisions made since it started,
    decides: a version forcing the failing twin never serves an episode; one forcing the tool
    that works moves to the first canary step."""
    scenario = load_scenario(str(tiny))
    model = local_stack.start_model(logs, args=["--scenario", str(tiny), "--seed", "1"])
    db = tmp_path / "shadow.duckdb"
    registry = Registry(default_dir(db))
    _, harmful, better = _live_harmful_better(registry)
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs, env={
        # the live version explores half the time: its logged forces are what the estimate reads
        "AGENTGYM_PLANNER__REFRESH_S": "0.1", "AGENTGYM_PLANNER__EPSILON": "0.5", "AGENTGYM_PLANNER__SEED": "2",
        "AGENTGYM_TRAINER__REWARD": json.dumps(scenario.reward.model_dump()),  # failed calls cost
        # 160 episodes: at 80, since a forced tool reaches the model only at a turn's first call, the
        # estimate let the harmful shadow through to its canary in one run of five (2026-11-27)
        "AGENTGYM_ROLLOUT__CHECK_S": "0.3", "AGENTGYM_ROLLOUT__MIN_EPISODES": "160",
        "AGENTGYM_ROLLOUT__STEPS": json.dumps([20, 50])})
    try:
        registry.start_shadow(harmful, by="test", reason="a bad idea")
        _until(registry, proxy.url, scenario, lambda i: i.shadow is None, chunks=12, seed=300)
        history = registry.index().versions[harmful].history
        assert history[-1]["to"] == "rolled_back" and history[-1]["by"] == "rollout", history
        assert "shadow failed" in history[-1]["reason"] and "agreement" in history[-1]["reason"], history[-1]

        registry.start_shadow(better, by="test", reason="a good idea")
        _until(registry, proxy.url, scenario, lambda i: i.canary is not None, chunks=12, seed=400)
        index = registry.index()
        assert index.canary.version == better and index.canary.percent == 20 and index.shadow is None
        assert "shadow passed" in index.versions[better].history[-1]["reason"]
        assert proxy.stop(), proxy.log()
    finally:
        proxy.stop()
        model.stop()
    con = duckdb.connect(str(db), read_only=True)
    served = con.execute("SELECT count(*) FILTER (arm <> 'shadow'), count(*) FILTER (arm = 'shadow') FROM decisions "
                         "WHERE policy_version = $v", {"v": harmful}).fetchone()
    con.close()
    assert served[0] == 0 and served[1] > 80, served  # it decided beside every request and served none
