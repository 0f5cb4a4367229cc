"""The columnar building blocks in `pipelines.batches`: chunks of raw lines in, Arrow tables out.

Covers parse_chunk (bronze tables per entity with the contract schema, line numbers, raw payloads, UTC
event dates, dead letters with reasons), first_copies (first copy in source order wins,
whatever the row order), enrich (dimension attributes, unknown store/product dead letters), split_by
(partitions incl. null, parts that do not pickle their parent's buffers), utc_dates and payload_text.
No Beam here; tests/test_transforms.py runs the same functions inside pipelines.

    .venv/bin/python -m pytest tests/test_batches.py
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import pickle

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines import contract, faults, tables
from pipelines.batches import (
    Dimensions,
    LineChunk,
    enrich,
    first_copies,
    parse_chunk,
    payload_text,
    split_by,
    to_arrow,
    utc_dates,
)

URI = "file:///landing/events-0001.jsonl"
D = dt.date


def lines_by(table: pa.Table, column: str) -> dict:
    """{source_line: value of `column`} of a bronze, silver or dead-letter table."""
    return dict(zip(table["source_line"].to_pylist(), table[column].to_pylist()))


# ---- parse_chunk -------------------------------------------------------------------------------
@pytest.fixture
def mixed_lines(line) -> list[bytes]:
    """Lines 101-112 of a file: orders, a return, inventory events and bad lines in between."""
    return [
        line(event_id="o-1"),                                                 # 101
        line("return", event_id="r-1"),                                       # 102
        line("inventory_snapshot", event_id="i-1"),                           # 103
        b'{"event_type": "order", "event_id": "x-1"',                         # 104 truncated
        line("inventory_adjustment", event_id="i-2", quantity=12, reason="receipt"),  # 105
        line(event_id="o-2", event_ts="2025-03-01T23:30:00-02:00"),           # 106: next UTC day
        b"",                                                                  # 107
        line(event_id="x-2", unit_price=-1.5),                                # 108
        line("inventory_adjustment", event_id="x-3", quantity=0),             # 109
        line(event_id="x-4", event_ts="2025-07-01T00:00:00Z"),                # 110: after now + 24h
        "  {\"caf\u00e9\": 1}  ".encode(),                                    # 111: valid UTF-8, no fields
        line(event_id="o-3", store_id="S002", quantity=7),                    # 112
    ]


@pytest.fixture
def parsed(mixed_lines, run_info):
    return parse_chunk(LineChunk(URI, 101, mixed_lines), run_info)


def test_parse_chunk_splits_valid_events_by_entity_with_the_bronze_schema(parsed):
    assert set(parsed.events) == {"order", "inventory"}
    for entity, table in parsed.events.items():
        assert table.schema.equals(tables.bronze_events(entity).schema, check_metadata=True)
    orders, inventory = parsed.events["order"], parsed.events["inventory"]
    assert lines_by(orders, "event_id") == {101: "o-1", 102: "r-1", 106: "o-2", 112: "o-3"}
    assert lines_by(orders, "event_type") == {101: "order", 102: "return", 106: "order", 112: "order"}
    assert lines_by(orders, "quantity") == {101: 2, 102: -1, 106: 2, 112: 7}
    assert lines_by(inventory, "event_id") == {103: "i-1", 105: "i-2"}
    assert lines_by(inventory, "event_type") == {103: "inventory_snapshot", 105: "inventory_adjustment"}
    assert lines_by(inventory, "reason") == {103: None, 105: "receipt"}
    assert set(orders["source_uri"].to_pylist() + inventory["source_uri"].to_pylist()) == {URI}


def test_parse_chunk_keeps_the_raw_line_as_payload(parsed, mixed_lines):
    for table in parsed.events.values():
        for line_no, payload in lines_by(table, "payload").items():
            assert payload == mixed_lines[line_no - 101].decode()


def test_parse_chunk_stores_utc_timestamps_and_utc_dates(parsed):
    orders = parsed.events["order"]
    assert lines_by(orders, "event_ts")[106] == dt.datetime(2025, 3, 2, 1, 30, tzinfo=dt.UTC)
    assert lines_by(orders, "event_date") == {101: D(2025, 3, 1), 102: D(2025, 3, 1), 106: D(2025, 3, 2),
                                              112: D(2025, 3, 1)}


def test_parse_chunk_dead_letters_every_bad_line_with_its_reason(parsed, mixed_lines, run_info):
    dead = parsed.dead_letters
    assert dead.schema.equals(tables.DEAD_LETTER.schema, check_metadata=True)
    assert lines_by(dead, "reason") == {104: "malformed_json", 107: "empty_line", 108: "negative_price",
                                        109: "invalid_quantity", 110: "future_timestamp", 111: "missing_field"}
    assert lines_by(dead, "stage") == {104: "parse", 107: "read", 108: "validate", 109: "validate",
                                       110: "validate", 111: "validate"}
    assert lines_by(dead, "event_id") == {104: None, 107: None, 108: "x-2", 109: "x-3", 110: "x-4", 111: None}
    assert lines_by(dead, "event_date") == {104: None, 107: None, 108: D(2025, 3, 1), 109: D(2025, 3, 1),
                                            110: None, 111: None}  # a future claimed date: no partition
    assert lines_by(dead, "payload") == {n: mixed_lines[n - 101].decode() for n in lines_by(dead, "payload")}
    assert lines_by(dead, "payload_bytes") == {n: len(mixed_lines[n - 101]) for n in lines_by(dead, "payload")}
    assert set(dead["payload_encoding"].to_pylist()) == {"utf-8"}
    assert set(dead["run_id"].to_pylist()) == {run_info.run_id}
    assert set(dead["failed_at"].to_pylist()) == {run_info.started_at}
    assert set(dead["source_uri"].to_pylist()) == {URI}
    assert all(dead["detail"].to_pylist())


def test_parse_chunk_accounts_for_every_line(parsed, mixed_lines):
    seen = [n for t in (*parsed.events.values(), parsed.dead_letters) for n in t["source_line"].to_pylist()]
    assert sorted(seen) == list(range(101, 101 + len(mixed_lines)))


def test_parse_chunk_gives_every_fault_kind_its_catalogue_reason(line, run_info, now):
    rng = np.random.default_rng(7)
    good = msgspec.json.decode(line())
    kinds_and_lines = faults.sample_bad_lines(rng, [good], 40, now=now)
    result = parse_chunk(LineChunk(URI, 1, [raw for _, raw in kinds_and_lines]), run_info)
    expected = {n: faults.FAULTS[kind].reason for n, (kind, _) in enumerate(kinds_and_lines, start=1)}
    enrich_stage = {n: r for n, r in expected.items() if r in {"unknown_store", "unknown_product"}}
    assert lines_by(result.dead_letters, "reason") == {n: r for n, r in expected.items() if n not in enrich_stage}
    assert sorted(result.events["order"]["source_line"].to_pylist()) == sorted(enrich_stage)


def test_valid_event_with_invalid_utf8_in_an_unknown_field_is_rejected(line, run_info):
    bad = line(event_id="u-1")[:-1] + b',"note":"caf\xe9"}'
    result = parse_chunk(LineChunk(URI, 1, [line(event_id="o-1"), bad, line(event_id="o-2")]), run_info)
    assert lines_by(result.events["order"], "event_id") == {1: "o-1", 3: "o-2"}
    dead = result.dead_letters
    assert lines_by(dead, "reason") == {2: "invalid_utf8"}
    assert lines_by(dead, "payload_encoding") == {2: "base64"}
    assert base64.b64decode(dead["payload"][0].as_py()) == bad


def test_chunk_whose_only_event_has_invalid_utf8_gives_no_bronze_table(line, run_info):
    bad = line()[:-1] + b',"note":"\xff"}'
    result = parse_chunk(LineChunk(URI, 1, [bad]), run_info)
    assert (result.events, result.dead_letters["reason"].to_pylist()) == ({}, ["invalid_utf8"])


def test_all_good_chunk_has_no_dead_letters_and_empty_chunk_has_nothing(line, run_info):
    good = parse_chunk(LineChunk(URI, 1, [line(event_id="a"), line(event_id="b")]), run_info)
    assert (list(good.events), good.dead_letters) == (["order"], None)
    empty = parse_chunk(LineChunk(URI, 1, []), run_info)
    assert (empty.events, empty.dead_letters) == ({}, None)


def test_parse_chunk_agrees_with_the_time_bounds_at_their_edges(line, run_info):
    lines = [line(event_id="a", event_ts="2025-06-02T00:00:00Z"), line(event_id="b", event_ts="1990-01-01T00:00:00Z"),
             line(event_id="c", event_ts="2025-06-02T00:00:00.000001Z"),
             line(event_id="d", event_ts="1989-12-31T23:59:59.999999Z")]
    result = parse_chunk(LineChunk(URI, 1, lines), run_info)
    assert lines_by(result.events["order"], "event_id") == {1: "a", 2: "b"}
    assert lines_by(result.dead_letters, "reason") == {3: "future_timestamp", 4: "invalid_timestamp"}


def test_event_times_reach_arrow_exactly_whatever_their_offset():
    zones = [dt.timezone(dt.timedelta(minutes=m)) for m in (-23 * 60 - 59, -90, 0, 1, 330, 14 * 60)]
    times = [dt.datetime(y, 2, 28, 23, 59, 59, us, tzinfo=z) for y in (1, 1990, 2024, 9999) for us in (0, 1, 999_999)
             for z in zones] + [None]
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    micros = [(t - epoch) // dt.timedelta(microseconds=1) if t else None for t in times]
    arrow = to_arrow(times, tables.TIMESTAMP)
    assert arrow.type == tables.TIMESTAMP and arrow.cast(pa.int64()).to_pylist() == micros


@pytest.mark.parametrize(("ts", "reason"), [("9999-12-31T23:59:59-01:00", "future_timestamp"),
                                            ("0001-01-01T00:00:00+00:01", "invalid_timestamp")])
def test_timestamps_at_the_edge_of_datetime_are_dead_letters_not_crashes(ts, reason, line, run_info):
    result = parse_chunk(LineChunk(URI, 1, [line(event_ts=ts)]), run_info)
    assert lines_by(result.dead_letters, "reason") == {1: reason}


# ---- first_copies ---------------------------------------------------------------------------
COPIES = [  # (event_id, source_uri, source_line); the first copy per id in source order is marked True
    ("a", "file:///b.jsonl", 1, False),
    ("a", "file:///a.jsonl", 9, True),
    ("b", "file:///a.jsonl", 5, True),
    ("a", "file:///a.jsonl", 10, False),
    ("c", "file:///c.jsonl", 2, True),
    ("b", "file:///a.jsonl", 7, False),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(COPIES))))[::37])
def test_first_copy_in_source_order_wins_whatever_the_row_order(order):
    rows = [COPIES[i] for i in order]
    table = pa.table({"event_id": [r[0] for r in rows], "source_uri": [r[1] for r in rows],
                      "source_line": pa.array([r[2] for r in rows], pa.int64())})
    mask = first_copies(table, "event_id", ["source_uri", "source_line"])
    assert mask.tolist() == [r[3] for r in rows]


def test_first_copies_of_tables_without_copies_keep_every_row():
    table = pa.table({"event_id": ["a", "b"], "source_uri": ["u", "u"], "source_line": [2, 1]})
    assert first_copies(table, "event_id", ["source_uri", "source_line"]).tolist() == [True, True]
    for rows in (table.slice(0, 0), table.slice(0, 1)):
        assert first_copies(rows, "event_id", ["source_uri"]).tolist() == [True] * rows.num_rows


def test_first_copies_on_a_multi_chunk_table():
    part = pa.table({"event_id": ["a", "b"], "source_uri": ["u", "u"], "source_line": [3, 4]})
    earlier = pa.table({"event_id": ["b", "a"], "source_uri": ["u", "u"], "source_line": [1, 2]})
    table = pa.concat_tables([part, earlier])
    assert first_copies(table, "event_id", ["source_uri", "source_line"]).tolist() == [False, False, True, True]


# ---- enrich ------------------------------------------------------------------------------------
@pytest.fixture
def bronze_orders(line, run_info) -> pa.Table:
    lines = [
        line(event_id="ok-1"),                                                  # S001 / P0001
        line("return", event_id="ok-2", store_id="S002", product_id="P0002"),
        line(event_id="no-store", store_id="S999"),
        line(event_id="no-product", product_id="P9999", event_ts="2025-03-01T23:30:00-02:00"),
        line(event_id="no-both", store_id="S999", product_id="P9999"),
    ]
    return parse_chunk(LineChunk(URI, 1, lines), run_info).events["order"]


def test_enrich_adds_dimension_attributes_with_the_silver_schema(bronze_orders, dims, run_info):
    silver, _ = enrich(bronze_orders, "order", dims, run_info)
    assert silver.schema.equals(tables.silver_events("order").schema, check_metadata=True)
    rows = {r["event_id"]: r for r in silver.to_pylist()}
    assert set(rows) == {"ok-1", "ok-2"}
    attrs = ("product_name", "category", "store_name", "country_code", "source_line", "quantity")
    assert tuple(rows["ok-1"][a] for a in attrs) == ("Mug", "Kitchen", "London", "GB", 1, 2)
    assert tuple(rows["ok-2"][a] for a in attrs) == ("Lamp", "Home", "Web", None, 2, -1)
    assert rows["ok-1"]["event_date"] == D(2025, 3, 1)


def test_enrich_dead_letters_unknown_stores_and_products(bronze_orders, dims, run_info, line):
    _, dead = enrich(bronze_orders, "order", dims, run_info)
    assert dead.schema.equals(tables.DEAD_LETTER.schema, check_metadata=True)
    assert lines_by(dead, "reason") == {3: "unknown_store", 4: "unknown_product", 5: "unknown_store"}
    assert lines_by(dead, "event_id") == {3: "no-store", 4: "no-product", 5: "no-both"}
    assert lines_by(dead, "event_date") == {3: D(2025, 3, 1), 4: D(2025, 3, 2), 5: D(2025, 3, 1)}
    assert set(dead["stage"].to_pylist()) == {"enrich"}
    assert set(dead["event_type"].to_pylist()) == {"order"}
    assert lines_by(dead, "payload")[3] == line(event_id="no-store", store_id="S999").decode()
    assert "S999" in lines_by(dead, "detail")[3] and "P9999" in lines_by(dead, "detail")[4]


def test_enrich_with_every_key_known_has_no_dead_letters(line, dims, run_info):
    lines = [line("inventory_snapshot", event_id="i-1"), line("inventory_adjustment", event_id="i-2", store_id="S002")]
    bronze = parse_chunk(LineChunk(URI, 1, lines), run_info).events["inventory"]
    silver, dead = enrich(bronze, "inventory", dims, run_info)
    assert dead is None
    assert silver.schema.equals(tables.silver_events("inventory").schema, check_metadata=True)
    assert lines_by(silver, "store_name") == {1: "London", 2: "Web"}


def test_a_repeated_dimension_key_never_multiplies_events(bronze_orders, run_info):
    products = [contract.Product(product_id="P0001", product_name=name, category="Kitchen", base_price=4.99,
                                 currency="GBP") for name in ("Mug", "Mug v2")]
    stores = [contract.Store(store_id="S001", store_name="London", channel="store", country_code="GB")]
    try:
        dims = Dimensions.from_records(products, stores)
    except ValueError:
        return  # refusing a repeated key up front is a fix as well
    silver, _ = enrich(bronze_orders.filter(pc.equal(bronze_orders["event_id"], "ok-1")), "order", dims,
                       run_info)
    assert silver["event_id"].to_pylist() == ["ok-1"]


# ---- split_by, utc_dates, payload_text ---------------------------------------------------------
def test_split_by_dates_including_null():
    table = pa.table({"event_date": pa.array([D(2025, 1, 2), None, D(2025, 1, 1), None, D(2025, 1, 2)], pa.date32()),
                      "row": [1, 2, 3, 4, 5]})
    parts = split_by(table, "event_date")
    assert [(key, part["row"].to_pylist()) for key, part in parts] == [
        ("2025-01-01", [3]), ("2025-01-02", [1, 5]), (None, [2, 4])]
    assert all(part.schema == table.schema for _, part in parts)


def test_split_by_with_one_value_empty_table_and_strings():
    nulls = pa.table({"d": pa.array([None, None], pa.date32())})
    assert [(k, p.num_rows) for k, p in split_by(nulls, "d")] == [(None, 2)]
    assert split_by(nulls.slice(0, 0), "d") == []
    uris = pa.table({"u": ["b", "a", "b"]})
    assert [(k, p.num_rows) for k, p in split_by(uris, "u")] == [("a", 1), ("b", 2)]


def test_split_by_parts_do_not_pickle_the_parent_buffers():
    n, parts = 100_000, 100
    rng = np.random.default_rng(0)
    days = rng.permutation(np.repeat(np.arange(parts, dtype="int32"), n // parts))
    table = pa.table({"event_date": pa.array(days, pa.int32()).cast(pa.date32()),
                      "payload": pa.array([f"event-{i:08d}-" * 4 for i in range(n)])})
    split = split_by(table, "event_date")
    whole = len(pickle.dumps(table))
    assert len(split) == parts and sum(p.num_rows for _, p in split) == n
    assert max(len(pickle.dumps(p)) for _, p in split) < 3 * whole / parts


def test_utc_dates_floor_to_the_utc_day_also_before_1970():
    ts = pa.array([dt.datetime(1969, 12, 31, 23, 59, 59, 999999), dt.datetime(1970, 1, 1),
                   dt.datetime(2025, 3, 1, 23, 59, 59, 999999), dt.datetime(2025, 3, 2)], tables.TIMESTAMP)
    assert utc_dates(ts).to_pylist() == [D(1969, 12, 31), D(1970, 1, 1), D(2025, 3, 1), D(2025, 3, 2)]


@pytest.mark.parametrize(("raw", "encoding"), [
    (b'{"a": 1}', "utf-8"),
    ("caf\u00e9 \u20ac \U0001f600".encode(), "utf-8"),
    (b"", "utf-8"),
    (b'{"a": "caf\xe9"}', "base64"),
    (bytes(range(256)), "base64"),
])
def test_payload_text_round_trips(raw, encoding):
    text, got = payload_text(raw)
    assert got == encoding
    assert (text.encode() if encoding == "utf-8" else base64.b64decode(text)) == raw


def test_dimensions_hold_contract_columns_only(dims):
    assert dims.products.column_names == list(contract.Product.__struct_fields__)
    assert dims.stores.column_names == list(contract.Store.__struct_fields__)
