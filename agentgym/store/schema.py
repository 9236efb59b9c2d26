"""The DuckDB schema: tables, their migrations, and opening a store file.

Every table is append-only, because DuckDB appends columnar batches fast and updates slowly:
a tool call's outcome and any feedback are rows of their own, joined at read time.
Each migration moves a file from one version to the next; opening a file applies the
missing ones in one transaction, so an older file is upgraded in place.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

# Column order here is the order of the rows the recorder writes.
TABLES: dict[str, dict[str, str]] = {
    "inferences": {
        "id": "VARCHAR",
        "episode_id": "VARCHAR",
        "episode_link": "VARCHAR",  # header | prefix | tool_call | new
        "created_at": "TIMESTAMPTZ",
        "model": "VARCHAR",
        "provider": "VARCHAR",
        "stream": "BOOLEAN",
        "status": "INTEGER",
        "error_type": "VARCHAR",
        "error_message": "VARCHAR",
        "prompt_tokens": "INTEGER",
        "completion_tokens": "INTEGER",
        "usage_estimated": "BOOLEAN",
        "cost_usd": "DOUBLE",
        "latency_ms": "DOUBLE",
        "ttfb_ms": "DOUBLE",
        "tools_offered": "INTEGER",
        "tool_choice": "VARCHAR",
        "finish_reason": "VARCHAR",
        "policy_version": "VARCHAR",
        "arm": "VARCHAR",
        "request": "VARCHAR",
        "response": "VARCHAR",
    },
    "tool_calls": {
        "id": "VARCHAR",
        "inference_id": "VARCHAR",
        "episode_id": "VARCHAR",
        "created_at": "TIMESTAMPTZ",
        "position": "INTEGER",
        "name": "VARCHAR",
        "arguments": "VARCHAR",
    },
    "tool_results": {
        "tool_call_id": "VARCHAR",
        "episode_id": "VARCHAR",
        "inference_id": "VARCHAR",  # the request that carried the result back
        "created_at": "TIMESTAMPTZ",
        "outcome": "VARCHAR",  # success | error | unknown
        "error_message": "VARCHAR",
        "content": "VARCHAR",
    },
    "feedback": {
        "id": "VARCHAR",
        "created_at": "TIMESTAMPTZ",
        "target": "VARCHAR",  # episode | inference | tool_call
        "target_id": "VARCHAR",
        "episode_id": "VARCHAR",
        "reward": "DOUBLE",
        "success": "BOOLEAN",
        "metadata": "VARCHAR",
    },
    # What the planner decided for an inference that offered tools (see agentgym.trainer.policy).
    "decisions": {
        "id": "VARCHAR",
        "inference_id": "VARCHAR",
        "episode_id": "VARCHAR",
        "created_at": "TIMESTAMPTZ",
        "policy_version": "VARCHAR",
        "arm": "VARCHAR",  # control | shadow | canary | live
        "action": "VARCHAR",  # defer | force | offer
        "tool": "VARCHAR",  # the forced tool; NULL for offer and defer
        "choice": "INTEGER",  # its index among the candidates; -2 for offer, -1 for defer
        "propensity": "DOUBLE",  # the probability the policy sampled it with
        "candidates": "VARCHAR",  # JSON list of the offered tools' spec hashes, in request order
        "offered": "VARCHAR",  # JSON list of the tool names the request went out with
        "context": "VARCHAR",  # the text the policy read
    },
    # Each distinct tool schema a decision saw, once: what the trainer encodes.
    "tool_specs": {
        "hash": "VARCHAR",
        "created_at": "TIMESTAMPTZ",
        "name": "VARCHAR",
        "text": "VARCHAR",
    },
}

def _create(table: str) -> str:
    cols = ", ".join(f"{name} {type_}" for name, type_ in TABLES[table].items())
    return f"CREATE TABLE IF NOT EXISTS {table} ({cols})"


# MIGRATIONS[i] takes a file from version i to version i + 1.
MIGRATIONS: list[list[str]] = [
    [_create(t) for t in ("inferences", "tool_calls", "tool_results", "feedback")],
    [_create("decisions"), _create("tool_specs")],  # the planner
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(RuntimeError):
    pass


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The file's version; 0 for a new file. Works on read-only connections."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'agentgym_meta'"
    ).fetchone()[0]
    if not exists:
        return 0
    row = con.execute("SELECT value FROM agentgym_meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(con: duckdb.DuckDBPyConnection, migrations: list[list[str]] = MIGRATIONS) -> int:
    """Bring the file up to the newest version; returns the version it was at."""
    con.execute("BEGIN TRANSACTION")
    try:
        found = schema_version(con)
        con.execute("CREATE TABLE IF NOT EXISTS agentgym_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        if found > len(migrations):
            raise SchemaError(
                f"this store is at schema version {found}, newer than this AgentGym knows "
                f"({len(migrations)}); upgrade AgentGym to open it"
            )
        for statements in migrations[found:]:
            for sql in statements:
                con.execute(sql)
        con.execute(
            "INSERT OR REPLACE INTO agentgym_meta VALUES ('schema_version', ?)", [str(len(migrations))]
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return found


def open_store(path: Path | str, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (and, when writable, migrate) a store file."""
    path = Path(path)
    if read_only:
        if not path.exists():
            raise FileNotFoundError(f"no AgentGym store at {path}")
        con = duckdb.connect(str(path), read_only=True)
        found = schema_version(con)
        if found != SCHEMA_VERSION:
            con.close()
            raise SchemaError(
                f"{path} is at schema version {found}, this AgentGym reads {SCHEMA_VERSION}; "
                "open it once with `agentgym serve` to migrate it"
            )
        return con
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    migrate(con)
    return con

