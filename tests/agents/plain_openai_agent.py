"""An agent as users write it, with no AgentGym in it: the `openai` SDK (OPENAI_BASE_URL points it at
the proxy), a tool, a loop. Two conversations; prints each one's tool calls as a JSON line."""

import json

from openai import OpenAI

ORDERS = {"A-1001": "shipped"}
TOOLS = [{"type": "function", "function": {
    "name": "get_order_status", "description": "Get the status of an order by its id.",
    "parameters": {"type": "object", "properties": {"order_id": {"type": "string", "description": "such as 'A-1000'"}},
                   "required": ["order_id"]}}}]


def get_order_status(order_id: str) -> tuple[bool, str]:
    if order_id not in ORDERS:
        return False, json.dumps({"error": f"no order {order_id}"})
    return True, json.dumps({"order_id": order_id, "status": ORDERS[order_id]})


client = OpenAI()
for question in ("Where is my order A-1001?", "What's the status of order A-2002?"):
    messages = [{"role": "user", "content": question}]
    calls = []
    for _ in range(6):
        message = client.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS).choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            break
        for call in message.tool_calls:
            arguments = json.loads(call.function.arguments)
            ok, result = get_order_status(**arguments)
            calls.append({"name": call.function.name, "arguments": arguments, "ok": ok})
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    print(json.dumps({"question": question, "calls": calls}))
