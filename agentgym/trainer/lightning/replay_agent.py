"""The replay agent: one Agent Lightning rollout over one recorded context.

`agl-controller` (local runner) starts `ReplayAgent().run()` in a process of its own for each
rollout the VERL trainer enqueues, with `AGL_OPENAI_BASE_URL` (the gateway's route for this
rollout, in front of the model being trained), `AGL_EVENT_URL` and `AGL_KEY` set, and the
`env_map` of the VERL configuration (`verl_config`): the recorded context's id, the replay file
and the reward model. The agent asks the planner, through the gateway, the question the proxy's
LLM planner asks in production (`agentgym.proxy.llm_planner.planner_request`) on the recorded
conversation and tools (nothing is executed), scores its answer with the reward model, and posts
it as the rollout's `reward` event (`score` says how).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson

from agentgym.proxy.llm_planner import UnusableAnswer, planner_request, read_answer


def replay_row(path: Path, data_id: str) -> dict[str, Any]:
    """The row of the replay file (JSON lines, `Context.replay_row()`) whose data_id is `data_id`."""
    with path.open("rb") as rows:
        for line in rows:
            row = orjson.loads(line)
            if row.get("data_id") == data_id:
                return row
    raise KeyError(f"no recorded context {data_id!r} in {path}")


def score(answer: dict[str, Any], row: dict[str, Any], reward_of: Any) -> tuple[float, str]:
    """The reward of the planner's `answer` (an assistant message) on `row`, and why: its choice's
    value by the reward model (`reward_model.choice_value`), with the tool the model called in
    the recording. An answer naming no offered tool scores 0."""
    from agentgym.trainer.lightning.reward_model import choice_value

    functions = {t["function"]["name"]: t["function"] for t in row["tools"]}
    names = list(functions)
    try:
        action, chosen = read_answer(answer, names)
    except UnusableAnswer as exc:
        return 0.0, str(exc)
    left = [names[i] for i in chosen]
    value = choice_value(action, left, row.get("called"),
                         lambda name: reward_of(row["messages"], functions[name]))
    if action == "force":
        return value, f"forced {left[0]}"
    return value, (f"{action}: the model called {row['called']}" if row.get("called") in left
                   else f"{action}: the mean over {len(left)} tools")


class ReplayAgent:
    def run(self) -> None:
        from agentgym.trainer.encoder import shared_encoder
        from agentgym.trainer.lightning.reward_model import RewardModel

        row = replay_row(Path(os.environ["AGENTGYM_REPLAY_FILE"]), os.environ["AGENTGYM_REPLAY_ID"])
        model = RewardModel.load(Path(os.environ["AGENTGYM_REWARD_MODEL"]))
        encoder = shared_encoder()
        key = os.environ.get("AGL_KEY") or ""
        headers = {"authorization": f"Bearer {key}"} if key else {}
        with httpx.Client(timeout=600, headers=headers) as client:
            # the gateway names the model it serves itself (default_proxy.model_name)
            functions = [t["function"] for t in row["tools"]]
            response = client.post(f"{os.environ['AGL_OPENAI_BASE_URL']}/chat/completions",
                                   json={"model": "planner", **planner_request(row["messages"], functions)})
            response.raise_for_status()
            answer = response.json()["choices"][0]["message"]
            value, reason = score(answer, row, lambda messages, function: model.probability(encoder, messages,
                                                                                             function))
            client.post(os.environ["AGL_EVENT_URL"], json={
                "event_type": "reward",
                "data": {"value": value, "source": "agentgym-reward-model", "reason": reason},
            }).raise_for_status()
