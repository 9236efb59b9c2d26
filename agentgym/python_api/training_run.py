"""`Trainer`: a planner trained against a scenario's simulator, through a real proxy and a framework's agent loop.

What `agentgym demo` runs, driven from Python: the simulated model and `agentgym serve` as
processes on loopback (`agentgym.scenarios.local_stack`), the scenario's reward rule and seeds
(`Scenario.learning_env`), and agents running the scenario's tasks with the framework's own loop
(`agentgym.integrations.<framework>.run_task`), each task an episode with its outcome as feedback.
The Trainer drives the rounds itself: one before the first episode (the zero-shot version), then
one after every `train_every` episodes (`POST /admin/train`, as `agentgym train --once` beside a
running proxy), so each stretch of episodes is served by the version the last round left live,
however fast the machine is. A version that passes the gate goes live at once (`trainer.promote:
auto`: a simulator has no users to protect; `config={"trainer": {"promote": "rollout"}}` runs the
shadow and canary steps instead). The curve is the proxy's own report (`timeline`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, computed_field
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from agentgym.config import Settings, load_settings
from agentgym.dashboards.report_source import fetch_report
from agentgym.python_api.frameworks import framework_module
from agentgym.python_api.workdir import Workdir
from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import MODEL
from agentgym.scenarios.scenario import Scenario, load_scenario
from agentgym.store.queries import Scope
from agentgym.trainer.cli_rounds import round_once
from agentgym.trainer.registry import Index, Registry

log = logging.getLogger(__name__)

DEVICES = {"auto": "auto", True: "cuda", False: "cpu"}


class Window(BaseModel):
    """One window of the report's `timeline`: consecutive finished episodes and their figures."""

    model_config = ConfigDict(extra="ignore")

    first_episode_at: str | None
    last_episode_at: str | None
    episodes: int
    tool_success_rate: float | None
    episode_success_rate: float | None
    prompt_tokens_per_request: float | None
    policy_versions: list[str | None]


class TrainingResults(BaseModel):
    """What a Trainer run did; also written to `<workdir>/results.json`."""

    scenario: str
    framework: str
    model: str
    episodes: int
    failed_runs: int  # episodes whose agent run raised (or timed out): reported to the proxy as failures
    seconds: float
    curve: list[Window]
    versions_trained: list[str]  # registered by this run's rounds (passed the gate or not)
    versions_promoted: list[str]  # made live during this run
    live_version: str | None  # the version in charge at the end: what TrainedAgent.load(..., "latest") serves
    workdir: Path
    store: Path
    registry: Path

    @computed_field
    @property
    def final(self) -> Window | None:
        """The last window: how the planner in charge at the end does."""
        return self.curve[-1] if self.curve else None


def config_env(config: Mapping[str, Any]) -> dict[str, str]:
    """Overrides shaped as agentgym.yaml (`{"trainer": {"gate_margin": 0.02}}`) as the AGENTGYM_*
    variables the proxy process reads; checked against the configuration's schema here first, so
    that a typo fails in the caller rather than in the proxy's log."""
    load_settings(**config)
    env = {}
    for section, values in config.items():
        annotation = Settings.model_fields[section].annotation
        if isinstance(values, Mapping) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            env.update({f"AGENTGYM_{section.upper()}__{key.upper()}": _env_value(v) for key, v in values.items()})
        else:
            env[f"AGENTGYM_{section.upper()}"] = _env_value(values)
    return env


def _env_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


