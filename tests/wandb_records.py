"""Reading back what `wandb` wrote offline: a run's `.wandb` file is a LevelDB-style log
(32 KiB blocks of records, each a 7-byte header: CRC, length, type) of wandb's own protobuf
`Record`s. wandb 0.2x+ reads it in its Go core only, so the tests read it here."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768
HEADER = struct.Struct("<IHB")  # crc32, length, type: 1 full, 2 first, 3 middle, 4 last
FILE_HEADER = struct.Struct("<4sHB")  # ":W&B", magic, version


def records(path: Path) -> list[pb.Record]:
    data = path.read_bytes()
    ident, _, _ = FILE_HEADER.unpack_from(data)
    assert ident == b":W&B", ident
    found, pending, pos = [], b"", FILE_HEADER.size
    while pos + HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < HEADER.size:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        pending += data[pos:pos + length]
        pos += length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            found.append(record)
            pending = b""
    return found


def history_rows(path: Path) -> list[dict[str, Any]]:
    """Each `run.log(...)` call's values."""
    return [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item
             if not (item.key or item.nested_key[0]).startswith("_")}
            for r in records(path) if r.WhichOneof("record_type") == "history"]


def run_record(path: Path) -> pb.RunRecord:
    return next(r.run for r in records(path) if r.WhichOneof("record_type") == "run")
