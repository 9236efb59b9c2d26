"""What a scenario is, and where scenarios come from.

A scenario is a deployment in miniature: the tools an agent is offered (OpenAI schemas,
near-duplicates and distractors included), the tasks its users bring (what the simulated
user says, and the tool calls that would resolve it), how an episode is rewarded, which
figures say it went well, and how a planner for it is trained by default.

Scenarios are data. The built-in ones are YAML files in `library/`; those built from public
benchmarks (tau-bench, BFCL) name a builder that reads `../shared/data/` at load time
(nothing is copied into the package). A user adds one as a YAML/JSON file (`--scenario
path/to/file.yaml`, or any file in `$AGENTGYM_SCENARIOS`), or as a Python class
(`--scenario my_module:MyScenario`) whose `build()` returns a `Scenario`.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentgym.config import OutcomeRules, RewardRule
from agentgym.scenarios.simulated_model import ModelKnobs

LIBRARY = Path(__file__).parent / "library"
MIN_ROUND_EPISODES = 50  # fewer finished episodes than this make too small a batch to learn from
SCENARIOS_ENV = "AGENTGYM_SCENARIOS"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Step(Strict):
    """One tool call that resolving a task needs. Known to the environment and the simulated user only."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    result: Any = Field(default_factory=lambda: {"status": "ok"}, description="what the tool returns when called right")
    equivalents: list[str] = Field(
        default_factory=list,
        description="other tools that do the same job (a pooled toolbox's duplicates): given the same values, "
                    "a real backend answers them the same",
    )


class Task(Strict):
    """A user's request. The model sees only what the user says and what the tools return."""

    id: str
    user: str = Field(description="the simulated user's opening message")
    steps: list[Step] = Field(description="the calls that resolve it, in order; empty: no tool should be called")
    follow_ups: list[str] = Field(
        default_factory=list,
        description="further requests the user makes, one each time the agent answers in text with steps left",
    )

    def unreachable_arguments(self) -> list[str]:
        """Checked argument values the model could not find in the conversation (should be none).

        Each value must appear verbatim in what the user says or in an earlier step's result.
        """
        seen = " ".join([self.user, *self.follow_ups])
        missing = []
        for step in self.steps:
            for name, value in step.arguments.items():
                for item in value if isinstance(value, list) else [value]:
                    if str(item) not in seen and (not isinstance(item, bool)):
                        missing.append(f"{step.tool}.{name}={item!r}")
            seen += " " + orjson.dumps(step.result).decode()
        return missing


class TrainingDefaults(Strict):
    episodes: int = 3000
    train_every_episodes: int = 100
    top_k: int = 5
    seed: int = 0


