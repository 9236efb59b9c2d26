"""Gated rollouts through the real proxy and simulator: how long a harmful policy serves before
the controller rolls it back and what it costs, how many episodes a better one takes to reach
100%, and, over 20 seeded runs each, how often a policy equal to live is rolled back and how
often a harmful one is missed.

    .venv/bin/python benchmarks/rollout_safety.py [--scenario customer_support] [--train-episodes 2400]

Phase 1 trains "better": the proxy's own trainer (promote: auto) on `--train-episodes`
episodes; its live version at the end. Phase 2, in a fresh store with the first version a
deployment starts with (v1, zero-shot, mostly deferring) live and the rollout controller on
its defaults:
  - "harmful" (forces the tool least like the request) in shadow, then, started by hand, as a
    canary at the first step: episodes until each is rolled back, and what the canary cost;
  - "better" in shadow, then through every canary step to live: the episodes it took.
Phase 3 replays the controller's analysis (`agentgym.trainer.rollout.decide` on
`agentgym.trainer.analysis.compare`, the code the proxy runs) 20 times each over episodes
recorded through the proxy: an A/A canary drawn from the live version's own episodes (equal
to live: any rollback is false) and a canary drawn from the harmful version's (any promotion,
or no rollback within the step's `max_episodes`, is a miss). Each run's arms, episode order
and looks are drawn from its seed.

Writes benchmarks/results/rollout_safety-SCENARIO-DATE.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np

from agentgym.config import RolloutConfig, load_settings
from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.demo import DEMO_PRICE
from agentgym.scenarios.scenario import Scenario, load_scenario
from agentgym.store.queries import Scope, with_base
from agentgym.trainer.encoder import ENCODER_ID, shared_encoder
from agentgym.trainer.policy import PolicyWeights
from agentgym.trainer.registry import Index, Registry, default_dir
from agentgym.trainer.rollout import Episode, decide, episodes, measure

RESULTS = Path(__file__).parent / "results"
CHUNK = 50  # episodes between the controller's looks


def harmful_weights(dimensions: int) -> PolicyWeights:
    """Forces, on every request, the offered tool least like it."""
    weights = PolicyWeights.zero_shot(dimensions, alpha=-10.0)
    weights.b_force[0] = 30.0
    return weights


class Stack:
    """The simulated model and a proxy on one store, with the rollout controller's defaults."""

    def __init__(self, scenario: Scenario, work: Path, name: str, seed: int, env: dict[str, str]) -> None:
        self.scenario, self.seed = scenario, seed
        self.db = work / f"{name}.duckdb"
        self.registry = Registry(default_dir(self.db))
        self.model = local_stack.start_model(work, args=["--scenario", scenario.name, "--seed", str(seed)])
        self.proxy = local_stack.start_proxy(f"{self.model.url}/v1", self.db, work, env={
            "AGENTGYM_PRICING": json.dumps(DEMO_PRICE), **scenario.proxy_env(), "AGENTGYM_PLANNER__SEED": str(seed),
            "AGENTGYM_ROLLOUT__CHECK_S": "0.5", **env})
        self.episodes = 0

    def run(self, episodes: int) -> None:
        asyncio.run(run_episodes(self.proxy.url, self.scenario, episodes=episodes, seed=self.seed + self.episodes,
                                 concurrency=8))
        self.episodes += episodes

    def until(self, done: Callable[[Index], bool], limit: int) -> int:
        """Episodes in chunks until `done(index)` (the controller looks between chunks); how many it took."""
        start = self.episodes
        while not done(self.registry.index()) and self.episodes - start < limit:
            self.run(CHUNK)
            time.sleep(1.2)  # two looks of the controller at what the chunk recorded
        return self.episodes - start

    def stop(self) -> None:
        self.proxy.stop()
        self.model.stop()


def train_better(scenario: Scenario, work: Path, episodes: int, seed: int) -> tuple[PolicyWeights, str]:
    stack = Stack(scenario, work, "train", seed, {**scenario.learning_env(seed), "AGENTGYM_TRAINER__PROMOTE": "auto"})
    try:
        stack.run(episodes)
    finally:
        stack.stop()
    live = stack.registry.index().live
    return stack.registry.load(live)[1], live


