"""The Python API: `Trainer` trains a planner against a scenario's simulator through a real proxy
and a framework's own agent loop; `TrainedAgent` serves what it registered to that framework's
client. `from agentgym import Trainer, TrainedAgent` imports them lazily (the proxy never needs them).
"""
