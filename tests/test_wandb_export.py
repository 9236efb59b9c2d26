"""`agentgym train --once` on a store no server holds exports its round to W&B (the real `wandb`,
offline); with W&B failing (no key for an online run) the round goes on all the same. The
proxy's own rounds reaching its W&B run is in test_metrics.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from wandb_records import history_rows, run_record

from agentgym.store.schema import open_store
from agentgym.trainer.registry import Registry, default_dir


def _train_once(db: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    open_store(db).close()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return subprocess.run([sys.executable, "-m", "agentgym", "train", "--once", "--db", str(db)],
                          capture_output=True, text=True, timeout=180, env={**clean, "WANDB_SILENT": "true", **env})


def test_a_round_on_the_store_file_is_logged_to_the_configured_wandb_project(tmp_path):
    done = _train_once(tmp_path / "store.duckdb", {
        "AGENTGYM_TRAINER__WANDB__PROJECT": "agentgym-cli-test", "AGENTGYM_TRAINER__WANDB__TAGS": '["nightly"]',
        "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "registered" and result["version"] == "v1"  # the first version, zero-shot
    [run_file] = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    run = run_record(run_file)
    assert (run.project, list(run.tags), run.job_type) == ("agentgym-cli-test", ["nightly"], "agentgym-trainer")
    [row] = history_rows(run_file)
    assert (row["round/status"], row["round/version"], row["round/registered"]) == ("registered", 1, 1)
    assert row["round/seconds"] > 0 and not any(key.startswith(("training/", "gate/")) for key in row)


def test_wandb_failing_never_fails_the_round(tmp_path):
    """An online run with no API key: wandb.init raises; the round is registered and the failure logged."""
    db = tmp_path / "store.duckdb"
    done = _train_once(db, {"WANDB_PROJECT": "agentgym-cli-test", "WANDB_MODE": "online",
                            "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_DIR": str(tmp_path),
                            "WANDB_CONFIG_DIR": str(tmp_path / "config"), "NETRC": str(tmp_path / "netrc")})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "registered"
    assert "exporting a training round to W&B failed" in done.stderr
    assert Registry(default_dir(db)).index().live == "v1"
