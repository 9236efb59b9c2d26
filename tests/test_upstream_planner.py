"""Upstream mode (issue 6, `lightning.planner: upstream`): the agent's own upstream is the
self-hosted planner model. The real proxy adds no planner call: the simulated agents' requests go
through a real `agl-server`'s gateway to a stand-in model that returns token ids and
log-probabilities, each episode is an Agent Lightning rollout, and the model's tool choice is the
decision. Also: rollouts of episodes that never get feedback are closed after the idle timeout.

Needs `agentlightning` (in the `dev` extra); without it these tests are skipped, and say so."""

from __future__ import annotations

import asyncio
import math
import time
from types import SimpleNamespace

import httpx
import pytest

pytest.importorskip("agentlightning", reason="Agent Lightning is not installed: pip install -e '.[dev]'")

from conftest import stopped_store, write_tiny  # noqa: E402
from helpers import KEY, AglServer, ThreadServer, token_ids_app, wait_for_planner  # noqa: E402

from agentgym.proxy.llm_planner import SYSTEM  # noqa: E402
from agentgym.scenarios import local_stack  # noqa: E402
from agentgym.scenarios.agents import run_episodes  # noqa: E402
from agentgym.scenarios.scenario import load_scenario  # noqa: E402
from agentgym.trainer.registry import LlmSpec, Registry, default_dir  # noqa: E402

MODEL = "agent-llm"  # the agent's model: what agl-server's gateway serves, and every version's name


@pytest.fixture
def stack(tmp_path, logs):
    """agl-server, the agent's self-hosted model (a stand-in answering as vLLM does) and the scenario."""
    agl = AglServer(tmp_path / "agl", MODEL)
    with ThreadServer(token_ids_app()) as model:
        yield SimpleNamespace(agl=agl, model=model, scenario=load_scenario(str(write_tiny(tmp_path, 8))))
    agl.stop()


def _proxy(stack, db, logs, **env: str):
    return local_stack.start_proxy(f"{stack.model.url}/v1", db, logs, env={
        "AGENTGYM_LIGHTNING__PLANNER": "upstream", "AGENTGYM_LIGHTNING__GATEWAY": "true",
        "AGENTGYM_LIGHTNING__PLANNER_MODEL": MODEL, "AGENTGYM_LIGHTNING__SERVER_URL": stack.agl.url, "AGL_KEY": KEY,
        "AGENTGYM_PLANNER__REFRESH_S": "0.2", **env})


def _wait_for_gateway(url: str, version: str) -> None:
    for _ in range(200):
        if httpx.get(f"{url}/readyz", timeout=5).json()["agent_lightning_gateway"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"the gateway was not pointed at {version}")


