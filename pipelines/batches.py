"""Columnar building blocks of the pipelines: chunks of raw lines in, Arrow tables out.

Pure functions over pyarrow, no Beam and no I/O. The Beam DoFns in `pipelines.transforms` call them
once per chunk of thousands of lines, so the per-record cost is msgspec's decode plus a few vectorised
Arrow kernels instead of a dozen Beam steps per record.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field, replace

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import contract, tables
from pipelines.parsing import (
    FAST_EVENT_DECODER,
    PATTERNS,
    UNPATTERNED,
    Limits,
    Rejection,
    check_event,
    is_utf8,
    parse_line,
)

_TAG = {c: cls.__struct_config__.tag for cls in contract.Event.__args__ for c in (cls, UNPATTERNED[cls])}
_ENTITY = {cls: contract.ENTITY_OF[tag] for cls, tag in _TAG.items()}
#: entity -> the event fields its bronze table holds, and the (field, pattern) pairs FAST_EVENT_DECODER skips
_FIELDS = {e: [n for n in tables.bronze_events(e).schema.names if n in cls.__struct_fields__]
           for e, cls in contract.ENTITY_STRUCT.items()}
_PATTERNS = {e: sorted({p for cls, entity in _ENTITY.items() if entity == e for p in PATTERNS[cls]}, key=str)
             for e in contract.ENTITY_STRUCT}
if any(cls.__struct_fields__ != tuple(_FIELDS[entity]) for cls, entity in _ENTITY.items()):
    # _bronze_table turns events into columns by transposing their field tuples
    raise TypeError("every event struct of an entity must declare the entity's fields, in one order")


@dataclass(frozen=True)
class Messages:
    """Where each line of a chunk of Pub/Sub messages came from (one entry per line)."""

    source_uris: list[str]
    source_lines: list[int | None]
    message_ids: list[str]
    publish_times: list[dt.datetime]
    attributes: list[str | None]  # JSON object text


@dataclass(frozen=True)
class LineChunk:
    """Raw lines to validate: consecutive lines of one file (`first_line` is the 1-based number of `lines[0]`),
    or a batch of Pub/Sub messages (`messages` says where each came from)."""

    source_uri: str
    first_line: int
    lines: list[bytes]
    messages: Messages | None = None

    def lineage(self, rows: list[int]) -> dict[str, pa.Array]:
        """The lineage columns (tables.LINEAGE) for the chunk's lines at 0-based positions `rows`."""
        if self.messages is None:
            return file_lineage(self.source_uri, [self.first_line + i for i in rows])
        m, types = self.messages, _LINEAGE_TYPES
        return {name: pa.array([values[i] for i in rows], types[name]) for name, values in (
            ("source_uri", m.source_uris), ("source_line", m.source_lines), ("message_id", m.message_ids),
            ("publish_time", m.publish_times), ("attributes", m.attributes))}


_LINEAGE_TYPES = {f.name: f.type for f in tables.LINEAGE}


def file_lineage(source_uri: str, lines: list[int | None]) -> dict[str, pa.Array]:
    """Lineage columns of records read from a file: no Pub/Sub fields."""
    n = len(lines)
    return {"source_uri": pa.repeat(pa.scalar(source_uri, pa.string()), n), "source_line": pa.array(lines, pa.int64()),
            **{name: pa.nulls(n, _LINEAGE_TYPES[name]) for name in ("message_id", "publish_time", "attributes")}}


@dataclass(frozen=True)
class RunInfo:
    """What every record written by one run shares."""

    run_id: str
    started_at: dt.datetime
    limits: Limits


@dataclass
class ParsedChunk:
    events: dict[str, pa.Table] = field(default_factory=dict)  # entity -> bronze-shaped table
    dead_letters: pa.Table | None = None


def parse_chunk(chunk: LineChunk, run: RunInfo) -> ParsedChunk:
    """Validate every line of a chunk; valid events become bronze-shaped tables per entity."""
    accepted: dict[str, tuple[list, list[int], list[bytes]]] = {e: ([], [], []) for e in contract.ENTITY_STRUCT}
    rejected: list[tuple[Rejection, int, bytes]] = []
    limits = run.limits
    if chunk.messages is not None and chunk.messages.publish_times:
        # a message's clock is its publish time: "from the future" means stamped later than that plus the skew
        limits = replace(limits, now=max(chunk.messages.publish_times))
    # The hot loop calls msgspec (without the contract's string patterns: _bronze_table checks them per distinct
    # value) and check_event directly; a line either rejects goes through parse_line, which decides and works out
    # why. Same rules as parse_line, a fraction of the per-line overhead.
    decode, max_bytes = FAST_EVENT_DECODER.decode, limits.max_payload_bytes
    for row, raw in enumerate(chunk.lines):
        try:
            result = check_event(decode(raw), limits) if len(raw) <= max_bytes else None
        except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
            result = None
        if result is None or type(result) is Rejection:
            result = parse_line(raw, limits)
        if type(result) is Rejection:
            rejected.append((result, row, raw))
            continue
        events, rows, payloads = accepted[_ENTITY[type(result)]]
        events.append(result)
        rows.append(row)
        payloads.append(raw)
    out = ParsedChunk()
    for entity, (events, rows, payloads) in accepted.items():
        if events:
            table, bad = _bronze_table(entity, events, rows, payloads, chunk, limits)
            rejected.extend(bad)
            if table.num_rows:
                out.events[entity] = table
    if rejected:
        out.dead_letters = dead_letter_table([(r, raw) for r, _, raw in rejected],
                                             chunk.lineage([row for _, row, _ in rejected]), run)
    return out


