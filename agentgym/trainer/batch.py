"""Training batches from the store: the policy's decisions with their rewards and advantages.

A decision's reward is its episode's outcome (`success` or `failure` of the reward rule)
broadcast to every decision of the episode, plus the per-step terms of its own inference
(tool calls that succeeded or failed, prompt tokens). Each decision weighs 1 / (decisions in
its episode), so every episode counts once however long it ran (Agent Lightning's
`per_rollout_mean`, AgentFlow's Flow-GRPO). Advantages are group-relative (GRPO): rewards
centred on the episodes that started from the same request (a request seen in one episode
only: on the whole batch), and scaled by the spread of the whole batch's episode rewards, not
each group's own (as Dr. GRPO does): a group whose episodes all succeeded differs only by a few
prompt tokens, and its own spread turned those into the largest advantages of the batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import orjson

from agentgym.config import RewardRule
from agentgym.store.queries import Scope, with_base

if TYPE_CHECKING:  # a type only: the engine and the benchmarks run without the database driver
    import duckdb

DECISIONS_SQL = """
WITH steps AS (
    SELECT inference_id, count(*) FILTER (outcome = 'success') AS ok, count(*) FILTER (outcome = 'error') AS failed
    FROM calls GROUP BY inference_id
),
first_call AS (  -- the tool the model called first in answer to the decision's request, and how it went
    SELECT c.inference_id, arg_min(c.name, tc.position) AS name, arg_min(c.outcome, tc.position) AS outcome
    FROM calls c JOIN tool_calls tc ON tc.id = c.id GROUP BY c.inference_id
),
dec AS (
    SELECT d.*, first(d.context ORDER BY d.created_at) OVER (PARTITION BY d.episode_id) AS opening
    FROM decisions d WHERE ($since IS NULL OR d.created_at >= $since) AND d.arm IN ('live', 'canary')
)
SELECT d.id, d.episode_id, d.policy_version, d.choice, d.propensity, d.candidates, d.context, d.opening,
       e.ok AS episode_ok, coalesce(s.ok, 0) AS tool_ok, coalesce(s.failed, 0) AS tool_failed,
       coalesce(i.prompt_tokens, 0) AS prompt_tokens, f.name AS called, f.outcome AS called_outcome, d.offered
