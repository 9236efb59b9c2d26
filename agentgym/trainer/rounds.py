"""One training round, and the schedule that runs rounds inside the proxy.

A round: the decisions the live version served (earlier versions' too, importance-corrected,
if configured) in finished episodes; an engine update on four episodes in five; the gate on
the fifth; the new version registered with its statistics and estimate, and made live if it
passed and promotion is automatic. With no version yet, the first round registers the
zero-shot policy: the tools ranked by text similarity, and mostly deferring (the untrained
model) but offering the likeliest tools one time in eight, logging decisions to learn from.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import numpy as np

from agentgym.config import PlannerConfig, RewardModelConfig, RolloutConfig, TrainerConfig
from agentgym.store.queries import Scope, with_base
from agentgym.trainer.batch import read_batch
from agentgym.trainer.encoder import ENCODER_ID, Encoder
from agentgym.trainer.engine import Engine, TorchEngine, chosen_probabilities, usable
from agentgym.trainer.gate import evaluate
from agentgym.trainer.policy import PolicyWeights
from agentgym.trainer.registry import Index, Registry
from agentgym.trainer.rollout import check as rollout_check
from agentgym.trainer.shadow import look as shadow_look

if TYPE_CHECKING:  # a type only: the engine and the benchmarks run without the database driver
    import duckdb

log = logging.getLogger(__name__)

HOLD_OUT = 5  # one episode in five is kept out of the update, for the gate
# Told of every round that ran: its status ("registered", "refused", "waiting", "skipped"; "failed"
# if it raised), its seconds, and what it returned (None if it failed). Metrics, W&B export.
RoundObserver = Callable[[str, float, dict[str, Any] | None], None]


def held_out_for_gate(key: str, seed: int) -> bool:
    """One key (an episode) in HOLD_OUT, the same in every process: kept out of the update for the gate."""
    return int.from_bytes(hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=4).digest(), "little") % HOLD_OUT == 0


SERVED_EPISODES_SQL = """
SELECT count(*) FROM episodes WHERE ok IS NOT NULL AND policy_version = $version
"""


def train_round(con: duckdb.DuckDBPyConnection, registry: Registry, encoder: Encoder, trainer: TrainerConfig,
                planner: PlannerConfig, rollout: RolloutConfig, scope: Scope, *, by: str,
                engine: Engine | None = None) -> dict[str, Any]:
    """Run one round; what happened, as a dict (also what `agentgym train --once` prints).
    With `trainer.promote` "rollout", a version that passed starts in shadow or, with
    `rollout.shadow` off, at the first canary step if no canary runs; while a shadow is being
    judged, the round waits (`judged_shadow`)."""
    index = registry.index()
    live = index.live
    if live is None:
        weights = PolicyWeights.zero_shot(encoder.dimensions, context_dimensions=encoder.dimensions_with_words,
                                          b_defer=trainer.zero_shot_defer, seed=trainer.seed)
        version = registry.register(weights, parent=None, encoder=ENCODER_ID, encoder_checksum=encoder.checksum,
                                    training={"engine": "zero-shot", "seed": trainer.seed},
                                    gate={"method": "none", "reason": "first version: mostly deferring"},
                                    engine="zero-shot")
        if trainer.promote != "manual":  # nothing to compare a canary with yet
            registry.promote(version.version, by=by, reason="first version")
        return {"status": "registered", "version": version.version, "promoted": trainer.promote != "manual"}
    shadow = judged_shadow(index, trainer, rollout)
    if shadow is not None:
        return {"status": "waiting", "live": live, "shadow": shadow,
                "reason": f"{shadow} is in shadow, not yet judged: a new version would replace it unjudged (roll it "
                          "back to train now)"}
    _, current = registry.load(live)
    if not isinstance(current, PolicyWeights):
        return {"status": "skipped", "live": live, "reason": f"{live} is an LLM planner: the torch engine trains the "
                "default planner only; train it with agentgym train --engine lightning"}
    versions = {live} if trainer.older_data == "drop" else None
    batch = usable(read_batch(con, trainer.reward, scope, versions=versions, others=trainer.outcome_decisions))
    serving = batch.serving
    if serving.sum() < trainer.min_decisions:
        return {"status": "waiting", "live": live, "decisions": int(serving.sum()), "needed": trainer.min_decisions}
    held_out = np.array([held_out_for_gate(e, trainer.seed) for e in batch.episodes], bool)
    train, holdout = batch.only(~held_out), batch.only(held_out & serving)
    new, stats = (engine or TorchEngine()).update(train, current, encoder, trainer, planner.epsilon)
    # judged on episodes it did not train on: on its own batch any update looks better
    gate = evaluate(holdout, *chosen_probabilities(holdout, encoder, planner.epsilon, new, current),
                    margin=trainer.gate_margin, seed=trainer.seed)
    version = registry.register(new, parent=live, encoder=ENCODER_ID, encoder_checksum=encoder.checksum,
                                training=stats, gate=gate, engine=stats["engine"])
    result = {"status": "registered", "version": version.version, "parent": live, "training": stats, "gate": gate,
              "promoted": False}
    estimate = gate.get("reason") or f"estimate {gate['difference']:+.4f} (95% {gate['ci95']}) against current" + (
        f", {gate['untrained']['difference']:+.4f} against no planner" if gate["untrained"] else "")
    if not gate["passed"]:
        registry.refuse(version.version, by=by, reason=f"gate: {estimate}")
        result["status"] = "refused"
    elif trainer.promote == "auto":
        registry.promote(version.version, by=by, reason=f"gate passed: {estimate}")
        result["promoted"] = True
    elif trainer.promote == "rollout" and rollout.shadow:
        registry.start_shadow(version.version, by=by, reason=f"gate passed: {estimate}")
        result["shadow"] = True
    elif trainer.promote == "rollout" and registry.index().canary is None:
        registry.start_canary(version.version, rollout.steps[0], by=by, reason=f"gate passed: {estimate}")
        result["canary"] = rollout.steps[0]
    return result


def judged_shadow(index: Index, trainer: TrainerConfig, rollout: RolloutConfig) -> str | None:
    """The version in shadow that rounds wait for. Each round's version would otherwise replace
    the shadow before its verdict: with rounds every 100 episodes and a shadow judged on 100, every
    version was replaced in turn and none ever served."""
    if trainer.promote == "rollout" and rollout.shadow and index.shadow is not None:
        return index.shadow.version
    return None


def _served(con: duckdb.DuckDBPyConnection, version: str, scope: Scope) -> int:
    """Finished episodes (with an outcome) that `version` served."""
    return con.execute(with_base(SERVED_EPISODES_SQL), {**scope.params(), "version": version}).fetchone()[0]


class Schedule:
    """Rounds inside `agentgym serve`: every `every_episodes` finished episodes of the live
    version and/or every `every_s` seconds, checked every `check_s` on an APScheduler job; and
    the rollout controller's look at a running canary and shadow every `rollout.check_s`."""

    def __init__(self, trainer: TrainerConfig, planner: PlannerConfig, scope: Scope, registry: Registry,
                 reader: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
                 encoder_of: Callable[[], Encoder], rollout: RolloutConfig | None = None,
                 reward_model: RewardModelConfig | None = None, observers: list[RoundObserver] | None = None) -> None:
        self.trainer, self.planner, self.scope, self.registry = trainer, planner, scope, registry
        self.observers = observers or []
        self.rollout = rollout or RolloutConfig()
        self.reward_model = reward_model  # judges LLM planner versions in shadow
        self._reader = reader  # the recorder's in-process read cursors
        self._encoder_of = encoder_of  # loaded on the scheduler's thread, not the event loop
        self._last_round = time.monotonic()
        self._trained_on: dict[str, int] = {}  # version -> its served episodes when a round last used them
        self._lock = threading.Lock()
        self.last_result: dict[str, Any] | None = None
        self.rounds = 0
        self._scheduler = None

    def start(self) -> None:
        """The jobs the configuration asks for: training rounds (`trainer.enabled`), the rollout
        controller (`rollout.automatic`)."""
        from apscheduler.schedulers.background import BackgroundScheduler

        # its own logger: "skipped: a round is running" is normal, and litellm's import resets apscheduler's to WARNING
        quiet = logging.getLogger("agentgym.trainer.scheduler")
        quiet.setLevel(logging.ERROR)
        self._scheduler = BackgroundScheduler(daemon=True, logger=quiet)
        if self.trainer.enabled:
            self._scheduler.add_job(self.check, "interval", seconds=self.trainer.check_s, max_instances=1,
                                    coalesce=True, id="agentgym-trainer")
            self._scheduler.add_job(self._warm, id="agentgym-trainer-warm")  # once, now
        if self.rollout.automatic:
            self._scheduler.add_job(self.look_at_rollout, "interval", seconds=self.rollout.check_s, max_instances=1,
                                    coalesce=True, id="agentgym-rollout")
        self._scheduler.start()

    def look_at_rollout(self) -> None:
        """The rollout job: a look at the running canary, then at the shadow (which may start its
        canary once the canary's place is free). A failure is logged; serving never depends on it."""
        try:
            index = self.registry.index()
            if index.canary is None and index.shadow is None:
                return
            with self._lock, self._reader() as con:
                results = [rollout_check(con, self.registry, self.rollout, self.scope)]
                if self.registry.index().shadow is not None:
                    results.append(shadow_look(con, self.registry, self._encoder_of(), self.rollout, self.trainer,
                                               self.planner, self.scope, self.reward_model))
            for result in results:
                if not result["status"].startswith(("no ", "waiting")):
                    log.info("rollout: %s", result)
        except Exception:  # noqa: BLE001 - the controller failing must never touch the proxy's requests
            log.exception("rollout check failed; the versions serving keep serving")

    def _warm(self) -> None:
        """Load the encoder and import torch before the first update is due, so that it does not
        start seconds late (importing torch takes 4-10 s on two cores). Not under the round lock:
        the first round, registering the zero-shot version, needs only the encoder."""
        self._encoder_of()
        import torch  # noqa: F401

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
        for observer in self.observers:
            if hasattr(observer, "close"):  # an exporter with a run to finish
                observer.close()

    def due(self, con: duckdb.DuckDBPyConnection) -> bool:
        """Whether a round is due; not while a shadow is judged (its episodes still count toward the
        next round, which runs once the shadow has gone to canary or been rolled back)."""
        index = self.registry.index()
        live = index.live
        if live is None:
            return True
        if judged_shadow(index, self.trainer, self.rollout) is not None:
            return False
        if self.trainer.every_s is not None and time.monotonic() - self._last_round >= self.trainer.every_s:
            return True
        if self.trainer.every_episodes is not None:
            # new episodes since the last round on this version: a refused update waits for more data
            return _served(con, live, self.scope) - self._trained_on.get(live, 0) >= self.trainer.every_episodes
        return False

    def check(self) -> None:
        """The job: a round if one is due. A failure is logged; serving never depends on it."""
        try:
            self.run(force=False)
        except Exception:  # noqa: BLE001 - the trainer failing must never touch the proxy's requests
            log.exception("training round failed; the live policy keeps serving")

    def run(self, *, force: bool, by: str = "schedule") -> dict[str, Any]:
        """A round (if due, or `force`d); its observers are told of it once the round's lock is released."""
        started = time.perf_counter()
        try:
            result = self._run(force, by)
        except Exception:
            self._observe("failed", started, None)
            raise
        if result["status"] != "not due":
            self._observe(result["status"], started, result)
        return result

    def _observe(self, status: str, started: float, result: dict[str, Any] | None) -> None:
        seconds = time.perf_counter() - started
        for observer in self.observers:
            try:
                observer(status, seconds, result)
            except Exception:  # noqa: BLE001 - reporting a round must not fail it
                log.exception("reporting a training round failed")

    def _run(self, force: bool, by: str) -> dict[str, Any]:
        with self._lock, self._reader() as con:
            if not force and not self.due(con):
                return {"status": "not due"}
            live = self.registry.index().live
            if live is not None and self.trainer.every_episodes is not None:
                self._trained_on[live] = _served(con, live, self.scope)
            result = train_round(con, self.registry, self._encoder_of(), self.trainer, self.planner, self.rollout,
                                 self.scope, by=by)
            self._last_round = time.monotonic()
            self.rounds += 1
            self.last_result = result
            log.info("training round: %s", {k: v for k, v in result.items() if k != "training"})
            return result
