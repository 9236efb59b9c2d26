"""An `openai` SDK agent through AgentGym: one task as an episode, its outcome sent as feedback.

    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1   # the proxy (`agentgym serve`)
    python examples/openai_sdk.py
"""

import json

from openai import OpenAI

from agentgym.integrations import episode, http_client

ORDERS = {"A-1001": "shipped", "A-1002": "processing"}
TOOLS = [{"type": "function", "function": {
    "name": "get_order_status", "description": "Get the status of an order by its id.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "such as 'A-1000'"}},
                   "required": ["order_id"]}}}]


def get_order_status(order_id: str) -> dict:
    if order_id not in ORDERS:
        return {"error": f"no order {order_id}"}
    return {"order_id": order_id, "status": ORDERS[order_id]}


client = OpenAI(http_client=http_client())  # stamps the episode's id on each request; the rest is the SDK's
with episode() as ep:  # on leaving, the outcome set on `ep` goes to the proxy's /v1/feedback
    messages = [{"role": "user", "content": "Where is my order A-1001?"}]
    failed = False
    while True:
        message = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS).choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            result = get_order_status(**json.loads(call.function.arguments))
            failed = failed or "error" in result
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
    ep.success = not failed
print(f"episode {ep.id}: {message.content}")
