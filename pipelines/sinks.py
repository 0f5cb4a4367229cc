"""Where processed tables land: the local Parquet lakehouse or BigQuery. Chosen in each job's `run()`.

Local layout: a partition is a folder of Parquet files, usually one, replaced atomically:

    $LAKEHOUSE_HOME/<layer>/<table>/event_date=YYYY-MM-DD/data.parquet
    $LAKEHOUSE_HOME/<layer>/<table>/event_date=YYYY-MM-DD/part-<time>-<pid>-<n>.parquet   (the stream's appends)

The stream appends a small file per partition and micro-batch (readers see new rows within seconds without
a partition being rewritten) and folds them into data.parquet now and then; a backfill merge folds them too.

Writes are idempotent by partition and source: rewriting a partition keeps the rows that came from
other source files, replaces the rows from this run's sources, and (for tables with a key) keeps one
row per key, the first in (source_uri, source_line) order. So a re-run of the same backfill gives the
same tables, two different inputs never clobber each other, a replay never double counts, and the
result does not depend on the order in which sources were loaded. Each file is written beside its
target and renamed over it, so a reader (DuckDB, dbt, the dashboard) sees the old or the new file,
never half of one; writers of one partition serialise on a lock file (`LakeTable.lock`).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import zlib
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

from pipelines import tables
from pipelines.batches import first_copies, partition_value, split_by
from pipelines.transforms import count

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
#: (nearly) unique per row: a Parquet dictionary only costs time there (measured ~15% of a bronze write). These
#: columns are most of a file's bytes and zstd shrinks them 3-20x where lz4 manages 2-9x; the dictionary-encoded
#: rest is small already, and there zstd's set-up per page (~20 µs, a few hundred pages per partition file) cost
#: more than it saved. Measured on a year of simulated events: writing took 28% less CPU than all-zstd, files 3%
#: larger (lz4 everywhere: 40% less CPU, 80% larger).
_NO_DICTIONARY = frozenset({"event_id", "event_ts", "payload", "detail", "order_id", "customer_id", "source_line"})
DATA_FILE = "data.parquet"
#: A table's writers take turns per partition, on one of LOCK_STRIPES lock files in its LOCK_DIR. The shards of a
#: backfill write the same tables at the same time, mostly different days: with one lock per table they waited
#: for each other ~1.1 s each in an 11 s run; with 64 stripes two partitions share a lock 1 time in 64.
LOCK_DIR, LOCK_STRIPES = ".locks", 64
PARQUET_GLOB = "*.parquet"
#: Beam metrics namespace of the partitions a sink rewrote: one distribution per (table, partition), named by
#: `partition_metric`, whose sum is the rows this run kept there
PARTITIONS = "lakehouse.partitions"


class Merged(NamedTuple):
    """What `LakeTable.merge_partition` did: new rows kept, copies dropped, and whether it rewrote the partition."""

    kept: int
    dropped: int
    rewrote: bool


# ---- local Parquet lakehouse -----------------------------------------------------------------
class LakeTable:
    """One table of the local lakehouse on disk."""

    def __init__(self, root: Path, spec: tables.TableSpec):
        self.spec = spec
        self.dir = root / spec.layer / spec.name

    def partition_file(self, value: str | None) -> Path:
        if self.spec.partition_by is None:
            return self.dir / DATA_FILE
        return self.dir / f"{self.spec.partition_by}={value if value is not None else HIVE_NULL}" / DATA_FILE

    def partition_dir(self, value: str | None) -> Path:
        return self.partition_file(value).parent

    def partition_files(self, value: str | None) -> list[Path]:
        """The partition's Parquet files: data.parquet and any appended parts."""
        return sorted(self.partition_dir(value).glob(PARQUET_GLOB))

    def partitions(self) -> list[str | None]:
        """Partition values that have a file now."""
        if self.spec.partition_by is None:
            return [None] if self.partition_files(None) else []
        values = []
        for folder in sorted(self.dir.glob(f"{self.spec.partition_by}=*")):
            if any(folder.glob(PARQUET_GLOB)):
                value = folder.name.split("=", 1)[1]
                values.append(None if value == HIVE_NULL else value)
        return values

    def files(self) -> list[Path]:
        if self.spec.partition_by is None:
            return self.partition_files(None)
        return sorted(self.dir.glob(f"{self.spec.partition_by}=*/{PARQUET_GLOB}"))

    @contextmanager
    def lock(self, value: str | None):
        """Exclusive use of one partition among all writers of the table, in any process or thread (`flock`).
        Partitions share LOCK_STRIPES lock files, picked by a stable hash of the partition's folder name."""
        path = self.lock_file(value)
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def lock_file(self, value: str | None) -> Path:
        stripe = zlib.crc32(self.partition_dir(value).name.encode()) % LOCK_STRIPES
        return self.dir / LOCK_DIR / f"{stripe:02d}"

    def read_partition(self, value: str | None, files: list[Path] | None = None) -> pa.Table:
        """A partition's rows (all its files, or `files`) with the full schema (partition column from the path)."""
        files = self.partition_files(value) if files is None else files
        table = pa.concat_tables([pq.read_table(f, schema=self._file_schema) for f in files]) if files else \
            self._file_schema.empty_table()
        if self.spec.partition_by is None:
            return table
        field = self.spec.schema.field(self.spec.partition_by)
        column = pa.array([value] * table.num_rows, pa.string()).cast(field.type)
        return table.append_column(field, column).select(self.spec.schema.names)

    def write_partition(self, value: str | None, table: pa.Table, replaces: Iterable[Path] = ()) -> None:
        """Write the partition's data.parquet atomically, then remove the files it `replaces` (appended parts
        folded into it); as in Hive, the partition column lives in the path only."""
        _atomic_write(self._for_file(table), self.partition_file(value))
        for path in replaces:
            if path.name != DATA_FILE:
                path.unlink(missing_ok=True)

    def append_part(self, value: str | None, table: pa.Table) -> Path:
        """Add a small file to the partition (the stream's micro-batches); call under `lock(value)`."""
        global _PARTS
        _PARTS += 1
        name = f"part-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}-{os.getpid()}-{_PARTS}.parquet"
        path = self.partition_dir(value) / name
        _atomic_write(self._for_file(table), path)
        return path

    def compact(self, value: str | None) -> None:
        """Fold the partition's files into one data.parquet (rows sorted as a backfill writes them)."""
        with self.lock(value):
            files = self.partition_files(value)
            if len(files) > 1:
                self.write_partition(value, self.read_partition(value, files).sort_by(_sort_keys(self.spec)), files)

    def _for_file(self, table: pa.Table) -> pa.Table:
        if self.spec.partition_by is not None:
            table = table.drop_columns([self.spec.partition_by])
        return table

    @property
    def _file_schema(self) -> pa.Schema:
        if self.spec.partition_by is None:
            return self.spec.schema
        return self.spec.schema.remove(self.spec.schema.get_field_index(self.spec.partition_by))

    def _rows_from(self, value: str | None, sources: pa.Array) -> pa.ChunkedArray:
        """Per row of the partition: whether it came from `sources` (reads one column only)."""
        uris = pa.chunked_array([pq.read_table(f, columns=["source_uri"])["source_uri"]
                                 for f in self.partition_files(value)], pa.string())
        return pc.is_in(uris, value_set=sources)

    def _holds_any(self, value: str | None, sources: pa.Array) -> bool:
        return pc.any(self._rows_from(value, sources)).as_py() or False

    def count_from(self, sources: frozenset[str], values: Iterable[str | None] | None = None) -> int:
        """Rows that came from `sources`, over all partitions (or those in `values`)."""
        value_set = pa.array(sorted(sources), pa.string())
        return sum(pc.sum(self._rows_from(value, value_set).cast(pa.int64())).as_py() or 0
                   for value in (self.partitions() if values is None else values))

    def merge_partition(self, value: str | None, new: pa.Table | None, sources: frozenset[str],
                        in_file_order: bool = False) -> Merged:
        """Replace this partition's rows from `sources` with `new`; returns (new rows kept, copies dropped,
        whether the partition was rewritten: not when neither `new` nor the partition holds rows of ours).

        `in_file_order`: `new` is sorted as the files keep rows (`file_order`) and has no two rows with one
        key, so a partition that has no file yet takes it as it is."""
        schema = self.spec.schema
        new = self.spec.empty() if new is None else self.spec.conform(new)
        received = new.num_rows
        with self.lock(value):
            files = self.partition_files(value)
            if not files and in_file_order:
                if new.num_rows:
                    self.write_partition(value, new)
                return Merged(new.num_rows, 0, new.num_rows > 0)
            if files:
                ours = pa.array(sorted(sources), pa.string())
                if new.num_rows == 0 and not self._holds_any(value, ours):
                    return Merged(0, 0, False)  # a sweep, and nothing of ours here: leave the file alone
                old = self.read_partition(value, files)
                old = old.filter(pc.invert(_replaceable(old, ours)))
                new = _not_received_before(new, old)
            else:
                if new.num_rows == 0:
                    return Merged(0, 0, False)
                old = schema.empty_table()
            merged, kept_new = pa.concat_tables([old, new]), new.num_rows
            # New rows alone are unique already (MergeTable and the stream drop copies, dimension keys are
            # checked on load), so only a merge with old rows needs the key. Events: the first copy in (source_uri,
            # source_line) order wins, whichever run loaded it and when: the table is a function of the set
            # of sources loaded, not of their order. Dimensions: the latest load wins.
            if self.spec.key and new.num_rows and old.num_rows:
                order = ["source_uri", "source_line"]
                if self.spec.partition_by is None:
                    merged = merged.append_column("_old", pa.array(np.r_[np.ones(old.num_rows, bool),
                                                                        np.zeros(new.num_rows, bool)]))
                    order = ["_old", *order]
                first = first_copies(merged, list(self.spec.key), order)
                merged = merged.select(schema.names)
                kept_new = int(first[old.num_rows:].sum())
                merged = merged.filter(pa.array(first))
            self.write_partition(value, merged.sort_by(_sort_keys(self.spec)), files)
        return Merged(kept_new, received - kept_new, True)


