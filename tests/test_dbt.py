"""The dbt project on DuckDB, end to end: simulated events (with duplicates, late and bad lines) go through
the Beam backfill into a temporary lakehouse, then `dbt build` (seeds, models, data tests, unit tests).

The gold tables are checked against the simulator's truth (units sold and returned per day x store x
product, stock-outs, promotions), which the events never carry directly; the incremental rebuild after
more days arrive must give the same answer; and a silver table with broken keys, a redelivered event and
an event later than the lookback still builds every model while the tests flag each problem at its
severity. A test also keeps the generated sources yml and holiday seed in step with the contract.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import backfill, tables, transform, warehouse
from pipelines.config import Settings
from pipelines.simulate import simulate
from pipelines.sinks import LakeTable

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
START, DAYS, FIRST_PART = dt.date(2024, 3, 20), 16, 12  # Good Friday (29 Mar) and Easter Monday inside
GOLD = "gold"


def _backfill(landing: Path, files: list[Path], settings: Settings) -> None:
    events = landing / "events"
    events.mkdir(parents=True)
    for f in files:
        shutil.copy(f, events / f.name)
    result = backfill.run(str(events / "*.jsonl"), str(landing.parent / "sim" / "dims"), settings, now=NOW,
                          workers=1)
    assert result.reconciles


def _query(settings: Settings, sql: str) -> list[tuple]:
    with warehouse.connect(settings) as con:
        return con.execute(sql).fetchall()


def _units_ordered(settings: Settings, day: dt.date, store_id: str, product_id: str) -> int:
    return _query(settings, f"select units_ordered from {GOLD}.fact_daily_demand where demand_date = '{day}' "
                            f"and store_id = '{store_id}' and product_id = '{product_id}'")[0][0]


def _statuses(result: transform.BuildResult) -> dict[str, str]:
    return {n.name: n.status for n in result.nodes}


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A lakehouse built in two steps: the first FIRST_PART days' files and a full build, then the rest
    of the files (late events for the last days among them) and a second build, incremental for the facts."""
    root = tmp_path_factory.mktemp("dbt")
    sim = root / "sim"
    simulate(sim, days=DAYS, stores=3, products=8, start=START, seed=5, bad_rate=0.02, dup_rate=0.05,
             late_rate=0.05)
    settings = Settings(home=root / "lake")
    files = sorted((sim / "events").glob("*.jsonl"))
    _backfill(root / "part1", files[:FIRST_PART], settings)
    full = transform.build(settings)
    first_rows = _query(settings, f"select count(*), max(demand_date) from {GOLD}.fact_daily_demand")[0]
    _backfill(root / "part2", files[FIRST_PART:], settings)
    progress: list[transform.Progress] = []
    incremental = transform.build(settings, on_progress=progress.append)
    return {"root": root, "sim": sim, "settings": settings, "full": full, "incremental": incremental,
            "first_rows": first_rows, "progress": progress}


@pytest.mark.slow
def test_full_build_passes_with_unit_tests_and_builds_every_gold_table(lake):
    full = lake["full"]
    assert full.ok, [(n.name, n.status, n.message) for n in full.problems()] + full.errors
    kinds = {}
    for node in full.nodes:
        kinds.setdefault(node.resource_type, set()).add(node.status)
    assert kinds["model"] == {"success"} and kinds["unit_test"] == {"pass"} and kinds["seed"] == {"success"}
    units = {n.name.split(".")[-1] for n in full.nodes if n.resource_type == "unit_test"}
    assert {"keeps_the_first_copy_of_each_event", "zero_fills_every_series_from_its_first_day",
            "stockout_is_the_last_snapshot_of_the_day_at_zero"} <= units
    counts = transform.gold_row_counts(lake["settings"])
    assert set(counts) == set(transform.GOLD_MODELS)
    # before any forecast exists the forecast marts are empty but valid tables
    assert counts["fact_demand_forecast"] == counts["mart_forecast_accuracy"] == 0
    rows, last = lake["first_rows"]
    assert rows == 3 * 8 * FIRST_PART and last == START + dt.timedelta(days=FIRST_PART - 1)


