"""The dbt project's `gcp` target, proven against a local BigQuery emulator (bqemulator, DuckDB + SQLGlot).

A small simulated lakehouse is backfilled locally; its bronze, silver and ml tables are created in the
emulator with the BigQuery schemas of `pipelines.tables` and loaded with `load_table_from_file` (NDJSON);
then `lakehouse transform --target gcp` runs the same project with dbt-bigquery: source tests, seeds,
views, tables, incremental MERGE into date-partitioned, clustered facts, data tests and unit tests. The
gold tables must agree with the DuckDB build of the same data.

Where the emulator differs from BigQuery (see FIELD_NOTES): it downloads DuckDB's spatial and format
extensions at start-up, which fails offline, so tests/bq_emulator.py starts it with those two steps skipped;
REQUIRED modes are not enforced and CLUSTER BY is not kept in table metadata, so neither is asserted here.
"""

from __future__ import annotations

import datetime as dt
import io
import json

import bq_emulator  # tests/ is on sys.path (pytest's rootdir-relative imports)
import pytest

from pipelines import backfill, tables, transform, warehouse
from pipelines.config import Settings
from pipelines.simulate import simulate
from pipelines.sinks import bigquery_rows

bigquery = pytest.importorskip("google.cloud.bigquery")

PROJECT = "local-dev"
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def _client(endpoint: str):
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                           client_options=ClientOptions(api_endpoint=endpoint))


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with bq_emulator.running(PROJECT, tmp_path_factory.mktemp("bqemu") / "emulator.log") as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def local_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("gcp")
    simulate(root / "sim", days=10, stores=2, products=5, start=dt.date(2024, 3, 25), seed=3, dup_rate=0.05,
             late_rate=0.05)
    settings = Settings(home=root / "lake")
    result = backfill.run(str(root / "sim" / "events" / "*.jsonl"), str(root / "sim" / "dims"), settings,
                          now=NOW, workers=1)
    assert result.reconciles
    # gold on DuckDB, then a forecast run from it, so the forecast marts and reporting views meet real ml rows
    assert transform.build(settings).ok
    from ml import job

    job.run(settings, horizon=7, models_=("snaive", "tsb"), folds=1, now=NOW, workers=1)
    return settings


def _load(client, settings: Settings, spec: tables.TableSpec, rows: list[dict]) -> None:
    """Create the table with its contract schema and load the rows as NDJSON (load_table_from_json is the
    call the emulator does not support; load_table_from_file is what it does)."""
    schema = [bigquery.SchemaField(c["name"], c["type"], mode=c["mode"], description=c["description"])
              for c in spec.bigquery_schema()]
    table = bigquery.Table(f"{PROJECT}.{settings.dataset(spec.layer)}.{spec.name}", schema=schema)
    if spec.partition_by:
        table.time_partitioning = bigquery.TimePartitioning(field=spec.partition_by)
    client.create_table(table)
    if rows:
        data = io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())
        config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON, schema=schema)
        client.load_table_from_file(data, table, job_config=config).result()


@pytest.mark.slow
def test_gcp_target_builds_and_tests_on_the_bigquery_emulator(emulator, local_lake):
    settings = local_lake.model_copy(update={"gcp_project": PROJECT})
    client = _client(emulator)
    for layer in ("bronze", "silver", "ml"):
        client.create_dataset(settings.dataset(layer), exists_ok=True)
    with warehouse.connect(settings) as con:
        for fqn, spec in tables.TABLES.items():
            arrow = con.sql(f"select * from {fqn}").to_arrow_table() if spec.layer in ("silver", "ml") else spec.empty()
            _load(client, settings, spec, list(bigquery_rows((fqn, arrow))))

    env = {**transform.dbt_env(settings), "LAKEHOUSE_GCP_AUTH_METHOD": "oauth-secrets",
           "LAKEHOUSE_GCP_TOKEN": "dummy-token-for-the-emulator", "LAKEHOUSE_BIGQUERY_API_ENDPOINT": emulator}
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    result = transform.build(settings, target="gcp", env=env)
    problems = [(n.name, n.status, n.message[:300]) for n in result.problems()]
    assert result.ok, problems or result.errors
    kinds = {n.resource_type for n in result.nodes}
    assert {"model", "seed", "test", "unit_test"} <= kinds

    gold = settings.dataset("gold")

    def scalar(sql: str):
        return next(iter(client.query(sql).result()))[0]

    rows = scalar(f"select count(*) from `{PROJECT}.{gold}.fact_daily_demand`")
    series = scalar(f"select count(distinct concat(store_id, product_id)) from `{PROJECT}.{gold}.fact_daily_demand`")
    days = scalar(f"select count(distinct demand_date) from `{PROJECT}.{gold}.fact_daily_demand`")
    assert rows == series * days > 0  # zero-filled grid
    silver_units = scalar(f"select sum(quantity) from `{PROJECT}.silver.order_events` where quantity > 0")
    assert scalar(f"select sum(units_ordered) from `{PROJECT}.{gold}.fact_daily_demand`") == silver_units
    with warehouse.connect(settings) as con:  # (bqemulator reads `project.ml.forecasts` as BigQuery ML's ML.FORECAST)
        forecasts = con.execute("select count(*) from ml.forecasts").fetchone()[0]
    assert forecasts == series * 7
    assert scalar(f"select count(*) from `{PROJECT}.{gold}.fact_demand_forecast`") == forecasts
    assert scalar(f"select count(*) from `{PROJECT}.{gold}.mart_forecast_accuracy`") == series
    assert scalar(f"select count(*) from `{PROJECT}.{gold}.v_demand_vs_forecast` where forecast_units is not null") \
        == forecasts
    fact = client.get_table(f"{PROJECT}.{gold}.fact_daily_demand")
    assert fact.time_partitioning and fact.time_partitioning.field == "demand_date"

    inventory_rows = scalar(f"select count(*) from `{PROJECT}.{gold}.fact_inventory`")

    # a second run merges (incremental) into the partitioned facts; its tests check the test window
    again = transform.build(settings, target="gcp", select=["fact_orders", "fact_daily_demand", "fact_inventory"],
                            env=env)
    assert again.ok, [(n.name, n.status, n.message[:300]) for n in again.problems()]
    assert scalar(f"select count(*) from `{PROJECT}.{gold}.fact_daily_demand`") == rows
    assert scalar(f"select count(*) from `{PROJECT}.{gold}.fact_inventory`") == inventory_rows
    window = scalar(f"select window_start from `{PROJECT}.{settings.dataset('staging')}.dbt_test_window`")
    assert window == scalar(f"select max(demand_date) from `{PROJECT}.{gold}.fact_daily_demand`") - dt.timedelta(3)
