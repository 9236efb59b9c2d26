"""AgentGym: an OpenAI-compatible proxy that learns which tools your agents should use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from agentgym.python_api.trained_agent import TrainedAgent
    from agentgym.python_api.training_run import Trainer

# `import agentgym` stays light (the proxy and the CLI import it): the Python API loads on first use
_LAZY = {"Trainer": "agentgym.python_api.training_run", "TrainedAgent": "agentgym.python_api.trained_agent"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'agentgym' has no attribute {name!r}")


__all__ = ["TrainedAgent", "Trainer", "__version__"]
