"""The stream's logic without Pub/Sub: TestStream for windows, the watermark, lateness and duplicates; the
small-file appends; the late flag; the archive reconciliation.

Messages are Beam PubsubMessages fed by a TestStream, with arrival times as element timestamps (as the
local reader stamps them); the lakehouse is a temporary folder.
"""

from __future__ import annotations

import datetime as dt
import json

import apache_beam as beam
import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_pipeline, test_stream
from apache_beam.testing.util import assert_that, equal_to, equal_to_per_window
from apache_beam.transforms.window import IntervalWindow, TimestampedValue

from pipelines import pubsub, reconcile, stream, tables
from pipelines.batches import RunInfo
from pipelines.config import Settings
from pipelines.parsing import Limits
from pipelines.sinks import LakeTable, StreamAppender

T0 = dt.datetime(2025, 5, 1, 12, 0, tzinfo=dt.UTC)  # a window boundary for 60 s windows
EPOCH0 = int(T0.timestamp())


def streaming_pipeline() -> test_pipeline.TestPipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return test_pipeline.TestPipeline(options=options)


# ---- event-time windows ---------------------------------------------------------------------------
def delta(units: int, at: int, product: str = "P0001", returned: int = 0):
    return TimestampedValue({("S001", product): (units, returned, 1, float(units))}, at)


def test_windows_fire_on_time_then_once_per_late_event_and_drop_what_is_too_late():
    events = (
        test_stream.TestStream()
        .add_elements([delta(2, 10), delta(1, 30)])
        .add_elements([delta(5, 70, "P0002", returned=1)])
        .advance_watermark_to(60)  # window [0, 60) closes: on-time pane with 3 units
        .add_elements([delta(4, 50)])  # late, within the 120 s lateness: a late pane adds 4
        .advance_watermark_to(200)  # 60 + 120 < 200: window [0, 60) is gone for good
        .add_elements([delta(7, 40)])  # too late: left out (silver flags it instead)
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        rows = (p | events | stream.WindowedDemand(60, 120)
                | beam.Map(lambda r: (r["product_id"], r["units_ordered"], r["units_returned"], r["last_pane"])))
        assert_that(rows, equal_to_per_window({
            IntervalWindow(0, 60): [("P0001", 3, 0, "ON_TIME"), ("P0001", 4, 0, "LATE")],
            IntervalWindow(60, 120): [("P0002", 5, 1, "ON_TIME")],
        }))


def test_late_flag_is_the_windows_rule():
    table = tables.silver_events("order").empty()
    ts = pa.array([T0 + dt.timedelta(seconds=s) for s in (5, 59, 61)], tables.TIMESTAMP)
    table = pa.table({n: ts if n == "event_ts" else pa.nulls(3, f.type) for n, f in
                      zip(table.schema.names, table.schema)}, schema=table.schema)
    # window [T0, T0+60) closes at T0+60+30; [T0+60, T0+120) at T0+150
    flagged = stream.flag_late(table, T0 + dt.timedelta(seconds=100), 60, 30)
    assert flagged["arrived_late"].to_pylist() == [True, True, False]


# ---- the whole stream on a TestStream -----------------------------------------------------------------
def order(event_id: str, ts: dt.datetime, qty: int = 2, product: str = "P0001") -> bytes:
    return msgspec.json.encode({"event_type": "order", "event_id": event_id, "event_ts": ts.isoformat(),
                                "store_id": "S001", "product_id": product, "quantity": qty, "unit_price": 2.5,
                                "currency": "GBP", "channel": "store"})


def message(data: bytes, message_id: str, at: int, line: int | None = None) -> TimestampedValue:
    """A message arriving (and published) `at` seconds after T0, optionally naming its archive line."""
    attributes = {pubsub.ARCHIVE_URI: "/archive/a.jsonl", pubsub.ARCHIVE_LINE: str(line)} if line else {}
    published = T0 + dt.timedelta(seconds=at)
    return TimestampedValue(PubsubMessage(data, attributes, message_id=message_id, publish_time=published),
                            EPOCH0 + at)


@pytest.fixture
def stream_settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "lake", stream_batch_seconds=2, stream_window_seconds=60,
                    allowed_lateness_seconds=30)


def run_stream(settings: Settings, dims, events: test_stream.TestStream, check=None) -> None:
    run = RunInfo("stream-test", T0, Limits(now=T0))
    with streaming_pipeline() as p:
        side = beam.pvalue.AsSingleton(p | beam.Create([dims]))
        rows, dead = p | events | stream.ProcessStream(settings, "events-stream", side, run)
        if check:
            check(rows, dead)


def lake_rows(settings: Settings, fqn: str) -> list[dict]:
    lake = LakeTable(settings.lake_dir, tables.TABLES[fqn])
    return [r for v in lake.partitions() for r in lake.read_partition(v).to_pylist()]