def arm_figures(db: Path, window: tuple[float, float]) -> dict:
    """Per arm, the finished episodes begun in `window` and their success rate."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute(with_base("SELECT arm, count(*), avg(ok::DOUBLE) FROM episodes WHERE ok IS NOT NULL "
                                     "AND started_at BETWEEN $start AND $end GROUP BY arm"),
                           {**Scope().params(), "start": datetime.fromtimestamp(window[0], UTC),
                            "end": datetime.fromtimestamp(window[1], UTC)}).fetchall()
    finally:
        con.close()
    return {arm: {"episodes": n, "episode_success": round(rate, 4)} for arm, n, rate in rows}


def rollouts(scenario: Scenario, work: Path, better_weights: PolicyWeights, seed: int, limit: int,
             pool_episodes: int) -> tuple[dict, Path, dict[str, tuple[float, float]]]:
    """Phase 2. Also serves `harmful` live for `pool_episodes` at the end, for phase 3's pool."""
    stack = Stack(scenario, work, "rollout", seed, {})
    encoder, registry, steps = shared_encoder(), stack.registry, load_settings().rollout.steps
    windows: dict[str, tuple[float, float]] = {}

    def register(weights: PolicyWeights, what: str) -> str:
        return registry.register(weights, parent=None, encoder=ENCODER_ID, encoder_checksum=encoder.checksum,
                                 training={"benchmark": what}, gate={}).version

    def phase(name: str, done: Callable[[Index], bool]) -> int:
        started = time.time()
        took = stack.until(done, limit)
        windows[name] = (started, time.time())
        return took

    first = register(PolicyWeights.zero_shot(encoder.dimensions, context_dimensions=encoder.dimensions_with_words,
                                             b_defer=load_settings().trainer.zero_shot_defer, seed=seed),
                     "the first version")
    harmful, better = register(harmful_weights(encoder.dimensions), "harmful"), register(better_weights, "better")
    registry.promote(first, by="benchmark", reason="the first version a deployment serves")
    out: dict = {"first": first, "harmful": harmful, "better": better}
    try:
        stack.run(CHUNK)  # the planner warm, the live version serving
        registry.start_shadow(harmful, by="benchmark", reason="harmful, in shadow")
        out["harmful_shadow"] = {"episodes": phase("harmful_shadow", lambda i: i.shadow is None),
                                 "verdict": registry.index().versions[harmful].history[-1]}
        registry.start_canary(harmful, steps[0], by="benchmark", reason="harmful, canary started by hand")
        out["harmful_canary"] = {"episodes": phase("harmful_canary", lambda i: i.canary is None),
                                 "verdict": registry.index().versions[harmful].history[-1]}
        registry.start_shadow(better, by="benchmark", reason="better, in shadow")
        out["better_rollout"] = {"episodes": phase("better", lambda i: i.live == better
                                           or i.versions[better].status == "rolled_back"),
                         "history": registry.index().versions[better].history}
        registry.promote(harmful, by="benchmark", reason="harmful served to every episode: phase 3's pool")
        started = time.time()
        stack.run(pool_episodes)
        windows["harmful_live"] = (started, time.time())
    finally:
        stack.stop()
    return out, stack.db, windows


def pool(db: Path, arm: str, version: str, since: float) -> list[Episode]:
    """The finished episodes `version` served on `arm` begun since `since`, as the analysis reads them."""
    con = duckdb.connect(str(db), read_only=True)
    try:
        found = episodes(con, Scope(), step_start=since, canary="", baseline=(arm, version))
    finally:
        con.close()
    return found


