"""The shared Beam transforms in `pipelines.transforms`, each run in a TestPipeline on beam.Create inputs.

Covers ReadLineChunks (line numbering, chunking, every byte kept, .gz, no trailing newline), ParseEvents and
EnrichEvents (tagged valid / dead_letter outputs, counters), DeduplicateEvents (one row per event_id per
table, the first in (source_uri, source_line) order, the duplicates_removed counter), WriteToLakehouse, and
ProcessEvents end to end from files (read in a step of their own, or with the parsing), where the counts must
reconcile: lines read = silver rows after deduplication + dead letters + duplicates removed. Elements are Arrow
tables, so every assertion first maps them to plain values. Runs on the BundleBasedDirectRunner, as `lakehouse
backfill` does locally.

    .venv/bin/python -m pytest tests/test_transforms.py
"""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.io import fileio
from apache_beam.metrics import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines import tables, transforms
from pipelines.batches import LineChunk, enrich, parse_chunk
from pipelines.sinks import LakeTable, WriteToLakehouse, contiguous_partitions, file_order
from pipelines.transforms import (
    DEAD_LETTER,
    NAMESPACE,
    DeduplicateEvents,
    EnrichEvents,
    ParseEvents,
    ProcessEvents,
    ReadLineChunks,
)

RUNNER = "BundleBasedDirectRunner"
BRONZE_ORDERS, BRONZE_INVENTORY = tables.bronze_events("order").fqn, tables.bronze_events("inventory").fqn
SILVER_ORDERS, SILVER_INVENTORY = tables.silver_events("order").fqn, tables.silver_events("inventory").fqn
DEAD = tables.DEAD_LETTER.fqn


def counters(result, name_prefix: str = "") -> dict[str, int]:
    """The run's `lakehouse` counters (committed values, summed over steps) whose name starts with `name_prefix`."""
    query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    totals: dict[str, int] = {}
    for r in query:
        if r.key.metric.name.startswith(name_prefix):
            totals[r.key.metric.name] = totals.get(r.key.metric.name, 0) + r.committed
    return totals


def new_pipeline(runner: str = RUNNER) -> test_pipeline.TestPipeline:
    return test_pipeline.TestPipeline(runner=runner)


def run(p: test_pipeline.TestPipeline):
    result = p.run()
    result.wait_until_finish()
    return result


def ids(element) -> tuple[str, list[str]]:
    fqn, table = element
    return fqn, sorted(table["event_id"].to_pylist())


def reasons(element) -> tuple[str, list[tuple[int, str]]]:
    fqn, table = element
    return fqn, sorted(zip(table["source_line"].to_pylist(), table["reason"].to_pylist()))


def rows(element) -> list[tuple[str, str, int, str]]:
    """(fqn, source file name, source_line, event_id) of every row of a table."""
    fqn, table = element
    return [(fqn, uri.rsplit("/", 1)[-1], n, i) for uri, n, i in
            zip(*(table[c].to_pylist() for c in ("source_uri", "source_line", "event_id")))]


# ---- ReadLineChunks ----------------------------------------------------------------------------
FILES = {
    "plain.jsonl": b"l1\nl2\n\nl4 \xff\xfe bad bytes\nl5 no newline at the end",
    "exact.jsonl.gz": b"g1\ng2\ng3\n",
    "crlf.jsonl": b"c1\r\nc2\r\n\n\n",
    "empty.jsonl": b"",
    "newline.jsonl": b"\n",
}


@pytest.fixture
def input_files(tmp_path) -> dict[str, Path]:
    paths = {}
    for name, data in FILES.items():
        path = tmp_path / name
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
        paths[name] = path
    return paths


def read_chunks(p, paths, chunk_lines: int):
    return (
        p
        | "ListFiles" >> beam.Create([str(path) for path in paths])
        | "ReadMatches" >> fileio.ReadMatches()
        | "ReadLineChunks" >> beam.ParDo(ReadLineChunks(chunk_lines=chunk_lines))
    )


