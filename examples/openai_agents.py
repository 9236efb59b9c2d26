"""An OpenAI Agents SDK agent through AgentGym: its tool calls recorded, its outcome reported.

    agentgym serve --upstream https://api.openai.com/v1
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python examples/openai_agents.py
"""

import asyncio
import os

from agents import Agent, RunConfig, Runner, function_tool

from agentgym.integrations import episode
from agentgym.integrations.openai_agents import chat_model


@function_tool
def get_order_status(order_id: str) -> str:
    """Get the status of an order by its id, such as 'A-1000'."""
    return f'{{"order_id": "{order_id}", "status": "shipped"}}'


async def main() -> None:
    model = chat_model(os.environ["OPENAI_BASE_URL"], model=os.environ.get("MODEL", "gpt-4o-mini"))
    agent = Agent(name="support", instructions="You help customers with their orders.", model=model,
                  tools=[get_order_status])
    with episode() as run:  # its requests share one episode id; leaving it sends the outcome
        result = await Runner.run(agent, "Where is my order A-1000?", run_config=RunConfig(tracing_disabled=True))
        run.success = "shipped" in result.final_output
    print(result.final_output)


asyncio.run(main())