def replay(canary_pool: list[Episode], baseline_pool: list[Episode], config: RolloutConfig, seed: int) -> dict:
    """One rollout, from the first step, with episodes drawn from the pools: where it ended, after
    how many episodes, and how many the canary served. A look every 20 episodes, or every 2% of
    the step's episodes once there are more than 1,000 (the proxy looks every `check_s`); a
    step still inconclusive at `max_episodes` canary episodes ends the run as "inconclusive"
    (with `on_inconclusive: wait` the proxy would go on waiting)."""
    rng = np.random.default_rng(seed)
    percent, window, total, served = config.steps[0], [], 0, 0
    while True:
        for _ in range(max(20, len(window) // 50)):
            on_canary = rng.random() < percent / 100
            source = canary_pool if on_canary else baseline_pool
            window.append(source[rng.integers(len(source))]._replace(canary=on_canary))
            served += on_canary
            total += 1
        outcome, _ = decide(measure(window, config), percent, config)
        if outcome in ("rollback", "promote", "pause"):
            return {"outcome": outcome, "episodes": total, "served": served, "step": percent}
        if outcome == "wait" and sum(e.canary for e in window) >= config.max_episodes:
            return {"outcome": "inconclusive", "episodes": total, "served": served, "step": percent}
        if outcome != "wait":
            percent, window = float(outcome), []


def rates(canary_pool: list[Episode], baseline_pool: list[Episode], config: RolloutConfig, runs: int) -> dict:
    """`runs` replays; harm: the canary's episodes times how much less often its pool's episodes
    succeed, as a share of all the episodes until the rollout ended."""
    ended = [replay(canary_pool, baseline_pool, config, seed) for seed in range(runs)]
    outcomes = [r["outcome"] for r in ended]
    gap = np.mean([e.episode_success for e in baseline_pool]) - np.mean([e.episode_success for e in canary_pool])
    harm = [r["served"] * gap / r["episodes"] for r in ended]
    return {"runs": runs, **{o: outcomes.count(o) for o in ("rollback", "promote", "pause", "inconclusive")},
            "median_episodes": float(np.median([r["episodes"] for r in ended])),
            "median_canary_episodes": float(np.median([r["served"] for r in ended])),
            "success_gap": round(float(gap), 4), "harm_median": round(float(np.median(harm)), 4),
            "harm_max": round(float(np.max(harm)), 4), "each": ended}


def harm(db: Path, window: tuple[float, float]) -> dict:
    """What the canary cost in its window: its episodes, and the episodes it failed beyond the
    live arm's rate, as a share of all episodes in the window."""
    arms = arm_figures(db, window)
    canary, live = arms.get("canary", {"episodes": 0, "episode_success": 0.0}), arms["live"]
    lost = canary["episodes"] * (live["episode_success"] - canary["episode_success"])
    total = canary["episodes"] + live["episodes"]
    return {"arms": arms, "episodes_lost": round(lost, 1), "share_of_window": round(lost / total, 4)}


def recorded(work: Path) -> tuple[dict, Path, dict[str, tuple[float, float]]]:
    """Phase 2's results and windows, read back from an earlier run's rollout store and registry
    (versions v1 first, v2 harmful, v3 better, as `rollouts` registers them)."""
    db = work / "rollout.duckdb"
    versions = Registry(default_dir(db)).index().versions
    harmful, better = versions["v2"].history, versions["v3"].history
    by_hand = next(i for i, h in enumerate(harmful) if h["to"] == "canary" and h["by"] == "benchmark")
    ended = next(h["at"] for h in harmful[by_hand + 1:] if h["to"] == "rolled_back")
    went_live = next((h["at"] for h in better if h["to"] == "live"), better[-1]["at"])
    windows = {"harmful_shadow": (harmful[0]["at"], harmful[1]["at"]), "harmful_canary": (harmful[by_hand]["at"], ended),
               "better": (better[0]["at"], went_live),
               "harmful_live": (next(h["at"] for h in harmful if h["to"] == "live"), time.time())}
    count = lambda window: sum(a["episodes"] for a in arm_figures(db, window).values())  # noqa: E731
    result = {"first": "v1", "harmful": "v2", "better": "v3",
              "harmful_shadow": {"episodes": count(windows["harmful_shadow"]), "verdict": harmful[1]},
              "harmful_canary": {"episodes": count(windows["harmful_canary"]), "verdict": harmful[by_hand + 1]},
              "better_rollout": {"episodes": count(windows["better"]), "history": better}}
    return result, db, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", default="customer_support")
    parser.add_argument("--train-episodes", type=int, default=2400)
    parser.add_argument("--trained", help="FOLDER:VERSION, a policies folder and version to take as 'better' "
                        "instead of phase 1 (an earlier run's train.duckdb.policies)")
    parser.add_argument("--limit", type=int, default=8000, help="episodes at most per rollout phase")
    parser.add_argument("--pool-episodes", type=int, default=400, help="episodes the harmful version serves live")
    parser.add_argument("--store", type=Path, help="an earlier run's folder (rollout-SCENARIO-*): replay and report "
                        "on its rollout store instead of running phases 1 and 2")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    work = Path(tempfile.mkdtemp(prefix=f"rollout-{args.scenario}-"))
    started = time.monotonic()
    trained = args.trained
    if args.store:
        result, db, windows = recorded(args.store)
    else:
        if args.trained:
            folder, version = args.trained.rsplit(":", 1)
            better = Registry(folder).load(version)[1]
        else:
            better, trained = train_better(scenario, work, args.train_episodes, args.seed)
            print(f"phase 1: trained {trained} in {time.monotonic() - started:.0f}s", flush=True)
        result, db, windows = rollouts(scenario, work, better, args.seed + 10_000, args.limit, args.pool_episodes)
    result["harmful_canary"]["harm"] = harm(db, windows["harmful_canary"])
    print(f"phase 2: {json.dumps(result, default=str)[:2000]}", flush=True)
    config = load_settings().rollout
    live = pool(db, "live", result["first"], windows["harmful_shadow"][0])
    harmful = pool(db, "live", result["harmful"], windows["harmful_live"][0])
    result["replay"] = {"pools": {"live": len(live), "harmful": len(harmful)}}
    # the defaults; and a first step of 2%, for the harmful canary's harm (an equal canary meets
    # the same test at any step, only 2.5 times slower: 150,000 episodes to a step's max_episodes)
    for steps, kinds in ((config.steps, ("equal", "harmful")), ([2.0, *config.steps[1:]], ("harmful",))):
        stepped = config.model_copy(update={"steps": steps})
        key = "steps " + ", ".join(f"{s:g}%" for s in steps)
        pools = {"equal": live, "harmful": harmful}
        result["replay"][key] = {kind: rates(pools[kind], live, stepped, args.runs) for kind in kinds}
        for name, figures in result["replay"][key].items():
            print(f"phase 3, {key}, {name}: " + json.dumps({k: v for k, v in figures.items() if k != "each"}))
    result.update(scenario=args.scenario, seed=args.seed, trained=trained, store=str(args.store or work),
                  train_episodes=None if args.trained or args.store else args.train_episodes,
                  rollout=config.model_dump(), seconds=round(time.monotonic() - started), date=str(date.today()))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"rollout_safety-{args.scenario}-{date.today()}.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