def _bronze_table(entity, events, rows, payloads, chunk: LineChunk, limits: Limits):
    """Bronze rows for valid events. Rejected here (rare): a payload with invalid UTF-8 in an ignored field, and a
    string its field's contract pattern refuses (FAST_EVENT_DECODER leaves those to this check); parse_line says why."""
    spec = tables.bronze_events(entity)
    schema = spec.schema
    columns = dict(zip(_FIELDS[entity], map(list, zip(*map(msgspec.structs.astuple, events)))))
    bad = _pattern_misses(entity, columns)
    try:
        payload = pa.array(payloads, pa.binary()).cast(pa.string())
    except pa.ArrowInvalid:
        bad.update(i for i, p in enumerate(payloads) if not is_utf8(p))
    if bad:
        rejected = [(parse_line(payloads[i], limits), rows[i], payloads[i]) for i in sorted(bad)]
        events, rows, payloads = ([x for i, x in enumerate(column) if i not in bad]
                                  for column in (events, rows, payloads))
        table, _ = _bronze_table(entity, events, rows, payloads, chunk, limits) if events else (spec.empty(), [])
        return table, rejected
    columns["event_type"] = [_TAG[type(e)] for e in events]
    arrays = {n: to_arrow(columns[n], schema.field(n).type) for n in columns}
    arrays["event_date"] = utc_dates(arrays["event_ts"])
    arrays["payload"] = payload
    arrays.update(chunk.lineage(rows))
    return pa.Table.from_pydict({n: arrays[n] for n in schema.names}, schema=schema), []


def _pattern_misses(entity: str, columns: dict[str, list]) -> set[int]:
    """Positions of events with a string that fails its field's contract pattern (each distinct value checked once)."""
    misses: set[int] = set()
    for name, regex in _PATTERNS[entity]:
        values = columns[name]
        failing = {v for v in set(values) if isinstance(v, str) and not regex.search(v)}
        if failing:
            misses.update(i for i, v in enumerate(values) if v in failing)
    return misses


def to_arrow(values: list, type_: pa.DataType) -> pa.Array:
    """An Arrow array of Python values. Aware datetimes (the contract's) become RFC 3339 text in one msgspec call and
    Arrow parses that text, offsets included, in one vectorised cast: ~0.1 µs a value, where Arrow's conversion of
    datetime objects calls each one's `utcoffset()` (~0.36 µs). Exact: the text holds every microsecond."""
    if pa.types.is_timestamp(type_) and type_.tz == "UTC":
        return pa.array(msgspec.to_builtins(values), pa.string()).cast(type_)
    return pa.array(values, type_)


def utc_dates(ts: pa.Array) -> pa.Array:
    """UTC calendar date of UTC timestamps (independent of the machine's time zone)."""
    micros = pc.cast(ts, pa.int64()).to_numpy(zero_copy_only=False)
    days = np.floor_divide(micros, 86_400_000_000).astype("int32")
    return pa.array(days, pa.date32())


def dead_letter_table(rows: list[tuple[Rejection, bytes]], lineage: dict[str, pa.Array], run: RunInfo) -> pa.Table:
    """Dead-letter rows for (rejection, original payload) pairs, with their lineage columns (tables.LINEAGE)."""
    records = []
    for rejection, raw in rows:
        text, encoding = payload_text(raw)
        records.append({
            "failed_at": run.started_at,
            "run_id": run.run_id,
            "stage": rejection.stage,
            "reason": rejection.reason,
            "detail": rejection.detail,
            "payload": text,
            "payload_encoding": encoding,
            "payload_bytes": len(raw),
            "event_id": rejection.event_id,
            "event_type": rejection.event_type,
            # a claimed date in the future would open a partition per bogus day: keep those unpartitioned
            "event_date": tables.utc_date(rejection.event_ts)
            if rejection.event_ts and rejection.event_ts <= run.limits.latest_event_ts else None,
        })
    return with_lineage(records, lineage, tables.DEAD_LETTER.schema)


def with_lineage(records: list[dict], lineage: dict[str, pa.Array], schema: pa.Schema) -> pa.Table:
    """A table of `schema` from row dicts without lineage plus the lineage columns."""
    table = pa.Table.from_pylist(records, schema=pa.schema([f for f in schema if f.name not in _LINEAGE_TYPES]))
    for name, column in lineage.items():
        table = table.append_column(schema.field(name), column)
    return table.select(schema.names)


