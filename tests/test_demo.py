"""`agentgym demo`: the embedded default runs with no keys and no network and leaves a store to report on."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers import report_json


def test_the_demo_runs_and_its_store_reports(tmp_path):
    db = tmp_path / "demo.duckdb"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | {"COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "agentgym", "demo", "--episodes", "8", "--seed", "3", "--db", str(db)],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "By tool" in result.stdout and f"agentgym report --db {db}" in result.stdout
    report = report_json(str(db))
    assert report["episodes"]["total"] == 8 and report["episodes"]["finished"] == 8
    assert report["tool_calls"]["total"] >= 8 and report["tool_calls"]["unknown"] == 0
    assert report["episodes"]["success"] + report["episodes"]["failure"] == 8