def test_the_stream_lands_each_event_once_windows_it_and_flags_what_is_too_late(stream_settings, dims):
    at = lambda s: T0 + dt.timedelta(seconds=s)  # noqa: E731
    events = (
        test_stream.TestStream()
        .add_elements([message(order("o1", at(1)), "m1", 1, line=1),
                       message(order("o2", at(2), qty=3), "m2", 2, line=2),
                       message(b'{"event_type": "order", "event_id": "b1"', "m3", 2, line=3)])  # not JSON
        .advance_watermark_to(EPOCH0 + 5)
        .add_elements([message(order("o1", at(1)), "m1", 6, line=1),  # redelivery of m1
                       message(order("o2", at(2), qty=3), "m4", 7, line=4),  # o2 published again
                       message(order("o3", at(8), qty=5, product="P0002"), "m5", 8)])  # no archive line
        .advance_watermark_to(EPOCH0 + 65)  # window [T0, T0+60) fires on time
        .add_elements([message(order("o4", at(40), qty=7), "m6", 70, line=5)])  # late, within 30 s
        .advance_watermark_to(EPOCH0 + 200)
        .add_elements([message(order("o5", at(50), qty=11), "m7", 201, line=6)])  # too late for its window
        .advance_watermark_to_infinity()
    )

    def check(rows, dead):
        summary = rows | beam.Map(lambda r: (r["product_id"], r["units_ordered"], r["panes"], r["last_pane"]))
        assert_that(summary, equal_to_per_window({
            IntervalWindow(EPOCH0, EPOCH0 + 60): [("P0001", 5, 1, "ON_TIME"), ("P0002", 5, 1, "ON_TIME"),
                                                   ("P0001", 7, 1, "LATE")],
        }), label="windows")
        assert_that(dead | beam.Map(lambda e: e[1]["reason"].to_pylist()), equal_to([["malformed_json"]]),
                    label="dead")

    run_stream(stream_settings, dims, events, check)
    silver = {r["event_id"]: r for r in lake_rows(stream_settings, "silver.order_events")}
    assert sorted(silver) == ["o1", "o2", "o3", "o4", "o5"]
    assert silver["o2"]["message_id"] == "m2" and silver["o2"]["source_line"] == 2  # the first copy won
    assert silver["o3"]["source_uri"] == "pubsub://events-stream" and silver["o3"]["source_line"] is None
    assert json.loads(silver["o1"]["attributes"])[pubsub.ARCHIVE_LINE] == "1"
    assert {k: v["arrived_late"] for k, v in silver.items()} == {"o1": False, "o2": False, "o3": False,
                                                                 "o4": False, "o5": True}
    bronze = lake_rows(stream_settings, "bronze.order_events")
    assert sorted(r["message_id"] for r in bronze) == ["m1", "m2", "m4", "m5", "m6", "m7"]  # m1 redelivered: once
    windows = lake_rows(stream_settings, "silver.demand_windows")
    assert {(r["product_id"], r["units_ordered"], r["panes"], r["last_pane"]) for r in windows} == {
        ("P0001", 12, 2, "LATE"), ("P0002", 5, 1, "ON_TIME")}
    (dead,) = lake_rows(stream_settings, "bronze.dead_letter")
    assert (dead["reason"], dead["message_id"], dead["source_line"]) == ("malformed_json", "m3", 3)


# ---- small files ----------------------------------------------------------------------------------
_FILL = {pa.string(): "x", pa.int64(): 1, pa.float64(): 1.0, pa.bool_(): False, tables.TIMESTAMP: T0,
         pa.date32(): T0.date()}


def filled(spec: tables.TableSpec, n: int) -> dict[str, pa.Array]:
    """Columns of `spec` for n rows: nulls where allowed, a plain value where not."""
    return {f.name: pa.nulls(n, f.type) if f.nullable else pa.array([_FILL[f.type]] * n, f.type) for f in spec.schema}


def bronze_rows(ids: list[str], uri: str = "/archive/a.jsonl", lines=None, message_ids=None) -> pa.Table:
    spec = tables.bronze_events("order")
    n = len(ids)
    base = filled(spec, n)
    base.update(event_id=pa.array(ids), event_date=pa.array([T0.date()] * n, pa.date32()),
                event_ts=pa.array([T0] * n, tables.TIMESTAMP), source_uri=pa.array([uri] * n),
                source_line=pa.array(lines or list(range(1, n + 1)), pa.int64()),
                message_id=pa.array(message_ids or [None] * n, pa.string()))
    return pa.table(base, schema=spec.schema)


