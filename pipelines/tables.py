"""The tables the pipelines write, derived from the event contract: names, Arrow and BigQuery schemas.

    from pipelines.tables import TABLES
    TABLES["silver.order_events"].schema            # pyarrow.Schema (Parquet locally)
    TABLES["silver.order_events"].bigquery_schema() # [{"name", "type", "mode", "description"}]

`lakehouse schemas --out schemas/bigquery` writes the BigQuery schemas as JSON for Terraform and dbt;
a test keeps the committed copies in step with this module.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import msgspec.inspect as mi
import pyarrow as pa

from pipelines import contract

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Arrow type -> BigQuery type
_BQ_TYPES = {
    pa.string(): "STRING",
    pa.int64(): "INT64",
    pa.float64(): "FLOAT64",
    pa.bool_(): "BOOL",
    TIMESTAMP: "TIMESTAMP",
    pa.date32(): "DATE",
}


def _arrow_type(t: mi.Type) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of a msgspec type."""
    if isinstance(t, mi.Metadata):
        return _arrow_type(t.type)
    if isinstance(t, mi.UnionType):
        inner = [x for x in t.types if not isinstance(x, mi.NoneType)]
        assert len(inner) == 1, f"unsupported union {t}"
        return _arrow_type(inner[0])[0], True
    simple = {
        mi.StrType: pa.string(),
        mi.IntType: pa.int64(),
        mi.FloatType: pa.float64(),
        mi.BoolType: pa.bool_(),
        mi.DateTimeType: TIMESTAMP,
        mi.DateType: pa.date32(),
        mi.LiteralType: pa.string(),
    }
    for cls, arrow in simple.items():
        if isinstance(t, cls):
            return arrow, False
    raise TypeError(f"no Arrow type for {t!r}")


def _description(t: mi.Type) -> str:
    while isinstance(t, mi.Metadata):
        desc = (t.extra_json_schema or {}).get("description")
        if desc:
            return desc
        t = t.type
    return ""


def _field(name: str, type_: pa.DataType, nullable: bool, description: str) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"description": description})


def struct_fields(struct: type[msgspec.Struct]) -> list[pa.Field]:
    """Arrow fields of a contract struct, in declared order (the event_type tag first after the id)."""
    info = mi.type_info(struct)
    fields = []
    for f in info.fields:
        arrow, nullable = _arrow_type(f.type)
        fields.append(_field(f.name, arrow, nullable or not f.required, _description(f.type)))
    tag_field = struct.__struct_config__.tag_field
    if tag_field:
        fields.insert(1, _field(tag_field, pa.string(), False, f"One of {', '.join(contract.EVENT_TYPES)}."))
    return fields


# ---- columns the pipelines add ---------------------------------------------------------------
EVENT_DATE = _field("event_date", pa.date32(), False, "UTC date of event_ts; the partition column.")
LINEAGE = [
    _field("source_uri", pa.string(), False,
           "File the record was read from; for a Pub/Sub message, its archive file when the producer named it "
           "(attribute archive_uri), otherwise pubsub://<subscription>."),
    _field("source_line", pa.int64(), True, "1-based line number in source_uri (files and archived messages)."),
    _field("message_id", pa.string(), True, "Pub/Sub message id, when the record came from a subscription."),
    _field("publish_time", TIMESTAMP, True, "Pub/Sub publish time, when the record came from a subscription."),
    _field("attributes", pa.string(), True, "Pub/Sub message attributes as a JSON object, when any."),
]
#: what names one received record: a file line, or a Pub/Sub message (redeliveries share it)
RECORD_ID = ("source_uri", "source_line", "message_id")
ARRIVED_LATE = _field("arrived_late", pa.bool_(), True,
                      "Stream only: published after its event-time window closed (window end + allowed lateness), "
                      "so the windowed aggregates left it out; null when loaded from files.")
