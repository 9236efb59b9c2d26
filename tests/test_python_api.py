"""The Python API end to end: `Trainer` through a real proxy process and the openai SDK's loop,
`TrainedAgent` serving what it registered through an in-process proxy, and the example script."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import write_tiny
from helpers import forcing, register_policy, report_json
from pydantic import ValidationError

from agentgym import TrainedAgent, Trainer
from agentgym.python_api.training_run import TrainingResults, Window
from agentgym.scenarios.scenario import load_scenario
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
# the module's training runs happen in the first test's setup: 40-80 s on an idle machine, several
# minutes on a loaded two-core one
pytestmark = pytest.mark.timeout(900)
# As tests/test_learning_loop.py: a round every 60 episodes, a first version that explores
LEARNING = {"trainer": {"min_decisions": 40, "zero_shot_defer": 3}, "planner": {"seed": 3}}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> tuple[str, TrainingResults, TrainingResults]:
    """The tiny scenario with the planner off (the untrained model), then trained."""
    folder = tmp_path_factory.mktemp("python_api")
    scenario = str(write_tiny(folder))

    async def in_a_notebook() -> TrainingResults:  # an event loop runs (Jupyter's): train() takes a thread of its own
        return Trainer(scenario, "openai", gpu=False, episodes=60, window=60, seed=1, workdir=folder / "untrained",
                       progress=False, config={"planner": {"enabled": False}}).train()

    untrained = asyncio.run(in_a_notebook())
    trained = Trainer(scenario, "openai", gpu=False, episodes=300, train_every=60, seed=1, workdir=folder / "run",
                      progress=False, config=LEARNING).train()
    return scenario, untrained, trained


def test_a_trainer_run_trains_a_planner_that_beats_the_untrained_model(tiny_runs):
    _, untrained, results = tiny_runs
    assert results.failed_runs == 0 and results.episodes == 300
    # the curve is the proxy's own report, a window per round's episodes, each served by one version
    report = report_json(str(results.store), "--window", "60")
    assert results.curve == [Window.model_validate(w) for w in report["timeline"]]
    assert [w.episodes for w in results.curve] == [60] * 5
    assert results.curve[0].policy_versions == ["v1"] and all(len(w.policy_versions) == 1 for w in results.curve)
    index = Registry(results.registry).index()
    assert results.live_version == index.live and index.versions[index.live].engine == "torch", index
    assert results.live_version in results.versions_promoted and set(results.versions_trained) <= set(index.versions)
    assert TrainingResults.model_validate_json(results.workdir.joinpath("results.json").read_text()) == results
    before = untrained.curve[0].tool_success_rate
    assert untrained.curve[0].episodes == 60 and untrained.curve[0].policy_versions == []  # no policy served
    assert max(w.tool_success_rate for w in results.curve[-2:]) > before + 0.15, (before, results.curve)


def _ask(agent: TrainedAgent, scenario: str):
    tiny = load_scenario(scenario)
    return agent.to_openai().chat.completions.create(model=agent.model, tools=tiny.tools, messages=[
        {"role": "system", "content": tiny.system_prompt}, {"role": "user", "content": tiny.tasks[0].user}])


def _decisions(store: Path) -> list[tuple]:
    con = duckdb.connect(str(store), read_only=True)
    try:
        return con.execute("SELECT policy_version, arm, action FROM decisions").fetchall()
    finally:
        con.close()


def test_the_trained_agent_serves_the_live_version_to_the_openai_sdk(tiny_runs, model):
    scenario, _, results = tiny_runs
    with TrainedAgent.load(results.workdir, upstream=f"{model.url}/v1") as agent:
        assert agent.version == results.live_version and agent.base_url.startswith("http://127.0.0.1:")
        reply = _ask(agent, scenario)
    assert reply.choices[0].message.tool_calls  # the simulated model's answer, through the proxy
    assert agent.store.parent == results.workdir / "served"
    assert [(v, arm) for v, arm, _ in _decisions(agent.store)] == [(results.live_version, "live")]


def test_a_pinned_version_is_served_and_its_decision_reaches_the_sdk(tiny_runs, model):
    """A version that forces a tool the model would not pick, pinned without being promoted."""
    scenario, _, results = tiny_runs
    registry = Registry(results.registry)
    forced = register_policy(registry, forcing(shared_encoder().dimensions, "send_invoice"), parent=results.live_version)
    with TrainedAgent.load(results.registry, version=forced, upstream=f"{model.url}/v1") as agent:
        reply = _ask(agent, scenario)
    assert [call.function.name for call in reply.choices[0].message.tool_calls] == ["send_invoice"]
    assert _decisions(agent.store) == [(forced, "live", "force")]
    assert registry.index().live == results.live_version  # the training registry is untouched


def test_clear_errors(tiny_runs, tmp_path, monkeypatch):
    scenario, _, results = tiny_runs
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(KeyError, match="no scenario named 'no_such_scenario'"):
        Trainer("no_such_scenario")
    with pytest.raises(ValueError, match="unknown framework 'llamaindex'; known: openai, langchain"):
        Trainer(scenario, "llamaindex")
    monkeypatch.setitem(sys.modules, "crewai", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "agentgym.integrations.crewai", raising=False)
    with pytest.raises(ImportError, match=r"pip install 'agentgym\[crewai\]'"):
        Trainer(scenario, "crewai")
    with pytest.raises(ValueError, match="gpu must be"):
        Trainer(scenario, gpu="maybe")
    with pytest.raises(ValidationError, match="no_such_knob"):
        Trainer(scenario, config={"trainer": {"no_such_knob": 1}})
    with pytest.raises(LookupError, match="no version 'v99'; its versions: v1 "):
        TrainedAgent.load(results.workdir, version="v99")
    with pytest.raises(FileNotFoundError, match="holds no AgentGym policy registry"):
        TrainedAgent.load(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="neither a scenario nor a folder"):
        TrainedAgent.load("no_such_scenario")
    with pytest.raises(FileNotFoundError, match="no Trainer run for scenario 'customer_support'"):
        TrainedAgent.load("customer_support")


def test_the_example_trains_loads_and_calls(model, tmp_path):
    """examples/python_api.py as a user runs it: default workdir (here under XDG_CACHE_HOME), the
    configured upstream (here the simulated model)."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "AGENTGYM_UPSTREAM__URL": f"{model.url}/v1",
           "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py"), "50"], capture_output=True,
                         text=True, timeout=600, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    workdir = tmp_path / "agentgym" / "customer_support"
    results = TrainingResults.model_validate_json((workdir / "results.json").read_text())
    assert f"50 episodes in {results.seconds:.0f}s; live {results.live_version}" in run.stdout
    assert f"{results.live_version} served the call" in run.stdout
    (served,) = (workdir / "served").glob("*.duckdb")
    assert {(v, arm) for v, arm, _ in _decisions(served)} == {(results.live_version, "live")}
    assert json.loads((workdir / "results.json").read_text())["curve"]