def _gateway_failures(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    line = next((l for l in text.splitlines() if 'stage="llm_gateway_request"' in l), None)  # noqa: E741
    return float(line.split()[-1]) if line else 0.0


def test_the_agents_own_requests_are_the_rollouts_model_requests_and_its_tool_choice_the_decision(stack, tmp_path,
                                                                                                     logs):
    from agentlightning.schemas import Rollout
    from agentlightning.verl.agl_rollout_manager import AglRolloutManagerBase, EnqueuedRollout

    db = tmp_path / "store.duckdb"
    registry = Registry(default_dir(db))
    proxy = _proxy(stack, db, logs)
    _wait_for_gateway(proxy.url, "upstream")  # no LLM version yet: the gateway serves the agent's upstream itself
    base = asyncio.run(run_episodes(proxy.url, stack.scenario, episodes=3, seed=1, concurrency=3))

    v1 = registry.register_llm(LlmSpec(model=MODEL, server=f"{stack.model.url}/v1"), parent=None,
                               training={"engine": "lightning"}, gate={}).version
    registry.promote(v1, by="test", reason="the agent's model, as a version")
    wait_for_planner(proxy.url, live=v1)
    _wait_for_gateway(proxy.url, v1)
    served = asyncio.run(run_episodes(proxy.url, stack.scenario, episodes=4, seed=2, concurrency=2))

    # the agent gets the model's answer without the training fields the gateway asked for
    answer = httpx.post(f"{proxy.url}/v1/chat/completions", timeout=30, headers={"x-agentgym-episode-id": "plain"},
                        json={"model": "whatever", "tools": stack.scenario.tools,
                              "messages": [{"role": "user", "content": "Where is my order A-1003?"}]}).json()
    assert answer["choices"][0]["message"]["tool_calls"] and "prompt_token_ids" not in answer
    assert not {"token_ids", "logprobs"} & set(answer["choices"][0])

    # what VERL's trainer reads of each finished rollout, by Agent Lightning's own code (its rollout
    # manager's triplet export): every turn of the episode, with token ids and log-probabilities, and the reward
    manager = AglRolloutManagerBase(agl_base_url=stack.agl.url, agl_key=KEY, model=MODEL, step=1)
    exported = {}
    with stack.agl.client() as agl:
        for r in base + served:
            rollout = Rollout.model_validate(agl.get(f"/api/rollouts/{r.episode_id}").json()["rollout"])
            versions = [e["data"]["model_version"] for e in agl.get(f"/api/rollouts/{r.episode_id}/events",
                                                                     params={"event_type": "model_request"}).json()]
            exported[r.episode_id] = (r, rollout, versions, manager._build_completed_rollout(EnqueuedRollout(
                data_id=r.episode_id, rollout_id=rollout.rollout_id, step=1, sample_idx_in_step=0, enqueue_time=0),
                rollout))

    # Agent Lightning's gateway down: the agent's requests go straight upstream, unchanged, and succeed
    stack.agl.stop()
    before = _gateway_failures(proxy.url)
    down = asyncio.run(run_episodes(proxy.url, stack.scenario, episodes=2, seed=3, concurrency=2))
    assert _gateway_failures(proxy.url) - before == sum(r.requests for r in down) > 0
    con = stopped_store(proxy)

    assert {s for (s,) in con.execute("SELECT DISTINCT status FROM inferences").fetchall()} == {200}
    decisions = con.execute("""SELECT d.episode_id, d.policy_version, d.arm, d.action, d.tool, d.propensity, tc.name
                               FROM decisions d LEFT JOIN tool_calls tc ON tc.inference_id = d.inference_id
                               AND tc.position = 0 ORDER BY d.created_at""").fetchall()
    for episode_id, (result, rollout, versions, completed) in exported.items():
        assert rollout.status.state == "succeeded" and completed.rollout_state == "succeeded"
        assert len(versions) == len(completed.triplets) == result.requests > 1  # every turn, each a model request
        assert set(versions) == ({0} if result in base else {int(v1[1:])})  # Agent Lightning's model version
        assert completed.final_reward == (1.0 if result.success else 0.0)  # the episode's outcome, as reward
        assert completed.triplets[-1].reward == completed.final_reward
        for triplet in completed.triplets:
            assert triplet.prompt["token_ids"] and len(triplet.response["log_probs"]) == len(
                triplet.response["token_ids"]) > 0
        ours = [d for d in decisions if d[0] == episode_id]
        if result in base:
            assert not ours  # no version serves: nothing decided
            continue
        # the model's own choice is the decision: the tool it called (or defer, for its answer in words),
        # with the probability of the answer it sampled, from the log-probabilities the gateway recorded
        assert len(ours) == result.requests and {(d[1], d[2]) for d in ours} == {(v1, "live")}
        assert all(d[4] == d[6] and d[3] == ("force" if d[6] else "defer") for d in ours)
        assert [d[5] for d in ours] == pytest.approx([math.exp(sum(t.response["log_probs"]))
                                                      for t in completed.triplets])
    down_decisions = [d for d in decisions if d[0] in {r.episode_id for r in down}]
    assert len(down_decisions) == sum(r.requests for r in down) and {d[5] for d in down_decisions} == {1.0}


def test_rollouts_of_episodes_with_no_feedback_are_closed_after_the_idle_timeout(stack, tmp_path, logs):
    proxy = _proxy(stack, tmp_path / "store.duckdb", logs, AGENTGYM_EPISODES__IDLE_TIMEOUT_S="1")
    _wait_for_gateway(proxy.url, "upstream")
    for episode in ("quiet", "told"):
        answer = httpx.post(f"{proxy.url}/v1/chat/completions", timeout=30, headers={"x-agentgym-episode-id": episode},
                            json={"model": MODEL, "tools": stack.scenario.tools,
                                  "messages": [{"role": "user", "content": "Where is my order A-1003?"}]})
        assert answer.status_code == 200
    assert httpx.post(f"{proxy.url}/v1/feedback", json={"episode_id": "told", "success": True}).status_code == 200
    with stack.agl.client() as agl:
        deadline = time.monotonic() + 20
        while (state := agl.get("/api/rollouts/quiet").json()["rollout"]["status"])["state"] == "running":
            assert time.monotonic() < deadline, "the idle episode's rollout was never closed"
            time.sleep(0.2)
        quiet = agl.get("/api/rollouts/quiet/events").json()
        told = agl.get("/api/rollouts/told").json()["rollout"]["status"]
        told_events = agl.get("/api/rollouts/told/events").json()
    assert stopped_store(proxy) is not None
    # idle with no outcome: failed, and no reward (unknown; Agent Lightning's trainer fills it in by its own rule)
    assert state["state"] == "failed" and "idle for 1 s without feedback" in state["error_message"]
    assert [e["event_type"] for e in quiet] == ["model_request"]
    # the episode told its outcome in time: succeeded, with its reward (and not closed again)
    assert told["state"] == "succeeded" and told_events[-1]["data"]["value"] == 1.0
    assert [e["event_type"] for e in told_events] == ["model_request", "reward"]


def _episode_on(arm: str, tag: str, canary_percent: float) -> str:
    """An episode id the planner puts on `arm` (no control share): its place is a hash of the id."""
    from agentgym.proxy.planner import episode_share

    return next(e for i in range(1000) if (episode_share(e := f"{tag}-{i}") < canary_percent / 100) == (arm == "canary"))


def test_a_trained_version_goes_through_shadow_and_canary_to_the_gateway_and_rollback_moves_it_back(tmp_path, logs):
    """The trained weights, served by their own server and registered as a version, are picked up
    by the proxy: in shadow they are sent the agent's own requests and judged by the reward model,
    the gate starts their canary (served at their server), promoted they are what Agent Lightning's
    gateway serves (its model registry's version 2), and a rollback moves the gateway back."""
    from helpers import PlannerStandIn

    agl = AglServer(tmp_path / "agl", MODEL)
    base, trained = PlannerStandIn(), PlannerStandIn()
    scenario = load_scenario(str(write_tiny(tmp_path, 8)))
    try:
        with ThreadServer(base.app()) as a, ThreadServer(trained.app()) as b:
            stack = SimpleNamespace(agl=agl, model=a)
            db = tmp_path / "store.duckdb"
            registry = Registry(default_dir(db))
            v1 = registry.register_llm(LlmSpec(model=MODEL, server=f"{a.url}/v1"), parent=None, training={},
                                       gate={}).version
            registry.promote(v1, by="test", reason="the agent's model")
            proxy = _proxy(stack, db, logs, AGENTGYM_PLANNER__CONTROL_SHARE="0", AGENTGYM_ROLLOUT__MIN_EPISODES="8",
                           AGENTGYM_ROLLOUT__CHECK_S="0.5", AGENTGYM_ROLLOUT__STEPS="[50]")
            v2 = registry.register_llm(LlmSpec(model=MODEL, server=f"{b.url}/v1"), parent=v1,
                                       training={"engine": "lightning"}, gate={}).version
            registry.start_shadow(v2, by="test", reason="trained")
            wait_for_planner(proxy.url, live=v1, shadow=v2)
            _wait_for_gateway(proxy.url, v1)
            asyncio.run(run_episodes(proxy.url, scenario, episodes=24, seed=4, concurrency=4))
            # in shadow it was sent the agent's own requests (never applied)
            assert trained.asked and all(body["model"] == MODEL and body["messages"][0]["content"] != SYSTEM
                                         and body["tools"] == scenario.tools for body in trained.asked)
            deadline = time.monotonic() + 60
            while registry.index().versions[v2].status == "shadow":  # the proxy's own rollout job judges it
                assert time.monotonic() < deadline, registry.index().versions[v2]
                time.sleep(0.2)
            index = registry.index()
            assert index.versions[v2].status == "canary" and index.canary.percent == 50
            assert "reward-model estimate" in index.versions[v2].history[-1]["reason"]
            wait_for_planner(proxy.url, live=v1, canary=v2)

            def ask(episode: str) -> None:
                answer = httpx.post(f"{proxy.url}/v1/chat/completions", timeout=30,
                                    headers={"x-agentgym-episode-id": episode},
                                    json={"model": "anything", "tools": scenario.tools,
                                          "messages": [{"role": "user", "content": "Where is my order A-1003?"}]})
                assert answer.status_code == 200

            asked = len(trained.asked), len(base.asked)
            ask(canary := _episode_on("canary", "c", 50))  # the canary's episodes: at its own server
            assert (len(trained.asked), len(base.asked)) == (asked[0] + 1, asked[1])
            registry.promote(v2, by="test", reason="canary passed")
            wait_for_planner(proxy.url, live=v2)
            _wait_for_gateway(proxy.url, v2)
            ask(promoted := _episode_on("live", "p", 0))
            registry.rollback(by="test", reason="back")
            wait_for_planner(proxy.url, live=v1)
            _wait_for_gateway(proxy.url, v1)
            ask(rolled_back := _episode_on("live", "r", 0))
            with agl.client() as client:
                versions = {e: [(x["data"]["model_version"], x["data"]["server"]["endpoint"]) for x in client.get(
                    f"/api/rollouts/{e}/events", params={"event_type": "model_request"}).json()]
                    for e in (promoted, rolled_back)}
                assert client.get(f"/api/rollouts/{canary}").status_code == 404  # not through the gateway
            con = stopped_store(proxy)
    finally:
        agl.stop()
    assert versions == {promoted: [(2, f"{b.url}/v1")], rolled_back: [(1, f"{a.url}/v1")]}
    decided = dict(con.execute("SELECT episode_id, policy_version || ' ' || arm FROM decisions WHERE episode_id IN "
                               "($c, $p, $r)", {"c": canary, "p": promoted, "r": rolled_back}).fetchall())
    assert decided == {canary: f"{v2} canary", promoted: f"{v2} live", rolled_back: f"{v1} live"}
