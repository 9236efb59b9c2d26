"""AgentGym: an OpenAI-compatible proxy that learns which tools your agents should use."""

__version__ = "0.1.0"
