"""`agentgym train --engine lightning --dry-run`: everything a run needs, checked on a machine
with no GPU, and what would run.

Checks, in order: Agent Lightning installed (and verl, vLLM and a GPU, which only the training
machine needs: reported, not required); the planner named; the replay dataset from the store;
the reward model fitted, with its agreement with real outcomes on held-out episodes; the VERL
configuration generated and its `agentlightning:` keys known to the installed Agent Lightning;
the replay agent importable; Agent Lightning's server and the planner's model server reachable
(reported: a dry run is often made before they are started). Nothing is written.
"""

from __future__ import annotations

import importlib
import importlib.util
import shlex
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import duckdb
import httpx

from agentgym.config import Settings
from agentgym.store.queries import Scope
from agentgym.store.schema import SchemaError, open_store
from agentgym.trainer.encoder import Encoder, shared_encoder

OK, WARN, FAIL = "ok", "warn", "fail"


def default_run_dir(store: Path) -> Path:
    """Where a run's files go unless told: beside the store, as the policy registry is."""
    return store.with_name(store.name + ".lightning")


def dry_run(settings: Settings, run_dir: Path, *, encoder_of: Callable[[], Encoder] = shared_encoder,
            timeout_s: float = 3.0) -> dict[str, Any]:
    """The checks and the plan, as a dict: `checks` (name, status ok/warn/fail, detail), `dataset`,
    `reward_model`, `verl_config`, `commands`, and `ok` (no check failed)."""
    lightning = settings.lightning
    checks: list[dict[str, str]] = []
    out: dict[str, Any] = {"run_dir": str(run_dir.absolute()), "checks": checks}

    def check(name: str, status: str, detail: str) -> bool:
        checks.append({"name": name, "status": status, "detail": detail})
        return status != FAIL

    _packages(check)
    model_path = lightning.verl.model_path or lightning.planner_model
    check("planner", OK if lightning.planner_model and lightning.model_server_url else FAIL,
          f"{lightning.planner_model} served at {lightning.model_server_url}" if lightning.planner_model
          and lightning.model_server_url else "set lightning.planner_model and lightning.model_server_url")

    contexts = _contexts(settings, check)
    if contexts is not None:
        out["dataset"] = _dataset(contexts, settings, check)
        out["reward_model"] = _reward_model(contexts, settings, encoder_of, check)

    from agentgym.trainer.lightning.verl_config import REPLAY_AGENT, check_against_agent_lightning, verl_config

    try:
        overrides = verl_config(lightning, run_dir)
    except ValueError as exc:
        check("verl config", FAIL, str(exc))
    else:
        out["verl_config"] = overrides
        if importlib.util.find_spec("agentlightning") is not None:
            problems = check_against_agent_lightning(overrides)
            check("verl config", FAIL if problems else OK, "; ".join(problems) or
                  "GRPO, rollout-level advantage, per_rollout_mean loss, "
                  f"trace aggregation {lightning.verl.trace_aggregator}; agentlightning.* keys known to the "
                  "installed Agent Lightning")
    module, _, name = REPLAY_AGENT.rpartition(".")
    try:
        getattr(importlib.import_module(module), name)
        check("replay agent", OK, f"{REPLAY_AGENT} imports")
    except (ImportError, AttributeError) as exc:
        check("replay agent", FAIL, f"{REPLAY_AGENT}: {exc}")

    check("agl-server", *_reachable(f"{lightning.server_url}/healthz", timeout_s))
    if lightning.model_server_url:
        status, detail = _reachable(f"{lightning.model_server_url}/models", timeout_s)
        if status == OK and lightning.planner_model and lightning.planner_model not in detail:
            status, detail = WARN, f"{detail}; {lightning.planner_model} is not among them"
        check("model server", status, detail)

    key = f"${lightning.key_env}"
    out["commands"] = [
        f"agl-server host=127.0.0.1 port={_port(lightning.server_url)} key={key} "
        f"default_proxy.model_name={shlex.quote(model_path or 'MODEL')}",
        f"agl-controller runner_type=local agl_server.url={lightning.server_url} agl_server.key={key}",
        f"python -m agentgym.trainer.lightning.launch {shlex.quote(str(run_dir.absolute()))}",
    ]
    out["ok"] = all(c["status"] != FAIL for c in checks)
    return out


