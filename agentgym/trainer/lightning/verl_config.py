"""The VERL configuration AgentGym hands to Agent Lightning's trainer.

Agent Lightning 1.x trains with verl's PPO trainer under its own Hydra configuration
(`agentlightning/verl/config.yaml`, which extends verl's `ppo_trainer` and adds the
`agentlightning:` group); `agentlightning.verl.entrypoint.run_ppo(config, train_dataset,
val_dataset)` runs it. AgentGym sets only what follows and leaves every other key at Agent
Lightning's and verl's defaults. For `lightning.planner_model: Qwen/Qwen2.5-1.5B-Instruct`, the
other `lightning:` settings at their defaults, and the run's files in `/srv/agentgym/run`, it is
exactly (`tests/test_lightning.py` checks it):

```yaml
algorithm:
  adv_estimator: grpo                   # group-relative advantages over the n rollouts of a context
  norm_adv_by_std_in_grpo: true
  use_kl_in_reward: false
  enable_rollout_level_advantage: true  # one advantage per rollout, broadcast to every turn of it
data:
  train_batch_size: 8
  max_prompt_length: 4096
  max_response_length: 512
actor_rollout_ref:
  model:
    path: Qwen/Qwen2.5-1.5B-Instruct
    use_remove_padding: true
    enable_gradient_checkpointing: true
  actor:
    ppo_mini_batch_size: 8
    ppo_micro_batch_size_per_gpu: 1
    optim:
      lr: 1.0e-06
    use_kl_loss: false
    kl_loss_coef: 0.0
    entropy_coeff: 0.0
    clip_ratio_low: 0.2
    clip_ratio_high: 0.28
    policy_loss:
      loss_mode: per_rollout_mean       # each rollout weighs the same however many turns it has
  rollout:
    name: vllm
    n: 4                                # GRPO's group: rollouts per recorded context
    tensor_model_parallel_size: 1
    gpu_memory_utilization: 0.6
    log_prob_micro_batch_size_per_gpu: 1
    multi_turn:
      format: hermes
  ref:
    log_prob_micro_batch_size_per_gpu: 1
trainer:
  project_name: agentgym
  experiment_name: planner
  logger:
  - console
  n_gpus_per_node: 1
  nnodes: 1
  total_epochs: 2
  val_before_train: false
  critic_warmup: 0
  test_freq: 10
  save_freq: 10
  default_local_dir: /srv/agentgym/run/lightning-checkpoints
agentlightning:
  agl_base_url: http://127.0.0.1:8181
  agl_key: ${oc.env:AGL_KEY,""}         # read from the environment when the trainer starts; never written
  rollout_timeout_seconds: 300
  reward_fillna_value: 0.0
  max_ppo_update_times: 2
  trace_aggregator:
    level: trajectory
    trajectory_max_prompt_length: 4096
    trajectory_max_response_length: 512
  local:
    agent_class: agentgym.trainer.lightning.replay_agent.ReplayAgent
    env_map:
      AGENTGYM_REPLAY_ID: input.data_id
      AGENTGYM_REPLAY_FILE: /srv/agentgym/run/replay.jsonl
      AGENTGYM_REWARD_MODEL: /srv/agentgym/run/reward_model.npz
```

The rollout-level advantage, the per-rollout loss and the trace aggregator are Agent
Lightning's (`agentlightning.verl.rollout_level_advantage`, `.per_rollout_loss`,
`.rollout_adapter`); AgentGym only turns them on. The names in issue 6 are the real 1.x names,
with one correction: `trace_aggregator` lives at `agentlightning.trace_aggregator.level`
(`transition` or `trajectory`), not under `actor_rollout_ref.rollout` as in 0.x.

`check_against_agent_lightning` compares the `agentlightning:` keys set here with the
installed package's `config.yaml`, so a key the installed version does not know is an error
before a GPU is ever reserved; verl's own keys are checked by verl when it composes the
configuration on the training machine.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Any

from agentgym.config import LightningConfig

REPLAY_AGENT = "agentgym.trainer.lightning.replay_agent.ReplayAgent"
REPLAY_FILE = "replay.jsonl"
REWARD_MODEL_FILE = "reward_model.npz"


def verl_config(lightning: LightningConfig, run_dir: Path) -> dict[str, Any]:
    """The overrides AgentGym merges onto Agent Lightning's VERL configuration; `run_dir` (made
    absolute: the controller's agents run elsewhere) holds the replay dataset, the reward model
    and the checkpoints."""
    verl = lightning.verl
    model_path = verl.model_path or lightning.planner_model
    if not model_path:
        raise ValueError("lightning.planner_model (or lightning.verl.model_path) is not set: "
                         "name the planner model VERL is to train")
    run_dir = run_dir.absolute()
    return {
        "algorithm": {
            "adv_estimator": "grpo",
            "norm_adv_by_std_in_grpo": True,
            "use_kl_in_reward": False,
            "enable_rollout_level_advantage": True,
        },
        "data": {
            "train_batch_size": verl.train_batch_size,
            "max_prompt_length": verl.max_prompt_length,
            "max_response_length": verl.max_response_length,
        },
        "actor_rollout_ref": {
            "model": {"path": model_path, "use_remove_padding": True, "enable_gradient_checkpointing": True},
            "actor": {
                "ppo_mini_batch_size": verl.ppo_mini_batch_size,
                "ppo_micro_batch_size_per_gpu": 1,
                "optim": {"lr": verl.learning_rate},
                "use_kl_loss": False,
                "kl_loss_coef": 0.0,
                "entropy_coeff": 0.0,
                "clip_ratio_low": 0.2,
                "clip_ratio_high": 0.28,
                "policy_loss": {"loss_mode": "per_rollout_mean"},
            },
            "rollout": {
                "name": "vllm",
                "n": verl.rollouts_per_context,
                "tensor_model_parallel_size": 1,
                "gpu_memory_utilization": verl.gpu_memory_utilization,
                "log_prob_micro_batch_size_per_gpu": 1,
                "multi_turn": {"format": "hermes"},
            },
            "ref": {"log_prob_micro_batch_size_per_gpu": 1},
        },
        "trainer": {
            "project_name": "agentgym",
            "experiment_name": "planner",
            "logger": ["console"],
            "n_gpus_per_node": verl.n_gpus_per_node,
            "nnodes": verl.nnodes,
            "total_epochs": verl.total_epochs,
            "val_before_train": False,
            "critic_warmup": 0,
            "test_freq": 10,
            "save_freq": 10,
            "default_local_dir": str(run_dir / verl.checkpoint_dir)
            if not verl.checkpoint_dir.is_absolute() else str(verl.checkpoint_dir),
        },
        "agentlightning": {
            "agl_base_url": lightning.server_url,
            "agl_key": f'${{oc.env:{lightning.key_env},""}}',
            "rollout_timeout_seconds": verl.rollout_timeout_s,
            "reward_fillna_value": 0.0,
            "max_ppo_update_times": verl.max_ppo_update_times,
            "trace_aggregator": {
                "level": verl.trace_aggregator,
                "trajectory_max_prompt_length": verl.max_prompt_length,
                "trajectory_max_response_length": verl.max_response_length,
            },
            "local": {
                "agent_class": REPLAY_AGENT,
                "env_map": {
                    "AGENTGYM_REPLAY_ID": "input.data_id",
                    "AGENTGYM_REPLAY_FILE": str(run_dir / REPLAY_FILE),
                    "AGENTGYM_REWARD_MODEL": str(run_dir / REWARD_MODEL_FILE),
                },
            },
        },
    }


def agent_lightning_defaults() -> dict[str, Any]:
    """The installed Agent Lightning's own VERL configuration (`agentlightning/verl/config.yaml`),
    without its Hydra composition keys (verl's `ppo_trainer` is not needed to read it)."""
    import yaml

    text = importlib.resources.files("agentlightning.verl").joinpath("config.yaml").read_text()
    raw = yaml.safe_load(text)
    return {k: v for k, v in raw.items() if k not in ("hydra", "defaults")}


def check_against_agent_lightning(overrides: dict[str, Any]) -> list[str]:
    """Keys AgentGym sets under `agentlightning:` that the installed Agent Lightning does not
    define (problems, as sentences; empty when all are known), and that Agent Lightning's own
    choices AgentGym relies on are still its defaults' names."""
    defaults = agent_lightning_defaults()
    problems = [f"agentlightning.{key}: not a key of the installed Agent Lightning's VERL configuration"
                for key in _unknown(overrides.get("agentlightning", {}), defaults.get("agentlightning", {}))]
    loss = defaults.get("actor_rollout_ref", {}).get("actor", {}).get("policy_loss", {}).get("loss_mode")
    if loss != "per_rollout_mean":
        problems.append(f"the installed Agent Lightning's default loss_mode is {loss!r}, not per_rollout_mean")
    if "enable_rollout_level_advantage" not in defaults.get("algorithm", {}):
        problems.append("the installed Agent Lightning does not define algorithm.enable_rollout_level_advantage")
    return problems


def _unknown(ours: dict[str, Any], theirs: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in ours.items():
        if key not in theirs:
            out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(theirs[key], dict) and theirs[key]:
            out.extend(_unknown(value, theirs[key], f"{prefix}{key}."))
    return out
