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
policies_app = typer.Typer(no_args_is_help=True, help="The policy registry: versions, promotion, rollback.")
app.add_typer(policies_app, name="policies")
rollout_app = typer.Typer(no_args_is_help=True, help="Rollouts: what serves which share of episodes.")
app.add_typer(rollout_app, name="rollout")
console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", help="agentgym.yaml (default: $AGENTGYM_CONFIG or ./agentgym.yaml)")]
DbOption = Annotated[Path | None, typer.Option("--db", help="the DuckDB store file (default: store.path in the config)")]


class ReportFormat(StrEnum):
    table = "table"
    json = "json"


class ReportOutput(StrEnum):
    table = "table"
    json = "json"
    html = "html"


class Device(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


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
    import faulthandler

    import uvicorn

    faulthandler.enable()  # a fatal signal in native code (DuckDB, torch) leaves every thread's stack in the log

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
        timeout_keep_alive=settings.server.keep_alive_s,
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
    until: Annotated[str | None, typer.Option(help="only traffic before this ISO time or age")] = None,
    model: Annotated[str | None, typer.Option(help="only requests to this model")] = None,
    scenario: Annotated[str | None, typer.Option(help="only episodes whose feedback names this scenario "
                                                 '(its metadata\'s "scenario")')] = None,
    window: Annotated[int, typer.Option(min=1, help="finished episodes per timeline window")] = 100,
    format: Annotated[ReportOutput, typer.Option("--format", help="table, json, or html: one self-contained "
                                                 "page with the dashboard's charts")] = ReportOutput.table,
) -> None:
    """Tool reliability and cost, per tool, model, policy and over time. Works while `serve` runs."""
    from agentgym.dashboards.report import print_tables
    from agentgym.dashboards.report_source import ReportError, fetch_report
    from agentgym.store.queries import Scope

    settings = _settings(config, store={"path": db})
    scope = Scope.configured(settings.episodes, parse_since(since), until=parse_since(until), model=model,
                             scenario=scenario)
    try:
        data = fetch_report(settings, scope, window)
    except ReportError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if format is ReportOutput.json:
        print(json.dumps(data, indent=2, default=str))
    elif format is ReportOutput.html:
        from agentgym.dashboards.web import standalone

        print(standalone(data))
    else:
        print_tables(data, console)


@app.command()
def demo(
    scenario: Annotated[str, typer.Option(help="scenario name, file, or module:Class (see `agentgym scenarios list`)")] = "customer_support",
    episodes: Annotated[int, typer.Option(min=1, help="agent episodes to run")] = 1000,
    seed: Annotated[int, typer.Option(help="seed for tasks and the simulated model")] = 0,
    db: Annotated[Path, typer.Option(help="store file, kept for `agentgym report --db` afterwards")] = Path("agentgym-demo.duckdb"),
    port: Annotated[int, typer.Option(help="proxy port (0: any free port)")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="agents running at once")] = 8,
) -> None:
    """The embedded default: a scenario's agents through the proxy, simulated model, no keys, no network."""
    from agentgym.scenarios.demo import run_demo

    run_demo(scenario=_scenario(scenario), episodes=episodes, seed=seed, db=db, port=port, concurrency=concurrency,
             console=console)


class EngineName(StrEnum):
    torch = "torch"
    lightning = "lightning"


@app.command()
def train(
    config: ConfigOption = None,
    db: DbOption = None,
    once: Annotated[bool, typer.Option("--once", help="one round now, then exit")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="the rounds under a live terminal dashboard: tool "
                                        "reliability, tokens, cost, the policy in charge, the next round")] = False,
    rounds: Annotated[int | None, typer.Option(min=1, help="stop after this many rounds (default: until "
                                               "interrupted)")] = None,
    target: Annotated[float | None, typer.Option(min=0, max=1, help="with --watch: the tool success rate to "
                                                 "show reliability against (default 0.95)")] = None,
    device: Annotated[Device | None, typer.Option(help="where the engine trains (default: trainer.device)")] = None,
    engine: Annotated[EngineName, typer.Option(help="torch: the built-in engine for the default planner; "
                                               "lightning: Agent Lightning's VERL trainer for an LLM planner "
                                               "(the `lightning:` configuration)")] = EngineName.torch,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="with --engine lightning: check the whole "
                                          "configuration and print what would run; writes nothing")] = False,
    run_dir: Annotated[Path | None, typer.Option(help="with --engine lightning: the run's files (default: "
                                                 "the store's path + .lightning)")] = None,
    format: Annotated[ReportFormat, typer.Option("--format", help="--dry-run's output: table or json")] = ReportFormat.table,
) -> None:
    """Training rounds on what the proxy recorded: one (--once), or on the trainer's schedule.

    Works while `agentgym serve` holds the store: the round then runs inside that server.
    --watch shows the rounds with the terminal dashboard (as `agentgym demo` does).
    With --engine lightning, prepares an Agent Lightning run of an LLM planner (--dry-run: checks it)."""
    settings = _settings(config, store={"path": db}, trainer={"device": device.value if device else None})
    if engine is EngineName.lightning:
        _train_lightning(settings, run_dir, dry_run=dry_run, format=format)
        return
    if dry_run:
        err.print("[red]--dry-run is for --engine lightning; the torch engine's `--once` is already one round[/red]")
        raise typer.Exit(2)
    from agentgym.trainer.cli_rounds import RoundError, round_once, run_schedule

    try:
        if once:
            print(json.dumps(round_once(settings), indent=2, default=str))
        elif watch:
            from agentgym.dashboards.train_watch import watch as watch_rounds

            watch_rounds(settings, console, rounds=rounds, **_given({"target": target}))
        else:
            run_schedule(settings, lambda result: console.print_json(json.dumps(result, default=str)), rounds=rounds)
    except RoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc


