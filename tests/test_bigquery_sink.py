"""The BigQuery path of the Beam backfill, run against a local BigQuery emulator (bqemulator).

`pipelines.backfill.run` with `environment=gcp` settings writes bronze, silver and dead letters through
`pipelines.sinks.WriteToBigQueryTables`; here its BigQuery clients are aimed at the emulator (Beam has
no endpoint setting: apitools' `BigqueryV2.BASE_URL` and google-cloud-bigquery's `Client` are patched,
with anonymous credentials), and the test checks what landed in the emulator's tables.

Where this differs from BigQuery, on purpose:
- the sink uses STREAMING_INSERTS: the backfill's FILE_LOADS stages files in GCS and loads them from
  gs:// URIs, which an emulator cannot read. The rows, table creation (partitioning, clustering) and the
  whole pipeline before the write are the same;
- bqemulator does not enforce REQUIRED modes or reject unknown fields on insert, so the schema check
  below compares the created tables with the contract instead of relying on the emulator to refuse rows.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from pathlib import Path

import bq_emulator  # tests/ is on sys.path (pytest's rootdir-relative imports)
import pytest

from pipelines import backfill, contract, sinks, tables
from pipelines.config import Settings
from pipelines.simulate import simulate

PROJECT = "local-dev"
NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with bq_emulator.running(PROJECT, tmp_path_factory.mktemp("bqemulator") / "emulator.log") as endpoint:
        yield endpoint


@pytest.fixture(scope="module")
def bigquery(emulator):
    """A google-cloud-bigquery client on the emulator, and Beam's BigQuery clients aimed at it too."""
    from apache_beam.internal.gcp import auth
    from apache_beam.io.gcp import bigquery_tools
    from apache_beam.io.gcp.internal.clients.bigquery import BigqueryV2
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery as bq

    real_client = bq.Client  # bigquery_tools.gcp_bigquery is this module: keep the class before patching

    def client(*_args, **_kwargs) -> bq.Client:
        return real_client(project=PROJECT, credentials=AnonymousCredentials(),
                           client_options={"api_endpoint": emulator})

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BigqueryV2, "BASE_URL", f"{emulator}/bigquery/v2/")  # apitools: table creation
        patch.setattr(bigquery_tools.gcp_bigquery, "Client", client)  # inserts
        # never look for Application Default Credentials (that probes the metadata server: network)
        patch.setattr(auth._Credentials, "_credentials_init", True)
        patch.setattr(auth._Credentials, "_credentials", auth._ApitoolsCredentialsAdapter(AnonymousCredentials()))
        patch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
        # The backfill's FILE_LOADS need GCS; the emulator takes streaming inserts (see the module docstring).
        patch.setattr(backfill, "WriteToBigQueryTables",
                      functools.partial(sinks.WriteToBigQueryTables, method="STREAMING_INSERTS"))
        # cloud_options ships the package to Dataflow workers with --setup_file; the FnApiRunner would build
        # it (needs `build`) although the code is importable here: drop it.
        options = backfill.cloud_options
        patch.setattr(backfill, "cloud_options", lambda settings, args: [
            o for o in options(settings, args) if not o.startswith("--setup_file=")])
        bq_client = client()
        for dataset in ("bronze", "silver"):  # Terraform creates the datasets; the pipeline creates tables
            bq_client.create_dataset(dataset)
        yield bq_client


