"""A LangChain agent (`create_agent`, LangGraph's tool loop) through AgentGym: one task as an
episode, its outcome sent as feedback.

    pip install 'agentgym[langchain]'
    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1   # the proxy (`agentgym serve`)
    python examples/langchain_agent.py
"""

import os

from langchain.agents import create_agent
from langchain_core.tools import tool

from agentgym.integrations import episode
from agentgym.integrations.langchain import chat_model

ORDERS = {"A-1001": "shipped", "A-1002": "processing"}
failed: list[str] = []


@tool(parse_docstring=True)
def get_order_status(order_id: str) -> dict:
    """Get the status of an order by its id.

    Args:
        order_id: such as 'A-1000'
    """
    if order_id not in ORDERS:
        failed.append(order_id)
        return {"error": f"no order {order_id}"}
    return {"order_id": order_id, "status": ORDERS[order_id]}


# ChatOpenAI pointed at the proxy, stamping the episode's id on each request
llm = chat_model(os.environ["OPENAI_BASE_URL"], model="gpt-4o-mini", api_key=os.environ.get("OPENAI_API_KEY", "none"))
agent = create_agent(llm, [get_order_status], system_prompt="You help customers with their orders.")
with episode() as ep:  # on leaving, the outcome set on `ep` goes to the proxy's /v1/feedback
    state = agent.invoke({"messages": [{"role": "user", "content": "Where is my order A-1002?"}]})
    ep.success = not failed
print(f"episode {ep.id}: {state['messages'][-1].content}")
