"""docker/: what can be checked without Docker (no daemon here). The compose file's wiring (the
proxy's port, Prometheus's target, Grafana's datasource and dashboard mounts) agrees with itself
and with the files it mounts; every agentgym command it and the Dockerfile run is one the CLI
takes; and its agentgym services, run here as processes with their own commands and
configuration (addresses rewritten to loopback), serve what Prometheus would scrape. Building
the image and starting the containers is not tested."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from agentgym.cli import app
from agentgym.config import load_settings
from agentgym.scenarios import local_stack

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"
COMPOSE = yaml.safe_load((DOCKER / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]


def mounts(service: str) -> dict[str, Path]:
    """A service's bind mounts: container path -> the path here (named volumes left out)."""
    found = {}
    for volume in SERVICES[service].get("volumes", ()):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            found[target] = (DOCKER / source).resolve()
    return found


def default(value: str) -> str:
    """A compose `${NAME:-default}` as it reads with NAME unset."""
    matched = re.fullmatch(r"\$\{\w+:-(.*)\}", value)
    return matched.group(1) if matched else value


def proxy_settings():
    return load_settings(mounts("proxy")[SERVICES["proxy"]["command"][3]])  # serve --config PATH


def test_the_compose_file_wires_prometheus_to_the_proxy_and_grafana_to_prometheus_and_the_dashboard():
    assert set(SERVICES) == {"model", "proxy", "trainer", "agents", "prometheus", "grafana"}
    settings = proxy_settings()
    port = settings.server.port
    assert settings.server.host == "0.0.0.0" and f"{port}:{port}" in SERVICES["proxy"]["ports"]
    assert default(SERVICES["proxy"]["environment"]["AGENTGYM_UPSTREAM__URL"]) == settings.upstream.url
    model_command = SERVICES["model"]["command"]
    assert settings.upstream.url == f"http://model:{model_command[model_command.index('--port') + 1]}/v1"

    prometheus = yaml.safe_load(mounts("prometheus")["/etc/prometheus/prometheus.yml"].read_text())
    [job] = prometheus["scrape_configs"]
    assert job["metrics_path"] == "/metrics" and job["static_configs"] == [{"targets": [f"proxy:{port}"]}]

    provisioning = mounts("grafana")["/etc/grafana/provisioning"]
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "9090:9090" in SERVICES["prometheus"]["ports"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "agentgym.yaml").read_text())["providers"]
    dashboards = mounts("grafana")[provider["options"]["path"]]
    assert dashboards == ROOT / "agentgym" / "dashboards" / "grafana" and (dashboards / "agentgym.json").is_file()
    home = SERVICES["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).relative_to(provider["options"]["path"])).is_file()

    # the trainer asks the proxy holding the store to run its rounds: it must see its process and address
    trainer = SERVICES["trainer"]
    assert trainer["network_mode"] == trainer["pid"] == "service:proxy"
    assert trainer["volumes"] == SERVICES["proxy"]["volumes"]


def test_the_dockerfile_builds_from_files_that_exist_with_an_extra_that_exists():
    build = SERVICES["proxy"]["build"]
    context = (DOCKER / build["context"]).resolve()
    dockerfile = (context / build["dockerfile"]).read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (context / source).exists(), source
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "'.[wandb]'" in dockerfile and "wandb" in extras
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def _commands() -> list[list[str]]:
    commands = [s["command"] for s in SERVICES.values() if s.get("command", [None])[0] == "agentgym"]
    cmd = next(line for line in (DOCKER / "Dockerfile").read_text().splitlines() if line.startswith("CMD "))
    return [*commands, yaml.safe_load(cmd[4:])]


def test_every_agentgym_command_in_the_compose_file_and_the_dockerfile_is_one_the_cli_takes():
    commands = _commands()
    assert len(commands) == 5
    runner = CliRunner()
    for command in commands:
        result = runner.invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, f"{shlex.join(command)}: {result.output}"


def _here(args: list[str], ports: dict[str, int], db: Path) -> list[str]:
    """A service's command with container paths and addresses turned into this machine's."""
    paths = {**mounts("proxy"), "/data/agentgym.duckdb": db}
    text = shlex.join(args)
    for name, port in ports.items():
        text = re.sub(rf"\b{name}:\d+", f"127.0.0.1:{port}", text)
    return [str(paths.get(arg, arg)) for arg in shlex.split(text)]


def _scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(url, timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.timeout(240)
def test_the_compose_services_run_here_as_processes_and_the_proxy_serves_what_prometheus_scrapes(logs, tmp_path):
    settings = proxy_settings()
    ports = {"model": local_stack.free_port(), "proxy": local_stack.free_port()}
    db = tmp_path / "agentgym.duckdb"
    model_args = _here(SERVICES["model"]["command"], ports, db)
    model_args[model_args.index("--host") + 1] = "127.0.0.1"
    model_args[model_args.index("--port") + 1] = str(ports["model"])
    model = local_stack.start("model", model_args[1:], port=ports["model"], ready_path="/v1/models", log_dir=logs)
    env = {"AGENTGYM_UPSTREAM__URL": _here([default(SERVICES["proxy"]["environment"]["AGENTGYM_UPSTREAM__URL"])],
                                           ports, db)[0],
           "AGENTGYM_SERVER__HOST": "127.0.0.1", "AGENTGYM_SERVER__PORT": str(ports["proxy"])}
    assert env["AGENTGYM_UPSTREAM__URL"] == f"http://127.0.0.1:{ports['model']}/v1"
    proxy = local_stack.start("proxy", _here(SERVICES["proxy"]["command"], ports, db)[1:], port=ports["proxy"],
                              ready_path="/readyz", log_dir=logs, env=env)
    trainer = subprocess.Popen([sys.executable, "-m", *_here(SERVICES["trainer"]["command"], ports, db)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        metrics = f"http://127.0.0.1:{ports['proxy']}/metrics"
        deadline = time.monotonic() + 90
        while _scrape(metrics)[("agentgym_trainer_rounds_total", frozenset({("result", "registered")}))] < 1:
            assert trainer.poll() is None and time.monotonic() < deadline, "the trainer's first round never ran"
            time.sleep(0.5)
        agents = _here(SERVICES["agents"]["command"], ports, db)
        agents[agents.index("--episodes") + 1] = "6"
        done = subprocess.run([sys.executable, "-m", *agents], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "6 episodes" in done.stdout, done.stdout + done.stderr
        scraped = _scrape(metrics)
        assert sum(v for (name, _), v in scraped.items() if name == "agentgym_policy_episodes_total") == 6
        assert scraped[("agentgym_policy_serving", frozenset({("role", "live"), ("version", "v1")}))] == 1
        assert settings.store.path == Path("/data/agentgym.duckdb") and db.exists()
    finally:
        trainer.send_signal(signal.SIGTERM)  # what `docker compose stop` sends (a shell's background job ignores SIGINT)
        trainer_log = trainer.communicate(timeout=30)[0]
        assert proxy.stop(), proxy.log()
        model.stop()
    assert trainer.returncode == 0 and "Traceback" not in trainer_log, trainer_log
