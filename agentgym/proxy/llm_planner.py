"""The LLM planner: a served LLM (a policy version of engine "lightning") asked which tool the
agent should use, its answer turned into the default planner's three actions.

The question (`planner_request`) is short: a system line saying what to answer, the
conversation's context as the default planner reads it (the latest user turn and the tool
results since: `agentgym.proxy.planner.context_text`), and the offered tools by name and
description as the request's `tools`. The answer (`read_answer`): a call of one tool forces it;
text naming one tool forces it, naming several offers only those; "any" defers (the request
goes unchanged). Agent Lightning's replay rollouts ask the same question
(`agentgym.trainer.lightning.replay_agent`), so what is trained is what serves.

The propensity recorded with a decision is the probability of the answer the model sampled:
the product of its tokens' probabilities, from the log-probabilities the server returns when
asked (`logprobs`; vLLM does). It is a lower bound of the action's probability (the tokens of
a tool call's arguments count too). A server that returns none gets 1.0: the decision is then
recorded as if the answer were certain, which off-policy estimates must not read as exploration.

The live version is asked through Agent Lightning's gateway when `lightning.gateway` is on: the
episode is an Agent Lightning rollout (its id the episode's), created at its first planner call,
and the gateway records each call (with token ids and log-probabilities, in its "train" mode) as
a `model_request` event; the episode's feedback adds its `reward` event and ends the rollout.
The gateway serves one model (agl-server's `default_proxy.model_name`, at the endpoints its
model registry maps that name to): `point_gateway` maps it to the live version's server when
the proxy loads that version, so a version's model must be served under that name; a canary
or shadow version is asked at its own server directly. Use an agl-server no `agl-controller`
watches: a controller fails running rollouts it did not start.

An episode's rollout that gets no feedback is closed once it has been idle for
`episodes.idle_timeout_s` (`close_idle`): marked failed, with no reward event (its outcome is
unknown), so Agent Lightning's store holds no rollout open for good.

With `lightning.planner: upstream` no planner call is made: the agent's own requests are the
planner's, and go through the same gateway and rollouts (`agentgym.proxy.upstream_planner`).

Any failure (the server down or answering an error, the timeout, an answer naming no offered
tool) is counted (`agentgym_internal_errors{stage="llm_planner_..."}`), and the request goes to
the model unchanged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import orjson

from agentgym.config import LightningConfig, RewardRule
from agentgym.proxy.planner import context_text
from agentgym.trainer.policy import DEFER, OFFER, Action, Choice
from agentgym.trainer.registry import LlmSpec, Version

log = logging.getLogger(__name__)

SYSTEM = ("You choose the tool an AI agent uses next, from the tools offered. Call the one tool it must use; "
          "or answer with the names of the tools it may choose from, separated by commas; or answer `any` to "
          "leave it every tool.")
ATTEMPT = "0"  # agentlightning.schemas.DEFAULT_ATTEMPT_ID
KNOWN_ROLLOUTS = 100_000
BASE = "upstream"  # the gateway's target in upstream mode while no LLM version is live: upstream.url, version 0
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")


class UnusableAnswer(ValueError):
    pass


def planner_request(messages: list[dict[str, Any]], functions: list[dict[str, Any]]) -> dict[str, Any]:
    """The question put to an LLM planner about a request with these messages and offered functions."""
    return {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": context_text(messages)}],
            "tools": [{"type": "function", "function": {"name": f["name"], "description": f.get("description") or ""}}
                      for f in functions]}


def read_answer(message: dict[str, Any], names: list[str]) -> tuple[Action, list[int]]:
    """The action an LLM planner's answer asks for, and the offered tools (indices) it leaves."""
    calls = message.get("tool_calls") or []
    if calls:
        asked = [str((calls[0].get("function") or {}).get("name") or "")]
    else:
        text = str(message.get("content") or "").strip().strip("`'\". \n")
        if text.lower() == "any":
            return "defer", list(range(len(names)))
        asked = [part.strip().strip("`'\".") for part in re.split(r"[,\n]", text) if part.strip()]
    unknown = [a for a in asked if a not in names]
    if not asked or unknown:
        raise UnusableAnswer(f"the planner answered {orjson.dumps(message).decode()[:200]}: "
                             f"{'no tool named' if not asked else f'{unknown[0]!r} was not offered'}")
    chosen = sorted({names.index(a) for a in asked})
    return ("force" if len(chosen) == 1 else "offer"), chosen


def answer_probability(choice: dict[str, Any]) -> float | None:
    """The probability of the sampled answer from its tokens' log-probabilities; None if not returned."""
    content = (choice.get("logprobs") or {}).get("content")
    if not isinstance(content, list) or not content:
        return None
    total = sum(float(token["logprob"]) for token in content)
    return math.exp(total) if math.isfinite(total) else None


