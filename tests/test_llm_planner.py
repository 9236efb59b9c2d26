"""LLM planner versions (issue 6): a version of engine "lightning" names a served model; the real
proxy, in front of the simulated model of the `tiny` scenario, asks that model (a stand-in on
loopback that answers as vLLM does, with token ids and log-probabilities) which tool to use,
through a real `agl-server`'s gateway or directly, and applies and records its answer.

Needs `agentlightning` (in the `dev` extra); without it these tests are skipped, and say so."""

from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import time
from types import SimpleNamespace

import duckdb
import httpx
import orjson
import pytest
from openai import OpenAI

pytest.importorskip("agentlightning", reason="Agent Lightning is not installed: pip install -e '.[dev]'")

from conftest import stopped_store, write_tiny  # noqa: E402
from helpers import KEY, AglServer, PlannerStandIn, ThreadServer, wait_for_planner  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from agentgym.config import PlannerConfig, RolloutConfig, TrainerConfig  # noqa: E402
from agentgym.proxy.llm_planner import (  # noqa: E402
    SYSTEM,
    UnusableAnswer,
    answer_probability,
    planner_request,
    read_answer,
)
from agentgym.proxy.planner import tools_ran_this_turn  # noqa: E402
from agentgym.scenarios import local_stack  # noqa: E402
from agentgym.scenarios.agents import run_episodes  # noqa: E402
from agentgym.scenarios.scenario import load_scenario  # noqa: E402
from agentgym.store.queries import Scope  # noqa: E402
from agentgym.trainer.encoder import shared_encoder  # noqa: E402
from agentgym.trainer.lightning import last_fit  # noqa: E402
from agentgym.trainer.registry import CorruptPolicy, LlmSpec, Registry, default_dir  # noqa: E402
from agentgym.trainer.rounds import train_round  # noqa: E402
from agentgym.trainer.shadow import look as shadow_look  # noqa: E402

MODEL = "planner-llm"  # what agl-server's gateway serves (default_proxy.model_name), and every version's name


@pytest.fixture(scope="module")
def stack(tmp_path_factory, logs):
    """The `tiny` scenario's simulated model (the agents' upstream) and an agl-server."""
    folder = tmp_path_factory.mktemp("llm_planner")
    scenario_file = write_tiny(folder, 8)
    model = local_stack.start_model(logs, args=["--scenario", str(scenario_file), "--seed", "3"])
    agl = AglServer(folder / "agl", MODEL)
    yield SimpleNamespace(model=model, agl=agl, scenario=load_scenario(str(scenario_file)))
    agl.stop()
    model.stop()


def _proxy(stack, db, logs, *, gateway: bool, planner_timeout_s: float = 10.0):
    """A proxy asking the LLM planner; a short `planner_timeout_s` only where a test times the planner out
    (on a loaded machine a planner call that answers can take over a second)."""
    return local_stack.start_proxy(f"{stack.model.url}/v1", db, logs, env={
        "AGENTGYM_LIGHTNING__GATEWAY": str(gateway).lower(), "AGENTGYM_LIGHTNING__SERVER_URL": stack.agl.url,
        "AGL_KEY": KEY, "AGENTGYM_LIGHTNING__PLANNER_TIMEOUT_S": str(planner_timeout_s),
        "AGENTGYM_PLANNER__REFRESH_S": "0.2"})


def _llm_version(registry: Registry, server: ThreadServer) -> str:
    return registry.register_llm(LlmSpec(model=MODEL, server=f"{server.url}/v1"), parent=None,
                                 training={"engine": "lightning"}, gate={}).version


def _wait_for_gateway(url: str, version: str | None) -> None:
    for _ in range(200):
        if httpx.get(f"{url}/readyz", timeout=5).json()["agent_lightning_gateway"] == version:
            return
        time.sleep(0.05)
    raise AssertionError(f"the gateway was not pointed at {version}")


def _ask(proxy_url: str, episode: str, tools: list, text: str = "Where is my order A-1003?") -> dict:
    """One agent request, as the openai SDK sends it; raises if it fails."""
    client = OpenAI(base_url=f"{proxy_url}/v1", api_key="k", max_retries=0)
    answer = client.chat.completions.create(model="agentgym-sim", tools=tools, messages=[
        {"role": "user", "content": text}], extra_headers={"X-AgentGym-Episode-Id": episode})
    return answer.choices[0].message.model_dump()


def _failures(proxy_url: str) -> dict[str, float]:
    text = httpx.get(f"{proxy_url}/metrics", timeout=5).text
    return {m[0]: float(m[1]) for m in re.findall(r'agentgym_internal_errors_total\{stage="(llm_planner_\w+)"\} (\S+)',
                                                   text)}