@pytest.fixture(scope="module")
def landing(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(out, days=3, stores=2, products=4, start=dt.date(2024, 3, 1), seed=5,
             bad_rate=0.1, dup_rate=0.05, late_rate=0.05)
    return out


@pytest.fixture(scope="module")
def loaded(bigquery, landing, tmp_path_factory) -> backfill.BackfillResult:
    """One backfill into the emulator. (Once per process: Beam remembers the tables it created, so a
    second run after dropping them would retry its inserts forever.)"""
    settings = Settings(environment="gcp", gcp_project=PROJECT, home=tmp_path_factory.mktemp("lake"))
    # The default runner, as a user runs it: `backfill.run_shard` picks Beam's FnApiRunner for BigQuery sinks
    # (the bundle-based DirectRunner loses the counter updates of steps downstream of a ParDo with a side
    # input, the sink's rows_written.* counters, so its BigQuery runs would not reconcile).
    return backfill.run(str(landing / "events" / "*.jsonl"), str(landing / "dims"), settings, now=NOW)


def count(client, sql: str) -> dict:
    return {row[0]: row[1] for row in client.query(sql).result()}


def test_backfill_writes_rows_and_dead_letters_to_bigquery(bigquery, landing, loaded):
    manifest = json.loads((landing / "manifest.json").read_text())
    assert manifest["bad_lines"] > 0 and manifest["duplicates"] > 0  # the data has something to catch
    result = loaded

    assert result.lines_read == manifest["lines_total"]
    assert result.reconciles, result.counters
    assert result.silver_rows == manifest["events_valid"]
    # every valid event once in silver, with the enrichment and lineage columns filled
    silver = {fqn: list(bigquery.query(f"select event_id, event_date, store_name, product_name, source_uri "
                                       f"from {fqn}").result())
              for fqn in tables.SILVER_EVENTS}
    rows = [row for table in silver.values() for row in table]
    assert len(rows) == len({row["event_id"] for row in rows}) == manifest["events_valid"]
    assert all(row["store_name"] and row["product_name"] and row["source_uri"].endswith(".jsonl") for row in rows)
    assert all(isinstance(row["event_date"], dt.date) for row in rows)
    # every bad line in the dead-letter table with its reason, nothing invented
    by_reason = count(bigquery, "select reason, count(*) from bronze.dead_letter group by reason")
    expected = {reason: n for reason, n in manifest["bad_lines_by_reason"].items() if n}
    assert by_reason == expected == {reason: n for reason, n in result.dead_letters.items() if n}
    stages = count(bigquery, "select stage, count(*) from bronze.dead_letter group by stage")
    assert set(stages) <= set(contract.STAGES)
    lines = {(Path(uri).name, line): payload for uri, line, payload in bigquery.query(
        "select source_uri, source_line, payload from bronze.dead_letter where payload_encoding = 'utf-8'").result()}
    for (name, line), payload in lines.items():  # the original payload, byte for byte
        assert (landing / "events" / name).read_text().split("\n")[line - 1] == payload
    # bronze holds every contract-valid line, copies included
    bronze = sum(next(iter(bigquery.query(f"select count(*) from {fqn}").result()))[0]
                 for fqn in ("bronze.order_events", "bronze.inventory_events"))
    assert bronze == manifest["valid_lines"] + by_reason.get("unknown_store", 0) + by_reason.get("unknown_product", 0)
    # dimensions were loaded once
    products = list(bigquery.query("select product_id from silver.products").result())
    assert sorted(r["product_id"] for r in products) == sorted(
        json.loads(line)["product_id"] for line in (landing / "dims" / "products.jsonl").read_text().splitlines())


def test_tables_the_pipeline_creates_match_the_contract(bigquery, loaded):
    aliases = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}
    for fqn, spec in tables.written_by("events").items():
        table = bigquery.get_table(fqn)
        created = [(f.name, aliases.get(f.field_type, f.field_type)) for f in table.schema]
        assert created == [(f["name"], f["type"]) for f in spec.bigquery_schema()], fqn
        if spec.partition_by:
            assert table.time_partitioning.field == spec.partition_by, fqn
        # (bqemulator keeps no clustering in table metadata: not checked here; tests/test_terraform.py
        # checks that Terraform clusters as the contract says)


def test_backfill_to_bigquery_needs_a_project(landing, tmp_path):
    settings = Settings(environment="gcp", home=tmp_path / "lake")
    with pytest.raises(ValueError, match="LAKEHOUSE_GCP_PROJECT"):
        backfill.run(str(landing / "events" / "*.jsonl"), str(landing / "dims"), settings, now=NOW)