def _train_lightning(settings: Any, run_dir: Path | None, *, dry_run: bool, format: ReportFormat) -> None:
    from agentgym.trainer.lightning.dry_run import default_run_dir
    from agentgym.trainer.lightning.dry_run import dry_run as check_run

    run_dir = run_dir or default_run_dir(settings.store.path)
    result = check_run(settings, run_dir)
    if not dry_run and result["ok"]:
        from agentgym.trainer.lightning.launch import prepare

        result["prepared"] = prepare(settings, run_dir)
    if format is ReportFormat.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_lightning(result, prepared=not dry_run)
    if not result["ok"]:
        raise typer.Exit(1)


def _print_lightning(result: dict[str, Any], *, prepared: bool) -> None:
    import yaml
    from rich.table import Table

    table = Table(title="Agent Lightning engine: checks")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    for c in result["checks"]:
        table.add_row(c["name"], f"[{colour[c['status']]}]{c['status']}[/]", c["detail"])
    console.print(table)
    if "verl_config" in result:
        console.print("[bold]VERL configuration[/bold] (merged onto Agent Lightning's agentlightning/verl/config.yaml):")
        console.print(yaml.safe_dump(result["verl_config"], sort_keys=False), markup=False, highlight=False)
    if not result["ok"]:
        console.print("[red]not ready: fix the failed checks above[/red]")
        return
    if prepared:
        console.print(f"[bold]prepared[/bold] {result['prepared']['run_dir']}")
    console.print(("[bold]to train[/bold], on the training machine (verl, vLLM, a GPU):" if prepared else
                   f"[bold]would run[/bold] (after `agentgym train --engine lightning` prepares {result['run_dir']}), "
                   "on the training machine (verl, vLLM, a GPU):"))
    for command in result["commands"]:
        console.print(f"  {command}", markup=False, highlight=False)


def _person() -> str:
    """Who a change from this command line is recorded as made by."""
    from agentgym.trainer.by_hand import made_by

    return made_by("cli", os.environ.get("USER", "unknown"))


def _registry(config: Path | None, db: Path | None):
    from agentgym.trainer.registry import Registry, default_dir

    settings = _settings(config, store={"path": db})
    return Registry(settings.planner.policies_dir or default_dir(settings.store.path))


