"""dbt on DuckDB at size: a full `lakehouse transform` on a year of events, then the incremental rebuild
after one more day arrives.

    python benchmarks/dbt_build.py                       # 365 + 1 days, 20 stores x 200 products
    python benchmarks/dbt_build.py --stores 5 --products 50

Simulates days+1 days (cached under benchmarks/.data/), backfills all but the last day's files, times a
full build (source tests, seeds, models, data and unit tests), backfills the last day (and the late
arrivals filed after it), times the rebuild (incremental facts with their lookback), and prints both with
the gold row counts. Timings include dbt's start-up and parse (one child process per build). The machine
is shared and noisy: compare the figures of one run, not across runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipelines import backfill, transform
from pipelines.config import Settings
from pipelines.simulate import simulate

HERE = Path(__file__).parent
START = dt.date(2024, 1, 1)


def landing(days: int, stores: int, products: int, seed: int) -> Path:
    out = HERE / ".data" / f"dbt-{days}d-{stores}s-{products}p-{seed}"
    manifest = out / "manifest.json"
    if not manifest.exists():
        shutil.rmtree(out, ignore_errors=True)
        simulate(out, days=days, stores=stores, products=products, start=START, seed=seed, bad_rate=0.01,
                 dup_rate=0.02, late_rate=0.02)
    return out


def load(files: list[Path], dims: Path, settings: Settings, scratch: Path) -> float:
    scratch.mkdir(parents=True)
    for f in files:
        (scratch / f.name).symlink_to(f)
    started = time.perf_counter()
    result = backfill.run(str(scratch / "*.jsonl"), str(dims), settings)
    assert result.reconciles
    return time.perf_counter() - started


def timed_build(settings: Settings) -> tuple[float, transform.BuildResult]:
    started = time.perf_counter()
    result = transform.build(settings)
    if not result.ok:
        raise SystemExit(f"dbt build failed: {[(n.name, n.status, n.message) for n in result.problems()]}")
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="days of the full build (one more follows)")
    parser.add_argument("--stores", type=int, default=20)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    console = Console()

    data = landing(args.days + 1, args.stores, args.products, args.seed)
    manifest = json.loads((data / "manifest.json").read_text())
    last_day = str(START + dt.timedelta(days=args.days))
    files = sorted((data / "events").glob("*.jsonl"))
    first = [f for f in files if f.stem < last_day]
    with tempfile.TemporaryDirectory(prefix="bench-dbt-") as tmp:
        settings = Settings(home=Path(tmp) / "lake")
        load_first = load(first, data / "dims", settings, Path(tmp) / "first")
        full_s, full = timed_build(settings)
        counts_full = transform.gold_row_counts(settings)
        load_next = load([f for f in files if f not in first], data / "dims", settings, Path(tmp) / "next")
        incremental_s, incremental = timed_build(settings)
        counts_next = transform.gold_row_counts(settings)

    console.print(f"{manifest['events_valid']:,} valid events ({manifest['lines_total']:,} lines) over "
                  f"{args.days} + 1 days, {args.stores} stores x {args.products} products; backfill "
                  f"{load_first:.1f} s, then {load_next:.1f} s for the extra day")
    table = Table(title="dbt build on DuckDB")
    table.add_column("")
    table.add_column("full build", justify="right")
    table.add_column("after one more day", justify="right")
    table.add_row("seconds (lakehouse transform)", f"{full_s:.1f}", f"{incremental_s:.1f}")
    table.add_row("nodes (models, seeds, tests)", f"{len(full.nodes)}", f"{len(incremental.nodes)}")
    for name in transform.GOLD_MODELS:
        table.add_row(f"rows {name}", f"{counts_full.get(name, 0):,}", f"{counts_next.get(name, 0):,}")
    console.print(table)
    for label, result in (("full build", full), ("rebuild", incremental)):
        slowest = sorted(result.nodes, key=lambda n: -n.seconds)[:6]
        console.print(f"slowest nodes of the {label} (sum of node times {sum(n.seconds for n in result.nodes):.1f} s): "
                      + ", ".join(f"{n.name} {n.seconds:.1f} s" for n in slowest))


if __name__ == "__main__":
    main()
