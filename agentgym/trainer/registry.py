"""Policy versions on disk, beside the store: weights, checksum, parent, statistics, status.

A folder (default: the store's path plus `.policies`) holds one artifact per version and
`index.json`, which says every version's metadata, which one is live, which one is in canary
(and for what share of episodes) and which one is in shadow (since when): the rollout's state, so it
survives restarts. Writers take a file lock and replace the index atomically, so `agentgym
policies promote` from another process, the trainer and the rollout controller inside the
proxy never tear it; the proxy watches the index and swaps the versions in (see
`agentgym.proxy.planner`). An artifact whose checksum does not match is refused.

A version's artifact is `vN.npz`, the default planner's weights, or, for an LLM planner (engine
"lightning", trained by Agent Lightning), `vN.json`: the model's name as its server serves it
(a vLLM served name or LoRA adapter) and that server's URL. The weights stay with the model
server; the small spec is what is checksummed, so an altered spec is refused like altered weights.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentgym.config import http_url
from agentgym.trainer.policy import PolicyWeights

Status = Literal["candidate", "shadow", "canary", "live", "retired", "rolled_back", "refused"]


LLM_ENGINE = "lightning"


class CorruptPolicy(ValueError):
    pass


class LlmSpec(BaseModel):
    """An LLM planner version's artifact: which model to ask, and where."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="the name its server serves it under (vLLM served name, LoRA adapter)")
    server: str = Field(description="the OpenAI-compatible server serving it, e.g. http://127.0.0.1:8000/v1")

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        return http_url(value, "an LLM planner's server")


class Version(BaseModel):
    version: str
    created_at: float
    parent: str | None
    status: Status = "candidate"
    checksum: str
    encoder: str
    encoder_checksum: str
    engine: str = "torch"
    training: dict[str, Any] = Field(default_factory=dict, description="batch size, loss, reward, seed, device")
    gate: dict[str, Any] = Field(default_factory=dict, description="the off-policy estimate it was admitted on")
    history: list[dict[str, Any]] = Field(default_factory=list, description="status changes: when, to what, by whom, why")


class Canary(BaseModel):
    version: str
    percent: float = Field(gt=0, lt=100, description="share of episodes it serves, sticky per episode")
    started_at: float
    step_started_at: float = Field(description="when it began serving this percentage: its step's analysis "
                                   "reads the episodes begun since")
    analysis: list[str] = Field(default_factory=list, description="the step's latest analysis, one line a metric")
    paused: str | None = Field(None, description="why the rollout controller stopped at this step (its analysis "
                               "stayed inconclusive): it serves on, unanalysed, until started again by hand")


class Shadow(BaseModel):
    """A version scoring every request beside the serving ones; its decisions are recorded, never applied."""

    version: str
    started_at: float = Field(description="its analysis reads the decisions made since")
    analysis: list[str] = Field(default_factory=list, description="its latest analysis: agreement, off-policy estimate")


class Index(BaseModel):
    live: str | None = None
    canary: Canary | None = None
    shadow: Shadow | None = None
    versions: dict[str, Version] = Field(default_factory=dict)

    @field_validator("shadow", mode="before")
    @classmethod
    def _named_shadow(cls, shadow: Any) -> Any:
        """An index written before shadows had a start time named the version only."""
        return {"version": shadow, "started_at": 0.0} if isinstance(shadow, str) else shadow

    @property
    def shadow_version(self) -> str | None:
        return self.shadow.version if self.shadow else None


def default_dir(db: Path | str) -> Path:
    return Path(f"{db}.policies")