_PARTS = 0


def _replaceable(old: pa.Table, ours: pa.Array) -> pa.ChunkedArray:
    """Rows a load of `ours` replaces: those it read from them before. Rows the stream took from a subscription
    (message_id set) stay even when they name an archive file of ours: a repair over the archive fills gaps
    around them and keeps their Pub/Sub lineage."""
    from_ours = pc.is_in(old["source_uri"], value_set=ours)
    if "message_id" not in old.column_names:
        return from_ours
    return pc.and_(from_ours, pc.is_null(old["message_id"]))


def _not_received_before(new: pa.Table, old: pa.Table) -> pa.Table:
    """`new` without the records `old` already holds as the same archive line (the stream's copy of it)."""
    if "message_id" not in old.column_names or not pc.any(pc.is_valid(old["message_id"])).as_py():
        return new
    streamed = old.filter(pc.and_(pc.is_valid(old["message_id"]), pc.is_valid(old["source_line"])))
    held = set(zip(streamed["source_uri"].to_pylist(), streamed["source_line"].to_pylist()))
    keep = [(u, n) not in held for u, n in zip(new["source_uri"].to_pylist(), new["source_line"].to_pylist())]
    return new.filter(pa.array(keep, pa.bool_()))


def _sort_keys(spec: tables.TableSpec) -> list[tuple[str, str]]:
    """Rows in event time (then source) order: the same file whatever the load order, and tight Parquet
    min/max statistics on event_ts for readers that prune row groups."""
    first = ["event_ts"] if "event_ts" in spec.schema.names else list(spec.key)
    keys = [*first, "source_uri", "source_line"]  # (source_uri, source_line) is unique: a total order
    return [(c, "ascending") for c in dict.fromkeys(keys) if c in spec.schema.names]


