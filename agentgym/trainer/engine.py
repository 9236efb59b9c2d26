"""Training engines behind one interface; here the built-in torch engine for the default planner.

An engine turns a batch of logged decisions and the policy that served them into new weights
and statistics; the training round (`agentgym.trainer.rounds`) gates and registers the result.
An engine that trains elsewhere (an external job, Agent Lightning's trainer for LLM planners)
implements the same `update` by submitting the batch and waiting for its weights.

The torch engine's update is a PPO/GRPO step on the policy of `agentgym.trainer.policy`: the
probability of each logged choice under the new weights over the probability it was sampled
with (the recorded propensity) is the ratio, clipped to [1 - clip, 1 + clip]; advantages are
group-relative (`agentgym.trainer.batch.advantages`); each decision weighs 1 / its episode's
decisions; a KL term keeps the new policy near the one that served. An auxiliary term
(`outcome_weight`) teaches the tool scores which tool worked after each decision, the model's
own calls under "defer" included: most decisions defer, and each still says whether the tool
the model picked was right. Seeded, deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agentgym.config import TrainerConfig
from agentgym.trainer.batch import Batch, advantages
from agentgym.trainer.encoder import Encoder
from agentgym.trainer.policy import DEFER, OFFER, PolicyWeights, bucket


class Engine(Protocol):
    name: str

    def update(self, batch: Batch, current: PolicyWeights, encoder: Encoder, config: TrainerConfig,
               epsilon: float) -> tuple[PolicyWeights, dict[str, Any]]:
        """`epsilon`: the exploration the planner mixes in when it serves the weights."""


@dataclass
class Tensors:
    """A batch as arrays. The offered tools are few distinct ones: each decision's candidates
    are indices into the distinct tools' vectors, so a step costs (decisions x distinct tools)."""

    contexts: np.ndarray  # (n, d)
    tools: np.ndarray  # (k, d): the distinct tools' vectors
    buckets: np.ndarray  # (k,)
    candidates: np.ndarray  # (n, m): index into `tools` (0 where padded)
    mask: np.ndarray  # (n, m + 2): real candidates, then offer and defer (the last two columns)
    chosen: np.ndarray  # (n,) column of the choice

    @classmethod
    def of(cls, batch: Batch, encoder: Encoder) -> Tensors:
        m = max((len(c) for c in batch.candidates), default=0)
        order = {h: i for i, h in enumerate(batch.specs)}
        tools = encoder.encode_many([text for _, text in batch.specs.values()])
        buckets = np.array([bucket(name) for name, _ in batch.specs.values()], np.int64)
        candidates = np.zeros((len(batch), m), np.int64)
        mask = np.zeros((len(batch), m + 2), bool)
        mask[:, m:] = True
        for i, hashes in enumerate(batch.candidates):
            candidates[i, : len(hashes)] = [order[h] for h in hashes]
            mask[i, : len(hashes)] = True
        chosen = np.where(batch.choices == DEFER, m + 1, np.where(batch.choices == OFFER, m, batch.choices))
        return cls(encoder.encode_many(batch.contexts), tools, buckets, candidates, mask, chosen)


def usable(batch: Batch) -> Batch:
    """Decisions whose every candidate's text is known (a spec row can be lost with a crash)."""
    return batch.only(np.array([all(h in batch.specs for h in c) for c in batch.candidates], bool))