PAYLOAD = _field("payload", pa.string(), False, "The raw event exactly as received (JSON text).")
#: dimension attributes copied onto silver events, typed as the dimension contract says
ENRICHMENT = {
    name: [f.with_metadata({"description": f"From the {name[:-1]} dimension: "
                                           f"{(f.metadata or {}).get(b'description', b'').decode()}"})
           for f in struct_fields(contract.DIMENSIONS[name]) if f.name in columns]
    for name, columns in {"products": ("product_name", "category"), "stores": ("store_name", "country_code")}.items()
}
DEAD_LETTER_FIELDS = [
    _field("failed_at", TIMESTAMP, False, "Start time of the run that dead-lettered the record."),
    _field("run_id", pa.string(), False, "Pipeline run that dead-lettered it."),
    _field("stage", pa.string(), False, f"Pipeline stage: {', '.join(contract.STAGES)}."),
    _field("reason", pa.string(), False, "Reason code; see pipelines.contract.REASONS."),
    _field("detail", pa.string(), False, "Human-readable explanation (field and constraint)."),
    _field("payload", pa.string(), False, "The original payload (base64 when payload_encoding is base64)."),
    _field("payload_encoding", pa.string(), False, "utf-8, or base64 for bytes that are not UTF-8."),
    _field("payload_bytes", pa.int64(), False, "Size of the original payload in bytes."),
    _field("event_id", pa.string(), True, "event_id, when it could be read."),
    _field("event_type", pa.string(), True, "event_type, when it could be read."),
    _field("event_date", pa.date32(), True,
           "UTC date of event_ts when it could be read and is not in the future; partition column."),
    *LINEAGE,
]


@dataclass(frozen=True)
class TableSpec:
    """One table of the lakehouse: where it lives, its schema, its keys."""

    layer: str
    name: str
    schema: pa.Schema
    description: str
    partition_by: str | None = None
    # unique key, used to drop duplicates on write. Events: (event_date, event_id): copies of one event
    # share its event time, so they meet in one partition; two events that reuse an id on different days
    # both stay (and dbt's uniqueness test on event_id names them).
    key: tuple[str, ...] = ()
    cluster_by: tuple[str, ...] = ()
    #: the job that writes the table: "events" (backfill and stream), "stream" (only the stream), "forecast" (ml)
    writer: str = "events"

    @property
    def fqn(self) -> str:
        return f"{self.layer}.{self.name}"

    def bigquery_schema(self) -> list[dict[str, Any]]:
        return [
            {
                "name": f.name,
                "type": _BQ_TYPES[f.type],
                "mode": "NULLABLE" if f.nullable else "REQUIRED",
                "description": (f.metadata or {}).get(b"description", b"").decode(),
            }
            for f in self.schema
        ]

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def conform(self, table: pa.Table) -> pa.Table:
        """`table` with this table's columns, in its order and types (as it is when it matches already)."""
        return table if table.schema.equals(self.schema) else table.select(self.schema.names).cast(self.schema)


def _event_tables(entity: str) -> list[TableSpec]:
    fields = struct_fields(contract.ENTITY_STRUCT[entity])
    bronze = pa.schema([*fields, EVENT_DATE, PAYLOAD, *LINEAGE])
    silver = pa.schema([*fields, EVENT_DATE, *ENRICHMENT["products"], *ENRICHMENT["stores"], ARRIVED_LATE,
                        *LINEAGE])
    cluster = ("store_id", "product_id")
    return [
        TableSpec("bronze", f"{entity}_events", bronze,
                  f"Raw {entity} events that passed the contract, as received (duplicates included).",
                  partition_by="event_date", cluster_by=cluster),
        TableSpec("silver", f"{entity}_events", silver,
                  f"Clean {entity} events: valid, deduplicated by event_id, enriched with dimensions.",
                  partition_by="event_date", key=("event_date", "event_id"), cluster_by=cluster),
    ]


def _dimension_table(name: str) -> TableSpec:
    struct = contract.DIMENSIONS[name]
    return TableSpec("silver", name, pa.schema([*struct_fields(struct), *LINEAGE]),
                     f"{struct.__doc__.strip()} One row per {contract.DIMENSION_KEYS[name]}.",
                     key=(contract.DIMENSION_KEYS[name],))


