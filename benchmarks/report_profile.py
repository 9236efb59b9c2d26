"""Where a report's time goes: CPU seconds per statement of `build_report`, and its JSON per scope.

Why: at 10^6 recorded inferences a new report costs the proxy seconds, and the box it runs on is
shared, so wall time misleads; CPU time (best of --repeat, DuckDB on one thread as in the proxy)
says which statement to work on. `--snapshot DIR` writes the report JSON (without its
`generated_at`) for each scope the tests and the dashboard benchmark use, so a faster report can
be checked byte for byte against today's: run it before and after a change on the same store
file and `diff -r` the two folders.

    .venv/bin/python benchmarks/report_profile.py --inferences 1000000
    .venv/bin/python benchmarks/report_profile.py --db store.duckdb --snapshot /tmp/before

The store is the SYNTHETIC one of benchmarks/dashboard_speed.py unless --db names a file (a copy
is read; a file of an older schema is migrated in the copy).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dashboard_speed import fill

from agentgym.dashboards.report import build_report
from agentgym.store.queries import Scope
from agentgym.store.schema import open_store
from agentgym.trainer.registry import Registry


class _TimedCursor:
    """A DuckDB cursor that keeps each statement's best CPU time, named by its first line."""

    def __init__(self, cursor, best: dict[str, float]) -> None:
        self._cursor, self._best = cursor, best

    def execute(self, sql: str, params: object = None):
        started = time.process_time()
        result = self._cursor.execute(sql, params or {})
        self.description, self._rows = result.description, result.fetchall() if result.description else []
        name = " ".join(sql.split())[:70]
        self._best[name] = min(self._best.get(name, float("inf")), time.process_time() - started)
        return self

    def fetchall(self):
        return self._rows

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def close(self) -> None:
        self._cursor.close()


class _TimedConnection:
    def __init__(self, con, best: dict[str, float]) -> None:
        self._con, self._best = con, best

    def cursor(self) -> _TimedCursor:
        return _TimedCursor(self._con.cursor(), self._best)


def scopes(con) -> dict[str, Scope]:
    first = con.execute("SELECT min(created_at) FROM inferences").fetchone()[0] or datetime.now(UTC)
    since, until = first + timedelta(days=2), first + timedelta(days=5)
    return {"all": Scope(), "since": Scope(since), "since_until": Scope(since, until=until),
            "model": Scope(model="gpt-4o-mini"), "scenario": Scope(scenario="retail"),
            "empty": Scope(model="no-such-model"), "future": Scope(datetime(2100, 1, 1, tzinfo=UTC))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inferences", type=int, default=1_000_000, help="size of the synthetic store")
    parser.add_argument("--db", type=Path, help="profile (a copy of) this store instead")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--snapshot", type=Path, help="write each scope's report JSON here instead of profiling")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentgym-report-profile-") as tmp:
        db = Path(tmp) / "store.duckdb"
        if args.db:
            shutil.copy(args.db, db)
        else:
            fill(db, args.inferences)
        con = open_store(db)
        con.execute("SET threads TO 1")  # as the proxy runs it (store/recorder.py)
        registry = Registry(Path(tmp) / "policies")
        if args.snapshot:
            args.snapshot.mkdir(parents=True, exist_ok=True)
            for name, scope in scopes(con).items():
                for window in (None, 100, 7):
                    report = build_report(con, scope, window, registry=registry)
                    report.pop("generated_at")
                    (args.snapshot / f"{name}-{window}.json").write_text(json.dumps(report, indent=1, default=str))
            return
        best: dict[str, float] = defaultdict(lambda: float("inf"))
        timed = _TimedConnection(con, best)
        total = "TOTAL build_report (whole store, window auto)"
        for _ in range(args.repeat):
            started = time.process_time()
            build_report(timed, Scope(), None, registry=registry)
            best[total] = min(best[total], time.process_time() - started)
        for name, seconds in sorted(best.items(), key=lambda item: -item[1]):
            print(f"{seconds:7.3f}  {name}")


if __name__ == "__main__":
    main()
