"""The simulated model's untrained figures per scenario, in-process (no HTTP), for setting its knobs.

The published figures are measured through the real proxy (benchmarks/scenario_baselines.py);
this loop calls the same SimulatedModel and Environment directly, so knobs can be searched fast.

With `--oracle`, a planner that knows the task names the next step's tool in `tool_choice`
whenever that step's argument values are in the conversation (and leaves the model to choose
otherwise): the ceiling of any tool-selection policy with this model. It is meaningful where a
task's values are said verbatim (customer_support); where the model derives them (a date
reworded, a computed amount) the oracle keeps forcing a step whose values it cannot see.

    .venv/bin/python benchmarks/simulator_calibration.py [--episodes 300] [--scenario NAME] [--knob k=v] [--oracle]
"""

from __future__ import annotations

import argparse
import asyncio
import random

from agentgym.scenarios.agents import run_episode
from agentgym.scenarios.framework_tools import TaskTools
from agentgym.scenarios.scenario import load_scenario, scenario_files
from agentgym.scenarios.simulated_model import ModelKnobs, SimulatedModel


def _said(values: object, conversation: str) -> bool:
    return all(_said(v, conversation) for v in values) if isinstance(values, list) else str(values) in conversation


async def measure(name: str, episodes: int, seed: int, overrides: dict[str, str], oracle: bool = False
                  ) -> dict[str, float]:
    scenario = load_scenario(name)
    knobs = ModelKnobs.model_validate({**scenario.simulator.model_dump(), **overrides})
    model = SimulatedModel(knobs, seed)
    rng = random.Random(seed)
    calls = errors = successes = requests = 0
    for _ in range(episodes):
        task, episode_seed = rng.choice(scenario.tasks), rng.getrandbits(31)
        tools = TaskTools(scenario, task)

        async def complete(messages, episode_seed=episode_seed, tools=tools):
            payload = {"messages": messages, "tools": scenario.tools, "seed": episode_seed}
            if oracle and (step := tools.env.next_step) is not None and _said(list(step.arguments.values()), " ".join(
                    str(m.get("content")) for m in messages if m.get("role") in ("user", "tool"))):
                payload["tool_choice"] = {"type": "function", "function": {"name": step.tool}}
            return model.answer(payload)[0], None, 0

        result = await run_episode(complete, scenario, task, tools=tools)
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
    parser.add_argument("--oracle", action="store_true", help="force the task's next tool once its values are said")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.knob)
    for name in args.scenario or list(scenario_files()):
        figures = asyncio.run(measure(name, args.episodes, args.seed, overrides, args.oracle))
        print(f"{name:18s} " + "  ".join(f"{k} {v:.3f}" for k, v in figures.items()), flush=True)


if __name__ == "__main__":
    main()
