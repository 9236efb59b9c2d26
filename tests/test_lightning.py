"""The Agent Lightning engine (issue 6), on CPU: a real `agl-server` process on loopback, episodes
of the `tiny` scenario recorded through the real proxy in front of the simulated model, the
reward model fitted on that store, the generated VERL configuration, and the dry run.

Needs `agentlightning` (in the `dev` extra); without it these tests are skipped, and say so."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest
import yaml

pytest.importorskip("agentlightning", reason="Agent Lightning is not installed: pip install -e '.[dev]'")

from helpers import KEY, AglServer, report_json  # noqa: E402

from agentgym.config import LightningConfig, RewardModelConfig, load_settings  # noqa: E402
from agentgym.scenarios import local_stack  # noqa: E402
from agentgym.scenarios.agents import run_episodes  # noqa: E402
from agentgym.scenarios.scenario import load_scenario  # noqa: E402
from agentgym.store.queries import Scope  # noqa: E402
from agentgym.trainer.encoder import shared_encoder  # noqa: E402
from agentgym.trainer.lightning import verl_config as verl_module  # noqa: E402
from agentgym.trainer.lightning.contexts import read_contexts  # noqa: E402
from agentgym.trainer.lightning.episodes import export_episodes  # noqa: E402
from agentgym.trainer.lightning.reward_model import NotEnoughData, RewardModel, fit  # noqa: E402
from agentgym.trainer.lightning.verl_config import check_against_agent_lightning, verl_config  # noqa: E402
from agentgym.trainer.rounds import held_out_for_gate  # noqa: E402

EPISODES = 80


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, logs):
    """A store of EPISODES episodes of the `tiny` scenario (two look-alike order tools, only one of which
    works) run by the simulated agents through the real proxy, no planner; and the model server."""
    from conftest import write_tiny  # the scenario the conftest fixture writes, here at module scope

    folder = tmp_path_factory.mktemp("lightning")
    scenario_file = write_tiny(folder)
    model = local_stack.start_model(logs, args=["--scenario", str(scenario_file), "--seed", "3"])
    db = folder / "store.duckdb"
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs)
    try:
        results = asyncio.run(run_episodes(proxy.url, load_scenario(str(scenario_file)), episodes=EPISODES, seed=7,
                                           concurrency=6))
        assert proxy.stop(), proxy.log()
    finally:
        proxy.stop()
    yield {"db": db, "model": model, "results": results, "folder": folder}
    model.stop()


@pytest.fixture(scope="module")
def agl(recorded):
    server = AglServer(recorded["folder"] / "agl", "agentgym-sim")
    yield server
    server.stop()


def _scope() -> Scope:
    return Scope(idle_timeout_s=300.0)


def test_recorded_episodes_become_agent_lightning_rollouts_with_their_events(recorded, agl):
    con = duckdb.connect(str(recorded["db"]), read_only=True)
    try:
        rule = load_settings(None).trainer.reward
        with agl.client() as client:
            done = export_episodes(con, client, _scope(), rule)
            assert done["episodes"] == EPISODES and done["exported"] == EPISODES and done["already_there"] == 0
            again = export_episodes(con, client, _scope(), rule)  # idempotent: nothing doubled
            assert again == {"episodes": EPISODES, "exported": 0, "already_there": EPISODES, "events": 0}

            outcomes = dict(con.execute("SELECT target_id, success FROM feedback WHERE target = 'episode'").fetchall())
            assert len(outcomes) == EPISODES
            inferences = Counter(e for (e,) in con.execute("SELECT episode_id FROM inferences").fetchall())
            calls = dict(con.execute("SELECT id, name FROM tool_calls").fetchall())
            terminal = client.get("/api/rollouts/terminal").json()
            assert terminal["total_terminal"] == EPISODES
            assert {i["rollout_id"] for i in terminal["items"]} == set(outcomes)
            for episode_id, success in outcomes.items():
                detail = client.get(f"/api/rollouts/{episode_id}").json()
                assert detail["rollout"]["status"]["state"] == "succeeded" and detail["attempts"] == ["0"]
                events = client.get(f"/api/rollouts/{episode_id}/events").json()
                kinds = [e["event_type"] for e in events]
                assert kinds.count("model_request") == inferences[episode_id] and kinds[-1] == "reward"
                assert events[-1]["data"]["value"] == (rule.success if success else rule.failure)
                for e in events:
                    if e["event_type"] == "model_request":  # the bodies as the proxy recorded them
                        assert e["data"]["request"]["messages"] and e["data"]["response"]["choices"]
                        assert e["data"]["http_status"] == 200 and e["data"]["status"] == "ok"
                    if e["event_type"] == "tool_result":
                        assert calls[e["data"]["tool_call_id"]] == e["data"]["name"]
                # Agent Lightning's own triplet view keeps the reward (the simulated model returns no token ids)
                triplet = client.get(f"/api/rollouts/{episode_id}/events", params={"format": "triplet"}).json()
                assert [e["data"] for e in triplet if e["event_type"] == "reward"] == [
                    {"value": events[-1]["data"]["value"], "source": "agentgym", "reason": events[-1]["data"]["reason"]}]
            # a call to the deprecated twin is recorded as the error it was
            fetches = [e["data"]["outcome"] for eid in outcomes
                       for e in client.get(f"/api/rollouts/{eid}/events", params={"event_type": "tool_result"}).json()
                       if e["data"]["name"] == "fetch_order_status"]
            assert fetches and set(fetches) == {"error"}
    finally:
        con.close()


def test_the_reward_model_agrees_with_real_outcomes_on_held_out_episodes(recorded, tmp_path):
    con = duckdb.connect(str(recorded["db"]), read_only=True)
    try:
        contexts = read_contexts(con, _scope())
    finally:
        con.close()
    assert len({c.episode_id for c in contexts}) == EPISODES
    # the labels are the recorded outcomes: in `tiny` only get_order_status works
    labelled = [c for c in contexts if c.called and c.call_ok is not None]
    assert {c.called for c in labelled if c.call_ok} == {"get_order_status"}
    assert "fetch_order_status" in {c.called for c in labelled if not c.call_ok}

    encoder = shared_encoder()
    model = fit(contexts, encoder, RewardModelConfig())
    held, train = model.report["held_out"], model.report["train"]
    assert held["examples"] >= 5 and train["examples"] >= 20, model.report
    assert held["accuracy"] >= 0.9 and held["auc"] >= 0.9, model.report
    assert held["accuracy"] > held["majority_accuracy"], model.report  # better than guessing the usual outcome

    # the report's figures, recomputed one held-out call at a time through the scoring path
    held_out = [c for c in labelled if held_out_for_gate(c.episode_id, 0) and c.tool(c.called)]
    p = np.array([model.probability(encoder, c.messages, c.tool(c.called)) for c in held_out])
    y = np.array([c.call_ok for c in held_out])
    assert len(held_out) == held["examples"] and round(float(((p >= 0.5) == y).mean()), 4) == held["accuracy"]
    # on the same held-out context, the tool that works is scored likely to work, its deprecated twin not
    context = held_out[0]
    works = model.probability(encoder, context.messages, context.tool("get_order_status"))
    twin = model.probability(encoder, context.messages, context.tool("fetch_order_status"))
    assert works > 0.5 > twin

    path = tmp_path / "rm.npz"
    model.save(path)
    loaded = RewardModel.load(path)
    assert loaded.report == model.report and loaded.probability(encoder, context.messages,
                                                                 context.tool("get_order_status")) == works

    with pytest.raises(NotEnoughData, match="min_examples"):
        fit(contexts[:10], encoder, RewardModelConfig())
    episode_model = fit(contexts, encoder, RewardModelConfig(target="episode"))
    assert episode_model.report["target"] == "episode" and episode_model.report["held_out"]["auc"] is not None


def test_the_generated_verl_configuration_is_the_documented_one():
    documented = yaml.safe_load(re.search(r"```yaml\n(.*?)```", verl_module.__doc__, re.S).group(1))
    generated = verl_config(LightningConfig(planner_model="Qwen/Qwen2.5-1.5B-Instruct"), Path("/srv/agentgym/run"))
    assert generated == documented
    assert check_against_agent_lightning(generated) == []
    # the key check is real: a 0.x name is caught before any GPU is reserved
    generated["agentlightning"]["trace_aggregator"]["mode"] = "transition"
    assert check_against_agent_lightning(generated) == [
        "agentlightning.trace_aggregator.mode: not a key of the installed Agent Lightning's VERL configuration"]
    # the key is read from the environment when the trainer resolves its configuration, never written
    from omegaconf import OmegaConf

    os.environ["AGENTGYM_TEST_AGL_KEY"] = "secret"
    try:
        config = verl_config(LightningConfig(planner_model="m", key_env="AGENTGYM_TEST_AGL_KEY"), Path("/r"))
        assert "secret" not in json.dumps(config)
        assert OmegaConf.to_container(OmegaConf.create(config), resolve=True)["agentlightning"]["agl_key"] == "secret"
    finally:
        del os.environ["AGENTGYM_TEST_AGL_KEY"]
    with pytest.raises(ValueError, match="planner_model"):
        verl_config(LightningConfig(), Path("/r"))


def test_bad_lightning_configuration_gets_a_clear_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must be an http:// or https:// URL with a host"):
        load_settings(None, lightning={"model_server_url": "localhost:8000"})
    with pytest.raises(ValidationError, match=r"ppo_mini_batch_size \(4\) must divide train_batch_size \(6\)"):
        load_settings(None, lightning={"verl": {"train_batch_size": 6, "ppo_mini_batch_size": 4}})
    with pytest.raises(ValidationError, match="rollouts_per_context"):
        load_settings(None, lightning={"verl": {"rollouts_per_context": 1}})  # GRPO needs a group
    with pytest.raises(ValidationError, match="trace_aggregator"):
        load_settings(None, lightning={"verl": {"trace_aggregator": "trajectory-strict"}})  # a 0.x mode


def _agentgym(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentgym", *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env})


def test_dry_run_checks_everything_and_prints_what_would_run(recorded, agl, tmp_path):
    env = {"AGENTGYM_LIGHTNING__PLANNER_MODEL": "agentgym-sim",
           "AGENTGYM_LIGHTNING__MODEL_SERVER_URL": f"{recorded['model'].url}/v1",
           "AGENTGYM_LIGHTNING__SERVER_URL": agl.url}
    run_dir = tmp_path / "run"
    result = _agentgym("train", "--engine", "lightning", "--dry-run", "--db", str(recorded["db"]), "--run-dir",
                       str(run_dir), "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    status = {c["name"]: c["status"] for c in out["checks"]}
    assert status.pop("training stack") in ("ok", "warn") and status.pop("gpu") in ("ok", "warn")  # the GPU side
    assert out["ok"] and status == {"agentlightning": "ok", "planner": "ok", "store": "ok", "dataset": "ok",
                                    "reward model": "ok", "verl config": "ok", "replay agent": "ok",
                                    "agl-server": "ok", "model server": "ok"}, out["checks"]
    assert out["dataset"]["contexts"] == out["dataset"]["train_contexts"] + out["dataset"]["val_contexts"] > 20
    assert out["reward_model"]["held_out"]["accuracy"] >= 0.9
    assert out["verl_config"] == verl_config(load_settings(None, lightning={
        "planner_model": "agentgym-sim", "model_server_url": f"{recorded['model'].url}/v1",
        "server_url": agl.url}).lightning, run_dir)
    assert out["commands"][0] == f"agl-server host=127.0.0.1 port={agl.port} key=$AGL_KEY " \
                                 "default_proxy.model_name=agentgym-sim"
    assert out["commands"][2] == f"python -m agentgym.trainer.lightning.launch {run_dir.absolute()}"
    assert not run_dir.exists()  # a dry run writes nothing

    # the table a person reads; nothing listening: reported, not fatal
    down = {**env, "AGENTGYM_LIGHTNING__SERVER_URL": f"http://127.0.0.1:{local_stack.free_port()}"}
    table = _agentgym("train", "--engine", "lightning", "--dry-run", "--db", str(recorded["db"]), env=down)
    assert table.returncode == 0, table.stderr
    assert "unreachable" in table.stdout and "would run" in table.stdout and "per_rollout_mean" in table.stdout

    # no planner named: refused, with the reason
    missing = _agentgym("train", "--engine", "lightning", "--dry-run", "--db", str(recorded["db"]), "--format", "json",
                        env={"AGENTGYM_LIGHTNING__SERVER_URL": agl.url})
    assert missing.returncode == 1
    failed = {c["name"]: c["detail"] for c in json.loads(missing.stdout)["checks"] if c["status"] == "fail"}
    assert set(failed) == {"planner", "verl config"} and "lightning.planner_model" in failed["planner"]


def test_prepare_writes_the_run_the_replay_agent_reads(recorded, tmp_path):
    from agentgym.trainer.lightning.replay_agent import replay_row, score

    env = {"AGENTGYM_LIGHTNING__PLANNER_MODEL": "agentgym-sim",
           "AGENTGYM_LIGHTNING__MODEL_SERVER_URL": f"{recorded['model'].url}/v1"}
    run_dir = tmp_path / "run"
    result = _agentgym("train", "--engine", "lightning", "--db", str(recorded["db"]), "--run-dir", str(run_dir),
                       "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    prepared = json.loads(result.stdout)["prepared"]
    split = json.loads((run_dir / "split.json").read_text())
    assert prepared["train"] == len(split["train"]) and prepared["val"] == len(split["val"]) and split["val"]
    row = replay_row(run_dir / "replay.jsonl", split["val"][0])
    model = RewardModel.load(run_dir / "reward_model.npz")
    encoder = shared_encoder()
    reward_of = lambda messages, function: model.probability(encoder, messages, function)  # noqa: E731
    call = lambda name: {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",  # noqa: E731
                                                                "function": {"name": name, "arguments": "{}"}}]}
    assert score(call("get_order_status"), row, reward_of)[0] > 0.5 > score(call("fetch_order_status"), row, reward_of)[0]
    assert score(call("get_order_status"), row, reward_of)[1] == "forced get_order_status"
    assert score(call("delete_everything"), row, reward_of)[0] == 0.0  # not offered: unusable
    assert "'hi' was not offered" in score({"role": "assistant", "content": "hi"}, row, reward_of)[1]
    # left to the agent's model: what it called in the recording, if among the tools left, else their mean
    left_all = score({"role": "assistant", "content": "any"}, row, reward_of)
    assert left_all == (reward_of(row["messages"], next(t["function"] for t in row["tools"]
                                                        if t["function"]["name"] == row["called"])),
                        f"defer: the model called {row['called']}")
    others = [t["function"] for t in row["tools"] if t["function"]["name"] != row["called"]][:2]
    offered = score({"role": "assistant", "content": ", ".join(f["name"] for f in others)}, row, reward_of)
    assert offered[0] == pytest.approx(sum(reward_of(row["messages"], f) for f in others) / 2)
    overrides = yaml.safe_load((run_dir / "verl_overrides.yaml").read_text())
    assert overrides["agentlightning"]["local"]["env_map"]["AGENTGYM_REPLAY_FILE"] == str(run_dir / "replay.jsonl")

    # the report shows the reward model's agreement with real outcomes on held-out episodes
    shown = report_json(str(recorded["db"]))["reward_model"]
    assert shown["by"] == "agentgym train --engine lightning" and shown["target"] == "call"
    assert shown["held_out"] == {k: model.report["held_out"][k] for k in shown["held_out"]}
    assert shown["train_examples"] == model.report["train"]["examples"] and shown["held_out"]["accuracy"] >= 0.9
    table = _agentgym("report", "--db", str(recorded["db"]), env={"COLUMNS": "250"})
    assert f"AUC {shown['held_out']['auc']}" in table.stdout and "Reward model (call outcomes" in table.stdout


def test_replay_rollouts_run_by_agl_controller_complete_with_the_reward_models_rewards(recorded, tmp_path):
    """What VERL's trainer does each step, minus the GPU: Agent Lightning's own rollout manager
    (the class its trainer uses) registers the model server, enqueues replay rollouts of recorded
    contexts with the generated configuration's agent and env_map, and waits; the real agl-controller
    starts a ReplayAgent per rollout; each asks the planner through the gateway and posts its reward."""
    from agentlightning.verl.agl_rollout_manager import AglRolloutManager
    from helpers import ThreadServer, token_ids_app

    from agentgym.proxy.llm_planner import planner_request

    from agentgym.trainer.lightning.launch import prepare

    settings = load_settings(None, store={"path": str(recorded["db"])},
                             lightning={"planner_model": "agentgym-sim", "model_server_url": "http://127.0.0.1:1/v1"})
    run_dir = tmp_path / "run"
    prepare(settings, run_dir)
    al = verl_config(settings.lightning, run_dir)["agentlightning"]
    model = RewardModel.load(run_dir / "reward_model.npz")
    val = json.loads((run_dir / "split.json").read_text())["val"][:3]
    from agentgym.trainer.lightning.replay_agent import replay_row

    rows = {i: replay_row(run_dir / "replay.jsonl", i) for i in val}

    server = AglServer(tmp_path / "agl", "agentgym-sim")
    controller_log = tmp_path / "controller.log"
    with controller_log.open("wb") as log:
        controller = subprocess.Popen(
            [str(Path(sys.executable).parent / "agl-controller"), "runner_type=local", f"agl_server.url={server.url}",
             f"agl_server.key={KEY}", "local_runner.poll_interval=0.5", f"hydra.run.dir={tmp_path / 'ctl'}"],
            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        with ThreadServer(token_ids_app()) as stand_in:
            manager = AglRolloutManager(
                agl_base_url=server.url, agl_key=KEY, model="agentgym-sim", step=1, train_rollout_n=2,
                rollout_timeout_seconds=120, poll_interval_seconds=0.5, local_agent_class=al["local"]["agent_class"],
                local_env_map=al["local"]["env_map"])
            manager.register_model([f"{stand_in.url}/v1"])
            completed = manager.enqueue_and_wait_until_completed(
                {"data_id": np.array(val, dtype=object),
                 "episode_id": np.array([rows[i]["episode_id"] for i in val], dtype=object)}, is_train=True)
        assert len(completed) == 2 * len(val)
        encoder = shared_encoder()
        for rollout in completed:
            assert rollout.rollout_state == "succeeded", (rollout.error_message, controller_log.read_text()[-3000:])
            row = rows[rollout.input["data_id"]]
            [request] = [e for e in rollout.events if e["event_type"] == "model_request"]
            # the gateway asked the production planner's question on the recorded conversation and tools,
            # asked for token ids, and got them
            question = planner_request(row["messages"], [t["function"] for t in row["tools"]])
            assert request["data"]["request"]["messages"] == question["messages"]
            assert request["data"]["request"]["tools"] == question["tools"]
            assert request["data"]["request"]["return_token_ids"] is True
            answer = request["data"]["response"]["choices"][0]["message"]
            name = answer["tool_calls"][0]["function"]["name"]
            function = next(t["function"] for t in row["tools"] if t["function"]["name"] == name)
            assert rollout.final_reward == pytest.approx(model.probability(encoder, row["messages"], function))
            [triplet] = rollout.triplets  # one planner call per replay: one turn, carrying the rollout's reward
            assert triplet.reward == rollout.final_reward
            assert triplet.response["token_ids"] and len(triplet.response["log_probs"]) == len(
                triplet.response["token_ids"])
        assert len({r.final_reward for r in completed}) > 1  # the planner's choices differ, and so do their rewards
    finally:
        controller.terminate()
        controller.wait(20)
        server.stop()
