"""The reward model: from a recorded context and the tool called in answer to it, the probability
that the call worked (target "call") or that the episode succeeded (target "episode").

It lets the Agent Lightning engine train a planner on production contexts without replaying any
side effect: a replay rollout asks the planner again, and the reward model, not the real tool,
says how its choice would likely have gone. Its agreement with the real outcomes on episodes it
was not fitted on is measured and reported with every fit, so a reward the trainer optimises is
never taken on trust.

The model is a logistic regression, small enough to read: the features of a (context, tool) pair
are the encoder's vectors of the context and of the tool, as the planner reads them
(`agentgym.proxy.planner.context_text`, `tool_text`), and their element-wise product (how well
this tool fits this context); the coefficients are fitted by Newton's method with an L2 penalty
(the intercept unpenalised). Episodes are split as the gate splits them (one in five held out,
by a hash of the episode id and `seed`), so no episode is on both sides.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentgym.config import RewardModelConfig
from agentgym.proxy.planner import context_text, tool_text
from agentgym.trainer.encoder import Encoder
from agentgym.trainer.lightning.contexts import Context
from agentgym.trainer.rounds import held_out_for_gate


class NotEnoughData(ValueError):
    pass


def features(context: np.ndarray, tool: np.ndarray) -> np.ndarray:
    """(n, 3d): the context's vector, the tool's, and their element-wise product."""
    return np.hstack([context, tool, context * tool])


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # numerically safe for large |z|


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float, iterations: int) -> tuple[np.ndarray, float, int]:
    """Penalised maximum likelihood by Newton's method: (coefficients, intercept, steps taken).
    Loss: sum of log losses + l2/2 |coefficients|^2."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))])
    penalty = np.full(d + 1, l2)
    penalty[-1] = 0.0  # the intercept is free: the base rate is not shrunk
    w = np.zeros(d + 1)
    steps = 0
    for steps in range(1, iterations + 1):
        p = sigmoid(xb @ w)
        gradient = xb.T @ (p - y) + penalty * w
        hessian = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return w[:-1], float(w[-1]), steps


def auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """The area under the ROC curve: the chance that a random success scores above a random failure
    (ties count half). None when one class is absent."""
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    ranks = np.empty(len(scores))
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and ordered[j + 1] == ordered[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def agreement(probability: np.ndarray, labels: np.ndarray, episodes: list[str]) -> dict[str, Any]:
    """How predictions agree with real outcomes: accuracy at 0.5, AUC, log loss, and the accuracy
    of always guessing the majority outcome (what accuracy alone would hide)."""
    p = np.clip(probability, 1e-6, 1 - 1e-6)
    rate = float(labels.mean()) if len(labels) else 0.0
    return {"examples": len(labels), "episodes": len(set(episodes)), "success_rate": round(rate, 4),
            "accuracy": round(float(((p >= 0.5) == (labels == 1)).mean()), 4) if len(labels) else None,
            "majority_accuracy": round(max(rate, 1 - rate), 4) if len(labels) else None,
            "auc": None if (a := auc(p, labels)) is None else round(a, 4),
            "log_loss": round(float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).mean()), 4)
            if len(labels) else None}


@dataclass
class RewardModel:
    coefficients: np.ndarray
    intercept: float
    target: str
    encoder_checksum: str
    report: dict[str, Any]

    def probability(self, encoder: Encoder, messages: list[dict[str, Any]], function: dict[str, Any]) -> float:
        """The predicted chance of success of calling `function` in answer to `messages`."""
        return float(self.predict(encoder, [context_text(messages)], [tool_text(function)])[0])

    def predict(self, encoder: Encoder, contexts: list[str], tools: list[str]) -> np.ndarray:
        """The predicted chance of success of each pair of a context's text and a tool's text
        (`context_text`, `tool_text`: what the planner's decisions record)."""
        self._check(encoder)
        x = features(encoder.encode_many(contexts), encoder.encode_many(tools))
        return sigmoid(x @ self.coefficients + self.intercept)

    def save(self, path: Path) -> None:
        import orjson

        np.savez(path, coefficients=self.coefficients, intercept=self.intercept, target=self.target,
                 encoder_checksum=self.encoder_checksum, report=orjson.dumps(self.report).decode())

    @classmethod
    def load(cls, path: Path) -> RewardModel:
        import orjson

        with np.load(path) as data:
            return cls(data["coefficients"], float(data["intercept"]), str(data["target"]),
                       str(data["encoder_checksum"]), orjson.loads(str(data["report"])))

    def _check(self, encoder: Encoder) -> None:
        if encoder.checksum != self.encoder_checksum:
            raise ValueError("this reward model was fitted on another encoder's vectors")


def choice_value(action: str, left: list[str], called: str | None, score: Callable[[str], float]) -> float:
    """What a planner's choice is worth by the reward model (`score`: a tool's name -> its predicted
    success here): the forced tool's score; for tools offered, or all left to the agent's model, the
    score of the tool that model called if it is among them (what it did with that choice), else
    their mean."""
    if action == "force":
        return score(left[0])
    if called in left:
        return score(called)
    return sum(score(name) for name in left) / len(left)


def examples(contexts: list[Context], target: str) -> tuple[list[Context], np.ndarray, dict[str, int]]:
    """The labelled (context, called tool) pairs: those whose call (or episode) outcome is known and
    whose called tool was one of those offered. Also how many were left out, and why."""
    kept, labels = [], []
    skipped = {"no_call": 0, "outcome_unknown": 0, "tool_not_offered": 0}
    for c in contexts:
        label = c.call_ok if target == "call" else c.episode_ok
        if c.called is None:
            skipped["no_call"] += 1
        elif label is None:
            skipped["outcome_unknown"] += 1
        elif c.tool(c.called) is None:
            skipped["tool_not_offered"] += 1
        else:
            kept.append(c)
            labels.append(1.0 if label else 0.0)
    return kept, np.array(labels), skipped


def fit(contexts: list[Context], encoder: Encoder, config: RewardModelConfig) -> RewardModel:
    """Fit on four episodes in five; report agreement with the real outcomes on the fifth."""
    kept, labels, skipped = examples(contexts, config.target)
    x = features(encoder.encode_many([context_text(c.messages) for c in kept]),
                 encoder.encode_many([tool_text(c.tool(c.called)) for c in kept]))  # type: ignore[arg-type]
    episodes = [c.episode_id for c in kept]
    held = np.array([held_out_for_gate(e, config.seed) for e in episodes], bool)
    if (~held).sum() < config.min_examples:
        raise NotEnoughData(f"{int((~held).sum())} labelled calls to fit the reward model on, fewer than "
                            f"lightning.reward_model.min_examples ({config.min_examples}); left out: {skipped}")
    if len(set(labels[~held])) < 2:
        raise NotEnoughData(f"every training call {'worked' if labels[~held][0] else 'failed'}: a reward model "
                            "needs both outcomes to learn from")
    coefficients, intercept, steps = fit_logistic(x[~held], labels[~held], l2=config.l2, iterations=config.iterations)
    p = sigmoid(x @ coefficients + intercept)
    pick = lambda mask: [e for e, m in zip(episodes, mask, strict=True) if m]  # noqa: E731
    report = {"target": config.target, "features": int(x.shape[1]), "newton_steps": steps, "l2": config.l2,
              "seed": config.seed, "left_out": skipped,
              "train": agreement(p[~held], labels[~held], pick(~held)),
              "held_out": agreement(p[held], labels[held], pick(held))}
    return RewardModel(coefficients, intercept, config.target, encoder.checksum, report)