class Registry:
    def __init__(self, folder: Path | str) -> None:
        self.folder = Path(folder)

    @property
    def index_path(self) -> Path:
        return self.folder / "index.json"

    def index(self) -> Index:
        try:
            return Index.model_validate_json(self.index_path.read_bytes())
        except FileNotFoundError:
            return Index()

    def stamp(self) -> float:
        """Changes whenever the index does: what a watcher polls."""
        try:
            return self.index_path.stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    @contextmanager
    def _editing(self) -> Iterator[Index]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / "index.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self.index()
            yield index
            staging = self.index_path.with_suffix(".json.tmp")
            staging.write_bytes(orjson.dumps(index.model_dump(), option=orjson.OPT_INDENT_2))
            os.replace(staging, self.index_path)

    def register(self, weights: PolicyWeights, *, parent: str | None, encoder: str, encoder_checksum: str,
                 training: dict[str, Any], gate: dict[str, Any], engine: str = "torch") -> Version:
        return self._register(weights.to_bytes(), parent=parent, encoder=encoder, encoder_checksum=encoder_checksum,
                              engine=engine, training=training, gate=gate)

    def register_llm(self, spec: LlmSpec, *, parent: str | None, training: dict[str, Any],
                     gate: dict[str, Any]) -> Version:
        """An LLM planner version: `spec` names the served model; it reads no encoder of ours."""
        return self._register(orjson.dumps(spec.model_dump()), parent=parent, encoder="none", encoder_checksum="none",
                              engine=LLM_ENGINE, training=training, gate=gate)

    def _register(self, data: bytes, **fields: Any) -> Version:
        with self._editing() as index:
            number = 1 + max((int(v[1:]) for v in index.versions), default=0)
            version = Version(version=f"v{number}", created_at=time.time(),
                              checksum=hashlib.sha256(data).hexdigest(), **fields)
            artifact = self._artifact(version)
            staging = artifact.with_name(f".{artifact.name}.tmp")
            staging.write_bytes(data)
            os.replace(staging, artifact)
            index.versions[version.version] = version
        return version

    def _artifact(self, meta: Version) -> Path:
        return self.folder / f"{meta.version}.{'json' if meta.engine == LLM_ENGINE else 'npz'}"

    def load(self, version: str) -> tuple[Version, PolicyWeights | LlmSpec]:
        """The version's metadata and weights (an LLM planner's spec); CorruptPolicy if the
        artifact is missing or altered."""
        meta = self.index().versions.get(version)
        if meta is None:
            raise KeyError(f"no policy version {version!r}")
        try:
            data = self._artifact(meta).read_bytes()
        except FileNotFoundError as exc:
            raise CorruptPolicy(f"{version}: its artifact {self._artifact(meta).name} is missing") from exc
        if hashlib.sha256(data).hexdigest() != meta.checksum:
            raise CorruptPolicy(f"{version}: checksum mismatch, {self._artifact(meta).name} was altered or truncated")
        try:
            if meta.engine == LLM_ENGINE:
                return meta, LlmSpec.model_validate_json(data)
            return meta, PolicyWeights.from_bytes(data)
        except Exception as exc:  # noqa: BLE001 - any unreadable artifact is refused the same way
            raise CorruptPolicy(f"{version}: unreadable artifact ({exc})") from exc

    def promote(self, version: str, *, by: str, reason: str) -> Version:
        """Make `version` live (checked loadable first); the one it replaces is retired. A canary
        of `version` ends in its promotion."""
        self.load(version)
        with self._editing() as index:
            return _make_live(index, version, by, reason)

    def pin(self, version: str, folder: Path | str, *, by: str) -> Registry:
        """A new registry at `folder` holding `version` alone, live, under the same name (checked
        loadable first): a proxy watching it serves exactly that version, whatever this one does next."""
        meta, _ = self.load(version)
        pinned = Registry(folder)
        with pinned._editing() as index:
            if index.versions:
                raise ValueError(f"{pinned.folder} holds a registry already")
            shutil.copyfile(self._artifact(meta), pinned._artifact(meta))
            index.versions[version] = meta.model_copy(update={"status": "candidate", "history": []})
            _make_live(index, version, by, f"pinned from {self.folder}")
        return pinned

    def start_shadow(self, version: str, *, by: str, reason: str) -> Version:
        """Let `version` score every request beside the serving versions, its decisions recorded
        and never applied (checked loadable first); a shadow it replaces goes back to candidate."""
        self.load(version)
        with self._editing() as index:
            if version == index.live or (index.canary and index.canary.version == version):
                raise ValueError(f"{version} serves already")
            if index.shadow and index.shadow.version != version:
                _move(index.versions[index.shadow.version], "candidate", by, f"shadow replaced by {version}")
            _move(index.versions[version], "shadow", by, reason)
            index.shadow = Shadow(version=version, started_at=time.time())
            return index.versions[version]

    def start_canary(self, version: str, percent: float, *, by: str, reason: str) -> Version:
        """Serve `version` to `percent`% of episodes beside the live version (checked loadable
        first); again, at the same percentage or another, start a fresh step there (which ends a
        pause)."""
        if not 0 < percent < 100:
            raise ValueError(f"a canary serves more than 0% and less than 100% of episodes, not {percent:g}% "
                             "(all of them: promote it)")
        self.load(version)
        with self._editing() as index:
            if version == index.live:
                raise ValueError(f"{version} is live already")
            if index.canary and index.canary.version != version:
                raise ValueError(f"{index.canary.version} is in canary: promote it or roll it back first")
            _move(index.versions[version], "canary", by, f"{reason} ({percent:g}% of episodes)")
            if index.shadow_version == version:  # from shadow to canary
                index.shadow = None
            now = time.time()
            index.canary = Canary(version=version, percent=percent, step_started_at=now,
                                  started_at=index.canary.started_at if index.canary else now)
            return index.versions[version]

    def settle_canary(self, version: str, outcome: Literal["rollback", "promote", "pause"] | float, *, by: str,
                      reason: str, step_started_at: float | None = None) -> bool:
        """What the rollout controller decided for canary `version`: roll it back, promote it, pause
        it at its step, or move it to a percentage; done only if `version` is still the canary when
        the index is locked, at the step the controller analysed when it says which
        (`step_started_at`): a person may have rolled it back, or restarted it at another step, since
        the controller looked. Whether it was done."""
        if outcome == "promote":
            self.load(version)
        with self._editing() as index:
            if index.canary is None or index.canary.version != version:
                return False
            if step_started_at is not None and index.canary.step_started_at != step_started_at:
                return False
            if outcome == "rollback":
                _move(index.versions[version], "rolled_back", by, reason)
                index.canary = None
            elif outcome == "promote":
                _make_live(index, version, by, reason)
            elif outcome == "pause":
                _move(index.versions[version], "canary", by, f"paused: {reason}")
                index.canary.paused = reason
            else:
                _move(index.versions[version], "canary", by, f"{reason} ({outcome:g}% of episodes)")
                index.canary = Canary(version=version, percent=outcome, step_started_at=time.time(),
                                      started_at=index.canary.started_at)
            return True

    def settle_shadow(self, version: str, outcome: Literal["rollback"] | float, *, by: str, reason: str) -> bool:
        """What the rollout controller decided for shadow `version`: roll it back, or start its
        canary at a percentage; done only if it is still the shadow, and (for a canary) no other
        canary runs, when the index is locked. Whether it was done."""
        if outcome != "rollback":
            self.load(version)
        with self._editing() as index:
            if index.shadow_version != version or (outcome != "rollback" and index.canary is not None):
                return False
            index.shadow = None
            if outcome == "rollback":
                _move(index.versions[version], "rolled_back", by, reason)
            else:
                _move(index.versions[version], "canary", by, f"{reason} ({outcome:g}% of episodes)")
                index.canary = Canary(version=version, percent=outcome, started_at=time.time(),
                                      step_started_at=time.time())
            return True

    def note_analysis(self, version: str, lines: list[str]) -> None:
        """Keep the running canary's or shadow's latest analysis with it (for `agentgym rollout status`)."""
        index = self.index()
        trial = next((t for t in (index.canary, index.shadow) if t and t.version == version), None)
        if trial is None or trial.analysis == lines:
            return  # unchanged: no write (the proxy re-reads the index whenever it changes)
        with self._editing() as index:
            trial = next((t for t in (index.canary, index.shadow) if t and t.version == version), None)
            if trial is not None:
                trial.analysis = lines

    def refuse(self, version: str, *, by: str, reason: str) -> None:
        """Mark a version that failed its gate; it is kept, for the record, and never served."""
        with self._editing() as index:
            _move(index.versions[version], "refused", by, reason)

    def rollback(self, *, by: str, reason: str) -> Version | None:
        """End a canary, else a shadow (its version is rolled back, the live one keeps serving);
        with neither, back to the version that was live before the current one (or to none).
        Returns what is live."""
        with self._editing() as index:
            ended = None
            if index.canary is not None:
                ended, index.canary = index.canary.version, None
            elif index.shadow is not None:
                ended, index.shadow = index.shadow.version, None
            if ended is not None:
                _move(index.versions[ended], "rolled_back", by, reason)
                return index.versions[index.live] if index.live else None
            if index.live is None:
                raise ValueError("no live policy to roll back")
            current = index.versions[index.live]
            _move(current, "rolled_back", by, reason)
            replaced = [v for v in index.versions.values() if v.status == "retired" and v.history
                        and v.history[-1]["reason"] == f"replaced by {current.version}"]
            previous = max(replaced, key=lambda v: v.history[-1]["at"]).version if replaced else None
            index.live = previous
            if previous is not None:
                _move(index.versions[previous], "live", by, f"rollback of {current.version}")
                return index.versions[previous]
            return None


def _make_live(index: Index, version: str, by: str, reason: str) -> Version:
    """In a locked index: `version` live, the one it replaces retired, its canary or shadow ended."""
    if index.live and index.live != version:
        _move(index.versions[index.live], "retired", by, f"replaced by {version}")
    _move(index.versions[version], "live", by, reason)
    index.live = version
    if index.canary and index.canary.version == version:
        index.canary = None
    if index.shadow_version == version:
        index.shadow = None
    return index.versions[version]


def _move(version: Version, status: Status, by: str, reason: str) -> None:
    version.history.append({"at": time.time(), "from": version.status, "to": status, "by": by, "reason": reason})
    version.status = status