def as_choice(action: Action, chosen: list[int], propensity: float) -> Choice:
    tool = chosen[0] if action == "force" else DEFER if action == "defer" else OFFER
    return Choice(action, tool, propensity, chosen)


def rollout_id(episode_id: str) -> str:
    """The Agent Lightning rollout of an episode: its id, if it can stand in a URL path as it is."""
    if _SAFE_ID.fullmatch(episode_id):
        return episode_id
    return "ep-" + hashlib.blake2b(episode_id.encode(), digest_size=16).hexdigest()


class LlmPlanner:
    """Asks LLM planner versions, and keeps Agent Lightning's gateway and rollouts in step."""

    def __init__(self, config: LightningConfig, rule: RewardRule, count_failure: Callable[[str], None], *,
                 upstream_url: str | None = None, agent_timeout_s: float = 600.0) -> None:
        self.config = config
        self.upstream_url = upstream_url  # the agent's own upstream (upstream mode's base model)
        self.agent_timeout_s = agent_timeout_s  # upstream mode: an agent's request through the gateway
        self.rule = rule
        self.count_failure = count_failure
        key = os.environ.get(config.key_env)
        self._agl_headers = {"authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(timeout=config.planner_timeout_s)
        # rollout id -> (its episode, when it was last used), least recently used first
        self._rollouts: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._tasks: set[asyncio.Task] = set()
        self.gateway_version: str | None = None  # the version the gateway was last pointed at

    async def choose(self, version: Version, spec: LlmSpec, messages: list[dict[str, Any]],
                     functions: list[dict[str, Any]], episode_id: str) -> Choice | None:
        """The version's decision, or None (counted) if it failed: the request then goes unchanged."""
        body = {**planner_request(messages, functions), "model": spec.model, "stream": False,
                "max_tokens": self.config.planner_max_tokens}
        try:
            async with asyncio.timeout(self.config.planner_timeout_s):
                if self.config.gateway and version.version == self.gateway_version:
                    answer = await self._through_gateway(body, episode_id)
                else:
                    answer = await self.post(f"{spec.server}/chat/completions",
                                              {**body, "temperature": self.config.planner_temperature,
                                               "logprobs": True}, {})
            choice = answer["choices"][0]
            action, chosen = read_answer(choice["message"], [f["name"] for f in functions])
        except TimeoutError:
            return self._failed("timeout", version, f"no answer within {self.config.planner_timeout_s:g} s")
        except UnusableAnswer as exc:
            return self._failed("unusable_answer", version, str(exc))
        except (httpx.HTTPError, KeyError, IndexError, TypeError, AttributeError, orjson.JSONDecodeError) as exc:
            return self._failed("error", version, f"{type(exc).__name__}: {exc}")
        return as_choice(action, chosen, answer_probability(choice) or 1.0)

    def _failed(self, reason: str, version: Version, detail: str) -> None:
        self.count_failure(f"llm_planner_{reason}")
        log.warning("LLM planner %s failed (%s); the request goes through unchanged", version.version, detail)
        return None

    async def post(self, url: str, body: Any, headers: dict[str, str], method: str = "POST", *,
                   timeout_s: float | None = None) -> Any:
        response = await self._client.request(method, url, content=orjson.dumps(body),
                                              headers={"content-type": "application/json", **headers},
                                              timeout=httpx.USE_CLIENT_DEFAULT if timeout_s is None else timeout_s)
        if response.status_code >= 400:
            raise httpx.HTTPStatusError(f"{url} answered {response.status_code}: {response.text[:300]}",
                                        request=response.request, response=response)
        return orjson.loads(response.content)

    async def _through_gateway(self, body: dict[str, Any], episode_id: str) -> dict[str, Any]:
        try:
            return await self.post(await self.gateway_url(episode_id), body, self._agl_headers)
        except httpx.HTTPStatusError as exc:
            self.gateway_refused(episode_id, exc.response.status_code)
            raise

    async def gateway_url(self, episode_id: str) -> str:
        """The gateway's chat-completions route for the episode's rollout (made if need be)."""
        rid = await self._rollout(episode_id)
        return f"{self.config.server_url}/proxy/rollout/{rid}/attempt/{ATTEMPT}/mode/train/openai/v1/chat/completions"

    def gateway_refused(self, episode_id: str, status: int) -> None:
        """What the gateway's refusal says of our state, forgotten so that it is made again."""
        if status == 404:  # agl-server restarted, its rollouts gone: made again next time
            self._rollouts.pop(rollout_id(episode_id), None)
        if status == 503:  # or its model registry emptied: pointed again at the next refresh
            self.gateway_version = None

    async def agent_request(self, episode_id: str, body: bytes, timeout_s: float) -> httpx.Response:
        """The agent's own request through the gateway, as the episode's rollout's (upstream mode)."""
        return await self._client.post(await self.gateway_url(episode_id), content=body, timeout=timeout_s,
                                       headers={"content-type": "application/json", **self._agl_headers})

    async def _rollout(self, episode_id: str) -> str:
        """The episode's rollout in agl-server, created and set running at its first gateway call."""
        rid = rollout_id(episode_id)
        if rid in self._rollouts:
            self._rollouts[rid] = (episode_id, time.monotonic())
            self._rollouts.move_to_end(rid)
            return rid
        [created] = await self.post(f"{self.config.server_url}/api/rollouts", [{
            "rollout_id": rid, "input": {"episode_id": episode_id, "source": "agentgym"}, "is_train": True,
            "metadata": {"agentgym_episode_id": episode_id}}], self._agl_headers)
        if created["status"]["state"] == "queuing":
            try:
                await self.post(f"{self.config.server_url}/api/rollouts/{rid}",
                                 {"status": {"state": "running", "last_attempt_id": ATTEMPT}}, self._agl_headers,
                                 "PATCH")
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 409:  # 409: another request of the episode set it running first
                    raise
        self._rollouts[rid] = (episode_id, time.monotonic())
        if len(self._rollouts) > KNOWN_ROLLOUTS:
            self._rollouts.popitem(last=False)
        return rid

    def episode_ended(self, episode_id: str, reward: float | None, success: bool | None) -> None:
        """An episode's feedback: its rollout, if the planner made one, gets its reward and ends.
        Off the request path; a failure is counted."""
        rid = rollout_id(episode_id)
        if self._rollouts.pop(rid, None) is None:
            return
        value = reward if reward is not None else self.rule.success if success else self.rule.failure
        reason = "episode feedback" if success is None else "episode succeeded" if success else "episode failed"
        self.spawn(self._end_rollout(rid, value, reason))

    def close_idle(self, idle_s: float) -> int:
        """Close the rollouts of episodes idle for `idle_s` with no feedback: failed, no reward (the
        outcome is unknown), as the store counts such an episode finished. How many."""
        cutoff, closed = time.monotonic() - idle_s, 0
        while self._rollouts:
            rid, (_, last) = next(iter(self._rollouts.items()))
            if last > cutoff:
                break
            del self._rollouts[rid]
            self.spawn(self._end_rollout(rid, None, f"no outcome: the episode was idle for {idle_s:g} s without "
                                                    "feedback"))
            closed += 1
        return closed

    async def _end_rollout(self, rid: str, value: float | None, reason: str) -> None:
        """Its reward event, if known, then its end: succeeded (it ran to its end; the reward says
        how it went), or failed with `reason` when no outcome is known."""
        status = {"state": "succeeded"} if value is not None else {"state": "failed", "error_message": reason}
        try:
            if value is not None:
                await self.post(f"{self.config.server_url}/api/rollouts/{rid}/attempt/{ATTEMPT}/events",
                                 {"event_type": "reward", "data": {"value": value, "source": "agentgym",
                                                                   "reason": reason}}, self._agl_headers)
            await self.post(f"{self.config.server_url}/api/rollouts/{rid}", {"status": status}, self._agl_headers,
                             "PATCH")
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 409:  # 409: it ended already (feedback after it idled out)
                self._reward_failed(rid, exc)
        except httpx.HTTPError as exc:
            self._reward_failed(rid, exc)

    def _reward_failed(self, rid: str, exc: Exception) -> None:
        self.count_failure("llm_planner_reward")
        log.warning("could not end rollout %s: %s", rid, exc)

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` on the event loop without waiting for it (a shadow's call, a reward)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def point_gateway(self, version: str, spec: LlmSpec) -> bool:
        """Map the gateway's model to `version`'s server in Agent Lightning's model registry (its
        `version` the number of ours; BASE, the agent's upstream, is 0). The registry upserts by
        (model, endpoint) and has no per-entry delete, so it is emptied first: only what the
        gateway serves lives there. Blocking; whether it worked."""
        number = 0 if version == BASE else int(version.removeprefix("v"))
        try:
            with httpx.Client(base_url=self.config.server_url, headers=self._agl_headers,
                              timeout=self.config.planner_timeout_s) as client:
                client.delete("/api/models").raise_for_status()
                client.post("/api/models", json=[{"model": spec.model, "endpoint": spec.server,
                                                  "version": number}]).raise_for_status()
        except httpx.HTTPError as exc:
            self.count_failure("llm_planner_gateway")
            log.error("could not point Agent Lightning's gateway at %s (%s at %s): %s; retried at the next refresh",
                      version, spec.model, spec.server, exc)
            return False
        self.gateway_version = version
        log.info("Agent Lightning's gateway serves %s (%s at %s)", version, spec.model, spec.server)
        return True

    async def aclose(self) -> None:
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
