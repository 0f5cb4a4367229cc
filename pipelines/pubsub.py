"""Pub/Sub on one machine: the emulator, the topics, the raw-event archive, and a faster local reader.

    lakehouse pubsub up        # start the emulator (Google Cloud SDK, Java) and create topics/subscriptions
    lakehouse pubsub down      # stop it (by PID: the whole process group, java included)

Resources (names in pipelines.config.Settings): the events topic, the stream's subscription (20 s ack deadline),
the dead-letter topic and a subscription on it that keeps dead letters for whoever wants to look.

The archive: every published event is first appended to `$LAKEHOUSE_HOME/archive/events/*.jsonl` (write
ahead, then publish), the local counterpart of a Cloud Storage subscription; each message names its archive
line in the attributes `archive_uri` and `archive_line`, so the stream and a repair backfill over the archive
agree on what one record is.

The local reader. Beam's DirectRunner reads Pub/Sub by pulling 10 messages with a 30 s timeout (~300 msg/s
here, and a cancel that waits up to 30 s) and acks right after the pull, before anything is written, so a crash
loses what was in flight. `install_local_reader()` swaps in a reader that pulls `pubsub_max_messages` (1000)
with a 1 s timeout and leaves the ack to the sink: `ack_written()` acks a message once its rows are in the
lakehouse, so a killed stream's unwritten messages come back (and are deduplicated) when it restarts. Each
pull is one element, a list of PubsubMessages stamped with its arrival time (the time the micro-batching
windows use): the DirectRunner's windowing and grouping cost is per element, ~20 µs, more than parsing
an event. On Dataflow none of this runs:
its Pub/Sub source acks after its own checkpoints.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import Settings

EMULATOR_BIN = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
ACK_DEADLINE_SECONDS = 20  # a killed stream's unwritten messages come back this soon; writes take ~1 s
ARCHIVE_URI, ARCHIVE_LINE = "archive_uri", "archive_line"
GATHER_SECONDS = 0.25


# ---- the emulator ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Emulator:
    host: str
    pid: int | None  # None: it was already running, started by someone else
    log: Path | None


def emulator_installed() -> bool:
    return EMULATOR_BIN.exists() and shutil.which("java") is not None


def _state_dir(settings: Settings) -> Path:
    return settings.lake_dir / "pubsub"


def listening(host: str, timeout: float = 0.5) -> bool:
    name, port = host.rsplit(":", 1)
    try:
        with socket.create_connection((name, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def up(settings: Settings, wait_seconds: float = 30.0) -> Emulator:
    """Start the emulator unless one listens already, then make sure the topics and subscriptions exist."""
    host = settings.pubsub_emulator_host
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    if listening(host):
        ensure_resources(settings)
        return Emulator(host, _recorded_pid(settings), None)
    if not emulator_installed():
        raise FileNotFoundError(f"no Pub/Sub emulator here ({EMULATOR_BIN} and java are needed)")
    state = _state_dir(settings)
    state.mkdir(parents=True, exist_ok=True)
    log = state / "emulator.log"
    name, port = host.rsplit(":", 1)
    with open(log, "ab") as out:
        # its own session: `down` stops the wrapper script and the java child together
        proc = subprocess.Popen([str(EMULATOR_BIN), f"--host={name}", f"--port={port}"], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (state / "emulator.pid").write_text(str(proc.pid))
    deadline = time.monotonic() + wait_seconds
    while not listening(host):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc.pid)
            raise RuntimeError(f"the Pub/Sub emulator did not start; see {log}")
        time.sleep(0.2)
    ensure_resources(settings)
    return Emulator(host, proc.pid, log)


def down(settings: Settings) -> bool:
    """Stop the emulator this lakehouse started; False if none was recorded."""
    pid = _recorded_pid(settings)
    (_state_dir(settings) / "emulator.pid").unlink(missing_ok=True)
    return pid is not None and _stop(pid)


def _recorded_pid(settings: Settings) -> int | None:
    path = _state_dir(settings) / "emulator.pid"
    return int(path.read_text()) if path.exists() else None


def _stop(pid: int, wait_seconds: float = 10.0) -> bool:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    return True


def use_emulator(settings: Settings) -> None:
    """Point google-cloud-pubsub (and Beam) at the local emulator, unless the settings say gcp."""
    if settings.environment == "local":
        os.environ["PUBSUB_EMULATOR_HOST"] = settings.pubsub_emulator_host


# ---- topics and subscriptions -----------------------------------------------------------------------
def ensure_resources(settings: Settings, fresh_subscription: bool = False) -> None:
    """Create the events and dead-letter topics and their subscriptions if missing (the emulator starts empty).

    `fresh_subscription` recreates the stream's subscription (a subscription keeps its backlog between runs).
    """
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    use_emulator(settings)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    for topic in (settings.events_topic, settings.dead_letter_topic):
        try:
            publisher.create_topic(name=settings.topic_path(topic))
        except exceptions.AlreadyExists:
            pass
    pairs = [(settings.events_subscription, settings.events_topic),
             (settings.dead_letter_subscription, settings.dead_letter_topic)]
    for sub, topic in pairs:
        path = settings.subscription_path(sub)
        if fresh_subscription and sub == settings.events_subscription:
            try:
                subscriber.delete_subscription(subscription=path)
            except exceptions.NotFound:
                pass
        try:
            subscriber.create_subscription(name=path, topic=settings.topic_path(topic),
                                           ack_deadline_seconds=ACK_DEADLINE_SECONDS)
        except exceptions.AlreadyExists:
            pass
    subscriber.close()


# ---- the local reader and acks after the write --------------------------------------------------
class _Acks:
    """Ack ids of pulled messages, by subscription and message id, until the sink has written them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending: dict[str, dict[str, str]] = {}
        self.clients: dict[str, object] = {}
        self.paused = threading.Event()  # set: the reader stops pulling (a clean stop drains what it has)

    def add(self, subscription: str, client, pairs: list[tuple[str, str]]) -> None:
        with self.lock:
            self.pending.setdefault(subscription, {}).update(pairs)
            self.clients[subscription] = client

    def ack(self, message_ids: list[str]) -> int:
        done = 0
        with self.lock:
            work = []
            for sub, pending in self.pending.items():
                ids = [pending.pop(m) for m in message_ids if m in pending]
                if ids:
                    work.append((self.clients[sub], sub, ids))
        for client, sub, ids in work:
            for i in range(0, len(ids), 2500):  # the API's limit per request
                client.acknowledge(subscription=sub, ack_ids=ids[i:i + 2500])
            done += len(ids)
        return done

    def outstanding(self) -> int:
        with self.lock:
            return sum(len(p) for p in self.pending.values())


