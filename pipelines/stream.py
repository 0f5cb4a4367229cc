"""The streaming job: Pub/Sub -> bronze, silver, dead letters and event-time demand aggregates, within seconds.

    lakehouse pubsub up
    lakehouse stream [--subscription events-stream] [--duration 60] [--dims DIR]
    LAKEHOUSE_ENVIRONMENT=gcp lakehouse stream --runner DataflowRunner --beam-arg=--region=...   # on Dataflow

The same transforms as the backfill (pipelines.transforms.ProcessEvents: parse, validate, dead-letter, enrich)
run on micro-batches: messages are grouped by arrival in windows of `stream_batch_seconds` (2 s), each batch
is validated and enriched as one chunk, and the lakehouse gets a small file per touched partition
(pipelines.sinks.StreamAppender, which keeps the first copy of every event_id, the backfill's rule, against
everything already loaded). Only then are the batch's messages acked (see pipelines.pubsub), so a crash
loses nothing: what was not written comes back and is deduplicated.

Event time comes from the payload. Kept order and return rows feed `WindowedDemand`: demand per store x
product in event-time windows of `stream_window_seconds` with `allowed_lateness_seconds`; an event within the
lateness updates its window in a late pane, a later one is left out of the aggregates and kept in silver with
`arrived_late = true`. Dead letters also go to the dead-letter topic. `--duration`, Ctrl-C and SIGTERM stop
the stream cleanly: it stops pulling, writes what it holds, then ends.

Locally the sinks are the Parquet lakehouse; with LAKEHOUSE_ENVIRONMENT=gcp they are BigQuery (streaming
inserts; deduplication across deliveries is then dbt staging's job, as for the batch loads).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import signal
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration, Timestamp

from pipelines import contract, pubsub, tables
from pipelines.batches import Dimensions, LineChunk, Messages, RunInfo, split_by
from pipelines.config import Settings
from pipelines.parsing import Limits
from pipelines.sinks import LakeTable, StreamAppender, WriteToBigQueryTables, add_to_windows
from pipelines.transforms import NAMESPACE, ProcessEvents, count, process_counts

log = logging.getLogger("lakehouse.stream")

ORDERS = tables.silver_events("order").fqn
_MICROS = 1_000_000


# ---- micro-batches --------------------------------------------------------------------------------
class BatchMessages(beam.PTransform):
    """PubsubMessages -> one LineChunk per micro-batch (fixed windows of `seconds` of element time, i.e.
    arrival locally) and shard; `shards` > 1 spreads a batch over workers on Dataflow."""

    def __init__(self, seconds: float, subscription: str, shards: int = 1):
        super().__init__()
        self.seconds, self.subscription, self.shards = seconds, subscription, shards

    def expand(self, messages):
        return (
            messages
            | "WindowByArrival" >> beam.WindowInto(window.FixedWindows(self.seconds))
            | "KeyByShard" >> beam.FlatMap(by_shard, self.shards)
            | "GroupIntoBatches" >> beam.GroupByKey()
            | "ToLineChunk" >> beam.Map(lambda kv, source: message_chunk(kv[1], source),
                                        f"pubsub://{self.subscription}")
        )


def by_shard(element, shards: int):
    """A PubsubMessage (Beam's reader) or a list of them (the local reader's pulls) -> (shard, [messages])."""
    messages = element if isinstance(element, list) else [element]
    if shards == 1:
        yield 0, messages
        return
    keyed: dict[int, list] = {}
    for m in messages:
        keyed.setdefault(hash(m.message_id) % shards, []).append(m)
    yield from keyed.items()


def message_chunk(groups, source: str) -> LineChunk:
    """Lists of Pub/Sub messages -> a LineChunk whose lineage names each message (and its archive line, if any)."""
    messages = [m for group in groups for m in group]
    uris, lines, attrs = [], [], []
    for m in messages:
        a = dict(m.attributes or {})
        uris.append(a.get(pubsub.ARCHIVE_URI) or source)
        line = a.get(pubsub.ARCHIVE_LINE)
        lines.append(int(line) if line and line.isdigit() else None)
        attrs.append(json.dumps(a, sort_keys=True) if a else None)
    info = Messages(uris, lines, [m.message_id for m in messages],
                    [_utc(m.publish_time) for m in messages], attrs)
    return LineChunk(source, 1, [m.data or b"" for m in messages], info)


def _utc(value) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return dt.datetime.now(dt.UTC)  # a message without a publish time (tests): now


# ---- late arrivals -----------------------------------------------------------------------------------
def flag_late(table: pa.Table, arrived_by: dt.datetime, window_seconds: int, lateness_seconds: int) -> pa.Table:
    """Set `arrived_late` on silver rows: true when the event's window had closed (window end + allowed lateness)
    by `arrived_by`, the end of the micro-batch that brought it; the same rule Beam applies to the aggregates."""
    micros = pc.cast(table["event_ts"], pa.int64()).to_numpy(zero_copy_only=False)
    width = window_seconds * _MICROS
    closes = (micros // width + 1) * width + lateness_seconds * _MICROS
    late = pa.array(closes < int(arrived_by.timestamp() * _MICROS))
    i = table.schema.get_field_index("arrived_late")
    return table.set_column(i, table.schema.field(i), late)


class FlagLateArrivals(beam.DoFn):
    def __init__(self, window_seconds: int, lateness_seconds: int):
        self.window_seconds, self.lateness_seconds = window_seconds, lateness_seconds

    def process(self, element, batch=beam.DoFn.WindowParam):
        fqn, table = element
        arrived_by = batch.end.to_utc_datetime(has_tz=True) if hasattr(batch, "end") else dt.datetime.now(dt.UTC)
        table = flag_late(table, arrived_by, self.window_seconds, self.lateness_seconds)
        count("arrived_late", pc.sum(table["arrived_late"].cast(pa.int64())).as_py() or 0)
        yield fqn, table


# ---- the local sink ----------------------------------------------------------------------------------
KEPT_SILVER = "kept_silver"
_APPENDERS: dict[Path, tuple[StreamAppender, set[str]]] = {}


class WriteMicroBatch(beam.DoFn):
    """(shard, [(fqn, table), ...]) of one micro-batch -> small files in the lakehouse, then the acks.

    Yields the dead letters written, and (tagged `kept_silver`) the silver rows that were new, for the
    aggregates: copies of events already loaded are dropped here, before anything is counted.
    """

    def __init__(self, settings: Settings):
        self.settings = settings

    def setup(self):
        # one appender per lakehouse and process: the DirectRunner sets up a fresh copy of the DoFn for every
        # bundle, and the appender's knowledge of what each partition holds is what makes appends cheap
        root = self.settings.lake_dir
        if root not in _APPENDERS:
            _APPENDERS[root] = StreamAppender(root), {fqn for fqn, spec in tables.TABLES.items()
                                                      if LakeTable(root, spec).files()}
        self.appender, self.with_files = _APPENDERS[root]

    def process(self, element):
        _, parts = element
        by_table: dict[str, list[pa.Table]] = {}
        for fqn, table in parts:
            by_table.setdefault(fqn, []).append(table)
        received: list[str] = []
        for fqn, group in by_table.items():
            table = pa.concat_tables(group)
            spec = tables.TABLES[fqn]
            if fqn in (tables.DEAD_LETTER.fqn, *(tables.bronze_events(e).fqn for e in contract.ENTITY_STRUCT)):
                received.extend(table["message_id"].to_pylist())  # every message is in bronze or dead letters
            written = []
            for value, part in split_by(table, spec.partition_by) if spec.partition_by else [(None, table)]:
                kept = self.appender.append(fqn, value, part)
                if kept.num_rows:
                    written.append(kept)
                if fqn in tables.SILVER_EVENTS:
                    count("duplicates_removed", part.num_rows - kept.num_rows)
            rows = sum(t.num_rows for t in written)
            count(f"rows_written.{fqn}", rows)
            if not rows:
                continue
            if fqn in tables.SILVER_EVENTS:
                yield beam.pvalue.TaggedOutput(KEPT_SILVER, (fqn, pa.concat_tables(written)))
            elif fqn == tables.DEAD_LETTER.fqn:
                yield fqn, pa.concat_tables(written)
        if not self.with_files.issuperset(by_table):  # a table got its first files: its view changes
            from pipelines import warehouse

            warehouse.refresh_views(self.settings)
            self.with_files.update(by_table)
        count("messages_acked", pubsub.ack_written(received))
        count("messages", len(received))
        count("batches")


# ---- event-time aggregates ----------------------------------------------------------------------------
def demand_deltas(element, window_seconds: int):
    """(silver orders fqn, new rows) -> one element per event-time window touched: {(store_id, product_id):
    (units_ordered, units_returned, lines, net_revenue)}, stamped with the window's start. (One element per
    window, not per series: the DirectRunner's windowing costs ~20 µs per element.)"""
    fqn, table = element
    if fqn != ORDERS or not table.num_rows:
        return
    qty = pc.cast(table["quantity"], pa.float64())
    revenue = pc.multiply(pc.multiply(qty, table["unit_price"]),
                          pc.subtract(1.0, pc.fill_null(table["discount_pct"], 0.0)))
    width = window_seconds * _MICROS
    start = (pc.cast(table["event_ts"], pa.int64()).to_numpy(zero_copy_only=False) // width) * width
    q = table["quantity"].to_numpy()
    parts = pa.table({
        "store_id": table["store_id"], "product_id": table["product_id"], "start": pa.array(start),
        "ordered": pa.array(np.where(q > 0, q, 0)), "returned": pa.array(np.where(q < 0, -q, 0)),
        "lines": pa.array(np.ones(len(q), np.int64)), "revenue": revenue,
    }).group_by(["start", "store_id", "product_id"]).aggregate(
        [("ordered", "sum"), ("returned", "sum"), ("lines", "sum"), ("revenue", "sum")])
    by_window: dict[int, dict] = {}
    for r in parts.to_pylist():
        by_window.setdefault(r["start"], {})[(r["store_id"], r["product_id"])] = (
            r["ordered_sum"], r["returned_sum"], r["lines_sum"], r["revenue_sum"])
    for start_micros, sums in by_window.items():
        yield window.TimestampedValue(sums, Timestamp(micros=start_micros))


def merge_sums(dicts) -> dict:
    """Add up {series: (ordered, returned, lines, revenue)} dicts (a CombineFn as a callable)."""
    total: dict = {}
    for d in dicts:
        for series, values in d.items():
            old = total.get(series)
            total[series] = values if old is None else tuple(a + b for a, b in zip(old, values))
    return total


class WindowedDemand(beam.PTransform):
    """Timestamped {(store_id, product_id): sums} -> one silver.demand_windows row per series and pane.

    Fixed event-time windows; a pane fires when the watermark passes the window's end and again for each late
    arrival within `lateness_seconds` (panes are deltas: the sink adds them up); later events are dropped here
    and flagged in silver instead.
    """

    def __init__(self, window_seconds: int, lateness_seconds: int):
        super().__init__()
        self.window_seconds, self.lateness_seconds = window_seconds, lateness_seconds

    def expand(self, deltas):
        return (
            deltas
            | "WindowByEventTime" >> beam.WindowInto(
                window.FixedWindows(self.window_seconds),
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=Duration(seconds=self.lateness_seconds))
            | "OneKey" >> beam.Map(lambda sums: (None, sums))
            | "SumPerWindow" >> beam.CombinePerKey(merge_sums)
            | "ToWindowRows" >> beam.ParDo(ToWindowRows())
        )


class ToWindowRows(beam.DoFn):
    def process(self, element, w=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
        _, sums = element
        start, end = w.start.to_utc_datetime(has_tz=True), w.end.to_utc_datetime(has_tz=True)
        timing = {0: "EARLY", 1: "ON_TIME", 2: "LATE"}.get(pane.timing, "UNKNOWN")
        count(f"window_panes.{timing.lower()}", len(sums))
        now = dt.datetime.now(dt.UTC)
        for (store_id, product_id), (ordered, returned, lines, revenue) in sorted(sums.items()):
            yield {"window_start": start, "window_end": end, "window_date": start.date(), "store_id": store_id,
                   "product_id": product_id, "units_ordered": int(ordered), "units_returned": int(returned),
                   "order_lines": int(lines), "net_revenue": float(revenue), "panes": 1, "last_pane": timing,
                   "updated_at": now}


class WriteWindows(beam.DoFn):
    """Window rows -> silver.demand_windows, added up per bundle."""

    def __init__(self, root: Path):
        self.root = root

    def start_bundle(self):
        self.rows = []

    def process(self, row):
        self.rows.append(row)

    def finish_bundle(self):
        if self.rows:
            add_to_windows(self.root, pa.Table.from_pylist(self.rows, schema=tables.DEMAND_WINDOWS.schema))
            count("rows_written." + tables.DEMAND_WINDOWS.fqn, len(self.rows))
        self.rows = []


def dead_letter_messages(element):
    """(dead-letter fqn, rows) -> PubsubMessages for the dead-letter topic: the original bytes, the reason in
    the attributes."""
    from apache_beam.io.gcp.pubsub import PubsubMessage

    _, table = element
    count("dead_letters_to_topic", table.num_rows)
    for r in table.to_pylist():
        data = r["payload"].encode() if r["payload_encoding"] == "utf-8" else base64.b64decode(r["payload"])
        attributes = {k: str(r[k])[:1000] for k in ("reason", "stage", "detail", "source_uri", "source_line",
                                                      "message_id", "event_id", "run_id") if r[k] is not None}
        yield PubsubMessage(data or b" ", attributes)


# ---- the job --------------------------------------------------------------------------------------------
@dataclass
class StreamResult:
    run_id: str
    subscription: str
    seconds: float
    counters: dict[str, int] = field(default_factory=dict)
    stopped_by: str = "duration"


class ProcessStream(beam.PTransform):
    """PubsubMessages -> everything the stream writes; returns (window rows, dead letters written).

    Business logic and the lakehouse (or BigQuery) writes, no Pub/Sub I/O: `build` adds the source and the
    dead-letter topic, tests feed a TestStream.
    """

    def __init__(self, settings: Settings, subscription: str, dims_side, run: RunInfo, to_bigquery: bool = False):
        super().__init__()
        self.settings, self.subscription, self.dims, self.run = settings, subscription, dims_side, run
        self.to_bigquery = to_bigquery

    def expand(self, messages):
        settings = self.settings
        chunks = messages | "BatchMessages" >> BatchMessages(settings.stream_batch_seconds, self.subscription)
        processed = chunks | "ProcessEvents" >> ProcessEvents(self.run, self.dims)
        silver = processed.silver | "FlagLateArrivals" >> beam.ParDo(
            FlagLateArrivals(settings.stream_window_seconds, settings.allowed_lateness_seconds))
        everything = (processed.bronze, silver, processed.dead_letter) | "AllTables" >> beam.Flatten()
        if self.to_bigquery:  # appends; dbt staging keeps the first copy per event
            ids = {fqn: settings.bigquery_table(s.layer, s.name) for fqn, s in tables.written_by("events").items()
                   if fqn not in (tables.dimension(name).fqn for name in contract.DIMENSIONS)}
            everything | "WriteBigQuery" >> WriteToBigQueryTables(ids, method="STREAMING_INSERTS")
            new_silver, dead = silver, processed.dead_letter
        else:
            written = (
                everything
                | "KeyByBatch" >> beam.Map(lambda element: (None, element))
                | "CollectBatch" >> beam.GroupByKey()
                | "WriteMicroBatch" >> beam.ParDo(WriteMicroBatch(settings)).with_outputs(KEPT_SILVER, main="dead")
            )
            new_silver, dead = written[KEPT_SILVER], written.dead
        rows = (
            new_silver
            | "DemandDeltas" >> beam.FlatMap(demand_deltas, settings.stream_window_seconds)
            | "WindowedDemand" >> WindowedDemand(settings.stream_window_seconds, settings.allowed_lateness_seconds)
        )
        if self.to_bigquery:
            fqn = tables.DEMAND_WINDOWS.fqn
            (rows
             | "ToTable" >> beam.Map(lambda r: (fqn, pa.Table.from_pylist([r], schema=tables.DEMAND_WINDOWS.schema)))
             | "WriteWindowsBigQuery" >> WriteToBigQueryTables(
                 {fqn: settings.bigquery_table("silver", tables.DEMAND_WINDOWS.name)}, method="STREAMING_INSERTS"))
        else:
            rows | "WriteWindows" >> beam.ParDo(WriteWindows(settings.lake_dir))
        return rows, dead


def build(p: beam.Pipeline, settings: Settings, subscription_path: str, dims: Dimensions, run: RunInfo,
          to_bigquery: bool = False) -> None:
    """The stream's graph: read Pub/Sub, ProcessStream, publish the dead letters to their topic."""
    from apache_beam.io.gcp.pubsub import ReadFromPubSub, WriteToPubSub

    messages = p | "ReadFromPubSub" >> ReadFromPubSub(subscription=subscription_path, with_attributes=True)
    dims_side = beam.pvalue.AsSingleton(p | "DimensionsSideInput" >> beam.Create([dims]))
    _, dead = messages | "ProcessStream" >> ProcessStream(settings, subscription_path.rsplit("/", 1)[-1], dims_side,
                                                          run, to_bigquery)
    (dead
     | "ToDeadLetterMessages" >> beam.FlatMap(dead_letter_messages)
     | "PublishDeadLetters" >> WriteToPubSub(settings.topic_path(settings.dead_letter_topic), with_attributes=True))


def lakehouse_dimensions(settings: Settings) -> Dimensions:
    """The dimensions as last loaded into the lakehouse (silver.products, silver.stores)."""
    found = {}
    for name in contract.DIMENSIONS:
        lake = LakeTable(settings.lake_dir, tables.dimension(name))
        if not lake.files():
            raise FileNotFoundError(f"{tables.dimension(name).fqn} is empty: run a backfill first, or pass --dims DIR")
        table = lake.read_partition(None)
        found[name] = table.drop_columns([f.name for f in tables.LINEAGE])
    return Dimensions(found["products"], found["stores"])


def run(settings: Settings, *, subscription: str | None = None, duration: float | None = None,
        dims_dir: str | None = None, runner: str = "DirectRunner", beam_args: list[str] | None = None,
        run_id: str | None = None, on_tick=None, stop: threading.Event | None = None) -> StreamResult:
    """Run the stream until `duration` seconds pass, SIGINT/SIGTERM, or `stop` is set; returns its counters.
    `on_tick(counts)` is called about twice a second."""
    from pipelines.backfill import cloud_options, load_dimensions

    now = dt.datetime.now(dt.UTC)
    run_id = run_id or f"stream-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    run_info = RunInfo(run_id, now, Limits(now=now, max_payload_bytes=settings.max_payload_bytes,
                                           max_future_skew=dt.timedelta(hours=settings.max_future_skew_hours)))
    to_bigquery = settings.environment == "gcp"
    if to_bigquery and not dims_dir:
        raise ValueError("on gcp the stream needs --dims (e.g. gs://<landing bucket>/dims): the local lakehouse's "
                         "dimensions are not there")
    dims = load_dimensions(dims_dir)[0] if dims_dir else lakehouse_dimensions(settings)
    sub_path = settings.subscription_path(subscription or settings.events_subscription)
    args = list(beam_args or [])
    if to_bigquery:
        args = cloud_options(settings, args)
    else:
        pubsub.use_emulator(settings)
        pubsub.install_local_reader(settings.pubsub_max_messages)
    options = PipelineOptions(args, runner=runner, streaming=True, save_main_session=False)
    p = beam.Pipeline(options=options)
    build(p, settings, sub_path, dims, run_info, to_bigquery)
    stop = stop or threading.Event()
    stopped_by = ["duration" if duration else "caller"]
    restore = _stop_on_signals(stop, stopped_by)
    started = time.monotonic()
    pubsub.ACKS.paused.clear()
    baseline = process_counts()
    result = p.run()
    if runner == "DataflowRunner" and duration is None:
        # a service job: submitted, it runs until drained or cancelled (the Flex Template launcher must return)
        restore()
        log.info(json.dumps({"event": "stream_submitted", "run_id": run_id, "state": str(result.state)}))
        return StreamResult(run_id, sub_path, time.monotonic() - started, {}, "submitted")
    try:
        while not stop.is_set() and (duration is None or time.monotonic() - started < duration):
            if result.state in ("DONE", "FAILED", "CANCELLED"):
                break
            stop.wait(0.5)
            if on_tick:
                on_tick(_since(baseline))
        if not to_bigquery:
            # drain: stop pulling, let the open micro-batches close and be written (acked), and the steps after
            # the write (windows, the dead-letter topic) go quiet, then cancel
            pubsub.ACKS.paused.set()
            _drain(settings.stream_batch_seconds)
    finally:
        restore()
        if result.state not in ("DONE", "FAILED", "CANCELLED"):
            result.cancel()
        pubsub.ACKS.paused.clear()
    counters = _since(baseline) if not to_bigquery else _metrics(result)
    out = StreamResult(run_id, sub_path, time.monotonic() - started, counters, stopped_by[0])
    if not to_bigquery:
        _record(settings, out, now)
    log.info(json.dumps({"event": "stream_stopped", "run_id": run_id, "seconds": round(out.seconds, 1),
                         "stopped_by": out.stopped_by, **counters}))
    return out