class Scenario(Strict):
    name: str
    title: str
    description: str
    source: str = Field("authored for AgentGym", description="where the tools and tasks come from")
    system_prompt: str
    tools: list[dict[str, Any]]
    tasks: list[Task]
    reward: RewardRule = RewardRule()  # the trainer's `reward:` configuration for this deployment
    metrics: list[str] = ["tool_success_rate", "episode_success_rate", "prompt_tokens_per_request",
                          "cost_per_successful_episode"]
    training: TrainingDefaults = TrainingDefaults()
    simulator: ModelKnobs = Field(ModelKnobs(), description="how good the simulated model is on this scenario")
    outcomes: OutcomeRules | None = Field(
        None, description="how this deployment's tools report failure, where the proxy's default rules would misread "
        "them (a test run's own status: failed); the proxy's `outcomes:` configuration for it")

    @model_validator(mode="after")
    def _tasks_use_offered_tools(self) -> Scenario:
        names = [t.get("function", {}).get("name") for t in self.tools]
        if len(set(names)) != len(names) or None in names:
            raise ValueError("every tool needs a unique function name")
        for task in self.tasks:
            for step in task.steps:
                if step.tool not in names:
                    raise ValueError(f"task {task.id}: step tool {step.tool!r} is not one of the scenario's tools")
        if not self.tasks:
            raise ValueError("a scenario needs at least one task")
        return self

    def proxy_env(self) -> dict[str, str]:
        """Environment for an `agentgym serve` in front of this deployment: its outcome rules, if it has its own."""
        return {"AGENTGYM_OUTCOMES": self.outcomes.model_dump_json()} if self.outcomes else {}

    def learning_env(self, seed: int, every_episodes: int | None = None) -> dict[str, str]:
        """Environment for an `agentgym serve` that runs the whole loop unattended: its trainer on this
        scenario's schedule (or a round every `every_episodes`) and reward rule, trainer and planner seeded."""
        return {"AGENTGYM_TRAINER__ENABLED": "true",
                "AGENTGYM_TRAINER__EVERY_EPISODES": str(every_episodes or self.training.train_every_episodes),
                "AGENTGYM_TRAINER__SEED": str(seed), "AGENTGYM_TRAINER__REWARD": self.reward.model_dump_json(),
                "AGENTGYM_PLANNER__SEED": str(seed)}

    def round_every(self, episodes: int) -> int:
        """Episodes between training rounds in a run of `episodes`: the scenario's schedule, but at
        least two rounds in a short run (the demo, a Trainer), so that it shows the loop."""
        return min(self.training.train_every_episodes, max(MIN_ROUND_EPISODES, episodes // 3))

    @property
    def tool_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "tools": len(self.tools),
            "tasks": len(self.tasks),
            "steps_per_task": round(sum(len(t.steps) for t in self.tasks) / len(self.tasks), 2),
            "source": self.source,
        }


class ScenarioFile(Strict):
    """A scenario file: the scenario itself, or a builder over public data plus what it adds."""

    builder: str | None = Field(None, description="`module:function` that returns the scenario's fields")
    builder_args: dict[str, Any] = Field(default_factory=dict)
    scenario: dict[str, Any] = Field(default_factory=dict)


def data_dir() -> Path:
    """The public benchmark data: $AGENTGYM_DATA, else ../shared/data beside the checkout."""
    configured = os.environ.get("AGENTGYM_DATA")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _read(path: Path) -> dict[str, Any]:
    text = path.read_text()
    return orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def load_file(path: Path) -> Scenario:
    raw = _read(path)
    if "builder" not in raw and "scenario" not in raw:
        return Scenario.model_validate(raw)
    spec = ScenarioFile.model_validate(raw)
    fields = dict(spec.scenario)
    if spec.builder:
        fields = {**_call(spec.builder, **spec.builder_args), **fields}
    return Scenario.model_validate(fields)


def _call(target: str, **kwargs: Any) -> Any:
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)(**kwargs)


def _search_paths() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(SCENARIOS_ENV, "").split(os.pathsep) if p]
    return [*extra, LIBRARY]


def scenario_files() -> dict[str, Path]:
    """Scenario name -> file, user folders first (a user's file can replace a built-in one)."""
    found: dict[str, Path] = {}
    for folder in reversed(_search_paths()):
        for path in sorted(folder.glob("*.y*ml")) + sorted(folder.glob("*.json")):
            found[path.stem] = path
    return found


def load_scenario(name: str) -> Scenario:
    """A scenario by library name, file path, or `module:Class`."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml", ".json") and path.exists():
        return load_file(path)
    if ":" in name:
        return _from_python(name)
    files = scenario_files()
    if name not in files:
        raise KeyError(f"no scenario named {name!r}; known: {', '.join(sorted(files))}")
    return load_file(files[name])



def _from_python(target: str) -> Scenario:
    """`module:attribute`: a Scenario, a class whose instances build() one, or a function returning one."""
    module, _, attribute = target.partition(":")
    obj = getattr(importlib.import_module(module), attribute)
    if isinstance(obj, type):
        obj = obj()
    scenario = obj.build() if hasattr(obj, "build") else obj() if callable(obj) else obj
    if not isinstance(scenario, Scenario):
        raise TypeError(f"{target} must give a Scenario, or a class or function that builds one")
    return scenario
