"""Dashboard speed: how long the web dashboard's page and its data route take on a big store.

The store is SYNTHETIC: rows bulk-inserted with SQL into a file made by the store's own schema
(`open_store`), shaped like the proxy's records: episodes of 4 inferences (3 with a tool call
each, its result, and one feedback row naming a scenario), two models, 5 tools of which one
fails often, three policy eras (none, v1, v2 with a 10% canary), spread over the last 7 days.
Then a real `agentgym serve` process opens the file, and over real HTTP on 127.0.0.1:

- page: GET /dashboard (the HTML shell) and GET /dashboard/assets/plotly.min.js (gzipped);
- data: GET /admin/report, what the page polls: the whole store, the last 24 hours, one model,
  one scenario (window=auto: about 50 timeline windows), each built afresh (every ask names a
  different `until` far in the future: same rows, so the proxy's report cache cannot answer);
- kept: the whole store's report asked again with nothing written since (the proxy's cache);
- cli: `agentgym report --format json` as a new process, through the serving proxy (built
  afresh) and, after the proxy stops, on the file itself;
- browser (when Debian's Chromium is at /usr/bin/chromium): a fresh headless page from
  navigation until every chart is drawn.

Each timing is the median and the slowest of --repeat runs after one warm-up.

    .venv/bin/python benchmarks/dashboard_speed.py                              # 10^4, 10^5, 10^6
    .venv/bin/python benchmarks/dashboard_speed.py --inferences 10000 --repeat 2

Raw results go to benchmarks/results/dashboard_speed-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx

from agentgym.scenarios import local_stack
from agentgym.store.schema import open_store

HERE = Path(__file__).resolve().parent
KEY = "bench-admin-key"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

# $n inferences (the first statement, the only one with parameters); episode e = i // 4; the 4th
# inference of an episode makes no tool call.
FILL = """
INSERT INTO inferences (id, episode_id, episode_link, created_at, model, provider, stream, status, prompt_tokens,
                        completion_tokens, usage_estimated, cost_usd, latency_ms, tools_offered, tool_choice,
                        finish_reason, policy_version, arm)
