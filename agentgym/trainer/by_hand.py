"""Rollout changes a person makes, and the rollout state they read: one implementation for the
command line (`agentgym policies`, `agentgym rollout status`) and the proxy's admin API, so the
two record and show the same things."""

from __future__ import annotations

from typing import Any

from agentgym.trainer.registry import Index, Registry, Version


def made_by(channel: str, who: str) -> str:
    """What a person's change is recorded as `by`: the way it came ("cli", "admin"), then who."""
    return f"{channel}:{who}"


def promote(registry: Registry, version: str, *, canary: float | None, by: str, reason: str) -> Version:
    """`version` live at once (a manual override), or with `canary` its canary at that percentage."""
    if canary is None:
        return registry.promote(version, by=by, reason=reason)
    return registry.start_canary(version, canary, by=by, reason=reason)


def rollout_status(index: Index, control_share: float = 0.0) -> dict[str, Any]:
    """What serves which share of episodes (the planner's `control_share` is served by no policy),
    the canary with its analysis and its history, the shadow with its analysis."""
    canary = index.canary
    control = round(100 * control_share, 6)
    return {
        "live": index.live,
        "live_percent": 100 - control - (canary.percent if canary else 0),
        "control_percent": control,
        "canary": {**canary.model_dump(), "history": index.versions[canary.version].history} if canary else None,
        "shadow": index.shadow.model_dump() if index.shadow else None,
    }
