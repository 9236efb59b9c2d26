"""A CrewAI crew (an `Agent` with tools on `LLM(base_url=...)`) through AgentGym: one task as an
episode, its outcome sent as feedback.

    pip install 'agentgym[crewai]'
    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1   # the proxy (`agentgym serve`)
    export CREWAI_DISABLE_TELEMETRY=true              # where CrewAI's servers cannot be reached
    python examples/crewai_agent.py
"""

import json
import os
from typing import Annotated

from crewai import Agent, Crew, Task
from crewai.tools import tool
from pydantic import Field

from agentgym.integrations import episode
from agentgym.integrations.crewai import chat_model

ORDERS = {"A-1001": "shipped", "A-1002": "processing"}
failed: list[str] = []


@tool("get_order_status")
def get_order_status(order_id: Annotated[str, Field(description="such as 'A-1000'")]) -> str:
    """Get the status of an order by its id."""
    if order_id not in ORDERS:
        failed.append(order_id)
        return json.dumps({"error": f"no order {order_id}"})  # JSON: the proxy reads the error from it
    return json.dumps({"order_id": order_id, "status": ORDERS[order_id]})


# CrewAI's LLM on the proxy, stamping the episode's id on each request
llm = chat_model(os.environ["OPENAI_BASE_URL"], model="gpt-4o-mini", api_key=os.environ.get("OPENAI_API_KEY", "none"))
agent = Agent(role="Support agent", goal="Answer customers' questions about their orders.",
              backstory="You help customers with their orders.", llm=llm, tools=[get_order_status])
task = Task(description="Where is my order A-1002?", expected_output="The order's status.", agent=agent)
with episode() as ep:  # on leaving, the outcome set on `ep` goes to the proxy's /v1/feedback
    result = Crew(agents=[agent], tasks=[task]).kickoff()
    ep.success = not failed
print(f"episode {ep.id}: {result.raw}")