def payload_text(raw: bytes) -> tuple[str, str]:
    """The payload as text: UTF-8 as is, anything else base64 (so no byte is lost)."""
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


def first_copies(table: pa.Table, key: str | list[str], order_by: list[str]) -> np.ndarray:
    """Boolean mask (in row order): True for the first row per `key` (one or more columns) in `order_by` order."""
    keys = [key] if isinstance(key, str) else list(key)
    first = np.ones(table.num_rows, dtype=bool)
    if table.num_rows < 2:
        return first
    order = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in (*keys, *order_by)])
    repeated = np.ones(table.num_rows - 1, dtype=bool)
    for name in keys:
        column = pc.take(table[name], order)
        same = pc.equal(column.slice(1), column.slice(0, len(column) - 1))
        repeated &= same.fill_null(False).to_numpy(zero_copy_only=False)
    first[order.to_numpy()[1:][repeated]] = False
    return first


@dataclass(frozen=True)
class Dimensions:
    """Product and store dimension rows (contract columns only), the side input of the enrichment."""

    products: pa.Table
    stores: pa.Table

    @classmethod
    def from_records(cls, products: list, stores: list) -> Dimensions:
        def table(name, rows):
            keys = [getattr(r, contract.DIMENSION_KEYS[name]) for r in rows]
            if len(set(keys)) != len(keys):  # a repeated key would multiply every event in the join
                raise ValueError(f"{name}: {contract.DIMENSION_KEYS[name]} values must be unique")
            schema = pa.schema([f for f in tables.dimension(name).schema if f.name not in _LINEAGE_TYPES])
            return pa.Table.from_pylist([dict(zip(r.__struct_fields__, _values(r))) for r in rows], schema=schema)

        return cls(table("products", products), table("stores", stores))


def _values(record):
    return tuple(getattr(record, f) for f in record.__struct_fields__)


def enrich(bronze: pa.Table, entity: str, dims: Dimensions, run: RunInfo) -> tuple[pa.Table, pa.Table | None]:
    """Look up dimension attributes for each event (rows keep their order); unknown keys become dead letters."""
    silver_schema = tables.silver_events(entity).schema
    joined, found = bronze, {}
    for name, key in contract.DIMENSION_KEYS.items():
        dim = getattr(dims, name)
        position = pc.index_in(bronze[key], value_set=dim[key])  # null where the key is unknown
        found[name] = pc.is_valid(position)
        for attribute in tables.ENRICHMENT[name]:
            joined = joined.append_column(attribute.name, dim[attribute.name].take(position))
    unknown_store = pc.invert(found["stores"])
    bad = pc.or_(unknown_store, pc.invert(found["products"]))
    joined = joined.append_column(tables.ARRIVED_LATE, pa.nulls(joined.num_rows, pa.bool_()))  # the stream sets it
    silver = joined.select(silver_schema.names)  # before any filter: filtering copies, and payload is most bytes
    if not pc.any(bad).as_py():
        return silver.cast(silver_schema), None
    silver = silver.filter(pc.invert(bad)).cast(silver_schema)
    rejects = joined.filter(bad)
    rows = []
    for rec, no_store in zip(rejects.select(["event_id", "event_type", "event_ts", "store_id", "product_id",
                                              "payload"]).to_pylist(),
                             pc.filter(unknown_store, bad).to_pylist()):
        if no_store:
            rejection = Rejection("enrich", "unknown_store", f"store_id {rec['store_id']!r} is not in the store "
                                  "dimension", rec["event_id"], rec["event_type"], rec["event_ts"])
        else:
            rejection = Rejection("enrich", "unknown_product", f"product_id {rec['product_id']!r} is not in the "
                                  "product dimension", rec["event_id"], rec["event_type"], rec["event_ts"])
        rows.append((rejection, rec["payload"].encode()))
    lineage = {name: rejects[name].combine_chunks() for name in _LINEAGE_TYPES}
    return silver, dead_letter_table(rows, lineage, run)


def split_by(table: pa.Table, column: str) -> list[tuple[str | None, pa.Table]]:
    """Split a table by the values of one column (dates as ISO strings, null as None)."""
    if table.num_rows == 0:
        return []
    values = table[column]
    uniques = pc.unique(values)
    if len(uniques) == 1:
        return [(partition_value(uniques[0].as_py()), table)]
    table = table.combine_chunks()  # take() on a many-chunk table re-resolves every chunk each call
    order = pc.sort_indices(table, sort_keys=[(column, "ascending", "at_end")])
    col = table[column].take(order).combine_chunks()
    valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
    codes = pc.dictionary_encode(col).indices.fill_null(-1).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    ends = np.r_[starts[1:], len(codes)]
    # take() copies: a slice would drag (and pickle) its parent's whole buffers along
    return [
        (partition_value(col[int(s)].as_py()) if valid[s] else None, table.take(order.slice(s, e - s)))
        for s, e in zip(starts, ends)
    ]


def partition_value(value) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.date) else str(value)