def _atomic_write(table: pa.Table, path: Path) -> None:
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dictionary = [c for c in table.column_names if c not in _NO_DICTIONARY]
    compression = {c: "zstd" if c in _NO_DICTIONARY else "lz4" for c in table.column_names}
    # Encoded in memory and written in one go: the writer's many small writes to a file cost ~1 ms per file
    # here (syscalls are dear on this VM), about as much as encoding a partition of a few thousand rows.
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression=compression, use_dictionary=dictionary, write_statistics=True)
    with open(tmp, "wb") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)


# ---- the stream's appends ----------------------------------------------------------------------
def record_identities(spec: tables.TableSpec, table: pa.Table) -> list:
    """What makes two rows one within a partition: the key (events: event_id), or, for tables without one, the
    received record (archive line, else Pub/Sub message id), so a redelivered message lands once."""
    if spec.key:
        columns = [table[c].to_pylist() for c in spec.key if c != spec.partition_by]
        return columns[0] if len(columns) == 1 else list(zip(*columns))
    uris, lines, ids = (table[c].to_pylist() for c in tables.RECORD_ID)
    return [(u, n) if n is not None else (u, m) for u, n, m in zip(uris, lines, ids)]


class StreamAppender:
    """Appends micro-batches to lakehouse partitions as small files, each row at most once.

    A row whose identity (`record_identities`) the partition already holds is dropped: earlier copies win,
    whoever wrote them. The identities of each partition are read once and then kept current; a partition whose
    files changed behind our back (a backfill merged it) is read again. Every `compact_after` appended files
    are folded into the partition's data.parquet.
    """

    def __init__(self, root: Path, compact_after: int = 30):
        self.root, self.compact_after = Path(root), compact_after
        self._seen: dict[tuple[str, str | None], tuple[frozenset, set]] = {}

    def append(self, fqn: str, value: str | None, new: pa.Table) -> pa.Table:
        """Write the rows of `new` (one partition) not seen before; returns them."""
        lake = LakeTable(self.root, tables.TABLES[fqn])
        new = lake.spec.conform(new)
        order = [(c, "ascending", "at_end") for c in ("publish_time", "source_uri", "source_line")]
        new = new.take(pc.sort_indices(new, sort_keys=order))
        with lake.lock(value):
            files = lake.partition_files(value)
            seen = self._identities(lake, (fqn, value), files)
            keep = np.zeros(new.num_rows, dtype=bool)
            for i, identity in enumerate(record_identities(lake.spec, new)):
                if identity not in seen:
                    seen.add(identity)
                    keep[i] = True
            kept = new.filter(pa.array(keep)) if not keep.all() else new
            if kept.num_rows:
                files.append(lake.append_part(value, kept))
            if len(files) > self.compact_after:
                lake.write_partition(value, lake.read_partition(value, files).sort_by(_sort_keys(lake.spec)), files)
                files = lake.partition_files(value)
            self._seen[(fqn, value)] = (_signature(files), seen)
        return kept

    def _identities(self, lake: LakeTable, key: tuple[str, str | None], files: list[Path]) -> set:
        cached = self._seen.get(key)
        if cached is not None and cached[0] == _signature(files):
            return cached[1]
        columns = [c for c in (lake.spec.key or tables.RECORD_ID) if c != lake.spec.partition_by]
        seen: set = set()
        for f in files:
            part = pq.read_table(f, columns=columns)
            seen.update(record_identities(_without_partition(lake.spec), part))
        return seen