def test_read_line_chunks_numbers_lines_and_keeps_bytes_untouched(input_files):
    p = new_pipeline()
    chunks = read_chunks(p, input_files.values(), chunk_lines=3)
    assert_that(chunks | beam.Map(lambda c: (Path(c.source_uri).name, c.first_line, c.lines)), equal_to([
        ("plain.jsonl", 1, [b"l1", b"l2", b""]),
        ("plain.jsonl", 4, [b"l4 \xff\xfe bad bytes", b"l5 no newline at the end"]),
        ("exact.jsonl.gz", 1, [b"g1", b"g2", b"g3"]),
        ("crlf.jsonl", 1, [b"c1\r", b"c2\r", b""]),
        ("crlf.jsonl", 4, [b""]),
        ("newline.jsonl", 1, [b""]),
    ]))
    result = run(p)
    assert counters(result) == {"files_read": 5, "lines_read": 5 + 3 + 4 + 0 + 1}


def reassemble(element) -> tuple[str, bytes]:
    """(file name, [(first_line, lines)]) -> (file name, the lines joined back), checking numbering is gapless."""
    name, chunks = element
    chunks = sorted(chunks)
    numbers = [first + i for first, lines in chunks for i in range(len(lines))]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    return name, b"\n".join(line for _, lines in chunks for line in lines)


@pytest.mark.parametrize("read_block", [None, 4])
def test_read_line_chunks_loses_no_byte(input_files, monkeypatch, read_block):
    if read_block:  # lines straddle read blocks: the tail of one block must join the next
        monkeypatch.setattr(transforms, "_READ_BLOCK", read_block)
    p = new_pipeline()
    files = (
        read_chunks(p, input_files.values(), chunk_lines=2)
        | beam.Map(lambda c: (Path(c.source_uri).name, (c.first_line, c.lines)))
        | beam.GroupByKey()
        | beam.Map(reassemble)
    )
    # one trailing newline ends the last line and adds none; an empty file has no lines (and no chunk)
    assert_that(files, equal_to([(name, data.removesuffix(b"\n")) for name, data in FILES.items() if data]))
    run(p)


def test_read_line_chunks_drops_a_byte_order_mark_only_at_the_start_of_a_file(tmp_path):
    bom = b"\xef\xbb\xbf"
    (tmp_path / "bom.jsonl").write_bytes(bom + b"first\n" + bom + b"second\n")
    p = new_pipeline()
    chunks = read_chunks(p, [tmp_path / "bom.jsonl"], chunk_lines=10)
    assert_that(chunks | beam.Map(lambda c: (c.first_line, c.lines)), equal_to([(1, [b"first", bom + b"second"])]))
    run(p)


# ---- ParseEvents -------------------------------------------------------------------------------
@pytest.fixture
def chunks(line) -> list[LineChunk]:
    return [
        LineChunk("file:///in/a.jsonl", 1, [
            line(event_id="o-1"), line("return", event_id="r-1"), b"{broken",
            line("inventory_snapshot", event_id="i-1"),
        ]),
        LineChunk("file:///in/a.jsonl", 5, [
            line(event_id="o-2", quantity=0), b"", line(event_id="o-3", store_id="S404"),
        ]),
    ]


def test_parse_events_routes_valid_events_and_dead_letters(chunks, run_info):
    p = new_pipeline()
    parsed = p | beam.Create(chunks) | beam.ParDo(ParseEvents(run_info)).with_outputs(DEAD_LETTER, main="valid")
    assert_that(parsed.valid | "ValidIds" >> beam.Map(ids), equal_to([
        (BRONZE_ORDERS, ["o-1", "r-1"]), (BRONZE_INVENTORY, ["i-1"]), (BRONZE_ORDERS, ["o-3"]),
    ]), label="CheckValid")
    assert_that(parsed[DEAD_LETTER] | "Reasons" >> beam.Map(reasons), equal_to([
        (DEAD, [(3, "malformed_json")]), (DEAD, [(5, "invalid_quantity"), (6, "empty_line")]),
    ]), label="CheckDeadLetters")
    result = run(p)
    assert counters(result) == {"valid.order": 3, "valid.inventory": 1, "dead_letters": 3,
                                "dead_letter.malformed_json": 1, "dead_letter.invalid_quantity": 1,
                                "dead_letter.empty_line": 1}


