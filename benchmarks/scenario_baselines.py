"""Untrained figures per scenario, through the real proxy, and the simulator's throughput.

For each scenario: the simulated model (with the scenario's knobs) and `agentgym serve` as
processes, N episodes of simulated agents through the proxy, then the proxy's own report:
tool-call success, episode success, prompt tokens per request; and episodes per second.

    .venv/bin/python benchmarks/scenario_baselines.py [--episodes 500] [--seed 0] [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import date
from pathlib import Path

from agentgym.config import load_settings
from agentgym.dashboards.report_source import fetch_report
from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario, scenario_files
from agentgym.store.queries import Scope

RESULTS = Path(__file__).parent / "results"


def measure(name: str, episodes: int, seed: int, concurrency: int) -> dict:
    scenario = load_scenario(name)
    work = Path(tempfile.mkdtemp(prefix=f"baseline-{name}-"))
    model = local_stack.start_model(work, args=["--scenario", name, "--seed", str(seed)])
    proxy = local_stack.start_proxy(f"{model.url}/v1", work / "store.duckdb", work, env=scenario.proxy_env())
    try:
        started = time.monotonic()
        asyncio.run(run_episodes(proxy.url, scenario, episodes=episodes, seed=seed, concurrency=concurrency))
        elapsed = time.monotonic() - started
        proxy.stop()
    finally:
        proxy.stop()
        model.stop()
    settings = load_settings(store={"path": work / "store.duckdb"})
    report = fetch_report(settings, Scope.configured(settings.episodes), episodes)
    return {
        "scenario": name, "episodes": episodes, "seed": seed,
        "tool_success_rate": report["tool_calls"]["success_rate"],
        "tool_calls": report["tool_calls"]["total"],
        "episode_success_rate": report["episodes"]["success_rate"],
        "prompt_tokens_per_request": report["tokens"]["prompt_per_request"],
        "requests": report["requests"]["total"],
        "episodes_per_second": round(episodes / elapsed, 1),
        "requests_per_second": round(report["requests"]["total"] / elapsed, 1),
        "knobs": scenario.simulator.model_dump(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scenario", action="append")
    args = parser.parse_args()
    rows = []
    print("| scenario | episodes | tool-call success | episode success | prompt tokens/request | episodes/s | requests/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.scenario or list(scenario_files()):
        row = measure(name, args.episodes, args.seed, args.concurrency)
        rows.append(row)
        print(f"| {name} | {row['episodes']} | {row['tool_success_rate']:.1%} | {row['episode_success_rate']:.1%} | "
              f"{row['prompt_tokens_per_request']:,.0f} | {row['episodes_per_second']} | {row['requests_per_second']} |",
              flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"scenario_baselines-{date.today()}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
