"""The store: versioned schema and migrations, and the batched writer's failure behaviour."""

import subprocess
import sys
import time

import duckdb
import pytest

from agentgym.store import schema
from agentgym.store.recorder import Recorder


def _tool_call(i: int) -> tuple:
    return (f"call-{i}", f"inf-{i}", "ep-1", time.time(), 0, "get_order", '{"id": 1}')


def test_new_file_is_created_at_the_current_version(tmp_path):
    con = schema.open_store(tmp_path / "s.duckdb")
    assert schema.schema_version(con) == schema.SCHEMA_VERSION
    assert {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()} >= set(schema.TABLES)


def test_an_older_file_is_migrated_in_place_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    schema.migrate(con, schema.MIGRATIONS)  # today's schema is "old" for a future version
    con.execute("INSERT INTO tool_calls (id, name) VALUES ('call-1', 'get_order')")
    con.close()
    future = [*schema.MIGRATIONS, ["ALTER TABLE tool_calls ADD COLUMN latency_ms DOUBLE"]]
    con = duckdb.connect(str(path))
    found = schema.migrate(con, future)
    assert found == len(schema.MIGRATIONS)
    assert schema.schema_version(con) == len(future)
    assert con.execute("SELECT id, name, latency_ms FROM tool_calls").fetchall() == [("call-1", "get_order", None)]


def test_a_failed_migration_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "s.duckdb"
    schema.open_store(path).close()
    broken = [*schema.MIGRATIONS, ["ALTER TABLE tool_calls ADD COLUMN x INTEGER", "SELECT * FROM no_such_table"]]
    con = duckdb.connect(str(path))
    with pytest.raises(duckdb.CatalogException):
        schema.migrate(con, broken)
    assert schema.schema_version(con) == schema.SCHEMA_VERSION
    assert "x" not in [r[0] for r in con.execute("DESCRIBE tool_calls").fetchall()]


def test_a_file_from_a_newer_agentgym_is_refused_clearly(tmp_path):
    path = tmp_path / "s.duckdb"
    con = schema.open_store(path)
    con.execute("UPDATE agentgym_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(schema.SchemaError, match="version 99, newer"):
        schema.open_store(path)


def test_rows_are_written_in_batches_and_close_drains_the_queue(tmp_path):
    recorder = Recorder(tmp_path / "s.duckdb", flush_interval_s=10)  # only close() will write
    recorder.start()
    for i in range(5000):
        recorder.add("tool_calls", _tool_call(i))
    recorder.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT id) FROM tool_calls").fetchone() == (5000, 5000)
    assert recorder.written["tool_calls"] == 5000 and not recorder.dropped


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path):
    recorder = Recorder(tmp_path / "s.duckdb", flush_interval_s=10, queue_max_rows=100)
    recorder.start()
    accepted = sum(recorder.add("tool_calls", _tool_call(i)) for i in range(150))
    assert accepted == 100 and recorder.dropped["queue_full"] == 50
    recorder.close()
    assert recorder.written["tool_calls"] == 100


def test_a_failing_write_drops_that_batch_counts_it_and_recovers(tmp_path):
    path = tmp_path / "s.duckdb"
    recorder = Recorder(path, flush_interval_s=0.05)
    recorder.start()
    with recorder.reader() as con:
        con.execute("ALTER TABLE tool_calls RENAME TO tool_calls_away")  # the file no longer fits
    recorder.add("tool_calls", _tool_call(1))
    assert recorder.flush(5)
    assert recorder.dropped["write_error"] == 1 and not recorder.healthy
    assert "tool_calls" in recorder.last_error
    # The writer let go of the file; repair it from outside, and the next batch lands.
    con = duckdb.connect(str(path))
    con.execute("ALTER TABLE tool_calls_away RENAME TO tool_calls")
    con.close()
    recorder.add("tool_calls", _tool_call(2))
    assert recorder.flush(10)
    assert recorder.healthy and recorder.written["tool_calls"] == 1
    assert recorder.dropped["write_error"] == 1
    recorder.close()


def test_rows_wait_while_another_process_holds_the_file_then_land(tmp_path):
    path = tmp_path / "s.duckdb"
    schema.open_store(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(path)!r}); print('locked', flush=True); time.sleep(3)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    recorder = Recorder(path, flush_interval_s=0.05)
    recorder.start()
    assert not recorder.healthy and "lock" in recorder.last_error.lower()
    for i in range(10):
        assert recorder.add("tool_calls", _tool_call(i))
    holder.wait(10)
    assert recorder.flush(15)
    assert recorder.healthy and recorder.written["tool_calls"] == 10
    recorder.close()
