"""A run of the Agent Lightning engine: its files prepared from the store (here, any machine), and
Agent Lightning's VERL trainer started on them (`python -m agentgym.trainer.lightning.launch
RUN_DIR`, on the training machine, with verl, vLLM and a GPU, beside `agl-server` and
`agl-controller`; see `agentgym train --engine lightning --dry-run` for the exact commands).

The run folder holds `replay.jsonl` (the recorded contexts answered with a tool call, one JSON object a line; each row's
`data_id` is its rollout input), `reward_model.npz` (with its held-out agreement), `split.json`
(which contexts train and which validate) and `verl_overrides.yaml` (what `verl_config` made).
"""

from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import yaml

from agentgym.config import Settings
from agentgym.store.queries import Scope
from agentgym.store.schema import open_store
from agentgym.trainer.encoder import shared_encoder
from agentgym.trainer.lightning import last_fit
from agentgym.trainer.lightning.contexts import read_contexts, replayable
from agentgym.trainer.lightning.reward_model import fit
from agentgym.trainer.lightning.verl_config import REPLAY_FILE, REWARD_MODEL_FILE, verl_config
from agentgym.trainer.registry import default_dir

OVERRIDES_FILE = "verl_overrides.yaml"
SPLIT_FILE = "split.json"


def prepare(settings: Settings, run_dir: Path) -> dict[str, Any]:
    """Write the run's files; what was written, with the reward model's report."""
    from agentgym.trainer.rounds import held_out_for_gate

    overrides = verl_config(settings.lightning, run_dir)
    with closing(open_store(settings.store.path, read_only=True)) as con:
        contexts = read_contexts(con, Scope.configured(settings.episodes))
    model = fit(contexts, shared_encoder(), settings.lightning.reward_model)
    contexts = replayable(contexts)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / REPLAY_FILE).open("wb") as out:
        for context in contexts:
            out.write(orjson.dumps(context.replay_row()) + b"\n")
    seed = settings.lightning.reward_model.seed
    split = {"train": [c.inference_id for c in contexts if not held_out_for_gate(c.episode_id, seed)],
             "val": [c.inference_id for c in contexts if held_out_for_gate(c.episode_id, seed)]}
    (run_dir / SPLIT_FILE).write_bytes(orjson.dumps(split))
    model.save(run_dir / REWARD_MODEL_FILE)
    last_fit.save(settings.planner.policies_dir or default_dir(settings.store.path), model.report,
                  by="agentgym train --engine lightning")
    (run_dir / OVERRIDES_FILE).write_text(yaml.safe_dump(overrides, sort_keys=False))
    return {"run_dir": str(run_dir.absolute()), "contexts": len(contexts), "train": len(split["train"]),
            "val": len(split["val"]), "reward_model": model.report}


def launch(run_dir: Path) -> None:
    """Agent Lightning's VERL trainer on a prepared run folder (needs verl, vLLM, a GPU)."""
    import importlib.resources

    from agentlightning.verl.entrypoint import run_ppo
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(importlib.resources.files("agentlightning.verl")), version_base=None):
        base = compose(config_name="config")
    OmegaConf.set_struct(base, False)
    config = OmegaConf.merge(base, OmegaConf.create(yaml.safe_load((run_dir / OVERRIDES_FILE).read_text())))
    split = orjson.loads((run_dir / SPLIT_FILE).read_bytes())
    rows = [{"data_id": r["data_id"], "episode_id": r["episode_id"]}
            for r in map(orjson.loads, (run_dir / REPLAY_FILE).read_bytes().splitlines())]
    by_id = {r["data_id"]: r for r in rows}
    run_ppo(config, train_dataset=[by_id[i] for i in split["train"]], val_dataset=[by_id[i] for i in split["val"]])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m agentgym.trainer.lightning.launch RUN_DIR")
    launch(Path(sys.argv[1]))
