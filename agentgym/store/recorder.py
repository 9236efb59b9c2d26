"""The batched DuckDB writer: the only code that writes to the store.

Request handlers call `Recorder.add`, which appends to a bounded in-memory queue and returns
at once; a writer thread turns whatever has queued up every `flush_interval_s` into one
columnar INSERT per table. If the store cannot be opened, rows wait in the queue (bounded);
if a write fails, that batch is dropped and counted. Requests never wait on DuckDB.

What a `kill -9` can lose: the rows queued since the last flush, i.e. about
`flush_interval_s` of traffic (plus a batch being written at that instant). SIGTERM loses
nothing: `close()` drains the queue and checkpoints.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import duckdb

from agentgym.store.schema import TABLES, open_store

log = logging.getLogger(__name__)

Row = tuple
Prepare = Callable[[Row], Row]


class StoreUnavailable(RuntimeError):
    pass


def _insert_sql(table: str) -> str:
    columns = TABLES[table]
    values = [
        f"to_timestamp(unnest(${i}))" if type_ == "TIMESTAMPTZ" else f"unnest(${i})"
        for i, type_ in enumerate(columns.values(), start=1)
    ]
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(values)}"


class Recorder:
    """Owns the store file's single read-write connection; see the module docstring."""

    REOPEN_EVERY_S = 2.0

    def __init__(
        self,
        path: Path | str,
        *,
        flush_interval_s: float = 0.5,
        batch_max_rows: int = 20_000,
        queue_max_rows: int = 200_000,
        prepare: Mapping[str, Prepare] | None = None,
        maintenance: Callable[[duckdb.DuckDBPyConnection], bool] | None = None,
    ) -> None:
        self.path = Path(path)
        self.flush_interval_s = flush_interval_s
        self.batch_max_rows = batch_max_rows
        self.queue_max_rows = queue_max_rows
        self._prepare = dict(prepare or {})
        self._maintenance = maintenance  # runs on the writer thread after each cycle's writes; True if it wrote
        self._sql = {table: _insert_sql(table) for table in TABLES}
        self._queue: collections.deque[tuple[str, Row]] = collections.deque()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drained = threading.Condition()
        self._busy = False
        self._con: duckdb.DuckDBPyConnection | None = None
        # Readers on other threads get cursors from a root made once, under a lock:
        # a DuckDB connection must not be used by two threads at once.
        self._reader_root: duckdb.DuckDBPyConnection | None = None
        self._reader_lock = threading.Lock()
        self._last_open_attempt = 0.0
        self._thread: threading.Thread | None = None
        self.written: collections.Counter[str] = collections.Counter()
        self.dropped: collections.Counter[str] = collections.Counter()
        self.last_error: str | None = None
        self.last_flush_s: float | None = None
        self.caught_up_at = time.monotonic()  # when the writer last had everything queued written
        self.writes = 0  # commits that changed the store: what a cached read is keyed by

    # --- request path -------------------------------------------------------------------
    def add(self, table: str, row: Row) -> bool:
        """Queue one row; never blocks. False (and counted) when the queue is full."""
        if len(self._queue) >= self.queue_max_rows:
            self.dropped["queue_full"] += 1
            return False
        self._queue.append((table, row))
        return True

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def healthy(self) -> bool:
        return self._con is not None and self.last_error is None

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._open()
        self._thread = threading.Thread(target=self._run, name="agentgym-recorder", daemon=True)
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (or dropped). True if drained."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        with self._drained:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.set()
                self._drained.wait(min(left, 0.05))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Drain the queue, checkpoint and release the file."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._con is not None:
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as exc:
                log.warning("checkpoint on close failed: %s", exc)
        self._release()

    @contextmanager
    def reader(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """An in-process read connection to the same file (other processes cannot open it)."""
        with self._reader_lock:
            root = self._reader_root
            if root is None:
                raise StoreUnavailable(self.last_error or "store is not open")
            cursor = root.cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    # --- writer thread ------------------------------------------------------------------
    def _open(self) -> None:
        self._last_open_attempt = time.monotonic()
        try:
            self._con = open_store(self.path)
            # One DuckDB thread: the proxy's event loop needs the other cores more than inserts do.
            self._con.execute("SET threads TO 1")
            with self._reader_lock:
                self._reader_root = self._con.cursor()
            self.last_error = None
        except (duckdb.Error, OSError) as exc:
            self._con = None
            self.last_error = f"cannot open store {self.path}: {exc}"
            log.error("%s; rows stay queued (at most %d)", self.last_error, self.queue_max_rows)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            self._write_queued()
            if self._con is not None:  # open, and the queue was empty when the writes ended
                self.caught_up_at = time.monotonic()
            self._maintain()
        while self._queue and self._con is not None:
            self._write_queued()
        self._maintain()
        with self._drained:
            self._drained.notify_all()

    def _write_queued(self) -> None:
        if self._con is None:
            if time.monotonic() - self._last_open_attempt < self.REOPEN_EVERY_S:
                return
            self._open()
            if self._con is None:
                return
        while self._queue:
            self._busy = True
            batch: dict[str, list[Row]] = collections.defaultdict(list)
            for _ in range(min(len(self._queue), self.batch_max_rows)):
                table, row = self._queue.popleft()
                batch[table].append(row)
            self._write_batch(batch)
            with self._drained:
                self._busy = False
                self._drained.notify_all()

    def _maintain(self) -> None:
        if self._maintenance is None or self._con is None:
            return
        try:
            if self._maintenance(self._con):
                self.writes += 1
        except Exception as exc:  # noqa: BLE001 - maintenance is best-effort
            log.error("store maintenance failed: %s", exc)

    def _write_batch(self, batch: dict[str, list[Row]]) -> None:
        started = time.perf_counter()
        con = self._con
        assert con is not None
        try:
            for table, rows in batch.items():
                prepare = self._prepare.get(table)
                if prepare is not None:
                    rows = [prepare(row) for row in rows]
                batch[table] = rows
            con.execute("BEGIN TRANSACTION")
            for table, rows in batch.items():
                con.execute(self._sql[table], [list(column) for column in zip(*rows, strict=True)])
            con.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001 - any store failure must not reach requests
            self._fail_batch(batch, exc)
            return
        for table, rows in batch.items():
            self.written[table] += len(rows)
        self.writes += 1
        self.last_error = None
        self.last_flush_s = time.perf_counter() - started

    def _fail_batch(self, batch: dict[str, list[Row]], exc: Exception) -> None:
        lost = sum(len(rows) for rows in batch.values())
        self.dropped["write_error"] += lost
        self.last_error = f"write failed, {lost} rows dropped: {exc}"
        log.error("%s", self.last_error)
        try:
            self._con.execute("ROLLBACK")  # type: ignore[union-attr]
        except duckdb.Error:
            pass
        # A failed file (disk full, corrupt, replaced) is reopened on the next cycle.
        self._release()

    def _release(self) -> None:
        with self._reader_lock:
            for con in (self._reader_root, self._con):
                try:
                    if con is not None:
                        con.close()
                except duckdb.Error:
                    pass
            self._reader_root = None
            self._con = None