def _signature(files: list[Path]) -> frozenset:
    return frozenset((f.name, f.stat().st_mtime_ns) for f in files if f.exists())


def _without_partition(spec: tables.TableSpec) -> tables.TableSpec:
    return tables.TableSpec(spec.layer, spec.name, spec.schema, spec.description,
                            key=tuple(c for c in spec.key if c != spec.partition_by))


def add_to_windows(root: Path, rows: pa.Table) -> int:
    """Add the panes in `rows` (silver.demand_windows columns, a delta each) to the stored windows: sums add up,
    `panes` counts firings, the latest firing's timing and time win. Returns the windows touched."""
    spec = tables.DEMAND_WINDOWS
    lake = LakeTable(root, spec)
    touched = 0
    sums = ["units_ordered", "units_returned", "order_lines", "net_revenue", "panes"]
    for value, part in split_by(spec.conform(rows), spec.partition_by):
        with lake.lock(value):
            files = lake.partition_files(value)
            both = pa.concat_tables([lake.read_partition(value, files), part]) if files else part
            merged = both.group_by(list(spec.key), use_threads=False).aggregate(
                [(c, "sum") for c in sums] + [("window_end", "max"), ("window_date", "max"),
                                              ("last_pane", "last"), ("updated_at", "max")])
            merged = merged.rename_columns([n.removesuffix("_sum").removesuffix("_max").removesuffix("_last")
                                            for n in merged.column_names])
            lake.write_partition(value, spec.conform(merged).sort_by(_sort_keys(spec)), files)
            touched += part.num_rows
    return touched


