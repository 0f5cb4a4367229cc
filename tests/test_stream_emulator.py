"""The stream against the real Pub/Sub emulator: publish with bad, duplicate and late events, stream, reconcile
exactly; then kill -9 the stream mid-run, restart it, lose a backlog on purpose, repair from the archive, and
reconcile to zero.

The emulator is the one CI starts (`LAKEHOUSE_PUBSUB_EMULATOR_HOST`, see .ci/run), or one this module starts on
a free port. Each test has its own topics and subscriptions.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from google.cloud import pubsub_v1
from netutil import free_port  # tests/ is on sys.path

from pipelines import backfill, publish, pubsub, reconcile, stream, tables
from pipelines.config import Settings
from pipelines.simulate import simulate
from pipelines.sinks import LakeTable

SEED, STORES, PRODUCTS = 5, 3, 12
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    host = os.environ.get("LAKEHOUSE_PUBSUB_EMULATOR_HOST")
    if host and pubsub.listening(host):
        os.environ["PUBSUB_EMULATOR_HOST"] = host
        yield host
        return
    if not pubsub.emulator_installed():
        pytest.skip("the Pub/Sub emulator (Google Cloud SDK + java) is not installed")
    settings = Settings(home=tmp_path_factory.mktemp("emulator"), pubsub_emulator_host=f"127.0.0.1:{free_port()}")
    pubsub.up(settings)
    yield settings.pubsub_emulator_host
    pubsub.down(settings)


@pytest.fixture(scope="module")
def dims_dir(tmp_path_factory) -> Path:
    """The dimensions of the live producer's world (same seed, stores and products)."""
    out = tmp_path_factory.mktemp("sim")
    simulate(out, days=1, stores=STORES, products=PRODUCTS, seed=SEED)
    return out / "dims"


def settings_for(tmp_path: Path, emulator: str) -> Settings:
    tag = uuid.uuid4().hex[:8]
    return Settings(home=tmp_path / "lake", pubsub_emulator_host=emulator, events_topic=f"events-{tag}",
                    events_subscription=f"events-stream-{tag}", dead_letter_topic=f"dead-{tag}",
                    dead_letter_subscription=f"dead-sub-{tag}", stream_batch_seconds=1.0)


def env_for(settings: Settings) -> dict[str, str]:
    names = ["pubsub_emulator_host", "events_topic", "events_subscription", "dead_letter_topic",
             "dead_letter_subscription", "stream_batch_seconds"]
    return {**os.environ, "LAKEHOUSE_HOME": str(settings.home),
            **{f"LAKEHOUSE_{n.upper()}": str(getattr(settings, n)) for n in names}}


def publish_in_background(settings: Settings, rate: float, duration: float, **rates) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def work():
        box["result"] = publish.publish(settings, rate=rate, duration=duration, seed=SEED, stores=STORES,
                                        products=PRODUCTS, **rates)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, box


def silver_ids(settings: Settings) -> list[str]:
    ids = []
    for fqn in tables.SILVER_EVENTS:
        lake = LakeTable(settings.lake_dir, tables.TABLES[fqn])
        ids += [i for v in lake.partitions() for i in lake.read_partition(v)["event_id"].to_pylist()]
    return ids


