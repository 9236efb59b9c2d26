"""Agent loops through the proxy become episodes with tool outcomes; feedback attaches to them."""

from __future__ import annotations

import httpx
import orjson
import pytest
from conftest import TOOLS, stopped_store
from helpers import report_json
from openai import OpenAI

RESULTS = {
    "get_weather": '{"error": "city not found"}',
    "get_time": "Traceback (most recent call last):\nValueError: unknown timezone",
    "book_table": '{"status": "ok", "booking": "B-17"}',
}


def run_agent(client: OpenAI, request: str, headers: dict[str, str] | None = None) -> list[str]:
    """A plain tool loop: call, run the tools, send the results back, until the model answers in text."""
    messages = [{"role": "system", "content": "You help with plans."}, {"role": "user", "content": request}]
    episodes = []
    for _ in range(5):
        raw = client.chat.completions.with_raw_response.create(model="m", messages=messages, tools=TOOLS,
                                                               extra_headers=headers or {})
        episodes.append(raw.headers["x-agentgym-episode-id"])
        message = raw.parse().choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return episodes
        for call in message.tool_calls:
            messages.append({"role": "tool", "tool_call_id": call.id, "content": RESULTS[call.function.name]})
    raise AssertionError("the agent loop did not end")


def test_tool_loops_link_into_episodes_and_outcomes_are_read(proxy):
    client = OpenAI(base_url=f"{proxy.url}/v1", api_key="k")
    first = run_agent(client, "get_weather city=Oslo, get_time tz=CET and book_table restaurant=Noma people=2")
    second = run_agent(client, "get_weather city=Oslo, get_time tz=CET and book_table restaurant=Noma people=2")
    given = run_agent(client, "book_table restaurant=Geranium people=4", headers={"X-AgentGym-Episode-Id": "ticket-42"})
    assert len(first) == 2 and len(set(first)) == 1
    assert len(set(second)) == 1 and second[0] != first[0]  # same opening, separate episode
    assert set(given) == {"ticket-42"}

    con = stopped_store(proxy)
    links = con.execute(
        "SELECT episode_id, list(episode_link ORDER BY created_at) FROM inferences GROUP BY 1 ORDER BY min(created_at)"
    ).fetchall()
    assert [l[1] for l in links] == [["new", "prefix"], ["new", "prefix"], ["header", "header"]]
    outcomes = con.execute(
        "SELECT c.name, r.outcome, r.error_message FROM tool_calls c JOIN tool_results r ON r.tool_call_id = c.id "
        "WHERE c.episode_id = ? ORDER BY c.position", [first[0]]).fetchall()
    assert outcomes == [
        ("get_weather", "error", "city not found"),
        ("get_time", "error", "Traceback (most recent call last):\nValueError: unknown timezone"),
        ("book_table", "success", None),
    ]
    # Each result is recorded once, although every later request repeats it.
    assert con.execute("SELECT count(*), count(DISTINCT tool_call_id) FROM tool_results").fetchone() == (7, 7)


def test_feedback_targets_episodes_inferences_and_tool_calls(shared_proxy):
    client = OpenAI(base_url=f"{shared_proxy.url}/v1", api_key="k")
    raw = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "get_weather city=Rome"}], tools=TOOLS)
    episode, inference = raw.headers["x-agentgym-episode-id"], raw.headers["x-agentgym-inference-id"]
    call = raw.parse().choices[0].message.tool_calls[0].id
    url = f"{shared_proxy.url}/v1/feedback"
    for body in ({"episode_id": episode, "success": True, "metadata": {"ticket": 7}},
                 {"inference_id": inference, "reward": 0.25},
                 {"tool_call_id": call, "reward": 1.0, "success": True}):
        response = httpx.post(url, json=body)
        assert response.status_code == 200, response.text
        assert response.json()["episode_id"] == episode


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"episode_id": "ep-never-seen", "success": True}, 404),
        ({"tool_call_id": "call_nope", "reward": 1}, 404),
        ({"success": True}, 422),
        ({"episode_id": "a", "inference_id": "b", "success": True}, 422),
        ({"episode_id": "a"}, 422),
        ({"episode_id": "a", "reward": "lots"}, 422),
        ({"episode_id": "a", "reward": 1, "colour": "red"}, 422),
        (b"{oops", 400),
    ],
)
def test_bad_feedback_is_refused_clearly(shared_proxy, body, status):
    url = f"{shared_proxy.url}/v1/feedback"
    response = httpx.post(url, content=body) if isinstance(body, bytes) else httpx.post(url, json=body)
    assert response.status_code == status
    assert response.json()["error"]["message"]


def test_feedback_counts_in_the_report_while_serving_and_after_a_restart(start_proxy, tmp_path):
    proxy = start_proxy()
    client = OpenAI(base_url=f"{proxy.url}/v1", api_key="k")
    failing = run_agent(client, "get_weather city=Nowhere")[0]
    fine = run_agent(client, "book_table restaurant=Noma people=2")[0]
    for episode, success in ((failing, False), (fine, True)):
        assert httpx.post(f"{proxy.url}/v1/feedback", json={"episode_id": episode, "success": success}).status_code == 200

    live = report_json(str(proxy.db))  # the proxy holds the file: the report asks it
    assert live["episodes"] == {"total": 2, "finished": 2, "success": 1, "failure": 1, "success_rate": 0.5}
    assert live["tool_calls"]["error"] == 1 and live["tool_calls"]["success"] == 1

    # Explicit feedback on a tool call outranks the outcome read from its result message.
    con = stopped_store(proxy)
    error_call = con.execute("SELECT tool_call_id FROM tool_results WHERE outcome = 'error'").fetchone()[0]
    con.close()
    restarted = start_proxy(db=proxy.db)
    response = httpx.post(f"{restarted.url}/v1/feedback", json={"tool_call_id": error_call, "success": True})
    assert response.status_code == 200 and response.json()["episode_id"] == failing  # found in the store
    after = report_json(str(restarted.db))
    assert after["tool_calls"]["success"] == 2 and after["tool_calls"]["error"] == 0
