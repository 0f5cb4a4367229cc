"""Streaming benchmark: sustained events/s and publish-to-queryable freshness, against the Pub/Sub emulator.

    python benchmarks/stream_freshness.py [--rate 2000] [--seconds 60]

Starts the emulator (unless one runs), loads the dimensions, then runs `lakehouse stream` and
`lakehouse simulate --publish --rate R --duration S` as separate processes, as a user would. Meanwhile it
queries `silver.order_events` through DuckDB every half second: an event's freshness is the time of the
first query that sees it minus its Pub/Sub publish time (queryable = visible to a DuckDB query). Prints
the rate published, the rate landed (silver + dead letters over the publishing window) and freshness
p50/p95/max. Targets on a 2-core machine: >= 2,000 events/s sustained, p95 freshness <= 10 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines import pubsub, tables  # noqa: E402
from pipelines.config import Settings  # noqa: E402
from pipelines.simulate import simulate  # noqa: E402
from pipelines.sinks import LakeTable  # noqa: E402

CLI = str(Path(sys.executable).with_name("lakehouse"))


def silver_glob(settings: Settings) -> str:
    lake = LakeTable(settings.lake_dir, tables.silver_events("order"))
    return str(lake.dir / "event_date=*" / "*.parquet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--stores", type=int, default=10)
    parser.add_argument("--products", type=int, default=100)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="stream-bench-"))
    env = {**os.environ, "LAKEHOUSE_HOME": str(home)}
    os.environ.update(env)
    settings = Settings()
    emulator = pubsub.up(settings)
    pubsub.ensure_resources(settings, fresh_subscription=True)
    sim = home / "sim"
    simulate(sim, days=1, stores=args.stores, products=args.products, seed=3)
    print(f"lakehouse {home}; emulator {emulator.host}; {args.rate:,.0f} events/s for {args.seconds:.0f} s")

    streamer = subprocess.Popen([CLI, "stream", "--dims", str(sim / "dims")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(8)  # Beam's start-up, before the clock starts
    publish = [CLI, "simulate", "--publish", "--rate", str(args.rate), "--duration", str(args.seconds), "--seed", "3",
               "--stores", str(args.stores), "--products", str(args.products), "--bad-rate", "0.01",
               "--dup-rate", "0.02", "--late-rate", "0.02"]
    publisher = subprocess.Popen(publish, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    started = time.time()
    seen_until, freshness, landed = None, [], []
    glob = silver_glob(settings)
    con = duckdb.connect()
    while True:
        done = publisher.poll() is not None
        now = time.time()
        try:
            where = f"where publish_time > '{seen_until.isoformat()}'" if seen_until else ""
            rows = con.execute(f"select epoch(publish_time) from read_parquet('{glob}') {where}").fetchnumpy()
            published = next(iter(rows.values())) if rows else np.array([])
        except duckdb.IOException:  # no files yet
            published = np.array([])
        if len(published):
            freshness.append(now - published)
            landed.append((now, len(published)))
            seen_until = dt.datetime.fromtimestamp(float(published.max()), dt.UTC)
        if done and now - started > args.seconds + 20:
            break
        time.sleep(0.5)
    streamer.send_signal(signal.SIGINT)
    streamer.wait(timeout=60)
    out = publisher.stdout.read().strip().splitlines()
    fresh = np.concatenate(freshness) if freshness else np.array([np.nan])
    total_silver = sum(n for _, n in landed)
    last = max(t for t, _ in landed) if landed else started
    print(out[-1] if out else "publisher printed nothing")
    print(f"silver.order_events rows landed: {total_silver:,} in {last - started:.1f} s "
          f"({total_silver / max(last - started, 1e-9):,.0f}/s; orders are ~75% of events)")
    with duckdb.connect() as c:
        counts = {}
        for fqn in (*tables.SILVER_EVENTS, tables.DEAD_LETTER.fqn):
            lake = LakeTable(settings.lake_dir, tables.TABLES[fqn])
            files = [str(f) for f in lake.files()]
            counts[fqn] = c.execute(f"select count(*) from read_parquet({files})").fetchone()[0] if files else 0
    records = sum(counts.values())
    print(f"records landed (silver + dead letters): {records:,} -> sustained {records / args.seconds:,.0f} events/s "
          f"over the {args.seconds:.0f} s publishing window ({counts})")
    print(f"freshness publish -> queryable in DuckDB: p50 {np.percentile(fresh, 50):.1f} s, "
          f"p95 {np.percentile(fresh, 95):.1f} s, max {fresh.max():.1f} s over {len(fresh):,} order events")
    if emulator.pid:
        pubsub.down(settings)


if __name__ == "__main__":
    main()
