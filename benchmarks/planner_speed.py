"""The planner's decision latency in the proxy, and one training update's time, on this machine.

Decision: encode the context, score 50 offered tools (their vectors cached, as in the proxy)
and the three actions, sample: p50 / p99 over 20,000 decisions, on data_analysis's 50 BFCL tools and
its questions. Update: one torch-engine update (60 steps, encoding the batch included) on
10,000 logged decisions with 16-50 candidates each, on the CPU or `--device cuda`; importing
torch, once per trainer process, is timed apart. `--tune-encoder` (a GPU) adds an update that
fine-tunes all-MiniLM-L6-v2 with the scorer, in minibatches of 1,024 and of 4,096 decisions
(bf16), and reports its policy-gradient steps' decisions and encoded texts per second.

    .venv/bin/python benchmarks/planner_speed.py [--decisions 10000] [--device cpu] [--tune-encoder]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import date
from pathlib import Path

import numpy as np

from agentgym.config import PlannerConfig, TrainerConfig
from agentgym.proxy.planner import context_text, spec_hash, tool_text
from agentgym.scenarios.scenario import load_scenario
from agentgym.trainer.batch import Batch
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.engine import TorchEngine
from agentgym.trainer.policy import PolicyWeights, bucket, decide

RESULTS = Path(__file__).parent / "results"


def decision_latency(n: int) -> dict:
    scenario = load_scenario("data_analysis")
    functions = [t["function"] for t in scenario.tools][:50]
    encoder = shared_encoder()
    tools = np.stack([encoder.encode_with_words(tool_text(f)) for f in functions])  # cached per tool in the proxy
    buckets = np.array([bucket(f["name"]) for f in functions])
    weights = PolicyWeights.zero_shot(encoder.dimensions, context_dimensions=encoder.dimensions_with_words)
    config = PlannerConfig()
    rng = np.random.default_rng(0)
    questions = [[{"role": "user", "content": task.user}] for task in scenario.tasks]
    timings = []
    for i in range(n):
        started = time.perf_counter()
        context = encoder.encode_with_words(context_text(questions[i % len(questions)]))
        decide(weights, context, tools, buckets, config, rng)
        timings.append((time.perf_counter() - started) * 1000)
    p50, p99 = np.percentile(timings, [50, 99])
    return {"tools": len(functions), "decisions": n, "p50_ms": round(float(p50), 4), "p99_ms": round(float(p99), 4)}


def synthetic_batch(n: int, seed: int = 0) -> Batch:
    """Real tool texts and user requests (customer_support and data_analysis), random logged choices."""
    rng = random.Random(seed)
    pools = []
    specs = {}
    for name in ("customer_support", "data_analysis"):
        scenario = load_scenario(name)
        hashes = []
        for tool in scenario.tools:
            text = tool_text(tool["function"])
            specs[spec_hash(text)] = (tool["function"]["name"], text)
            hashes.append(spec_hash(text))
        pools.append((hashes, [t.user for t in scenario.tasks]))
    candidates, contexts, choices, episodes = [], [], [], []
    for i in range(n):
        hashes, users = pools[i % 2]
        offered = hashes[: rng.randint(16, len(hashes))]
        candidates.append(offered)
        contexts.append(rng.choice(users))
        choices.append(rng.randrange(-1, len(offered)))
        episodes.append(f"e{i // 4}")
    return Batch([f"d{i}" for i in range(n)], episodes, ["v1"] * n, contexts, candidates, np.array(choices),
                 np.full(n, 0.1), np.array([rng.random() for _ in range(n)]), np.full(n, 0.25),
                 np.array([hash(c) % 50 for c in contexts]), specs,
                 np.array([rng.randrange(-1, len(c)) for c in candidates]), np.array([rng.randrange(-1, 2) for _ in contexts]))


def update_time(n: int, device: str) -> dict:
    started = time.perf_counter()
    import torch  # noqa: F401 - once per trainer process (about 5 s here), not per update

    imported = time.perf_counter() - started
    encoder = shared_encoder()
    batch = synthetic_batch(n)
    engine = TorchEngine()
    started = time.perf_counter()
    _, stats = engine.update(batch, PolicyWeights.zero_shot(encoder.dimensions), encoder, TrainerConfig(device=device),
                             PlannerConfig().epsilon)
    return {"decisions": n, "device": stats["device"], "steps": stats["steps"],
            "seconds": round(time.perf_counter() - started, 2), "torch_import_seconds": round(imported, 2)}


def tuning_speed(n: int, device: str, minibatch: int) -> dict:
    """Steps of encoder and scorer together; the first update warms the GPU up and is not counted.
    Every decision's context is made distinct, so no step saves work on repeated requests."""
    import torch

    from agentgym.trainer.transformer_encoder import TransformerEncoder

    encoder = TransformerEncoder(device=device)
    batch = synthetic_batch(n)
    batch.contexts = [f"{text} (request {i})" for i, text in enumerate(batch.contexts)]
    engine = TorchEngine(encoder_learning_rate=2e-5, minibatch=minibatch)
    weights = PolicyWeights.zero_shot(encoder.dimensions)
    engine.update(batch, weights, encoder, TrainerConfig(steps=5), PlannerConfig().epsilon)
    started = time.perf_counter()
    _, stats = engine.update(batch, weights, encoder, TrainerConfig(), PlannerConfig().epsilon)
    return {"decisions": n, "device": stats["device"], "minibatch": minibatch, "steps": stats["steps"],
            "decisions_per_s": stats["decisions_per_s"], "encoded_texts_per_s": stats["encoded_texts_per_s"],
            "seconds": round(time.perf_counter() - started, 2),
            "gpu": torch.cuda.get_device_name() if encoder.device.type == "cuda" else None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=10_000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tune-encoder", action="store_true")
    args = parser.parse_args()
    shared_encoder()  # distilled once per machine; not part of any timing
    result = {"date": date.today().isoformat(), "decision": decision_latency(20_000),
              "update": update_time(args.decisions, args.device)}
    if args.tune_encoder:
        result["encoder_tuning"] = [tuning_speed(args.decisions, args.device, minibatch) for minibatch in (1024, 4096)]
    print(json.dumps(result, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"planner_speed{'' if args.device == 'cpu' else '-' + args.device}-{result['date']}.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