# ---- EnrichEvents ------------------------------------------------------------------------------
def test_enrich_events_joins_dimensions_from_a_side_input(chunks, run_info, dims):
    bronze = [(tables.bronze_events(entity).fqn, table)
              for chunk in chunks for entity, table in parse_chunk(chunk, run_info).events.items()]
    p = new_pipeline()
    dims_side = beam.pvalue.AsSingleton(p | "Dimensions" >> beam.Create([dims]))
    enriched = (p | "Bronze" >> beam.Create(bronze)
                | beam.ParDo(EnrichEvents(run_info), dims=dims_side).with_outputs(DEAD_LETTER, main="silver"))
    assert_that(enriched.silver | "SilverRows" >> beam.Map(
        lambda kv: (kv[0], sorted(zip(kv[1]["event_id"].to_pylist(), kv[1]["store_name"].to_pylist(),
                                      kv[1]["product_name"].to_pylist())))), equal_to([
        (SILVER_ORDERS, [("o-1", "London", "Mug"), ("r-1", "London", "Mug")]),
        (SILVER_INVENTORY, [("i-1", "London", "Mug")]),
    ]), label="CheckSilver")
    assert_that(enriched[DEAD_LETTER] | "Reasons" >> beam.Map(reasons),
                equal_to([(DEAD, [(7, "unknown_store")])]), label="CheckDeadLetters")
    assert_that(enriched.silver | "Schemas" >> beam.Map(
        lambda kv: kv[1].schema.equals(tables.TABLES[kv[0]].schema, check_metadata=True)),
        equal_to([True, True]), label="CheckSchemas")
    result = run(p)
    assert counters(result, "dead_letter") == {"dead_letters": 1, "dead_letter.unknown_store": 1}


# ---- DeduplicateEvents -------------------------------------------------------------------------
def silver_table(run_info, dims, uri: str, event_ids: list[str], line, entity: str = "order") -> pa.Table:
    """Silver rows for `event_ids`, one per line of `uri` starting at line 1."""
    kind = "order" if entity == "order" else "inventory_snapshot"
    bronze = parse_chunk(LineChunk(uri, 1, [line(kind, event_id=i) for i in event_ids]), run_info).events[entity]
    return enrich(bronze, entity, dims, run_info)[0]


@pytest.mark.parametrize("runner", [RUNNER, "DirectRunner"])
@pytest.mark.parametrize("buckets", [1, 16])
def test_deduplicate_keeps_the_first_copy_in_source_order(runner, buckets, run_info, dims, line):
    def table(uri, event_ids, entity="order"):
        return silver_table(run_info, dims, uri, event_ids, line, entity)

    inputs = [
        (SILVER_ORDERS, table("file:///in/b.jsonl", ["e-1", "e-2", "e-1", "e-4"])),
        (SILVER_ORDERS, table("file:///in/a.jsonl", ["e-3", "e-1"])),
        (SILVER_ORDERS, table("file:///in/c.jsonl", ["e-2"])),
        (SILVER_INVENTORY, table("file:///in/c.jsonl", ["e-1"], "inventory")),  # another table: not a copy
    ]
    p = new_pipeline(runner)
    deduped = p | beam.Create(inputs) | DeduplicateEvents(buckets=buckets)
    assert_that(deduped | beam.FlatMap(rows), equal_to([
        (SILVER_ORDERS, "a.jsonl", 1, "e-3"),
        (SILVER_ORDERS, "a.jsonl", 2, "e-1"),
        (SILVER_ORDERS, "b.jsonl", 2, "e-2"),
        (SILVER_ORDERS, "b.jsonl", 4, "e-4"),
        (SILVER_INVENTORY, "c.jsonl", 1, "e-1"),
    ]))
    result = run(p)
    assert counters(result) == {"duplicates_removed": 3}


