"""The default planner's policy: how it ranks the offered tools, and the action it samples.

For a request, `c` is the encoded context (the latest user turn and the tool results since:
its vector, then its hashed words, `encoder.word_bag`) and `t_j` each offered tool's encoded
text (name, description, parameter names: its vector, then its words). Tool j scores

    s_j = alpha * c'.t'_j  +  beta * w(c).w(t_j)  +  (c P).(t'_j Q)  +  U[h_j].c  +  b[h_j]

(c' and t'_j are the vectors without the words; w(.) the words alone). The first two terms
generalise to tools never seen: text similarity, and the words a request shares with a tool's
text (learned from 0: the untrained ranking is text similarity alone); the low-rank bilinear term
learns which kinds of request go with which kinds of tool; `U`, indexed by a hash of the tool's
name, learns this deployment's facts about each tool ("this one fails for refunds"), from the
words as well: which word of a request says which of two near-duplicate tools it needs. `b`, a
tool's score whatever the request, is not trained (`agentgym.trainer.engine.UNTRAINED`: it
learnt a tool's popularity, which says nothing of a new request); it is 0 in new versions, and
versions trained before keep theirs.
Weights trained before the words were read (P and U as wide as the vector alone, no `beta`)
read the vector alone, as they were trained.
The scores only rank the tools. The action is one of three, each scored from how sure the
ranking is (`confidence`: the top tool's softmax probability):

    force  b_force + c_force * confidence   make the model call the top-scored tool
    offer  b_offer + c_offer * confidence   send only the likeliest tools by softmax(s), up to
                                            `coverage`, at most `max_offered`
    defer  b_defer                          send the request unchanged

Five numbers: the actions learn from the few requests where they were explored, too few for a
score per context dimension (those overfit and drifted in the learning-curve runs). The policy
samples one of the three from softmax(action scores) mixed with `epsilon` uniform exploration
over the three, and records that probability (the propensity). Which tool is forced, or which
are offered, follows from the scores; so a logged "force tool j" has, under other weights, the
probability of "force" if j is still their top tool and 0 if not, and a logged offer the
probability of "offer" if it included their top tool and 0 if not: an offer made by a ranking
that left out what the new one ranks first says nothing of the new one's offers (the first
version's offers, ranked by text similarity alone, had kept the gate refusing every update that
offered more). Which tools rank first is the outcome term's lesson (`agentgym.trainer.engine`).

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
Action = Literal["force", "offer", "defer"]
ACTIONS: tuple[Action, ...] = ("force", "offer", "defer")  # the order of `PolicyWeights.action_scores`


def bucket(tool_name: str) -> int:
    """A stable bucket for a tool's name (the same across processes and versions)."""
    return int.from_bytes(hashlib.blake2b(tool_name.encode(), digest_size=4).digest(), "little") % BUCKETS


def action_of(choice: int) -> int:
    """A logged `choice` (a tool index, OFFER or DEFER) as its index in ACTIONS."""
    return 2 if choice == DEFER else 1 if choice == OFFER else 0


