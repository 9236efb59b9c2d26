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
picked was right. That term also reads the latest decisions of earlier versions
(`trainer.outcome_decisions`; `Batch.on_policy` marks the serving version's, which alone feed
the ratio, the KL term and the advantages): which tool works for which request does not depend
on the policy that asked, and a round that learnt it from one version's batch alone forgot
what the batches before had taught. Each tool's score whatever the request (`b`) is left as it
is (`UNTRAINED`). Seeded, deterministic.

On a GPU the engine can also fine-tune the encoder (`TorchEngine(encoder_learning_rate=...)`
with a `TransformerEncoder`): the same loss, with the context and tool vectors computed through
all-MiniLM-L6-v2 on random minibatches, so its gradient reaches the encoder's weights too.
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


# Not trained: a tool's score whatever the request. Each call that worked pushes down the
# candidates beside it, so it learnt a tool's popularity, which says nothing of a new request;
# `U` learns each tool's facts for the kind of request. Left out, the held-out BFCL gain rose on
# four splits of five and no scenario moved beyond its run-to-run spread (BENCHMARKS.md).
UNTRAINED = frozenset({"b"})


class Engine(Protocol):
    name: str

    def update(self, batch: Batch, current: PolicyWeights, encoder: Encoder, config: TrainerConfig,
               epsilon: float) -> tuple[PolicyWeights, dict[str, Any]]:
        """`epsilon`: the exploration the planner mixes in when it serves the weights."""


@dataclass
class Tensors:
    """A batch as arrays. The offered tools are few distinct ones: each decision's candidates
    are indices into the distinct tools' vectors, so a step costs (decisions x distinct tools)."""

    contexts: np.ndarray  # (n, d + words): the vectors, then the hashed words
    tools: np.ndarray  # (k, d + words): the distinct tools' vectors, then their hashed words
    buckets: np.ndarray  # (k,)
    candidates: np.ndarray  # (n, m): index into `tools` (0 where padded)
    mask: np.ndarray  # (n, m): real candidates
    action: np.ndarray  # (n,) the logged action's index in ACTIONS (force, offer, defer)
    forced: np.ndarray  # (n,) the forced tool's column; -1 when none was forced
    offered: np.ndarray  # (n, m) the candidates a logged offer kept (all, where not recorded)

    @classmethod
    def of(cls, batch: Batch, encoder: Encoder | None) -> Tensors:
        """With no `encoder`, the layout alone (empty vectors): a trainable encoder makes its own."""
        m = max((len(c) for c in batch.candidates), default=0)
        order = {h: i for i, h in enumerate(batch.specs)}
        encode = encoder.encode_many_with_words if encoder else lambda texts: np.zeros((len(texts), 0), np.float32)
        tools = encode([text for _, text in batch.specs.values()])
        buckets = np.array([bucket(name) for name, _ in batch.specs.values()], np.int64)
        candidates = np.zeros((len(batch), m), np.int64)
        mask = np.zeros((len(batch), m), bool)
        for i, hashes in enumerate(batch.candidates):
            candidates[i, : len(hashes)] = [order[h] for h in hashes]
            mask[i, : len(hashes)] = True
        action = np.array([action_of(int(c)) for c in batch.choices], np.int64)
        forced = np.where(np.isin(batch.choices, (DEFER, OFFER)), -1, batch.choices)
        offered = mask.copy()
        for i, names in enumerate(batch.offered):
            if names and batch.choices[i] == OFFER:
                offered[i, : len(batch.candidates[i])] = [batch.specs[h][0] in names for h in batch.candidates[i]]
        return cls(encode(batch.contexts), tools, buckets, candidates, mask, action, forced, offered)


def usable(batch: Batch) -> Batch:
    """Decisions whose every candidate's text is known (a spec row can be lost with a crash)."""
    return batch.only(np.array([all(h in batch.specs for h in c) for c in batch.candidates], bool))


