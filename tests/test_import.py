"""Tests for `pipelines.importers`: the Online Retail II preset on a real slice, and the generic format.

Run: `.venv/bin/python -m pytest tests/test_import.py -q`
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import lzma
import random
from collections import Counter
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from pipelines import contract, importers, landing, parsing

FIXTURE = Path(__file__).parent / "fixtures" / "online_retail_ii_sample.csv"
DECODER = msgspec.json.Decoder(contract.Event)
LIMITS = parsing.Limits(now=dt.datetime(2030, 1, 1, tzinfo=dt.UTC))


def read_events(out: Path) -> list[tuple[str, bytes]]:
    """(file name, line) for every event line, files in name order (the importer's time order)."""
    return [
        (path.name, line)
        for path in sorted((out / landing.EVENTS_DIR).glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def read_dims(out: Path, name: str) -> list:
    path = out / landing.DIMS_DIR / f"{name}.jsonl"
    return [row for row, _ in landing.decode_dimension(path.read_bytes(), name, str(path))]


def fixture_rows() -> list[dict[str, str]]:
    with open(FIXTURE, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


@pytest.fixture(scope="module")
def retail(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("oretail")
    manifest = importers.import_orders(FIXTURE, out, format="online-retail")
    return out, manifest


@pytest.fixture(scope="module")
def decoded(retail: tuple[Path, dict]) -> list[tuple[bytes, contract.Event | parsing.Rejection]]:
    out, _ = retail
    return [(line, parsing.parse_line(line, LIMITS)) for _, line in read_events(out)]


def by_order_line(decoded: list) -> dict[tuple[str, str], list[contract.Event]]:
    found: dict[tuple[str, str], list] = {}
    for _, event in decoded:
        if not isinstance(event, parsing.Rejection):
            found.setdefault((getattr(event, "order_id", None), event.product_id), []).append(event)
    return found


# ---- online-retail -----------------------------------------------------------------------------------
def test_every_row_is_written_and_valid_rows_decode_exactly(retail, decoded) -> None:
    _, manifest = retail
    assert manifest["rows_read"] == len(fixture_rows()) == manifest["events_written"] == len(decoded)
    for line, event in decoded:
        if not isinstance(event, parsing.Rejection):
            assert landing.encode(event) == line  # byte for byte what landing.encode writes
    rejected = Counter(e.reason for _, e in decoded if isinstance(e, parsing.Rejection))
    # the five negative-price bad-debt lines and the one cancellation with a positive quantity
    assert rejected == {"negative_price": 5, "invalid_quantity": 1}
    assert manifest["contract_check"] == {
        "valid": len(decoded) - 6,
        "invalid": 6,
        "invalid_by_reason": {"invalid_quantity": 1, "negative_price": 5},
    }
    assert sum(manifest["files"].values()) == len(decoded)


def test_counts_by_type_match_a_pyarrow_computation(retail) -> None:
    _, manifest = retail
    table = pacsv.read_csv(
        FIXTURE, convert_options=pacsv.ConvertOptions(column_types={"Customer ID": pa.string()})
    )
    invoice, qty, price = table["Invoice"], table["Quantity"], table["Price"]
    cancel = pc.starts_with(invoice, "C")
    numeric = pc.utf8_is_digit(invoice)
    no_customer = pc.equal(table["Customer ID"], "")
    write_off = pc.and_(numeric, pc.less(qty, 0))
    correction = pc.and_(pc.and_(numeric, pc.greater(qty, 0)), pc.and_(pc.equal(price, 0), no_customer))
    n_adjust = pc.sum(pc.or_(write_off, correction)).as_py()
    n_return = pc.sum(cancel).as_py()
    assert manifest["events_by_type"] == {
        "order": table.num_rows - n_adjust - n_return,
        "return": n_return,
        "inventory_adjustment": n_adjust,
    }
    assert manifest["notes"]["write_offs"] == pc.sum(write_off).as_py()
    assert manifest["notes"]["bad_debt_adjustments"] == 6


def test_cancellation_is_a_return_with_negative_quantity(decoded) -> None:
    lines = by_order_line(decoded)
    returns = [e for events in lines.values() for e in events if isinstance(e, contract.ReturnEvent)]
    assert returns and all(e.quantity < 0 and e.order_id.startswith("C") for e in returns)
    rows = [r for r in fixture_rows() if r["Invoice"].startswith("C") and int(r["Quantity"]) < 0]
    row = rows[0]
    (event,) = {
        landing.encode(e): e for e in lines[(row["Invoice"], row["StockCode"].strip().upper())]
    }.values()
    assert event.quantity == int(row["Quantity"]) and event.unit_price == float(row["Price"])
    assert event.channel == "online" and event.currency == "GBP"


def test_write_off_and_count_correction_are_inventory_adjustments(decoded) -> None:
    adjustments = [e for _, e in decoded if isinstance(e, contract.InventoryAdjustment)]
    reasons = Counter(e.reason for e in adjustments)
    assert set(reasons) == {"write_off", "count_correction"}
    assert all(e.quantity < 0 for e in adjustments if e.reason == "write_off")
    assert all(e.quantity > 0 for e in adjustments if e.reason == "count_correction")
    orders = [e for _, e in decoded if isinstance(e, contract.OrderEvent)]
    # price-0 lines of a known customer stay orders; none without a customer does
    assert all(e.customer_id is not None for e in orders if e.unit_price == 0)


def test_bad_debt_adjustments_reach_the_validator(decoded) -> None:
    bad_debt = [(line, e) for line, e in decoded if b'"order_id":"A' in line]
    assert len(bad_debt) == 6
    reasons = Counter(e.reason if isinstance(e, parsing.Rejection) else "valid" for _, e in bad_debt)
    assert reasons == {"negative_price": 5, "valid": 1}


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        ("6/1/2010 11:38", "2010-06-01T10:38:00Z"),  # summer: BST = UTC+1
        ("3/26/2010 10:02", "2010-03-26T10:02:00Z"),  # Friday before the change: GMT = UTC
        ("3/28/2010 10:35", "2010-03-28T09:35:00Z"),  # Sunday the clocks went forward (01:00 UTC)
        ("10/29/2010 10:18", "2010-10-29T09:18:00Z"),  # Friday before they went back: still BST
        ("10/31/2010 10:12", "2010-10-31T10:12:00Z"),  # Sunday they went back: GMT again
        ("3/25/2011 10:08", "2011-03-25T10:08:00Z"),
        ("3/27/2011 10:18", "2011-03-27T09:18:00Z"),
        ("12/1/2009 9:55", "2009-12-01T09:55:00Z"),  # winter, no zero padding
    ],
)
def test_uk_local_time_is_converted_to_utc_across_dst(decoded, local: str, expected: str) -> None:
    rows = [r for r in fixture_rows() if r["InvoiceDate"] == local]
    assert rows, f"fixture has no line at {local}"
    lines = by_order_line(decoded)
    events = [e for r in rows for e in lines.get((r["Invoice"], r["StockCode"].strip().upper()), [])]
    assert events and {e.event_ts for e in events} == {utc(expected)}


def test_timestamps_are_parsed_strictly() -> None:
    texts = ["12/1/2009 7:45", "01/02/2010 07:05", "2/30/2010 10:00", "13/1/2010 10:00", "", "1/1/10 7:05"]
    parsed, _ = importers.parse_timestamps(pa.array(texts), importers.ONLINE_RETAIL_TS_FORMAT, "UTC")
    epoch = dt.datetime(1970, 1, 1)
    us = dt.timedelta(microseconds=1)
    assert parsed.to_pylist() == [
        (dt.datetime(2009, 12, 1, 7, 45) - epoch) // us,
        (dt.datetime(2010, 1, 2, 7, 5) - epoch) // us,
        None,  # 30 February is not rolled over to 2 March
        None,
        None,
        None,
    ]


def test_events_are_in_time_order_one_file_per_month(retail) -> None:
    out, manifest = retail
    previous = None
    for name, line in read_events(out):
        ts = utc(msgspec.json.decode(line)["event_ts"])
        assert name == f"oretail-{ts:%Y-%m}.jsonl"
        assert previous is None or previous <= ts
        previous = ts
    assert manifest["date_range"]["first_event_ts"] == "2009-12-01T09:55:00Z"


def test_identical_rows_share_an_event_id(retail) -> None:
    out, manifest = retail
    raw = FIXTURE.read_text(encoding="utf-8").splitlines()[1:]
    copies = Counter(raw)
    ids = Counter(msgspec.json.decode(line)["event_id"] for _, line in read_events(out))
    assert manifest["duplicates_expected"] == len(raw) - len(copies) == len(raw) - len(ids) > 0
    assert sorted(copies.values()) == sorted(ids.values())
    # the overlap of the two workbook sheets: invoice 536559 of 2010-12-01 is in the file twice, and
    # repeats one line itself
    december = [
        msgspec.json.decode(line) for name, line in read_events(out) if name.endswith("2010-12.jsonl")
    ]
    assert sorted(Counter(e["event_id"] for e in december).values()) == [2] * 7 + [4]
    row = "489444,POST,POSTAGE,1,12/1/2009 9:55,141.0,12636.0,USA"
    expected = "oretail-" + hashlib.blake2b(row.replace(",", "\x1f").encode(), digest_size=10).hexdigest()
    assert expected in ids


def test_dimensions(retail) -> None:
    out, manifest = retail
    products = read_dims(out, "products")
    stores = read_dims(out, "stores")
    codes = {r["StockCode"].strip().upper() for r in fixture_rows()}
    assert [p.product_id for p in products] == sorted(codes)
    assert len(products) == manifest["products"]
    by_id = {p.product_id: p for p in products}
    assert by_id["POST"].category == "non_merchandise" and by_id["85123A"].category == "merchandise"
    assert by_id["B"].product_name == "Adjust bad debt" and by_id["POST"].product_name == "POSTAGE"
    assert all(p.currency == "GBP" and p.base_price >= 0 for p in products)
    assert {s.store_id for s in stores} == {importers.slug(r["Country"]) for r in fixture_rows()}
    uk = next(s for s in stores if s.store_id == "united-kingdom")
    assert (uk.country_code, uk.timezone, uk.channel, uk.store_name) == (
        "GB", "Europe/London", "online", "Online - United Kingdom",
    )  # fmt: skip
    assert next(s for s in stores if s.store_id == "eire").country_code == "IE"


def test_names_are_chosen_deterministically() -> None:
    product = pa.array(["X", "X", "X", "X", "Y", "Y", "Z"])
    name = pa.array(["damaged", "damaged", "RED MUG", "RED  MUG", "B", "A", "?"])
    price = pa.array([0.0, 0.0, 1.5, 1.5, 2.0, 2.0, 0.0])
    # a priced name beats a more frequent unpriced one; ties -> alphabetically first
    assert importers._most_frequent_names(product, name, price) == {"X": "RED  MUG", "Y": "A", "Z": "?"}


def test_result_does_not_depend_on_row_order(tmp_path: Path, retail) -> None:
    out, _ = retail
    lines = FIXTURE.read_text(encoding="utf-8").splitlines(keepends=True)
    body = lines[1:]
    random.Random(7).shuffle(body)
    shuffled = tmp_path / "shuffled.csv"
    shuffled.write_text(lines[0] + "".join(body), encoding="utf-8")
    importers.import_orders(shuffled, tmp_path / "out", format="online-retail")
    for name in ("dims/products.jsonl", "dims/stores.jsonl"):
        assert (tmp_path / "out" / name).read_bytes() == (out / name).read_bytes()
    assert Counter(line for _, line in read_events(tmp_path / "out")) == Counter(
        line for _, line in read_events(out)
    )


def test_two_runs_write_identical_files(tmp_path: Path) -> None:
    for run in ("a", "b"):
        importers.import_orders(FIXTURE, tmp_path / run, format="online-retail")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and files == sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel


@pytest.mark.parametrize("suffix", [".csv.gz", ".csv.xz"])
def test_compressed_input(tmp_path: Path, retail, suffix: str) -> None:
    out, _ = retail
    opener = gzip.open if suffix.endswith(".gz") else lzma.open
    source = tmp_path / f"sample{suffix}"
    with opener(source, "wb") as f:
        f.write(FIXTURE.read_bytes())
    manifest = importers.import_orders(source, tmp_path / "out", format="online-retail")
    assert manifest["events_written"] == 2423
    assert read_events(tmp_path / "out") == read_events(out)


def test_date_range_and_stale_files(tmp_path: Path) -> None:
    importers.import_orders(FIXTURE, tmp_path, format="online-retail")
    manifest = importers.import_orders(
        FIXTURE, tmp_path, format="online-retail", start=dt.date(2010, 3, 1), end=dt.date(2010, 6, 30)
    )
    assert set(manifest["files"]) == {
        "events/oretail-2010-03.jsonl", "events/oretail-2010-04.jsonl", "events/oretail-2010-06.jsonl",
    }  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "events").iterdir()) == sorted(
        Path(f).name for f in manifest["files"]
    )
    assert "oretail-2009-12.jsonl" in manifest["replaced_files"]
    assert manifest["rows_outside_range"] == manifest["rows_read"] - manifest["events_written"] > 0
    assert (tmp_path / "manifest.json").exists()


def test_progress_is_reported(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    importers.import_orders(FIXTURE, tmp_path, format="online-retail", progress=lambda *a: seen.append(a))
    stages = [s for s, _, _ in seen]
    assert stages[0] == "read" and stages[-1] == "done" and "write" in stages
    assert seen[-1] == ("done", 2423, 2423)


def test_wrong_header_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "x.csv"
    source.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not an Online Retail II export"):
        importers.import_orders(source, tmp_path / "out", format="online-retail")


def test_header_only_file(tmp_path: Path) -> None:
    source = tmp_path / "empty.csv.gz"
    with gzip.open(source, "wb") as f:
        f.write(FIXTURE.read_bytes().splitlines(keepends=True)[0])
    manifest = importers.import_orders(source, tmp_path / "out", format="online-retail")
    assert (manifest["rows_read"], manifest["events_written"], manifest["files"]) == (0, 0, {})
    assert (tmp_path / "out" / "dims" / "products.jsonl").read_bytes() == b""


def test_bad_bytes_and_malformed_lines_do_not_abort(tmp_path: Path) -> None:
    lines = FIXTURE.read_bytes().splitlines(keepends=True)[:4]
    source = tmp_path / "bad.csv"
    source.write_bytes(b"".join(lines) + b"489999,85123A,BAD \xff BYTE,1,12/2/2009 9:00,1.0,,France\n1,2,3\n")
    manifest = importers.import_orders(source, tmp_path / "out", format="online-retail")
    assert manifest["events_written"] == 4
    assert manifest["skipped"]["malformed_csv_row"] == 1
    assert manifest["skipped"]["examples"][0]["text"] == "1,2,3"
    assert manifest["notes"]["invalid_utf8_cells_replaced"] == 1


# ---- generic -------------------------------------------------------------------------------------------
GENERIC_CSV = """created,sku,shop,qty,price,ref,buyer,title
2024-03-31 01:30,A1,berlin,2,9.99,o1,c1,Widget
2024-03-31 03:30,A1,berlin,-1,9.99,o2,,Widget
2024-03-31 02:30,A1,berlin,1,9.99,o3,c1,Widget
2024-07-01T12:00:00+02:00,B2,munich,1,5,o4,c2,Gadget
2024-10-27 02:30,B2,munich,3,5.5,o5,,Gadget big
garbage,B2,munich,abc,-1,o6,c3,Gadget
2024-11-01 09:00,B2,munich,0,5,o7,c3,Gadget
"""
MAPPING = {
    "event_ts": "created", "product_id": "sku", "store_id": "shop", "quantity": "qty",
    "unit_price": "price", "order_id": "ref", "customer_id": "buyer", "product_name": "title",
}  # fmt: skip
DEFAULTS = {"currency": "EUR", "channel": "store", "country_code": "DE"}


def run_generic(tmp_path: Path, text: str = GENERIC_CSV, **kwargs) -> tuple[dict, list[dict]]:
    source = tmp_path / "shop.csv"
    source.write_text(text)
    options = {"mapping": MAPPING, "defaults": DEFAULTS, "timezone": "Europe/Berlin"} | kwargs
    manifest = importers.import_orders(source, tmp_path / "out", format="generic", **options)
    return manifest, [msgspec.json.decode(line) for _, line in read_events(tmp_path / "out")]


def test_generic_mapping_timezone_and_bad_cells(tmp_path: Path) -> None:
    manifest, events = run_generic(tmp_path)
    by_order = {e["order_id"]: e for e in events}
    assert by_order["o1"]["event_ts"] == "2024-03-31T00:30:00Z"  # CET, before the change
    assert by_order["o2"]["event_ts"] == "2024-03-31T01:30:00Z"  # CEST, after it
    assert by_order["o3"]["event_ts"] == "2024-03-31T01:30:00Z"  # in the gap: shifted forward
    assert by_order["o4"]["event_ts"] == "2024-07-01T10:00:00Z"  # explicit offset wins
    assert by_order["o5"]["event_ts"] == "2024-10-27T00:30:00Z"  # ambiguous: first (CEST) reading
    assert by_order["o2"]["event_type"] == "return" and by_order["o2"]["quantity"] == -1
    assert by_order["o2"]["customer_id"] is None and by_order["o1"]["customer_id"] == "c1"
    assert by_order["o1"]["currency"] == "EUR" and by_order["o1"]["channel"] == "store"
    # bad cells are passed through and rejected by the validator, never dropped
    assert by_order["o6"]["event_ts"] == "garbage" and by_order["o6"]["quantity"] == "abc"
    reasons = Counter(
        r.reason
        for r in (parsing.parse_line(msgspec.json.encode(e), LIMITS) for e in events)
        if isinstance(r, parsing.Rejection)
    )
    assert reasons == {"invalid_timestamp": 1, "invalid_quantity": 1}
    assert manifest["files"]["events/orders-undated.jsonl"] == 1
    assert manifest["events_by_type"] == {"order": 6, "return": 1, "inventory_adjustment": 0}
    assert manifest["notes"]["ambiguous_local_time"] == 1
    assert manifest["notes"]["nonexistent_local_time_shifted"] == 1
    products = read_dims(tmp_path / "out", "products")
    assert [(p.product_id, p.product_name, p.category, p.currency) for p in products] == [
        ("A1", "Widget", "uncategorised", "EUR"),
        ("B2", "Gadget", "uncategorised", "EUR"),
    ]
    stores = read_dims(tmp_path / "out", "stores")
    assert [(s.store_id, s.channel, s.country_code, s.timezone) for s in stores] == [
        ("berlin", "store", "DE", "Europe/Berlin"),
        ("munich", "store", "DE", "Europe/Berlin"),
    ]


def test_generic_ts_format_and_columns_named_like_fields(tmp_path: Path) -> None:
    text = "event_ts,store_id,product_id,quantity,unit_price\n01.02.2024 13:05,s1,p1,4,2.50\n"
    _, events = run_generic(
        tmp_path, text, mapping=None, defaults={"currency": "USD", "channel": "online"},
        ts_format="%d.%m.%Y %H:%M", timezone="America/New_York",
    )  # fmt: skip
    assert events[0]["event_ts"] == "2024-02-01T18:05:00Z" and events[0]["unit_price"] == 2.5
    assert DECODER.decode(msgspec.json.encode(events[0])).quantity == 4


@pytest.mark.parametrize(
    ("mapping", "defaults", "message"),
    [
        ({**MAPPING, "product_id": "article"}, DEFAULTS, "product_id='article' names a column that is not"),
        ({k: v for k, v in MAPPING.items() if k != "store_id"}, DEFAULTS, "store_id have neither a column"),
        (MAPPING, {"channel": "store"}, "currency have neither a column"),
        ({**MAPPING, "colour": "sku"}, DEFAULTS, "unknown field"),
    ],
)
def test_generic_mapping_errors(tmp_path: Path, mapping: dict, defaults: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run_generic(tmp_path, mapping=mapping, defaults=defaults)


def test_unknown_time_zone(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        run_generic(tmp_path, timezone="Mars/Olympus")
