"""Upstream mode (`lightning.planner: upstream`): the agent's own upstream is the self-hosted
planner model, so the proxy makes no planner call of its own. The agent's requests are the
planner's: they go through Agent Lightning's gateway as the episode's rollout's model requests
(token ids and log-probabilities recorded, in its "train" mode), and the tool the model called
is recorded as the decision, with the probability of the answer it sampled as the propensity.

Where an episode's request goes (`Route`, chosen by the planner from the episode's arm):
- through the gateway, when the version serving the episode is the one the gateway serves: the
  live LLM version, or, while none is live, the agent's upstream itself (`llm_planner.BASE`,
  Agent Lightning's model version 0);
- straight to an LLM canary's own server (the gateway serves one model), its model name set;
- else to the configured upstream, as without AgentGym: control episodes while an LLM version is
  live, and every streaming request (the gateway answers no stream).

The gateway sets the model, its train temperature, `return_token_ids` and `logprobs`; what the
agent gets back is the model's answer without the token ids and log-probabilities it did not ask
for. Fail open: the gateway unreachable, too slow or answering an error, the request goes
straight to the configured upstream, unchanged (counted, `llm_gateway_request`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from agentgym.proxy.llm_planner import answer_probability
from agentgym.proxy.upstream import UpstreamReply
from agentgym.trainer.policy import DEFER, Choice

if TYPE_CHECKING:
    from agentgym.proxy.llm_planner import LlmPlanner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """Where one request goes: through the gateway, or to `server` (serving `model`) directly."""

    gateway: bool = False
    server: str | None = None
    model: str | None = None


def agent_choice(message: dict[str, Any] | None, names: list[str], propensity: float | None) -> Choice | None:
    """The model's own answer as a decision: a call of an offered tool forces it; an answer with
    no call leaves every tool to it (defer). None for no answer or a call of a tool not offered."""
    if not isinstance(message, dict):
        return None
    calls = message.get("tool_calls") or []
    if not calls:
        return Choice("defer", DEFER, propensity or 1.0, list(range(len(names))))
    name = (calls[0].get("function") or {}).get("name")
    if name not in names:
        return None
    return Choice("force", names.index(name), propensity or 1.0, [names.index(name)])


def for_client(answer: dict[str, Any], asked: dict[str, Any]) -> bytes:
    """The gateway's answer as the agent gets it: without the training fields it did not ask for."""
    answer.pop("prompt_token_ids", None)
    for choice in answer.get("choices") or []:
        if isinstance(choice, dict):
            choice.pop("token_ids", None)
            choice.pop("prompt_token_ids", None)
            if not asked.get("logprobs"):
                choice.pop("logprobs", None)
    return orjson.dumps(answer)


async def through_gateway(llm: LlmPlanner, payload: dict[str, Any], episode_id: str, timeout_s: float
                          ) -> tuple[UpstreamReply, dict[str, Any] | None, float | None] | None:
    """The agent's request through the gateway: the reply for the agent, the model's message and
    its probability; None (counted) if the gateway failed, to send the request straight upstream."""
    try:
        response = await llm.agent_request(episode_id, orjson.dumps(payload), timeout_s)
        if response.status_code >= 400:
            llm.gateway_refused(episode_id, response.status_code)
            raise httpx.HTTPStatusError(f"answered {response.status_code}: {response.text[:300]}",
                                        request=response.request, response=response)
        answer = orjson.loads(response.content)
        choice = answer["choices"][0]
    except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, IndexError, TypeError) as exc:
        llm.count_failure("llm_gateway_request")
        log.warning("Agent Lightning's gateway failed (%s: %s); the request goes straight upstream",
                    type(exc).__name__, exc)
        return None
    message, propensity = choice.get("message"), answer_probability(choice)
    reply = UpstreamReply(200, {"content-type": "application/json"}, body=for_client(answer, payload))
    return reply, message, propensity


async def shadow_answer(llm: LlmPlanner, server: str, model: str, payload: dict[str, Any], timeout_s: float
                        ) -> tuple[dict[str, Any] | None, float | None]:
    """An LLM shadow's answer to the agent's own request, at its own server (never applied)."""
    answer = await llm.post(f"{server}/chat/completions", {**payload, "model": model, "stream": False,
                                                          "logprobs": True}, {}, timeout_s=timeout_s)
    choice = answer["choices"][0]
    return choice.get("message"), answer_probability(choice)
