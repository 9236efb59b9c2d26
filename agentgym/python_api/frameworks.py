"""The agent frameworks the Python API drives, by the names users give them.

Each is a module `agentgym.integrations.<module>` with `chat_model` and `run_task` (the contract
in `agentgym.integrations`); all but the `openai` SDK (a core dependency) need an extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> (integration module, the extra that installs the framework; None: always installed)
FRAMEWORKS: dict[str, tuple[str, str | None]] = {
    "openai": ("openai_sdk", None),
    "langchain": ("langchain", "langchain"),
    "openai_agents": ("openai_agents", "openai-agents"),
    "autogen": ("autogen", "autogen"),
    "crewai": ("crewai", "crewai"),
}


def framework_module(name: str) -> ModuleType:
    """The integration module of framework `name`: ValueError for a name we do not know,
    ImportError naming the extra to install when the framework is not installed."""
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; known: {', '.join(FRAMEWORKS)}")
    module, extra = FRAMEWORKS[name]
    try:
        return importlib.import_module(f"agentgym.integrations.{module}")
    except ImportError as exc:
        needs = f"pip install 'agentgym[{extra}]'" if extra else "a complete agentgym install"
        raise ImportError(f"framework {name!r} is not installed ({needs}): {exc}") from exc