def test_an_llm_planners_answer_becomes_one_of_the_three_actions():
    names = ["get_order_status", "fetch_order_status", "send_invoice"]
    call = {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                                                 "function": {"name": "send_invoice", "arguments": "{}"}}]}
    assert read_answer(call, names) == ("force", [2])
    assert read_answer({"content": "`get_order_status`."}, names) == ("force", [0])
    assert read_answer({"content": "send_invoice, get_order_status"}, names) == ("offer", [0, 2])
    assert read_answer({"content": " Any "}, names) == ("defer", [0, 1, 2])
    for unusable in ({"content": "I would look it up."}, {"content": ""}, {"content": None},
                     {"tool_calls": [{"function": {"name": "delete_everything"}}]}):
        with pytest.raises(UnusableAnswer):
            read_answer(unusable, names)
    # the question: the context as the default planner reads it, the tools by name and description only
    functions = [{"name": "get_order_status", "description": "Get it.", "parameters": {"type": "object"}}]
    question = planner_request([{"role": "system", "content": "agent's own"}, {"role": "user", "content": "Where?"}],
                               functions)
    assert question == {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Where?"}],
                        "tools": [{"type": "function", "function": {"name": "get_order_status",
                                                                    "description": "Get it."}}]}
    assert answer_probability({"logprobs": {"content": [{"logprob": -0.5}, {"logprob": -0.25}]}}) == math.exp(-0.75)
    assert answer_probability({"logprobs": None}) is None


def test_llm_versions_in_the_registry_are_checksummed_specs(tmp_path):
    registry = Registry(tmp_path / "policies")
    version = registry.register_llm(LlmSpec(model=MODEL, server="http://127.0.0.1:8000/v1/"), parent=None,
                                    training={}, gate={})
    meta, spec = registry.load(version.version)
    assert meta.engine == "lightning" and spec == LlmSpec(model=MODEL, server="http://127.0.0.1:8000/v1")
    (tmp_path / "policies" / f"{version.version}.json").write_bytes(
        orjson.dumps({"model": MODEL, "server": "http://10.0.0.9:8000/v1"}))  # pointed elsewhere by hand
    with pytest.raises(CorruptPolicy, match="checksum mismatch"):
        registry.load(version.version)
    with pytest.raises(CorruptPolicy):
        registry.promote(version.version, by="test", reason="refused: serves nothing")
    assert registry.index().live is None
    with pytest.raises(ValidationError, match="must be an http:// or https:// URL with a host"):
        LlmSpec(model=MODEL, server="localhost:8000")
    with pytest.raises(ValidationError, match="at least 1 character"):
        LlmSpec(model="", server="http://127.0.0.1:8000/v1")
    # the torch engine does not train an LLM planner, and says so
    good = registry.register_llm(LlmSpec(model=MODEL, server="http://127.0.0.1:8000/v1"), parent=None, training={},
                                 gate={})
    registry.promote(good.version, by="test", reason="live")
    result = train_round(None, registry, shared_encoder(), TrainerConfig(), PlannerConfig(), RolloutConfig(),
                         Scope(idle_timeout_s=300.0), by="test")
    assert result["status"] == "skipped" and "--engine lightning" in result["reason"]

    # from the command line
    db = tmp_path / "store.duckdb"
    cli = lambda *args: subprocess.run([sys.executable, "-m", "agentgym", "policies", *args, "--db", str(db)],  # noqa: E731
                                       capture_output=True, text=True, timeout=120)
    made = cli("register-llm", MODEL, "--server", "http://127.0.0.1:8000/v1")
    assert made.returncode == 0 and made.stdout.startswith("v1: planner-llm at http://127.0.0.1:8000/v1"), made
    assert Registry(default_dir(db)).load("v1")[1] == LlmSpec(model=MODEL, server="http://127.0.0.1:8000/v1")
    bad = cli("register-llm", MODEL, "--server", "localhost:8000")
    assert bad.returncode == 1 and "must be an http:// or https:// URL with a host" in bad.stderr
    assert cli("register-llm", MODEL, "--server", "http://h/v1", "--parent", "v9").stderr.strip() == \
        "no policy version 'v9'"


def _forced_tools_called(con: duckdb.DuckDBPyConnection, arm: str) -> int:
    """How many of `arm`'s forced tools the model called. It called each, but where a tool had
    already returned in the turn: there the forced tool is only offered, and it may answer."""
    rows = con.execute("""SELECT d.tool, tc.name, i.request FROM decisions d JOIN inferences i ON i.id = d.inference_id
                          LEFT JOIN tool_calls tc ON tc.inference_id = d.inference_id AND tc.position = 0
                          WHERE d.arm = ? AND d.action = 'force'""", [arm]).fetchall()
    for forced, called, request in rows:
        assert called == forced or called is None and tools_ran_this_turn(orjson.loads(request)["messages"]), called
    return sum(called == forced for forced, called, _ in rows)


