"""Finding the server that holds a store file open.

DuckDB lets one process open a file for writing and then no other process may open it at
all. So `agentgym serve` leaves a note beside the file (`FILE.server.json`, readable only by
its owner, like Jupyter's runtime files) with its address and a local admin token; commands
such as `agentgym report --db FILE` that find the file locked ask that server instead.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LiveServer:
    url: str
    token: str
    pid: int


def note_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".server.json")


def announce(db_path: Path, url: str) -> LiveServer:
    server = LiveServer(url=url.rstrip("/"), token=secrets.token_urlsafe(32), pid=os.getpid())
    path = note_path(db_path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": server.url, "token": server.token, "pid": server.pid}, f)
    return server


def withdraw(db_path: Path, server: LiveServer) -> None:
    path = note_path(db_path)
    if find(db_path) == server:
        path.unlink(missing_ok=True)


def find(db_path: Path) -> LiveServer | None:
    """The server that announced itself for this file, if its process is still alive."""
    try:
        data = json.loads(note_path(db_path).read_text())
        server = LiveServer(url=data["url"], token=data["token"], pid=int(data["pid"]))
        os.kill(server.pid, 0)
    except (OSError, ValueError, KeyError):
        return None
    return server