class WriteToLakehouse(beam.PTransform):
    """(table fqn, pyarrow.Table) -> the tables' partitions merged into Parquet files under `root`.

    All rows of a table meet in one place (a GroupByKey on the table name), are sorted once into the order
    the files keep (partition, then event time and source), lose their copies (tables with a key: the first
    copy in (source_uri, source_line) order wins) and are cut into partitions, each merged into its folder.
    `sources` are the input URIs this run owns: their earlier rows are replaced. `existing` lists
    (fqn, partition) pairs already on disk, so partitions this run no longer produces are swept too.
    """

    def __init__(self, root: Path, sources: Iterable[str], existing: Iterable[tuple[str, str | None]] = ()):
        super().__init__()
        self.root, self.sources, self.existing = Path(root), frozenset(sources), list(existing)

    def expand(self, pcoll):
        sweep = (
            pcoll.pipeline
            | "ListExistingPartitions" >> beam.Create(self.existing, reshuffle=False)
            | "KeyForSweep" >> beam.MapTuple(lambda fqn, value: (fqn, _OnDisk(value)))
        )
        return (
            (pcoll, sweep)
            | "WithExistingPartitions" >> beam.Flatten()
            | "GroupByTable" >> beam.GroupByKey()
            | "MergeIntoPartitions" >> beam.ParDo(MergeTable(self.root, self.sources))
        )


class _OnDisk(NamedTuple):
    """A partition the lakehouse holds before the run (to sweep if the run brings it nothing)."""

    value: str | None


class MergeTable(beam.DoFn):
    """(fqn, [tables and _OnDisk markers]) -> each partition file rewritten; yields (fqn, partition, rows).

    Each partition rewritten is also reported as a distribution in the `PARTITIONS` metrics namespace (see
    `partitions_written`), so the launcher learns which partitions other runs may have merged into too."""

    def __init__(self, root: Path, sources: frozenset[str]):
        self.root, self.sources = root, sources

    def process(self, element):
        fqn, values = element
        lake = LakeTable(self.root, tables.TABLES[fqn])
        spec, parts, on_disk = lake.spec, [], set()
        for value in values:
            if isinstance(value, _OnDisk):
                on_disk.add(value.value)
            elif value.num_rows:
                parts.append(spec.conform(value))
        # copies within the run go here; merge_partition handles those of earlier loads
        new, copies = file_order(pa.concat_tables(parts), spec, unique=True) if parts else (spec.empty(), 0)
        count_superseded(fqn, copies)
        for value, part in contiguous_partitions(new, spec.partition_by):
            on_disk.discard(value)
            yield fqn, value, self.merge(lake, value, part)
        for value in sorted(on_disk, key=str):  # a sweep: nothing of ours here any more
            yield fqn, value, self.merge(lake, value, None)

    def merge(self, lake: LakeTable, value: str | None, part: pa.Table | None) -> int:
        merged = lake.merge_partition(value, part, self.sources, in_file_order=part is not None)
        count(f"rows_written.{lake.spec.fqn}", merged.kept)
        count_superseded(lake.spec.fqn, merged.dropped)
        if merged.rewrote:
            Metrics.distribution(PARTITIONS, partition_metric(lake.spec.fqn, value)).update(merged.kept)
        return merged.kept


def partition_metric(fqn: str, value: str | None) -> str:
    return f"{fqn}/{value if value is not None else HIVE_NULL}"


def partitions_written(metrics: Iterable[tuple[str, int]]) -> dict[tuple[str, str | None], int]:
    """(fqn, partition) -> rows kept, from (`partition_metric` name, sum) pairs of the `PARTITIONS` namespace."""
    written: dict[tuple[str, str | None], int] = {}
    for name, rows in metrics:  # one name from several steps: add up
        fqn, value = name.split("/", 1)
        key = (fqn, None if value == HIVE_NULL else value)
        written[key] = written.get(key, 0) + rows
    return written


def count_superseded(fqn: str, n: int) -> None:
    """Count rows dropped for a key seen before: copies of an event, or a dimension row defined again."""
    if n:
        count("duplicates_removed" if fqn in tables.SILVER_EVENTS else f"rows_superseded.{fqn}", n)


