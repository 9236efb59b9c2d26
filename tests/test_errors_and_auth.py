"""Errors come back in OpenAI's shape with the right status; credentials go where configured, never to disk."""

from __future__ import annotations

import httpx
import openai
import orjson
import pytest
from conftest import TOOLS, stopped_store
from helpers import ThreadServer, recording_app
from openai import OpenAI

from agentgym.scenarios.local_stack import free_port


def _client(service, key="k") -> OpenAI:
    return OpenAI(base_url=f"{service.url}/v1", api_key=key, max_retries=0)


def _error(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"message", "type", "code"} <= set(body["error"]), body
    return body["error"]


def test_upstream_errors_keep_their_status_and_body(shared_proxy):
    client = _client(shared_proxy)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi #status=429"}])
    assert limited.value.status_code == 429 and "simulated upstream error 429" in limited.value.message
    assert limited.value.response.headers["x-agentgym-episode-id"]
    with pytest.raises(openai.InternalServerError) as broken:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi #status=503"}])
    assert broken.value.status_code == 503


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "m"}', 400, "invalid_messages"),
        (b'{"model": "m", "messages": ["hi"]}', 400, "invalid_messages"),
    ],
)
def test_bad_requests_get_clear_errors(shared_proxy, body, status, code):
    response = httpx.post(f"{shared_proxy.url}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == status
    assert _error(response)["code"] == code


def test_unreachable_and_slow_upstreams_give_502_and_504(start_proxy):
    dead = start_proxy(upstream=f"http://127.0.0.1:{free_port()}/v1")
    response = httpx.post(f"{dead.url}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 502 and _error(response)["code"] == "upstream_unreachable"

    slow = start_proxy(env={"AGENTGYM_UPSTREAM__TIMEOUT_S": "0.5"})
    response = httpx.post(f"{slow.url}/v1/chat/completions", timeout=30,
                          json={"model": "m", "messages": [{"role": "user", "content": "hi #delay=3"}]})
    assert response.status_code == 504 and _error(response)["code"] == "upstream_timeout"


def test_large_bodies_are_refused_with_413(start_proxy):
    proxy = start_proxy(env={"AGENTGYM_SERVER__MAX_BODY_BYTES": "2000"})
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = httpx.post(f"{proxy.url}/v1/chat/completions", json=big)
    assert response.status_code == 413 and _error(response)["code"] == "request_too_large"

    def chunked():  # no Content-Length: the limit holds while reading
        for _ in range(10):
            yield b"x" * 500

    response = httpx.post(f"{proxy.url}/v1/chat/completions", content=chunked())
    assert response.status_code == 413
    ok = httpx.post(f"{proxy.url}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200


def test_a_stream_that_breaks_upstream_ends_with_an_error_event_and_is_recorded(proxy):
    request = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "tell me a long story #abort"}]}
    with httpx.stream("POST", f"{proxy.url}/v1/chat/completions", json=request, timeout=30) as response:
        assert response.status_code == 200
        events = [e for e in response.read().decode().split("\n\n") if e.strip()]
    last = orjson.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_unreachable"
    con = stopped_store(proxy)
    assert con.execute("SELECT status, error_type FROM inferences").fetchall() == [(502, "upstream_unreachable")]


def test_proxy_keys_are_required_and_never_reach_the_upstream_or_the_store(start_proxy, tmp_path):
    seen: list[dict[str, str]] = []
    with ThreadServer(recording_app(seen)) as upstream:
        proxy = start_proxy(
            upstream=f"{upstream.url}/v1",
            env={"AGENTGYM_SERVER__PROXY_KEYS": '["pk-team-a"]', "OPENAI_API_KEY": "sk-upstream-secret"},
        )
        ask = [{"role": "user", "content": "get_weather city=Oslo"}]
        with pytest.raises(openai.AuthenticationError):
            _client(proxy, key="wrong").chat.completions.create(model="m", messages=ask, tools=TOOLS)
        assert not seen
        answer = _client(proxy, key="pk-team-a").chat.completions.create(model="m", messages=ask, tools=TOOLS)
        assert answer.choices[0].message.tool_calls
        assert seen[-1]["authorization"] == "Bearer sk-upstream-secret"
        models = httpx.get(f"{proxy.url}/v1/models")
        assert models.status_code == 401
        store = stopped_store(proxy)
        store.close()
    raw = proxy.db.read_bytes() + (proxy.db.with_name(proxy.db.name + ".wal").read_bytes()
                                   if proxy.db.with_name(proxy.db.name + ".wal").exists() else b"")
    assert b"Oslo" in raw  # the request was recorded ...
    for secret in (b"sk-upstream-secret", b"pk-team-a"):
        assert secret not in raw  # ... but no credential was
        assert secret.decode() not in proxy.log()


def test_client_keys_pass_through_when_the_proxy_has_none(start_proxy):
    seen: list[dict[str, str]] = []
    with ThreadServer(recording_app(seen)) as upstream:
        proxy = start_proxy(upstream=f"{upstream.url}/v1", env={"OPENAI_API_KEY": "sk-env"})
        _client(proxy, key="sk-client-own").chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert seen[-1]["authorization"] == "Bearer sk-client-own"
        env_only = start_proxy(upstream=f"{upstream.url}/v1",
                               env={"OPENAI_API_KEY": "sk-env", "AGENTGYM_UPSTREAM__AUTH": "env"})
        _client(env_only, key="sk-client-own").chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        assert seen[-1]["authorization"] == "Bearer sk-env"
