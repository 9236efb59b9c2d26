"""The Agent Lightning engine's two figures (issue 6).

1. The overhead Agent Lightning's gateway adds to each LLM planner call. The proxy's own LLM
   planner (`agentgym.proxy.llm_planner.LlmPlanner.choose`) asks the stand-in model
   (`agentgym scenarios serve-model`, a process) the planner's question on a customer_support
   request, alternately directly and through a real `agl-server`'s gateway (which records each
   call as an event of the episode's rollout), both on 127.0.0.1, one call at a time: p50/p99
   of each and their difference. Each episode (a rollout) takes `--calls-per-episode` calls; the
   creation of its rollout (two calls to agl-server at its first planner call) is reported apart.
2. Upstream mode (`lightning.planner: upstream`): the agent's own request through the proxy,
   alternately to a proxy in upstream mode (its requests through the gateway, each episode a
   rollout) and to a plain proxy, both in front of the same stand-in model (token ids and
   log-probabilities in its answers): p50/p99 of each and their difference.
3. The reward model's agreement with real outcomes on held-out episodes of a real store:
   `--episodes` customer_support episodes of simulated agents recorded through `agentgym serve`
   in front of the simulated model (no planner), the reward model fitted on four episodes in five
   (`agentgym.trainer.lightning.reward_model.fit`), its accuracy and AUC on the fifth beside
   always guessing the majority outcome.

    .venv/bin/python benchmarks/lightning_gateway.py [--calls 2000] [--episodes 400] [--seed 0]

Prints Markdown tables; raw figures go to benchmarks/results/lightning_gateway-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import closing
from datetime import date
from pathlib import Path

import numpy as np

from agentgym.config import LightningConfig, RewardModelConfig, RewardRule
from agentgym.proxy.llm_planner import LlmPlanner
from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario
from agentgym.store.queries import Scope
from agentgym.store.schema import open_store
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.lightning.contexts import read_contexts
from agentgym.trainer.lightning.reward_model import fit
from agentgym.trainer.registry import LlmSpec, Version

RESULTS = Path(__file__).parent / "results"
SCENARIO = "customer_support"
KEY = "benchmark-key"
MODEL = "agentgym-sim"


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "mean_ms": round(float(np.mean(ms)), 3), "calls": len(ms)}


async def _gateway_calls(model_url: str, agl_url: str, calls: int, per_episode: int) -> dict[str, object]:
    scenario = load_scenario(SCENARIO)
    functions = [t["function"] for t in scenario.tools]
    messages = [{"role": "system", "content": scenario.system_prompt},
                {"role": "user", "content": scenario.tasks[0].user}]
    failures: list[str] = []
    planner = LlmPlanner(LightningConfig(gateway=True, server_url=agl_url, planner_timeout_s=30), RewardRule(),
                         failures.append)
    spec = LlmSpec(model=MODEL, server=f"{model_url}/v1")
    through, direct = (Version(version=v, created_at=0, parent=None, checksum="", encoder="none",
                               encoder_checksum="none", engine="lightning") for v in ("v1", "v2"))
    assert await asyncio.to_thread(planner.point_gateway, through.version, spec), failures  # v1: the gateway's; v2: direct
    timings: dict[str, list[float]] = {"direct": [], "gateway": [], "gateway_first_call": []}
    warmup = 50
    try:
        for i in range(-warmup, calls):
            episode = f"bench-{i // per_episode}" if i >= 0 else f"warm-{i}"
            first = i % per_episode == 0  # the episode's rollout is created at this call
            order = [("gateway", through), ("direct", direct)]
            for path, version in order if i % 2 else order[::-1]:  # alternate which goes first
                started = time.perf_counter()
                choice = await planner.choose(version, spec, messages, functions, episode)
                elapsed = (time.perf_counter() - started) * 1000
                if choice is None:
                    raise RuntimeError(f"planner call failed: {failures[-1]}")
                if i >= 0:
                    timings["gateway_first_call" if path == "gateway" and first else path].append(elapsed)
    finally:
        await planner.aclose()
    result = {name: _percentiles(ms) for name, ms in timings.items()}
    result["overhead_ms"] = {q: round(result["gateway"][q] - result["direct"][q], 3) for q in ("p50_ms", "p99_ms")}
    return result


def gateway_overhead(calls: int, per_episode: int, work: Path) -> dict[str, object]:
    model = local_stack.start_model(work, args=["--scenario", SCENARIO, "--seed", "0"])
    agl = local_stack.start_agl_server(work, model_name=MODEL, key=KEY)
    try:
        os.environ["AGL_KEY"] = KEY  # the planner reads agl-server's key from lightning.key_env
        return asyncio.run(_gateway_calls(model.url, agl.url, calls, per_episode))
    finally:
        agl.stop()
        model.stop()


def upstream_mode_overhead(requests: int, per_episode: int, work: Path) -> dict[str, object]:
    import httpx

    sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # the tests' stand-in model, on a thread
    from helpers import ThreadServer, token_ids_app

    scenario = load_scenario(SCENARIO)
    body = {"model": MODEL, "tools": scenario.tools, "messages": [
        {"role": "system", "content": scenario.system_prompt}, {"role": "user", "content": scenario.tasks[0].user}]}
    agl = local_stack.start_agl_server(work, model_name=MODEL, key=KEY)
    with ThreadServer(token_ids_app()) as model:
        env = {"AGENTGYM_LIGHTNING__PLANNER": "upstream", "AGENTGYM_LIGHTNING__GATEWAY": "true", "AGL_KEY": KEY,
               "AGENTGYM_LIGHTNING__PLANNER_MODEL": MODEL, "AGENTGYM_LIGHTNING__SERVER_URL": agl.url}
        proxies = {"plain proxy": local_stack.start_proxy(f"{model.url}/v1", work / "plain.duckdb", work),
                   "upstream mode": local_stack.start_proxy(f"{model.url}/v1", work / "upstream.duckdb", work, env=env)}
        try:
            while httpx.get(f"{proxies['upstream mode'].url}/readyz").json()["agent_lightning_gateway"] != "upstream":
                time.sleep(0.1)
            timings: dict[str, list[float]] = {name: [] for name in proxies}
            with httpx.Client(timeout=30) as client:
                for i in range(-50, requests):
                    names = list(proxies) if i % 2 else list(proxies)[::-1]  # alternate which goes first
                    for name in names:
                        started = time.perf_counter()
                        answer = client.post(f"{proxies[name].url}/v1/chat/completions", json=body,
                                             headers={"x-agentgym-episode-id": f"warm-{i}" if i < 0
                                                      else f"bench-{i // per_episode}"})
                        elapsed = (time.perf_counter() - started) * 1000
                        assert answer.status_code == 200, answer.text
                        if i >= 0:
                            timings[name].append(elapsed)
        finally:
            for proxy in proxies.values():
                proxy.stop()
            agl.stop()
    result: dict[str, object] = {name: _percentiles(ms) for name, ms in timings.items()}
    result["overhead_ms"] = {q: round(result["upstream mode"][q] - result["plain proxy"][q], 3)
                             for q in ("p50_ms", "p99_ms")}
    return result


def reward_model_agreement(episodes: int, seed: int, work: Path) -> dict[str, object]:
    scenario = load_scenario(SCENARIO)
    model = local_stack.start_model(work, args=["--scenario", SCENARIO, "--seed", str(seed)])
    db = work / "store.duckdb"
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, work, env=scenario.proxy_env())
    try:
        started = time.monotonic()
        asyncio.run(run_episodes(proxy.url, scenario, episodes=episodes, seed=seed, concurrency=8))
        recorded_s = time.monotonic() - started
        assert proxy.stop(), proxy.log()
    finally:
        proxy.stop()
        model.stop()
    with closing(open_store(db, read_only=True)) as con:
        contexts = read_contexts(con, Scope(idle_timeout_s=300.0))
    started = time.monotonic()
    report = {target: fit(contexts, shared_encoder(), RewardModelConfig(target=target, seed=seed)).report
              for target in ("call", "episode")}
    return {"episodes": episodes, "contexts": len(contexts), "recorded_s": round(recorded_s, 1),
            "fitted_s": round(time.monotonic() - started, 1), "reward_model": report}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000, help="planner calls each way")
    parser.add_argument("--calls-per-episode", type=int, default=10)
    parser.add_argument("--requests", type=int, default=1000, help="agent requests each way, upstream mode")
    parser.add_argument("--episodes", type=int, default=400, help="customer_support episodes to record")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lightning-gateway-"))
    overhead = gateway_overhead(args.calls, args.calls_per_episode, work)
    print(f"LLM planner call, {args.calls} each way, one at a time, 127.0.0.1 ({args.calls_per_episode} calls an "
          "episode)\n\n| path | p50 ms | p99 ms | mean ms | calls |\n|---|---:|---:|---:|---:|")
    for name in ("direct", "gateway", "gateway_first_call"):
        row = overhead[name]
        print(f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {row['mean_ms']} | {row['calls']} |")
    print(f"\ngateway overhead: p50 {overhead['overhead_ms']['p50_ms']} ms, p99 {overhead['overhead_ms']['p99_ms']} ms "
          "(gateway_first_call adds the creation of the episode's rollout)\n", flush=True)
    upstream = upstream_mode_overhead(args.requests, args.calls_per_episode, work)
    print(f"the agent's request through the proxy, {args.requests} each way, one at a time, 127.0.0.1\n\n"
          "| proxy | p50 ms | p99 ms | mean ms | requests |\n|---|---:|---:|---:|---:|")
    for name in ("plain proxy", "upstream mode"):
        row = upstream[name]
        print(f"| {name} | {row['p50_ms']} | {row['p99_ms']} | {row['mean_ms']} | {row['calls']} |")
    print(f"\nupstream mode adds p50 {upstream['overhead_ms']['p50_ms']} ms, p99 {upstream['overhead_ms']['p99_ms']} "
          "ms\n", flush=True)
    agreement = reward_model_agreement(args.episodes, args.seed, work)
    print(f"reward model, {SCENARIO}: {agreement['episodes']} episodes recorded in {agreement['recorded_s']} s, "
          f"{agreement['contexts']} contexts, fitted in {agreement['fitted_s']} s\n\n"
          "| target | held-out calls | episodes | accuracy | majority baseline | AUC | log loss | train accuracy |\n"
          "|---|---:|---:|---:|---:|---:|---:|---:|")
    for target, report in agreement["reward_model"].items():
        held, train = report["held_out"], report["train"]
        print(f"| {target} | {held['examples']} | {held['episodes']} | {held['accuracy']} | "
              f"{held['majority_accuracy']} | {held['auc']} | {held['log_loss']} | {train['accuracy']} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"lightning_gateway-{date.today()}.json").write_text(json.dumps(
        {"args": vars(args), "gateway": overhead, "upstream_mode": upstream, "agreement": agreement}, indent=2))


if __name__ == "__main__":
    main()
