"""Is the canary worse than what it is compared with? A sequential test that stays valid however
often it is looked at, so a rollout can check after every few episodes and stop as soon as the
evidence is in.

Per metric, each episode gives one value (it succeeded: 0 or 1; the share of its tool calls that
worked). The difference of the arms' means gets an always-valid confidence interval: the normal
mixture sequential probability ratio test's (Johari, Pekelis and Walsh, "Always Valid
Inference", 2017; the method behind Optimizely's stats engine), with mixing variance `tau**2`:

    difference  +-  sqrt( V (V + tau^2) / tau^2  *  log( (V + tau^2) / (V alpha^2) ) )

where V is the variance of the difference (the arms' sample variances over their counts). Its
chance of ever excluding the true difference, at any of the looks, is at most `alpha`.

A metric fails when the whole interval lies below `-tolerance` (the canary is worse by more
than it may be), passes when the whole interval lies above `-tolerance` (it is not) and both
arms have `min_episodes`, and is inconclusive otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Verdict = Literal["pass", "fail", "inconclusive"]
VARIANCE_FLOOR = 1e-4  # a metric every episode scored alike still has some uncertainty


@dataclass(frozen=True)
class Comparison:
    metric: str
    canary: float  # the arms' means
    baseline: float
    episodes: tuple[int, int]  # canary, baseline
    low: float  # the always-valid interval of canary - baseline
    high: float
    verdict: Verdict

    def describe(self) -> str:
        return (f"{self.metric}: canary {self.canary:.3f} vs {self.baseline:.3f} over {self.episodes[0]} / "
                f"{self.episodes[1]} episodes, difference in [{self.low:+.3f}, {self.high:+.3f}]: {self.verdict}")


def compare(metric: str, canary: np.ndarray, baseline: np.ndarray, *, tolerance: float, min_episodes: int,
            alpha: float = 0.05, tau: float = 0.1) -> Comparison:
    """`canary`, `baseline`: one value per finished episode of each arm."""
    n_c, n_b = len(canary), len(baseline)
    mean_c = float(np.mean(canary)) if n_c else math.nan
    mean_b = float(np.mean(baseline)) if n_b else math.nan
    if n_c < 2 or n_b < 2:
        return Comparison(metric, mean_c, mean_b, (n_c, n_b), -math.inf, math.inf, "inconclusive")
    difference = mean_c - mean_b
    v = max(float(np.var(canary, ddof=1)) / n_c + float(np.var(baseline, ddof=1)) / n_b, VARIANCE_FLOOR / min(n_c, n_b))
    t2 = tau * tau
    half = math.sqrt(v * (v + t2) / t2 * math.log((v + t2) / (v * alpha * alpha)))
    low, high = difference - half, difference + half
    if high < -tolerance:
        verdict: Verdict = "fail"
    elif low > -tolerance and min(n_c, n_b) >= min_episodes:
        verdict = "pass"
    else:
        verdict = "inconclusive"
    return Comparison(metric, mean_c, mean_b, (n_c, n_b), low, high, verdict)
