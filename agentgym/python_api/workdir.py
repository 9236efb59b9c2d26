"""Where a Trainer run keeps its store, registry, logs and results, and how TrainedAgent finds them.

The default is `~/.cache/agentgym/<scenario>` (`$XDG_CACHE_HOME/agentgym/<scenario>` where that is
set), not a folder under the current directory: `TrainedAgent.load("customer_support")` then finds
what `Trainer(scenario="customer_support")` registered from any directory (a notebook, a service,
a script run from elsewhere), and everything in it can be made again by training again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agentgym.scenarios.scenario import scenario_files

REGISTRY = "policies"


def cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "agentgym"


@dataclass(frozen=True)
class Workdir:
    path: Path

    @classmethod
    def of_scenario(cls, name: str) -> Workdir:
        return cls(cache_home() / name)

    @property
    def store(self) -> Path:
        return self.path / "agentgym.duckdb"

    @property
    def registry(self) -> Path:
        return self.path / REGISTRY

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    @property
    def results(self) -> Path:
        """The last Trainer run's results (JSON)."""
        return self.path / "results.json"

    @property
    def served(self) -> Path:
        """The stores of TrainedAgent's in-process proxies."""
        return self.path / "served"


def registry_of(scenario_or_path: str | Path) -> tuple[Path, Workdir | None]:
    """The registry a Trainer run left: a workdir, a registry folder, or a scenario's default
    workdir; FileNotFoundError saying which was looked for."""
    path = Path(scenario_or_path).expanduser()
    if (path / REGISTRY / "index.json").is_file():
        return path / REGISTRY, Workdir(path)
    if (path / "index.json").is_file():
        return path, Workdir(path.parent) if path.name == REGISTRY else None
    if path.exists() or len(path.parts) > 1:
        raise FileNotFoundError(f"{path} holds no AgentGym policy registry (no {REGISTRY}/index.json or index.json)")
    workdir = Workdir.of_scenario(str(scenario_or_path))
    if (workdir.registry / "index.json").is_file():
        return workdir.registry, workdir
    if str(scenario_or_path) not in scenario_files():
        raise FileNotFoundError(f"{scenario_or_path!r} is neither a scenario nor a folder; known scenarios: "
                                f"{', '.join(sorted(scenario_files()))}")
    raise FileNotFoundError(f"no Trainer run for scenario {scenario_or_path!r} in {workdir.path}: run "
                            f"Trainer(scenario={str(scenario_or_path)!r}).train() first, or give its workdir")
