"""The Agent Lightning engine: LLM planners trained with Agent Lightning 1.x from what the proxy recorded.

- `contexts`: the recorded requests that offered tools, with the tool the model then called and
  how it went: the replay dataset and the reward model's examples.
- `reward_model`: scores a planner's tool choice on a recorded context, fitted on recorded outcomes.
- `verl_config`: the VERL configuration AgentGym hands to Agent Lightning's trainer.
- `episodes`: recorded episodes as Agent Lightning rollouts, with their events, in its store.
- `dry_run`: `agentgym train --engine lightning --dry-run`.

Agent Lightning itself (`agentlightning`, the `lightning` extra) is imported only here, and
only where it is used: the proxy and the torch engine never need it.
"""
