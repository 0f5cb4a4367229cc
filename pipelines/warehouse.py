"""The local warehouse: a DuckDB file whose schemas hold views over the Parquet lakehouse.

    $LAKEHOUSE_HOME/warehouse.duckdb
      bronze.order_events, bronze.inventory_events, bronze.dead_letter
      silver.order_events, silver.inventory_events, silver.products, silver.stores
      ops.pipeline_runs                       one row per pipeline run (from the run records)

The views read the Parquet files at query time, so they always show the latest data, and the DuckDB
file is only written when a view's definition changes (a table's first files appear). Readers open it
read-only (`connect()`), so any number of them can query while a backfill writes Parquet.

    lakehouse sql "select reason, count(*) from bronze.dead_letter group by all"
"""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines import tables
from pipelines.config import Settings
from pipelines.sinks import PARQUET_GLOB, LakeTable

DUCK_TYPES = {
    pa.string(): "VARCHAR",
    pa.int64(): "BIGINT",
    pa.float64(): "DOUBLE",
    pa.bool_(): "BOOLEAN",
    tables.TIMESTAMP: "TIMESTAMPTZ",
    pa.date32(): "DATE",
}


def view_sql(settings: Settings, spec: tables.TableSpec) -> str:
    """SELECT over the table's Parquet files, or a typed empty SELECT while it has none."""
    lake = LakeTable(settings.lake_dir, spec)
    columns = ", ".join(f'"{f.name}"' for f in spec.schema)
    if not lake.files():
        typed = ", ".join(f'CAST(NULL AS {DUCK_TYPES[f.type]}) AS "{f.name}"' for f in spec.schema)
        return f"SELECT {typed} WHERE false"
    if spec.partition_by is None:
        return f"SELECT {columns} FROM read_parquet('{lake.dir / PARQUET_GLOB}')"
    glob = lake.dir / f"{spec.partition_by}=*" / PARQUET_GLOB
    hive_type = DUCK_TYPES[spec.schema.field(spec.partition_by).type]
    return (f"SELECT {columns} FROM read_parquet('{glob}', hive_partitioning = true, "
            f"hive_types = {{'{spec.partition_by}': '{hive_type}'}})")


def runs_view_sql(settings: Settings) -> str:
    pattern = settings.runs_dir / "*.json"
    if not list(settings.runs_dir.glob("*.json")):
        return ("SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS job, NULL::TIMESTAMPTZ AS started_at, "
                "NULL::DOUBLE AS seconds, NULL::JSON AS counters WHERE false")
    return f"SELECT * FROM read_json_auto('{pattern}', union_by_name = true, format = 'auto')"


def refresh_views(settings: Settings, attempts: int = 40) -> bool:
    """Create or update the views whose definition changed; returns False if the file stayed locked.

    The definitions are kept beside the views (table `ops.view_definitions`) so an unchanged lakehouse
    costs one read-only look and never takes the file's write lock from readers.
    """
    wanted = {spec.fqn: view_sql(settings, spec) for spec in tables.TABLES.values()}
    wanted["ops.pipeline_runs"] = runs_view_sql(settings)
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(attempts):
        try:
            if _stored_definitions(settings.warehouse_path) == wanted:
                return True
            with duckdb.connect(str(settings.warehouse_path)) as con:
                con.execute("BEGIN")
                for fqn, sql in wanted.items():
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {fqn.split('.')[0]}")
                    con.execute(f"CREATE OR REPLACE VIEW {fqn} AS {sql}")
                con.execute("CREATE OR REPLACE TABLE ops.view_definitions (name VARCHAR PRIMARY KEY, sql VARCHAR)")
                con.executemany("INSERT INTO ops.view_definitions VALUES (?, ?)", list(wanted.items()))
                con.execute("COMMIT")
            return True
        except duckdb.IOException:  # a reader or writer holds the file; the Parquet data is safe regardless
            time.sleep(0.25)
    return False


def _stored_definitions(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    with duckdb.connect(str(path), read_only=True) as con:
        try:
            return dict(con.execute("SELECT name, sql FROM ops.view_definitions").fetchall())
        except duckdb.CatalogException:
            return None


def connect(settings: Settings, read_only: bool = True, wait_seconds: float = 10.0) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse; read-only by default so it never blocks a writer.

    Views are rewritten only when a table gets its first files; a reader arriving at that moment
    waits up to `wait_seconds` for the lock instead of failing.
    """
    if not settings.warehouse_path.exists():
        refresh_views(settings)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return duckdb.connect(str(settings.warehouse_path), read_only=read_only)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per lakehouse table."""
    return {fqn: con.execute(f"SELECT count(*) FROM {fqn}").fetchone()[0] for fqn in tables.TABLES}
