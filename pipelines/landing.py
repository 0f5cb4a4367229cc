"""The landing-zone layout that producers (simulator, importers) write and the backfill reads.

    DIR/events/*.jsonl     one JSON event per line (see pipelines.contract), gzip allowed (*.jsonl.gz)
    DIR/dims/products.jsonl, DIR/dims/stores.jsonl   dimension rows (contract.Product / contract.Store)
    DIR/truth/             simulator only: the known demand process, for judging forecasts
    DIR/manifest.json      what the producer wrote (counts, injected faults, parameters)
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

from pipelines import contract

EVENTS_DIR = "events"
DIMS_DIR = "dims"
TRUTH_DIR = "truth"
MANIFEST = "manifest.json"
#: a UTF-8 byte-order mark some exporters put at the start of a file; not data
UTF8_BOM = b"\xef\xbb\xbf"

_encoder = msgspec.json.Encoder()


def encode(record: msgspec.Struct) -> bytes:
    """One contract record as compact JSON (the event_type tag included)."""
    return _encoder.encode(record)


def events_glob(root: Path) -> str:
    return str(root / EVENTS_DIR / "*.jsonl*")


def write_lines(path: Path, lines: Iterable[bytes]) -> int:
    """Write raw lines (already encoded, possibly deliberately broken) to a JSONL file; returns the count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "wb") as f:
        for line in lines:
            f.write(line)
            f.write(b"\n")
            n += 1
    return n


def write_events(root: Path, name: str, events: Iterable[msgspec.Struct]) -> int:
    return write_lines(root / EVENTS_DIR / f"{name}.jsonl", (encode(e) for e in events))


def write_dimensions(root: Path, products: Iterable[contract.Product], stores: Iterable[contract.Store]) -> None:
    for name, rows in (("products", products), ("stores", stores)):
        write_lines(root / DIMS_DIR / f"{name}.jsonl", (encode(r) for r in rows))


def decode_dimension(data: bytes, name: str, uri: str) -> list[tuple[msgspec.Struct, int]]:
    """Validate a dimension file's bytes: (row, line number) pairs; ValueError naming the first bad line.

    Reference data is curated and small, so a bad row stops the job with a clear message instead of
    quietly turning every event of that product or store into a dead letter.
    """
    decoder = msgspec.json.Decoder(contract.DIMENSIONS[name])
    key = contract.DIMENSION_KEYS[name]
    rows, seen = [], {}
    for n, line in enumerate(data.removeprefix(UTF8_BOM).split(b"\n"), 1):
        if not line.strip():
            continue
        try:
            row = decoder.decode(line)
        except (msgspec.MsgspecError, UnicodeDecodeError) as e:
            raise ValueError(f"{uri}:{n}: not a valid {name} row: {e}") from e
        if (first := seen.setdefault(getattr(row, key), n)) != n:
            raise ValueError(f"{uri}:{n}: {key} {getattr(row, key)!r} is already defined on line {first}")
        rows.append((row, n))
    return rows


def write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
