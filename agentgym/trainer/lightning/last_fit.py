"""The last reward model fitted on a store, kept in its policy registry's folder so that
`agentgym report` and the dashboard show its agreement with real outcomes on held-out episodes:
every use of the reward model (the LLM versions' gate, the replay rollouts' rewards) rests on it.

Written by `agentgym train --engine lightning` (the model the VERL run is rewarded by) and by the
shadow step when it judges an LLM version; read without numpy or the store.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import orjson

FILE = "reward_model.json"
HELD_OUT = ("examples", "episodes", "success_rate", "accuracy", "majority_accuracy", "auc")


def save(folder: Path, report: dict[str, Any], *, by: str) -> None:
    """Keep `report` (`RewardModel.report`) as the last fit, made `by` whom (replaced whole, never torn)."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{FILE}.{os.getpid()}"
    partial.write_bytes(orjson.dumps({"fitted_at": time.time(), "by": by, **report}))
    partial.replace(folder / FILE)


def summary(folder: Path) -> dict[str, Any] | None:
    """The last fit's held-out agreement, as the report's `reward_model` key; None if none was kept."""
    try:
        fit = orjson.loads((folder / FILE).read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError):
        return None
    return {"fitted_at": fit["fitted_at"], "by": fit["by"], "target": fit["target"],
            "train_examples": fit["train"]["examples"], "held_out": {k: fit["held_out"][k] for k in HELD_OUT}}


def line(summary: dict[str, Any]) -> str:
    """The summary in words, for the report's table."""
    held = summary["held_out"]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(summary["fitted_at"]))
    return (f"Reward model ({summary['target']} outcomes; fitted {when} by {summary['by']} on "
            f"{summary['train_examples']} calls): held out {held['examples']} calls of {held['episodes']} episodes, "
            f"accuracy {held['accuracy']} (always the majority outcome: {held['majority_accuracy']}), AUC {held['auc']}")
