"""Shared fixtures: the stand-in model and AgentGym proxies as real processes on loopback."""

from __future__ import annotations

import os
import textwrap
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


# Two tools that read alike; only one works in this deployment. The simulated model picks
# between them by chance; a planner can learn to force the one that works.
TINY = textwrap.dedent("""
    name: tiny_orders
    title: Order lookups with a deprecated twin
    description: Look up orders; one of two look-alike tools is deprecated here.
    system_prompt: You help customers with their orders.
    tools:
      - type: function
        function: {name: get_order_status, description: Get the status of an order by its id.,
                   parameters: {type: object, properties: {order_id: {type: string, description: "such as 'A-1000'"}},
                                required: [order_id]}}
      - type: function
        function: {name: fetch_order_status, description: Fetch the status of an order by its id.,
                   parameters: {type: object, properties: {order_id: {type: string, description: "such as 'A-1000'"}},
                                required: [order_id]}}
      - type: function
        function: {name: send_invoice, description: Email the invoice of an order to the customer.,
                   parameters: {type: object, properties: {order_id: {type: string, description: "such as 'A-1000'"}},
                                required: [order_id]}}
      - type: function
        function: {name: list_products, description: List the products in the catalogue.,
                   parameters: {type: object, properties: {}}}
    tasks:
    {tasks}
    reward: {success: 1.0, failure: 0.0, tool_success: 0.5, tool_error: -0.5, per_1k_prompt_tokens: 0.0}
    simulator: {temperature: 0.5, crowding: 0.0, argument_error_rate: 0.0, give_up_after_errors: 1}
""")
ASKS = ["What's the status of order {id}?", "Where is my order {id}?", "Has order {id} shipped yet?",
        "Can you check order {id} for me?"]


def write_tiny(folder: Path, tasks_count: int = 24) -> Path:
    """The `tiny_orders` scenario file, in `folder`, with `tasks_count` tasks."""
    tasks = []
    for i in range(tasks_count):
        order = f"A-{1000 + i}"
        tasks.append(f"- {{id: t{i}, user: \"{ASKS[i % 4].format(id=order)}\", steps: [{{tool: get_order_status, "
                     f"arguments: {{order_id: {order}}}}}]}}")
    path = folder / "tiny_orders.yaml"
    path.write_text(TINY.replace("{tasks}", "\n".join(tasks)))
    return path


@pytest.fixture
def tiny(tmp_path):
    return write_tiny(tmp_path)
