"""Recorder throughput: tool-call rows per second into DuckDB through the project's real writer.

Uses `agentgym.store.recorder.Recorder` exactly as the proxy does (one writer thread, one
columnar INSERT per table per flush), with flush_interval_s=0.1, batch_max_rows=20000 and a
queue large enough (10**7) that nothing is dropped. Three measurements:

1. burst: N rows (default 1,000,000) added as fast as one producer thread can, building each
   row as the proxy would; rows/s = N / (time from the first add until `flush()` returns).
2. producer cost: microseconds per `add` call on prebuilt rows (the request-path cost), with
   the writer idle, and the loop's own overhead measured and subtracted.
3. paced: rows added at a fixed rate (default 20,000/s) for a while; whether the writer keeps
   up (queue depth, time to drain after the last add).

    .venv/bin/python benchmarks/recorder_throughput.py            # 1,000,000 rows
    .venv/bin/python benchmarks/recorder_throughput.py --quick    # 100,000 rows

Raw results go to benchmarks/results/recorder_throughput-<date>.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from agentgym.store.recorder import Recorder

HERE = Path(__file__).resolve().parent
NAMES = ["get_order_details", "cancel_order", "find_user", "list_orders", "refund_payment"]
ARGS = ['{"order_id":"W%d"}', '{"order_id":"W%d","reason":"changed my mind"}', '{"email":"u%d@example.com"}',
        '{"user_id":"U%d","limit":10}', '{"payment_id":"P%d","amount":12.5}']


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def new_recorder(path: Path) -> Recorder:
    return Recorder(path, flush_interval_s=0.1, batch_max_rows=20_000, queue_max_rows=10**7)


def burst(path: Path, n: int) -> dict:
    rec = new_recorder(path)
    rec.start()
    add = rec.add
    base = time.time()
    cpu0 = cpu_s()
    t0 = time.perf_counter()
    for i in range(n):
        k = i % 5
        add("tool_calls", (f"call_{i:024x}", f"inf-{i >> 1:032x}", f"ep-{i >> 3:032x}", base + i * 1e-5,
                           i & 1, NAMES[k], ARGS[k] % i))
    t_added = time.perf_counter()
    drained = rec.flush(timeout=600)
    t1 = time.perf_counter()
    cpu1 = cpu_s()
    written, dropped = dict(rec.written), dict(rec.dropped)
    rec.close()
    con = duckdb.connect(str(path), read_only=True)
    stored = con.execute("SELECT count(*) FROM tool_calls").fetchone()[0]
    con.close()
    return {
        "rows": n, "drained": drained, "written": written, "dropped": dropped, "rows_in_file": stored,
        "seconds_first_add_to_flushed": t1 - t0, "rows_per_s": n / (t1 - t0),
        "seconds_adding": t_added - t0, "add_loop_us_per_row_incl_building_row": 1e6 * (t_added - t0) / n,
        "seconds_draining_after_last_add": t1 - t_added,
        "process_cpu_s": cpu1 - cpu0, "cpu_us_per_row": 1e6 * (cpu1 - cpu0) / n,
        "last_flush_s": rec.last_flush_s,
        "file_mb_after_close": path.stat().st_size / 1e6,
    }


def producer_cost(path: Path, n: int) -> dict:
    """Per-add cost on prebuilt rows; the writer thread is not started, so this is the call alone."""
    rec = new_recorder(path)
    base = time.time()
    rows = [(f"call_{i:024x}", f"inf-{i:032x}", f"ep-{i:032x}", base + i, 0, NAMES[i % 5], ARGS[i % 5] % i)
            for i in range(n)]
    add = rec.add

    def noop(table, row):
        return True

    best_add = best_noop = float("inf")
    for _ in range(3):
        rec._queue.clear()  # noqa: SLF001 - reset between repeats; nothing else touches it
        t0 = time.perf_counter()
        for row in rows:
            add("tool_calls", row)
        best_add = min(best_add, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for row in rows:
            noop("tool_calls", row)
        best_noop = min(best_noop, time.perf_counter() - t0)
    rec._queue.clear()  # noqa: SLF001
    return {
        "rows": n, "add_us_per_call": 1e6 * best_add / n, "loop_and_call_overhead_us": 1e6 * best_noop / n,
        "add_us_net": 1e6 * (best_add - best_noop) / n,
    }


def paced(path: Path, rate: float, seconds: float) -> dict:
    rec = new_recorder(path)
    rec.start()
    add = rec.add
    n = int(rate * seconds)
    chunk = max(1, int(rate / 1000))  # add in 1 ms slices
    base = time.time()
    max_depth = 0
    t0 = time.perf_counter()
    i = 0
    while i < n:
        due = t0 + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        for _ in range(min(chunk, n - i)):
            k = i % 5
            add("tool_calls", (f"call_{i:024x}", f"inf-{i >> 1:032x}", f"ep-{i >> 3:032x}", base + i * 1e-5,
                               i & 1, NAMES[k], ARGS[k] % i))
            i += 1
        if (i & 1023) < chunk:
            max_depth = max(max_depth, rec.queue_depth)
    t_added = time.perf_counter()
    behind_s = (t_added - t0) - seconds
    drained = rec.flush(timeout=600)
    t1 = time.perf_counter()
    written, dropped = dict(rec.written), dict(rec.dropped)
    rec.close()
    return {
        "rate": rate, "seconds": seconds, "rows": n, "producer_behind_schedule_s": behind_s,
        "max_queue_depth_sampled": max_depth, "drain_after_last_add_s": t1 - t_added, "drained": drained,
        "written": written, "dropped": dropped,
        "kept_up": drained and (t1 - t_added) < 1.0 and not dropped,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--producer-rows", type=int, default=200_000)
    p.add_argument("--paced-rate", type=float, default=20_000)
    p.add_argument("--paced-seconds", type=float, default=10)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--dir", type=Path, default=None, help="where to put the store (default: a temp dir)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if args.quick:
        args.rows, args.producer_rows, args.paced_seconds = 100_000, 50_000, 3

    workdir = Path(tempfile.mkdtemp(prefix="agentgym-recorder-", dir=args.dir))
    try:
        results = {
            "date": dt.date.today().isoformat(), "cpus": os.cpu_count(), "duckdb": duckdb.__version__,
            "store_dir": str(workdir), "args": {k: str(v) for k, v in vars(args).items()},
            "recorder": {"flush_interval_s": 0.1, "batch_max_rows": 20_000, "queue_max_rows": 10**7},
        }
        print(f"burst: {args.rows:,} rows ...", flush=True)
        results["burst"] = b = burst(workdir / "burst.duckdb", args.rows)
        print(f"  {b['rows_per_s']:,.0f} rows/s ({b['seconds_first_add_to_flushed']:.2f} s first add -> flushed; "
              f"adding took {b['seconds_adding']:.2f} s, draining after the last add {b['seconds_draining_after_last_add']:.2f} s); "
              f"written {b['written']}, dropped {b['dropped']}, in file {b['rows_in_file']:,}", flush=True)
        print(f"producer cost: {args.producer_rows:,} prebuilt rows ...", flush=True)
        results["producer"] = c = producer_cost(workdir / "producer.duckdb", args.producer_rows)
        print(f"  add(): {c['add_us_per_call']:.3f} us per call, {c['add_us_net']:.3f} us net of the loop", flush=True)
        print(f"paced: {args.paced_rate:,.0f} rows/s for {args.paced_seconds:.0f} s ...", flush=True)
        results["paced"] = q = paced(workdir / "paced.duckdb", args.paced_rate, args.paced_seconds)
        print(f"  kept up: {q['kept_up']} (max queue depth {q['max_queue_depth_sampled']:,}, "
              f"drained {q['drain_after_last_add_s']:.3f} s after the last add)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = args.out or HERE / "results" / f"recorder_throughput-{results['date']}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\n| measurement | value |\n|---|---:|\n"
          f"| burst: rows/s, {b['rows']:,} rows, first add -> flush() returned | {b['rows_per_s']:,.0f} |\n"
          f"| burst: seconds, of which adding / draining after the last add | {b['seconds_first_add_to_flushed']:.2f} "
          f"({b['seconds_adding']:.2f} / {b['seconds_draining_after_last_add']:.2f}) |\n"
          f"| burst: rows written / dropped / in the file | {sum(b['written'].values()):,} / "
          f"{sum(b['dropped'].values()):,} / {b['rows_in_file']:,} |\n"
          f"| burst: process CPU per row (producer + writer), us | {b['cpu_us_per_row']:.2f} |\n"
          f"| producer: add() per call, us (net of loop overhead) | {c['add_us_per_call']:.3f} ({c['add_us_net']:.3f}) |\n"
          f"| producer: add loop incl. building the row tuple, us/row (burst) | {b['add_loop_us_per_row_incl_building_row']:.2f} |\n"
          f"| paced {q['rate']:,.0f} rows/s x {q['seconds']:.0f} s: kept up / max queue depth / drain after last add | "
          f"{'yes' if q['kept_up'] else 'no'} / {q['max_queue_depth_sampled']:,} / {q['drain_after_last_add_s']:.3f} s |")
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
