"""Training rounds' statistics to Weights & Biases, when the user configured a project.

One W&B run per process that trains (the proxy's schedule, or `agentgym train` on a store no
server holds), one logged step per round: its status, the version it registered, the update's
loss, KL and reward, the gate's estimate and interval. The export runs on a thread of its own,
so a round never waits for W&B (an `init` can take seconds, or a minute without network), and
anything W&B does wrong (not installed, no key, no network) is logged and costs nothing else.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentgym.config import WandbConfig

log = logging.getLogger(__name__)

TRAINING_KEYS = ("loss", "kl", "mean_reward", "decisions", "episodes", "steps", "decisions_per_s", "seconds")
GATE_KEYS = ("new", "current", "difference", "effective_sample_size", "decisions", "episodes")


def round_row(status: str, seconds: float, result: dict[str, Any] | None) -> dict[str, Any]:
    """One round as a flat W&B history row."""
    result = result or {}
    row: dict[str, Any] = {"round/status": status, "round/seconds": round(seconds, 3),
                           "round/registered": int(status == "registered"), "round/refused": int(status == "refused")}
    if result.get("version"):
        row["round/version"] = int(str(result["version"]).lstrip("v"))
    training, gate = result.get("training") or {}, result.get("gate") or {}
    row |= {f"training/{key}": training[key] for key in TRAINING_KEYS if key in training}
    row |= {f"gate/{key}": gate[key] for key in GATE_KEYS if gate.get(key) is not None}  # None: no estimate
    if gate.get("ci95"):
        row["gate/ci95_low"], row["gate/ci95_high"] = gate["ci95"]
    if "passed" in gate:
        row["gate/passed"] = int(bool(gate["passed"]))
    if gate.get("untrained"):
        row["gate/difference_vs_no_planner"] = gate["untrained"]["difference"]
    return row


class WandbExport:
    """A round observer (`agentgym.trainer.rounds.RoundObserver`); see the module docstring."""

    def __init__(self, config: WandbConfig) -> None:
        self.config = config
        self.project = config.project or os.environ.get("WANDB_PROJECT")
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="agentgym-wandb") if self.project else None
        self._run: Any = None

    def __call__(self, status: str, seconds: float, result: dict[str, Any] | None) -> None:
        if self._pool is not None:
            self._pool.submit(self._log, round_row(status, seconds, result))

    def close(self) -> None:
        """Finish the run, after the rounds still being exported."""
        if self._pool is not None:
            self._pool.submit(self._finish)
            self._pool.shutdown(wait=True)
            self._pool = None

    def _log(self, row: dict[str, Any]) -> None:
        try:
            if self._run is None:
                try:
                    import wandb
                except ImportError:
                    log.error("W&B export is configured but wandb is not installed: pip install 'agentgym[wandb]'")
                    return
                self._run = wandb.init(project=self.project, entity=self.config.entity, tags=self.config.tags,
                                       job_type="agentgym-trainer")
            self._run.log(row)
        except Exception:  # noqa: BLE001 - W&B failing must never touch training
            log.exception("exporting a training round to W&B failed; training goes on")

    def _finish(self) -> None:
        try:
            if self._run is not None:
                self._run.finish()
        except Exception:  # noqa: BLE001
            log.exception("finishing the W&B run failed")
