"""Simulated agents and users: real agent loops with the `openai` SDK, through the proxy.

Each episode is what a production agent does: send the conversation with the scenario's tools,
run the tool calls the model makes against the environment, send the results back, until
the model answers in text. The simulated user knows their goal (as a real user does): when
the agent answers while the request is unfinished, they make their next request or, once,
say in plain words what they still need and repeat the last one. At the end the agent reports the outcome through `POST /v1/feedback`.

`run_episode` is the loop itself, over any way of calling the model: through the proxy with
the SDK (`through_proxy`), or straight to `SimulatedModel` for calibrating its knobs. It runs
the calls through a `TaskTools`, so a caller that passes its own (`agentgym.integrations.openai_sdk`)
gets every call's run back as the other frameworks' integrations do.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from openai import AsyncOpenAI

from agentgym.scenarios.framework_tools import TaskTools
from agentgym.scenarios.scenario import Scenario, Task

MODEL = "agentgym-sim"
NUDGE = "That isn't done yet. What I still need: {need}. Again: {request}"


@dataclass
class EpisodeResult:
    episode_id: str | None
    task_id: str
    success: bool
    tool_calls: int
    tool_errors: int
    requests: int
    prompt_tokens: int
    unreported: int = 0  # tool results never sent back: the agent stopped at its request limit


Complete = Callable[[list[dict[str, Any]]], Awaitable[tuple[dict[str, Any], str | None, int]]]


async def run_episode(complete: Complete, scenario: Scenario, task: Task, *, max_requests: int = 12,
                      tools: TaskTools | None = None) -> EpisodeResult:
    """The agent loop. `complete(messages)` is one model call: (assistant message, episode id, prompt tokens)."""
    tools = tools or TaskTools(scenario, task)
    env = tools.env
    messages: list[dict[str, Any]] = [{"role": "system", "content": scenario.system_prompt},
                                      {"role": "user", "content": task.user}]
    follow_ups = list(task.follow_ups)
    request = task.user
    nudged_at = -1
    result = EpisodeResult(None, task.id, False, 0, 0, 0, 0)
    for _ in range(max_requests):
        message, episode_id, prompt_tokens = await complete(messages)
        result.episode_id = result.episode_id or episode_id
        result.requests += 1
        result.prompt_tokens += prompt_tokens
        messages.append(message)
        if message.get("tool_calls"):
            for call in message["tool_calls"]:
                ok, content = tools.execute(call["function"]["name"], call["function"].get("arguments"))
                result.tool_calls += 1
                result.tool_errors += not ok
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
            continue
        if env.complete:
            break
        if follow_ups:
            request = follow_ups.pop(0)
            messages.append({"role": "user", "content": request})
        elif nudged_at != sum(env.done):  # once per step of progress, as a patient user would
            nudged_at = sum(env.done)
            messages.append({"role": "user", "content": NUDGE.format(need=env.still_needed(), request=request)})
        else:
            break
    while messages[-1 - result.unreported].get("role") == "tool":
        result.unreported += 1
    result.success = tools.complete
    return result


def through_proxy(client: AsyncOpenAI, tools: list[dict[str, Any]], *, seed: int, stream: bool,
                  model: str = MODEL) -> Complete:
    """Model calls with the `openai` SDK, as the agent's own code makes them."""
    return lambda messages: _complete(client, messages, tools, stream, seed, model)


async def _complete(client: AsyncOpenAI, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
                    stream: bool, seed: int, model: str) -> tuple[dict[str, Any], str | None, int]:
    """One call; `seed` is OpenAI's sampling seed, so an episode replays identically."""
    if not stream:
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages, tools=tools,
                                                                     seed=seed)
        completion = raw.parse()
        message = completion.choices[0].message.model_dump(exclude_none=True, exclude={"annotations", "audio", "refusal"})
        return message, raw.headers.get("x-agentgym-episode-id"), completion.usage.prompt_tokens if completion.usage else 0
    raw = await client.chat.completions.with_raw_response.create(
        model=model, messages=messages, tools=tools, seed=seed, stream=True, stream_options={"include_usage": True})
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    prompt_tokens = 0
    async for chunk in raw.parse():
        prompt_tokens = chunk.usage.prompt_tokens if chunk.usage else prompt_tokens
        for choice in chunk.choices:
            content.append(choice.delta.content or "")
            for fragment in choice.delta.tool_calls or ():
                call = calls.setdefault(fragment.index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
                call["id"] = fragment.id or call["id"]
                call["function"]["name"] += (fragment.function.name or "") if fragment.function else ""
                call["function"]["arguments"] += (fragment.function.arguments or "") if fragment.function else ""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, raw.headers.get("x-agentgym-episode-id"), prompt_tokens


async def run_episodes(proxy_url: str, scenario: Scenario, *, episodes: int, seed: int, concurrency: int = 8,
                       stream_share: float = 0.0, on_result: Callable[[EpisodeResult], None] | None = None
                       ) -> list[EpisodeResult]:
    """`episodes` tasks drawn (seeded) from the scenario, `concurrency` agents at a time."""
    rng = random.Random(seed)
    plan = [(rng.choice(scenario.tasks), rng.random() < stream_share, rng.getrandbits(31)) for _ in range(episodes)]
    results: list[EpisodeResult] = []
    queue: asyncio.Queue = asyncio.Queue()
    for item in plan:
        queue.put_nowait(item)
    async with httpx.AsyncClient(timeout=60) as http:
        client = AsyncOpenAI(base_url=f"{proxy_url}/v1", api_key="agentgym-simulated-agent", max_retries=0,
                             http_client=httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency * 2)))

        async def worker() -> None:
            while not queue.empty():
                task, stream, episode_seed = queue.get_nowait()
                complete = through_proxy(client, scenario.tools, seed=episode_seed, stream=stream)
                result = await run_episode(complete, scenario, task)
                if result.episode_id:
                    response = await http.post(f"{proxy_url}/v1/feedback", json={
                        "episode_id": result.episode_id, "success": result.success,
                        "metadata": {"scenario": scenario.name, "task": task.id}})
                    response.raise_for_status()
                results.append(result)
                if on_result is not None:
                    on_result(result)

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await client.close()
    return results