SELECT 'inf-' || i, 'ep-' || (i // 4), 'header', $start + to_microseconds(i * $span_us // $n),
       CASE WHEN i % 10 < 7 THEN 'gpt-4o-mini' ELSE 'claude-3-5-haiku' END, 'openai', false,
       CASE WHEN i % 500 = 0 THEN 500 ELSE 200 END,
       300 + hash(i) % 200, 20 + hash(i, 1) % 40, false, (300 + hash(i) % 200) * 1.5e-7 + (20 + hash(i, 1) % 40) * 6e-7,
       40 + (hash(i, 2) % 4000) / 10.0, 5, 'auto', 'tool_calls',
       CASE WHEN i < $n // 3 THEN NULL WHEN i < 2 * $n // 3 THEN 'v1' ELSE 'v2' END,
       CASE WHEN i < $n // 3 THEN 'control' WHEN i >= 2 * $n // 3 AND (i // 4) % 10 = 0 THEN 'canary' ELSE 'live' END
FROM range($n) t(i);

INSERT INTO tool_calls (id, inference_id, episode_id, created_at, position, name, arguments)
SELECT 'call-' || id, id, episode_id, created_at, 0,
       ['get_order_details', 'cancel_order', 'find_user', 'list_orders', 'refund_payment'][1 + (hash(id) % 5)::BIGINT], '{}'
FROM inferences WHERE split_part(id, '-', 2)::BIGINT % 4 != 3;

INSERT INTO tool_results (tool_call_id, episode_id, inference_id, created_at, outcome, error_message)
SELECT id, episode_id, inference_id, created_at + INTERVAL 1 SECOND,
       CASE WHEN hash(id, 3) % 100 < (CASE name WHEN 'cancel_order' THEN 40 ELSE 5 END) THEN 'error' ELSE 'success' END,
       CASE WHEN hash(id, 3) % 100 < (CASE name WHEN 'cancel_order' THEN 40 ELSE 5 END)
            THEN ['order not found', 'order already shipped', 'timeout'][1 + (hash(id, 4) % 3)::BIGINT] END
FROM tool_calls;

INSERT INTO feedback (id, created_at, target, target_id, episode_id, reward, success, metadata)
SELECT 'fb-' || episode_id, max(created_at) + INTERVAL 2 SECOND, 'episode', episode_id, episode_id, NULL,
       hash(episode_id) % 100 < 80, '{"scenario": "' || ['retail', 'airline'][1 + (hash(episode_id, 5) % 2)::BIGINT] || '"}'
FROM inferences GROUP BY episode_id;
"""


def fill(db: Path, n: int) -> dict:
    started = time.perf_counter()
    con = open_store(db)
    now = dt.datetime.now(dt.UTC)
    span = dt.timedelta(days=7)
    con.execute(FILL.split(";")[0], {"n": n, "start": now - span, "span_us": int(span.total_seconds() * 1e6)})
    con.execute(FILL.split(";", 1)[1])
    counts = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
              for t in ("inferences", "tool_calls", "tool_results", "feedback")}
    con.close()
    return {"rows": counts, "fill_s": round(time.perf_counter() - started, 2), "file_mb": round(db.stat().st_size / 2**20, 1)}


def timed(get, repeat: int) -> dict:
    get()  # warm-up
    runs = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = get()
        runs.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return {"median_ms": round(statistics.median(runs), 1), "max_ms": round(max(runs), 1),
            "wire_bytes": response.num_bytes_downloaded}


ASKS = itertools.count()


def fresh_until() -> str:
    """A different `until` on every call, after every row: the same report, never a kept one."""
    return (dt.datetime(2100, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=next(ASKS))).isoformat()


def cli_report(db: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agentgym", "report", "--db", str(db), "--format", "json", *args],
                          capture_output=True, check=True, timeout=600)


def timed_cli(db: Path, repeat: int, *args: str) -> dict:
    def once() -> float:
        started = time.perf_counter()
        cli_report(db, "--until", fresh_until(), *args)
        return (time.perf_counter() - started) * 1000

    once()  # warm-up
    runs = [once() for _ in range(repeat)]
    return {"median_ms": round(statistics.median(runs), 1), "max_ms": round(max(runs), 1)}


def browser_load(url: str, repeat: int) -> dict | None:
    """A fresh page (no cache) from navigation until the report is drawn."""
    if not os.access(CHROMIUM, os.X_OK):
        return None
    from playwright.sync_api import sync_playwright

    runs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        for _ in range(repeat + 1):
            context = browser.new_context(http_credentials={"username": "bench", "password": KEY})
            page = context.new_page()
            started = time.perf_counter()
            page.goto(f"{url}/dashboard?window=auto&refresh=0")
            page.wait_for_function("document.body.dataset.generatedAt", timeout=120_000)
            runs.append((time.perf_counter() - started) * 1000)
            context.close()
        browser.close()
    runs = runs[1:]
    return {"median_ms": round(statistics.median(runs), 1), "max_ms": round(max(runs), 1)}


def measure(n: int, repeat: int, folder: Path) -> dict:
    db = folder / f"dashboard-{n}.duckdb"
    result = {"inferences": n, **fill(db, n), "load_average_before": round(os.getloadavg()[0], 2)}
    proxy = local_stack.start_proxy("http://127.0.0.1:9/v1", db, folder, env={"AGENTGYM_SERVER__ADMIN_KEY": KEY})
    try:
        auth = {"authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=proxy.url, headers=auth, timeout=300) as http:
            day_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
            result["page"] = timed(lambda: http.get("/dashboard"), repeat)
            result["plotly_js_gzip"] = timed(lambda: http.get("/dashboard/assets/plotly.min.js",
                                                              headers={"accept-encoding": "gzip"}), repeat)
            result["data"] = {
                name: timed(lambda q=query: http.get("/admin/report", params={"window": "auto", "until": fresh_until(),
                                                                               **q}), repeat)
                for name, query in (("all", {}), ("last_24h", {"since": day_ago}), ("one_model", {"model": "gpt-4o-mini"}),
                                    ("one_scenario", {"scenario": "retail"}))
            }
            result["kept"] = timed(lambda: http.get("/admin/report", params={"window": "auto"}), repeat)
        result["cli_live"] = timed_cli(db, repeat)
        result["browser_first_draw"] = browser_load(proxy.url, max(1, repeat // 2))
    finally:
        proxy.stop()
    result["cli_file"] = timed_cli(db, repeat)
    return result


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0], "duckdb": duckdb.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inferences", default="10000,100000,1000000", help="comma-separated store sizes")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.inferences.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="agentgym-dashboard-bench-") as tmp:
        for n in sizes:
            results.append(measure(n, args.repeat, Path(tmp)))
            print(json.dumps(results[-1]), flush=True)
    print("\nSYNTHETIC store rows; times over real HTTP on 127.0.0.1 to a real `agentgym serve` (median / slowest ms)")
    columns = ("page", "data: all", "last 24h", "one model", "one scenario", "kept", "cli (live)", "cli (file)",
               "browser draw")
    print(f"{'inferences':>11} " + " ".join(f"{c:>15}" for c in columns))
    for r in results:
        cells = [r["page"], *r["data"].values(), r["kept"], r["cli_live"], r["cli_file"], r["browser_first_draw"]]
        print(f"{r['inferences']:>11,} " + " ".join(
            f"{(f'{c['median_ms']:.0f} / {c['max_ms']:.0f}' if c else 'no chromium'):>15}" for c in cells))
    out = HERE / "results" / f"dashboard_speed-{dt.date.today()}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"synthetic": True, "repeat": args.repeat, "machine": machine(), "results": results},
                              indent=2))
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