def test_deduplicate_without_copies_changes_nothing(run_info, dims, line):
    inputs = [(SILVER_ORDERS, silver_table(run_info, dims, "file:///in/a.jsonl", ["e-1", "e-2"], line)),
              (SILVER_ORDERS, silver_table(run_info, dims, "file:///in/b.jsonl", ["e-3"], line))]
    p = new_pipeline()
    deduped = p | beam.Create(inputs) | DeduplicateEvents()
    assert_that(deduped | beam.Map(ids), equal_to([(SILVER_ORDERS, ["e-1", "e-2"]), (SILVER_ORDERS, ["e-3"])]))
    result = run(p)
    assert counters(result) == {}


@pytest.mark.xfail(strict=True, reason="KNOWN LIMIT of the batch dedupe: DropLaterCopies names rows to drop by "
                                       "(source_uri, source_line), unique for files but not for messages: copies "
                                       "sharing it (no line numbers, as from Pub/Sub) all survive or all vanish. The "
                                       "stream does not use it (StreamAppender keeps the first copy per event_id)")
@pytest.mark.parametrize("source_line", [None, 1], ids=["no_line_numbers", "same_line_twice"])
def test_deduplicate_keeps_exactly_one_of_copies_sharing_a_source_position(source_line, run_info, dims, line):
    table = silver_table(run_info, dims, "projects/p/subscriptions/events", ["e-1"], line)
    table = table.set_column(table.schema.get_field_index("source_line"), tables.LINEAGE[1],
                             pa.array([source_line], pa.int64()))
    p = new_pipeline()
    deduped = p | beam.Create([(SILVER_ORDERS, table), (SILVER_ORDERS, table)]) | DeduplicateEvents()
    assert_that(deduped | beam.Map(ids), equal_to([(SILVER_ORDERS, ["e-1"])]))
    run(p)


# ---- WriteToLakehouse --------------------------------------------------------------------------
def test_write_to_lakehouse_cuts_tables_into_partitions_in_file_order_with_one_copy_per_key(tmp_path, run_info,
                                                                                            dims, line):
    day1, day2 = "2025-03-01T10:00:00Z", "2025-03-02T10:00:00Z"
    chunk_a = LineChunk("file:///in/a.jsonl", 1, [line(event_id="a1", event_ts=day2), line(event_id="a2",
                        event_ts="2025-03-01T09:00:00Z"), line(event_id="b2", event_ts=day1), b"oops"])
    chunk_b = LineChunk("file:///in/b.jsonl", 1, [line(event_id="b1", event_ts=day2), line(event_id="b2",
                        event_ts=day1), line(event_id="a2", event_ts="2025-03-01T09:00:00Z")])
    elements = []
    for chunk in (chunk_b, chunk_a):  # arrival order must not matter
        result = parse_chunk(chunk, run_info)
        bronze = result.events["order"]
        elements += [(BRONZE_ORDERS, bronze), (SILVER_ORDERS, enrich(bronze, "order", dims, run_info)[0])]
        if result.dead_letters is not None:
            elements.append((DEAD, result.dead_letters))
    stale = (SILVER_ORDERS, "2025-02-01")  # a partition on disk this run brings nothing to: swept, kept
    LakeTable(tmp_path, tables.TABLES[SILVER_ORDERS]).write_partition(stale[1], tables.TABLES[SILVER_ORDERS].empty())

    p = new_pipeline()
    written = p | beam.Create(elements) | WriteToLakehouse(tmp_path, ["file:///in/a.jsonl", "file:///in/b.jsonl"],
                                                           [stale])
    assert_that(written, equal_to([(BRONZE_ORDERS, "2025-03-01", 4), (BRONZE_ORDERS, "2025-03-02", 2),
                                   (SILVER_ORDERS, "2025-03-01", 2), (SILVER_ORDERS, "2025-03-02", 2),
                                   (SILVER_ORDERS, "2025-02-01", 0), (DEAD, None, 1)]))
    assert counters(run(p), "duplicates")["duplicates_removed"] == 2

    def stored(fqn, day):
        table = LakeTable(tmp_path, tables.TABLES[fqn]).read_partition(day)
        return list(zip(table["event_id"].to_pylist(), (Path(u).name for u in table["source_uri"].to_pylist()),
                        table["source_line"].to_pylist()))

    # rows in event time, then source order; of two copies the first in (source_uri, source_line) order stays
    assert stored(BRONZE_ORDERS, "2025-03-01") == [("a2", "a.jsonl", 2), ("a2", "b.jsonl", 3), ("b2", "a.jsonl", 3),
                                                   ("b2", "b.jsonl", 2)]
    assert stored(SILVER_ORDERS, "2025-03-01") == [("a2", "a.jsonl", 2), ("b2", "a.jsonl", 3)]
    assert stored(SILVER_ORDERS, "2025-03-02") == [("a1", "a.jsonl", 1), ("b1", "b.jsonl", 1)]