def test_a_live_llm_planner_steers_the_agent_through_agent_lightnings_gateway(stack, tmp_path, logs):
    stand_in = PlannerStandIn()
    with ThreadServer(stand_in.app()) as planner_server:
        db = tmp_path / "store.duckdb"
        registry = Registry(default_dir(db))
        v1 = _llm_version(registry, planner_server)
        registry.promote(v1, by="test", reason="an LLM planner")
        proxy = _proxy(stack, db, logs, gateway=True, planner_timeout_s=2.0)  # the slow stand-in takes 3 s
        wait_for_planner(proxy.url, live=v1)
        _wait_for_gateway(proxy.url, v1)
        results = asyncio.run(run_episodes(proxy.url, stack.scenario, episodes=4, seed=1, concurrency=2))
        asked = len(stand_in.asked)

        # the planner failing leaves each request unchanged, and it still succeeds
        tools = stack.scenario.tools
        failed = {}
        stand_in.text = "I would look it up."  # names no tool
        for mode in ("fail", "slow", "text"):
            stand_in.mode = mode
            for i in range(2):
                assert _ask(proxy.url, f"planner-{mode}-{i}", tools)["role"] == "assistant"
            failed[mode] = _failures(proxy.url)
        with stack.agl.client() as agl:
            episodes = {r.episode_id: (r.success, agl.get(f"/api/rollouts/{r.episode_id}").json(),
                                       agl.get(f"/api/rollouts/{r.episode_id}/events").json()) for r in results}
        con = stopped_store(proxy)

    rows = con.execute("""SELECT d.episode_id, d.policy_version, d.arm, d.action, d.tool, d.propensity, tc.name
                          FROM decisions d LEFT JOIN tool_calls tc ON tc.inference_id = d.inference_id
                          AND tc.position = 0 ORDER BY d.created_at""").fetchall()
    requests = sum(r.requests for r in results)
    assert len(rows) == requests == asked  # every request offered tools, each was planned once, by v1
    assert {(version, arm, action) for _, version, arm, action, *_ in rows} == {(v1, "live", "force")}
    assert _forced_tools_called(con, "live") >= len(results)  # each episode's first request, at least
    # Agent Lightning: each episode a rollout, with every planner call and, from its feedback, its reward
    rule_success, rule_failure = 1.0, 0.0
    for episode_id, (success, detail, events) in episodes.items():
        assert detail["rollout"]["status"]["state"] == "succeeded"
        calls = [e["data"] for e in events if e["event_type"] == "model_request"]
        ours = [r for r in rows if r[0] == episode_id]
        assert len(calls) == len(ours) and events[-1]["event_type"] == "reward"
        assert events[-1]["data"]["value"] == (rule_success if success else rule_failure)
        for call, (*_, propensity, _) in zip(calls, ours, strict=True):
            assert call["request"]["messages"][0] == {"role": "system", "content": SYSTEM}
            assert call["model"] == MODEL and call["model_version"] == int(v1[1:])
            assert call["response"]["choices"][0]["token_ids"]  # asked for by the gateway's train mode
            # the propensity recorded is the probability of the answer the model sampled
            logprobs = call["response"]["choices"][0]["logprobs"]["content"]
            assert propensity == pytest.approx(math.exp(sum(t["logprob"] for t in logprobs))) and propensity < 1
    # and each failure was counted: Agent Lightning's gateway retries a failing server past our timeout,
    # a slow one times out, an answer naming no tool is unusable; none of them was planned
    assert failed["fail"].get("llm_planner_timeout", 0) + failed["fail"].get("llm_planner_error", 0) == 2
    assert failed["slow"].get("llm_planner_timeout", 0) - failed["fail"].get("llm_planner_timeout", 0) == 2
    assert failed["text"].get("llm_planner_unusable_answer") == 2
    assert con.execute("SELECT count(*) FROM decisions WHERE episode_id LIKE 'planner-%'").fetchone()[0] == 0
    statuses = con.execute("SELECT status, tool_choice FROM inferences WHERE episode_id LIKE 'planner-%'").fetchall()
    assert statuses == [(200, None)] * 6


def test_rollback_moves_the_gateway_back_to_the_previous_versions_model(stack, tmp_path, logs):
    first, second = PlannerStandIn(), PlannerStandIn()
    with ThreadServer(first.app()) as a, ThreadServer(second.app()) as b:
        db = tmp_path / "store.duckdb"
        registry = Registry(default_dir(db))
        v1, v2 = _llm_version(registry, a), _llm_version(registry, b)
        registry.promote(v1, by="test", reason="first")
        proxy = _proxy(stack, db, logs, gateway=True)
        tools = stack.scenario.tools
        served = []
        for live in (v1, v2, v1):
            if live == v2:
                registry.promote(v2, by="test", reason="second")
            elif served:
                assert registry.rollback(by="test", reason="back").version == v1
            wait_for_planner(proxy.url, live=live)
            _wait_for_gateway(proxy.url, live)
            _ask(proxy.url, "ep-rollback", tools)
            served.append((len(first.asked), len(second.asked)))
        with stack.agl.client() as agl:
            events = agl.get("/api/rollouts/ep-rollback/events", params={"event_type": "model_request"}).json()
        assert stopped_store(proxy) is not None
    assert served == [(1, 0), (1, 1), (2, 1)]
    assert [(e["data"]["model_version"], e["data"]["server"]["endpoint"]) for e in events] == [
        (1, f"{a.url}/v1"), (2, f"{b.url}/v1"), (1, f"{a.url}/v1")]


