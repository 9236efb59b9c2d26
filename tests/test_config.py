"""agentgym.yaml, AGENTGYM_* overrides, command-line flags, and clear errors for bad configuration."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from pydantic import BaseModel

from agentgym.config import Settings, load_settings


def test_flags_beat_environment_beats_file_beats_defaults(tmp_path, monkeypatch):
    config = tmp_path / "agentgym.yaml"
    config.write_text(
        "upstream:\n  url: http://file.example/v1\n  timeout_s: 30\n"
        "store:\n  path: from-file.duckdb\n"
        "outcomes:\n  error_keys: [problem]\n"
    )
    monkeypatch.setenv("AGENTGYM_UPSTREAM__TIMEOUT_S", "12.5")
    monkeypatch.setenv("AGENTGYM_SERVER__PROXY_KEYS", '["k1", "k2"]')
    settings = load_settings(config, store={"path": "from-flag.duckdb"})
    assert settings.upstream.url == "http://file.example/v1"
    assert settings.upstream.timeout_s == 12.5
    assert str(settings.store.path) == "from-flag.duckdb"
    assert settings.server.proxy_keys == ["k1", "k2"]
    assert settings.outcomes.error_keys == ["problem"]
    assert settings.server.port == 8080  # default


def test_config_file_from_the_environment_and_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "agentgym.yaml").write_text("server:\n  port: 9999\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().server.port == 9999
    other = tmp_path / "other.yaml"
    other.write_text("server:\n  port: 7777\n")
    monkeypatch.setenv("AGENTGYM_CONFIG", str(other))
    assert load_settings().server.port == 7777


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentgym", "serve", *args], capture_output=True, text=True, timeout=60)


def test_bad_configuration_is_refused_before_serving(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("upstream:\n  urll: http://x/v1\n")
    result = _serve("--config", str(typo))
    assert result.returncode == 2 and "urll" in result.stderr and "Extra inputs are not permitted" in result.stderr
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text("server:\n  port: lots\n")
    result = _serve("--config", str(wrong_type))
    assert result.returncode == 2 and "server.port" in result.stderr
    result = _serve("--config", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "config file not found" in result.stderr


def test_the_example_configuration_is_valid_and_shows_the_defaults():
    example = Path(__file__).parent.parent / "agentgym.example.yaml"
    assert load_settings(example).model_dump() == Settings().model_dump()


def test_the_example_configuration_lists_every_field():
    """The README sends users to agentgym.example.yaml for every field: none may be missing from it."""
    example = yaml.safe_load((Path(__file__).parent.parent / "agentgym.example.yaml").read_text())

    def missing(model: BaseModel, written: dict, path: str) -> list[str]:
        gaps = []
        for name in type(model).model_fields:
            if name not in written:
                gaps.append(path + name)
            elif isinstance(value := getattr(model, name), BaseModel):
                gaps += missing(value, written[name] or {}, f"{path}{name}.")
        return gaps

    assert missing(Settings(), example, "") == []