def test_appends_are_small_files_each_record_once_and_compacted(tmp_path):
    appender = StreamAppender(tmp_path, compact_after=3)
    fqn, day = "bronze.order_events", T0.date().isoformat()
    lake = LakeTable(tmp_path, tables.TABLES[fqn])
    kept = appender.append(fqn, day, bronze_rows(["a", "b"], message_ids=["m1", "m2"]))
    assert kept.num_rows == 2 and len(lake.partition_files(day)) == 1
    again = appender.append(fqn, day, bronze_rows(["a", "c"], lines=[1, 3], message_ids=["m1", "m3"]))
    assert again["event_id"].to_pylist() == ["c"]  # line 1 was received already
    for i in range(2):
        appender.append(fqn, day, bronze_rows([f"x{i}"], lines=[10 + i], message_ids=[f"n{i}"]))
    assert [f.name for f in lake.partition_files(day)] == ["data.parquet"]  # a 4th part: all folded
    assert sorted(lake.read_partition(day)["event_id"].to_pylist()) == ["a", "b", "c", "x0", "x1"]
    # another writer changes the partition behind the appender's back: it reads the identities again
    pq.write_table(lake._for_file(bronze_rows(["y"], lines=[99])), lake.partition_dir(day) / "part-other.parquet")
    assert appender.append(fqn, day, bronze_rows(["y"], lines=[99], message_ids=["z"])).num_rows == 0


def test_a_repair_over_the_archive_keeps_the_streams_rows_and_adds_only_the_gaps(tmp_path):
    fqn, day = "bronze.order_events", T0.date().isoformat()
    StreamAppender(tmp_path).append(fqn, day, bronze_rows(["a", "b"], lines=[1, 2], message_ids=["m1", "m2"]))
    lake = LakeTable(tmp_path, tables.TABLES[fqn])
    assert lake.merge_partition(day, bronze_rows(["a", "b", "c"]), frozenset({"/archive/a.jsonl"})) == (1, 2, True)
    rows = {r["event_id"]: r["message_id"] for r in lake.read_partition(day).to_pylist()}
    assert rows == {"a": "m1", "b": "m2", "c": None}
    assert lake.merge_partition(day, bronze_rows(["a", "b", "c"]), frozenset({"/archive/a.jsonl"})) == (1, 2, True)
    assert lake.read_partition(day).num_rows == 3  # a second repair changes nothing


# ---- reconciliation --------------------------------------------------------------------------------
def test_reconcile_names_missing_and_doubled_records(tmp_path):
    settings = Settings(home=tmp_path / "lake")
    archive = settings.archive_dir / "events"
    archive.mkdir(parents=True)
    path = archive / "a.jsonl"
    path.write_bytes(order("o1", T0) + b"\n" + order("o2", T0) + b"\nnot json\n" + order("o1", T0) + b"\n")
    silver = tables.silver_events("order")
    appender = StreamAppender(settings.lake_dir)
    rows = bronze_rows(["o1"], uri=str(path))
    table = pa.table({**filled(silver, 1), **{n: rows[n] for n in silver.schema.names if n in rows.column_names}},
                     schema=silver.schema)
    appender.append(silver.fqn, T0.date().isoformat(), table)
    result = reconcile.reconcile(settings)
    assert (result.archive_lines, result.event_ids) == (4, 2)
    assert result.missing_ids == ["o2"] and result.missing_lines == [(str(path), 3)] and not result.ok


def test_the_dataflow_variant_builds_bigquery_and_pubsub_steps_without_calling_google(dims):
    settings = Settings(environment="gcp", gcp_project="retail-lake")
    p = beam.Pipeline()
    run = RunInfo("stream-test", T0, Limits(now=T0))
    stream.build(p, settings, settings.subscription_path(settings.events_subscription), dims, run, to_bigquery=True)
    labels = {t.full_label: t.transform for t in _all_parts(p.transforms_stack[0])}
    read = labels["ReadFromPubSub"]
    assert read.with_attributes and read._source.full_subscription == \
        "projects/retail-lake/subscriptions/events-stream"
    writes = {label.rsplit(" ", 1)[1]: t for label, t in labels.items() if "/Write " in label
              and "WriteToBigQueryTables" in type(labels[label.rsplit("/", 1)[0]]).__name__}
    assert set(writes) == {"bronze.order_events", "bronze.inventory_events", "bronze.dead_letter",
                           "silver.order_events", "silver.inventory_events", "silver.demand_windows"}
    assert writes["silver.order_events"].method == "STREAMING_INSERTS"
    publish = labels["PublishDeadLetters"]
    assert publish.with_attributes and publish.full_topic == "projects/retail-lake/topics/events-dead-letter"


def _all_parts(node):
    for part in node.parts:
        yield part
        yield from _all_parts(part)