DEAD_LETTER = TableSpec("bronze", "dead_letter", pa.schema(DEAD_LETTER_FIELDS),
                        "Records that failed the contract or enrichment, with the original payload and reason.",
                        partition_by="event_date", cluster_by=("stage", "reason"))

# ---- the stream's event-time aggregates --------------------------------------------------------
DEMAND_WINDOWS = TableSpec("silver", "demand_windows", pa.schema([
    _field("window_start", TIMESTAMP, False, "Start of the event-time window (UTC)."),
    _field("window_end", TIMESTAMP, False, "End of the event-time window (UTC, exclusive)."),
    _field("window_date", pa.date32(), False, "UTC date of window_start; the partition column."),
    *[f for f in struct_fields(contract.OrderEvent) if f.name in ("store_id", "product_id")],
    _field("units_ordered", pa.int64(), False, "Units ordered in the window (order events)."),
    _field("units_returned", pa.int64(), False, "Units returned in the window (return events, as a positive number)."),
    _field("order_lines", pa.int64(), False, "Order and return events counted."),
    _field("net_revenue", pa.float64(), False, "sum(quantity * unit_price * (1 - discount_pct))."),
    _field("panes", pa.int64(), False, "Firings that added to the row: 1 on time, more when late events came."),
    _field("last_pane", pa.string(), False, "Timing of the latest firing: EARLY, ON_TIME or LATE."),
    _field("updated_at", TIMESTAMP, False, "When the stream last added to the row."),
]), "Demand per store x product in event-time windows, from the stream (late events within the allowed "
    "lateness update their window).", partition_by="window_date", key=("window_start", "store_id", "product_id"),
    cluster_by=("store_id", "product_id"), writer="stream")

# ---- forecasting outputs (written by `ml`, read by dbt's forecast marts) ----------------------
_SERIES = [
    _field("store_id", pa.string(), False, "Store of the series."),
    _field("product_id", pa.string(), False, "Product of the series."),
]
_RUN_ID = _field("run_id", pa.string(), False, "Forecast run (see ml.forecast_runs).")
_INTERVAL_METRICS = [
    _field("coverage_80", pa.float64(), True, "Share of actuals inside the 80% prediction interval."),
    _field("coverage_95", pa.float64(), True, "Share of actuals inside the 95% prediction interval."),
]
FORECASTS = TableSpec("ml", "forecasts", pa.schema([
    _RUN_ID, *_SERIES,
    _field("forecast_date", pa.date32(), False, "Day forecast (weekly runs: the first day of the week)."),
    _field("yhat", pa.float64(), False, "Point forecast of units ordered (never negative)."),
    _field("yhat_lower_80", pa.float64(), False, "Lower bound of the 80% prediction interval."),
    _field("yhat_upper_80", pa.float64(), False, "Upper bound of the 80% prediction interval."),
    _field("yhat_lower_95", pa.float64(), False, "Lower bound of the 95% prediction interval."),
    _field("yhat_upper_95", pa.float64(), False, "Upper bound of the 95% prediction interval."),
    _field("model", pa.string(), False, "Model chosen for the series by its backtest."),
]), "Demand forecasts with prediction intervals, one row per run x series x forecast date.",
    partition_by="forecast_date", key=("run_id", "store_id", "product_id", "forecast_date"),
    cluster_by=("store_id", "product_id"), writer="forecast")
