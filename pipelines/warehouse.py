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
from pipelines.sinks import DATA_FILE, LakeTable

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
        return f"SELECT {columns} FROM read_parquet('{lake.dir / DATA_FILE}')"
    glob = lake.dir / f"{spec.partition_by}=*" / DATA_FILE
    hive_type = DUCK_TYPES[spec.schema.field(spec.partition_by).type]
    return (f"SELECT {columns} FROM read_parquet('{glob}', hive_partitioning = true, "
            f"hive_types = {{'{spec.partition_by}': '{hive_type}'}})")


def runs_view_sql(settings: Settings) -> str:
    pattern = settings.runs_dir / "*.json"
    if not list(settings.runs_dir.glob("*.json")):
        return ("SELECT NULL::VARCHAR AS run_id, NULL::VARCHAR AS job, NULL::TIMESTAMPTZ AS started_at, "
                "NULL::DOUBLE AS seconds, NULL::JSON AS counters WHERE false")
    return f"SELECT * FROM read_json_auto('{pattern}', union_by_name = true, format = 'auto')"


def refresh_views(settings: Settings, attempts: int = 20) -> bool:
    """Create or update the views whose definition changed; returns False if the file stayed locked."""
    wanted = {spec.fqn: view_sql(settings, spec) for spec in tables.TABLES.values()}
    wanted["ops.pipeline_runs"] = runs_view_sql(settings)
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        try:
            if _current_views(settings.warehouse_path) == wanted:
                return True
            with duckdb.connect(str(settings.warehouse_path)) as con:
                for fqn, sql in wanted.items():
                    schema, _ = fqn.split(".")
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
                    con.execute(f"CREATE OR REPLACE VIEW {fqn} AS {sql}")
            return True
        except duckdb.IOException:  # another process holds the file; the Parquet data is safe regardless
            time.sleep(0.25 * (attempt + 1))
    return False


def _current_views(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    with duckdb.connect(str(path), read_only=True) as con:
        rows = con.execute("SELECT schema_name, view_name, sql FROM duckdb_views() WHERE NOT internal").fetchall()
    return {f"{schema}.{name}": _body(sql) for schema, name, sql in rows}


def _body(create_sql: str) -> str:
    """The SELECT of a stored `CREATE VIEW ... AS SELECT ...;` statement."""
    return create_sql.split(" AS ", 1)[1].rstrip().rstrip(";") if " AS " in create_sql else create_sql


def connect(settings: Settings, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse; read-only by default so it never blocks a writer."""
    if not settings.warehouse_path.exists():
        refresh_views(settings)
    return duckdb.connect(str(settings.warehouse_path), read_only=read_only)


def row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows per lakehouse table."""
    return {fqn: con.execute(f"SELECT count(*) FROM {fqn}").fetchone()[0] for fqn in tables.TABLES}
