"""Framework runs for the integration tests: run in the framework's own Python, what the proxy
recorded of them, and a proxy whose live policy forces one tool.

The tests run a framework's own agent loop through a real proxy, stop it, and compare what its
store holds for the run's episode with what the run itself saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb

from agentgym.scenarios.framework_tools import TaskResult, ToolRun
from agentgym.scenarios.local_stack import Service
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.registry import Registry, default_dir
from helpers import forcing, register_policy, wait_for_planner

ROOT = Path(__file__).parents[1]


@dataclass
class Recorded:
    links: set[str]  # how the proxy linked each request to the episode
    streamed: list[bool]  # per request, in order
    seeds: list[int | None]  # the sampling seed each request carried
    calls: list[tuple[str, str | None]]  # (tool, outcome), in order; None: its result never came back
    feedback: list[bool | None]  # success, per feedback sent
    decisions: list[tuple[str, str, str, str | None]]  # (version, arm, action, forced tool), in order
    offered_tools: int  # requests that offered tools

    @property
    def outcomes(self) -> list[str | None]:
        return [outcome for _, outcome in self.calls]


def recorded(con: duckdb.DuckDBPyConnection, episode_id: str) -> Recorded:
    """Everything recorded for the episode, read from a stopped proxy's store."""
    rows = con.execute("SELECT episode_link, stream, request::JSON->>'seed', tools_offered FROM inferences "
                       "WHERE episode_id = ? ORDER BY created_at", [episode_id]).fetchall()
    calls = con.execute("SELECT c.name, r.outcome FROM tool_calls c LEFT JOIN tool_results r ON r.tool_call_id = c.id "
                        "WHERE c.episode_id = ? ORDER BY c.created_at, c.position", [episode_id]).fetchall()
    feedback = con.execute("SELECT success FROM feedback WHERE episode_id = ?", [episode_id]).fetchall()
    decisions = con.execute("SELECT policy_version, arm, action, tool FROM decisions WHERE episode_id = ? "
                            "ORDER BY created_at", [episode_id]).fetchall()
    return Recorded({link for link, *_ in rows}, [stream for _, stream, *_ in rows],
                    [None if seed is None else int(seed) for _, _, seed, _ in rows], [tuple(c) for c in calls],
                    [success for (success,) in feedback], [tuple(d) for d in decisions],
                    sum(offered > 0 for *_, offered in rows))


def expected_outcomes(result: TaskResult) -> list[str]:
    """The outcome the proxy should read from each tool result the run sent back."""
    return ["success" if run.ok else "error" for run in result.tool_runs]


def forcing_proxy(start_proxy, tmp_path: Path, tool: str) -> tuple[Service, str]:
    """A proxy whose live version forces `tool` on every request that offers tools, never exploring;
    the proxy and the version."""
    db = tmp_path / "forcing.duckdb"
    registry = Registry(default_dir(db))
    version = register_policy(registry, forcing(shared_encoder().dimensions, tool))
    registry.promote(version, by="test", reason=f"force {tool}")
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__REFRESH_S": "0.1", "AGENTGYM_PLANNER__EPSILON": "0"})
    wait_for_planner(proxy.url, live=version)
    return proxy, version


def framework_python(framework: str) -> Path:
    """The Python that has the framework: CrewAI's own venv (the Makefile makes it), else this one."""
    if framework != "crewai":
        return Path(sys.executable)
    python = ROOT / ".venv-crewai" / "bin" / "python"
    assert python.exists(), f"CrewAI runs in a venv of its own: make {python.parents[1].name}/.installed"
    return python


def framework_env(home: Path) -> dict[str, str]:
    """The agent process's environment: CrewAI's telemetry off (it would wait on servers it cannot
    reach) and its files in `home`."""
    return {**os.environ, "CREWAI_DISABLE_TELEMETRY": "true", "HOME": str(home)}


def run_tasks(framework: str, base_url: str, scenario_file: Path, runs: list[tuple[int, int, bool]],
              workdir: Path) -> list[TaskResult]:
    """(task index, seed, stream) runs through the framework's `run_task`, in its own Python."""
    out = workdir / f"{framework}-runs.json"
    done = subprocess.run([str(framework_python(framework)), str(ROOT / "tests" / "framework_runs.py"), framework,
                           base_url, str(scenario_file), str(out), json.dumps(runs)],
                          capture_output=True, text=True, timeout=300, env=framework_env(workdir), cwd=workdir)
    assert done.returncode == 0, done.stderr[-4000:]
    return [TaskResult(r["episode_id"], r["success"], tuple(ToolRun(**run) for run in r["tool_runs"]))
            for r in json.loads(out.read_text())]
