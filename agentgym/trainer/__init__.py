"""Training the planner: encoder, policy, rewards, engines, gate, registry and schedule."""