class TorchEngine:
    """`encoder_learning_rate`: also fine-tune the encoder (a `TransformerEncoder`, on a GPU) at this
    rate, each step on a random minibatch of `minibatch` decisions; None keeps the encoder fixed
    (the static one the proxy serves) and steps on the whole batch."""

    name = "torch"

    def __init__(self, encoder_learning_rate: float | None = None, minibatch: int = 4096) -> None:
        self.encoder_learning_rate = encoder_learning_rate
        self.minibatch = minibatch

    def update(self, batch: Batch, current: PolicyWeights, encoder: Encoder, config: TrainerConfig,
               epsilon: float) -> tuple[PolicyWeights, dict[str, Any]]:
        import torch  # only the trainer needs it; the proxy scores with numpy

        started = time.perf_counter()
        torch.manual_seed(config.seed)
        tune = self.encoder_learning_rate is not None
        if tune and not getattr(encoder, "trainable", False):
            raise ValueError("fine-tuning the encoder needs a trainable encoder (TransformerEncoder)")
        device = (encoder.device if tune else torch.device("cuda" if config.device == "auto" and torch.cuda.is_available()
                                                            else "cpu" if config.device == "auto" else config.device))
        arrays = Tensors.of(batch, None if tune else encoder)
        as_tensor = lambda a, **kw: torch.as_tensor(a, device=device, **kw)  # noqa: E731
        buckets, candidates, mask = as_tensor(arrays.buckets), as_tensor(arrays.candidates), as_tensor(arrays.mask)
        action, forced_tool, offered = as_tensor(arrays.action), as_tensor(arrays.forced), as_tensor(arrays.offered)
        propensity = as_tensor(batch.propensities, dtype=torch.float32)
        serving = batch.serving
        group_relative = np.zeros(len(batch))
        group_relative[serving] = advantages(batch.rewards[serving], batch.weights[serving], batch.groups[serving],
                                             [e for e, on in zip(batch.episodes, serving, strict=True) if on])
        advantage = as_tensor(group_relative, dtype=torch.float32)
        weight = as_tensor(batch.weights * serving, dtype=torch.float32)  # earlier versions' decisions: outcomes only
        labelled = as_tensor((batch.called >= 0) & (batch.called_ok >= 0))
        called, called_ok = as_tensor(batch.called), as_tensor(batch.called_ok)
        current = current.widened(encoder.dimensions_with_words)  # weights from before the words: they start at 0
        params = {k: torch.tensor(v, device=device, requires_grad=k not in UNTRAINED)
                  for k, v in current.arrays().items()}
        vectors = (TunedVectors(encoder, batch, candidates, buckets) if tune
                   else FixedVectors(as_tensor(arrays.contexts), as_tensor(arrays.tools), candidates, buckets))

        def forward(p: dict[str, torch.Tensor], rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """The tool scores of `rows` (r, m; -inf where padded) and their actions' probabilities
            (r, 3: force, offer, defer), the scores computed once a step for these, the chosen
            probability and the outcome term. The ranking's confidence enters the action scores as
            a given: the tool scores learn only from the outcome term."""
            contexts, tools, tool_buckets, index = vectors(rows)
            d = p["Q"].shape[0]  # the vectors' width; the words follow (none from a trainable encoder)
            per_tool = ((contexts @ p["P"]) @ (tools[:, :d] @ p["Q"]).T + contexts @ p["U"][tool_buckets].T
                        + p["b"][tool_buckets])
            similar = (p["alpha"][0] * (contexts[:, :d] @ tools[:, :d].T)
                       + p["beta"][0] * (contexts[:, d:] @ tools[:, d:].T))
            scores = torch.gather(similar + per_tool, 1, index)
            scores = scores.masked_fill(~mask[rows], float("-inf"))
            confidence = torch.softmax(scores, dim=1).amax(dim=1).detach()
            actions = torch.stack([p["b_force"][0] + p["c_force"][0] * confidence,
                                   p["b_offer"][0] + p["c_offer"][0] * confidence,
                                   p["b_defer"].expand_as(confidence)], dim=1)
            return scores, (1 - epsilon) * torch.softmax(actions, dim=1) + epsilon / 3

        def chosen_probability(probs: torch.Tensor, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            """Each logged choice's probability: its action's; 0 for a forced tool no longer on top,
            or an offer without the top tool (`policy.choice_probability`)."""
            top = scores.argmax(dim=1)
            forced_ok = (forced_tool[rows] < 0) | (top == forced_tool[rows])
            offered_ok = offered[rows].gather(1, top[:, None]).squeeze(1)
            return probs[torch.arange(len(rows), device=device), action[rows]] * forced_ok * offered_ok

        def outcome_loss(scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            """The tool scores, as a classifier of which tool works here: up for a call that
            worked, down for one that failed, whatever the action was (the model's own choices
            under "defer" too)."""
            known = labelled[rows]
            if not known.any():
                return torch.zeros((), device=device)
            log_p = torch.log_softmax(scores[known], dim=1)
            chosen_log_p = log_p[torch.arange(int(known.sum()), device=device), called[rows][known]]
            worked = called_ok[rows][known].float()
            return -(worked * chosen_log_p + (1 - worked) * torch.log1p(-chosen_log_p.exp().clamp(max=1 - 1e-6))).mean()

        def kl_from_before(now: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # per decision
            then = before[rows]
            return (then * (torch.log(then.clamp_min(1e-12)) - torch.log(now.clamp_min(1e-12)))).sum(dim=1)

        def loss(p: dict[str, torch.Tensor], rows: torch.Tensor) -> torch.Tensor:
            scores, now = forward(p, rows)
            w = weight[rows] / weight[rows].sum().clamp_min(1e-12)  # a minibatch may hold none of the serving's
            ratio = chosen_probability(now, scores, rows) / propensity[rows]
            surrogate = torch.minimum(ratio * advantage[rows],
                                      ratio.clamp(1 - config.clip, 1 + config.clip) * advantage[rows])
            return (-(w * surrogate).sum() + config.kl * (w * kl_from_before(now, rows)).sum()
                    + config.outcome_weight * outcome_loss(scores, rows))

        everything = torch.arange(len(batch), device=device)
        chunks = everything.split(self.minibatch) if tune else [everything]
        with torch.no_grad():
            before = torch.cat([forward(params, rows)[1] for rows in chunks])
        # the shared terms and each tool's own decay toward the prior; its scale and the action scores stay
        groups = [{"params": [params["P"], params["Q"]], "weight_decay": config.weight_decay},
                  {"params": [params["U"]], "weight_decay": config.tool_weight_decay},
                  {"params": [params[k] for k in ("alpha", "beta", *PolicyWeights.ACTION_NAMES)], "weight_decay": 0.0}]
        if tune:
            groups.append({"params": list(encoder.model.parameters()), "lr": self.encoder_learning_rate,
                           "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, fused=device.type == "cuda")
        draws = torch.Generator().manual_seed(config.seed)
        encoded_before = getattr(vectors, "encoded", 0)
        stepping = time.perf_counter()
        for _ in range(config.steps):
            rows = (torch.randperm(len(batch), generator=draws)[: self.minibatch].to(device) if tune else everything)
            step_loss = loss(params, rows)
            optimizer.zero_grad()
            step_loss.backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        step_s = time.perf_counter() - stepping
        encoded = getattr(vectors, "encoded", 0) - encoded_before
        new = PolicyWeights(**{k: v.detach().cpu().numpy().astype(np.float32) for k, v in params.items()})
        with torch.no_grad():
            final_kl = float(sum((weight[rows] * kl_from_before(forward(params, rows)[1], rows)).sum()
                                 for rows in chunks) / weight.sum())
        per_step = len(batch) if not tune else min(self.minibatch, len(batch))
        return new, {"engine": self.name, "device": str(device), "encoder": "tuned" if tune else "fixed",
                     "decisions": int(serving.sum()),
                     "episodes": len({e for e, on in zip(batch.episodes, serving, strict=True) if on}),
                     "earlier_decisions": int((~serving).sum()),  # read by the outcome term only
                     "outcome_decisions": int(((batch.called >= 0) & (batch.called_ok >= 0)).sum()),
                     "steps": config.steps,
                     "seed": config.seed, "loss": float(step_loss.detach()), "kl": final_kl,
                     "mean_reward": float(np.average(batch.rewards[serving], weights=batch.weights[serving])),
                     "decisions_per_s": round(config.steps * per_step / step_s, 1),
                     **({"encoded_texts_per_s": round(encoded / step_s, 1)} if tune else {}),
                     "seconds": round(time.perf_counter() - started, 3)}


class FixedVectors:
    """The static encoder's vectors, computed once: a step reads rows of them."""

    def __init__(self, contexts: Any, tools: Any, candidates: Any, buckets: Any) -> None:
        self.contexts, self.tools, self.candidates, self.buckets = contexts, tools, candidates, buckets

    def __call__(self, rows: Any) -> tuple[Any, Any, Any, Any]:
        """(contexts of `rows`, the tools they may index, those tools' buckets, the index)."""
        return self.contexts[rows], self.tools, self.buckets, self.candidates[rows]


class TunedVectors:
    """A trainable encoder's vectors, with gradients, for the distinct contexts and tools of each
    minibatch (a GRPO group repeats its request; requests repeat their tools), in one encoder call:
    on a GPU a step is bound by kernel launches, not arithmetic."""

    def __init__(self, encoder: Any, batch: Batch, candidates: Any, buckets: Any) -> None:
        import torch

        contexts = list(dict.fromkeys(batch.contexts))
        row_of = {t: i for i, t in enumerate(contexts)}
        self.encoder, self.candidates, self.buckets = encoder, candidates, buckets
        self.context_of = torch.as_tensor([row_of[t] for t in batch.contexts], device=encoder.device)
        self.tokens = encoder.tokens(contexts + [text for _, text in batch.specs.values()])  # contexts, then tools
        self.first_tool = len(contexts)
        self.encoded = 0  # texts through the encoder so far

    def __call__(self, rows: Any) -> tuple[Any, Any, Any, Any]:
        import torch

        contexts, context_index = torch.unique(self.context_of[rows], return_inverse=True)
        tools, index = torch.unique(self.candidates[rows], return_inverse=True)
        vectors = self.encoder.vectors(self.tokens, torch.cat([contexts, self.first_tool + tools]))
        self.encoded += len(vectors)
        return vectors[: len(contexts)][context_index], vectors[len(contexts):], self.buckets[tools], index


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
            probs_of[i] = choice_probability(int(batch.choices[i]), scores, action_probs, arrays.offered[i, : len(index)])
    return out