ACKS = _Acks()


def ack_written(message_ids: list[str]) -> int:
    """Ack messages whose rows are written (local reader only; a no-op on Dataflow)."""
    return ACKS.ack([m for m in message_ids if m is not None]) if message_ids else 0


def install_local_reader(max_messages: int = 1000, timeout: float = 1.0) -> None:
    """Make the DirectRunner read Pub/Sub in large pulls and ack after the write (see the module docstring)."""
    from apache_beam.runners.direct import transform_evaluator as te
    from apache_beam.runners.direct.direct_runner import _DirectReadFromPubSub
    from apache_beam.utils.timestamp import Timestamp

    overrides = te.TransformEvaluatorRegistry._test_evaluators_overrides  # the runner's own hook
    if _DirectReadFromPubSub in overrides:
        overrides[_DirectReadFromPubSub].max_messages = max_messages
        overrides[_DirectReadFromPubSub].pull_timeout = timeout
        return

    class LocalPubSubReadEvaluator(te._PubSubReadEvaluator):

        def _read_from_pubsub(self, timestamp_attribute):
            from apache_beam.io.gcp.pubsub import PubsubMessage

            if ACKS.paused.is_set():
                time.sleep(0.05)
                return []
            client = self._get_subscriber_client(self._applied_ptransform)
            received, until = [], time.monotonic() + GATHER_SECONDS
            # gather for a moment: every bundle costs the DirectRunner a fixed overhead per step
            while len(received) < self.max_messages and time.monotonic() < until:
                try:
                    response = client.pull(subscription=self._sub_name, max_messages=self.max_messages - len(received),
                                            timeout=self.pull_timeout)
                except Exception as e:  # DeadlineExceeded when nothing came; a hiccup must not end the stream
                    if type(e).__name__ not in ("DeadlineExceeded", "ServiceUnavailable", "RetryError"):
                        raise
                    break
                if not response.received_messages:
                    break
                received.extend(response.received_messages)
            if not received:
                return []
            raw = [r._pb for r in received]  # the protobufs: proto-plus wrappers cost ~10 µs per field read
            ACKS.add(self._sub_name, client, [(r.message.message_id, r.ack_id) for r in raw])
            messages = [PubsubMessage(r.message.data, dict(r.message.attributes), r.message.message_id,
                                      r.message.publish_time.ToDatetime(dt.UTC)) for r in raw]
            # one element per pull: the DirectRunner's windowing and grouping cost is per element
            return [(Timestamp.now(), messages)]

    LocalPubSubReadEvaluator.max_messages, LocalPubSubReadEvaluator.pull_timeout = max_messages, timeout
    overrides[_DirectReadFromPubSub] = LocalPubSubReadEvaluator
