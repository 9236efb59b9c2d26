"""The default planner's policy: what it scores, and the action it samples.

For a request, `c` is the encoded context (the latest user turn and the tool results since)
and `t_j` each offered tool's encoded text (name, description, parameter names). Forcing tool
j scores

    s_j = alpha * c.t_j  +  (c P).(t_j Q)  +  U[h_j].c  +  b[h_j]

The first term generalises to tools never seen (text similarity); the low-rank bilinear term
learns which kinds of request go with which kinds of tool; `U` and `b`, indexed by a hash of
the tool's name, learn this deployment's facts about each tool ("this one fails for refunds").
Two more actions score from the context alone: "offer" (`v_offer.c + b_offer`: send only the
likeliest tools, by the force scores, up to `coverage` of their probability and at most
`max_offered`: fewer tokens, fewer distractors) and "defer" (`v.c + b_defer`: send the request
unchanged). The policy samples one action from softmax(scores) mixed with `epsilon` uniform
exploration and records its probability (the propensity).

numpy only: the proxy scores with this; the trainer's torch engine mirrors the same formula.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from agentgym.config import PlannerConfig

BUCKETS = 2048
RANK = 16
DEFER, OFFER = -1, -2  # a decision's `choice` when it forced no tool
Action = Literal["defer", "force", "offer"]


def bucket(tool_name: str) -> int:
    """A stable bucket for a tool's name (the same across processes and versions)."""
    return int.from_bytes(hashlib.blake2b(tool_name.encode(), digest_size=4).digest(), "little") % BUCKETS


@dataclass
class PolicyWeights:
    alpha: np.ndarray  # shape (1,)
    P: np.ndarray  # (d, RANK)
    Q: np.ndarray  # (d, RANK)
    U: np.ndarray  # (BUCKETS, d)
    b: np.ndarray  # (BUCKETS,)
    v: np.ndarray  # (d,)
    b_defer: np.ndarray  # (1,)
    v_offer: np.ndarray  # (d,)
    b_offer: np.ndarray  # (1,)

    NAMES = ("alpha", "P", "Q", "U", "b", "v", "b_defer", "v_offer", "b_offer")

    @classmethod
    def zero_shot(cls, dimensions: int, *, alpha: float = 10.0, b_defer: float = 0.0, b_offer: float | None = None,
                  seed: int = 0) -> PolicyWeights:
        """Text similarity alone: the untrained starting point (and the encoder baseline)."""
        rng = np.random.default_rng(seed)
        small = lambda *shape: (rng.standard_normal(shape) * 0.01).astype(np.float32)  # noqa: E731 - breaks symmetry
        return cls(np.array([alpha], np.float32), small(dimensions, RANK), small(dimensions, RANK),
                   np.zeros((BUCKETS, dimensions), np.float32), np.zeros(BUCKETS, np.float32),
                   np.zeros(dimensions, np.float32), np.array([b_defer], np.float32),
                   np.zeros(dimensions, np.float32), np.array([b_defer - 2 if b_offer is None else b_offer], np.float32))

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.NAMES}

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays())
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PolicyWeights:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            missing = [n for n in cls.NAMES if n not in arrays]
            if missing:
                raise ValueError(f"policy weights lack {', '.join(missing)}")
            weights = cls(**{n: arrays[n].astype(np.float32) for n in cls.NAMES})
        d = weights.v.shape[0]
        shapes = {"alpha": (1,), "P": (d, RANK), "Q": (d, RANK), "U": (BUCKETS, d), "b": (BUCKETS,), "v": (d,),
                  "b_defer": (1,), "v_offer": (d,), "b_offer": (1,)}
        for name, shape in shapes.items():
            if getattr(weights, name).shape != shape or not np.isfinite(getattr(weights, name)).all():
                raise ValueError(f"policy weight {name} has shape {getattr(weights, name).shape}, expected {shape}, "
                                 "or is not finite")
        return weights

    def scores(self, context: np.ndarray, tools: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """Scores of forcing each offered tool, then of "offer", then of "defer"."""
        tool_scores = (self.alpha[0] * (tools @ context) + (tools @ self.Q) @ (context @ self.P)
                       + self.U[buckets] @ context + self.b[buckets])
        return np.append(tool_scores, [context @ self.v_offer + self.b_offer[0], context @ self.v + self.b_defer[0]])


def probabilities(scores: np.ndarray, epsilon: float) -> np.ndarray:
    shifted = np.exp(scores - scores.max())
    return (1 - epsilon) * shifted / shifted.sum() + epsilon / len(scores)


@dataclass
class Choice:
    """What the policy chose for one request."""

    action: Action
    tool: int  # the forced tool's index among the offered ones; OFFER or DEFER otherwise
    propensity: float
    offered: list[int] = field(default_factory=list)  # indices offered after the action


def choose(probs: np.ndarray, config: PlannerConfig, rng: np.random.Generator) -> Choice:
    """Sample an action from `probs` (force each offered tool, offer, defer) and apply it."""
    n_tools = len(probs) - 2
    index = int(rng.choice(len(probs), p=probs / probs.sum()))
    propensity = float(probs[index])
    if index == n_tools + 1:
        return Choice("defer", DEFER, propensity, list(range(n_tools)))
    if index < n_tools:
        return Choice("force", index, propensity, [index])
    tool_probs = probs[:n_tools] / probs[:n_tools].sum()
    kept, covered = [], 0.0
    for i in np.argsort(-tool_probs, kind="stable"):
        if len(kept) >= config.max_offered or covered >= config.coverage:
            break
        kept.append(int(i))
        covered += float(tool_probs[i])
    return Choice("offer", OFFER, propensity, sorted(kept))
