"""The evaluation gate: a new version serves nothing unless, on the decisions already logged,
its estimated reward is not worse than the policy that served them.

The estimate is self-normalised importance sampling (SNIPS): each logged decision's reward
weighted by (the new policy's probability of the logged choice) / (the probability it was
sampled with), and by its episode share, normalised by the sum of those weights. The serving
policy's own value is the same sum with its own probabilities (ratio 1 when on-policy). A
bootstrap over episodes gives the 95% interval of the difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agentgym.trainer.batch import Batch


def snips(batch: Batch, probabilities: np.ndarray) -> float:
    w = batch.weights * probabilities / batch.propensities
    return float((w * batch.rewards).sum() / w.sum())


def evaluate(batch: Batch, new: np.ndarray, current: np.ndarray, *, margin: float = 0.0, resamples: int = 300,
             seed: int = 0) -> dict[str, Any]:
    """`new` and `current`: each policy's probability of every logged choice. Passes when the new
    policy's estimate is at least the current one's minus `margin`."""
    episodes = np.array(batch.episodes)
    unique, index = np.unique(episodes, return_inverse=True)
    rng = np.random.default_rng(seed)
    w_new = batch.weights * new / batch.propensities
    w_cur = batch.weights * current / batch.propensities

    def per_episode(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.bincount(index, w * batch.rewards, len(unique)), np.bincount(index, w, len(unique))

    (num_new, den_new), (num_cur, den_cur) = per_episode(w_new), per_episode(w_cur)
    value_new, value_cur = num_new.sum() / den_new.sum(), num_cur.sum() / den_cur.sum()
    diffs = []
    for _ in range(resamples):
        pick = rng.integers(0, len(unique), len(unique))
        diffs.append(num_new[pick].sum() / den_new[pick].sum() - num_cur[pick].sum() / den_cur[pick].sum())
    low, high = np.percentile(diffs, [2.5, 97.5])
    difference = value_new - value_cur
    return {"method": "snips", "decisions": len(batch), "episodes": len(unique), "new": round(float(value_new), 4),
            "current": round(float(value_cur), 4), "difference": round(float(difference), 4),
            "ci95": [round(float(low), 4), round(float(high), 4)], "margin": margin,
            "effective_sample_size": round(float(w_new.sum() ** 2 / (w_new ** 2).sum()), 1),
            "passed": bool(difference >= -margin)}
