"""Recorded episodes as Agent Lightning rollouts, with their events, in an `agl-server`'s store.

Each finished episode (one with a known outcome) becomes one rollout whose id is the episode's
id, through Agent Lightning's own REST API (`agentlightning.server.routes`): created (`POST
/api/rollouts`, idempotent by id), moved to running, given its events on attempt "0", and
moved to succeeded (the rollout ran to its end; whether the task succeeded is its reward).
The events are what Agent Lightning's gateway would have captured had the calls gone through
it: one `model_request` per chat completion (the request and response bodies as the proxy
recorded them, so token ids and log-probabilities are there when the upstream returned them),
one `tool_result` per tool call with its outcome, and the episode's `reward` (the reward rule's
`success` or `failure` value) last, the shape `agentlightning.schemas.ModelRequestData` and
`RewardData` document and Agent Lightning's triplet export reads.

An episode already there in a finished state is left alone, so exporting again adds only new
episodes. Export to a server no `agl-controller` watches: a controller takes any queued or
running rollout it did not start for one of its own and fails it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb
import httpx
import orjson

from agentgym.config import RewardRule
from agentgym.store.queries import Scope, with_base

ATTEMPT = "0"  # agentlightning.schemas.DEFAULT_ATTEMPT_ID: the attempt a rollout's events are read from

EPISODES_SQL = """
SELECT episode_id, ok, started_at, ended_at, inferences, arm, policy_version
FROM episodes WHERE ok IS NOT NULL ORDER BY started_at, episode_id
"""
INFERENCES_SQL = """
SELECT episode_id, id, model, status, latency_ms, finish_reason, request, response, prompt_tokens,
       completion_tokens, policy_version, arm
FROM inf WHERE episode_id IN (SELECT episode_id FROM episodes WHERE ok IS NOT NULL)
ORDER BY created_at, id
"""
CALLS_SQL = """
SELECT c.episode_id, c.id, c.inference_id, c.name, c.outcome, c.error_message
FROM calls c WHERE c.episode_id IN (SELECT episode_id FROM episodes WHERE ok IS NOT NULL)
ORDER BY c.created_at, c.id
"""


class ExportError(RuntimeError):
    pass


def export_episodes(con: duckdb.DuckDBPyConnection, client: httpx.Client, scope: Scope, rule: RewardRule
                    ) -> dict[str, Any]:
    """Every finished episode in `scope` not yet in the server, as a rollout with its events.
    `client` talks to the agl-server (base URL and key set). What was done, as a dict."""
    from agentlightning.schemas import ModelRequestData, RewardData, Rollout, RolloutCreate

    params = scope.params()
    episodes = con.execute(with_base(EPISODES_SQL), params).fetchall()
    inferences: dict[str, list[tuple]] = defaultdict(list)
    for row in con.execute(with_base(INFERENCES_SQL), params).fetchall():
        inferences[row[0]].append(row)
    calls: dict[str, list[tuple]] = defaultdict(list)
    for row in con.execute(with_base(CALLS_SQL), params).fetchall():
        calls[row[0]].append(row)
    if not episodes:
        return {"episodes": 0, "exported": 0, "already_there": 0, "events": 0}

    creates = [RolloutCreate(rollout_id=episode_id, input={"episode_id": episode_id, "source": "agentgym"},
                             is_train=True, metadata={"agentgym_arm": arm, "agentgym_policy_version": version,
                                                      "agentgym_started_at": started.isoformat()})
               for episode_id, _, started, _, _, arm, version in episodes]
    created = [Rollout.model_validate(r) for r in _call(client, "POST", "/api/rollouts",
                                                         [c.model_dump(mode="json", exclude_none=True)
                                                          for c in creates])]
    fresh = {r.rollout_id for r in created if r.status.state == "queuing"}
    events = 0
    for episode_id, ok, *_ in episodes:
        if episode_id not in fresh:
            continue
        _call(client, "PATCH", f"/api/rollouts/{episode_id}",
              {"status": {"state": "running", "last_attempt_id": ATTEMPT}})
        for _, inference_id, model, status, latency, finish, request, response, prompt, completion, version, arm \
                in inferences[episode_id]:
            data = ModelRequestData(
                model=model or "", request=_json(request), response=_json(response), latency_ms=latency,
                http_status=status, status="ok" if status == 200 else "error", finish_reason=finish,
                usage={"prompt_tokens": prompt, "completion_tokens": completion} if prompt is not None else None,
            ).model_dump()
            data["agentgym"] = {"inference_id": inference_id, "policy_version": version, "arm": arm}
            _event(client, episode_id, "model_request", data)
            events += 1
        for _, call_id, inference_id, name, outcome, error in calls[episode_id]:
            _event(client, episode_id, "tool_result", {"tool_call_id": call_id, "inference_id": inference_id,
                                                       "name": name, "outcome": outcome, "error_message": error})
            events += 1
        reward = RewardData(value=rule.success if ok else rule.failure, source="agentgym",
                            reason="episode succeeded" if ok else "episode failed")
        _event(client, episode_id, "reward", reward.model_dump(exclude_none=True))
        events += 1
        _call(client, "PATCH", f"/api/rollouts/{episode_id}", {"status": {"state": "succeeded"}})
    return {"episodes": len(episodes), "exported": len(fresh), "already_there": len(episodes) - len(fresh),
            "events": events}


def _event(client: httpx.Client, rollout_id: str, event_type: str, data: dict[str, Any]) -> None:
    _call(client, "POST", f"/api/rollouts/{rollout_id}/attempt/{ATTEMPT}/events",
          {"event_type": event_type, "data": data})


def _call(client: httpx.Client, method: str, path: str, body: Any) -> Any:
    try:
        response = client.request(method, path, content=orjson.dumps(body),
                                  headers={"content-type": "application/json"})
    except httpx.HTTPError as exc:
        raise ExportError(f"Agent Lightning's server at {client.base_url} did not answer {method} {path}: {exc}") \
            from exc
    if response.status_code >= 400:
        raise ExportError(f"Agent Lightning's server answered {method} {path} with {response.status_code}: "
                          f"{response.text[:300]}")
    return response.json()


def _json(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"unparsed": text}
    return value if isinstance(value, dict) else {"value": value}
