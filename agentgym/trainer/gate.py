"""The evaluation gate: a new version serves nothing unless, on the decisions already logged,
its estimated reward is not worse than the policy that served them.

The estimate is self-normalised importance sampling (SNIPS): each logged decision's reward
weighted by (the new policy's probability of the logged choice) / (the probability it was
sampled with), and by its episode share, normalised by the sum of those weights. The serving
policy's own value is the same sum with its own probabilities (ratio 1 when on-policy). No
planner's (the untrained model's) is the same sum for a policy that always defers (probability
1 of each logged "defer", 0 of anything else); it is reported, not required. Estimated on one
batch, a version not worse than the serving one is below no planner only where the serving one
is too, and refusing it there keeps the worse one serving. Whether a version beats no planner
is measured, not estimated, by the rollout's control arm. A bootstrap over episodes gives the
95% interval of each difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agentgym.trainer.batch import Batch
from agentgym.trainer.policy import DEFER


def evaluate(batch: Batch, new: np.ndarray, current: np.ndarray, *, margin: float = 0.0, resamples: int = 300,
             seed: int = 0) -> dict[str, Any]:
    """`new` and `current`: each policy's probability of every logged choice. Passes when the new
    policy's estimate is at least the current one's minus `margin`; always deferring's is
    `untrained` (reported, not required), where the batch has logged defers. A new policy with
    no probability on any logged choice (a forced tool or an offer that its ranking would not
    make, everywhere) has no estimate: its figures are None, with a `reason`, and it does not pass."""
    episodes = np.array(batch.episodes)
    unique, index = np.unique(episodes, return_inverse=True)
    picks = np.random.default_rng(seed).integers(0, len(unique), (resamples, len(unique)))

    def per_episode(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        w = batch.weights * probabilities / batch.propensities
        return np.bincount(index, w * batch.rewards, len(unique)), np.bincount(index, w, len(unique))

    num_new, den_new = per_episode(new)
    if not den_new.sum() > 0:  # nothing held out, or the new policy takes none of the logged choices
        return {"method": "snips", "decisions": len(batch), "episodes": len(unique), "new": None, "current": None,
                "difference": None, "ci95": None, "margin": margin, "untrained": None, "effective_sample_size": 0.0,
                "passed": False, "reason": "no estimate: the new policy takes none of the logged choices held out "
                "(or none were), so nothing logged says how it would do"}

    def against(reference: np.ndarray) -> tuple[dict[str, Any], float]:
        """The reference's value and the new policy's difference from it, rounded, with its 95%
        interval; and the difference unrounded."""
        num, den = per_episode(reference)
        with np.errstate(invalid="ignore", divide="ignore"):  # a resample may hold none of the reference's choices
            diffs = num_new[picks].sum(1) / den_new[picks].sum(1) - num[picks].sum(1) / den[picks].sum(1)
        value = num.sum() / den.sum()
        low, high = np.nanpercentile(diffs, [2.5, 97.5])
        difference = num_new.sum() / den_new.sum() - value
        return {"value": round(float(value), 4), "difference": round(float(difference), 4),
                "ci95": [round(float(low), 4), round(float(high), 4)]}, float(difference)

    versus_current, difference = against(current)
    deferring = (batch.choices == DEFER).astype(float)
    versus_untrained = against(deferring)[0] if deferring.any() else None
    w_new = batch.weights * new / batch.propensities
    return {"method": "snips", "decisions": len(batch), "episodes": len(unique),
            "new": round(float(num_new.sum() / den_new.sum()), 4), "current": versus_current["value"],
            "difference": versus_current["difference"], "ci95": versus_current["ci95"], "margin": margin,
            "untrained": versus_untrained,
            "effective_sample_size": round(float(w_new.sum() ** 2 / (w_new ** 2).sum()), 1),
            "passed": difference >= -margin}
