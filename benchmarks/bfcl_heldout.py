"""The planner on external data: BFCL v4 `multiple` and `live_multiple`, trained on outcomes only,
compared on held-out items with the zero-shot encoder similarity it starts from.

Each BFCL item (one question, its 2-30 candidate functions, one gold call) is an episode. The
planner scores the candidates and samples an action as in the proxy (force one, offer the
likeliest, defer); the simulated model answers under that action (`tool_choice` forced, or
choosing among the tools it was offered); the scenario environment executes the call and says
whether it worked. That outcome is the only reward: the planner never sees the gold tool. The
environment here checks the tool, not the arguments, since tool choice is what is measured.

Items are split (seeded) into training and held-out; each round every training item is played
`--group` times by the serving weights (a GRPO group), the torch engine makes one update on
four training items in five, and the trainer's gate (SNIPS on the fifth) decides whether the
update serves the next round, as a training round in the proxy does.
After each round: top-1 (the planner's best-scored tool is the gold one) and top-3 recall on
the held-out items, beside the zero-shot baseline (the encoder's cosine similarity alone).

`--encoder` picks what reads the texts: `static` (the distilled encoder the proxy serves with;
the scorer alone trains), `minilm` (all-MiniLM-L6-v2 itself, fixed) or `minilm-tuned` (MiniLM
fine-tuned with the scorer in each update, on a GPU; a refused update puts its weights back).

    .venv/bin/python benchmarks/bfcl_heldout.py [--rounds 6] [--group 4] [--held-out 0.3] [--seed 0]
        [--encoder static|minilm|minilm-tuned] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from agentgym.config import PlannerConfig, TrainerConfig
from agentgym.proxy.planner import spec_hash, tool_text
from agentgym.scenarios.environment import Environment
from agentgym.scenarios.public_data import bfcl_items, openai_tool, tool_name
from agentgym.scenarios.scenario import Step, Task
from agentgym.scenarios.simulated_model import ModelKnobs, SimulatedModel
from agentgym.trainer.batch import Batch
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.engine import TorchEngine, chosen_probabilities
from agentgym.trainer.gate import evaluate as gate
from agentgym.trainer.policy import PolicyWeights, bucket, decide
from agentgym.trainer.rounds import held_out_for_gate

RESULTS = Path(__file__).parent / "results"
CATEGORIES = ("multiple", "live_multiple")


@dataclass
class Item:
    id: str
    question: str
    tools: list[dict[str, Any]]  # OpenAI tool schemas
    gold: str


def load_items() -> list[Item]:
    """Single-call items with at least two candidates (one gold function)."""
    items = []
    for category in CATEGORIES:
        for raw, answer in bfcl_items(category):
            if len(answer["ground_truth"]) != 1 or len(raw["function"]) < 2:
                continue
            question = " ".join(m["content"] for turn in raw["question"] for m in turn if m["role"] == "user").strip()
            tools = [openai_tool(f) for f in raw["function"]]
            items.append(Item(raw["id"], question, tools, tool_name(next(iter(answer["ground_truth"][0])))))
    return items


class Scorer:
    """The planner's arithmetic for one item: encoded context and candidates, cached until the
    encoder changes (`refresh`)."""

    def __init__(self, items: list[Item], encoder: Any) -> None:
        self.items, self.encoder = items, encoder
        self.refresh()

    def refresh(self) -> None:
        items = self.items
        self.context = dict(zip([i.id for i in items], self.encoder.encode_many_with_words([i.question for i in items]),
                                strict=True))
        texts = sorted({tool_text(t["function"]) for i in items for t in i.tools})
        self.tool = dict(zip(texts, self.encoder.encode_many_with_words(texts), strict=True))

    def arrays(self, item: Item) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The context's vector, the candidates' vectors and their buckets."""
        texts = [tool_text(t["function"]) for t in item.tools]
        return (self.context[item.id], np.stack([self.tool[t] for t in texts]),
                np.array([bucket(t["function"]["name"]) for t in item.tools]))


