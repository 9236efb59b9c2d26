"""An AutoGen agent (`AssistantAgent`) through AgentGym: one task as an episode, its outcome sent as
feedback.

    pip install 'agentgym[autogen]'
    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1   # the proxy (`agentgym serve`)
    python examples/autogen_agent.py
"""

import asyncio
import json
import os
from typing import Annotated

from autogen_agentchat.agents import AssistantAgent

from agentgym.integrations import episode
from agentgym.integrations.autogen import chat_model

ORDERS = {"A-1001": "shipped", "A-1002": "processing"}
failed: list[str] = []


def get_order_status(order_id: Annotated[str, "such as 'A-1000'"]) -> str:
    """Get the status of an order by its id."""
    if order_id not in ORDERS:
        failed.append(order_id)
        return json.dumps({"error": f"no order {order_id}"})  # JSON: the proxy reads the error from it
    return json.dumps({"order_id": order_id, "status": ORDERS[order_id]})


async def main() -> None:
    # OpenAIChatCompletionClient on the proxy, stamping the episode's id on each request
    client = chat_model(os.environ["OPENAI_BASE_URL"], model="gpt-4o-mini",
                        api_key=os.environ.get("OPENAI_API_KEY", "none"))
    agent = AssistantAgent("support", model_client=client, tools=[get_order_status], max_tool_iterations=5,
                           system_message="You help customers with their orders.")
    async with episode() as ep:  # on leaving, the outcome set on `ep` goes to the proxy's /v1/feedback
        result = await agent.run(task="Where is my order A-1002?")
        ep.success = not failed
    await client.close()
    print(f"episode {ep.id}: {result.messages[-1].to_text()}")


asyncio.run(main())
