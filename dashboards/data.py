"""What the dashboard reads, from either warehouse: the gold reporting views (dbt/models/reporting), silver and the
run records. Every function returns a pandas DataFrame (empty when there is nothing yet) or None when the
relation does not exist yet (dbt has not built it), so the page can say what to run instead of failing.

Locally the DuckDB warehouse is opened read-only for each read and closed at once (`pipelines.warehouse.connect`
waits while dbt or a view refresh holds the write lock), so the dashboard never blocks a writer. With
LAKEHOUSE_ENVIRONMENT=gcp the same queries run on BigQuery, datasets from `pipelines.config.Settings`.

    from dashboards import data
    source = data.open_source(get_settings())
    data.series(source)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

import pandas as pd

from pipelines import tables
from pipelines.config import Settings

#: the reporting views dbt builds in gold (dbt/models/reporting/*.sql)
DEMAND_VS_FORECAST = "v_demand_vs_forecast"
FORECAST_ACCURACY = "v_forecast_accuracy"
PIPELINE_HEALTH = "v_pipeline_health"
INVENTORY_RISK = "v_inventory_risk"
#: the baseline every model is judged against (ml.models.MODELS key; var baseline_model in the view)
BASELINE_MODEL = "snaive"


class Missing(Exception):
    """A table or view the query needs does not exist yet."""


class Busy(Exception):
    """The local warehouse stayed locked by a writer (dbt, a view refresh) longer than we wait."""


class Source(Protocol):
    settings: Settings

    def table(self, layer: str, name: str) -> str: ...

    def param(self, name: str) -> str: ...

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame: ...


@dataclass
class DuckDBSource:
    """The local warehouse file, opened read-only per query."""

    settings: Settings
    wait_seconds: float = 15.0

    def table(self, layer: str, name: str) -> str:
        return f'"{self.settings.dataset(layer)}"."{name}"'

    def param(self, name: str) -> str:
        return f"${name}"

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        import duckdb

        from pipelines import warehouse

        if not self.settings.warehouse_path.exists():
            raise Missing(f"no warehouse at {self.settings.warehouse_path}")
        try:
            con = warehouse.connect(self.settings, wait_seconds=self.wait_seconds)
        except duckdb.IOException as e:
            raise Busy(str(e).splitlines()[0]) from e
        with con:
            try:
                return con.execute(sql, params or {}).df()
            except duckdb.CatalogException as e:
                raise Missing(str(e).splitlines()[0]) from e


@dataclass
class BigQuerySource:
    """BigQuery: the project and datasets of the settings (credentials: application default)."""

    settings: Settings
    client: Any = None

    def __post_init__(self) -> None:
        if self.client is None:
            from google.cloud import bigquery

            self.client = bigquery.Client(project=self.settings.gcp_project, location=self.settings.gcp_region)

    def table(self, layer: str, name: str) -> str:
        return f"`{self.settings.gcp_project}.{self.settings.dataset(layer)}.{name}`"

    def param(self, name: str) -> str:
        return f"@{name}"

    def query(self, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        types = {bool: "BOOL", int: "INT64", float: "FLOAT64", str: "STRING", dt.date: "DATE"}
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter(k, types[type(v)], v) for k, v in (params or {}).items()])
        try:
            return self.client.query(sql, job_config=config).result().to_arrow(
                create_bqstorage_client=False).to_pandas()
        except NotFound as e:
            raise Missing(e.message) from e


def open_source(settings: Settings) -> Source:
    if settings.environment == "gcp":
        if not settings.gcp_project:
            raise ValueError("LAKEHOUSE_GCP_PROJECT must be set to read BigQuery")
        return BigQuerySource(settings)
    return DuckDBSource(settings)


def _maybe(source: Source, sql: str, params: dict[str, Any] | None = None) -> pd.DataFrame | None:
    try:
        return source.query(sql, params)
    except Missing:
        return None


# ---- demand vs forecast ------------------------------------------------------------------------
def series(source: Source) -> pd.DataFrame | None:
    """Every store x product with demand, named, the busiest first."""
    view = source.table("gold", DEMAND_VS_FORECAST)
    return _maybe(source, f"""
        select store_id, any_value(store_name) as store_name, product_id, any_value(product_name) as product_name,
               sum(actual_units) as units, count(forecast_units) as forecast_days
        from {view}
        group by store_id, product_id
        order by units desc, store_id, product_id""")


def demand_vs_forecast(source: Source, store_id: str, product_id: str) -> pd.DataFrame | None:
    view = source.table("gold", DEMAND_VS_FORECAST)
    p = source.param
    return _maybe(source, f"""
        select demand_date, actual_units, forecast_units, forecast_lower_80, forecast_upper_80, forecast_lower_95,
               forecast_upper_95, forecast_model, forecast_run_id, is_future, on_promo, stockout, is_holiday
        from {view}
        where store_id = {p('store_id')} and product_id = {p('product_id')}
        order by demand_date""", {"store_id": store_id, "product_id": product_id})


# ---- forecast accuracy -------------------------------------------------------------------------
def accuracy(source: Source) -> pd.DataFrame | None:
    """Backtest scores of the latest run of each frequency: one row per series x model."""
    view = source.table("gold", FORECAST_ACCURACY)
    return _maybe(source, f"select * from {view} where is_latest_run order by store_id, product_id, model")


def accuracy_by_model(scores: pd.DataFrame) -> pd.DataFrame:
    """Weighted WAPE and mean interval coverage per model (all series), and the same for the chosen models."""
    def summarise(frame: pd.DataFrame) -> dict[str, Any]:
        actual = frame["actual_units"].sum()
        return {
            "series": int(frame[["store_id", "product_id"]].drop_duplicates().shape[0]),
            "wape": frame["abs_error"].sum() / actual if actual else None,
            "baseline_wape": frame["baseline_abs_error"].sum() / actual if actual else None,
            "coverage_80": frame["coverage_80"].mean(),
            "coverage_95": frame["coverage_95"].mean(),
        }

    if scores.empty:
        return pd.DataFrame(columns=["model", "series", "wape", "baseline_wape", "coverage_80", "coverage_95"])
    per_model = [(model, summarise(frame)) for model, frame in scores.groupby("model", sort=True)]
    rows = [{"model": name, **s} for name, s in per_model]
    rows.append({"model": "chosen per series", **summarise(scores[scores["is_chosen"]])})
    return pd.DataFrame(rows)


# ---- pipeline health ---------------------------------------------------------------------------
def health(source: Source) -> pd.DataFrame | None:
    return _maybe(source, f"select * from {source.table('gold', PIPELINE_HEALTH)}")


def events_per_minute(source: Source, minutes: int = 60) -> pd.DataFrame | None:
    """Silver events per minute of event time over the last `minutes` minutes with data (stream or backfill)."""
    return _maybe(source, f"""
        with events as ({_silver_events(source, "event_ts")}),
        recent as (
            select {_trunc_minute(source, "event_ts")} as minute
            from events
            where event_ts >= (select {_minus_minutes(source, "max(event_ts)", minutes)} from events)
        )
        select minute, count(*) as events from recent group by minute order by minute""")


def stream_windows(source: Source, windows: int = 60) -> pd.DataFrame | None:
    """The stream's event-time windows (silver.demand_windows): units and lines per window, late panes."""
    table = _spec_table(source, tables.DEMAND_WINDOWS)
    return _maybe(source, f"""
        select window_start, sum(units_ordered) as units_ordered, sum(order_lines) as order_lines,
               sum(case when last_pane = 'LATE' then 1 else 0 end) as late_updates
        from {table}
        group by window_start
        order by window_start desc
        limit {int(windows)}""")


