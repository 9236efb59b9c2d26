"""Read-side definitions shared by everything that reads the store.

What a tool call's outcome is (explicit feedback beats the outcome read from the tool
message, which beats unknown), and what an episode's outcome and end are, is decided here
once, as SQL common table expressions; the report, the dashboard and the trainer build on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agentgym.config import EpisodeConfig


@dataclass(frozen=True)
class Scope:
    """Which records a read covers: requests made in [since, until), to `model`, in episodes whose
    feedback names `scenario` (its metadata's "scenario" key, as the simulated agents send);
    None is no limit."""

    since: datetime | None = None
    success_reward_threshold: float = 0.5
    idle_timeout_s: float = 300.0
    until: datetime | None = None
    model: str | None = None
    scenario: str | None = None

    @classmethod
    def configured(cls, episodes: EpisodeConfig, since: datetime | None = None, *, until: datetime | None = None,
                   model: str | None = None, scenario: str | None = None) -> Scope:
        """The scope the configuration's `episodes:` section defines."""
        return cls(since, episodes.success_reward_threshold, episodes.idle_timeout_s, until, model, scenario)

    def params(self) -> dict[str, object]:
        return {
            "since": self.since,
            "until": self.until,
            "model": self.model,
            "scenario": self.scenario,
            "threshold": self.success_reward_threshold,
            "idle_s": self.idle_timeout_s,
        }


# Named parameters: $since, $until (timestamps or NULL), $model, $scenario (or NULL), $threshold, $idle_s.
# Everything else is read through `inf`, so the filters on it hold for every figure.
BASE_CTES = """
inf AS (
    SELECT * FROM inferences
    WHERE ($since IS NULL OR created_at >= $since) AND ($until IS NULL OR created_at < $until)
      AND ($model IS NULL OR model = $model)
      AND ($scenario IS NULL OR episode_id IN (
          SELECT episode_id FROM feedback WHERE metadata->>'$.scenario' = $scenario))
),
tool_outcome AS (
    SELECT tool_call_id, arg_max(outcome, created_at) AS outcome, arg_max(error_message, created_at) AS error_message
    FROM tool_results GROUP BY tool_call_id
),
tool_feedback AS (
    SELECT target_id, arg_max(coalesce(success, reward >= $threshold), created_at) AS ok
    FROM feedback WHERE target = 'tool_call' GROUP BY target_id
),
calls AS (
    SELECT tc.id, tc.name, tc.episode_id, tc.inference_id, tc.created_at,
           CASE WHEN tf.ok IS NOT NULL THEN CASE WHEN tf.ok THEN 'success' ELSE 'error' END
                ELSE coalesce(o.outcome, 'unknown') END AS outcome,
           CASE WHEN tf.ok IS NULL OR NOT tf.ok THEN o.error_message END AS error_message
    FROM tool_calls tc
    LEFT JOIN tool_outcome o ON o.tool_call_id = tc.id
    LEFT JOIN tool_feedback tf ON tf.target_id = tc.id
    WHERE tc.inference_id IN (SELECT id FROM inf)
),
episode_feedback AS (
    SELECT episode_id, arg_max(coalesce(success, reward >= $threshold), created_at) AS ok,
           max(created_at) AS feedback_at
    FROM feedback WHERE target = 'episode' GROUP BY episode_id
),
episodes AS (
    SELECT e.*, f.ok,
           greatest(e.last_at, coalesce(f.feedback_at, e.last_at)) AS ended_at,
           (f.ok IS NOT NULL OR e.last_at < now() - to_seconds($idle_s)) AS finished
    FROM (
        SELECT episode_id, min(created_at) AS started_at, max(created_at) AS last_at,
               count(*) AS inferences, arg_min(arm, created_at) AS arm,
               -- the first request's version, NULL included: an episode begun with no policy is control's
               arg_min_null(policy_version, created_at) AS policy_version
        FROM inf GROUP BY episode_id
    ) e
    LEFT JOIN episode_feedback f USING (episode_id)
)
"""


def with_base(query: str) -> str:
    """A full query: the shared CTEs, then `query` (which may add CTEs of its own) naming any of them."""
    query = query.strip()
    if query[:5].upper() == "WITH ":
        return f"WITH {BASE_CTES.strip()},\n{query[5:]}"
    return f"WITH {BASE_CTES.strip()}\n{query}"
