"""An OpenAI Agents SDK agent (`Agent` + `Runner`) through AgentGym: one task as an episode, its
outcome sent as feedback.

    pip install 'agentgym[openai-agents]'
    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1   # the proxy (`agentgym serve`)
    python examples/openai_agents.py
"""

import asyncio
import json
import os

from agents import Agent, RunConfig, Runner, function_tool

from agentgym.integrations import episode
from agentgym.integrations.openai_agents import chat_model

ORDERS = {"A-1001": "shipped", "A-1002": "processing"}
failed: list[str] = []


@function_tool
def get_order_status(order_id: str) -> str:
    """Get the status of an order by its id.

    Args:
        order_id: such as 'A-1000'
    """
    if order_id not in ORDERS:
        failed.append(order_id)
        return json.dumps({"error": f"no order {order_id}"})  # JSON: the proxy reads the error from it
    return json.dumps({"order_id": order_id, "status": ORDERS[order_id]})


async def main() -> None:
    # the SDK's chat-completions model on the proxy, stamping the episode's id on each request
    model = chat_model(os.environ["OPENAI_BASE_URL"], model="gpt-4o-mini",
                       api_key=os.environ.get("OPENAI_API_KEY", "none"))
    agent = Agent(name="support", instructions="You help customers with their orders.", model=model,
                  tools=[get_order_status])
    async with episode() as ep:  # on leaving, the outcome set on `ep` goes to the proxy's /v1/feedback
        result = await Runner.run(agent, "Where is my order A-1002?", run_config=RunConfig(tracing_disabled=True))
        ep.success = not failed
    print(f"episode {ep.id}: {result.final_output}")


asyncio.run(main())
