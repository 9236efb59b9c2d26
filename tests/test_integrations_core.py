"""`agentgym.integrations` itself, through a real proxy: concurrent runs in one process keep their own
episode ids, `async with` sends the outcome, a run that raised is reported as failed, and a proxy
that cannot be reached never breaks the agent."""

from __future__ import annotations

import asyncio

from conftest import stopped_store
from helpers import recorded_episode
from openai import AsyncOpenAI

from agentgym.integrations import async_http_client, current_episode, episode


async def one_run(client: AsyncOpenAI, name: str, *, success: bool | None, fail: bool = False) -> str:
    """Two requests of one conversation with a different opening per run (so only the header tells
    which episode each request belongs to if linking went by content)."""
    async with episode(f"ep-{name}", base_url=str(client.base_url)) as ep:
        for turn in range(2):
            await client.chat.completions.create(model="agentgym-sim", messages=[
                {"role": "user", "content": f"Say hello, turn {turn}."}])
            await asyncio.sleep(0)  # let the other runs' requests interleave with this one's
        assert current_episode() is ep
        if fail:
            raise RuntimeError("the agent broke")
        ep.success = success
    return ep.id


async def runs(base_url: str) -> list[str]:
    client = AsyncOpenAI(base_url=base_url, api_key="sk-any", http_client=async_http_client())
    async def guarded(name: str, **kwargs) -> None:
        try:
            await one_run(client, name, **kwargs)
        except RuntimeError:
            pass
    await asyncio.gather(guarded("ok", success=True), guarded("bad", success=False), guarded("broke", success=None,
                                                                                               fail=True),
                         guarded("silent", success=None))
    return ["ep-ok", "ep-bad", "ep-broke", "ep-silent"]


def test_concurrent_runs_keep_their_own_ids_and_outcomes(proxy):
    ids = asyncio.run(runs(f"{proxy.url}/v1"))
    assert current_episode() is None
    with stopped_store(proxy) as con:
        recorded = {i: recorded_episode(con, i) for i in ids}
    for i in ids:
        assert recorded[i].links == ["header", "header"], i  # both requests of each run, none of another's
    assert recorded["ep-ok"].feedback == [True]
    assert recorded["ep-bad"].feedback == [False]
    assert recorded["ep-broke"].feedback == [False]  # raised with no outcome set: reported as failed
    assert recorded["ep-silent"].feedback == []  # no outcome set, no error: nothing is claimed


def test_feedback_to_a_proxy_that_is_down_never_breaks_the_run():
    with episode("ep-offline", base_url="http://127.0.0.1:9/v1") as ep:
        ep.success = True
    assert not ep.sent