class Trainer:
    """Train a planner for `scenario` (a library name, a file or `module:Class`) with `framework`'s
    agent loop ("openai", "langchain", "openai_agents", "autogen", "crewai").

    `gpu`: "auto" (CUDA if torch sees it), True (CUDA, required) or False (CPU): the trainer's device.
    `episodes` (default: the scenario's `training.episodes`), `train_every` (a round every so many
    episodes; default the scenario's schedule, but at least two rounds in a short run), `window`
    (episodes per point of the curve; default `train_every`, a point per version served),
    `workdir` (default `~/.cache/agentgym/<scenario>`; a run in a workdir that has one carries on
    from its live version), `model` (what the agents ask for; the simulator answers any name),
    `config`: agentgym.yaml-shaped overrides for the proxy (`{"trainer": {"steps": 30}}`).
    """

    def __init__(self, scenario: str = "customer_support", framework: str = "openai",
                 gpu: bool | Literal["auto"] = "auto", *, episodes: int | None = None, seed: int = 0,
                 concurrency: int = 8, train_every: int | None = None, window: int | None = None,
                 workdir: str | Path | None = None, model: str = MODEL, config: Mapping[str, Any] | None = None,
                 progress: bool = True, episode_timeout_s: float = 120.0) -> None:
        if gpu not in DEVICES:
            raise ValueError(f"gpu must be 'auto', True or False, not {gpu!r}")
        self.scenario_ref = scenario
        self.scenario: Scenario = load_scenario(scenario)
        self.framework = framework
        self.run_task = framework_module(framework).run_task
        self.device = DEVICES[gpu]
        self.episodes = episodes or self.scenario.training.episodes
        self.train_every = train_every or self.scenario.round_every(self.episodes)
        self.window = window or self.train_every
        self.seed, self.concurrency, self.model = seed, concurrency, model
        self.workdir = Workdir(Path(workdir)) if workdir is not None else Workdir.of_scenario(self.scenario.name)
        self.config_env = config_env(config or {})
        self.progress = progress
        self.episode_timeout_s = episode_timeout_s

    def train(self) -> TrainingResults:
        """Run it (minutes for thousands of episodes); in a running event loop (a notebook) it runs
        on a thread of its own."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return self._train()
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(self._train).result()

    def _proxy_env(self) -> dict[str, str]:
        return {**self.scenario.proxy_env(), **self.scenario.learning_env(self.seed),
                "AGENTGYM_TRAINER__ENABLED": "false",  # this Trainer runs the rounds
                "AGENTGYM_TRAINER__PROMOTE": "auto", "AGENTGYM_TRAINER__DEVICE": self.device,
                "AGENTGYM_PLANNER__POLICIES_DIR": str(self.workdir.registry), **self.config_env}

    def _train(self) -> TrainingResults:
        if self.device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("Trainer(gpu=True) needs a CUDA device, and torch sees none: use gpu='auto'")
        work = self.workdir
        work.logs.mkdir(parents=True, exist_ok=True)
        settings = load_settings(store={"path": work.store}, planner={"policies_dir": work.registry})
        registry = Registry(work.registry)
        started, clock = datetime.now(UTC), time.monotonic()
        model = local_stack.start_model(work.logs, args=["--scenario", self.scenario_ref, "--seed", str(self.seed)])
        proxy = None
        try:
            proxy = local_stack.start_proxy(f"{model.url}/v1", work.store, work.logs, env=self._proxy_env())
            failed = self._drive(f"{proxy.url}/v1", settings, registry, started)
            if not proxy.stop():
                raise RuntimeError(f"the proxy did not shut down cleanly; its log:\n{proxy.log()}")
        finally:
            if proxy is not None:
                proxy.stop()
            model.stop()
        report = fetch_report(settings, Scope.configured(settings.episodes, started), self.window)
        index = registry.index()
        results = TrainingResults(
            scenario=self.scenario.name, framework=self.framework, model=self.model, episodes=self.episodes,
            failed_runs=failed,
            seconds=round(time.monotonic() - clock, 1), curve=report["timeline"],
            versions_trained=_trained_since(index, started), versions_promoted=_promoted_since(index, started),
            live_version=index.live, workdir=work.path, store=work.store, registry=work.registry)
        work.results.write_text(results.model_dump_json(indent=1))
        return results

    def _drive(self, base_url: str, settings: Settings, registry: Registry, started: datetime) -> int:
        """The episodes, `concurrency` at a time, with a round before them (when nothing is live yet)
        and after every `train_every`; how many agent runs failed."""
        rng = random.Random(self.seed)
        plan = [(rng.choice(self.scenario.tasks), rng.getrandbits(31)) for _ in range(self.episodes)]
        tally = {"done": 0, "success": 0, "failed": 0}
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[figures]}"), TimeElapsedColumn(),
                            console=Console(stderr=True), disable=not self.progress)
        bar = progress.add_task(f"{self.scenario.name} / {self.framework}", total=self.episodes, figures="")

        def show() -> None:
            index = registry.index()
            done = max(tally["done"], 1)
            progress.update(bar, completed=tally["done"], figures=(
                f"success {tally['success'] / done:.0%}  trained {len(_trained_since(index, started))}  "
                f"promoted {len(_promoted_since(index, started))}  live {index.live or '-'}"))

        async def one(limit: asyncio.Semaphore, task: Any, seed: int) -> None:
            async with limit:
                try:
                    result = await asyncio.wait_for(self.run_task(base_url, self.scenario, task, model=self.model,
                                                                  seed=seed), self.episode_timeout_s)
                    tally["success"] += result.success
                except Exception:  # noqa: BLE001 - one agent run failing is one failed episode, not the end
                    if not tally["failed"]:
                        log.warning("an agent run of task %s failed (later failures are counted only)", task.id,
                                    exc_info=True)
                    tally["failed"] += 1
                tally["done"] += 1
                show()

        async def run() -> None:
            limit = asyncio.Semaphore(self.concurrency)
            if registry.index().live is None:
                await asyncio.to_thread(round_once, settings)
            for first in range(0, self.episodes, self.train_every):
                await asyncio.gather(*(one(limit, *item) for item in plan[first:first + self.train_every]))
                if tally["failed"] == tally["done"]:
                    raise RuntimeError(f"every agent run failed ({tally['failed']}); see the warning logged above "
                                       f"and the logs in {self.workdir.logs}")
                if first + self.train_every < self.episodes:
                    await asyncio.to_thread(round_once, settings)
                    show()

        with progress:
            show()
            asyncio.run(run())
        return tally["failed"]


def _trained_since(index: Index, started: datetime) -> list[str]:
    return [v.version for v in index.versions.values()
            if v.created_at >= started.timestamp() and v.engine != "zero-shot"]


def _promoted_since(index: Index, started: datetime) -> list[str]:
    return [v.version for v in index.versions.values()
            if any(h["to"] == "live" and h["at"] >= started.timestamp() for h in v.history)]
