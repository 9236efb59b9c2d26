"""Non-OpenAI providers through litellm: the client speaks OpenAI, the provider its own API, on loopback."""

from __future__ import annotations

import json

import orjson
from conftest import stopped_store
from helpers import ThreadServer, anthropic_app
from openai import OpenAI

from agentgym.scenarios.local_stack import free_port

WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}]
MODEL = "anthropic/claude-sonnet-4-5"


def test_an_anthropic_model_is_reached_through_litellm_and_recorded(start_proxy):
    seen: list[dict] = []
    with ThreadServer(anthropic_app(seen)) as anthropic:
        proxy = start_proxy(
            upstream=f"http://127.0.0.1:{free_port()}/v1",  # nothing there: these calls must not go to it
            env={"AGENTGYM_PROVIDERS": json.dumps({"anthropic": {"api_base": anthropic.url, "api_key_env": "ANTHROPIC_API_KEY"}}),
                 "ANTHROPIC_API_KEY": "sk-ant-local-test"},
        )
        client = OpenAI(base_url=f"{proxy.url}/v1", api_key="k", max_retries=0)
        ask = [{"role": "user", "content": "What's the weather in Paris?"}]
        raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=ask, tools=WEATHER, max_tokens=200)
        message = raw.parse().choices[0].message
        assert message.tool_calls[0].function.name == "get_weather"
        assert orjson.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
        assert raw.headers["x-agentgym-episode-id"]

        # The tool result goes back in OpenAI's shape; litellm turns it into a tool_result block.
        follow = [*ask, message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": '{"forecast": "sunny"}'}]
        streamed = client.chat.completions.create(model=MODEL, messages=follow, tools=WEATHER, max_tokens=200,
                                                  stream=True, stream_options={"include_usage": True})
        text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
        assert text == "It is sunny in Paris."

        assert seen[0]["path"] == "/v1/messages" and seen[0]["headers"]["x-api-key"] == "sk-ant-local-test"
        assert seen[0]["body"]["tools"][0]["name"] == "get_weather"
        assert any(block.get("type") == "tool_result" for block in seen[1]["body"]["messages"][-1]["content"])

        con = stopped_store(proxy)
    rows = con.execute("SELECT provider, model, status, prompt_tokens, completion_tokens, cost_usd, episode_link "
                       "FROM inferences ORDER BY created_at").fetchall()
    assert [r[:5] for r in rows] == [("anthropic", MODEL, 200, 120, 30)] * 2
    assert all(r[5] is not None and r[5] > 0 for r in rows)  # priced from litellm's map
    assert [r[6] for r in rows] == ["new", "prefix"]  # the two calls are one episode
    assert con.execute("SELECT outcome FROM tool_results").fetchall() == [("success",)]


def test_provider_routing_can_be_turned_off_for_upstreams_that_use_such_names(start_proxy):
    from helpers import recording_app

    seen: list[dict] = []
    with ThreadServer(recording_app(seen)) as openrouter_like:
        proxy = start_proxy(upstream=f"{openrouter_like.url}/v1", env={"AGENTGYM_UPSTREAM__PROVIDER_ROUTING": "false"})
        client = OpenAI(base_url=f"{proxy.url}/v1", api_key="k", max_retries=0)
        answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert answer.model == MODEL and len(seen) == 1  # the OpenAI-compatible upstream answered
