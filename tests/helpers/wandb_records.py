"""Read the records of an offline W&B run file (`run-*.wandb`) for assertions.

The file is a LevelDB-style log of protobuf `Record`s: a 7-byte header, then 32 KiB
blocks of chunks (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7


def read_records(path: Path) -> list[Any]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    records, pending, position = [], b"", HEADER
    while position + HEADER <= len(data):
        left = BLOCK - position % BLOCK
        if left < HEADER:  # block trailer padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position : position + HEADER])
        position += HEADER
        if length == 0 and kind == 0:
            break
        pending += data[position : position + length]
        position += length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def run_info(path: Path) -> dict[str, Any]:
    """Group, job type, name, final summary values (JSON-decoded) and logged artifacts of one run file."""
    import json

    info: dict[str, Any] = {"summary": {}, "history_keys": set(), "finished": False, "artifacts": []}
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            info.update(group=record.run.run_group, job_type=record.run.job_type,
                        name=record.run.display_name, id=record.run.run_id, tags=list(record.run.tags),
                        config_keys={item.key for item in record.run.config.update})
        elif kind == "summary":
            for item in record.summary.update:
                key = item.key or "/".join(item.nested_key)
                info["summary"][key] = json.loads(item.value_json)
        elif kind == "exit":
            info["finished"] = True
        elif kind == "artifact":
            artifact = record.artifact
            info["artifacts"].append({
                "type": artifact.type, "aliases": list(artifact.aliases),
                "metadata": json.loads(artifact.metadata or "{}"),
                "files": {entry.path: entry.size for entry in artifact.manifest.contents},
            })
        elif kind == "history":
            for item in record.history.item:
                info["history_keys"].add(item.key or "/".join(item.nested_key))
    return info


def offline_runs(output_dir: Path, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every offline run under `output_dir`, once each has its final (exit) record.

    wandb's `finish()` can return before its writer process has flushed the file, so a
    run without an exit record is read again until `timeout` seconds have passed.
    """
    import time

    deadline = time.monotonic() + timeout
    paths = sorted(Path(output_dir).glob("wandb/offline-run-*/run-*.wandb"))
    while True:
        try:
            infos = [run_info(p) for p in paths]
            if all(info["finished"] for info in infos) or time.monotonic() > deadline:
                return infos
        except Exception:  # a partially written file: read again shortly
            if time.monotonic() > deadline:
                raise
        time.sleep(0.5)