def test_file_order_drops_later_copies_before_its_one_take(run_info, dims, line):
    """The first copy in (source_uri, source_line) order stays even where a later copy sorts first (an earlier
    event time); without `unique` every row stays. The input comes in several chunks, as the sink receives it."""
    spec = tables.TABLES[SILVER_ORDERS]
    chunks = [LineChunk("file:///in/b.jsonl", 1, [line(event_id="e1", event_ts="2025-03-01T08:00:00Z"),
                                                  line(event_id="e2", event_ts="2025-03-02T10:00:00Z")]),
              LineChunk("file:///in/a.jsonl", 7, [line(event_id="e1", event_ts="2025-03-01T09:00:00Z"),
                                                  line(event_id="e3", event_ts="2025-03-01T07:00:00Z"),
                                                  line(event_id="e2", event_ts="2025-03-02T10:00:00Z")])]
    table = pa.concat_tables([enrich(parse_chunk(c, run_info).events["order"], "order", dims, run_info)[0]
                              for c in chunks])
    assert table["event_id"].num_chunks == 2

    def rows(t):
        return list(zip(t["event_id"].to_pylist(), (Path(u).name for u in t["source_uri"].to_pylist()),
                        t["source_line"].to_pylist()))

    kept, dropped = file_order(table, spec, unique=True)
    assert (rows(kept), dropped) == ([("e3", "a.jsonl", 8), ("e1", "a.jsonl", 7), ("e2", "a.jsonl", 9)], 2)
    everything, none = file_order(table, spec)
    assert none == 0 and rows(everything) == [("e3", "a.jsonl", 8), ("e1", "b.jsonl", 1), ("e1", "a.jsonl", 7),
                                              ("e2", "a.jsonl", 9), ("e2", "b.jsonl", 2)]
    assert file_order(table.slice(0, 0), spec, unique=True)[0].num_rows == 0


def test_contiguous_partitions_refuses_rows_not_grouped_by_partition():
    days = pa.array([dt.date(2025, 3, d) for d in (1, 1, 2, 2)], pa.date32())
    assert [(v, t.num_rows) for v, t in contiguous_partitions(pa.table({"d": days}), "d")] == [
        ("2025-03-01", 2), ("2025-03-02", 2)]
    with pytest.raises(ValueError, match="not grouped by d"):  # merged twice, the second merge would drop the first
        contiguous_partitions(pa.table({"d": days.take([0, 2, 1, 3])}), "d")


