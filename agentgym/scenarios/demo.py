"""`agentgym demo`: the proxy in front of the stand-in model, with agents running tool loops.

Everything is real but the model: the proxy and the model are separate processes talking
HTTP, the agents use the `openai` SDK through `OPENAI_BASE_URL`-style configuration, the
tools run against a small order database and fail the way real tools do (unknown order,
an order in the wrong state, a missing argument), and every episode ends with feedback.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from agentgym.scenarios import local_stack

SYSTEM = "You are a retail support agent. Use the tools to resolve the customer's request."


def _tool(name: str, description: str, **params: str) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": {p: {"type": "string", "description": d} for p, d in params.items()},
                "required": list(params),
            },
        },
    }


TOOLS = [
    _tool("get_order_details", "Look up an order's status and items.", order_id="the order id, e.g. W1001"),
    _tool("cancel_pending_order", "Cancel an order that has not shipped yet.", order_id="the order id", reason="why"),
    _tool("return_delivered_order", "Start a return for a delivered order.", order_id="the order id"),
    _tool("find_user_by_email", "Find a customer's user id from their email.", email="the customer's email"),
    _tool("send_email", "Email the customer.", to="address", body="message text"),
]


@dataclass
class Shop:
    """The state the tools act on; one per episode."""

    orders: dict[str, str] = field(default_factory=dict)  # order id -> status

    def run(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        order = self.orders.get(str(arguments.get("order_id")))
        if name == "get_order_details":
            return {"order_id": arguments.get("order_id"), "status": order} if order else {"error": "order not found"}
        if name == "cancel_pending_order":
            if order is None:
                return {"error": "order not found"}
            if order != "pending":
                return {"error": f"cannot cancel an order that is {order}"}
            self.orders[arguments["order_id"]] = "cancelled"
            return {"status": "ok", "order_id": arguments["order_id"]}
        if name == "return_delivered_order":
            if order != "delivered":
                return {"error": f"only delivered orders can be returned, this one is {order or 'unknown'}"}
            return {"status": "ok", "return_label": "RL-" + arguments["order_id"]}
        if name == "find_user_by_email":
            email = str(arguments.get("email", ""))
            return {"user_id": email.split("@")[0]} if "@" in email else {"error": "invalid email address"}
        if name == "send_email":
            return {"status": "sent"} if "@" in str(arguments.get("to", "")) else {"error": "missing recipient"}
        return {"error": f"unknown tool {name}"}


def _task(rng: random.Random) -> tuple[str, Shop, str]:
    """A user request, the shop it runs against, and the tool that resolves it."""
    order = f"W{rng.randint(1000, 9999)}"
    status = rng.choice(["pending", "delivered", "shipped"])
    shop = Shop({order: status})
    kind = rng.choice(["cancel", "return", "status", "email"])
    if kind == "cancel":
        return f"Please cancel_pending_order order_id={order}, I changed my mind.", shop, "cancel_pending_order"
    if kind == "return":
        return f"I want to return_delivered_order order_id={order}.", shop, "return_delivered_order"
    if kind == "status":
        return f"Where is my order? get_order_details order_id={order}", shop, "get_order_details"
    address = rng.choice(["jane@example.com", "jane at example dot com"])
    return f"find_user_by_email email={address} then send_email to={address} body=hello", shop, "send_email"


def run_episode(client: OpenAI, feedback_url: str, rng: random.Random, max_turns: int = 6) -> dict[str, int]:
    """One agent task through the proxy; returns tool-call counts by outcome."""
    request, shop, _ = _task(rng)
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": request}]
    counts = {"calls": 0, "errors": 0}
    episode_id = None
    for _ in range(max_turns):
        raw = client.chat.completions.with_raw_response.create(model="agentgym-sim", messages=messages, tools=TOOLS)
        episode_id = raw.headers.get("x-agentgym-episode-id")
        message = raw.parse().choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            result = shop.run(call.function.name, orjson.loads(call.function.arguments or "{}"))
            counts["calls"] += 1
            counts["errors"] += "error" in result
            messages.append({"role": "tool", "tool_call_id": call.id, "content": orjson.dumps(result).decode()})
    success = counts["calls"] > 0 and counts["errors"] == 0
    httpx.post(feedback_url, json={"episode_id": episode_id, "success": success}, timeout=10).raise_for_status()
    return counts


def run_demo(*, episodes: int, seed: int, db: Path, port: int, console: Console) -> None:
    from agentgym.dashboards.report import print_tables

    rng = random.Random(seed)
    logs = Path(tempfile.mkdtemp(prefix="agentgym-demo-"))
    model = local_stack.start_model(logs)
    proxy = None
    try:
        proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs, port=port or None)
        console.print(f"proxy [bold]{proxy.url}/v1[/bold] -> stand-in model {model.url}/v1, store {db}")
        client = OpenAI(base_url=f"{proxy.url}/v1", api_key="demo-key-not-needed")
        calls = errors = 0
        with Progress(
            TextColumn("[bold]episodes"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
            TimeRemainingColumn(), console=console,
        ) as progress:
            task = progress.add_task("", total=episodes)
            for _ in range(episodes):
                counts = run_episode(client, f"{proxy.url}/v1/feedback", rng)
                calls, errors = calls + counts["calls"], errors + counts["errors"]
                rate = (calls - errors) / calls if calls else 0.0
                progress.update(task, advance=1, description=f"tool calls {calls}, success {rate:.0%}")
        if not proxy.stop():
            console.print(f"[red]the proxy did not shut down cleanly[/red]\n{proxy.log()}")
    finally:
        if proxy is not None:
            proxy.stop()
        model.stop()
    from agentgym.config import load_settings
    from agentgym.dashboards.report_source import fetch_report

    print_tables(fetch_report(load_settings(store={"path": db}), since=None, window=max(1, episodes // 4)), console)
    console.print(f"\nThe store is kept: [bold]agentgym report --db {db}[/bold]")