def play(item: Item, weights: PolicyWeights, scorer: Scorer, model: SimulatedModel, config: PlannerConfig,
         rng: np.random.Generator, seed: int) -> dict[str, Any]:
    """One episode: the planner's action, the model's call under it, the environment's verdict."""
    choice = decide(weights, *scorer.arrays(item), config, rng)
    payload: dict[str, Any] = {"messages": [{"role": "user", "content": item.question}], "seed": seed,
                               "tools": [item.tools[i] for i in choice.offered]}
    if choice.action == "force":
        payload["tool_choice"] = {"type": "function", "function": {"name": item.tools[choice.tool]["function"]["name"]}}
    message, _ = model.answer(payload)
    calls = message.get("tool_calls") or []
    called = calls[0]["function"]["name"] if calls else None
    ok = called is not None and Environment(Task(id=item.id, user=item.question, steps=[Step(tool=item.gold)])
                                            ).execute(called, "{}")[0]
    names = [t["function"]["name"] for t in item.tools]
    return {"choice": choice.tool, "propensity": choice.propensity, "ok": ok,
            "called": names.index(called) if called in names else -1, "offered": frozenset(names[i] for i in choice.offered)}


def batch_of(plays: list[tuple[Item, int, dict[str, Any]]]) -> Batch:
    specs = {spec_hash(tool_text(t["function"])): (t["function"]["name"], tool_text(t["function"]))
             for item, _, _ in plays for t in item.tools}
    groups = {item_id: g for g, item_id in enumerate(dict.fromkeys(item.id for item, _, _ in plays))}
    n = len(plays)
    return Batch(ids=[f"{item.id}/{k}" for item, k, _ in plays], episodes=[f"{item.id}/{k}" for item, k, _ in plays],
                 versions=["current"] * n, contexts=[item.question for item, _, _ in plays],
                 candidates=[[spec_hash(tool_text(t["function"])) for t in item.tools] for item, _, _ in plays],
                 choices=np.array([p["choice"] for _, _, p in plays], np.int64),
                 propensities=np.array([p["propensity"] for _, _, p in plays]),
                 rewards=np.array([float(p["ok"]) for _, _, p in plays]), weights=np.ones(n),
                 groups=np.array([groups[item.id] for item, _, _ in plays], np.int64), specs=specs,
                 called=np.array([p["called"] for _, _, p in plays], np.int64),
                 called_ok=np.array([int(p["ok"]) if p["called"] >= 0 else -1 for _, _, p in plays], np.int64),
                 offered=[p["offered"] for _, _, p in plays])


def evaluate(weights: PolicyWeights, scorer: Scorer, items: list[Item]) -> dict[str, float]:
    top1 = top3 = 0
    for item in items:
        tool_scores = weights.tool_scores(*scorer.arrays(item))
        ranked = [item.tools[i]["function"]["name"] for i in np.argsort(-tool_scores, kind="stable")]
        top1 += ranked[0] == item.gold
        top3 += item.gold in ranked[:3]
    return {"top1": round(top1 / len(items), 4), "top3_recall": round(top3 / len(items), 4)}


def encoder_for(name: str, device: str) -> Any:
    if name == "static":
        return shared_encoder()
    from agentgym.trainer.transformer_encoder import TransformerEncoder

    return TransformerEncoder(device="cuda" if device == "auto" else device)


