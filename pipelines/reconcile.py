"""Nothing lost, nothing doubled: the archive of what was published against what landed in the lakehouse.

    lakehouse reconcile [--archive '$LAKEHOUSE_HOME/archive/events/*.jsonl']   # exit 1 on any gap or double
    lakehouse backfill --input '.lakehouse/archive/events/*.jsonl' --dims DIR  # repairs gaps, idempotently

Every archived line is one published message. Each must have landed exactly once:
- a line with a readable `event_id` must appear in silver (one row per event_id, across all the copies that were
  published) or in the dead letters (rejected, e.g. unknown product);
- a line without one (not JSON, empty, ...) must appear in the dead letters as that archive line.
Reported: event ids missing from both, event ids with more than one silver row, archive lines (without an id)
missing from the dead letters, and archive lines dead-lettered more than once.
"""

from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import tables
from pipelines.config import Settings
from pipelines.sinks import LakeTable


class _Id(msgspec.Struct):
    event_id: str | None = None


_ID = msgspec.json.Decoder(_Id)


@dataclass
class Reconciliation:
    archive_lines: int = 0
    event_ids: int = 0
    silver_rows: int = 0
    dead_letters: int = 0
    missing_ids: list[str] = field(default_factory=list)
    doubled_ids: list[str] = field(default_factory=list)
    missing_lines: list[tuple[str, int]] = field(default_factory=list)
    doubled_lines: list[tuple[str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing_ids or self.doubled_ids or self.missing_lines or self.doubled_lines)


def archive_ids(paths: list[str]) -> tuple[dict[str, list[tuple[str, int]]], list[tuple[str, int]], int]:
    """(event_id -> archive lines, lines without a readable event_id, line count) of archive files."""
    ids: dict[str, list[tuple[str, int]]] = {}
    anonymous, lines = [], 0
    for path in paths:
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                lines += 1
                try:
                    event_id = _ID.decode(raw.rstrip(b"\n")).event_id
                except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                    event_id = None
                if isinstance(event_id, str) and event_id:
                    ids.setdefault(event_id, []).append((path, n))
                else:
                    anonymous.append((path, n))
    return ids, anonymous, lines


def _columns(settings: Settings, fqn: str, columns: list[str]) -> pa.Table:
    lake = LakeTable(settings.lake_dir, tables.TABLES[fqn])
    parts = [pq.read_table(f, columns=columns) for f in lake.files()]
    return pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.string()) for c in columns})


def reconcile(settings: Settings, archive_glob: str | None = None) -> Reconciliation:
    pattern = archive_glob or str(settings.archive_dir / "events" / "*.jsonl")
    paths = sorted(str(Path(p).absolute()) for p in glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no archive files match {pattern!r}")
    ids, anonymous, lines = archive_ids(paths)
    sources = set(paths)
    silver = Counter()
    for fqn in tables.SILVER_EVENTS:
        for event_id in _columns(settings, fqn, ["event_id"])["event_id"].to_pylist():
            if event_id in ids:
                silver[event_id] += 1
    dead = _columns(settings, tables.DEAD_LETTER.fqn, ["event_id", "source_uri", "source_line"])
    dead_ids, dead_lines = set(), Counter()
    for event_id, uri, line in zip(*(dead[c].to_pylist() for c in ("event_id", "source_uri", "source_line"))):
        if event_id in ids:
            dead_ids.add(event_id)
        if uri in sources:
            dead_lines[(uri, line)] += 1
    return Reconciliation(
        archive_lines=lines, event_ids=len(ids), silver_rows=sum(silver.values()),
        dead_letters=sum(dead_lines.values()),
        missing_ids=sorted(i for i, where in ids.items()
                           if not silver[i] and i not in dead_ids and not any(dead_lines[w] for w in where)),
        doubled_ids=sorted(i for i, n in silver.items() if n > 1),
        missing_lines=[line for line in anonymous if not dead_lines[line]],
        doubled_lines=sorted(line for line, n in dead_lines.items() if n > 1),
    )