class TorchEngine:
    name = "torch"

    def update(self, batch: Batch, current: PolicyWeights, encoder: Encoder, config: TrainerConfig,
               epsilon: float) -> tuple[PolicyWeights, dict[str, Any]]:
        import torch  # only the trainer needs it; the proxy scores with numpy

        started = time.perf_counter()
        torch.manual_seed(config.seed)
        device = torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                              else "cpu" if config.device == "auto" else config.device)
        arrays = Tensors.of(batch, encoder)
        as_tensor = lambda a, **kw: torch.as_tensor(a, device=device, **kw)  # noqa: E731
        contexts, tools, buckets = as_tensor(arrays.contexts), as_tensor(arrays.tools), as_tensor(arrays.buckets)
        candidates, mask, chosen = as_tensor(arrays.candidates), as_tensor(arrays.mask), as_tensor(arrays.chosen)
        propensity = as_tensor(batch.propensities, dtype=torch.float32)
        advantage = as_tensor(advantages(batch.rewards, batch.weights, batch.groups, batch.episodes),
                              dtype=torch.float32)
        weight = as_tensor(batch.weights / batch.weights.sum(), dtype=torch.float32)
        params = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in current.arrays().items()}
        valid = mask.sum(dim=1, keepdim=True)
        similarity = torch.gather(contexts @ tools.T, 1, candidates)  # fixed: the encoder is not trained here

        def tool_scores(p: dict[str, torch.Tensor]) -> torch.Tensor:  # (n, m): forcing each candidate
            per_tool = (contexts @ p["P"]) @ (tools @ p["Q"]).T + contexts @ p["U"][buckets].T + p["b"][buckets]
            return p["alpha"][0] * similarity + torch.gather(per_tool, 1, candidates)

        def probabilities(p: dict[str, torch.Tensor], forced: torch.Tensor) -> torch.Tensor:
            """`forced`: tool_scores(p), computed once a step for this and the outcome term."""
            scores = torch.cat([forced, (contexts @ p["v_offer"] + p["b_offer"][0]).unsqueeze(1),
                                (contexts @ p["v"] + p["b_defer"][0]).unsqueeze(1)], dim=1)
            soft = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
            return ((1 - epsilon) * soft + epsilon / valid) * mask

        def outcome_loss(forced: torch.Tensor) -> torch.Tensor:
            """The tool scores, as a classifier of which tool works here: up for a call that
            worked, down for one that failed, whatever the action was (the model's own choices
            under "defer" too)."""
            if not labelled.any():
                return torch.zeros((), device=device)
            log_p = torch.log_softmax(forced[labelled].masked_fill(~mask[labelled, :-2], float("-inf")), dim=1)
            chosen_log_p = log_p[torch.arange(len(called), device=device), called]
            worked = called_ok.float()
            return -(worked * chosen_log_p + (1 - worked) * torch.log1p(-chosen_log_p.exp().clamp(max=1 - 1e-6))).mean()

        def kl_from_before(now: torch.Tensor) -> torch.Tensor:  # per decision
            return (before * (torch.log(before.clamp_min(1e-12)) - torch.log(now.clamp_min(1e-12)))).sum(dim=1)

        labelled = as_tensor((batch.called >= 0) & (batch.called_ok >= 0))
        called, called_ok = as_tensor(batch.called)[labelled], as_tensor(batch.called_ok)[labelled]
        with torch.no_grad():
            before = probabilities(params, tool_scores(params))
        learned = [params[k] for k in ("P", "Q", "U", "b", "v", "v_offer")]  # the prior's scale and biases stay
        optimizer = torch.optim.AdamW([{"params": learned, "weight_decay": config.weight_decay},
                                       {"params": [params[k] for k in ("alpha", "b_defer", "b_offer")],
                                        "weight_decay": 0.0}], lr=config.learning_rate)
        rows = torch.arange(len(batch), device=device)
        for _ in range(config.steps):
            forced = tool_scores(params)
            now = probabilities(params, forced)
            ratio = now[rows, chosen] / propensity
            surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - config.clip, 1 + config.clip) * advantage)
            loss = (-(weight * surrogate).sum() + config.kl * (weight * kl_from_before(now)).sum()
                    + config.outcome_weight * outcome_loss(forced))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        new = PolicyWeights(**{k: v.detach().cpu().numpy().astype(np.float32) for k, v in params.items()})
        with torch.no_grad():
            final_kl = float((weight * kl_from_before(probabilities(params, tool_scores(params)))).sum())
        return new, {"engine": self.name, "device": str(device), "decisions": len(batch),
                     "episodes": len(set(batch.episodes)), "steps": config.steps, "seed": config.seed,
                     "loss": float(loss.detach()), "kl": final_kl, "mean_reward": float(np.average(batch.rewards,
                                                                                          weights=batch.weights)),
                     "seconds": round(time.perf_counter() - started, 3)}


def chosen_probabilities(batch: Batch, encoder: Encoder, epsilon: float, *weights: PolicyWeights) -> list[np.ndarray]:
    """Each logged choice's probability under each of `weights` (numpy, as the planner computes it);
    the batch is encoded once for all of them."""
    from agentgym.trainer.policy import probabilities

    arrays = Tensors.of(batch, encoder)
    out = [np.empty(len(batch)) for _ in weights]
    for i in range(len(batch)):
        n = int(arrays.mask[i].sum()) - 2
        index = arrays.candidates[i, :n]
        choice = int(batch.choices[i])
        column = n + 1 if choice == DEFER else n if choice == OFFER else choice
        for probs_of, w in zip(out, weights, strict=True):
            probs_of[i] = probabilities(w.scores(arrays.contexts[i], arrays.tools[index], arrays.buckets[index]),
                                        epsilon)[column]
    return out