def run(rounds: int, group: int, held_out: float, seed: int, trainer: TrainerConfig, encoder_name: str = "static",
        encoder_lr: float = 2e-5, minibatch: int = 4096) -> dict[str, Any]:
    items = load_items()
    random.Random(seed).shuffle(items)
    cut = int(len(items) * (1 - held_out))
    train, test = items[:cut], items[cut:]
    encoder = encoder_for(encoder_name, trainer.device)
    tuned = encoder_name == "minilm-tuned"
    engine = TorchEngine(encoder_learning_rate=encoder_lr, minibatch=minibatch) if tuned else TorchEngine()
    scorer = Scorer(items, encoder)
    planner = PlannerConfig(seed=seed)
    model = SimulatedModel(ModelKnobs(), seed)
    rng = np.random.default_rng(seed)
    weights = PolicyWeights.zero_shot(encoder.dimensions, context_dimensions=encoder.dimensions_with_words,
                                      seed=seed)
    seen = {t["function"]["name"] for item in train for t in item.tools}
    zero_shot = evaluate(weights, scorer, test)
    print(json.dumps({"items": len(items), "train": len(train), "held_out": len(test), "zero_shot": zero_shot}), flush=True)
    curve = []
    for r in range(rounds):
        plays = [(item, k, play(item, weights, scorer, model, planner, rng, seed * 1_000_003 + r * 10_007 + k))
                 for item in train for k in range(group)]
        # as a training round does: update on four items in five, gate on the fifth (items, not
        # episodes, so the gate sees requests the update did not)
        batch = batch_of(plays)
        gated = np.array([held_out_for_gate(item.id, seed) for item, _, _ in plays])
        serving = encoder.state() if tuned else None
        started = time.perf_counter()
        candidate, stats = engine.update(batch.only(~gated), weights, encoder, trainer, planner.epsilon)
        update_s = time.perf_counter() - started
        holdout = batch.only(gated)
        if tuned:  # each version is scored with its own encoder
            new_p = chosen_probabilities(holdout, encoder, planner.epsilon, candidate)[0]
            trained = encoder.state()
            encoder.restore(serving)
            probs = [new_p, *chosen_probabilities(holdout, encoder, planner.epsilon, weights)]
        else:
            probs = chosen_probabilities(holdout, encoder, planner.epsilon, candidate, weights)
        verdict = gate(holdout, *probs, margin=trainer.gate_margin, seed=seed)
        if verdict["passed"]:
            weights = candidate
            if tuned:
                encoder.restore(trained)
                scorer.refresh()
        point = {"round": r + 1, "episodes": len(plays) * (r + 1),
                 "train_success": round(float(np.mean([p["ok"] for _, _, p in plays])), 4),
                 "forced_share": round(float(np.mean([p["choice"] >= 0 for _, _, p in plays])), 4),
                 "gate": {k: verdict[k] for k in ("passed", "difference", "ci95")},
                 **evaluate(weights, scorer, test), "update_s": round(update_s, 2),
                 "decisions_per_s": stats["decisions_per_s"]}
        curve.append(point)
        print(json.dumps(point), flush=True)
    return {"date": date.today().isoformat(), "seed": seed, "encoder": encoder_name,
            "encoder_learning_rate": encoder_lr if tuned else None, "minibatch": minibatch if tuned else None,
            "device": stats["device"] if curve else None, "categories": list(CATEGORIES), "group": group,
            "items": len(items), "train_items": len(train), "held_out_items": len(test),
            "held_out_gold_seen_in_training": round(sum(i.gold in seen for i in test) / len(test), 4),
            "zero_shot": zero_shot, "trained": curve[-1] if curve else zero_shot, "curve": curve,
            "trainer": trainer.model_dump(exclude={"reward"})}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--held-out", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--encoder", default="static", choices=["static", "minilm", "minilm-tuned"])
    parser.add_argument("--encoder-lr", type=float, default=2e-5, help="minilm-tuned: the encoder's learning rate")
    parser.add_argument("--minibatch", type=int, default=4096, help="minilm-tuned: decisions per step")
    parser.add_argument("--trainer", action="append", default=[], metavar="KEY=VALUE", help="a trainer setting")
    args = parser.parse_args()
    trainer = TrainerConfig.model_validate({"seed": args.seed, "device": args.device,
                                            **dict(item.split("=", 1) for item in args.trainer)})
    result = run(args.rounds, args.group, args.held_out, args.seed, trainer, args.encoder, args.encoder_lr,
                 args.minibatch)
    RESULTS.mkdir(exist_ok=True)
    tuned = f"-lr{args.encoder_lr:g}" if args.encoder == "minilm-tuned" else ""
    if (args.encoder, args.device) == ("static", "cpu"):  # the default run; another seed is named for it
        suffix = f"-seed{args.seed}" if args.seed else ""
    else:
        suffix = f"-{args.encoder}{tuned}-{args.device}-seed{args.seed}"
    path = RESULTS / f"bfcl_heldout{suffix}-{result['date']}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=1))


if __name__ == "__main__":
    main()
