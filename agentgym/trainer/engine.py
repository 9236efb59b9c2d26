"""Training engines behind one interface; here the built-in torch engine for the default planner.

An engine turns a batch of logged decisions and the policy that served them into new weights
and statistics; the training round (`agentgym.trainer.rounds`) gates and registers the result.
An engine that trains elsewhere (an external job, Agent Lightning's trainer for LLM planners)
implements the same `update` by submitting the batch and waiting for its weights.

The torch engine's update is a PPO/GRPO step on the policy of `agentgym.trainer.policy`: the
probability of each logged choice under the new weights (its action's probability; 0 for a
forced tool that is no longer the top one) over the probability it was sampled with (the
recorded propensity) is the ratio, clipped to [1 - clip, 1 + clip]; advantages are
group-relative (`agentgym.trainer.batch.advantages`); each decision weighs 1 / its episode's
decisions; a KL term over the three actions keeps the new policy near the one that served.
The ratio trains the action scores; the tool scores learn from an auxiliary term
(`outcome_weight`): which tool worked after each decision, the model's own calls under
"defer" included: most decisions defer, and each still says whether the tool the model
picked was right. Seeded, deterministic.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from agentgym.config import TrainerConfig
from agentgym.trainer.batch import Batch, advantages
from agentgym.trainer.encoder import Encoder
from agentgym.trainer.policy import DEFER, OFFER, PolicyWeights, action_of, bucket, choice_probability, probabilities


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
    mask: np.ndarray  # (n, m): real candidates
    action: np.ndarray  # (n,) the logged action's index in ACTIONS (force, offer, defer)
    forced: np.ndarray  # (n,) the forced tool's column; -1 when none was forced

    @classmethod
    def of(cls, batch: Batch, encoder: Encoder) -> Tensors:
        m = max((len(c) for c in batch.candidates), default=0)
        order = {h: i for i, h in enumerate(batch.specs)}
        tools = encoder.encode_many([text for _, text in batch.specs.values()])
        buckets = np.array([bucket(name) for name, _ in batch.specs.values()], np.int64)
        candidates = np.zeros((len(batch), m), np.int64)
        mask = np.zeros((len(batch), m), bool)
        for i, hashes in enumerate(batch.candidates):
            candidates[i, : len(hashes)] = [order[h] for h in hashes]
            mask[i, : len(hashes)] = True
        action = np.array([action_of(int(c)) for c in batch.choices], np.int64)
        forced = np.where(np.isin(batch.choices, (DEFER, OFFER)), -1, batch.choices)
        return cls(encoder.encode_many(batch.contexts), tools, buckets, candidates, mask, action, forced)


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
        candidates, mask = as_tensor(arrays.candidates), as_tensor(arrays.mask)
        action, forced_tool = as_tensor(arrays.action), as_tensor(arrays.forced)
        propensity = as_tensor(batch.propensities, dtype=torch.float32)
        advantage = as_tensor(advantages(batch.rewards, batch.weights, batch.groups, batch.episodes),
                              dtype=torch.float32)
        weight = as_tensor(batch.weights / batch.weights.sum(), dtype=torch.float32)
        params = {k: torch.tensor(v, device=device, requires_grad=True) for k, v in current.arrays().items()}
        similarity = torch.gather(contexts @ tools.T, 1, candidates)  # fixed: the encoder is not trained here

        def tool_scores(p: dict[str, torch.Tensor]) -> torch.Tensor:  # (n, m); -inf where padded
            per_tool = (contexts @ p["P"]) @ (tools @ p["Q"]).T + contexts @ p["U"][buckets].T + p["b"][buckets]
            scores = p["alpha"][0] * similarity + torch.gather(per_tool, 1, candidates)
            return scores.masked_fill(~mask, float("-inf"))

        def action_probabilities(p: dict[str, torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
            """(n, 3): force, offer, defer. `scores`: tool_scores(p), computed once a step for this,
            the chosen probability and the outcome term. The ranking's confidence enters the
            action scores as a given: the tool scores learn only from the outcome term."""
            confidence = torch.softmax(scores, dim=1).amax(dim=1).detach()
            actions = torch.stack([p["b_force"][0] + p["c_force"][0] * confidence,
                                   p["b_offer"][0] + p["c_offer"][0] * confidence,
                                   p["b_defer"].expand_as(confidence)], dim=1)
            return (1 - epsilon) * torch.softmax(actions, dim=1) + epsilon / 3

        def chosen_probability(probs: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            """Each logged choice's probability: its action's; 0 for a forced tool no longer on top."""
            still_top = (forced_tool < 0) | (scores.argmax(dim=1) == forced_tool)
            return probs[rows, action] * still_top

        def outcome_loss(scores: torch.Tensor) -> torch.Tensor:
            """The tool scores, as a classifier of which tool works here: up for a call that
            worked, down for one that failed, whatever the action was (the model's own choices
            under "defer" too)."""
            if not labelled.any():
                return torch.zeros((), device=device)
            log_p = torch.log_softmax(scores[labelled], dim=1)
            chosen_log_p = log_p[torch.arange(len(called), device=device), called]
            worked = called_ok.float()
            return -(worked * chosen_log_p + (1 - worked) * torch.log1p(-chosen_log_p.exp().clamp(max=1 - 1e-6))).mean()

        def kl_from_before(now: torch.Tensor) -> torch.Tensor:  # per decision
            return (before * (torch.log(before.clamp_min(1e-12)) - torch.log(now.clamp_min(1e-12)))).sum(dim=1)

        labelled = as_tensor((batch.called >= 0) & (batch.called_ok >= 0))
        called, called_ok = as_tensor(batch.called)[labelled], as_tensor(batch.called_ok)[labelled]
        rows = torch.arange(len(batch), device=device)
        with torch.no_grad():
            before = action_probabilities(params, tool_scores(params))
        learned = [params[k] for k in ("P", "Q", "U", "b")]  # the prior's scale and the action scores stay
        optimizer = torch.optim.AdamW([{"params": learned, "weight_decay": config.weight_decay},
                                       {"params": [params[k] for k in ("alpha", *PolicyWeights.ACTION_NAMES)],
                                        "weight_decay": 0.0}], lr=config.learning_rate)
        for _ in range(config.steps):
            scores = tool_scores(params)
            now = action_probabilities(params, scores)
            ratio = chosen_probability(now, scores) / propensity
            surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - config.clip, 1 + config.clip) * advantage)
            loss = (-(weight * surrogate).sum() + config.kl * (weight * kl_from_before(now)).sum()
                    + config.outcome_weight * outcome_loss(scores))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        new = PolicyWeights(**{k: v.detach().cpu().numpy().astype(np.float32) for k, v in params.items()})
        with torch.no_grad():
            final_kl = float((weight * kl_from_before(action_probabilities(params, tool_scores(params)))).sum())
        return new, {"engine": self.name, "device": str(device), "decisions": len(batch),
                     "episodes": len(set(batch.episodes)), "steps": config.steps, "seed": config.seed,
                     "loss": float(loss.detach()), "kl": final_kl, "mean_reward": float(np.average(batch.rewards,
                                                                                          weights=batch.weights)),
                     "seconds": round(time.perf_counter() - started, 3)}


def chosen_probabilities(batch: Batch, encoder: Encoder, epsilon: float, *weights: PolicyWeights) -> list[np.ndarray]:
    """Each logged choice's probability under each of `weights` (numpy, as the planner computes it);
    the batch is encoded once for all of them."""
    arrays = Tensors.of(batch, encoder)
    out = [np.empty(len(batch)) for _ in weights]
    for i in range(len(batch)):
        index = arrays.candidates[i, : int(arrays.mask[i].sum())]
        context, tools, buckets = arrays.contexts[i], arrays.tools[index], arrays.buckets[index]
        for probs_of, w in zip(out, weights, strict=True):
            scores = w.tool_scores(context, tools, buckets)
            action_probs = probabilities(w.action_scores(scores), epsilon)
            probs_of[i] = choice_probability(int(batch.choices[i]), scores, action_probs)
    return out
