"""Scenario tasks through one framework's `run_task`, run as a program in that framework's Python
(CrewAI has a venv of its own); what each run saw is written as JSON for the test to read.

    python tests/framework_runs.py FRAMEWORK BASE_URL SCENARIO_FILE OUT_FILE '[[task_index, seed, stream], ...]'
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import sys
from pathlib import Path

from agentgym.scenarios.scenario import load_scenario


async def main(framework: str, base_url: str, scenario_file: str, out: str, runs: list[list]) -> None:
    module = importlib.import_module(f"agentgym.integrations.{framework}")
    scenario = load_scenario(scenario_file)
    results = [await module.run_task(base_url, scenario, scenario.tasks[index], seed=seed, stream=stream)
               for index, seed, stream in runs]
    Path(out).write_text(json.dumps([dataclasses.asdict(result) for result in results]))


if __name__ == "__main__":
    framework, base_url, scenario_file, out, runs = sys.argv[1:]
    asyncio.run(main(framework, base_url, scenario_file, out, json.loads(runs)))
