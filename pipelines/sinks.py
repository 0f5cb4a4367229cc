"""Where processed tables land: the local Parquet lakehouse or BigQuery. Chosen in each job's `run()`.

Local layout, one Parquet file per partition, replaced atomically:

    $LAKEHOUSE_HOME/<layer>/<table>/event_date=YYYY-MM-DD/data.parquet

Writes are idempotent by partition and source: rewriting a partition keeps the rows that came from
other source files, replaces the rows from this run's sources, and (for tables with a key) keeps one
row per key, the first in (source_uri, source_line) order. So a re-run of the same backfill gives the
same tables, two different inputs never clobber each other, a replay never double counts, and the
result does not depend on the order in which sources were loaded. Each file is written beside its
target and renamed over it, so a reader (DuckDB, dbt, the dashboard) sees the old or the new file,
never half of one; writers of one table serialise on a lock file.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines import tables
from pipelines.batches import first_copies
from pipelines.transforms import count, key_by_partition

HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
#: (nearly) unique per row: a Parquet dictionary only costs time there (measured ~15% of a bronze write)
_NO_DICTIONARY = frozenset({"event_id", "event_ts", "payload", "detail", "order_id", "customer_id", "source_line"})
DATA_FILE = "data.parquet"


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

    def partitions(self) -> list[str | None]:
        """Partition values that have a file now."""
        if self.spec.partition_by is None:
            return [None] if (self.dir / DATA_FILE).exists() else []
        values = []
        for path in sorted(self.dir.glob(f"{self.spec.partition_by}=*/{DATA_FILE}")):
            value = path.parent.name.split("=", 1)[1]
            values.append(None if value == HIVE_NULL else value)
        return values

    def files(self) -> list[Path]:
        return sorted(self.dir.glob(f"**/{DATA_FILE}"))

    @contextmanager
    def lock(self):
        if not self.dir.is_dir():
            self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_partition(self, value: str | None) -> pa.Table:
        """A partition's rows with the full schema (the partition column comes from the path)."""
        table = pq.read_table(self.partition_file(value), schema=self._file_schema)
        if self.spec.partition_by is None:
            return table
        field = self.spec.schema.field(self.spec.partition_by)
        column = pa.array([value] * table.num_rows, pa.string()).cast(field.type)
        return table.append_column(field, column).select(self.spec.schema.names)

    def write_partition(self, value: str | None, table: pa.Table) -> None:
        """Replace a partition's file atomically; as in Hive, the partition column lives in the path only."""
        if self.spec.partition_by is not None:
            table = table.drop_columns([self.spec.partition_by])
        _atomic_write(table, self.partition_file(value))

    @property
    def _file_schema(self) -> pa.Schema:
        if self.spec.partition_by is None:
            return self.spec.schema
        return self.spec.schema.remove(self.spec.schema.get_field_index(self.spec.partition_by))

    def _rows_from(self, value: str | None, sources: pa.Array) -> pa.ChunkedArray:
        """Per row of the partition: whether it came from `sources` (reads one column only)."""
        uris = pq.read_table(self.partition_file(value), columns=["source_uri"])["source_uri"]
        return pc.is_in(uris, value_set=sources)

    def _holds_any(self, value: str | None, sources: pa.Array) -> bool:
        return pc.any(self._rows_from(value, sources)).as_py() or False

    def count_from(self, sources: frozenset[str]) -> int:
        """Rows that came from `sources`, over all partitions."""
        value_set = pa.array(sorted(sources), pa.string())
        return sum(pc.sum(self._rows_from(value, value_set).cast(pa.int64())).as_py() or 0
                   for value in self.partitions())

    def merge_partition(self, value: str | None, new: pa.Table | None, sources: frozenset[str]) -> tuple[int, int]:
        """Replace this partition's rows from `sources` with `new`; returns (new rows kept, copies dropped)."""
        path = self.partition_file(value)
        schema = self.spec.schema
        new = new.select(schema.names).cast(schema) if new is not None else schema.empty_table()
        with self.lock():
            if path.exists():
                ours = pa.array(sorted(sources), pa.string())
                if new.num_rows == 0 and not self._holds_any(value, ours):
                    return 0, 0  # a sweep, and nothing of ours here: leave the file alone
                old = self.read_partition(value)
                old = old.filter(pc.invert(pc.is_in(old["source_uri"], value_set=ours)))
            else:
                if new.num_rows == 0:
                    return 0, 0
                old = schema.empty_table()
            merged, kept_new = pa.concat_tables([old, new]), new.num_rows
            # New rows alone are unique already (the pipeline deduplicates, dimension keys are checked on
            # load), so only a merge with old rows needs the key. Events: the first copy in (source_uri,
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
            self.write_partition(value, merged.sort_by(_sort_keys(self.spec)))
        return kept_new, new.num_rows - kept_new


