"""The learning loop through the real proxy and simulator: episodes vs tool-call success,
episode success and prompt tokens, as the proxy's own trainer trains and swaps versions in.

The simulated model and `agentgym serve` (trainer enabled on the scenario's schedule and
reward rule) run as processes; simulated agents run `--episodes` in chunks of `--chunk`,
and after each chunk the figures of that chunk and the live version are written down. The
first chunk runs through a proxy with the planner off: the untrained baseline.

    .venv/bin/python benchmarks/learning_curve.py [--scenario customer_support] [--episodes 3000] [--chunk 200]
        [--seed 0]

With `--env AGENTGYM_PLANNER__ENABLED=false` the whole curve runs with the planner off: the
untrained model on the same episodes (chunk i draws seed + 1 + i either way), the control to
compare a trained curve's chunks with.

Writes benchmarks/results/learning_curve-SCENARIO-DATE.json and, with matplotlib, a .png (a run
with another seed or `--env` settings gets them in its name:
learning_curve-SCENARIO-DATE-seed1-planner.enabled=false.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import date
from pathlib import Path

from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario
from agentgym.trainer.registry import Registry, default_dir

RESULTS = Path(__file__).parent / "results"


def figures(results) -> dict:
    calls = sum(r.tool_calls for r in results)
    requests = sum(r.requests for r in results)
    return {"tool_success": round(1 - sum(r.tool_errors for r in results) / max(calls, 1), 4),
            "episode_success": round(sum(r.success for r in results) / len(results), 4),
            "prompt_tokens_per_request": round(sum(r.prompt_tokens for r in results) / max(requests, 1), 1)}


def curve(name: str, episodes: int, chunk: int, seed: int, extra_env: dict[str, str]) -> dict:
    scenario = load_scenario(name)
    work = Path(tempfile.mkdtemp(prefix=f"curve-{name}-"))
    model = local_stack.start_model(work, args=["--scenario", name, "--seed", str(seed)])
    plain = local_stack.start_proxy(f"{model.url}/v1", work / "plain.duckdb", work,
                                    env={**scenario.proxy_env(), "AGENTGYM_PLANNER__ENABLED": "false"})
    # each version that passes the gate goes live at once: the curve measures learning, not the rollout's pace
    env = {**scenario.proxy_env(), **scenario.learning_env(seed), "AGENTGYM_TRAINER__PROMOTE": "auto", **extra_env}
    db = work / "store.duckdb"
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, work, env=env)
    registry = Registry(default_dir(db))
    points = []
    try:
        baseline = figures(asyncio.run(run_episodes(plain.url, scenario, episodes=chunk, seed=seed, concurrency=8)))
        plain.stop()
        started = time.monotonic()
        for i in range(episodes // chunk):
            results = asyncio.run(run_episodes(proxy.url, scenario, episodes=chunk, seed=seed + 1 + i, concurrency=8))
            point = {"episodes": (i + 1) * chunk, "live": registry.index().live, **figures(results),
                     "seconds": round(time.monotonic() - started, 1)}
            points.append(point)
            print(json.dumps(point), flush=True)
        proxy.stop()
    finally:
        plain.stop()
        proxy.stop()
        model.stop()
    versions = [{"version": v.version, "status": v.status, "engine": v.engine, "gate": v.gate,
                 "decisions": v.training.get("decisions"), "train_seconds": v.training.get("seconds")}
                for v in registry.index().versions.values()]
    return {"scenario": name, "date": date.today().isoformat(), "seed": seed, "chunk": chunk,
            "untrained": baseline, "curve": points, "versions": versions, "env": extra_env}


def plot(result: dict, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    xs = [p["episodes"] for p in result["curve"]]
    fig, left = plt.subplots(figsize=(8, 4.5))
    left.plot(xs, [p["tool_success"] for p in result["curve"]], label="tool-call success")
    left.plot(xs, [p["episode_success"] for p in result["curve"]], label="episode success")
    left.axhline(result["untrained"]["tool_success"], linestyle=":", color="grey", label="untrained tool-call success")
    left.set_xlabel("episodes")
    left.set_ylim(0, 1)
    right = left.twinx()
    right.plot(xs, [p["prompt_tokens_per_request"] for p in result["curve"]], color="tab:red", alpha=0.5,
               label="prompt tokens / request")
    right.set_ylabel("prompt tokens / request")
    left.legend(loc="lower left")
    left.set_title(f"{result['scenario']}: learning through the proxy (seed {result['seed']}, {result['date']})")
    fig.tight_layout()
    fig.savefig(path)
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", default="customer_support")
    parser.add_argument("--episodes", type=int, default=3000)
    parser.add_argument("--chunk", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--env", action="append", default=[], help="AGENTGYM_...=value for the proxy")
    args = parser.parse_args()
    result = curve(args.scenario, args.episodes, args.chunk, args.seed, dict(e.split("=", 1) for e in args.env))
    RESULTS.mkdir(exist_ok=True)
    # a run with settings of its own (the control: planner.enabled=false) or another seed is named for them,
    # beside the default run
    settings = "".join(f"-{k.removeprefix('AGENTGYM_').lower().replace('__', '.')}={v}" for k, v in result["env"].items())
    seed = f"-seed{args.seed}" if args.seed else ""
    stem = f"learning_curve-{args.scenario}-{result['date']}{seed}{settings}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1, default=str))
    if plot(result, RESULTS / f"{stem}.png"):
        print(f"curve: {RESULTS / f'{stem}.png'}")


if __name__ == "__main__":
    main()
