"""The simulated model's untrained figures per scenario, in-process (no HTTP), for setting its knobs.

The published figures are measured through the real proxy (benchmarks/scenario_baselines.py);
this loop calls the same SimulatedModel and Environment directly, so knobs can be searched fast.

    .venv/bin/python benchmarks/simulator_calibration.py [--episodes 300] [--scenario NAME] [--knob k=v]
"""

from __future__ import annotations

import argparse
import asyncio
import random

from agentgym.scenarios.agents import run_episode
from agentgym.scenarios.scenario import load_scenario, scenario_files
from agentgym.scenarios.simulated_model import ModelKnobs, SimulatedModel


async def measure(name: str, episodes: int, seed: int, overrides: dict[str, str]) -> dict[str, float]:
    scenario = load_scenario(name)
    knobs = ModelKnobs.model_validate({**scenario.simulator.model_dump(), **overrides})
    model = SimulatedModel(knobs, seed)
    rng = random.Random(seed)
    calls = errors = successes = requests = 0
    for _ in range(episodes):
        task, episode_seed = rng.choice(scenario.tasks), rng.getrandbits(31)

        async def complete(messages, episode_seed=episode_seed):
            payload = {"messages": messages, "tools": scenario.tools, "seed": episode_seed}
            return model.answer(payload)[0], None, 0

        result = await run_episode(complete, scenario, task)
        calls, errors = calls + result.tool_calls, errors + result.tool_errors
        successes += result.success
        requests += result.requests
    return {"tool_success": (calls - errors) / max(calls, 1), "episode_success": successes / episodes,
            "calls_per_episode": calls / episodes, "requests_per_episode": requests / episodes}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", action="append")
    parser.add_argument("--knob", action="append", default=[])
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.knob)
    for name in args.scenario or list(scenario_files()):
        figures = asyncio.run(measure(name, args.episodes, args.seed, overrides))
        print(f"{name:18s} " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
