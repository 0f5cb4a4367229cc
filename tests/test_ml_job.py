"""The forecasting job end to end on a tiny warehouse: outputs, idempotent re-runs, bad input, the CLI."""

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from demand_fixture import simulated_fact, write_fact
from typer.testing import CliRunner

from ml import job
from pipelines import tables, warehouse
from pipelines.cli import app
from pipelines.config import Settings
from pipelines.sinks import LakeTable

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
STORES, PRODUCTS, DAYS = 2, 3, 100


@pytest.fixture(scope="module")
def sim():
    return simulated_fact(days=DAYS, stores=STORES, products=PRODUCTS, seed=5)


@pytest.fixture
def lake(tmp_path, monkeypatch, sim):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "lake"))
    settings = Settings()
    write_fact(settings, sim[0])
    return settings


def _count(settings, sql):
    with warehouse.connect(settings) as con:
        return con.execute(sql).fetchall()


def test_run_writes_forecasts_metrics_and_run_record(lake):
    result = job.run(lake, horizon=7, folds=2, models_=("snaive", "tsb"), run_id="r1", workers=1, now=NOW)
    series = STORES * PRODUCTS
    assert result.series == series and sum(result.chosen.values()) == series
    (n, first, last, negatives), = _count(lake, "select count(*), min(forecast_date), max(forecast_date), "
                                               "count(*) filter (where yhat < 0 or yhat_lower_95 < 0) "
                                               "from ml.forecasts where run_id = 'r1'")
    data_end = dt.date(2023, 1, 2) + dt.timedelta(days=DAYS - 1)
    assert n == series * 7 and first == data_end + dt.timedelta(days=1) and negatives == 0
    assert last == data_end + dt.timedelta(days=7)
    (runs, freq, horizon, wape, naive, cov80), = _count(
        lake, "select count(*), any_value(freq), any_value(horizon), any_value(wape), "
              "any_value(wape_seasonal_naive), any_value(coverage_80) from ml.forecast_runs")
    assert (runs, freq, horizon) == (1, "D", 7) and 0 <= wape and 0 <= naive and 0 <= cov80 <= 1
    (chosen, tried), = _count(lake, "select count(*) filter (where chosen), count(*) from ml.backtest_metrics")
    assert chosen == series and tried >= series


def test_rerun_replaces_its_rows_and_keeps_other_runs(lake):
    kwargs = {"horizon": 7, "folds": 1, "models_": ("snaive",), "workers": 1, "now": NOW}
    job.run(lake, run_id="a", **kwargs)
    job.run(lake, run_id="b", **kwargs)
    before = _count(lake, "select run_id, count(*) from ml.forecasts group by 1 order by 1")
    job.run(lake, run_id="a", **kwargs)
    assert _count(lake, "select run_id, count(*) from ml.forecasts group by 1 order by 1") == before
    assert _count(lake, "select run_id from ml.forecast_runs order by 1") == [("a",), ("b",)]
    # a shorter re-run of "a" leaves none of its old days behind, and "b" untouched
    job.run(lake, run_id="a", **{**kwargs, "horizon": 3})
    assert _count(lake, "select run_id, count(*) from ml.forecasts group by 1 order by 1") == [
        ("a", STORES * PRODUCTS * 3), ("b", STORES * PRODUCTS * 7)]


def test_replace_run_removes_partitions_it_empties(tmp_path):
    lake = LakeTable(tmp_path, tables.FORECASTS)
    row = {"run_id": "x", "store_id": "S", "product_id": "P", "forecast_date": dt.date(2024, 1, 1), "yhat": 1.0,
           "yhat_lower_80": 0.0, "yhat_upper_80": 2.0, "yhat_lower_95": 0.0, "yhat_upper_95": 3.0, "model": "snaive"}
    job.replace_run(lake, "x", pa.Table.from_pylist([row], schema=tables.FORECASTS.schema))
    assert lake.partitions() == ["2024-01-01"]
    job.replace_run(lake, "x", tables.FORECASTS.empty())
    assert lake.partitions() == []


def test_model_files_are_json_not_pickles(lake):
    result = job.run(lake, horizon=7, folds=0, models_=("prophet",), run_id="m", workers=1, now=NOW)
    files = sorted(p for p in (lake.lake_dir / "ml" / "models" / "m").rglob("*") if p.is_file())
    assert files and all(p.suffix == ".json" for p in files)
    assert result.chosen.get("prophet", 0) + result.chosen.get("snaive", 0) == STORES * PRODUCTS


