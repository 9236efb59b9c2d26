"""The `agentgym` command line. Heavy imports stay inside the commands so `--help` is instant."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

# litellm fetches its price map from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False, help="Learn which tools your agents should use.")
scenarios_app = typer.Typer(no_args_is_help=True, help="The scenario library and its simulated model.")
app.add_typer(scenarios_app, name="scenarios")
console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="agentgym.yaml (default: $AGENTGYM_CONFIG or ./agentgym.yaml)")]
DbOption = Annotated[Path | None, typer.Option("--db", help="the DuckDB store file (default: store.path in the config)")]


class ReportFormat(StrEnum):
    table = "table"
    json = "json"


def _given(overrides: dict[str, Any]) -> dict[str, Any]:
    """Only the options the user gave (typer passes None for the others), nested as in Settings."""
    nested = {k: _given(v) if isinstance(v, dict) else v for k, v in overrides.items()}
    return {k: v for k, v in nested.items() if v not in (None, {})}


def _settings(config: Path | None, **overrides: Any):
    from pydantic import ValidationError

    from agentgym.config import load_settings

    try:
        return load_settings(config, **_given(overrides))
    except (ValidationError, FileNotFoundError) as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="address to listen on")] = None,
    port: Annotated[int | None, typer.Option(help="port to listen on")] = None,
    upstream: Annotated[str | None, typer.Option(help="OpenAI-compatible upstream base URL, e.g. https://api.openai.com/v1")] = None,
    db: DbOption = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Run the proxy: point OPENAI_BASE_URL at http://HOST:PORT/v1."""
    import uvicorn

    from agentgym.proxy.app import create_app

    settings = _settings(
        config,
        server={"host": host, "port": port},
        upstream={"url": upstream},
        store={"path": db},
    )
    url = f"http://{settings.server.host}:{settings.server.port}"
    err.print(
        f"AgentGym proxy on [bold]{url}/v1[/bold] -> {settings.upstream.url}; store {settings.store.path}"
    )
    uvicorn.run(
        create_app(settings, public_url=url),
        host=settings.server.host,
        port=settings.server.port,
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def parse_since(value: str | None) -> datetime | None:
    """An ISO timestamp, or an age such as 30m, 6h, 2d."""
    if not value:
        return None
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    if value[:-1].isdigit() and value[-1] in units:
        return datetime.now(UTC) - timedelta(**{units[value[-1]]: int(value[:-1])})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is neither an ISO time nor an age like 30m, 6h, 2d") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@app.command()
def report(
    config: ConfigOption = None,
    db: DbOption = None,
    since: Annotated[str | None, typer.Option(help="only traffic since this ISO time or age (30m, 6h, 2d)")] = None,
    window: Annotated[int, typer.Option(min=1, help="finished episodes per timeline window")] = 100,
    format: Annotated[ReportFormat, typer.Option("--format", help="table or json")] = ReportFormat.table,
) -> None:
    """Tool reliability and cost, per tool, model, policy and over time. Works while `serve` runs."""
    from agentgym.dashboards.report import print_tables
    from agentgym.dashboards.report_source import ReportError, fetch_report

    settings = _settings(config, store={"path": db})
    try:
        data = fetch_report(settings, since=parse_since(since), window=window)
    except ReportError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if format is ReportFormat.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        print_tables(data, console)


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(help="scenario name, file, or module:Class (see `agentgym scenarios list`)")] = "customer_support",
    episodes: Annotated[int, typer.Option(min=1, help="agent episodes to run")] = 300,
    seed: Annotated[int, typer.Option(help="seed for tasks and the simulated model")] = 0,
    db: Annotated[Path, typer.Option(help="store file, kept for `agentgym report --db` afterwards")] = Path("agentgym-demo.duckdb"),
    port: Annotated[int, typer.Option(help="proxy port (0: any free port)")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="agents running at once")] = 8,
) -> None:
    """The embedded default: a scenario's agents through the proxy, simulated model, no keys, no network."""
    from agentgym.scenarios.demo import run_demo

    run_demo(scenario=_scenario(scenario), episodes=episodes, seed=seed, db=db, port=port, concurrency=concurrency,
             console=console)


