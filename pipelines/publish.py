"""The live producer: simulated events published to Pub/Sub at a fixed rate, each archived first.

    lakehouse simulate --publish --rate 2000 --duration 60 [--topic events] [--seed 7 --stores 5 --products 40]

Events come from the simulator's known demand process (pipelines.simulate: the same stores, products and
event mix as `lakehouse simulate` with the same seed), replayed in their order at `rate` events per second and
stamped with the time they are published, as a shop's systems would. Injected on purpose, by rate:
- bad lines (every dead-letter reason of pipelines.faults), published like any other message;
- duplicates: an event published again 0-5 s later (a new message, same event_id);
- late events: stamped 1.5 windows to 2 allowed latenesses before now, about half of them beyond the
  allowed lateness (kept in silver, flagged `arrived_late`).

Every message is first appended to the archive (`$LAKEHOUSE_HOME/archive/events/<start>-<pid>.jsonl`, flushed
before the publish) and carries its archive file and line as attributes; `lakehouse reconcile` compares the
archive with the lakehouse, and `lakehouse backfill --input '<archive>/*.jsonl'` repairs any gap.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import numpy as np

from pipelines import contract, faults, pubsub, simulate
from pipelines.config import Settings

LIVE_WORLD_DAYS = 56  # of simulated history to draw the live event mix from (cycled)
TICK_SECONDS = 0.05


@dataclass
class PublishResult:
    archive: Path
    seconds: float
    counts: Counter = field(default_factory=Counter)  # published messages by role: event, duplicate, late, bad

    @property
    def published(self) -> int:
        return sum(self.counts.values())

    @property
    def rate(self) -> float:
        return self.published / self.seconds if self.seconds else 0.0


class LiveEvents:
    """An endless, seeded stream of valid contract events (stamped later) from the simulated world."""

    def __init__(self, seed: int, stores: int, products: int, country: str = "GB"):
        start = dt.date.today() - dt.timedelta(days=LIVE_WORLD_DAYS)
        world = simulate.simulate_world(start=start, days=LIVE_WORLD_DAYS, stores=stores, products=products,
                                        country=country, seed=seed)
        self.encoder = simulate.EventEncoder(world.events, seed, [s.store_id for s in world.stores], world.cat.ids,
                                             simulate.COUNTRIES[country].currency)
        self.size, self.next = len(world.events), 0
        if not self.size:
            raise ValueError("the simulated world has no events: raise --stores/--products")

    def take(self, n: int) -> list:
        rows = (self.next + np.arange(n)) % self.size
        self.next = int((self.next + n) % self.size)
        return self.encoder.structs(rows)


def publish(settings: Settings, *, rate: float, duration: float, topic: str | None = None, seed: int = 42,
            stores: int = 5, products: int = 40, bad_rate: float = 0.01, dup_rate: float = 0.02,
            late_rate: float = 0.02, progress: Callable[[int], object] | None = None) -> PublishResult:
    """Publish about `rate * duration` messages to `topic` (default: the events topic); see the module docstring."""
    from google.cloud import pubsub_v1

    if rate <= 0 or duration <= 0:
        raise ValueError("--rate and --duration must be positive")
    pubsub.use_emulator(settings)
    client = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(
        max_messages=1000, max_bytes=9_000_000, max_latency=0.02))
    topic_path = settings.topic_path(topic or settings.events_topic)
    rng = np.random.default_rng(seed)
    live = LiveEvents(seed, stores, products)
    run = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    archive = settings.archive_dir / "events" / f"{run}-{os.getpid()}.jsonl"
    archive.parent.mkdir(parents=True, exist_ok=True)
    result = PublishResult(archive, 0.0)
    window = dt.timedelta(seconds=settings.stream_window_seconds)
    lateness = dt.timedelta(seconds=settings.allowed_lateness_seconds)
    encode, n_event, line_no = msgspec.json.encode, 0, 0
    delayed: list[tuple[float, bytes]] = []  # duplicates due later: (monotonic due time, line)
    recent_orders: list[dict | None] = [None] * 64  # bad lines are derived from these
    started = time.monotonic()
    with open(archive, "ab") as out:
        while (elapsed := time.monotonic() - started) < duration:
            due = int(rate * elapsed) - result.published
            now = dt.datetime.now(dt.UTC)
            batch: list[tuple[str, bytes]] = []
            while delayed and delayed[0][0] <= time.monotonic() and len(batch) < due:
                batch.append(("duplicate", delayed.pop(0)[1]))
            n_new = max(due - len(batch), 0)
            events = live.take(n_new)
            late = rng.random(n_new) < late_rate
            bad = rng.random(n_new) < bad_rate
            dup = rng.random(n_new) < dup_rate
            n_bad = 0
            for i, event in enumerate(events):
                n_event += 1
                ts = now - (window * 1.5 + (lateness * 2 - window * 1.5) * rng.random()) if late[i] else now
                event = msgspec.structs.replace(event, event_id=f"live-{run}-{n_event:09d}", event_ts=ts)
                if isinstance(event, contract.OrderEvent):
                    recent_orders[n_event % len(recent_orders)] = msgspec.to_builtins(event)
                if bad[i] and n_event > len(recent_orders):
                    n_bad += 1  # this slot carries a bad line instead (derived from a recent order)
                    continue
                line = encode(event)
                batch.append(("late" if late[i] else "event", line))
                if dup[i]:
                    delayed.append((time.monotonic() + 5 * rng.random(), line))
            if n_bad:
                orders = [o for o in recent_orders if o is not None]
                for _kind, line in faults.sample_bad_lines(rng, orders, n_bad, now=now,
                                                           id_prefix=f"live-{run}-{n_event}-bad-"):
                    batch.append(("bad", line))
            delayed.sort(key=lambda d: d[0])
            if batch:
                # write ahead: the archive holds every message before Pub/Sub does
                out.write(b"".join(line.replace(b"\n", b" ") + b"\n" for _, line in batch))
                out.flush()
                futures = []
                for role, line in batch:
                    line_no += 1
                    futures.append(client.publish(topic_path, line.replace(b"\n", b" "),
                                                  **{pubsub.ARCHIVE_URI: str(archive),
                                                     pubsub.ARCHIVE_LINE: str(line_no)}))
                    result.counts[role] += 1
                for f in futures:
                    f.result(timeout=60)
                if progress:
                    progress(len(batch))
            time.sleep(TICK_SECONDS)
    result.seconds = time.monotonic() - started
    return result
