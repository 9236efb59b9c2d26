"""The learning loop end to end: real proxy and model processes, the planner, the scheduled
trainer, the registry, hot-swaps under load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import duckdb
import httpx
from helpers import register_policy, wait_for_planner

from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.policy import PolicyWeights
from agentgym.trainer.registry import Registry, default_dir

def _rate(results) -> float:
    calls = sum(r.tool_calls for r in results)
    return 1 - sum(r.tool_errors for r in results) / max(calls, 1)


def test_the_scheduled_trainer_learns_which_tool_works(tiny, logs, tmp_path):
    scenario = load_scenario(str(tiny))
    model = local_stack.start_model(logs, args=["--scenario", str(tiny), "--seed", "1"])
    db = tmp_path / "loop.duckdb"
    reward = json.dumps(scenario.reward.model_dump())
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs, env={
        "AGENTGYM_TRAINER__ENABLED": "true", "AGENTGYM_TRAINER__EVERY_EPISODES": "60",
        "AGENTGYM_TRAINER__MIN_DECISIONS": "40", "AGENTGYM_TRAINER__CHECK_S": "0.3",
        "AGENTGYM_TRAINER__ZERO_SHOT_DEFER": "3", "AGENTGYM_TRAINER__REWARD": reward,
        "AGENTGYM_TRAINER__PROMOTE": "auto", "AGENTGYM_PLANNER__SEED": "3", "AGENTGYM_PLANNER__REFRESH_S": "0.2"})
    registry = Registry(default_dir(db))
    plain = local_stack.start_proxy(f"{model.url}/v1", tmp_path / "plain.duckdb", logs,
                                    env={"AGENTGYM_PLANNER__ENABLED": "false"})
    try:
        untrained = asyncio.run(run_episodes(plain.url, scenario, episodes=120, seed=1, concurrency=6))
        plain.stop()
        rates = []
        for round_ in range(8):
            registered = len(registry.index().versions)
            results = asyncio.run(run_episodes(proxy.url, scenario, episodes=60, seed=10 + round_, concurrency=6))
            rates.append(_rate(results))
            # the round these episodes made due registers a version (live or refused): wait for it, and
            # for the proxy to swap it in, so that each chunk is served by one version however busy the machine
            for _ in range(1200):
                if len(registry.index().versions) > registered:
                    break
                time.sleep(0.1)
            time.sleep(0.5)  # planner.refresh_s is 0.2
        assert proxy.stop(), proxy.log()
    finally:
        plain.stop()
        proxy.stop()
        model.stop()
    index = registry.index()
    trained = [v for v in index.versions.values() if v.engine == "torch"]
    assert trained and all(v.gate["method"] == "snips" and "ci95" in v.gate for v in trained)
    # the outcome term also read earlier versions' decisions; the ratio, only the serving version's
    assert any(v.training["earlier_decisions"] > 0 for v in trained), [v.training for v in trained]
    assert index.live is not None and index.versions[index.live].engine == "torch", index
    assert max(rates[-3:]) > _rate(untrained) + 0.15, (rates, _rate(untrained))
    con = duckdb.connect(str(db), read_only=True)
    served = con.execute("SELECT count(DISTINCT policy_version), count(*) FILTER (action = 'force') FROM decisions"
                         ).fetchone()
    assert served[0] >= 3 and served[1] > 0  # several versions served, and the planner's forcing reached the model


def test_hot_swap_under_load_fails_no_request_and_a_corrupt_version_is_refused(start_proxy, tmp_path):
    db = tmp_path / "swap.duckdb"
    registry = Registry(default_dir(db))
    versions = [register_policy(registry, b_defer=b) for b in (0.0, 5.0)]
    registry.promote(versions[0], by="test", reason="start")
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__REFRESH_S": "0.05"})
    scenario = load_scenario("customer_support")
    body = {"model": "agentgym-sim", "tools": scenario.tools,
            "messages": [{"role": "user", "content": scenario.tasks[0].user}]}

    def call(i: int) -> int:
        return httpx.post(f"{proxy.url}/v1/chat/completions", json={**body, "seed": i}, timeout=30).status_code

    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(call, i) for i in range(300)]
        for flip in range(30):  # promote back and forth while requests are in flight
            registry.promote(versions[flip % 2], by="test", reason="flip")
            asyncio.run(asyncio.sleep(0.02))
        statuses = [f.result() for f in pending]
    assert statuses == [200] * 300
    registry.promote(versions[1], by="test", reason="last good")
    asyncio.run(asyncio.sleep(0.5))
    bad = register_policy(registry, parent=versions[1])
    # the artifact is corrupted on disk before the index names it live (promote itself checks it
    # first, so write the index as a registry whose file rotted afterwards would read)
    (registry.folder / f"{bad}.npz").write_bytes(b"not a policy")
    with registry._editing() as index:
        index.live = bad
    asyncio.run(asyncio.sleep(0.5))
    assert [call(1000 + i) for i in range(20)] == [200] * 20
    assert proxy.stop(), proxy.log()
    con = duckdb.connect(str(db), read_only=True)
    last = con.execute("SELECT policy_version FROM decisions ORDER BY created_at DESC LIMIT 20").fetchall()
    assert {v for (v,) in last} == {versions[1]}, last  # the corrupt version never served; the last good one did
    assert f"policy {bad} refused" in proxy.log()


def _agentgym(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentgym", *args], capture_output=True, text=True, timeout=300)


def test_train_and_policies_from_the_command_line_while_the_proxy_runs(start_proxy, tmp_path):
    """The journey of README's "Learning which tools to offer": a round, a list, a promotion, a
    rollback, all from another process while `agentgym serve` holds the store."""
    db = tmp_path / "cli.duckdb"
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__REFRESH_S": "0.1"})
    first = _agentgym("train", "--once", "--db", str(db))
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"status": "registered", "version": "v1", "promoted": True}
    waiting = json.loads(_agentgym("train", "--once", "--db", str(db)).stdout)
    assert waiting["status"] == "waiting" and waiting["live"] == "v1"  # no decisions of v1 yet
    register_policy(Registry(default_dir(db)), b_defer=30.0, parent="v1")
    listed = json.loads(_agentgym("policies", "list", "--db", str(db), "--format", "json").stdout)
    assert listed["live"] == "v1" and set(listed["versions"]) == {"v1", "v2"}
    promoted = _agentgym("policies", "promote", "v2", "--db", str(db), "--reason", "test")
    assert promoted.returncode == 0 and "v2 is live" in promoted.stdout
    assert _agentgym("policies", "promote", "v9", "--db", str(db)).returncode == 1
    asyncio.run(asyncio.sleep(0.5))
    body = {"model": "agentgym-sim", "tools": load_scenario("customer_support").tools,
            "messages": [{"role": "user", "content": "Cancel order #W1"}]}
    assert httpx.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=30).status_code == 200
    back = _agentgym("policies", "rollback", "--db", str(db))
    assert back.returncode == 0 and "v1 is live" in back.stdout
    shown = json.loads(_agentgym("policies", "show", "v2", "--db", str(db)).stdout)
    assert shown["status"] == "rolled_back" and [h["to"] for h in shown["history"]] == ["live", "rolled_back"]
    started = _agentgym("policies", "promote", "v2", "--canary", "20", "--db", str(db))
    assert started.returncode == 0 and "v2 serves 20% of episodes; v1 the rest" in started.stdout
    status = _agentgym("rollout", "status", "--db", str(db)).stdout
    assert "live: v1, 80% of episodes" in status and "canary: v2, 20% of episodes" in status
    refused = _agentgym("policies", "promote", "v2", "--canary", "150", "--db", str(db))
    assert refused.returncode == 1 and "less than 100%" in refused.stderr
    assert "v1 is live" in _agentgym("policies", "rollback", "--db", str(db)).stdout
    assert "canary: none" in _agentgym("rollout", "status", "--db", str(db)).stdout
    assert proxy.stop(), proxy.log()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT policy_version FROM decisions").fetchall() == [("v2",)]  # served within the refresh


def test_a_canary_serves_its_share_of_episodes_sticky_across_a_restart_and_rolls_back_under_load(start_proxy,
                                                                                                 tmp_path):
    from agentgym.proxy.planner import episode_share

    db = tmp_path / "canary.duckdb"
    registry = Registry(default_dir(db))
    live, candidate = [register_policy(registry, b_defer=b) for b in (0.0, 5.0)]
    registry.promote(live, by="test", reason="start")
    registry.start_canary(candidate, 30, by="test", reason="try it")
    scenario = load_scenario("customer_support")
    body = {"model": "agentgym-sim", "tools": scenario.tools,
            "messages": [{"role": "user", "content": scenario.tasks[0].user}]}

    def call(url: str, episode: str, seed: int) -> int:
        return httpx.post(f"{url}/v1/chat/completions", json={**body, "seed": seed}, timeout=30,
                          headers={"x-agentgym-episode-id": episode}).status_code

    episodes = [f"ep-{i}" for i in range(60)]
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__REFRESH_S": "0.05"})
    wait_for_planner(proxy.url, live=live, canary=candidate)
    assert [call(proxy.url, e, k) for e in episodes[:40] for k in range(2)] == [200] * 80
    assert proxy.stop(), proxy.log()
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__REFRESH_S": "0.05"})  # the canary survives a restart
    wait_for_planner(proxy.url, live=live, canary=candidate)
    assert [call(proxy.url, e, 2) for e in episodes] == [200] * 60  # old episodes again, and new ones
    with ThreadPoolExecutor(8) as pool:  # rollback and a new canary while requests are in flight
        pending = [pool.submit(call, proxy.url, f"load-{i}", i) for i in range(200)]
        for flip in range(10):
            if flip % 2:
                registry.start_canary(candidate, 50, by="test", reason="again")
            else:
                registry.rollback(by="test", reason="flip")
            time.sleep(0.03)
        assert [f.result() for f in pending] == [200] * 200
    registry.rollback(by="test", reason="done")
    time.sleep(0.3)
    assert [call(proxy.url, f"after-{i}", i) for i in range(10)] == [200] * 10
    assert proxy.stop(), proxy.log()

    con = duckdb.connect(str(db), read_only=True)
    served = con.execute("SELECT episode_id, list(DISTINCT arm), list(DISTINCT policy_version) FROM decisions "
                         "WHERE episode_id LIKE 'ep-%' GROUP BY episode_id").fetchall()
    assert len(served) == 60
    expected = {e for e in episodes if episode_share(e) < 0.3}
    assert 8 <= len(expected) <= 28  # the hash spreads episodes as a 30% share should
    for episode, arms, versions in served:  # one arm per episode, before and after the restart
        assert (arms, versions) == ((["canary"], [candidate]) if episode in expected else (["live"], [live])), episode
    after = con.execute("SELECT list(DISTINCT arm), list(DISTINCT policy_version) FROM decisions "
                        "WHERE episode_id LIKE 'after-%'").fetchone()
    assert after == (["live"], [live])  # rolled back: the live version serves every episode
    assert registry.index().canary is None and registry.index().versions[candidate].status == "rolled_back"


def test_the_control_arm_keeps_its_share_of_episodes_free_of_any_policy(start_proxy, tmp_path):
    from agentgym.proxy.planner import episode_share

    db = tmp_path / "control.duckdb"
    registry = Registry(default_dir(db))
    live = register_policy(registry)
    registry.promote(live, by="test", reason="start")
    proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__CONTROL_SHARE": "0.3", "AGENTGYM_PLANNER__REFRESH_S": "0.1"})
    wait_for_planner(proxy.url, live=live)
    body = {"model": "agentgym-sim", "tools": load_scenario("customer_support").tools,
            "messages": [{"role": "user", "content": "Cancel order #W1"}]}
    episodes = [f"c-{i}" for i in range(40)]
    for k, episode in enumerate(episodes):
        response = httpx.post(f"{proxy.url}/v1/chat/completions", json={**body, "seed": k}, timeout=30,
                              headers={"x-agentgym-episode-id": episode})
        assert response.status_code == 200
    assert proxy.stop(), proxy.log()
    con = duckdb.connect(str(db), read_only=True)
    arms = dict(con.execute("SELECT episode_id, arm FROM inferences").fetchall())
    decided = {e for (e,) in con.execute("SELECT DISTINCT episode_id FROM decisions").fetchall()}
    control = {e for e in episodes if episode_share(e) < 0.3}
    assert 4 <= len(control) <= 20 and arms == {e: "control" if e in control else "live" for e in episodes}
    assert decided == set(episodes) - control  # control episodes' requests went out unchanged, undecided



def test_a_shadow_scores_every_request_and_changes_none(start_proxy, tmp_path):
    """The same requests through two proxies serving the same live version, one of them with a
    shadow version that would force a tool: the same decisions and answers; the shadow's recorded."""
    encoder = shared_encoder()
    scenario = load_scenario("customer_support")
    forcing = PolicyWeights.zero_shot(encoder.dimensions)
    forcing.b_force[0] = 30.0
    outputs = []
    for shadowed in (False, True):
        db = tmp_path / f"shadow-{shadowed}.duckdb"
        registry = Registry(default_dir(db))
        live, shadow = register_policy(registry, b_defer=2.0), register_policy(registry, forcing)
        registry.promote(live, by="test", reason="start")
        if shadowed:
            registry.start_shadow(shadow, by="test", reason="look")
        proxy = start_proxy(db=db, env={"AGENTGYM_PLANNER__SEED": "5", "AGENTGYM_PLANNER__REFRESH_S": "0.1"})
        wait_for_planner(proxy.url, live=live, shadow=shadow if shadowed else None)
        answers = []
        for k, task in enumerate(scenario.tasks[:30]):
            body = {"model": "agentgym-sim", "tools": scenario.tools, "seed": k,
                    "messages": [{"role": "user", "content": task.user}]}
            response = httpx.post(f"{proxy.url}/v1/chat/completions", json=body, timeout=30,
                                  headers={"x-agentgym-episode-id": f"s-{k}"})
            assert response.status_code == 200
            message = response.json()["choices"][0]["message"]  # call ids are unique per call: compare the rest
            answers.append((message["content"], [(c["function"]["name"], c["function"]["arguments"])
                                                 for c in message.get("tool_calls") or []]))
        assert proxy.stop(), proxy.log()
        con = duckdb.connect(str(db), read_only=True)
        rows = con.execute("SELECT episode_id, arm, policy_version, action, choice FROM decisions "
                           "ORDER BY episode_id, arm").fetchall()
        con.close()
        outputs.append((answers, [r for r in rows if r[1] == "live"], [r for r in rows if r[1] == "shadow"]))
    (plain_answers, plain_live, no_shadow), (answers, served, shadowed_rows) = outputs
    assert served == plain_live, [(a, b) for a, b in zip(served, plain_live) if a != b][:3]
    assert answers == plain_answers and len(served) == 30 and no_shadow == []
    assert len(shadowed_rows) == 30 and {(r[2], r[3]) for r in shadowed_rows} == {("v2", "force")}
    assert {r[3] for r in served} != {"force"}  # what the shadow would have done did not happen
