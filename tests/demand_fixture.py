"""A stand-in for dbt's `gold.fact_daily_demand`, built from the simulator's truth, for tests and benchmarks.

The real table is dbt's mart; this builds the same columns (`ml.data.DEMAND_COLUMNS`) straight from the
simulated process so the forecasting tests and benchmarks do not need dbt:

    world = simulate_world(start=..., days=..., stores=..., products=..., country="GB", seed=1)
    frame = fact_from_truth(truth_table(world))
    write_fact(settings, frame)          # gold.fact_daily_demand in $LAKEHOUSE_HOME/warehouse.duckdb
"""

from __future__ import annotations

import datetime as dt

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from ml.data import DEMAND_COLUMNS, DEMAND_LAYER, DEMAND_TABLE
from pipelines import warehouse
from pipelines.config import Settings
from pipelines.simulate import simulate_world, truth_table


def fact_from_truth(truth: pa.Table) -> pd.DataFrame:
    """The mart's rows from the truth: units sold are the units ordered; price paid after the discount."""
    t = truth.to_pandas()
    paid = t["price"] * (1 - t["discount_pct"])
    sold = t["units_sold"].astype(float)
    frame = pd.DataFrame({
        "demand_date": pd.to_datetime(t["date"]).dt.date,
        "store_id": t["store_id"], "product_id": t["product_id"],
        "units_ordered": sold, "units_returned": t["units_returned"].astype(float),
        "net_revenue": sold * paid, "avg_unit_price": paid.where(sold > 0),
        "on_promo": t["on_promo"].astype(bool), "stockout": t["stockout"].astype(bool),
    })
    return frame[list(DEMAND_COLUMNS)]


def simulated_fact(days: int, stores: int, products: int, seed: int = 1,
                   start: dt.date = dt.date(2023, 1, 2)) -> tuple[pd.DataFrame, pa.Table]:
    truth = truth_table(simulate_world(start=start, days=days, stores=stores, products=products, country="GB",
                                       seed=seed))
    return fact_from_truth(truth), truth


def write_fact(settings: Settings, frame: pd.DataFrame) -> None:
    """(Re)create gold.fact_daily_demand in the local warehouse, and the lakehouse views next to it."""
    settings.lake_dir.mkdir(parents=True, exist_ok=True)
    warehouse.refresh_views(settings)
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {DEMAND_LAYER}")
        con.register("frame", frame)
        con.execute(f"CREATE OR REPLACE TABLE {DEMAND_LAYER}.{DEMAND_TABLE} AS SELECT * FROM frame")


def hand_series(y, freq: str = "D", start: str = "2024-01-01", **kw):
    """A Series from a list of values (price 1, no promotion), for hand-made cases."""
    from ml.data import Series

    y = np.asarray(y, float)
    step = 7 if freq == "W" else 1
    dates = np.datetime64(start) + (np.arange(len(y)) * step).astype("timedelta64[D]")
    return Series(kw.pop("store_id", "S1"), kw.pop("product_id", "P1"), freq, dates, y, np.ones(len(y)),
                  np.zeros(len(y)), np.zeros(len(y), bool), **kw)