def file_order(table: pa.Table, spec: tables.TableSpec, unique: bool = False) -> tuple[pa.Table, int]:
    """The rows in the order partition files keep them: by partition (null last), then `_sort_keys`; returns
    (rows, copies dropped). `unique` (tables with a key): only the first copy per key in (source_uri, source_line)
    order stays. Copies leave the sort order before the one take of the rows: dropping them from the sorted table
    would copy every row a second time."""
    # event_date is the UTC date of event_ts (batches.utc_dates): event time order is partition order already
    implied = spec.partition_by == tables.EVENT_DATE.name and "event_ts" in spec.schema.names
    first = [spec.partition_by] if spec.partition_by and not implied else []
    keys = [(c, "ascending", "at_end") for c in dict.fromkeys([*first, *(c for c, _ in _sort_keys(spec))])]
    order = pc.sort_indices(table, sort_keys=keys)
    if not (unique and spec.key and table.num_rows > 1):
        return table.take(order), 0
    keep = first_copies(table, list(spec.key), ["source_uri", "source_line"])
    if keep.all():
        return table.take(order), 0
    rows = order.to_numpy()
    return table.take(pa.array(rows[keep[rows]])), int((~keep).sum())


def contiguous_partitions(table: pa.Table, column: str | None) -> list[tuple[str | None, pa.Table]]:
    """(partition value, rows) of a table sorted by its partition column: zero-copy slices, in order."""
    if column is None:
        return [(None, table)]
    if table.num_rows == 0:
        return []
    col = table[column].combine_chunks()
    codes = pc.dictionary_encode(col).indices.fill_null(-1).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    if len(np.unique(codes[starts])) != len(starts):  # a partition in two runs would be merged twice: rows lost
        raise ValueError(f"rows are not grouped by {column}")
    ends = np.r_[starts[1:], len(codes)]
    return [(partition_value(col[int(s)].as_py()), table.slice(s, e - s)) for s, e in zip(starts, ends)]


# ---- BigQuery --------------------------------------------------------------------------------
class WriteToBigQueryTables(beam.PTransform):
    """(table fqn, pyarrow.Table) -> BigQuery tables `<project>:<dataset>.<table>`.

    `method` is Beam's: FILE_LOADS (batch loads through GCS temp files; the backfill on Dataflow) or
    STREAMING_INSERTS (what the BigQuery emulator test uses: the emulator cannot read gs:// files).

    Tables are created if missing, partitioned by day on their partition column and clustered as the
    contract says; the Terraform module provisions the same definitions. Event tables and dead letters
    are appended: on BigQuery a re-run or replay adds rows again, and dbt's staging models keep the first
    copy per event (the layer where delivery becomes exactly-once). Dimensions are replaced on each load.
    """

    def __init__(self, table_ids: dict[str, str], method: str = "FILE_LOADS"):
        super().__init__()
        self.table_ids, self.method = table_ids, method

    def expand(self, pcoll):
        from apache_beam.io.gcp.bigquery import WriteToBigQuery

        results = {}
        for fqn, table_id in self.table_ids.items():
            spec = tables.TABLES[fqn]
            extra = {}
            if spec.partition_by:
                extra["timePartitioning"] = {"type": "DAY", "field": spec.partition_by}
            if spec.cluster_by:
                extra["clustering"] = {"fields": list(spec.cluster_by)}
            results[fqn] = (
                pcoll
                | f"Select {fqn}" >> beam.Filter(lambda element, name=fqn: element[0] == name)
                | f"ToRows {fqn}" >> beam.FlatMap(bigquery_rows)
                | f"Write {fqn}" >> WriteToBigQuery(
                    table=table_id,
                    schema={"fields": spec.bigquery_schema()},
                    additional_bq_parameters=extra,
                    method=self.method,
                    create_disposition="CREATE_IF_NEEDED",
                    # Only batch loads can replace a table; streaming inserts append (the stream never
                    # loads dimensions, and a dimension load through it adds its rows again).
                    write_disposition="WRITE_TRUNCATE" if not spec.partition_by and self.method == "FILE_LOADS"
                    else "WRITE_APPEND",
                    # streaming inserts: retry what may pass later, never a row BigQuery rejects (Beam's
                    # default retries forever)
                    insert_retry_strategy="RETRY_ON_TRANSIENT_ERROR",
                )
            )
        return results


def bigquery_rows(element):
    """JSON-ready rows of an Arrow table (timestamps and dates as ISO strings), counted as written."""
    fqn, table = element
    count(f"rows_written.{fqn}", table.num_rows)
    for row in table.to_pylist():
        yield {k: (v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v) for k, v in row.items()}
