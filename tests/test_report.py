"""`agentgym report`: the documented JSON, tables, --since and --window, while serving and after."""

from __future__ import annotations

import subprocess
import sys

import httpx
from conftest import stopped_store
from helpers import report_json
from openai import OpenAI
from test_episodes_and_feedback import run_agent


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentgym", *args], capture_output=True, text=True, timeout=120)


def test_the_report_json_has_the_documented_keys_and_figures(proxy):
    client = OpenAI(base_url=f"{proxy.url}/v1", api_key="k")
    for i in range(6):
        request = "book_table restaurant=Noma people=2" if i % 3 else "get_weather city=Atlantis"
        episode = run_agent(client, request)[0]
        httpx.post(f"{proxy.url}/v1/feedback", json={"episode_id": episode, "success": i % 3 != 0}).raise_for_status()
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "no tools here"}])  # unfinished

    live = report_json(str(proxy.db), "--window", "4")
    assert live["tool_calls"] == {"total": 6, "success": 4, "error": 2, "unknown": 0, "success_rate": 0.6667}
    assert live["episodes"] == {"total": 7, "finished": 6, "success": 4, "failure": 2, "success_rate": 0.6667}
    tokens = live["tokens"]
    assert set(tokens) == {"prompt_per_request", "completion_per_request", "cost_usd_total", "cost_usd_per_request",
                           "cost_per_successful_episode"}
    assert tokens["prompt_per_request"] > 0 and tokens["completion_per_request"] > 0
    by_tool = {row["tool"]: row for row in live["by_tool"]}
    assert by_tool["get_weather"]["error_rate"] == 1.0
    assert by_tool["get_weather"]["top_errors"] == [{"message": "city not found", "count": 2}]
    assert by_tool["book_table"] | {"top_errors": []} == by_tool["book_table"]
    assert by_tool["book_table"]["success_rate"] == 1.0 and by_tool["book_table"]["calls"] == 4
    assert live["by_policy"] == [{"version": None, "arm": "control", "episodes": 7, "tool_success_rate": 0.6667,
                                  "episode_success_rate": 0.6667, "prompt_tokens_per_request": tokens["prompt_per_request"]}]
    assert [w["episodes"] for w in live["timeline"]] == [4, 2]
    for window in live["timeline"]:
        assert set(window) == {"first_episode_at", "last_episode_at", "episodes", "tool_success_rate",
                               "episode_success_rate", "prompt_tokens_per_request", "completion_tokens_per_request",
                               "cost_usd_per_request", "cost_per_successful_episode", "latency_ms_p50",
                               "latency_ms_p95", "latency_ms_p99", "policy_versions"}
        assert window["first_episode_at"] <= window["last_episode_at"]
    assert live["by_model"][0]["model"] == "m" and live["by_model"][0]["requests"] == 13

    stopped_store(proxy).close()
    offline = report_json(str(proxy.db), "--window", "4")  # the file itself, now nobody holds it
    for key in ("tool_calls", "episodes", "tokens", "by_tool", "by_policy", "timeline"):
        assert offline[key] == live[key], key
    assert report_json(str(proxy.db), "--since", "2099-01-01T00:00:00")["tool_calls"]["total"] == 0
    assert report_json(str(proxy.db), "--since", "1h")["tool_calls"]["total"] == 6

    table = _cli("report", "--db", str(proxy.db))
    assert table.returncode == 0 and "get_weather" in table.stdout and "city not found" in table.stdout


def test_report_errors_are_clear(tmp_path, shared_proxy):
    missing = _cli("report", "--db", str(tmp_path / "nothing.duckdb"))
    assert missing.returncode == 1 and "no AgentGym store" in missing.stderr
    bad_since = _cli("report", "--db", str(tmp_path / "nothing.duckdb"), "--since", "yesterday-ish")
    assert bad_since.returncode == 2 and "neither an ISO time nor an age" in bad_since.stderr
    # The admin API behind the live report needs the admin key or the server's local token.
    assert httpx.get(f"{shared_proxy.url}/admin/report").status_code == 401
    assert httpx.get(f"{shared_proxy.url}/admin/report", headers={"authorization": "Bearer guess"}).status_code == 401
