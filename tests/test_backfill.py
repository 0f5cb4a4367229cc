"""End-to-end tests of the Beam backfill into the local lakehouse.

Simulated landing data (with injected bad, duplicated and late events) and the real-history fixture go
through `pipelines.backfill.run`; the tests check that the counts reconcile exactly with what the producer
wrote, that a re-run gives the same tables, that separate inputs coexist, that a replay never double
counts, and that DuckDB can read while a backfill writes.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines import backfill, tables, warehouse
from pipelines.config import Settings
from pipelines.importers import import_orders
from pipelines.simulate import simulate
from pipelines.sinks import LakeTable

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
FIXTURE = Path(__file__).parent / "fixtures" / "online_retail_ii_sample.csv"


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(out, days=21, stores=3, products=12, start=dt.date(2024, 3, 1), seed=11,
             bad_rate=0.03, dup_rate=0.05, late_rate=0.05)
    return out


@pytest.fixture(scope="module")
def retail_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("retail")
    import_orders(FIXTURE, out, format="online-retail")
    return out


def settings_for(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "lake")


def run(landing: Path, settings: Settings, pattern: str = "*.jsonl", workers: int = 1) -> backfill.BackfillResult:
    return backfill.run(str(landing / "events" / pattern), str(landing / "dims"), settings, now=NOW, workers=workers)


def query(settings: Settings, sql: str):
    with warehouse.connect(settings) as con:
        return con.execute(sql).fetchall()


def read_table(settings: Settings, fqn: str, drop: tuple[str, ...] = ()) -> pa.Table:
    with warehouse.connect(settings) as con:
        table = con.sql(f"select * from {fqn}").to_arrow_table()
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return table.sort_by([(c, "ascending") for c in table.column_names if c not in ("payload", "detail")])


def test_simulated_run_reconciles_with_what_the_producer_wrote(sim_dir, tmp_path):
    manifest = json.loads((sim_dir / "manifest.json").read_text())
    settings = settings_for(tmp_path)
    result = run(sim_dir, settings)

    assert result.lines_read == manifest["lines_total"]
    assert result.reconciles
    assert result.silver_rows == manifest["events_valid"]
    assert result.duplicates == manifest["duplicates"]
    assert result.dead_letters == manifest["bad_lines_by_reason"]

    # the warehouse shows the same: every event once, every bad line with its reason
    silver = sum(query(settings, f"select count(*) from {t}")[0][0]
                 for t in ("silver.order_events", "silver.inventory_events"))
    distinct = sum(query(settings, f"select count(distinct event_id) from {t}")[0][0]
                   for t in ("silver.order_events", "silver.inventory_events"))
    assert silver == distinct == manifest["events_valid"]
    by_reason = dict(query(settings, "select reason, count(*) from bronze.dead_letter group by all"))
    assert by_reason == manifest["bad_lines_by_reason"]
    bronze = sum(query(settings, f"select count(*) from {t}")[0][0]
                 for t in ("bronze.order_events", "bronze.inventory_events"))
    enrich_rejects = sum(n for r, n in by_reason.items() if r in ("unknown_store", "unknown_product"))
    assert bronze == manifest["valid_lines"] + enrich_rejects  # contract-valid lines, copies included

    # late events sit in the partition of their event time, not of the file they arrived in
    late = query(settings, "select count(*) from silver.order_events where event_date <> "
                           "cast(regexp_extract(source_uri, '(\\d{4}-\\d{2}-\\d{2})\\.jsonl', 1) as date)")[0][0]
    assert late > 0
    # hive layout: other readers (pyarrow, polars, Spark) find the partition column in the path
    import pyarrow.dataset as ds

    orders = ds.dataset(settings.lake_dir / "silver" / "order_events", format="parquet", partitioning="hive")
    assert orders.count_rows() == query(settings, "select count(*) from silver.order_events")[0][0]
    # the run left a record the ops view reads
    runs = query(settings, "select run_id, lines_read, reconciles from ops.pipeline_runs")
    assert runs == [(result.run_id, manifest["lines_total"], True)]


def test_shards_in_parallel_processes_give_the_same_tables_and_counts(sim_dir, tmp_path):
    one, two = settings_for(tmp_path / "one"), settings_for(tmp_path / "two")
    single = run(sim_dir, one, workers=1)
    sharded = run(sim_dir, two, workers=2)
    assert sharded.reconciles
    for name in ("lines_read", "duplicates_removed", "dead_letters"):
        assert sharded.get(name) == single.get(name), name
    assert sharded.silver_rows == single.silver_rows
    for fqn in ("silver.order_events", "silver.inventory_events", "bronze.order_events", "silver.products"):
        assert read_table(two, fqn).equals(read_table(one, fqn)), fqn


def test_shards_are_contiguous_and_balanced(tmp_path):
    paths = []
    for i, size in enumerate([10, 10, 10, 10, 40, 10, 10]):
        path = tmp_path / f"{i}.jsonl"
        path.write_bytes(b"x" * size)
        paths.append(str(path))
    shards = backfill.plan_shards(paths, 2)
    assert [p for shard in shards for p in shard] == paths
    assert [len(s) for s in shards] == [5, 2]
    assert backfill.plan_shards(paths, 1) == [paths]
    assert len(backfill.plan_shards(paths, 3)) == 3


def test_dead_letters_keep_the_original_payload(sim_dir, tmp_path):
    settings = settings_for(tmp_path)
    run(sim_dir, settings)
    rows = query(settings, "select source_uri, source_line, payload, payload_encoding, stage, reason, detail "
                           "from bronze.dead_letter")
    assert rows
    for uri, line_no, payload, encoding, stage, reason, detail in rows:
        original = Path(uri).read_bytes().split(b"\n")[line_no - 1]
        stored = payload.encode() if encoding == "utf-8" else __import__("base64").b64decode(payload)
        assert stored == original, (reason, line_no)
        assert stage and reason and detail


def test_backfill_twice_gives_the_same_tables(sim_dir, tmp_path):
    settings = settings_for(tmp_path)
    first = run(sim_dir, settings)
    before = {fqn: read_table(settings, fqn, drop=("failed_at", "run_id")) for fqn in tables.TABLES}
    second = run(sim_dir, settings)
    after = {fqn: read_table(settings, fqn, drop=("failed_at", "run_id")) for fqn in tables.TABLES}
    for fqn in tables.TABLES:
        assert after[fqn].equals(before[fqn]), fqn
    assert second.counters == first.counters


def test_separate_inputs_coexist_and_rerunning_one_leaves_the_other(sim_dir, retail_dir, tmp_path):
    settings = settings_for(tmp_path)
    run(sim_dir, settings)
    sim_rows = query(settings, "select count(*) from silver.order_events")[0][0]
    retail = run(retail_dir, settings)
    assert retail.reconciles
    both = query(settings, "select count(*) from silver.order_events")[0][0]
    retail_orders = query(settings, "select count(*) from silver.order_events where event_id like 'oretail-%'")[0][0]
    assert both == sim_rows + retail_orders and retail_orders > 0
    run(sim_dir, settings)
    assert query(settings, "select count(*) from silver.order_events")[0][0] == both
    stores = query(settings, "select count(*) from silver.stores")[0][0]
    assert stores == 3 + json.loads((retail_dir / "manifest.json").read_text())["stores"]


def test_a_replay_of_events_already_loaded_never_double_counts(sim_dir, tmp_path):
    settings = settings_for(tmp_path)
    run(sim_dir, settings)
    before = query(settings, "select count(*), sum(quantity) from silver.order_events")[0]
    # an archive that repeats one day's file under another name, e.g. a redelivery
    replay = tmp_path / "replay"
    shutil.copytree(sim_dir / "dims", replay / "dims")
    (replay / "events").mkdir()
    day = sorted((sim_dir / "events").glob("*.jsonl"))[5]
    shutil.copy(day, replay / "events" / "archive.jsonl")
    result = run(replay, settings)
    assert result.reconciles, result.counters
    assert result.duplicates > 0
    assert query(settings, "select count(*), sum(quantity) from silver.order_events")[0] == before
    # loading the same two sources in the other order gives the same table
    other = settings_for(tmp_path / "other")
    run(replay, other)
    run(sim_dir, other)
    assert read_table(other, "silver.order_events").equals(read_table(settings, "silver.order_events"))


def test_real_history_fixture_backfills_with_returns_and_reasons(retail_dir, tmp_path):
    settings = settings_for(tmp_path)
    result = run(retail_dir, settings)
    assert result.reconciles
    assert result.silver_rows > 2000
    returns = query(settings, "select count(*), max(quantity) from silver.order_events where event_type = 'return'")
    assert returns[0][0] > 0 and returns[0][1] < 0
    # Online Retail II is one UK web shop; its "stores" are the customers' countries
    gb = query(settings, "select count(*) from silver.order_events where country_code = 'GB'")[0][0]
    assert gb > 0


def test_missing_inputs_fail_with_a_clear_message(sim_dir, tmp_path):
    settings = settings_for(tmp_path)
    with pytest.raises(FileNotFoundError, match="no input files match"):
        backfill.run(str(tmp_path / "nothing" / "*.jsonl"), str(sim_dir / "dims"), settings, now=NOW)
    with pytest.raises(FileNotFoundError, match=r"products\.jsonl"):
        backfill.run(str(sim_dir / "events" / "*.jsonl"), str(tmp_path), settings, now=NOW)
    bad_dims = tmp_path / "bad_dims"
    shutil.copytree(sim_dir / "dims", bad_dims)
    with open(bad_dims / "stores.jsonl", "ab") as f:
        f.write(b'{"store_id": "S9", "store_name": 5}\n')
    with pytest.raises(ValueError, match=r"stores.jsonl:\d+: not a valid stores row"):
        backfill.run(str(sim_dir / "events" / "*.jsonl"), str(bad_dims), settings, now=NOW)
    with pytest.raises(ValueError, match="LAKEHOUSE_ENVIRONMENT=gcp"):
        backfill.run(str(sim_dir / "events" / "*.jsonl"), str(sim_dir / "dims"), settings, now=NOW,
                     runner="DataflowRunner")


def test_readers_query_while_a_backfill_writes(sim_dir, tmp_path):
    settings = settings_for(tmp_path)
    run(sim_dir, settings)  # views exist; the next run rewrites every partition
    env = {"LAKEHOUSE_HOME": str(settings.home), "PATH": str(Path(sys.executable).parent)}
    writer = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "backfill", "--input", str(sim_dir / "events" / "*.jsonl"),
         "--dims", str(sim_dir / "dims")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reads, counts = 0, set()
    while writer.poll() is None:
        with warehouse.connect(settings) as con:
            counts.add(con.execute("select count(*) from silver.order_events").fetchone()[0])
        reads += 1
        time.sleep(0.05)
    out, err = writer.communicate()
    assert writer.returncode == 0, err.decode()[-2000:]
    assert reads > 3
    assert b"reconciles" in out


def test_bigquery_schemas_in_the_repo_are_current(tmp_path):
    committed = Path(__file__).parents[1] / "schemas" / "bigquery"
    tables.write_bigquery_schemas(tmp_path)
    generated = {p.name: p.read_text() for p in tmp_path.glob("*.json")}
    assert generated == {p.name: p.read_text() for p in committed.glob("*.json")}, "run `make schemas`"
    schema = json.loads((committed / "silver.order_events.json").read_text())
    assert {"name": "event_id", "type": "STRING", "mode": "REQUIRED"}.items() <= schema[0].items()


def test_bigquery_rows_are_json_ready():
    from pipelines.sinks import bigquery_rows

    table = pa.table({"event_ts": pa.array([dt.datetime(2024, 1, 2, 3, 4, tzinfo=dt.timezone.utc)],
                                           tables.TIMESTAMP),
                      "event_date": pa.array([dt.date(2024, 1, 2)]), "quantity": [3]})
    assert list(bigquery_rows(("silver.order_events", table))) == [
        {"event_ts": "2024-01-02T03:04:00+00:00", "event_date": "2024-01-02", "quantity": 3}]


# ---- edge cases found in review -------------------------------------------------------------
def _order(event_id: str, ts: str, product: str = "P0001", store: str = "S001") -> bytes:
    return json.dumps({"event_type": "order", "event_id": event_id, "event_ts": ts, "store_id": store,
                       "product_id": product, "quantity": 1, "unit_price": 2.5, "currency": "GBP",
                       "channel": "store"}).encode()


def _landing(root: Path, files: dict[str, list[bytes]], product_name: str = "Mug") -> Path:
    (root / "events").mkdir(parents=True, exist_ok=True)
    (root / "dims").mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (root / "events" / name).write_bytes(b"\n".join(lines) + b"\n")
    (root / "dims" / "products.jsonl").write_text(json.dumps({
        "product_id": "P0001", "product_name": product_name, "category": "Kitchen", "base_price": 2.5,
        "currency": "GBP"}) + "\n")
    (root / "dims" / "stores.jsonl").write_text(json.dumps({
        "store_id": "S001", "store_name": "London", "channel": "store", "country_code": "GB"}) + "\n")
    return root


def test_a_sharded_rerun_over_loaded_files_counts_every_copy_once(tmp_path):
    x = _order("X", "2024-03-01T10:00:00Z")
    settings = settings_for(tmp_path)
    land = _landing(tmp_path / "in", {"a1.jsonl": [x, _order("Y", "2024-03-01T11:00:00Z")]})
    run(land, settings)
    _landing(tmp_path / "in", {"a0.jsonl": [x]})  # an earlier-sorting file with a copy of X
    for _ in range(2):
        result = run(land, settings, workers=2)
        assert (result.lines_read, result.silver_rows, result.duplicates) == (3, 2, 1)
    assert query(settings, "select event_id, source_uri like '%a0.jsonl' from silver.order_events order by 1") == [
        ("X", True), ("Y", False)]


def test_a_sharded_run_counts_on_disk_only_the_partitions_two_shards_rewrote(tmp_path, monkeypatch):
    x = _order("X", "2024-03-01T10:00:00Z")
    land = _landing(tmp_path / "in", {"a.jsonl": [x, _order("Y", "2024-03-02T10:00:00Z")],
                                      "b.jsonl": [x, _order("Z", "2024-03-03T10:00:00Z")]})  # a copy of X
    assert len(backfill.plan_shards(backfill.match_inputs(str(land / "events" / "*.jsonl")), 2)) == 2
    counted = []
    real = backfill.LakeTable.count_from

    def count_from(self, sources, values=None):
        counted.append((self.spec.fqn, None if values is None else sorted(values)))
        return real(self, sources, values)

    monkeypatch.setattr(backfill.LakeTable, "count_from", count_from)
    settings = settings_for(tmp_path)
    for _ in range(2):  # a re-run: each shard sweeps the partitions only the other one writes, and keeps them
        counted.clear()
        result = run(land, settings, workers=2)
        assert (result.lines_read, result.silver_rows, result.duplicates, result.reconciles) == (4, 3, 1, True)
        assert sorted(counted) == [("silver.inventory_events", []), ("silver.order_events", ["2024-03-01"])]
    assert query(settings, "select event_id, source_uri like '%a.jsonl' from silver.order_events order by 1") == [
        ("X", True), ("Y", True), ("Z", False)]


def test_an_event_id_reused_on_another_day_is_treated_alike_by_one_or_two_processes(tmp_path):
    files = {"a.jsonl": [_order("X", "2024-03-01T23:59:59Z")], "b.jsonl": [_order("X", "2024-03-02T00:00:01Z")]}
    land = _landing(tmp_path / "in", files)
    counts = []
    for workers in (1, 2):
        settings = settings_for(tmp_path / f"w{workers}")
        result = run(land, settings, workers=workers)
        counts.append((result.silver_rows, result.duplicates,
                       query(settings, "select count(*) from silver.order_events")[0][0]))
    assert counts == [(2, 0, 2), (2, 0, 2)]  # two events that share an id, not two copies of one


def test_a_partition_lock_holds_off_writers_of_that_partition_only(tmp_path):
    lake = LakeTable(tmp_path, tables.TABLES["silver.order_events"])
    days = [f"2024-03-{d:02d}" for d in range(1, 29)]
    other = next(d for d in days if lake.lock_file(d) != lake.lock_file(days[0]))  # a partition on another stripe
    acquired = {}

    def take(value):  # flock excludes separate opens of the file, in one process as in two
        with lake.lock(value):
            acquired[value] = time.monotonic()

    with lake.lock(days[0]):
        held = time.monotonic()
        waiter, free = threading.Thread(target=take, args=(days[0],)), threading.Thread(target=take, args=(other,))
        waiter.start(), free.start()
        free.join(10)
        waiter.join(0.3)
        assert other in acquired and waiter.is_alive()
        released = time.monotonic()
    waiter.join(10)
    assert held <= acquired[other] < released <= acquired[days[0]]


def test_the_latest_dimension_load_wins(tmp_path):
    settings = settings_for(tmp_path)
    run(_landing(tmp_path / "d2025", {"e.jsonl": [_order("X", "2024-03-01T10:00:00Z")]}, "Mug"), settings)
    run(_landing(tmp_path / "d2024", {"e.jsonl": [_order("X", "2024-03-01T10:00:00Z")]}, "Mug (2025)"), settings)
    assert query(settings, "select product_name from silver.products") == [("Mug (2025)",)]


def test_a_truncated_gzip_file_keeps_what_it_read_and_says_so(tmp_path):
    import gzip

    lines = [_order(f"E{i}", "2024-03-01T10:00:00Z") for i in range(3000)]
    data = gzip.compress(b"\n".join(lines) + b"\n")
    land = _landing(tmp_path / "in", {})
    (land / "events" / "cut.jsonl.gz").write_bytes(data[: len(data) // 2])
    settings = settings_for(tmp_path)
    result = run(land, settings, pattern="*.jsonl.gz")
    assert result.reconciles
    dead = result.dead_letters
    assert dead.pop("unreadable_file") == 1
    assert dead in ({}, {"malformed_json": 1})  # the line the cut went through, if any
    assert 1000 < result.silver_rows < 3000


def test_hostile_lines_are_dead_letters_not_crashes(tmp_path):
    deep = b'{"event_type": "order", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    huge = _order("BIG", "2024-03-01T10:00:00Z")[:-1] + b', "pad": "' + b"x" * 3_000_000 + b'"}'
    land = _landing(tmp_path / "in", {"h.jsonl": [b"\xef\xbb\xbf" + _order("A", "2024-03-01T10:00:00Z"),
                                                  deep, huge, _order("B", "2024-02-29T23:59:59-05:00") + b"\r"]})
    settings = settings_for(tmp_path)
    result = run(land, settings)
    assert result.reconciles
    assert result.dead_letters == {"malformed_json": 1, "oversized_payload": 1}
    assert query(settings, "select event_id, event_date from silver.order_events order by 1") == [
        ("A", dt.date(2024, 3, 1)), ("B", dt.date(2024, 3, 1))]


def test_the_command_line(sim_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from pipelines.cli import app

    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "lake"))
    cli = CliRunner()
    done = cli.invoke(app, ["backfill", "--input", str(sim_dir / "events" / "*.jsonl"), "--dims",
                            str(sim_dir / "dims"), "--workers", "2"])
    assert done.exit_code == 0, done.output
    assert "reconciles" in done.output
    assert cli.invoke(app, ["summary"]).exit_code == 0
    answer = cli.invoke(app, ["sql", "select count(*) as n from silver.stores"])
    assert answer.exit_code == 0 and "3" in answer.output, answer.output
    missing = cli.invoke(app, ["backfill", "--input", str(tmp_path / "none" / "*.jsonl"), "--dims", "x"])
    assert missing.exit_code == 2 and "no input files match" in missing.output


def test_fewer_gc_passes_restores_the_collector_as_it_found_it():
    threshold = gc.get_threshold()
    with backfill.fewer_gc_passes(young=123_456):
        assert gc.get_threshold()[0] == 123_456 and gc.get_freeze_count() > 0
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # garbage made during a run is still collected
    assert gc.get_threshold() == threshold and gc.get_freeze_count() == 0
    gc.freeze()  # a caller that froze objects itself keeps them frozen
    try:
        frozen = gc.get_freeze_count()
        with backfill.fewer_gc_passes():
            pass
        assert gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_a_shard_builds_and_runs_its_pipeline_with_the_collector_tuned(monkeypatch):
    seen = []

    def pipeline(*args):
        seen.append((gc.get_freeze_count() > 0, gc.get_threshold()[0]))
        return backfill.ShardResult({})

    monkeypatch.setattr(backfill, "_run_pipeline", pipeline)
    threshold = gc.get_threshold()
    backfill.run_shard(backfill.Shard([], []), None, None, "DirectRunner", [], None, [])
    assert seen == [(True, 50_000)] and gc.get_threshold() == threshold and gc.get_freeze_count() == 0


def test_dataflow_options_come_from_the_settings():
    settings = Settings(environment="gcp", gcp_project="retail-lake", gcs_bucket="retail-lake-landing")
    options = backfill.cloud_options(settings, ["--region=us-east1", "--max_num_workers=5"])
    assert options[:2] == ["--region=us-east1", "--max_num_workers=5"]
    assert "--project=retail-lake" in options and "--region=europe-west2" not in options
    assert "--temp_location=gs://retail-lake-landing/dataflow/tmp" in options
    assert any(o.startswith("--setup_file=") and o.endswith("setup.py") for o in options)
    assert settings.bigquery_table("silver", "order_events") == "retail-lake:silver.order_events"


def test_the_bigquery_sink_builds_one_load_per_table_without_calling_google():
    import apache_beam as beam

    from pipelines.sinks import WriteToBigQueryTables

    p = beam.Pipeline()
    ids = {fqn: f"retail-lake:{spec.layer}.{spec.name}" for fqn, spec in tables.written_by("events").items()}
    orders_table = tables.TABLES["silver.order_events"].empty()
    p | beam.Create([("silver.order_events", orders_table)]) | WriteToBigQueryTables(ids)
    writes = {t.full_label.rsplit(" ", 1)[1]: t.transform for t in p.transforms_stack[0].parts[-1].parts
              if t.full_label.startswith("WriteToBigQueryTables/Write ")}
    assert set(writes) == set(tables.written_by("events"))
    orders = writes["silver.order_events"]
    assert orders.write_disposition == "WRITE_APPEND" and orders.create_disposition == "CREATE_IF_NEEDED"
    assert orders.additional_bq_parameters == {"timePartitioning": {"type": "DAY", "field": "event_date"},
                                               "clustering": {"fields": ["store_id", "product_id"]}}
    assert writes["silver.products"].write_disposition == "WRITE_TRUNCATE"


def test_a_failed_sharded_rerun_loses_nothing(sim_dir, tmp_path, monkeypatch):
    settings = settings_for(tmp_path)
    run(sim_dir, settings)
    counts = "select (select count(*) from silver.order_events), (select count(*) from bronze.order_events)"
    before = query(settings, counts)
    real = backfill.run_shard

    def first_shard_dies(shard, *args):
        if shard.dim_rows:  # the shard this process runs itself
            raise MemoryError("stand-in for an OOM or Ctrl-C")
        return real(shard, *args)

    monkeypatch.setattr(backfill, "run_shard", first_shard_dies)
    with pytest.raises(MemoryError):
        run(sim_dir, settings, workers=2)
    assert query(settings, counts) == before