@scenarios_app.command("list")
def scenarios_list(
    format: Annotated[ReportFormat, typer.Option("--format", help="table or json")] = ReportFormat.table,
) -> None:
    """The scenario library (built-in, and files in $AGENTGYM_SCENARIOS)."""
    from rich.table import Table

    from agentgym.scenarios.scenario import scenario_files

    rows = []
    for name, path in scenario_files().items():
        try:
            rows.append({**_scenario(name).summary(), "file": str(path)})
        except typer.Exit:
            rows.append({"name": name, "error": "does not load (see `agentgym scenarios show`)", "file": str(path)})
    if format is ReportFormat.json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="Scenarios")
    for column in ("name", "title", "tools", "tasks", "steps/task", "source"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row.get("title", row.get("error", "")), str(row.get("tools", "")),
                      str(row.get("tasks", "")), str(row.get("steps_per_task", "")), str(row.get("source", ""))[:60])
    console.print(table)


@scenarios_app.command("show")
def scenarios_show(
    name: Annotated[str, typer.Argument(help="scenario name, file, or module:Class")],
    format: Annotated[ReportFormat, typer.Option("--format", help="table or json")] = ReportFormat.table,
) -> None:
    """A scenario's tools, reward rule, success metrics, training defaults and simulator knobs."""
    from rich.table import Table

    scenario = _scenario(name)
    if format is ReportFormat.json:
        print(scenario.model_dump_json(indent=2, exclude={"tasks"}))
        return
    console.print(f"[bold]{scenario.title}[/bold] ({scenario.name})\n{scenario.description}\n[dim]{scenario.source}[/dim]")
    tools = Table(title=f"{len(scenario.tools)} tools")
    tools.add_column("tool")
    tools.add_column("description")
    for tool in scenario.tools:
        tools.add_row(tool["function"]["name"], tool["function"].get("description", "")[:110])
    console.print(tools)
    for title, section in (("reward", scenario.reward), ("training", scenario.training), ("simulator", scenario.simulator)):
        console.print(f"[bold]{title}[/bold]: " + ", ".join(f"{k}={v}" for k, v in section.model_dump().items()))
    if scenario.outcomes is not None:
        console.print("[bold]proxy outcome rules[/bold]: " + scenario.outcomes.model_dump_json(exclude_defaults=True))
    console.print(f"[bold]metrics[/bold]: {', '.join(scenario.metrics)}")
    console.print(f"[bold]{len(scenario.tasks)} tasks[/bold], e.g.:")
    for task in scenario.tasks[:3]:
        console.print(f"  - {task.user}  [dim]({' -> '.join(s.tool for s in task.steps) or 'no tool'})[/dim]")


@scenarios_app.command("serve-model")
def serve_model(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8090,
    scenario: Annotated[str | None, typer.Option(help="take the model's knobs from this scenario's `simulator:`")] = None,
    seed: Annotated[int, typer.Option(help="the model's sampling seed")] = 0,
    knob: Annotated[list[str] | None, typer.Option(help="override a knob: NAME=VALUE (see `scenarios show`)")] = None,
) -> None:
    """Run the simulated upstream model (OpenAI-compatible, no weights, no network)."""
    import uvicorn
    from pydantic import ValidationError

    from agentgym.scenarios.model_server import create_model_app
    from agentgym.scenarios.simulated_model import ModelKnobs

    base = _scenario(scenario).simulator.model_dump() if scenario else {}
    try:
        knobs = ModelKnobs.model_validate({**base, **dict(item.split("=", 1) for item in knob or ())})
    except (ValidationError, ValueError) as exc:
        err.print(f"[red]bad --knob:[/red] {exc}")
        raise typer.Exit(2) from exc
    err.print(f"simulated model on http://{host}:{port}/v1 ({knobs.model_dump()})")
    uvicorn.run(create_model_app(knobs, seed), host=host, port=port, log_level="warning", access_log=False)


def _scenario(name: str):
    from pydantic import ValidationError

    from agentgym.scenarios.scenario import load_scenario

    try:
        return load_scenario(name)
    except (KeyError, FileNotFoundError, ValidationError, TypeError, ImportError) as exc:
        err.print(f"[red]scenario {name!r}:[/red] {exc}")
        raise typer.Exit(2) from exc


if __name__ == "__main__":
    app()
