"""dbt on DuckDB at size: a full `lakehouse transform` on a year of events, then the incremental rebuild
after one more day arrives.

    python benchmarks/dbt_build.py                       # 365 + 1 days, 20 stores x 200 products
    python benchmarks/dbt_build.py --stores 5 --products 50
    python benchmarks/dbt_build.py --fresh               # simulate and backfill again (no cache)
    python benchmarks/dbt_build.py --rebuilds 5          # time the rebuild five times (median printed)

Simulates days+1 days and backfills them twice: all but the last day's files ("before"), then the last
day (and the late arrivals filed with it) on top ("after"). Both lakehouses (Parquet only) are cached
under benchmarks/.data/ with the simulation, so a rerun measures dbt alone. Then, in a scratch
lakehouse holding a copy of "before": a full build (source tests, seeds, models, data and unit tests);
the files of "after" copied in; the rebuild (incremental facts with their lookback), `--rebuilds` times,
each on a fresh copy of the built lakehouse at the same path. Prints both (the rebuilds' median, and each)
with the gold row counts, the CPU seconds of the dbt process and the slowest nodes. Timings include dbt's
start-up and parse. The machine is shared and noisy: compare the figures of one run, not across runs,
and read the CPU seconds beside the wall time and the load average.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from cputime import Timer, load_average  # benchmarks/ is on sys.path when run as a script
from rich.console import Console
from rich.table import Table

from pipelines import backfill, transform
from pipelines.config import Settings
from pipelines.simulate import simulate

HERE = Path(__file__).parent
START = dt.date(2024, 1, 1)
#: what a copied lakehouse leaves out: the DuckDB file (its views name the lakehouse's own path; the build
#: writes it again) and dbt's state
NOT_COPIED = ("warehouse.duckdb", "warehouse.duckdb.wal", "dbt")


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


def sync_lake(source: Path, target: Path) -> None:
    """Make target's lakehouse files those of source (added, replaced and removed files), as a backfill would."""
    wanted = {p.relative_to(source) for p in source.rglob("*") if p.is_file() and p.parts[len(source.parts)]
              not in NOT_COPIED}
    for rel in wanted:
        src, dst = source / rel, target / rel
        if not dst.exists() or dst.stat().st_size != src.stat().st_size or dst.stat().st_mtime < src.stat().st_mtime:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    for p in list(target.rglob("*")):
        rel = p.relative_to(target)
        if p.is_file() and rel.parts[0] not in NOT_COPIED and rel not in wanted:
            p.unlink()


def backfilled(data: Path, days: int, fresh: bool) -> tuple[Path, Path, dict[str, float]]:
    """The "before" and "after" lakehouses of `data` (cached beside it) and the backfill seconds of each."""
    cache = data.with_name(data.name + "-lakes")
    timings = cache / "backfill_seconds.json"
    if fresh or not timings.exists():
        shutil.rmtree(cache, ignore_errors=True)
        last_day = str(START + dt.timedelta(days=days))
        files = sorted((data / "events").glob("*.jsonl"))
        first = [f for f in files if f.stem < last_day]
        before, after = Settings(home=cache / "before"), Settings(home=cache / "after")
        seconds = {"before": load(first, data / "dims", before, cache / "landing-before")}
        sync_lake(before.lake_dir, after.lake_dir)
        seconds["after"] = load([f for f in files if f not in first], data / "dims", after, cache / "landing-after")
        timings.write_text(json.dumps(seconds))
    return cache / "before", cache / "after", json.loads(timings.read_text())


def timed_build(settings: Settings) -> tuple[float, float, transform.BuildResult]:
    with Timer() as timer:
        result = transform.build(settings)
    if not result.ok:
        raise SystemExit(f"dbt build failed: {[(n.name, n.status, n.message) for n in result.problems()]}")
    return timer.wall, timer.cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365, help="days of the full build (one more follows)")
    parser.add_argument("--stores", type=int, default=20)
    parser.add_argument("--products", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fresh", action="store_true", help="simulate and backfill again instead of the cache")
    parser.add_argument("--top", type=int, default=8, help="slowest nodes to list per build")
    parser.add_argument("--rebuilds", type=int, default=3, help="times to repeat the rebuild, each on a fresh copy")
    args = parser.parse_args()
    console = Console()

    data = landing(args.days + 1, args.stores, args.products, args.seed)
    manifest = json.loads((data / "manifest.json").read_text())
    before, after, load_s = backfilled(data, args.days, args.fresh)
    with tempfile.TemporaryDirectory(prefix="bench-dbt-") as tmp:
        settings = Settings(home=Path(tmp) / "lake")
        sync_lake(before, settings.lake_dir)
        loads = [load_average()]
        full_s, full_cpu, full = timed_build(settings)
        counts_full = transform.gold_row_counts(settings)
        built = Path(tmp) / "built"
        settings.lake_dir.rename(built)
        rebuilds = []
        for _ in range(max(1, args.rebuilds)):  # same path each time: dbt's partial parse and the views hold it
            shutil.rmtree(settings.lake_dir, ignore_errors=True)
            shutil.copytree(built, settings.lake_dir)
            sync_lake(after, settings.lake_dir)
            loads.append(load_average())
            rebuilds.append(timed_build(settings))
        counts_next = transform.gold_row_counts(settings)
        loads.append(load_average())
    incremental_s, incremental_cpu, incremental = sorted(rebuilds, key=lambda r: r[0])[len(rebuilds) // 2]

    console.print(f"{manifest['events_valid']:,} valid events ({manifest['lines_total']:,} lines) over "
                  f"{args.days} + 1 days, {args.stores} stores x {args.products} products; backfill "
                  f"{load_s['before']:.1f} s, then {load_s['after']:.1f} s for the extra day (cached: {before.parent})")
    console.print(f"{os.cpu_count()} cores, shared; load average (1, 5, 15 min) before the full build {loads[0]}, "
                  f"before each rebuild {', '.join(map(str, loads[1:-1]))}, after the last {loads[-1]}")
    table = Table(title="dbt build on DuckDB (lakehouse transform)")
    table.add_column("")
    table.add_column("full build", justify="right")
    table.add_column(f"after one more day (median of {len(rebuilds)})", justify="right")
    table.add_row("wall seconds", f"{full_s:.1f}", f"{incremental_s:.1f}")
    table.add_row("CPU seconds (user + sys)", f"{full_cpu:.1f}", f"{incremental_cpu:.1f}")
    table.add_row("nodes (models, seeds, tests)", f"{len(full.nodes)}", f"{len(incremental.nodes)}")
    table.add_row("each rebuild: wall / CPU seconds", "",
                  ", ".join(f"{wall:.1f} / {cpu:.1f}" for wall, cpu, _ in rebuilds))
    for name in transform.GOLD_MODELS:
        table.add_row(f"rows {name}", f"{counts_full.get(name, 0):,}", f"{counts_next.get(name, 0):,}")
    console.print(table)
    for label, result in (("full build", full), ("rebuild", incremental)):
        slowest = sorted(result.nodes, key=lambda n: -n.seconds)[:args.top]
        console.print(f"slowest nodes of the {label} (node times sum to {sum(n.seconds for n in result.nodes):.1f} s;"
                      f" the rest is dbt's start-up, parse and bookkeeping): "
                      + ", ".join(f"{n.name} {n.seconds:.1f} s" for n in slowest))


if __name__ == "__main__":
    main()