def _packages(check: Callable[[str, str, str], bool]) -> None:
    try:
        import agentlightning
    except ImportError:
        check("agentlightning", FAIL, "not installed: pip install 'agentgym[lightning]'")
    else:
        check("agentlightning", OK, f"{agentlightning.__version__}")
    missing = [m for m in ("verl", "vllm", "ray") if importlib.util.find_spec(m) is None]
    check("training stack", WARN if missing else OK,
          f"{', '.join(missing)} not installed here: the training machine needs them (Agent Lightning's "
          "scripts/setup_verl.sh)" if missing else "verl, vllm and ray installed")
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:
        gpus = 0
    check("gpu", OK if gpus else WARN, f"{gpus} CUDA device(s)" if gpus else "no CUDA device here: the VERL run "
          "needs the training machine; everything else is checked")


def _contexts(settings: Settings, check: Callable[[str, str, str], bool]) -> list | None:
    from agentgym.trainer.lightning.contexts import MissingBodies, read_contexts

    path = settings.store.path
    try:
        con = open_store(path, read_only=True)
    except (FileNotFoundError, SchemaError) as exc:
        check("store", FAIL, str(exc))
        return None
    except duckdb.IOException as exc:
        check("store", FAIL, f"cannot read {path}: {exc} (a running `agentgym serve` holds it: stop it, or "
              "point --db at a copy)")
        return None
    with closing(con):
        try:
            contexts = read_contexts(con, Scope.configured(settings.episodes))
        except MissingBodies as exc:
            check("store", FAIL, str(exc))
            return None
    check("store", OK, f"{path}: {len(contexts)} recorded requests that offered tools, "
          f"{sum(c.called is not None for c in contexts)} answered with a tool call")
    return contexts


def _dataset(contexts: list, settings: Settings, check: Callable[[str, str, str], bool]) -> dict[str, Any]:
    from agentgym.trainer.rounds import held_out_for_gate

    from agentgym.trainer.lightning.contexts import replayable

    seed = settings.lightning.reward_model.seed
    contexts = replayable(contexts)
    val = [c for c in contexts if held_out_for_gate(c.episode_id, seed)]
    train = [c for c in contexts if not held_out_for_gate(c.episode_id, seed)]
    info = {"contexts": len(contexts), "episodes": len({c.episode_id for c in contexts}),
            "train_contexts": len(train), "val_contexts": len(val),
            "steps_per_epoch": len(train) // settings.lightning.verl.train_batch_size}
    needed = settings.lightning.min_contexts
    if len(contexts) < needed or not val or info["steps_per_epoch"] == 0:
        check("dataset", FAIL, f"{len(train)} training and {len(val)} validation contexts; a run needs "
              f"lightning.min_contexts ({needed}) in all, at least one batch "
              f"({settings.lightning.verl.train_batch_size}) to train on and one to validate on")
    else:
        check("dataset", OK, f"{len(train)} training and {len(val)} validation contexts from "
              f"{info['episodes']} episodes; {info['steps_per_epoch']} steps an epoch")
    return info


def _reward_model(contexts: list, settings: Settings, encoder_of: Callable[[], Encoder],
                  check: Callable[[str, str, str], bool]) -> dict[str, Any] | None:
    from agentgym.trainer.lightning.reward_model import NotEnoughData, fit

    try:
        model = fit(contexts, encoder_of(), settings.lightning.reward_model)
    except NotEnoughData as exc:
        check("reward model", FAIL, str(exc))
        return None
    held = model.report["held_out"]
    check("reward model", OK if held["examples"] else WARN,
          f"fitted on {model.report['train']['examples']} calls; held out {held['examples']} calls of "
          f"{held['episodes']} episodes: accuracy {held['accuracy']} (always guessing the majority: "
          f"{held['majority_accuracy']}), AUC {held['auc']}")
    return model.report


def _reachable(url: str, timeout_s: float) -> tuple[str, str]:
    try:
        response = httpx.get(url, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return WARN, f"{url} unreachable ({type(exc).__name__}): start it before a run"
    if response.status_code != 200:
        return WARN, f"{url} answered {response.status_code}"
    if url.endswith("/models"):
        try:
            names = [m.get("id") for m in response.json().get("data", [])]
        except (ValueError, AttributeError):
            names = []
        return OK, f"{url} answers; models: {', '.join(map(str, names)) or 'none listed'}"
    return OK, f"{url} answers"


def _port(url: str) -> int:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.port or (443 if parts.scheme == "https" else 80)