@pytest.mark.slow
def test_the_build_reports_each_node_as_it_starts_and_ends(lake):
    nodes = [n for n in lake["incremental"].nodes if n.resource_type in ("model", "seed", "test")]
    started = {(p.phase, p.name) for p in lake["progress"] if p.kind == "start"}
    done = {(p.phase, p.name): p.status for p in lake["progress"] if p.kind == "done"}
    assert {phase for phase, _ in started} == {"sources", "build"}
    assert {name for _, name in started} == {name for _, name in done} == {n.name for n in nodes}
    models = {n.name for n in nodes if n.resource_type == "model"}
    assert {status for (_, name), status in done.items() if name in models} == {"success"}
    assert all(done[phase, name] == "pass" for phase, name in done if phase == "sources")


@pytest.mark.slow
def test_pipeline_health_counts_every_record_once_by_its_day(lake):
    settings = lake["settings"]
    day = START + dt.timedelta(days=DAYS // 2)
    dated = "coalesce(event_date, cast(failed_at as date))"  # the rejecting run's day when the event has none
    for where in ("true", f"activity_date >= date '{day}'"):
        landed, dead = _query(settings, f"""select sum(records) filter (where outcome = 'landed'),
            sum(dead_letters) from {GOLD}.v_pipeline_health where {where}""")[0]
        staged = [("stg_silver__order_events", "order_date"), ("stg_silver__inventory_events", "inventory_date")]
        events = sum(_query(settings, f"select count(*) from staging.{view} where "
                                      f"{where.replace('activity_date', column)}")[0][0] for view, column in staged)
        assert landed == events
        assert dead == _query(settings, f"select count(*) from bronze.dead_letter where "
                                        f"{where.replace('activity_date', dated)}")[0][0]
    undated = _query(settings, "select count(*) from bronze.dead_letter where event_date is null")[0][0]
    assert undated > 0  # unreadable lines have no event date


def test_a_broken_profile_fails_the_build_with_dbt_s_message(tmp_path):
    settings = Settings(home=tmp_path)
    heard: list[transform.Progress] = []
    result = transform.build(settings, target="gcp", on_progress=heard.append,
                             env=transform.dbt_env(settings) | {"LAKEHOUSE_GCP_AUTH_METHOD": "carrier-pigeon"})
    assert result.returncode == 2 and not result.ok and not result.nodes
    assert any("carrier-pigeon" in error for error in result.errors), result.errors
    assert [p.level for p in heard if "carrier-pigeon" in p.message] == ["error"]


def test_the_dbt_child_stops_when_preparing_the_warehouse_fails(tmp_path, monkeypatch):
    from pipelines import warehouse

    started = []
    start = transform._start_dbt
    monkeypatch.setattr(transform, "_start_dbt", lambda *args: started.append(start(*args)) or started[-1])

    def broken(settings):
        raise OSError("disk full")

    monkeypatch.setattr(warehouse, "refresh_views", broken)
    with pytest.raises(OSError, match="disk full"):
        transform.build(Settings(home=tmp_path))
    assert len(started) == 1 and started[0].returncode is not None  # killed and reaped, not left parsing


@pytest.mark.slow
def test_incremental_build_uses_the_lookback_and_matches_the_simulated_truth(lake):
    settings, incremental = lake["settings"], lake["incremental"]
    assert incremental.ok, [(n.name, n.status, n.message) for n in incremental.problems()]
    compiled = (transform.dbt_state(settings, "local") / "target" / "compiled" / "lakehouse" / "models" / "marts"
                / "fact_daily_demand.sql").read_text()
    cutoff = START + dt.timedelta(days=FIRST_PART - 1 - 3)
    assert f"demand_date >= date '{cutoff}'" in compiled  # an incremental run, not a rebuild

    truth = pq.read_table(lake["sim"] / "truth" / "daily_demand.parquet").to_pylist()
    gold = _query(settings, f"""select demand_date, store_id, product_id, units_ordered, units_returned,
                                       stockout, on_promo from {GOLD}.fact_daily_demand""")
    by_key = {(d, s, p): rest for d, s, p, *rest in gold}
    # zero-filled: one row per day x store x product, sold or not, nothing more
    assert set(by_key) == {(t["date"], t["store_id"], t["product_id"]) for t in truth}
    assert sum(1 for t in truth if t["units_sold"] == 0) > 0
    for t in truth:
        ordered, returned, stockout, on_promo = by_key[(t["date"], t["store_id"], t["product_id"])]
        assert (ordered, returned) == (t["units_sold"], t["units_returned"]), t
        if t["stockout"]:  # demand exceeded stock: the shelf was empty at the end of the day
            assert stockout, t
        assert on_promo == (t["on_promo"] and t["units_sold"] > 0), t
    assert any(stockout for *_, stockout, _ in gold) and any(p for *_, p in gold)

    silver_orders = _query(settings, "select count(distinct (event_date, event_id)) from silver.order_events")[0][0]
    assert _query(settings, f"select count(*) from {GOLD}.fact_orders")[0][0] == silver_orders
    # fact_inventory, incremental too, carries each day's last snapshot forward across the rebuilt days
    carried = _query(settings, f"""
        select count(*), count(*) filter (where fact.on_hand_end is distinct from seen.on_hand_end)
        from {GOLD}.fact_inventory as fact
        asof left join (select * from staging.int_inventory_daily where on_hand_end is not null) as seen
            on fact.store_id = seen.store_id and fact.product_id = seen.product_id
            and fact.inventory_date >= seen.inventory_date""")[0]
    assert carried[0] > 3 * 8 * FIRST_PART and carried[1] == 0
    holidays = _query(settings, f"select date_day, holiday_names from {GOLD}.dim_date where is_holiday")
    assert (dt.date(2024, 3, 29), "GB: Good Friday") in holidays


@pytest.mark.slow
def test_bad_and_late_rows_build_every_model_and_the_tests_flag_them(lake, tmp_path):
    settings = Settings(home=tmp_path / "lake")
    shutil.copytree(lake["settings"].lake_dir, settings.lake_dir)
    spec = tables.silver_events("order")
    table = LakeTable(settings.lake_dir, spec)
    nullable = pa.schema([f.with_nullable(True) for f in spec.schema])
    day2, last_day = START + dt.timedelta(days=1), START + dt.timedelta(days=DAYS - 1)
    old = table.read_partition(str(day2)).cast(nullable).to_pylist()
    recent = table.read_partition(str(last_day)).cast(nullable)
    template = {**old[0], "event_type": "order", "quantity": 7}
    at = dt.datetime.combine(last_day, dt.time(12), tzinfo=dt.UTC)
    late = {**template, "event_id": "late-1", "event_ts": dt.datetime.combine(day2, dt.time(12), tzinfo=dt.UTC)}
    table.write_partition(str(day2), pa.Table.from_pylist([*old, late], nullable))  # older than the lookback
    # late, but inside the lookback: the incremental build counts it
    in_lookback = last_day - dt.timedelta(days=2)
    key = (in_lookback, template["store_id"], template["product_id"])
    units_before = _units_ordered(lake["settings"], *key)
    inside = table.read_partition(str(in_lookback)).cast(nullable)
    late_inside = {**template, "event_id": "late-2", "event_ts": dt.datetime.combine(in_lookback, dt.time(12),
                                                                                     tzinfo=dt.UTC)}
    table.write_partition(str(in_lookback), pa.concat_tables([inside, pa.Table.from_pylist([late_inside], nullable)]))
    reused = recent.slice(0, 1).to_pylist()[0]
    redelivered = {**reused, "source_uri": "zzz-redelivery.jsonl"}  # the same event again: counted once
    day_before = table.read_partition(str(last_day - dt.timedelta(days=1))).cast(nullable).to_pylist()[0]
    reuse = {**day_before, "event_ts": day_before["event_ts"] + dt.timedelta(days=1)}  # its id reused a day later
    bad = [{**template, "event_id": "ghost-1", "event_ts": at, "product_id": "P-GHOST"},  # unknown product
           {**template, "event_id": "nokey-1", "event_ts": at, "store_id": None},  # broken key
           {**template, "event_id": "kiosk-1", "event_ts": at, "channel": "kiosk"},  # a channel not in the contract
           redelivered, reuse]
    table.write_partition(str(last_day), pa.concat_tables([recent, pa.Table.from_pylist(bad, nullable)]))
    # the day's last snapshot of a series counts below zero, with a reason the contract does not know
    stock = LakeTable(settings.lake_dir, tables.silver_events("inventory"))
    snapshots = stock.read_partition(str(last_day))
    snapshot = next(r for r in snapshots.to_pylist() if r["event_type"] == "inventory_snapshot")
    negative = {**snapshot, "event_id": "negative-1", "quantity": -5, "reason": "lost_in_space",
                "event_ts": dt.datetime.combine(last_day, dt.time(23, 59), tzinfo=dt.UTC)}
    stock.write_partition(str(last_day), pa.concat_tables([snapshots, pa.Table.from_pylist([negative],
                                                                                           snapshots.schema)]))

    result = transform.build(settings)
    statuses = _statuses(result)
    assert not result.ok  # error-severity tests failed ...
    models = {n.name: n.status for n in result.nodes if n.resource_type == "model"}
    # ... yet every model was built, bar the view over the fact whose own error test failed (negative stock)
    assert {name for name, status in models.items() if status != "success"} == {"v_inventory_risk"}, models
    assert models["v_inventory_risk"] == "skipped"
    failed = {name for name, status in statuses.items() if status == "fail"}
    warned = {name for name, status in statuses.items() if status == "warn"}
    # exactly the broken keys fail (at the source), and the duplicates and the late event warn; the tests on
    # event tables checked the days the build rebuilt (the test window), where the bad rows are
    assert {n.split("__")[0] for n in failed} == {
        "source_not_null_columns_silver_order_events", "source_relationships_silver_order_events_product_id",
        "source_accepted_values_columns_silver_order_events", "source_accepted_values_columns_silver_inventory_events",
        "non_negative_columns_fact_inventory_on_hand_end"}, failed
    def failures(prefix: str) -> int | None:
        return next(n.failures for n in result.nodes if n.name.startswith(prefix))

    assert failures("source_not_null_columns_silver_order_events") == 1  # the keyless row's store_id, as not_null
    assert failures("source_accepted_values_columns_silver_order_events") == 1  # the kiosk
    assert failures("source_accepted_values_columns_silver_inventory_events") == 1  # the unknown reason
    assert failures("non_negative_columns_fact_inventory") == 1  # the series' day ends below zero
    assert any(n.startswith("source_unique_silver_order_events_event_id") for n in warned), warned
    assert "assert_daily_demand_reconciles_with_silver" in warned  # the late event, beyond the lookback
    assert "assert_daily_demand_grid_is_complete" not in warned | failed
    skipped = {n.name for n in result.problems()} - failed - warned  # the view after the failed fact, its tests
    assert len(skipped) == 5 and all("v_inventory_risk" in n and statuses[n] == "skipped" for n in skipped), skipped
    window_start = last_day - dt.timedelta(days=3)  # the newest day before this build minus the lookback
    compiled = next((transform.dbt_state(settings, "local") / "target" / "compiled").rglob(
        "not_null_columns_fact_daily_de*.sql")).read_text()
    assert f"demand_date >= date '{window_start}'" in compiled

    # the unknown product joins to an unknown member; the keyless row and the redelivered copy stay out; an
    # id reused on another day is another event (the lakehouse's key is event_date, event_id)
    assert _query(settings, f"select is_known from {GOLD}.dim_product where product_id = 'P-GHOST'") == [(False,)]
    assert _query(settings, f"select units_ordered from {GOLD}.fact_daily_demand where product_id = 'P-GHOST'") \
        == [(7,)]
    assert _query(settings, f"select count(*) from {GOLD}.fact_orders where event_id = 'nokey-1'") == [(0,)]
    assert _query(settings, f"select source_line from {GOLD}.fact_orders join staging.stg_silver__order_events "
                            f"using (order_date, event_id) where event_id = '{reused['event_id']}'") \
        == [(reused["source_line"],)]
    assert sorted(_query(settings, f"select order_date from {GOLD}.fact_orders where event_id = "
                                   f"'{reuse['event_id']}'")) == [(last_day - dt.timedelta(days=1),), (last_day,)]
    # the late event inside the lookback is counted by the incremental build
    assert _units_ordered(settings, *key) == units_before + 7
    # a full refresh counts the late event
    refreshed = transform.build(settings, select=["+fact_daily_demand", "+fact_orders", "dim_date"],
                                full_refresh=True)
    # ... and the reconciliation passes, though silver still holds the redelivered copy (its day's totals as
    # received differ from the fact's, so that day is deduplicated and compared exactly)
    assert _statuses(refreshed)["assert_daily_demand_reconciles_with_silver"] == "pass"


def test_dbt_sources_and_holiday_seed_in_the_repo_are_current(tmp_path):
    sources = transform.write_dbt_sources(tmp_path / "_sources.yml")
    assert sources.read_text() == transform.SOURCES_YML.read_text(), "run `make schemas`"
    seed = transform.write_holiday_seed(tmp_path / "public_holidays.csv")
    assert seed.read_text() == transform.HOLIDAYS_SEED.read_text(), "run `make schemas`"


def test_sources_are_derived_from_the_contract():
    generated = transform.dbt_sources()
    silver = next(s for s in generated["sources"] if s["name"] == "silver")
    orders = next(t for t in silver["tables"] if t["name"] == "order_events")
    columns = {c["name"]: c for c in orders["columns"]}
    assert list(columns) == tables.silver_events("order").schema.names
    # the required fields in one test (one scan), the values of the columns the contract enumerates in another
    assert orders["data_tests"] == [
        {"not_null_columns": {"name": "source_not_null_columns_silver_order_events", "arguments": {"columns": [
            f.name for f in tables.silver_events("order").schema if not f.nullable]}}},
        {"accepted_values_columns": {"name": "source_accepted_values_columns_silver_order_events", "arguments": {
            "values": {"event_type": ["order", "return"], "channel": ["online", "store"]}}}}]
    assert "customer_id" not in orders["data_tests"][0]["not_null_columns"]["arguments"]["columns"]
    assert not any("data_tests" in column for column in columns.values())
    with pytest.raises(ValueError, match="not_a_column"):
        transform.dbt_sources({"sources": [{"name": "silver", "tables": [
            {"name": "order_events", "columns": [{"name": "not_a_column"}]}]}]})


def test_transform_rejects_an_unknown_target(tmp_path):
    with pytest.raises(ValueError, match="target"):
        transform.build(Settings(home=tmp_path), target="snowflake")


@pytest.mark.slow
def test_docs_page_documents_every_model_and_the_warehouse_columns(lake):
    settings = lake["settings"]
    result = transform.docs(settings)
    assert result.returncode == 0, result.errors
    target = transform.dbt_state(settings, "local") / "target"
    catalog = json.loads((target / "catalog.json").read_text())
    fact = catalog["nodes"]["model.lakehouse.fact_daily_demand"]
    assert {"units_ordered", "stockout"} <= {c.lower() for c in fact["columns"]}
    manifest = json.loads((target / "manifest.json").read_text())
    undocumented = [uid for uid, node in manifest["nodes"].items()
                    if node["resource_type"] == "model" and not node["description"]]
    assert not undocumented
    page = transform.docs_page(settings).read_text()
    assert "fact_daily_demand" in page and "units_ordered" in page  # one page, the data inside
