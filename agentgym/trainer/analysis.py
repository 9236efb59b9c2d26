"""Is the canary worse than what it is compared with? A sequential test that stays valid however
often it is looked at, so a rollout can check after every few episodes and stop as soon as the
evidence is in.

Each arm's figure for a metric is an `Estimate` over its finished episodes, the units of
sampling: a mean of one value per episode (it succeeded: 0 or 1; the share of its tool calls
that worked), or a ratio of sums (its cost over its successes: the cost per successful episode)
with the delta method's variance, var(x - R y) / (n mean(y)^2). The arms' difference, canary -
baseline (absolute) or canary / baseline - 1 (relative, again by the delta method), gets an
always-valid confidence interval: the normal mixture sequential probability ratio test's
(Johari, Pekelis and Walsh, "Always Valid Inference", 2017; the method behind Optimizely's stats
engine), with mixing variance `tau**2`:

    difference  +-  sqrt( V (V + tau^2) / tau^2  *  log( (V + tau^2) / (V alpha^2) ) )

where V is the variance of the difference. Its chance of ever excluding the true difference, at
any of the looks, is at most `alpha`. Until both arms have `min_episodes`, each arm's spread is
taken as the larger of the two: a few episodes alike (three failures in a row) have none of their
own, and would make the interval narrow.

A metric fails when the whole interval lies on the worse side of the tolerance (below
`-tolerance` where higher is better, above `+tolerance` where lower is better), passes when it
lies wholly on the better side and both arms have `min_episodes` episodes with a value, and is
inconclusive otherwise. It is "not measured" when neither arm has a value for it although both
have `min_episodes` finished episodes (no cost is recorded for a model litellm has no price for):
it can tell nothing, so the rollout leaves it out of its decision and says so in its analysis.

p95 latency is compared through shares of slow requests, the way Woodruff's interval for a
quantile goes: the canary's share of requests slower than (1 + tolerance) x the baseline's p95
against the baseline's share slower than its own p95 (5%, with that quantile's sampling
variance). A canary whose p95 is credibly above the raised threshold has credibly more than 5%
over it and fails; one like the baseline has well under 5% over it and passes. (The threshold is
re-estimated at each look, so there the guarantee is approximate.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

Verdict = Literal["pass", "fail", "inconclusive", "not measured"]
VARIANCE_FLOOR = 1e-4  # a metric every episode scored alike still has some uncertainty
QUANTILE = 0.95  # latency_p95's


@dataclass(frozen=True)
class Estimate:
    value: float  # NaN: the arm has none (no episode with a value, no success to divide by)
    variance: float  # of `value`
    episodes: int  # the episodes with a value, that it rests on
    finished: int  # the arm's finished episodes, with a value or not


def mean(values: np.ndarray) -> Estimate:
    """The mean of one value per finished episode; NaN marks an episode with none (no tool call)."""
    have = values[~np.isnan(values)]
    n = len(have)
    return Estimate(float(np.mean(have)) if n else math.nan, float(np.var(have, ddof=1)) / n if n > 1 else math.nan,
                    n, len(values))


def ratio(numerators: np.ndarray, denominators: np.ndarray) -> Estimate:
    """sum(numerators) / sum(denominators) over the episodes with a numerator (NaN: none recorded)."""
    have = ~np.isnan(numerators)
    x, y = numerators[have], denominators[have]
    n, total = len(x), float(np.sum(y))
    if n == 0 or total == 0:
        return Estimate(math.nan, math.nan, n, len(numerators))
    value = float(np.sum(x)) / total
    variance = float(np.var(x - value * y, ddof=1)) * n / total**2 if n > 1 else math.nan
    return Estimate(value, variance, n, len(numerators))


def latency_shares(canary: list[np.ndarray], baseline: list[np.ndarray],
                   tolerance: float) -> tuple[Estimate, Estimate, float]:
    """Per arm, one array of request latencies per finished episode: the canary's share of requests
    over the threshold, the baseline's over its own p95, and the threshold (module docstring)."""
    latencies = np.concatenate(baseline) if baseline else np.empty(0)
    if latencies.size == 0:
        return Estimate(math.nan, math.nan, 0, len(canary)), Estimate(math.nan, math.nan, 0, len(baseline)), math.nan
    p95 = float(np.quantile(latencies, QUANTILE))
    threshold = (1 + tolerance) * p95

    def share(episodes: list[np.ndarray], over: float) -> Estimate:
        slow = np.array([np.sum(e > over) if e.size else math.nan for e in episodes], float)
        return ratio(slow, np.array([e.size for e in episodes], float))

    return share(canary, threshold), share(baseline, p95), threshold


