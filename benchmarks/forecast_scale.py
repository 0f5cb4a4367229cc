"""Forecasting at scale and accuracy against the truth: the project's job vs a plain default-Prophet loop.

    .venv/bin/python benchmarks/forecast_scale.py                       # 1,000 series x 730 days + real data
    .venv/bin/python benchmarks/forecast_scale.py --stores 2 --products 50 --skip-real    # a quick look

Simulated part (known truth): `stores x products` series of 730 days; the last 28 days are held out.
1. the reference: a sequential loop of default Prophet (fit, then predict 28 days with its default 1000
   uncertainty samples), one series after another, on the same 702 days of history;
2. the job doing the same final-fit-and-forecast work (`--folds 0`: no backtest);
3. the full job with a 3-fold backtest choosing the model per series;
then, on the held-out 28 days, WAPE of the chosen forecasts vs seasonal naive and vs the oracle (the
simulator's expected demand scored on the same actuals), and the coverage of the 80% and 95% intervals.
The planned prices and promotions of the held-out days are given to the job (retailers plan them).

Real part: the 200 best-selling products of UCI Online Retail II (all markets together, daily), imported
with the project's importer; the last 28 days held out; WAPE vs seasonal naive.

The history is written as `gold.fact_daily_demand` (as dbt's mart would) into a scratch LAKEHOUSE_HOME
under benchmarks/.data, and the job reads it from there. Times are wall-clock on whatever else the
machine is doing; the load average is printed with them, and so are CPU seconds (user + system of the
whole process tree, cmdstan and the job's worker processes included), which do not depend on it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cputime import Timer, load_average  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
from demand_fixture import simulated_fact, write_fact  # noqa: E402

from ml import data, job, metrics, models  # noqa: E402
from pipelines.config import Settings  # noqa: E402
from pipelines.sinks import LakeTable  # noqa: E402
from pipelines.tables import FORECASTS  # noqa: E402

HOLDOUT = 28
SCRATCH = ROOT / "benchmarks" / ".data"
RETAIL_CSV = ROOT.parent / "shared" / "data" / "online_retail_ii.csv.xz"  # ../shared/data beside the checkout


def load() -> str:
    return f"load average {load_average()}"


def scratch_settings(name: str) -> Settings:
    home = SCRATCH / name
    shutil.rmtree(home, ignore_errors=True)
    return Settings(home=home)


def default_prophet_loop(series: list[data.Series], horizon: int) -> tuple[Timer, dict]:
    """The reference: default Prophet per series, one after another (fit, predict with default intervals)."""
    from prophet import Prophet

    models.quiet_prophet()
    out = {}
    with Timer() as timer:
        for s in series:
            frame = pd.DataFrame({"ds": pd.to_datetime(s.dates), "y": s.y})
            m = Prophet()
            m.fit(frame)
            fc = m.predict(m.make_future_dataframe(horizon, include_history=False))
            out[s.key] = fc[["yhat", "yhat_lower", "yhat_upper"]].to_numpy()
    return timer, out


def run_forecasts(settings: Settings, run_id: str) -> dict[tuple[str, str], pa.Table]:
    lake = LakeTable(settings.lake_dir, FORECASTS)
    rows = pa.concat_tables([lake.read_partition(v) for v in lake.partitions()])
    rows = rows.filter(pc.equal(rows["run_id"], run_id)).sort_by([("store_id", "ascending"),
                                                                  ("product_id", "ascending"),
                                                                  ("forecast_date", "ascending")])
    out = {}
    for key, group in rows.to_pandas().groupby(["store_id", "product_id"]):
        out[key] = group
    return out


def score_holdout(series: list[data.Series], actual: dict, forecasts: dict, expected: dict | None) -> dict:
    """Pooled WAPE / coverage on the held-out days: chosen forecasts, seasonal naive, oracle."""
    chosen, naive, oracle = metrics.Score(), metrics.Score(), metrics.Score()
    for s in series:
        a = actual[s.key]
        f = forecasts[s.key]
        chosen = chosen + metrics.Score.of(a, f["yhat"], f["yhat_lower_80"], f["yhat_upper_80"],
                                           f["yhat_lower_95"], f["yhat_upper_95"])
        n = models.seasonal_naive(s, HOLDOUT).clipped()
        naive = naive + metrics.Score.of(a, n.yhat, n.lo80, n.hi80, n.lo95, n.hi95)
        if expected is not None:
            e = expected[s.key]
            oracle = oracle + metrics.Score.of(a, e, e, e, e, e)
    return {"chosen": chosen, "snaive": naive, "oracle": oracle if expected is not None else None}


def print_accuracy(label: str, scores: dict) -> None:
    c, n, o = scores["chosen"], scores["snaive"], scores["oracle"]
    print(f"  {label}: held-out {HOLDOUT} days, {c.points:,} points")
    print(f"    WAPE chosen {c.wape:.4f} | seasonal naive {n.wape:.4f} -> {100 * (1 - c.wape / n.wape):.1f}% better "
          f"(target >= 15%)")
    if o is not None:
        print(f"    WAPE oracle {o.wape:.4f} -> chosen is {100 * (c.wape / o.wape - 1):.1f}% above the oracle "
              f"(target <= 15%)")
    print(f"    coverage 80%: {100 * c.coverage_80:.1f}%, 95%: {100 * c.coverage_95:.1f}% (target: within 5 points)"
          f" | bias {100 * c.bias:+.1f}%")


def simulated(args) -> None:
    days = 730
    print(f"== simulated: {args.stores} stores x {args.products} products = {args.stores * args.products:,} series "
          f"x {days} days (last {HOLDOUT} held out) ==")
    t = time.perf_counter()
    fact, truth = simulated_fact(days=days, stores=args.stores, products=args.products, seed=args.seed)
    cutoff = fact["demand_date"].max() - dt.timedelta(days=HOLDOUT)
    settings = scratch_settings("forecast_sim")
    write_fact(settings, fact[fact["demand_date"] <= cutoff])
    truth_dir = settings.lake_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(truth, truth_dir / "daily_demand.parquet")
    series = data.to_series(data.read_demand(settings), "D")
    job.attach_truth(series, truth_dir)
    t_df = truth.to_pandas()
    t_df["date"] = pd.to_datetime(t_df["date"]).dt.date
    held = t_df[t_df["date"] > cutoff].sort_values(["store_id", "product_id", "date"])
    actual, expected = {}, {}
    for (store, product), g in held.groupby(["store_id", "product_id"]):
        actual[(store, product)] = g["units_sold"].to_numpy(float)
        expected[(store, product)] = g["expected_demand"].to_numpy(float)
        plan_price = (g["price"] * (1 - g["discount_pct"])).to_numpy(float)
        plan_promo = g["on_promo"].to_numpy(float)
        for s in series:
            if s.key == (store, product):
                s.future_price, s.future_promo = plan_price, plan_promo
    print(f"  data ready in {time.perf_counter() - t:.1f} s; {load()}")

    sample = series if not args.loop_sample else series[: args.loop_sample]
    loop, loop_fc = default_prophet_loop(sample, HOLDOUT)
    scale = len(series) / len(sample)
    loop_wall, loop_cpu = loop.wall * scale, loop.cpu * scale
    extrapolated = f" (extrapolated from {len(sample)} series)" if len(sample) < len(series) else ""
    print(f"  default Prophet loop, sequential: {loop_wall:.1f} s wall, {loop_cpu:.1f} CPU-s{extrapolated} "
          f"({1000 * loop.cpu / len(sample):.0f} CPU-ms/series); {load()}")

    with Timer() as t:
        fast = job.run(settings, horizon=HOLDOUT, folds=0, run_id="bench-final-only", series=series,
                       workers=args.workers)
    print(f"  job, final fit + forecast only (--folds 0): {t} -> {loop_wall / t.wall:.2f}x the loop's wall time, "
          f"{loop_cpu / t.cpu:.2f}x its CPU time (target >= 3x on {os.cpu_count()} cores); chosen {fast.chosen}; "
          f"{load()}")

    with Timer() as t:
        full = job.run(settings, horizon=HOLDOUT, folds=3, run_id="bench-backtest", series=series,
                       workers=args.workers, truth_dir=truth_dir)
    print(f"  job with a 3-fold backtest: {t} (target <= 300 s); chosen {full.chosen}; {load()}")
    row = full.overall
    print(f"    backtest: WAPE {row['wape']:.4f} vs seasonal naive {row['wape_seasonal_naive']:.4f}, oracle "
          f"{(full.oracle or {}).get('wape')}; coverage 80% {row['coverage_80']:.3f}, 95% {row['coverage_95']:.3f}")

    print_accuracy("job with backtest", score_holdout(series, actual, run_forecasts(settings, full.run_id), expected))
    print_accuracy("job, no backtest", score_holdout(series, actual, run_forecasts(settings, fast.run_id), expected))
    loop_rows = {}
    for key, values in loop_fc.items():
        yhat, lo, hi = (np.clip(values[:, i], 0, None) for i in range(3))
        loop_rows[key] = {"yhat": yhat, "yhat_lower_80": lo, "yhat_upper_80": hi, "yhat_lower_95": lo,
                          "yhat_upper_95": hi}
    scores = score_holdout(sample, actual, loop_rows, expected)
    print(f"  default Prophet loop (clipped at 0): WAPE {scores['chosen'].wape:.4f}, coverage of its 80% interval "
          f"{100 * scores['chosen'].coverage_80:.1f}%")


def retail_fact(csv: Path, products: int) -> pd.DataFrame:
    """Daily units of the best-selling products of Online Retail II, all markets together, zero-filled."""
    import duckdb

    from pipelines.importers import import_orders

    landing = SCRATCH / "online_retail"
    if not (landing / "manifest.json").exists():
        import_orders(csv, landing, format="online-retail")
    events = str(landing / "events" / "*.jsonl")
    con = duckdb.connect()
    query = f"""
        with orders as (
            select cast(cast(event_ts as timestamptz) as date) as d, product_id, quantity, unit_price
            from read_json_auto('{events}', format = 'newline_delimited', union_by_name = true)
            where event_type = 'order' and quantity > 0 and unit_price > 0
              and regexp_matches(product_id, '^[0-9]{{5}}[A-Z]*$')
        ),
        top as (select product_id from orders group by 1 order by sum(quantity) desc limit {products}),
        days as (select unnest(range(min(d), max(d) + interval 1 day, interval 1 day))::date as d from orders),
        daily as (select d, product_id, sum(quantity) as units, sum(quantity * unit_price) as revenue
                  from orders where product_id in (select product_id from top) group by all)
        select days.d as demand_date, 'all-markets' as store_id, top.product_id,
               coalesce(units, 0)::double as units_ordered, 0.0 as units_returned,
               coalesce(revenue, 0) as net_revenue, revenue / units as avg_unit_price,
               false as on_promo, false as stockout
        from days cross join top left join daily using (d, product_id)
        order by 2, 3, 1
    """
    return con.execute(query).df()


def real(args) -> None:
    if not args.retail_csv.exists():
        print(f"== real data: {args.retail_csv} not found, skipped ==")
        return
    print(f"== real data: {args.real_products} best-selling products of Online Retail II, daily, last {HOLDOUT} "
          f"days held out ==")
    t = time.perf_counter()
    fact = retail_fact(args.retail_csv, args.real_products)
    fact["demand_date"] = pd.to_datetime(fact["demand_date"]).dt.date
    cutoff = fact["demand_date"].max() - dt.timedelta(days=HOLDOUT)
    settings = scratch_settings("forecast_real")
    write_fact(settings, fact[fact["demand_date"] <= cutoff])
    held = fact[fact["demand_date"] > cutoff]
    actual = {k: g.sort_values("demand_date")["units_ordered"].to_numpy(float)
              for k, g in held.groupby(["store_id", "product_id"])}
    series = data.to_series(data.read_demand(settings), "D")
    print(f"  data ready in {time.perf_counter() - t:.1f} s ({fact['demand_date'].min()}..{cutoff} for fitting)")
    with Timer() as t:
        result = job.run(settings, horizon=HOLDOUT, folds=3, run_id="bench-real", series=series,
                         workers=args.workers)
    print(f"  job with a 3-fold backtest: {t}; chosen {result.chosen}; {load()}")
    print_accuracy("real data", score_holdout(series, actual, run_forecasts(settings, result.run_id), None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stores", type=int, default=10)
    parser.add_argument("--products", type=int, default=100)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--workers", type=int, default=0, help="local worker processes (0: one per core)")
    parser.add_argument("--loop-sample", type=int, default=0,
                        help="time the default-Prophet loop on this many series and extrapolate (0: all)")
    parser.add_argument("--real-products", type=int, default=200)
    parser.add_argument("--retail-csv", type=Path, default=RETAIL_CSV)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--skip-sim", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for name in ("apache_beam", "cmdstanpy", "prophet"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print(f"forecast benchmark on {os.cpu_count()} cores, {load()} (a shared, busy machine)")
    if not args.skip_sim:
        simulated(args)
    if not args.skip_real:
        real(args)


if __name__ == "__main__":
    main()
