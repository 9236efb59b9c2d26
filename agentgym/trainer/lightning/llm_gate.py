"""The gate for LLM planner versions: the reward model's estimate on recorded contexts.

An LLM version's probability of a logged choice is not known (it would take asking the model
to score every alternative answer), so the off-policy estimate of the default planner's gate
(`agentgym.trainer.gate`) cannot judge it. Its shadow is judged instead on the requests it
scored beside the served decisions: each decision, the shadow's and the served one, is valued
by the reward model fitted on the store's recorded outcomes (`reward_model.choice_value`: the
predicted success of the forced tool; for tools offered or all left to the agent's model, of
the tool that model then called if it was among them, else their mean), and the shadow passes
unless its mean value, paired request by request, is confidently below the served one's (the
whole 95% interval of the difference, a bootstrap over episodes, below `-trainer.gate_margin`:
the rule of the default planner's shadow, `agentgym.trainer.shadow`). What this estimates is the
predicted success of the first tool call each would lead to; the reward model's own held-out
agreement is reported beside it, since the estimate is only as good as that.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import orjson

from agentgym.config import RewardModelConfig
from agentgym.store.queries import Scope
from agentgym.trainer.encoder import Encoder
from agentgym.trainer.lightning.contexts import read_contexts
from agentgym.trainer.lightning.reward_model import choice_value, fit

PAIRED_SQL = """
WITH first_call AS (SELECT inference_id, arg_min(name, position) AS name FROM tool_calls GROUP BY inference_id)
SELECT s.episode_id, s.context, s.candidates, s.action, s.offered, d.action, d.offered, f.name
FROM decisions s JOIN decisions d ON d.inference_id = s.inference_id AND d.arm <> 'shadow'
LEFT JOIN first_call f ON f.inference_id = s.inference_id
WHERE s.arm = 'shadow' AND s.policy_version = $version AND s.created_at >= $since
"""


def scored_episodes(con: duckdb.DuckDBPyConnection, version: str, since: datetime) -> int:
    """Episodes with requests the shadow `version` scored beside a served decision since `since`:
    counted before the reward model is fitted (seconds on a large store), so it is fitted only
    once there is enough to judge."""
    return con.execute(f"SELECT count(DISTINCT episode_id) FROM ({PAIRED_SQL})",
                       {"version": version, "since": since}).fetchone()[0]


def estimate(con: duckdb.DuckDBPyConnection, version: str, since: datetime, scope: Scope, encoder: Encoder,
             config: RewardModelConfig, *, margin: float, resamples: int = 300, seed: int = 0) -> dict[str, Any]:
    """The shadow `version`'s reward-model estimate beside the served decisions since `since`.
    Raises reward_model.NotEnoughData when the store holds too few outcomes to fit it."""
    model = fit(read_contexts(con, scope), encoder, config)
    rows = con.execute(PAIRED_SQL, {"version": version, "since": since}).fetchall()
    hashes = sorted({h for row in rows for h in orjson.loads(row[2])})
    specs = {h: (name, text) for h, name, text in con.execute(
        "SELECT hash, any_value(name), any_value(text) FROM tool_specs WHERE list_contains($h, hash) GROUP BY hash",
        {"h": hashes}).fetchall()} if hashes else {}
    pairs: dict[tuple[str, str], int] = {}  # (context, tool text) -> its index among those to predict
    tool_texts: list[dict[str, str]] = []
    for _, context, candidates, *_ in rows:
        texts = dict(specs[h] for h in orjson.loads(candidates) if h in specs)
        tool_texts.append(texts)
        for text in texts.values():
            pairs.setdefault((context, text), len(pairs))
    predicted = model.predict(encoder, [c for c, _ in pairs], [t for _, t in pairs]) if pairs else np.zeros(0)

    shadow, served, episodes = [], [], []
    for (episode, context, _, s_action, s_offered, d_action, d_offered, called), texts in zip(rows, tool_texts,
                                                                                           strict=True):
        s_left, d_left = orjson.loads(s_offered), orjson.loads(d_offered)
        if not all(name in texts for name in s_left + d_left):
            continue  # a spec row lost with a crash
        score = lambda name: float(predicted[pairs[(context, texts[name])]])  # noqa: E731, B023
        shadow.append(choice_value(s_action, s_left, called, score))
        served.append(choice_value(d_action, d_left, called, score))
        episodes.append(episode)
    agreement = model.report["held_out"]
    out: dict[str, Any] = {"method": "reward model", "requests": len(shadow), "episodes": len(set(episodes)),
                           "reward_model_held_out": {k: agreement[k] for k in ("examples", "accuracy",
                                                                               "majority_accuracy", "auc")},
                           "reward_model": model.report}
    if not shadow:
        return {**out, "passed": False}
    unique, index = np.unique(np.array(episodes), return_inverse=True)
    differences = np.array(shadow) - np.array(served)
    per_episode = np.bincount(index, differences, len(unique))
    counts = np.bincount(index, None, len(unique))
    picks = np.random.default_rng(seed).integers(0, len(unique), (resamples, len(unique)))
    low, high = np.percentile(per_episode[picks].sum(1) / counts[picks].sum(1), [2.5, 97.5])
    difference = float(differences.mean())
    return {**out, "new": round(float(np.mean(shadow)), 4), "current": round(float(np.mean(served)), 4),
            "difference": round(difference, 4), "ci95": [round(float(low), 4), round(float(high), 4)],
            "margin": margin, "passed": bool(high >= -margin)}