@dataclass(frozen=True)
class Comparison:
    metric: str
    canary: Estimate
    baseline: Estimate
    low: float  # the always-valid interval of the difference
    high: float
    verdict: Verdict
    relative: bool = False  # the difference is canary / baseline - 1, not canary - baseline
    note: str = ""  # what the figures are, where the metric's name does not say

    def describe(self) -> str:
        name = f"{self.metric} ({self.note})" if self.note else self.metric
        if self.verdict == "not measured":
            return (f"{name}: not measured, no value in either arm over {self.canary.finished} / "
                    f"{self.baseline.finished} finished episodes; left out of the decision")
        if self.relative:
            interval = f"relative difference in [{self.low:+.1%}, {self.high:+.1%}]"
        else:
            interval = f"difference in [{self.low:+.3f}, {self.high:+.3f}]"
        return (f"{name}: canary {self.canary.value:.4g} vs {self.baseline.value:.4g} over {self.canary.episodes} / "
                f"{self.baseline.episodes} episodes, {interval}: {self.verdict}")


def compare(metric: str, canary: Estimate, baseline: Estimate, *, tolerance: float, min_episodes: int,
            better: Literal["higher", "lower"] = "higher", relative: bool = False, alpha: float = 0.05,
            tau: float = 0.1, note: str = "") -> Comparison:
    """The canary against the baseline on one metric. `tolerance`: how much worse the canary may be
    and still pass, in the metric's units, or with `relative` as a fraction of the baseline."""
    def undecided(verdict: Verdict) -> Comparison:
        return Comparison(metric, canary, baseline, -math.inf, math.inf, verdict, relative, note)

    if math.isnan(canary.value) and math.isnan(baseline.value):
        return undecided("not measured" if min(canary.finished, baseline.finished) >= min_episodes else "inconclusive")
    n = min(canary.episodes, baseline.episodes)
    if n < 2 or math.isnan(canary.value) or math.isnan(baseline.value) or (relative and baseline.value <= 0):
        return undecided("inconclusive")
    var_c, var_b = canary.variance, baseline.variance
    if n < min_episodes:
        # A few episodes can show no spread at all (a canary's first three all failed): until both
        # arms have min_episodes, each is given the larger per-episode spread of the two, so that a
        # handful of episodes cannot make the interval narrow.
        spread = max(var_c * canary.episodes, var_b * baseline.episodes)
        var_c, var_b = spread / canary.episodes, spread / baseline.episodes
    if relative:
        difference = canary.value / baseline.value - 1
        v = var_c / baseline.value**2 + canary.value**2 * var_b / baseline.value**4
    else:
        difference = canary.value - baseline.value
        v = var_c + var_b
    v = max(v, VARIANCE_FLOOR / n)
    t2 = tau * tau
    half = math.sqrt(v * (v + t2) / t2 * math.log((v + t2) / (v * alpha * alpha)))
    low, high = difference - half, difference + half
    worst, best = (low, high) if better == "higher" else (-high, -low)  # how much better the canary is
    if best < -tolerance:
        verdict: Verdict = "fail"
    elif worst > -tolerance and n >= min_episodes:
        verdict = "pass"
    else:
        verdict = "inconclusive"
    return Comparison(metric, canary, baseline, low, high, verdict, relative, note)