@dataclass
class PolicyWeights:
    alpha: np.ndarray  # shape (1,)
    beta: np.ndarray  # (1,): the shared words' weight
    P: np.ndarray  # (d + words, RANK)
    Q: np.ndarray  # (d, RANK)
    U: np.ndarray  # (BUCKETS, d + words): P and U read the context's words too
    b: np.ndarray  # (BUCKETS,)
    b_force: np.ndarray  # (1,)
    c_force: np.ndarray  # (1,)
    b_offer: np.ndarray  # (1,)
    c_offer: np.ndarray  # (1,)
    b_defer: np.ndarray  # (1,)

    NAMES = ("alpha", "beta", "P", "Q", "U", "b", "b_force", "c_force", "b_offer", "c_offer", "b_defer")
    ACTION_NAMES = NAMES[6:]  # the action scores' five numbers
    SINCE = {"beta": 0.0}  # weights added after versions were saved without them: their value in those

    @classmethod
    def zero_shot(cls, dimensions: int, *, context_dimensions: int | None = None, alpha: float = 10.0,
                  b_defer: float = 0.0, seed: int = 0) -> PolicyWeights:
        """Text similarity ranks the tools; "offer" scores 2 below `b_defer` and "force" 0. With a
        high `b_defer` it is the untrained model but for one request in eight offered the
        likeliest tools: enough for the update to grow "offer" where it pays (the ratio's clip
        lets an action's probability grow by at most 1 + clip a round), and forcing is left to
        exploration: it worked least in every scenario."""
        rng = np.random.default_rng(seed)
        small = lambda *shape: (rng.standard_normal(shape) * 0.01).astype(np.float32)  # noqa: E731 - breaks symmetry
        zeros = lambda *shape: np.zeros(shape, np.float32)  # noqa: E731
        context = context_dimensions or dimensions  # the context's vector and, if read, its words
        return cls(np.array([alpha], np.float32), zeros(1), small(context, RANK), small(dimensions, RANK),
                   zeros(BUCKETS, context), zeros(BUCKETS), zeros(1), zeros(1),
                   np.array([b_defer - 2], np.float32), zeros(1), np.array([b_defer], np.float32))

    def widened(self, context_dimensions: int) -> PolicyWeights:
        """The same policy reading a context of `context_dimensions` (the words added after the
        vector, with weight 0): what an update starts from when the weights serving predate them."""
        extra = context_dimensions - self.P.shape[0]
        if extra <= 0:
            return self
        return PolicyWeights(**{**self.arrays(), "P": np.pad(self.P, ((0, extra), (0, 0))),
                                "U": np.pad(self.U, ((0, 0), (0, extra)))})

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.NAMES}

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **self.arrays())
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> PolicyWeights:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            missing = [n for n in cls.NAMES if n not in arrays and n not in cls.SINCE]
            if missing:
                raise ValueError(f"policy weights lack {', '.join(missing)}")
            weights = cls(**{n: arrays[n].astype(np.float32) if n in arrays else np.array([cls.SINCE[n]], np.float32)
                             for n in cls.NAMES})
        d, c = weights.Q.shape[0], max(weights.P.shape[0], weights.Q.shape[0])  # the vector; with the words
        shapes = {"alpha": (1,), "beta": (1,), "P": (c, RANK), "Q": (d, RANK), "U": (BUCKETS, c), "b": (BUCKETS,),
                  **{name: (1,) for name in cls.ACTION_NAMES}}
        for name, shape in shapes.items():
            if getattr(weights, name).shape != shape or not np.isfinite(getattr(weights, name)).all():
                raise ValueError(f"policy weight {name} has shape {getattr(weights, name).shape}, expected {shape}, "
                                 "or is not finite")
        return weights

    def tool_scores(self, context: np.ndarray, tools: np.ndarray, buckets: np.ndarray) -> np.ndarray:
        """s_j of each offered tool (`tools` with or without their words); of the context, as much
        as these weights read."""
        d = self.Q.shape[0]
        vectors, context = tools[:, :d], context[: self.P.shape[0]]
        scores = (self.alpha[0] * (vectors @ context[:d]) + (vectors @ self.Q) @ (context @ self.P)
                  + self.U[buckets] @ context + self.b[buckets])
        if tools.shape[1] > d and context.shape[0] > d:  # both with their words
            scores += self.beta[0] * (tools[:, d:] @ context[d:])
        return scores

    def action_scores(self, tool_scores: np.ndarray) -> np.ndarray:
        """Scores of force, offer, defer (ACTIONS' order)."""
        confidence = 1.0 / np.exp(tool_scores - tool_scores.max()).sum()  # the top tool's softmax probability
        return np.array([self.b_force[0] + self.c_force[0] * confidence, self.b_offer[0] + self.c_offer[0] * confidence,
                         self.b_defer[0]])


def probabilities(action_scores: np.ndarray, epsilon: float) -> np.ndarray:
    """Each action's probability: softmax of its score, mixed with `epsilon` uniform exploration."""
    shifted = np.exp(action_scores - action_scores.max())
    return (1 - epsilon) * shifted / shifted.sum() + epsilon / len(action_scores)


def choice_probability(choice: int, tool_scores: np.ndarray, action_probs: np.ndarray,
                       offered: np.ndarray | None = None) -> float:
    """The probability of a logged `choice` under the weights that gave these scores: forcing a
    tool that is not their top one, or offering tools without it (`offered`, a mask over the
    candidates; None: not recorded), is an action they never take."""
    p = float(action_probs[action_of(choice)])
    top = int(np.argmax(tool_scores))
    if choice == OFFER:
        return p if offered is None or bool(offered[top]) else 0.0
    return p if choice == DEFER or top == choice else 0.0


@dataclass
class Choice:
    """What the policy chose for one request."""

    action: Action
    tool: int  # the forced tool's index among the offered ones; OFFER or DEFER otherwise
    propensity: float
    offered: list[int] = field(default_factory=list)  # indices offered after the action


def choose(tool_scores: np.ndarray, action_probs: np.ndarray, config: PlannerConfig,
           rng: np.random.Generator) -> Choice:
    """Sample an action from `action_probs` and apply it with the tools ranked by `tool_scores`."""
    index = int(rng.choice(len(ACTIONS), p=action_probs / action_probs.sum()))
    action, propensity = ACTIONS[index], float(action_probs[index])
    if action == "defer":
        return Choice("defer", DEFER, propensity, list(range(len(tool_scores))))
    if action == "force":
        top = int(np.argmax(tool_scores))
        return Choice("force", top, propensity, [top])
    tool_probs = np.exp(tool_scores - tool_scores.max())
    tool_probs /= tool_probs.sum()
    kept, covered = [], 0.0
    for i in np.argsort(-tool_probs, kind="stable"):
        if len(kept) >= config.max_offered or covered >= config.coverage:
            break
        kept.append(int(i))
        covered += float(tool_probs[i])
    return Choice("offer", OFFER, propensity, sorted(kept))


def decide(weights: PolicyWeights, context: np.ndarray, tools: np.ndarray, buckets: np.ndarray,
           config: PlannerConfig, rng: np.random.Generator) -> Choice:
    """The planner's decision for one request: score the tools, then the actions, then sample."""
    scores = weights.tool_scores(context, tools, buckets)
    return choose(scores, probabilities(weights.action_scores(scores), config.epsilon), config, rng)