def test_bad_series_in_the_warehouse_still_get_forecasts(tmp_path, monkeypatch, sim):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "lake"))
    settings = Settings()
    frame = sim[0].copy()
    first = frame["store_id"].eq("S001") & frame["product_id"].eq("P0001")
    frame.loc[first, "units_ordered"] = 0.0  # all zeros
    second = frame["store_id"].eq("S001") & frame["product_id"].eq("P0002")
    frame.loc[second & frame["demand_date"].map(lambda d: d.day % 3 == 0), "units_ordered"] = -1.0  # negatives
    days = sorted(frame["demand_date"].unique())
    middle = (days[len(days) // 3], days[len(days) // 2])
    frame = frame[~(frame["store_id"].eq("S002") & frame["product_id"].eq("P0003")
                    & frame["demand_date"].between(*middle))]  # rows missing mid-history: a gap
    late = frame["store_id"].eq("S002") & frame["product_id"].eq("P0002")
    frame = frame[~(late & (frame["demand_date"] < days[-12]))]  # a late start is no gap, just a short series
    write_fact(settings, frame)
    result = job.run(settings, horizon=7, folds=2, models_=("snaive", "tsb"), run_id="bad", workers=1, now=NOW)
    notes = {(r["store_id"], r["product_id"]): r["note"] or "" for r in result.results}
    assert "all zeros" in notes[("S001", "P0001")]
    assert "negative value(s) set to 0" in notes[("S001", "P0002")]
    assert "missing period(s)" in notes[("S002", "P0003")]
    assert "too short" in notes[("S002", "P0002")] and "missing" not in notes[("S002", "P0002")]
    assert _count(settings, "select count(distinct (store_id, product_id)) from ml.forecasts")[0][0] == 6


def test_missing_mart_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="fact_daily_demand"):
        job.run(Settings(), workers=1)


def test_unknown_model_is_refused(lake):
    with pytest.raises(ValueError, match="unknown model"):
        job.run(lake, models_=("arima",), workers=1)


@pytest.mark.slow
def test_cli_forecast_end_to_end_with_truth_and_plot(lake, sim, tmp_path):
    truth_dir = tmp_path / "truth"
    truth_dir.mkdir()
    pq.write_table(sim[1], truth_dir / "daily_demand.parquet")
    args = ["forecast", "--horizon", "14", "--folds", "2", "--models", "prophet,snaive,tsb", "--run-id", "cli",
            "--truth", str(truth_dir), "--workers", "2", "--plot", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "WAPE" in result.output and "oracle" in result.output and "coverage" in result.output
    png = lake.lake_dir / "ml" / "plots" / "cli.png"
    assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
    assert _count(lake, "select count(*) from ml.forecasts where run_id = 'cli'")[0][0] == STORES * PRODUCTS * 14
    with duckdb.connect(str(lake.warehouse_path), read_only=True) as con:  # the views dbt reads
        assert con.execute("select count(*) from ml.backtest_metrics where run_id = 'cli'").fetchone()[0] > 0
    bad = CliRunner().invoke(app, ["forecast", "--models", "arima"])
    assert bad.exit_code == 2 and "unknown model" in bad.output


def test_weekly_run_forecasts_mondays(lake):
    job.run(lake, horizon=4, freq="W", folds=1, models_=("snaive", "tsb"), run_id="w", workers=1, now=NOW)
    rows = _count(lake, "select distinct forecast_date from ml.forecasts where run_id = 'w' order by 1")
    assert len(rows) == 4 and all(d.weekday() == 0 for (d,) in rows)
    assert _count(lake, "select freq from ml.forecast_runs where run_id = 'w'") == [("W",)]


def test_series_from_rows_in_a_pipeline():
    """The Dataflow path: workers build the series from the mart's rows, on the launcher's calendar (each from
    its own first day)."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    rows = [{"demand_date": dt.date(2024, 1, d), "store_id": s, "product_id": "P1", "units_ordered": float(d),
             "avg_unit_price": 2.0, "on_promo": False, "stockout": False}
            for s, days in (("S1", (1, 2, 3)), ("S2", (2,))) for d in days]
    with TestPipeline() as p:
        got = (p | beam.Create(rows)
               | job.SeriesFromRows("D", dt.date(2024, 1, 1), dt.date(2024, 1, 4), {"S2": "IE"})
               | beam.Map(lambda s: (s.store_id, s.country, len(s.dates), int((s.y == s.y).sum()))))
        assert_that(got, equal_to([("S1", "GB", 4, 3), ("S2", "IE", 3, 1)]))


def test_read_series_chooses_before_cutting_and_keeps_the_whole_calendar(lake, sim):
    """Choosing stores or (store, product) keys gives exactly those series of the whole mart, on its calendar,
    whatever else the warehouse holds (here: a second dataset years older, as the demo's real history is)."""
    import numpy as np
    import pandas as pd

    from ml import data

    older = sim[0].assign(store_id="OLD", demand_date=pd.to_datetime(sim[0]["demand_date"]) - pd.DateOffset(years=5))
    write_fact(lake, pd.concat([sim[0], older], ignore_index=True))
    every = data.to_series(data.read_demand(lake), "D", data.read_countries(lake))
    store = every[0].store_id
    chosen = data.read_series(lake, "D", stores=(store,))
    assert [s.key for s in chosen] == [s.key for s in every if s.store_id == store] and len(chosen) == PRODUCTS
    keys = {every[0].key, every[-1].key}
    picked = data.read_series(lake, "D", keys=keys)
    assert {s.key for s in picked} == keys
    for mine in chosen + picked:
        theirs = next(s for s in every if s.key == mine.key)
        assert np.array_equal(mine.dates, theirs.dates) and np.array_equal(mine.y, theirs.y, equal_nan=True)