@policies_app.command("list")
def policies_list(
    config: ConfigOption = None,
    db: DbOption = None,
    format: Annotated[ReportFormat, typer.Option("--format", help="table or json")] = ReportFormat.table,
) -> None:
    """Every version: status, parent, training and gate figures."""
    from rich.table import Table

    index = _registry(config, db).index()
    if format is ReportFormat.json:
        print(index.model_dump_json(indent=2))
        return
    canary = f", canary: {index.canary.version} at {index.canary.percent:g}%" if index.canary else ""
    table = Table(title=f"policies (live: {index.live or 'none'}{canary})")
    for column in ("version", "status", "parent", "engine", "created", "decisions", "gate estimate", "gate ci95"):
        table.add_column(column)
    for v in index.versions.values():
        table.add_row(v.version, v.status, v.parent or "-", v.engine,
                      datetime.fromtimestamp(v.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                      str(v.training.get("decisions", "-")), str(v.gate.get("difference", "-")),
                      str(v.gate.get("ci95", "-")))
    console.print(table)


@policies_app.command("show")
def policies_show(version: str, config: ConfigOption = None, db: DbOption = None) -> None:
    """One version's metadata, history included."""
    found = _registry(config, db).index().versions.get(version)
    if found is None:
        err.print(f"[red]no policy version {version!r}[/red]")
        raise typer.Exit(1)
    print(found.model_dump_json(indent=2))


@policies_app.command("promote")
def policies_promote(
    version: str,
    config: ConfigOption = None,
    db: DbOption = None,
    canary: Annotated[float | None, typer.Option(help="serve VERSION to this percentage of episodes beside the live "
                                                       "one, instead of making it live")] = None,
    reason: Annotated[str, typer.Option(help="recorded with the change")] = "manual promotion",
) -> None:
    """Make VERSION live now (a manual override), or with --canary PCT start a canary of it; a
    running proxy follows within seconds."""
    from agentgym.trainer.by_hand import promote

    registry = _registry(config, db)
    try:
        promote(registry, version, canary=canary, by=_person(), reason=reason)
    except (KeyError, ValueError) as exc:  # CorruptPolicy is a ValueError
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    if canary is None:
        console.print(f"{version} is live")
    else:
        console.print(f"{version} serves {canary:g}% of episodes; {registry.index().live or 'no policy'} the rest")


@policies_app.command("shadow")
def policies_shadow(
    version: str,
    config: ConfigOption = None,
    db: DbOption = None,
    reason: Annotated[str, typer.Option(help="recorded with the change")] = "manual shadow",
) -> None:
    """Let VERSION score every request beside the serving versions, recorded (arm "shadow") and
    never applied; `policies rollback` ends it."""
    try:
        _registry(config, db).start_shadow(version, by=_person(), reason=reason)
    except (KeyError, ValueError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"{version} scores every request in shadow")


@policies_app.command("register-llm")
def policies_register_llm(
    model: Annotated[str, typer.Argument(help="the planner model as its server serves it (vLLM served name or "
                                              "LoRA adapter)")],
    server: Annotated[str, typer.Option(help="the OpenAI-compatible server serving MODEL, e.g. "
                                             "http://127.0.0.1:8000/v1")],
    config: ConfigOption = None,
    db: DbOption = None,
    parent: Annotated[str | None, typer.Option(help="the version it was trained from")] = None,
) -> None:
    """Register an LLM planner (engine "lightning", e.g. weights Agent Lightning's VERL run produced and a
    server now serves) as a candidate version; promote, shadow or canary it like any other."""
    from pydantic import ValidationError

    from agentgym.trainer.registry import LlmSpec

    try:
        spec = LlmSpec(model=model, server=server)
    except ValidationError as exc:
        err.print(f"[red]{'; '.join(e['msg'].removeprefix('Value error, ') for e in exc.errors())}[/red]")
        raise typer.Exit(1) from exc
    registry = _registry(config, db)
    if parent is not None and parent not in registry.index().versions:
        err.print(f"[red]no policy version {parent!r}[/red]")
        raise typer.Exit(1)
    version = registry.register_llm(spec, parent=parent, training={"engine": "lightning", "by": _person()}, gate={})
    console.print(f"{version.version}: {model} at {spec.server} (candidate)")


@policies_app.command("rollback")
def policies_rollback(
    config: ConfigOption = None,
    db: DbOption = None,
    reason: Annotated[str, typer.Option(help="recorded with the change")] = "manual rollback",
) -> None:
    """End the running canary, else the shadow; with neither, back to the version that was live
    before the current one (or to none)."""
    try:
        back = _registry(config, db).rollback(by=_person(), reason=reason)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    console.print(f"{back.version} is live" if back else "no policy is live: requests pass unchanged")


@rollout_app.command("status")
def rollout_status(config: ConfigOption = None, db: DbOption = None) -> None:
    """What serves which share of episodes now, and the canary's history."""
    from agentgym.trainer import by_hand

    settings = _settings(config, store={"path": db})
    status = by_hand.rollout_status(_registry(config, db).index(), settings.planner.control_share)
    console.print(f"live: {status['live'] or 'none (requests unchanged)'}, {status['live_percent']:g}% of episodes"
                  + (f"; control (no policy): {status['control_percent']:g}%" if status["control_percent"] else ""))
    shadow = status["shadow"]
    console.print(f"shadow: {shadow['version'] if shadow else 'none'}")
    for line in shadow["analysis"] if shadow else []:
        console.print(f"  analysis: {line}")
    canary = status["canary"]
    if canary is None:
        console.print("canary: none")
        return
    started = datetime.fromtimestamp(canary["started_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
    console.print(f"canary: {canary['version']}, {canary['percent']:g}% of episodes, since {started} UTC"
                  + (f"; paused: {canary['paused']}" if canary["paused"] else ""))
    for line in canary["analysis"]:
        console.print(f"  analysis: {line}")
    for change in canary["history"]:
        at = datetime.fromtimestamp(change["at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        console.print(f"  {at}  {change['from']} -> {change['to']}  by {change['by']}: {change['reason']}")


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
    uvicorn.run(create_model_app(knobs, seed), host=host, port=port, log_level="warning", access_log=False,
                timeout_keep_alive=75)  # as the proxy's: the proxy's pooled client closes idle connections first


@scenarios_app.command("drive")
def scenarios_drive(
    proxy: Annotated[str, typer.Option(help="the running proxy's address, e.g. http://127.0.0.1:8080")],
    scenario: Annotated[str, typer.Option(help="scenario name, file, or module:Class")] = "code_review",
    episodes: Annotated[int, typer.Option(min=1, help="agent episodes to run")] = 1000,
    seed: Annotated[int, typer.Option(help="seed for the tasks drawn")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, help="agents running at once")] = 4,
) -> None:
    """Run a scenario's simulated agents through a proxy already running (its upstream: `serve-model`)."""
    import asyncio

    from agentgym.scenarios.agents import run_episodes

    results = asyncio.run(run_episodes(proxy.rstrip("/"), _scenario(scenario), episodes=episodes, seed=seed,
                                       concurrency=concurrency))
    console.print(f"{len(results)} episodes, {sum(r.success for r in results)} succeeded, "
                  f"{sum(r.tool_errors for r in results)} of {sum(r.tool_calls for r in results)} tool calls failed")


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