def _sort_keys(spec: tables.TableSpec) -> list[tuple[str, str]]:
    """Rows in event time (then source) order: the same file whatever the load order, and tight Parquet
    min/max statistics on event_ts for readers that prune row groups."""
    first = ["event_ts"] if "event_ts" in spec.schema.names else list(spec.key)
    keys = [*first, "source_uri", "source_line"]  # (source_uri, source_line) is unique: a total order
    return [(c, "ascending") for c in dict.fromkeys(keys)]


def _atomic_write(table: pa.Table, path: Path) -> None:
    if not path.parent.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    dictionary = [c for c in table.column_names if c not in _NO_DICTIONARY]
    pq.write_table(table, tmp, compression="zstd", use_dictionary=dictionary, write_statistics=True)
    os.replace(tmp, path)


class WriteToLakehouse(beam.PTransform):
    """(table fqn, pyarrow.Table) -> one merged Parquet file per (table, partition) under `root`.

    `sources` are the input URIs this run owns: their earlier rows are replaced. `existing` lists
    (fqn, partition) pairs already on disk, so partitions this run no longer produces are swept too.
    """

    def __init__(self, root: Path, sources: Iterable[str], existing: Iterable[tuple[str, str | None]] = ()):
        super().__init__()
        self.root, self.sources, self.existing = Path(root), frozenset(sources), list(existing)

    def expand(self, pcoll):
        keyed = pcoll | "KeyByPartition" >> beam.FlatMap(key_by_partition)
        sweep = (
            pcoll.pipeline
            | "ListExistingPartitions" >> beam.Create(self.existing)
            | "KeyForSweep" >> beam.Map(lambda key: (key, None))
        )
        return (
            (keyed, sweep)
            | "WithExistingPartitions" >> beam.Flatten()
            | "GroupByPartition" >> beam.GroupByKey()
            | "MergeIntoPartition" >> beam.ParDo(MergePartition(self.root, self.sources))
        )


class MergePartition(beam.DoFn):
    """((fqn, partition), [tables or None]) -> the partition file rewritten; yields (fqn, partition, rows)."""

    def __init__(self, root: Path, sources: frozenset[str]):
        self.root, self.sources = root, sources

    def process(self, element):
        (fqn, value), parts = element
        parts = [p for p in parts if p is not None and p.num_rows]
        new = pa.concat_tables(parts) if parts else None
        written, dropped = LakeTable(self.root, tables.TABLES[fqn]).merge_partition(value, new, self.sources)
        count(f"rows_written.{fqn}", written)
        if dropped:  # a dimension row defined again by another file is not an event duplicate
            count("duplicates_removed" if fqn in tables.SILVER_EVENTS else f"rows_superseded.{fqn}", dropped)
        yield fqn, value, written


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
                )
            )
        return results


def bigquery_rows(element):
    """JSON-ready rows of an Arrow table (timestamps and dates as ISO strings), counted as written."""
    fqn, table = element
    count(f"rows_written.{fqn}", table.num_rows)
    for row in table.to_pylist():
        yield {k: (v.isoformat() if isinstance(v, (dt.datetime, dt.date)) else v) for k, v in row.items()}
