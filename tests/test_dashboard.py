"""The web dashboard and the HTML report, in headless Chromium (Debian's, driven by Playwright):
a real proxy filled by the simulator, and the charts read back from the page must hold the
numbers `agentgym report --format json` prints. Screenshots are kept under pytest's tmp dir."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import write_tiny
from helpers import register_policy, report_json

from agentgym.scenarios import local_stack
from agentgym.scenarios.agents import run_episodes
from agentgym.scenarios.scenario import load_scenario
from agentgym.store import live_server
from agentgym.trainer.registry import Registry, default_dir

CHROMIUM = "/usr/bin/chromium"
# What the machine notes say Chromium needs here: no sandbox as root, nothing fetched from outside.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ADMIN_KEY = "dashboard-test-key"
# The canary's gate estimate, in the shape trainer.gate writes it.
GATE = {"method": "snips", "decisions": 412, "episodes": 97, "new": 0.6125, "current": 0.5875, "difference": 0.025,
        "ci95": [-0.0125, 0.0625], "margin": 0.0, "passed": True}
WINDOW = "5"


@pytest.fixture(scope="module")
def filled(logs, tmp_path_factory):
    """A proxy (admin key set) with a live version, a canary at 50% and a shadow, after 40
    episodes of the `tiny` scenario and three requests that name no scenario."""
    folder = tmp_path_factory.mktemp("dashboard")
    scenario = load_scenario(str(write_tiny(folder)))
    model = local_stack.start_model(logs, args=["--scenario", str(folder / "tiny_orders.yaml"), "--seed", "1"])
    db = folder / "dashboard.duckdb"
    registry = Registry(default_dir(db))
    live, canary, shadow = (register_policy(registry, b_defer=b, gate=gate) for b, gate in ((3.0, None), (0.0, GATE),
                                                                                              (1.0, None)))
    registry.promote(live, by="test", reason="start")
    registry.start_canary(canary, 50, by="test", reason="try it")
    registry.start_shadow(shadow, by="test", reason="watch it")
    proxy = local_stack.start_proxy(f"{model.url}/v1", db, logs, env={
        "AGENTGYM_SERVER__ADMIN_KEY": ADMIN_KEY, "AGENTGYM_PLANNER__REFRESH_S": "0.1",
        "AGENTGYM_ROLLOUT__CHECK_S": "0.3", "AGENTGYM_ROLLOUT__MIN_EPISODES": "1000",
        "AGENTGYM_PRICING": json.dumps({"agentgym-sim": {"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-6}})})
    try:
        for _ in range(200):  # until the planner serves all three (before that, requests pass unplanned)
            if httpx.get(f"{proxy.url}/readyz").json()["planner"] == {"live": live, "canary": canary, "shadow": shadow}:
                break
            time.sleep(0.05)
        for i in range(3):
            httpx.post(f"{proxy.url}/v1/chat/completions", json={
                "model": "agentgym-sim", "messages": [{"role": "user", "content": f"hello {i}"}]}).raise_for_status()
        _until_priced(proxy)
        asyncio.run(run_episodes(proxy.url, scenario, episodes=40, seed=3, concurrency=4))
        yield proxy, scenario, registry
    finally:
        proxy.stop()
        model.stop()


def _until_priced(proxy) -> None:
    """Until the proxy prices requests as they come: it imports litellm in the background (seconds)
    and prices what came before later, which would change the figures under the test's feet."""
    for _ in range(600):
        report = httpx.get(f"{proxy.url}/admin/report", headers={"authorization": f"Bearer {ADMIN_KEY}"}).json()
        tokens, requests = report["tokens"], report["requests"]["total"]
        priced = requests * (tokens["prompt_per_request"] * 1e-6 + tokens["completion_per_request"] * 4e-6)
        if abs(tokens["cost_usd_total"] - priced) < 1e-7:
            return
        time.sleep(0.1)
    raise AssertionError(f"requests still unpriced: {report['tokens']}")


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs it (as root: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    print(f"\ndashboard screenshots: {folder}")
    return folder


def _report(proxy, *args: str) -> dict:
    return report_json(str(proxy.db), "--window", WINDOW, *args)


def _traces(page, chart: str) -> dict[str, dict]:
    return page.evaluate("id => Object.fromEntries(document.getElementById(id).data.map("
                         "t => [t.name, {x: t.x, y: t.y}]))", chart)


def _local(iso: str) -> str:
    """How the page writes a report time on a date axis (the browser runs in UTC here)."""
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S.%f")[:23]


def assert_page_shows(page, report: dict) -> None:
    """Every chart, tile and table on the page holds what `report` (the JSON) says."""
    windows = report["timeline"]
    x = [_local(w["last_episode_at"]) for w in windows]

    def series(*pairs: tuple[str, str]) -> dict[str, dict]:
        return {name: {"x": x, "y": [w[key] for w in windows]} for key, name in pairs}

    def split(by: str) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for row in report["timeline_by"]:
            if row["by"] == by:
                name = row["name"] if row["name"] is not None else "none"
                out.setdefault(name, {"x": x, "y": [None] * len(windows)})["y"][row["window"]] = row["tool_success_rate"]
        return out

    assert _traces(page, "chart-tool-success") == {**series(("tool_success_rate", "all tools")), **split("tool")}
    assert _traces(page, "chart-tool-success-policy") == split("policy")
    assert _traces(page, "chart-tool-success-arm") == split("arm")
    assert _traces(page, "chart-episode-success") == series(("episode_success_rate", "episodes"))
    assert _traces(page, "chart-tokens") == series(("prompt_tokens_per_request", "prompt"),
                                                   ("completion_tokens_per_request", "completion"))
    assert _traces(page, "chart-cost-request") == series(("cost_usd_per_request", "per request"))
    assert _traces(page, "chart-cost-episode") == series(("cost_per_successful_episode", "per successful episode"))
    assert _traces(page, "chart-latency") == series(("latency_ms_p50", "p50"), ("latency_ms_p95", "p95"),
                                                    ("latency_ms_p99", "p99"))

    failing = sorted((t for t in report["by_tool"] if t["error"]), key=lambda t: (-t["error"], t["tool"]))
    bars = _traces(page, "chart-failing-tools")["errors"]
    assert bars == {"x": [t["error"] for t in failing[:10]][::-1], "y": [t["tool"] for t in failing[:10]][::-1]}
    shown_errors = page.eval_on_selector_all("#failing-tools tbody tr[data-tool]", "rows => rows.map(r => "
                                             "[r.dataset.tool, [...r.querySelectorAll('li')].map(li => li.textContent)])")
    assert shown_errors == [[t["tool"], [f"{e['message']} ({e['count']})" for e in t["top_errors"]]] for t in failing]

    by_policy = _traces(page, "chart-by-policy")
    labels = [f"{r['version'] or 'none'} · {r['arm']}" for r in report["by_policy"]]
    assert by_policy == {"tool success": {"x": labels, "y": [r["tool_success_rate"] for r in report["by_policy"]]},
                         "episode success": {"x": labels, "y": [r["episode_success_rate"] for r in report["by_policy"]]}}

    tiles = dict(page.eval_on_selector_all("#kpis .tile", "tiles => tiles.map(t => [t.dataset.key, "
                                                          "JSON.parse(t.dataset.value)])"))
    for key, value in tiles.items():
        section, name = key.split(".")
        assert value == report[section][name], key
    assert len(tiles) == 13

    versions = page.eval_on_selector_all("#policies tbody tr", "rows => rows.map(r => [...r.cells].map(c => "
                                         "c.querySelector('details') ? [...c.querySelectorAll('summary, li')].map("
                                         "e => e.textContent) : c.textContent))")
    assert [row[:3] for row in versions] == [[v["version"], v["status"], f"{v['traffic_pct']:g}%"]
                                             for v in reversed(report["policies"])]
    for row, version in zip(versions, reversed(report["policies"]), strict=True):
        gate, changes = version["gate"], version["history"]
        assert row[5] == (f"{gate['method']}: {gate['new']} vs {gate['current']}, difference {gate['difference']}, "
                          f"95% CI [{gate['ci95'][0]}, {gate['ci95'][1]}], {'passed' if gate['passed'] else 'failed'}"
                          if gate else "–")
        assert row[6][0] == f"{len(changes)} change{'' if len(changes) == 1 else 's'}"
        assert row[6][1:] == [f"{datetime.fromtimestamp(c['at'], UTC):%Y-%m-%d %H:%M:%S} {c['from']} → {c['to']} "
                              f"by {c['by']}: {c['reason']}" for c in changes]
    for trial in ("canary", "shadow"):
        analysis = page.eval_on_selector_all(f"#rollout .analysis-{trial} li", "items => items.map(i => i.textContent)")
        assert analysis == report["rollout"][trial]["analysis"], trial


def _wait_for_render(page, after: str | None = None) -> None:
    page.wait_for_function("after => document.body.dataset.generatedAt && document.body.dataset.generatedAt !== after",
                           arg=after, timeout=60_000)


def _generated(page) -> str:
    return page.evaluate("document.body.dataset.generatedAt")


def test_the_dashboard_draws_the_report_and_follows_the_traffic(filled, browser, screenshots):
    proxy, scenario, registry = filled
    for _ in range(100):  # the rollout controller has written both analyses
        index = registry.index()
        if index.canary.analysis and index.shadow.analysis:
            break
        time.sleep(0.1)
    context = browser.new_context(http_credentials={"username": "admin", "password": ADMIN_KEY},
                                  timezone_id="UTC", viewport={"width": 1400, "height": 1000})
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{proxy.url}/dashboard?window={WINDOW}&refresh=5")
    _wait_for_render(page)
    first = _report(proxy)
    assert page.eval_on_selector("[data-key='episodes.total']", "t => JSON.parse(t.dataset.value)") == \
        first["episodes"]["total"] == 43

    # live refresh: more traffic shows up without a reload
    runner = threading.Thread(target=lambda: asyncio.run(run_episodes(proxy.url, scenario, episodes=6, seed=4)))
    runner.start()
    runner.join(120)
    page.wait_for_function("() => JSON.parse(document.querySelector(\"[data-key='episodes.total']\").dataset.value) "
                           "=== 49", timeout=30_000)

    # the traffic is over: refresh off (a change of filter fetches once), then the page against the JSON
    before = _generated(page)
    page.select_option("select[name=refresh]", "0")
    _wait_for_render(page, before)
    report = _report(proxy)
    assert report["episodes"]["total"] == 49 and len(report["timeline"]) == 10
    assert_page_shows(page, report)
    tools = {t["tool"]: t for t in report["by_tool"]}
    assert tools["get_order_status"]["error"] == 0 and tools["fetch_order_status"]["error_rate"] == 1.0  # its twin
    assert {row["arm"] for row in report["by_policy"]} >= {"live", "canary"}
    page.screenshot(path=screenshots / "dashboard.png", full_page=True)

    # the scenario filter: the three requests that name none drop out
    before = _generated(page)
    page.select_option("select[name=scenario]", scenario.name)
    _wait_for_render(page, before)
    narrowed = _report(proxy, "--scenario", scenario.name)
    assert narrowed["requests"]["total"] == report["requests"]["total"] - 3
    assert_page_shows(page, narrowed)
    assert f"scenario={scenario.name}" in page.url  # the filters live in the URL, to share or reload
    page.screenshot(path=screenshots / "dashboard-scenario.png", full_page=True)

    # a custom time range, from the URL: the episodes of the first half of the windows' ends
    middle = datetime.fromisoformat(report["timeline"][len(report["timeline"]) // 2]["last_episode_at"])
    since, until = (middle - timedelta(minutes=10)).replace(microsecond=0), middle.replace(microsecond=0)
    before = _generated(page)
    page.goto(f"{proxy.url}/dashboard?window={WINDOW}&refresh=0&range=custom&since={since:%Y-%m-%dT%H:%M:%S}"
              f"&until={until:%Y-%m-%dT%H:%M:%S}")
    _wait_for_render(page, before)
    ranged = _report(proxy, "--since", since.isoformat(), "--until", until.isoformat())
    assert 0 < ranged["requests"]["total"] < report["requests"]["total"]
    assert_page_shows(page, ranged)
    page.screenshot(path=screenshots / "dashboard-time-range.png", full_page=True)

    # a model no request went to: an empty report, drawn without error
    before = _generated(page)
    page.goto(f"{proxy.url}/dashboard?window={WINDOW}&refresh=0&model=nothing-here")
    _wait_for_render(page, before)
    assert_page_shows(page, _report(proxy, "--model", "nothing-here"))
    context.close()

    assert not errors, errors
    outside = [url for url in requests if not url.startswith(proxy.url + "/")]
    assert not outside, outside  # every script is served by the proxy itself


def test_the_html_report_is_one_self_contained_file_with_the_same_numbers(filled, browser, screenshots, tmp_path):
    proxy, _, _ = filled
    html = subprocess.run([sys.executable, "-m", "agentgym", "report", "--db", str(proxy.db), "--window", WINDOW,
                           "--format", "html"], capture_output=True, text=True, timeout=120)
    assert html.returncode == 0, html.stderr
    report = _report(proxy)
    path = tmp_path / "report.html"
    path.write_text(html.stdout)
    shutil.copy(path, screenshots / "report.html")

    context = browser.new_context(timezone_id="UTC", viewport={"width": 1400, "height": 1000}, offline=True)
    requests: list[str] = []
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    _wait_for_render(page)
    assert_page_shows(page, report)
    page.screenshot(path=screenshots / "report.png", full_page=True)
    # nothing to load: no element names a file or address, and the page asked for nothing but itself
    assert page.eval_on_selector_all("[src], [href]", "found => found.map(e => e.outerHTML.slice(0, 80))") == []
    context.close()
    assert requests == [path.as_uri()] and not errors, (requests, errors)


def _basic(password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()}


def test_the_dashboard_needs_the_admin_key(filled, shared_proxy):
    proxy, _, _ = filled
    for headers in ({}, {"authorization": "Bearer guess"}, _basic("guess"), {"authorization": "Basic %%%"}):
        for path in ("/dashboard", "/admin/report"):
            denied = httpx.get(proxy.url + path, headers=headers)
            assert denied.status_code == 401, (path, headers)
            assert denied.headers["www-authenticate"].startswith("Basic realm=")  # what makes a browser ask
    for headers in ({"authorization": f"Bearer {ADMIN_KEY}"}, _basic(ADMIN_KEY), {"x-agentgym-admin-key": ADMIN_KEY}):
        page = httpx.get(f"{proxy.url}/dashboard", headers=headers)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    # the scripts carry no data: no key, and cached for good
    script = httpx.get(f"{proxy.url}/dashboard/assets/plotly.min.js")
    assert script.status_code == 200 and script.headers["content-encoding"] == "gzip"
    assert "immutable" in script.headers["cache-control"]
    assert httpx.get(f"{proxy.url}/dashboard/assets/secrets.txt").status_code == 404

    # with no admin key set, as /admin/report: the server's local token only
    assert httpx.get(f"{shared_proxy.url}/dashboard").status_code == 401
    token = live_server.find(shared_proxy.db).token
    assert httpx.get(f"{shared_proxy.url}/dashboard", headers=_basic(token)).status_code == 200


def test_the_report_route_says_which_filter_is_wrong(filled):
    proxy, _, _ = filled
    auth = {"authorization": f"Bearer {ADMIN_KEY}"}
    for query, message in (({"window": "0"}, "window: '0'"), ({"since": "yesterday"}, "since: 'yesterday'"),
                           ({"until": "soon"}, "until: 'soon'")):
        answer = httpx.get(f"{proxy.url}/admin/report", params=query, headers=auth)
        assert answer.status_code == 400 and message in answer.json()["error"]["message"], answer.text
    auto = httpx.get(f"{proxy.url}/admin/report", params={"window": "auto"}, headers=auth).json()
    assert auto["scope"]["window"] == 1  # about 50 windows: 49 finished episodes make windows of one
