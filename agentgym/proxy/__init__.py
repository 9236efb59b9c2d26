"""The OpenAI-compatible proxy: forwarding, episode linking, tool outcomes, recording."""
