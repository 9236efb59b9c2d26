"""Recording never costs a request: SIGTERM loses nothing, a broken store drops (counted), kill -9 is bounded."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import TOOLS, stopped_store
from openai import AsyncOpenAI, OpenAI

from agentgym.store.schema import open_store


def _burst(url: str, n: int) -> list[int]:
    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            async def one(i: int) -> int:
                response = await http.post(f"{url}/v1/chat/completions", json={
                    "model": "m", "messages": [{"role": "user", "content": f"get_time tz=UTC+{i}"}], "tools": TOOLS})
                return response.status_code
            return await asyncio.gather(*(one(i) for i in range(n)))
    return asyncio.run(run())


def _metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    assert values, f"{name} not in /metrics"
    return sum(values)


def test_sigterm_flushes_everything_queued(start_proxy):
    # A long flush interval: nothing is written until shutdown drains the queue.
    proxy = start_proxy(env={"AGENTGYM_STORE__FLUSH_INTERVAL_S": "60"})
    assert _burst(proxy.url, 200) == [200] * 200
    assert _metric(proxy.url, "agentgym_recorder_queue_depth") >= 400  # 200 inferences + 200 tool calls
    con = stopped_store(proxy)
    assert con.execute("SELECT count(*) FROM inferences").fetchone()[0] == 200
    assert con.execute("SELECT count(*) FROM tool_calls").fetchone()[0] == 200


def test_kill_9_loses_at_most_the_last_flush_interval(start_proxy):
    proxy = start_proxy(env={"AGENTGYM_STORE__FLUSH_INTERVAL_S": "0.1"})
    assert _burst(proxy.url, 100) == [200] * 100
    time.sleep(1.0)  # ten flush intervals: everything sent before this is on disk
    proxy.process.send_signal(signal.SIGKILL)
    proxy.process.wait(10)
    con = duckdb.connect(str(proxy.db), read_only=True)
    assert con.execute("SELECT count(*) FROM inferences").fetchone()[0] == 100


@pytest.fixture
def held_store(tmp_path) -> Iterator[tuple[Path, Callable[[], None]]]:
    """A store file another process holds open (DuckDB then refuses every other process), and a release."""
    db = tmp_path / "held.duckdb"
    open_store(db).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, sys; c = duckdb.connect({str(db)!r}); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "held"

    def release() -> None:
        if holder.poll() is None:
            holder.communicate("", timeout=10)

    yield db, release
    release()


def test_a_locked_store_does_not_break_requests_and_recovers(start_proxy, held_store):
    db, release = held_store
    proxy = start_proxy(db=db)
    ready = httpx.get(f"{proxy.url}/readyz")
    assert ready.status_code == 503 and "lock" in ready.json()["recorder"]["last_error"].lower()
    client = OpenAI(base_url=f"{proxy.url}/v1", api_key="k", max_retries=0)
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "get_weather city=Bern"}],
                                            tools=TOOLS)
    assert answer.choices[0].message.tool_calls[0].function.name == "get_weather"
    assert _metric(proxy.url, "agentgym_recorder_healthy") == 0
    assert _metric(proxy.url, "agentgym_recorder_queue_depth") == 2  # the inference and its tool call wait
    release()
    deadline = time.monotonic() + 20
    while httpx.get(f"{proxy.url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the recorder did not recover once the lock was released"
        time.sleep(0.2)
    con = stopped_store(proxy)
    assert con.execute("SELECT count(*) FROM inferences").fetchone()[0] == 1


def test_when_the_queue_overflows_requests_pass_and_drops_are_counted(start_proxy, held_store):
    db, _ = held_store
    proxy = start_proxy(db=db, env={"AGENTGYM_STORE__QUEUE_MAX_ROWS": "3"})
    assert _burst(proxy.url, 20) == [200] * 20
    assert _metric(proxy.url, "agentgym_recorder_queue_depth") == 3
    assert _metric(proxy.url, 'agentgym_recorder_rows_dropped_total{reason="queue_full"}') == 37  # 40 rows - 3


def test_metrics_cover_requests_latency_errors_and_tools(shared_proxy):
    client = AsyncOpenAI(base_url=f"{shared_proxy.url}/v1", api_key="k", max_retries=0)

    async def run() -> None:
        await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "get_weather city=Oslo"}],
                                             tools=TOOLS)
        try:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x #status=500"}])
        except Exception:  # noqa: BLE001 - the 500 is the point
            pass
        await client.close()

    asyncio.run(run())
    text = httpx.get(f"{shared_proxy.url}/metrics").text
    for needle in ('agentgym_requests_total{route="chat_completions",status="200"}',
                   'agentgym_requests_total{route="chat_completions",status="500"}',
                   'agentgym_request_duration_seconds_bucket{le="0.005",route="chat_completions",stream="false"}',
                   'agentgym_upstream_errors_total{kind="http_500",status="500"}',
                   'agentgym_tool_calls_total{tool="get_weather"}',
                   'agentgym_recorder_rows_dropped_total{reason="queue_full"}',
                   "agentgym_recorder_queue_depth"):
        assert needle in text, needle
