"""An AutoGen agent through AgentGym: its tool calls recorded, its outcome reported.

    agentgym serve --upstream https://api.openai.com/v1
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python examples/autogen_agent.py
"""

import asyncio
import os

from autogen_agentchat.agents import AssistantAgent

from agentgym.integrations import episode
from agentgym.integrations.autogen import chat_model


def get_order_status(order_id: str) -> str:
    """Get the status of an order by its id, such as 'A-1000'."""
    return f'{{"order_id": "{order_id}", "status": "shipped"}}'


async def main() -> None:
    client = chat_model(os.environ["OPENAI_BASE_URL"], model=os.environ.get("MODEL", "gpt-4o-mini"))
    agent = AssistantAgent("support", model_client=client, tools=[get_order_status], max_tool_iterations=5,
                           system_message="You help customers with their orders.")
    with episode() as run:  # its requests share one episode id; leaving it sends the outcome
        result = await agent.run(task="Where is my order A-1000?")
        answer = result.messages[-1].to_text()
        run.success = "shipped" in answer
    await client.close()
    print(answer)


asyncio.run(main())