def run_files(settings: Settings, folder: Path, *, dims_dir: str, duration: float | None = None,
              on_tick=None, stop: threading.Event | None = None) -> StreamResult:
    """The file stream, where no Pub/Sub emulator exists: every complete JSONL file in `folder` (those that
    `lakehouse simulate --publish --to-files` renames into place) is loaded with the backfill's pipeline as it
    appears, until `duration`, SIGINT/SIGTERM or `stop`. Same tables and rules as the backfill (bronze, silver,
    dead letters; no windowed aggregates or dead-letter topic); Beam's start-up makes each load take seconds."""
    from pipelines import backfill

    stop = stop or threading.Event()
    stopped_by = ["duration" if duration else "caller"]
    restore = _stop_on_signals(stop, stopped_by)
    run_id = f"file-stream-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    started, loaded, counters = time.monotonic(), set(), Counter()
    try:
        while True:
            last_round = stop.is_set() or (duration is not None and time.monotonic() - started >= duration)
            new = sorted({str(p) for p in Path(folder).glob("*.jsonl")} - loaded)
            if new:
                result = backfill.run(new, dims_dir, settings)
                counters.update(result.counters)
                counters.update({"files": len(new), "batches": 1, "messages": result.lines_read})
                loaded.update(new)
                if on_tick:
                    on_tick(dict(counters))
            if last_round:
                break
            if not new:
                stop.wait(0.5)
    finally:
        restore()
    return StreamResult(run_id, str(folder), time.monotonic() - started, dict(counters), stopped_by[0])