FROM dec d
JOIN episodes e USING (episode_id)
LEFT JOIN steps s ON s.inference_id = d.inference_id
LEFT JOIN first_call f ON f.inference_id = d.inference_id
LEFT JOIN inf i ON i.id = d.inference_id
WHERE e.ok IS NOT NULL
ORDER BY d.created_at, d.id
"""


@dataclass
class Batch:
    """Decisions of finished episodes, in the order they were made."""

    ids: list[str]
    episodes: list[str]
    versions: list[str]
    contexts: list[str]
    candidates: list[list[str]]  # tool spec hashes, in request order
    choices: np.ndarray  # index of the forced tool among the candidates; -2: offer, -1: defer
    propensities: np.ndarray
    rewards: np.ndarray
    weights: np.ndarray  # 1 / decisions in the episode
    groups: np.ndarray  # same id: episodes that opened with the same request
    specs: dict[str, tuple[str, str]]  # hash -> (tool name, text)
    # The tool the model then called (index among the candidates, -1: none of them) and whether
    # it worked (1, 0; -1: no call or unknown): what the tool scores also learn from, whatever
    # the action was.
    called: np.ndarray
    called_ok: np.ndarray
    # The names of the tools each decision offered ("offer" rows; empty: not recorded). A logged
    # offer is an action of other weights only if it includes their top tool (`policy.choice_probability`).
    offered: list[frozenset[str]] = field(default_factory=list)
    # The decisions the update's ratio, KL and advantages use (None: all); the others (earlier
    # versions' decisions, older_data "drop") teach the tool scores only.
    on_policy: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def serving(self) -> np.ndarray:
        """`on_policy` as a mask, all True where it is None."""
        return self.on_policy if self.on_policy is not None else np.ones(len(self), bool)

    def only(self, mask: np.ndarray) -> Batch:
        keep = np.flatnonzero(mask)
        pick = lambda items: [items[i] for i in keep]  # noqa: E731
        return Batch(pick(self.ids), pick(self.episodes), pick(self.versions), pick(self.contexts),
                     pick(self.candidates), self.choices[keep], self.propensities[keep], self.rewards[keep],
                     self.weights[keep], self.groups[keep], self.specs, self.called[keep], self.called_ok[keep],
                     pick(self.offered) if self.offered else [],
                     None if self.on_policy is None else self.on_policy[keep])


@dataclass(frozen=True)
class Step:
    """One decision as the reward needs it."""

    episode: str
    episode_ok: bool
    tool_ok: int
    tool_failed: int
    prompt_tokens: int


def rewards(steps: list[Step], rule: RewardRule) -> tuple[np.ndarray, np.ndarray]:
    """(reward, weight) per decision: the episode's outcome broadcast plus the step's own terms;
    weights 1 / (decisions in the episode)."""
    per_episode: dict[str, int] = {}
    for step in steps:
        per_episode[step.episode] = per_episode.get(step.episode, 0) + 1
    reward = np.array([
        (rule.success if s.episode_ok else rule.failure) + rule.tool_success * s.tool_ok
        + rule.tool_error * s.tool_failed + rule.per_1k_prompt_tokens * s.prompt_tokens / 1000 for s in steps
    ], np.float64)
    weight = np.array([1.0 / per_episode[s.episode] for s in steps], np.float64)
    return reward, weight


def advantages(rewards_: np.ndarray, weights: np.ndarray, groups: np.ndarray, episodes: list[str]) -> np.ndarray:
    """GRPO: each decision's reward less the mean of its group's episodes (their weighted
    rewards; a group of one episode: the whole batch's), over the batch's spread of them."""
    episode_ids = {e: i for i, e in enumerate(dict.fromkeys(episodes))}
    index = np.array([episode_ids[e] for e in episodes])
    episode_reward = np.bincount(index, weights=rewards_ * weights)  # weights sum to 1 per episode
    episode_group = np.zeros(len(episode_ids), np.int64)
    episode_group[index] = groups
    out = np.empty_like(rewards_)
    for group in np.unique(groups):
        members = episode_reward[episode_group == group]
        mask = groups == group
        out[mask] = rewards_[mask] - (members.mean() if len(members) > 1 else episode_reward.mean())
    return out / (episode_reward.std() + 1e-6)


def read_batch(con: duckdb.DuckDBPyConnection, rule: RewardRule, scope: Scope, *,
               versions: set[str] | None = None, others: int = 0) -> Batch:
    """Decisions of finished episodes (explicit outcome) in `scope`, of `versions` if given; and then
    the latest `others` decisions of other versions, marked off-policy (`Batch.on_policy`)."""
    rows = con.execute(with_base(DECISIONS_SQL), scope.params()).fetchall()
    on_policy = None
    if versions is not None:
        mine = [r[2] in versions for r in rows]
        earlier = [i for i, m in enumerate(mine) if not m][-others:] if others else []
        keep = sorted({i for i, m in enumerate(mine) if m} | set(earlier))
        rows, on_policy = [rows[i] for i in keep], np.array([mine[i] for i in keep], bool)
    steps = [Step(r[1], bool(r[8]), int(r[9]), int(r[10]), int(r[11])) for r in rows]
    reward, weight = rewards(steps, rule)
    opening = [_digest(r[7]) for r in rows]
    group_of = {text: i for i, text in enumerate(dict.fromkeys(opening))}
    candidates = [orjson.loads(r[5]) for r in rows]
    hashes = sorted({h for c in candidates for h in c})
    specs = {}
    if hashes:
        specs = {h: (name, text) for h, name, text in con.execute(
            "SELECT hash, any_value(name), any_value(text) FROM tool_specs WHERE list_contains($hashes, hash) "
            "GROUP BY hash", {"hashes": hashes}).fetchall()}
    names = [[specs.get(h, ("", ""))[0] for h in c] for c in candidates]
    called = np.array([n.index(r[12]) if r[12] in n else -1 for n, r in zip(names, rows, strict=True)], np.int64)
    called_ok = np.array([{"success": 1, "error": 0}.get(r[13], -1) for r in rows], np.int64)
    return Batch([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[6] for r in rows],
                 candidates, np.array([r[3] for r in rows], np.int64),
                 np.array([r[4] for r in rows], np.float64), reward, weight,
                 np.array([group_of[o] for o in opening], np.int64), specs, called, called_ok,
                 [frozenset(orjson.loads(r[14]) if r[14] else ()) for r in rows], on_policy)


def _digest(text: str | None) -> str:
    return hashlib.blake2b((text or "").encode(), digest_size=8).hexdigest()
