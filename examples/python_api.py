"""Train a tool-selection planner for the customer-support scenario, then use it from the openai SDK.

    python examples/python_api.py [EPISODES]

Training runs against the scenario's simulated model: no keys, no network. The trained planner
then serves a proxy started in this process, in front of the configured upstream
(AGENTGYM_UPSTREAM__URL or agentgym.yaml; default https://api.openai.com/v1 with OPENAI_API_KEY);
MODEL names the upstream's model (default: the simulator's).
"""

import os
import sys

from agentgym import TrainedAgent, Trainer
from agentgym.scenarios.scenario import load_scenario

episodes = int(sys.argv[1]) if len(sys.argv) > 1 else 600
results = Trainer(scenario="customer_support", framework="openai", gpu="auto", episodes=episodes).train()
print(f"{results.episodes} episodes in {results.seconds:.0f}s; live {results.live_version}; tool-call success "
      f"{results.curve[0].tool_success_rate:.0%} -> {results.final.tool_success_rate:.0%}")

scenario = load_scenario("customer_support")
with TrainedAgent.load("customer_support", model=os.environ.get("MODEL")) as agent:
    client = agent.to_openai()
    reply = client.chat.completions.create(model=agent.model, tools=scenario.tools, messages=[
        {"role": "system", "content": scenario.system_prompt},
        {"role": "user", "content": scenario.tasks[0].user},
    ])
    calls = [call.function.name for call in reply.choices[0].message.tool_calls or []]
    print(f"{agent.version} served the call; the model called {calls or 'no tool'}")
