"""Backfill throughput: the Beam backfill vs DuckDB's read_json -> Parquet on the same files, in one run.

    python benchmarks/backfill_throughput.py                 # ~1M simulated events (1% bad, 2% dup, 2% late)
    python benchmarks/backfill_throughput.py --configs DirectRunner:1,DirectRunner:2,FnApiRunner:1 --events 300000

Prints events/s of each and the ratio, the CPU time each took (user + system, child processes included)
per million events, and the load average. DuckDB only parses and writes (no validation, dead letters,
deduplication or enrichment): it is the ceiling of what reading and writing these files costs here, not
an equal competitor. Timings include pipeline start-up, not Python's imports. Each run has a fresh process, as a
`lakehouse backfill` command does: a run after another in one process would inherit the memory the first freed but
kept (~1.3 GB after a one-process backfill), and its forked shards would pay for copying those pages on write. The
machine is shared and noisy: compare the figures of one run, not across runs; CPU seconds move much less with the
load than wall time does.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import duckdb
from cputime import Timer, load_average  # benchmarks/ is on sys.path when run as a script

from pipelines import backfill, contract, tables, warehouse
from pipelines.config import Settings
from pipelines.simulate import simulate

HERE = Path(__file__).parent
#: simulated lines per (store, product, day): orders, returns, snapshots, receipts (measured)
LINES_PER_SERIES_DAY = 3.3


def make_events(out: Path, events: int, seed: int) -> dict:
    days, stores = 365, 10
    products = max(1, round(events / (LINES_PER_SERIES_DAY * days * stores)))
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest["parameters"]["products"] == products and manifest["parameters"]["seed"] == seed:
            return manifest
    shutil.rmtree(out, ignore_errors=True)
    return simulate(out, days=days, stores=stores, products=products, start=dt.date(2024, 1, 1), seed=seed,
                    bad_rate=0.01, dup_rate=0.02, late_rate=0.02)


def in_fresh_process(fn, *args):
    """fn(*args), called in a new Python process (spawned: nothing of this one's memory carried over)."""
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def run_beam(landing: Path, runner: str, workers: int,
             home: Path) -> tuple[tuple[float, float], backfill.BackfillResult]:
    with Timer() as timer:
        result = backfill.run(str(landing / "events" / "*.jsonl"), str(landing / "dims"), Settings(home=home),
                              runner=runner, workers=workers)
    return (timer.wall, timer.cpu), result


def run_duckdb(landing: Path, out: Path) -> tuple[tuple[float, float], int]:
    out.mkdir(parents=True)
    with Timer() as timer:
        con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")  # it draws one in a spawned process
        con.execute(f"""
            COPY (SELECT *, CAST(event_ts AS DATE) AS event_date
                  FROM read_json('{landing}/events/*.jsonl', format = 'newline_delimited', ignore_errors = true,
                                 maximum_object_size = 2000000, columns = {contract_columns()}))
            TO '{out}/events' (FORMAT parquet, PARTITION_BY (event_date), COMPRESSION zstd)""")
        rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}/events/**/*.parquet')").fetchone()[0]
    return (timer.wall, timer.cpu), rows


def contract_columns() -> dict[str, str]:
    """DuckDB column types of every event field (both entities), from the contract's Arrow schemas."""
    columns = {}
    for entity in contract.ENTITY_STRUCT:
        for field in tables.struct_fields(contract.ENTITY_STRUCT[entity]):
            columns[field.name] = warehouse.DUCK_TYPES[field.type]
    return columns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="about this many simulated lines")
    parser.add_argument("--configs", default="DirectRunner:1,DirectRunner:2",
                        help="comma-separated RUNNER:PROCESSES (DirectRunner or FnApiRunner; processes = shards)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", type=Path, default=HERE / ".data" / "backfill", help="simulated input (kept)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    manifest = make_events(args.data, args.events, args.seed)
    lines = manifest["lines_total"]
    print(f"input: {lines:,} lines in {len(manifest['files'])} files ({args.data})")
    # Every run writes to its own folder, all removed at the end: deleting thousands of files shortly before the next
    # run would bill it. When ext4 creates a file or folder it skips recently freed inodes one by one (journal-less, as
    # here): measured 0.3-2 ms per new file or folder in the minutes after a few thousand deletions, ~0.1-0.4 ms
    # otherwise, and a run creates ~3,700 (a folder and a file per table and day). After a test suite or a benchmark
    # run, 3,700 new folders and files cost 2.4-3.9 CPU-s anywhere under /tmp or /work; placed as top-level folders
    # are (`spread_new_folders`), 0.25 s. Journaled ext4, as most machines have, does not do this scan at all.
    spread_new_folders(args.data.parent)
    with tempfile.TemporaryDirectory(prefix="bench-backfill-", dir=args.data.parent) as scratch:
        run_all(args, manifest, Path(scratch))
    print("target: beam backfill >= 100,000 events/s")


def spread_new_folders(folder: Path) -> None:
    """Have ext4 place each folder made in `folder` as if at the top of the file system (`chattr +T`: Orlov's
    allocator then picks a block group with free inodes and few folders) rather than beside `folder`, where the inodes
    recent deletions freed are skipped one by one. Only the benchmark's scratch folders; where the flag is unsupported
    (another file system, no chattr), nothing changes."""
    try:
        subprocess.run(["chattr", "+T", str(folder)], capture_output=True, check=False)
    except OSError:  # no chattr here
        pass


def run_all(args: argparse.Namespace, manifest: dict, scratch: Path) -> None:
    lines = manifest["lines_total"]
    (duck_s, duck_cpu), duck_rows = in_fresh_process(run_duckdb, args.data, scratch / "duckdb")
    print(f"duckdb read_json -> parquet : {duck_s:6.1f} s  {lines / duck_s:>10,.0f} lines/s  "
          f"{cpu_note(duck_cpu, lines)}  ({duck_rows:,} rows kept)")
    for i, config in enumerate(args.configs.split(",")):
        runner, _, workers = config.partition(":")
        (seconds, cpu), result = in_fresh_process(run_beam, args.data, runner, int(workers or 1),
                                                  scratch / f"lakehouse-{i}")
        print(f"beam backfill ({runner} x{workers or 1}): {seconds:6.1f} s  {lines / seconds:>10,.0f} events/s  "
              f"{cpu_note(cpu, lines)}  (silver {result.silver_rows:,}, dead letters "
              f"{sum(result.dead_letters.values()):,}, duplicates {result.duplicates:,}, "
              f"reconciles={result.reconciles})  ratio duckdb/beam = {(lines / duck_s) / (lines / seconds):.1f}x")


def cpu_note(cpu: float, lines: int) -> str:
    return (f"cpu {cpu:5.1f} s = {cpu / lines * 1e6:4.1f} cpu-s per 1M events  (load {load_average('/')}, "
            f"{os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