def _drain(batch_seconds: float, limit_seconds: float = 30.0) -> None:
    """Wait until every pulled message is acked and the counts stay still for two micro-batches."""
    deadline, quiet_for = time.monotonic() + limit_seconds, 2 * batch_seconds + 0.5
    last, still_since = process_counts(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = process_counts()
        if now != last or pubsub.ACKS.outstanding():
            last, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet_for:
            return


def _stop_on_signals(stop: threading.Event, stopped_by: list[str]):
    """SIGINT and SIGTERM set `stop` (and name themselves in stopped_by[0]); returns a function that restores
    the previous handlers. Only the main thread can take signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_signal(signum, _frame):
        stopped_by[0] = signal.Signals(signum).name
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, handler) for s, handler in previous.items()]


def _since(baseline: dict[str, int]) -> dict[str, int]:
    """This process's counts since `baseline` (the DirectRunner runs the whole stream in this process)."""
    return {k: v - baseline.get(k, 0) for k, v in process_counts().items() if v - baseline.get(k, 0)}


def _metrics(result) -> dict[str, int]:
    counters: Counter[str] = Counter()
    for r in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        counters[r.key.metric.name] += int(r.committed or r.attempted or 0)
    return dict(counters)


def _record(settings: Settings, result: StreamResult, started_at: dt.datetime) -> Path:
    from pipelines import warehouse

    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    path = settings.runs_dir / f"{result.run_id}.json"
    dead = {k.split(".", 1)[1]: v for k, v in sorted(result.counters.items()) if k.startswith("dead_letter.")}
    path.write_text(json.dumps({
        "run_id": result.run_id, "job": "stream", "started_at": started_at.isoformat(),
        "seconds": round(result.seconds, 3), "input": result.subscription, "stopped_by": result.stopped_by,
        "silver_rows": sum(result.counters.get(f"rows_written.{fqn}", 0) for fqn in tables.SILVER_EVENTS),
        "duplicates": result.counters.get("duplicates_removed", 0), "dead_letters": sum(dead.values()),
        "dead_letters_by_reason": dead, "counters": result.counters}, indent=2) + "\n")
    warehouse.refresh_views(settings)
    return path