# ---- ProcessEvents, end to end -----------------------------------------------------------------
@pytest.mark.parametrize("from_files", [False, True], ids=["from_chunks", "from_files"])
def test_process_events_end_to_end_reconciles(tmp_path, run_info, dims, line, from_files):
    day = b"\n".join([
        line(event_id="o-1"), line(event_id="o-2", store_id="S002", product_id="P0002"),
        line("return", event_id="r-1"), line("inventory_snapshot", event_id="i-1"),
        line(event_id="o-1"),                                   # a copy within the file
        b'{"event_type": "order"', line(event_id="x-1", store_id="S404"), line(event_id="x-2", product_id="P404"),
    ]) + b"\n"
    replay = b"\n".join([
        line(event_id="o-2", store_id="S002", product_id="P0002"),  # a copy in a second file
        line("inventory_adjustment", event_id="i-2", quantity=5), b"", line(event_id="o-9", quantity=-1),
        line(event_id="o-3"),
    ])  # no trailing newline
    (tmp_path / "1.jsonl").write_bytes(day)
    (tmp_path / "2.jsonl.gz").write_bytes(gzip.compress(replay))

    p = new_pipeline()
    if from_files:  # each file read and parsed in one step (ReadAndParseEvents)
        inputs = p | beam.Create([str(path) for path in sorted(tmp_path.iterdir())]) | fileio.ReadMatches()
    else:
        inputs = read_chunks(p, sorted(tmp_path.iterdir()), chunk_lines=3)
    dims_side = beam.pvalue.AsSingleton(p | "Dimensions" >> beam.Create([dims]))
    processed = inputs | ProcessEvents(run_info, dims_side, from_files=from_files)
    silver = processed.silver | DeduplicateEvents()
    assert_that(processed.bronze | "BronzeRows" >> beam.FlatMap(rows) | "BronzeIds" >> beam.Map(lambda r: r[3]),
                equal_to(["o-1", "o-2", "r-1", "i-1", "o-1", "x-1", "x-2", "o-2", "i-2", "o-3"]), label="CheckBronze")
    assert_that(silver | "SilverRows" >> beam.FlatMap(rows), equal_to([
        (SILVER_ORDERS, "1.jsonl", 1, "o-1"), (SILVER_ORDERS, "1.jsonl", 2, "o-2"),
        (SILVER_ORDERS, "1.jsonl", 3, "r-1"), (SILVER_INVENTORY, "1.jsonl", 4, "i-1"),
        (SILVER_INVENTORY, "2.jsonl.gz", 2, "i-2"), (SILVER_ORDERS, "2.jsonl.gz", 5, "o-3"),
    ]), label="CheckSilver")
    assert_that(processed.dead_letter | "DeadLetters" >> beam.FlatMap(
        lambda kv: zip(kv[1]["source_uri"].to_pylist(), kv[1]["source_line"].to_pylist(), kv[1]["reason"].to_pylist()))
        | beam.Map(lambda r: (Path(r[0]).name, r[1], r[2])), equal_to([
            ("1.jsonl", 6, "malformed_json"), ("1.jsonl", 7, "unknown_store"), ("1.jsonl", 8, "unknown_product"),
            ("2.jsonl.gz", 3, "empty_line"), ("2.jsonl.gz", 4, "invalid_quantity"),
        ]), label="CheckDeadLetters")
    # row totals as data, not counters: the BundleBasedDirectRunner under-reports counters of a step that
    # reads a Flatten (like dead_letter), so a counting Map there would lie
    for name, pcoll, total in (("Silver", silver, 6), ("DeadLetter", processed.dead_letter, 5)):
        assert_that(pcoll | f"{name}RowCount" >> beam.Map(lambda kv: kv[1].num_rows)
                    | f"{name}Total" >> beam.CombineGlobally(sum), equal_to([total]), label=f"Check{name}Total")
    result = run(p)

    lakehouse = counters(result)
    assert (lakehouse["lines_read"], lakehouse["dead_letters"], lakehouse["duplicates_removed"]) == (13, 5, 2)
    assert lakehouse["lines_read"] == 6 + lakehouse["dead_letters"] + lakehouse["duplicates_removed"]
    assert sum(v for k, v in lakehouse.items() if k.startswith("dead_letter.")) == lakehouse["dead_letters"]
