"""A CrewAI crew through AgentGym: its tool calls recorded, its outcome reported.

    agentgym serve --upstream https://api.openai.com/v1
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 python examples/crewai_agent.py
"""

import os

from crewai import Agent, Crew, Task
from crewai.tools import tool

from agentgym.integrations import episode
from agentgym.integrations.crewai import chat_model


@tool("get_order_status")
def get_order_status(order_id: str) -> str:
    """Get the status of an order by its id, such as 'A-1000'."""
    return f'{{"order_id": "{order_id}", "status": "shipped"}}'


llm = chat_model(os.environ["OPENAI_BASE_URL"], model=os.environ.get("MODEL", "gpt-4o-mini"))
agent = Agent(role="Support agent", goal="Answer customers' questions about their orders.",
              backstory="You help customers with their orders.", llm=llm, tools=[get_order_status])
task = Task(description="Where is my order A-1000?", expected_output="The order's status.", agent=agent)
with episode() as run:  # its requests share one episode id; leaving it sends the outcome
    answer = Crew(agents=[agent], tasks=[task]).kickoff().raw
    run.success = "shipped" in answer
print(answer)