FORECAST_RUNS = TableSpec("ml", "forecast_runs", pa.schema([
    _RUN_ID,
    _field("created_at", TIMESTAMP, False, "When the run started (UTC)."),
    _field("freq", pa.string(), False, "D (daily) or W (weekly, weeks starting Monday)."),
    _field("horizon", pa.int64(), False, "Periods forecast after the last period with data."),
    _field("data_start", pa.date32(), True, "First period of history used."),
    _field("data_end", pa.date32(), True, "Last period of history used."),
    _field("series", pa.int64(), False, "Series forecast."),
    _field("parameters", pa.string(), False, "Run parameters as JSON (models, folds, regressors, ...)."),
    _field("code_version", pa.string(), False, "Package version and git commit of the code that ran."),
    _field("wape", pa.float64(), True, "Backtest WAPE of the chosen models over all series."),
    _field("wape_seasonal_naive", pa.float64(), True, "Backtest WAPE of seasonal naive over the same points."),
    _field("mase", pa.float64(), True, "Backtest MASE of the chosen models (mean over series)."),
    _field("bias", pa.float64(), True, "Backtest bias of the chosen models: sum(forecast - actual) / sum(actual)."),
    *_INTERVAL_METRICS,
    _field("metrics", pa.string(), True, "Further overall metrics as JSON (per model, against the truth, ...)."),
]), "One row per forecast run: how it was made and how well its models backtested.", key=("run_id",),
    writer="forecast")
BACKTEST_METRICS = TableSpec("ml", "backtest_metrics", pa.schema([
    _RUN_ID, *_SERIES,
    _field("model", pa.string(), False, "Model backtested."),
    _field("chosen", pa.bool_(), False, "Whether the backtest chose this model for the series."),
    _field("folds", pa.int64(), False, "Rolling-origin folds scored."),
    _field("points", pa.int64(), False, "Forecast points scored over all folds."),
    _field("actual_units", pa.float64(), True, "Sum of actuals over the scored points."),
    _field("wape", pa.float64(), True, "Weighted absolute percentage error: sum|f - a| / sum(a)."),
    _field("mase", pa.float64(), True, "Mean absolute scaled error (scale: in-sample seasonal naive)."),
    _field("bias", pa.float64(), True, "sum(forecast - actual) / sum(actual)."),
    *_INTERVAL_METRICS,
    _field("note", pa.string(), True, "Why a series got a baseline (too short, all zeros, fit failed, ...)."),
]), "Backtest scores per run x series x model (rolling-origin cross-validation).",
    key=("run_id", "store_id", "product_id", "model"), cluster_by=("store_id", "product_id"), writer="forecast")

TABLES: dict[str, TableSpec] = {
    t.fqn: t
    for t in [
        *_event_tables("order"),
        *_event_tables("inventory"),
        DEAD_LETTER,
        _dimension_table("products"),
        _dimension_table("stores"),
        DEMAND_WINDOWS,
        FORECASTS,
        FORECAST_RUNS,
        BACKTEST_METRICS,
    ]
}



def written_by(writer: str) -> dict[str, TableSpec]:
    """The tables one job writes: "events" (backfill, stream) or "forecast"."""
    return {fqn: spec for fqn, spec in TABLES.items() if spec.writer == writer}


#: event table fqn -> entity
ENTITY_OF_TABLE: dict[str, str] = {
    f"{layer}.{entity}_events": entity for entity in contract.ENTITY_STRUCT for layer in ("bronze", "silver")
}


def bronze_events(entity: str) -> TableSpec:
    return TABLES[f"bronze.{entity}_events"]


def silver_events(entity: str) -> TableSpec:
    return TABLES[f"silver.{entity}_events"]


#: the silver event tables, one per entity: what counts as "silver rows" of a run
SILVER_EVENTS: tuple[str, ...] = tuple(f"silver.{entity}_events" for entity in contract.ENTITY_STRUCT)


def dimension(name: str) -> TableSpec:
    return TABLES[f"silver.{name}"]


def write_bigquery_schemas(out_dir: Path) -> list[Path]:
    """Write `<layer>.<table>.json` BigQuery schema files (plus a table index) for Terraform and dbt."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in TABLES.values():
        path = out_dir / f"{spec.fqn}.json"
        path.write_text(json.dumps(spec.bigquery_schema(), indent=2) + "\n")
        written.append(path)
    index = {
        spec.fqn: {"description": spec.description, "partition_by": spec.partition_by,
                   "cluster_by": list(spec.cluster_by), "key": list(spec.key), "writer": spec.writer}
        for spec in TABLES.values()
    }
    index_path = out_dir / "tables.json"
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return [*written, index_path]


def utc_date(ts: dt.datetime) -> dt.date:
    return ts.astimezone(dt.UTC).date()