def test_published_events_land_exactly_once_with_dead_letters_on_their_topic(emulator, dims_dir, tmp_path):
    settings = settings_for(tmp_path, emulator)
    pubsub.ensure_resources(settings)
    thread, box = publish_in_background(settings, rate=800, duration=3, bad_rate=0.03, dup_rate=0.05,
                                        late_rate=0.05)
    stop = threading.Event()

    def tick(counts):
        if "result" in box and counts.get("messages_acked", 0) >= box["result"].published:
            stop.set()

    result = stream.run(settings, duration=120, dims_dir=str(dims_dir), on_tick=tick, stop=stop)
    thread.join()
    published = box["result"]
    assert result.counters["messages_acked"] == published.published
    check = reconcile.reconcile(settings)
    assert check.ok, (check.missing_ids[:5], check.doubled_ids[:5], check.missing_lines[:5])
    assert check.archive_lines == published.published
    ids = silver_ids(settings)
    assert len(ids) == len(set(ids))  # duplicates (5%) landed once
    assert result.counters["duplicates_removed"] >= published.counts["duplicate"]
    assert result.counters["arrived_late"] > 0  # about half the late events are beyond the lateness
    dead = result.counters["dead_letters"]
    assert dead >= published.counts["bad"] and result.counters["rows_written.bronze.dead_letter"] == dead
    # every dead letter also went to the dead-letter topic, with its reason
    subscriber = pubsub_v1.SubscriberClient()
    got, deadline = [], time.monotonic() + 20
    while len(got) < dead and time.monotonic() < deadline:
        response = subscriber.pull(subscription=settings.subscription_path(settings.dead_letter_subscription),
                                   max_messages=1000, timeout=5)
        got += [m.message.attributes["reason"] for m in response.received_messages]
    assert len(got) == dead and set(got) <= set(tables.contract.REASONS)


def lakehouse_stream(settings: Settings, dims_dir: Path, *args: str) -> subprocess.Popen:
    cli = Path(sys.executable).with_name("lakehouse")
    return subprocess.Popen([str(cli), "stream", "--dims", str(dims_dir), *args], env=env_for(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_kill_dash_nine_restart_repair_and_reconcile_to_zero(emulator, dims_dir, tmp_path):
    settings = settings_for(tmp_path, emulator)
    pubsub.ensure_resources(settings)
    silver = LakeTable(settings.lake_dir, tables.silver_events("order"))

    # 1. the stream dies by SIGKILL while events arrive; unacked messages come back on restart
    thread, _ = publish_in_background(settings, rate=400, duration=8, bad_rate=0.02, dup_rate=0.05)
    first = lakehouse_stream(settings, dims_dir)
    wait_for(lambda: silver.files(), 60, "the first micro-batch")
    first.send_signal(signal.SIGKILL)
    first.wait()
    thread.join()
    second = lakehouse_stream(settings, dims_dir)
    # more events once it runs, so that a clean reconcile also means the second stream is up (and takes SIGTERM)
    thread, _ = publish_in_background(settings, rate=100, duration=1)
    thread.join()
    # the killed stream's unacked messages come back after the ack deadline: nothing lost, nothing doubled,
    # without any repair
    wait_for(lambda: reconcile.reconcile(settings).ok, 3 * pubsub.ACK_DEADLINE_SECONDS + 60, "a clean reconcile")
    second.send_signal(signal.SIGTERM)  # a clean stop, within seconds
    assert second.wait(timeout=30) == 0, second.stdout.read().decode()[-3000:]
    assert "stopped by SIGTERM" in second.stdout.read().decode()

    # 2. a backlog lost on purpose (the subscription recreated while the stream was down), then repaired
    thread, _ = publish_in_background(settings, rate=400, duration=2, bad_rate=0.02, dup_rate=0.05)
    thread.join()
    pubsub.ensure_resources(settings, fresh_subscription=True)
    lost = reconcile.reconcile(settings)
    assert lost.missing_ids and not lost.doubled_ids
    archive = str(settings.archive_dir / "events" / "*.jsonl")
    repair = backfill.run(archive, str(dims_dir), settings)
    assert repair.reconciles
    fixed = reconcile.reconcile(settings)
    assert fixed.ok, (fixed.missing_ids[:5], fixed.doubled_ids[:5], fixed.missing_lines[:5])
    before = sorted(silver_ids(settings))
    assert backfill.run(archive, str(dims_dir), settings).reconciles  # a second repair changes nothing
    assert sorted(silver_ids(settings)) == before and len(before) == len(set(before))
