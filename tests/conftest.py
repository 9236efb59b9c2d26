"""Shared fixtures: the stand-in model and AgentGym proxies as real processes on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from agentgym.scenarios import local_stack
from agentgym.scenarios.local_stack import Service

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def tool(name: str, **params: str) -> dict:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name.replace('_', ' ')}.",
            "parameters": {"type": "object", "properties": {p: {"type": t} for p, t in params.items()}, "required": list(params)},
        },
    }


TOOLS = [
    tool("get_weather", city="string"),
    tool("get_time", tz="string"),
    tool("book_table", restaurant="string", people="integer"),
]


@pytest.fixture(scope="session")
def logs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("logs")


@pytest.fixture(scope="session")
def model(logs) -> Iterator[Service]:
    """The simulated model, told to fill arguments without mistakes: the proxy's tests check exact values."""
    service = local_stack.start_model(logs, args=["--knob", "argument_error_rate=0"])
    yield service
    service.stop()


ProxyFactory = Callable[..., Service]


@pytest.fixture
def start_proxy(model, logs, tmp_path) -> Iterator[ProxyFactory]:
    """Start `agentgym serve` processes (default: in front of the stand-in model); all stop at teardown."""
    started: list[Service] = []

    def start(upstream: str | None = None, env: dict[str, str] | None = None, db: Path | None = None,
              extra_args: list[str] | None = None) -> Service:
        service = local_stack.start_proxy(
            upstream or f"{model.url}/v1", db or tmp_path / f"store-{len(started)}.duckdb", logs, env=env,
            extra_args=extra_args,
        )
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def proxy(start_proxy) -> Service:
    """A proxy of the test's own, for tests that stop it and read its store."""
    return start_proxy()


@pytest.fixture(scope="module")
def shared_proxy(model, logs, tmp_path_factory) -> Iterator[Service]:
    """One proxy for a module's tests that only talk to it."""
    service = local_stack.start_proxy(f"{model.url}/v1", tmp_path_factory.mktemp("store") / "shared.duckdb", logs)
    yield service
    service.stop()


def stopped_store(service: Service) -> duckdb.DuckDBPyConnection:
    """Stop the proxy (SIGTERM: the recorder drains) and open its store read-only."""
    assert service.stop(), service.log()
    assert "Traceback" not in service.log(), service.log()
    return duckdb.connect(str(service.db), read_only=True)