def freshness(source: Source) -> pd.DataFrame | None:
    """Newest event time and newest Pub/Sub publish time in silver."""
    return _maybe(source, f"""
        select max(event_ts) as last_event_at, max(publish_time) as last_published_at
        from ({_silver_events(source, "event_ts, publish_time")}) as events""")


def pipeline_runs(source: Source, limit: int = 20) -> pd.DataFrame | None:
    """The newest run records (local: ops.pipeline_runs over $LAKEHOUSE_HOME/runs/*.json)."""
    if not isinstance(source, DuckDBSource):
        return None
    runs = _maybe(source, f"select * from ops.pipeline_runs order by started_at desc limit {int(limit)}")
    if runs is None:
        return None
    keep = ["started_at", "job", "run_id", "seconds", "lines_read", "messages", "silver_rows", "duplicates",
            "dead_letters", "reconciles"]
    return runs[[c for c in keep if c in runs.columns]]


# ---- inventory risk ----------------------------------------------------------------------------
def inventory_risk(source: Source) -> pd.DataFrame | None:
    view = source.table("gold", INVENTORY_RISK)
    return _maybe(source, f"""
        select * from {view}
        order by case risk_level when 'stockout likely' then 0 when 'at risk' then 1 else 2 end,
                 shortfall_units desc, days_of_cover""")


# ---- SQL that differs between the warehouses --------------------------------------------------
def _spec_table(source: Source, spec: tables.TableSpec) -> str:
    return source.table(spec.layer, spec.name)


def _silver_events(source: Source, columns: str) -> str:
    """`columns` of every silver event table, one under the other."""
    return " union all ".join(f"select {columns} from {_spec_table(source, tables.TABLES[fqn])}"
                              for fqn in tables.SILVER_EVENTS)


def _trunc_minute(source: Source, expr: str) -> str:
    return f"timestamp_trunc({expr}, minute)" if isinstance(source, BigQuerySource) else f"date_trunc('minute', {expr})"


def _minus_minutes(source: Source, expr: str, minutes: int) -> str:
    return (f"timestamp_sub({expr}, interval {int(minutes)} minute)" if isinstance(source, BigQuerySource)
            else f"{expr} - interval {int(minutes)} minute")