def test_a_refused_llm_version_serves_nothing_and_an_llm_shadow_is_judged_by_the_reward_model(stack, tmp_path, logs):
    live_model, other = PlannerStandIn(), PlannerStandIn()
    with ThreadServer(live_model.app()) as a, ThreadServer(other.app()) as b:
        db = tmp_path / "store.duckdb"
        registry = Registry(default_dir(db))
        v1, v2 = _llm_version(registry, a), _llm_version(registry, b)
        registry.promote(v1, by="test", reason="live")
        registry.start_canary(v2, 50, by="test", reason="canary")
        (registry.folder / f"{v2}.json").write_bytes(orjson.dumps({"model": "other", "server": f"{b.url}/v1"}))
        proxy = _proxy(stack, db, logs, gateway=False)
        wait_for_planner(proxy.url, live=v1, canary=None)  # v2 refused: its half of the episodes gets v1
        tools = stack.scenario.tools
        for i in range(6):
            _ask(proxy.url, f"refused-{i}", tools)
        assert len(live_model.asked) == 6 and not other.asked
        asked = live_model.asked[0]  # directly: our temperature, log-probabilities asked for
        assert asked["model"] == MODEL and asked["temperature"] == 1.0 and asked["logprobs"] is True

        registry.rollback(by="test", reason="end the refused canary")
        v3 = _llm_version(registry, b)
        registry.start_shadow(v3, by="test", reason="shadow")
        other.mode, other.text = "text", "fetch_order_status"  # the shadow would force the deprecated twin
        wait_for_planner(proxy.url, live=v1, shadow=v3)
        results = asyncio.run(run_episodes(proxy.url, stack.scenario, episodes=24, seed=2, concurrency=4))
        assert proxy.stop(), proxy.log()  # a shadow's answers are recorded as they come; a stopping proxy waits
    log = proxy.log()
    assert "policy v2 refused; none serves" in log and "rollout check failed" not in log
    con = duckdb.connect(str(db), read_only=True)
    ours = {r.episode_id for r in results}
    rows = [r for r in con.execute("""SELECT d.episode_id, d.policy_version, d.arm, d.action, d.tool, d.offered, tc.name
                                      FROM decisions d LEFT JOIN tool_calls tc ON tc.inference_id = d.inference_id
                                      AND tc.position = 0""").fetchall() if r[0] in ours]
    live = [r for r in rows if r[2] == "live"]
    shadow = [r for r in rows if r[2] == "shadow"]
    assert len(live) == len(shadow) == sum(r.requests for r in results) == len(other.asked)
    assert {(r[1], r[3]) for r in live} == {(v1, "force")} and _forced_tools_called(con, "live") >= len(ours)
    assert {(r[1], r[3], r[4]) for r in shadow} == {(v3, "force", "fetch_order_status")}
    assert {r[4] for r in live} == {"get_order_status", "fetch_order_status"}  # the stand-in is not always right
    assert con.execute("SELECT count(*) FROM decisions WHERE policy_version = $v", {"v": v2}).fetchone()[0] == 0

    # the gate for an LLM shadow: the reward model, fitted on these outcomes (the twin always fails), values
    # the shadow's choices below the live version's, and it is rolled back
    result = shadow_look(con, registry, shared_encoder(), RolloutConfig(min_episodes=10), TrainerConfig(),
                         PlannerConfig(), Scope(idle_timeout_s=300.0))
    assert result["status"] == "rolled back", result
    [line] = [line for line in result["analysis"] if line.startswith("reward-model estimate")]
    assert line.endswith(": fail, confidently worse") and f"on {len(shadow)} requests of {len(ours)} episodes" in line
    shadow_value, live_value = map(float, re.findall(r"estimate: ([0-9.]+) against v1's ([0-9.]+)", line)[0])
    assert shadow_value < live_value
    assert registry.index().versions[v3].status == "rolled_back"
    # the reward model it was judged by is the report's (its held-out agreement, as in the analysis line)
    kept = last_fit.summary(registry.folder)
    assert kept["by"] == f"the shadow step judging {v3}" and f"AUC {kept['held_out']['auc']}:" in line
