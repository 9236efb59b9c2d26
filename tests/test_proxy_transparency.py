"""An unchanged OpenAI SDK client through `agentgym serve`: same answers, plus X-AgentGym-* headers."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from conftest import TOOLS, stopped_store
from openai import AsyncOpenAI, OpenAI

ASK = [{"role": "user", "content": "What is the get_weather in city=Paris please"}]


def _shape(value):
    """Structure without the values that differ per call (ids, timestamps)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items() if k not in ("id", "created")}
    if isinstance(value, list):
        return [_shape(v) for v in value]
    return value


def test_a_non_streaming_tool_call_matches_a_direct_call(shared_proxy, model):
    direct = OpenAI(base_url=f"{model.url}/v1", api_key="k").chat.completions.with_raw_response.create(
        model="agentgym-sim", messages=ASK, tools=TOOLS)
    proxied = OpenAI(base_url=f"{shared_proxy.url}/v1", api_key="k").chat.completions.with_raw_response.create(
        model="agentgym-sim", messages=ASK, tools=TOOLS)
    assert _shape(orjson.loads(proxied.http_response.content)) == _shape(orjson.loads(direct.http_response.content))
    call = proxied.parse().choices[0].message.tool_calls[0]
    assert (call.function.name, orjson.loads(call.function.arguments)) == ("get_weather", {"city": "Paris"})
    assert proxied.headers["x-agentgym-episode-id"].startswith("ep-")
    assert proxied.headers["x-agentgym-inference-id"].startswith("inf-")
    assert "x-agentgym-episode-id" not in direct.headers


def test_parallel_tool_calls_and_tool_choice_pass_through(shared_proxy):
    client = OpenAI(base_url=f"{shared_proxy.url}/v1", api_key="k")
    both = [{"role": "user", "content": "get_weather city=Oslo and get_time tz=CET"}]
    message = client.chat.completions.create(model="m", messages=both, tools=TOOLS).choices[0].message
    assert [c.function.name for c in message.tool_calls] == ["get_weather", "get_time"]
    single = client.chat.completions.create(model="m", messages=both, tools=TOOLS, parallel_tool_calls=False)
    assert [c.function.name for c in single.choices[0].message.tool_calls] == ["get_weather"]
    forced = client.chat.completions.create(
        model="m", messages=both, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "book_table"}})
    assert [c.function.name for c in forced.choices[0].message.tool_calls] == ["book_table"]
    none = client.chat.completions.create(model="m", messages=both, tools=TOOLS, tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content


def _events(response: httpx.Response) -> list:
    body = response.read().decode()
    return [e.removeprefix("data: ") for e in body.split("\n\n") if e.strip()]


def test_a_stream_arrives_chunk_for_chunk(shared_proxy, model):
    request = {"model": "agentgym-sim", "messages": [{"role": "user", "content": "get_weather city=Rome and get_time tz=CET"}],
               "tools": TOOLS, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(timeout=30) as http:
        direct = http.post(f"{model.url}/v1/chat/completions", json=request)
        proxied = http.post(f"{shared_proxy.url}/v1/chat/completions", json=request)
    assert proxied.headers["content-type"].startswith("text/event-stream")
    direct_events, proxied_events = _events(direct), _events(proxied)
    assert proxied_events[-1] == "[DONE]"
    assert [_shape(orjson.loads(e)) for e in proxied_events[:-1]] == [_shape(orjson.loads(e)) for e in direct_events[:-1]]

    stream = OpenAI(base_url=f"{shared_proxy.url}/v1", api_key="k").chat.completions.create(
        model="agentgym-sim", messages=request["messages"], tools=TOOLS, stream=True, stream_options={"include_usage": True})
    calls: dict[int, list[str]] = {}
    usage = None
    for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            for fragment in choice.delta.tool_calls or ():
                entry = calls.setdefault(fragment.index, ["", ""])
                entry[0] += fragment.function.name or ""
                entry[1] += fragment.function.arguments or ""
    assert [(name, orjson.loads(args)) for name, args in calls.values()] == [
        ("get_weather", {"city": "Rome"}), ("get_time", {"tz": "CET"})]
    assert usage is not None and usage.prompt_tokens > 0


def test_the_async_client_many_concurrent_conversations(shared_proxy):
    async def run() -> list[str]:
        client = AsyncOpenAI(base_url=f"{shared_proxy.url}/v1", api_key="k")
        async def one(i: int) -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=[{"role": "user", "content": f"get_time tz=UTC+{i}"}], tools=TOOLS)
            assert raw.parse().choices[0].message.tool_calls[0].function.arguments == f'{{"tz":"UTC+{i}"}}'
            return raw.headers["x-agentgym-episode-id"]
        try:
            return await asyncio.gather(*(one(i) for i in range(40)))
        finally:
            await client.close()

    episodes = asyncio.run(run())
    assert len(set(episodes)) == 40  # unrelated conversations are never merged


def test_models_are_passed_through(shared_proxy):
    assert [m.id for m in OpenAI(base_url=f"{shared_proxy.url}/v1", api_key="k").models.list()] == ["agentgym-sim"]


def test_streams_are_recorded_like_non_streaming_calls(proxy):
    client = OpenAI(base_url=f"{proxy.url}/v1", api_key="k")
    ask = [{"role": "user", "content": "get_weather city=Lima and get_time tz=PET"}]
    for chunk in client.chat.completions.create(model="agentgym-sim", messages=ask, tools=TOOLS, stream=True,
                                                stream_options={"include_usage": True}):
        pass
    for chunk in client.chat.completions.create(model="agentgym-sim", messages=ask, tools=TOOLS, stream=True):
        pass
    con = stopped_store(proxy)
    rows = con.execute(
        "SELECT id, stream, status, prompt_tokens, completion_tokens, usage_estimated, ttfb_ms, finish_reason, request "
        "FROM inferences ORDER BY created_at").fetchall()
    assert len(rows) == 2
    with_usage, without_usage = rows
    assert with_usage[1:3] == (True, 200) and with_usage[5] is False and with_usage[3] > 0
    assert without_usage[5] is True and without_usage[3] > 0 and without_usage[4] > 0  # counted by litellm
    assert all(r[6] is not None and r[7] == "tool_calls" for r in rows)
    assert orjson.loads(with_usage[8])["messages"] == ask
    calls = con.execute("SELECT inference_id, position, name, arguments FROM tool_calls ORDER BY inference_id, position").fetchall()
    assert sorted((c[2], orjson.loads(c[3])) for c in calls) == sorted(
        [("get_weather", {"city": "Lima"}), ("get_time", {"tz": "PET"})] * 2)


def test_an_idle_client_connection_outlives_the_clients_own_pool_expiry(shared_proxy):
    """httpx (and so the openai SDK) keeps idle connections 5 s; were the proxy to close them at
    5 s too, a client could send on a connection being closed and get a read error. The proxy
    keeps them `server.keep_alive_s` (75 s): the same socket still answers after 6 s idle."""
    import http.client
    import time
    from urllib.parse import urlparse

    url = urlparse(shared_proxy.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().read() == b'{"status":"ok"}'
        sock = connection.sock
        time.sleep(6)
        connection.request("GET", "/healthz")  # on the same socket: a closed one raises RemoteDisconnected
        assert connection.sock is sock and connection.getresponse().read() == b'{"status":"ok"}'
    finally:
        connection.close()
