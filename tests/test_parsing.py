"""The contract validator `pipelines.parsing.parse_line`: every bad line gets the right dead-letter reason.

Covers the fault catalogue (`pipelines.faults.FAULTS`, except the enrich-stage kinds), hand-written bad
lines (syntax, types, ranges, clock, size, encoding), valid events of every type, the identifying fields
a rejection keeps, and hypothesis fuzzing: arbitrary bytes and JSON objects never raise, valid events
round-trip through msgspec encoding, and the chunk validator (`parse_chunk`, whose hot path skips the
contract's string patterns) says of every line what `parse_line` says. The clock is fixed (conftest.NOW);
nothing here touches the network.

    .venv/bin/python -m pytest tests/test_parsing.py
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines import contract, faults
from pipelines.batches import LineChunk, RunInfo, parse_chunk
from pipelines.parsing import Limits, Rejection, parse_line

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
#: Kinds whose line is a valid event: only the enrichment (dimension lookup) can reject them.
ENRICH_STAGE_KINDS = {"unknown_store", "unknown_product"}
EVENT_CLASSES = contract.Event.__args__
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

encode = msgspec.json.encode


def with_raw(obj: dict[str, Any], field: str, token: bytes) -> bytes:
    """`obj` as JSON with `field` set to a raw token no JSON encoder would write (NaN, 1e999, bad bytes)."""
    placeholder = "\x00__raw__\x00"
    return encode({**obj, field: placeholder}).replace(encode(placeholder), token)


def without(obj: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != field}


def assert_rejected(result, reason: str) -> Rejection:
    assert isinstance(result, Rejection), f"expected {reason}, got {result!r}"
    assert (result.reason, bool(result.detail)) == (reason, True), result
    assert result.stage in contract.STAGES
    return result


# ---- the fault catalogue ---------------------------------------------------------------------
GOOD_ORDER = contract.OrderEvent(
    event_id="sim-1-0000000007", event_ts=dt.datetime(2025, 3, 1, 10, 30, tzinfo=dt.UTC), store_id="S001",
    product_id="P0001", quantity=2, unit_price=4.99, currency="GBP", channel="store", on_promo=True,
    discount_pct=0.2, customer_id="C0000042", order_id="o-3",
)


@pytest.mark.parametrize("kind", sorted(set(faults.FAULTS) - ENRICH_STAGE_KINDS))
def test_every_fault_kind_is_rejected_with_its_catalogue_reason(kind, limits):
    fault = faults.FAULTS[kind]
    rng = np.random.default_rng(sum(kind.encode()))
    good = faults.good_event_dict(GOOD_ORDER)
    for _ in range(2 if kind == "oversized" else 25):
        raw = fault.make(rng, good, NOW)
        assert_rejected(parse_line(raw, limits), fault.reason)


@pytest.mark.parametrize("kind", sorted(ENRICH_STAGE_KINDS))
def test_enrich_stage_fault_kinds_pass_the_validator(kind, limits):
    rng = np.random.default_rng(1)
    raw = faults.FAULTS[kind].make(rng, faults.good_event_dict(GOOD_ORDER), NOW)
    assert isinstance(parse_line(raw, limits), contract.OrderEvent)


# ---- hand-written bad lines ------------------------------------------------------------------
Builder = Callable[[Callable[..., dict[str, Any]]], bytes]
BAD_LINES: list[tuple[str, Builder, str]] = [
    ("not_json", lambda ev: b"this is not json", "malformed_json"),
    ("truncated_json", lambda ev: encode(ev())[:40], "malformed_json"),
    ("python_repr", lambda ev: repr(ev()).encode(), "malformed_json"),
    ("trailing_garbage", lambda ev: encode(ev()) + b" garbage", "malformed_json"),
    ("two_objects", lambda ev: encode(ev()) + encode(ev()), "malformed_json"),
    ("json_array", lambda ev: encode([ev()]), "not_an_object"),
    ("json_number", lambda ev: b"42", "not_an_object"),
    ("json_string", lambda ev: b'"order"', "not_an_object"),
    ("json_null", lambda ev: b"null", "not_an_object"),
    ("json_bool", lambda ev: b"true", "not_an_object"),
    ("missing_store_id", lambda ev: encode(without(ev(), "store_id")), "missing_field"),
    ("missing_event_id", lambda ev: encode(without(ev(), "event_id")), "missing_field"),
    ("missing_event_type", lambda ev: encode(without(ev(), "event_type")), "missing_field"),
    ("quantity_as_string", lambda ev: encode(ev(quantity="3")), "wrong_type"),
    ("quantity_as_float", lambda ev: encode(ev(quantity=2.5)), "wrong_type"),
    ("quantity_as_bool", lambda ev: encode(ev(quantity=True)), "wrong_type"),
    ("unit_price_as_string", lambda ev: encode(ev(unit_price="x")), "wrong_type"),
    ("on_promo_as_string", lambda ev: encode(ev(on_promo="yes")), "wrong_type"),
    ("store_id_as_number", lambda ev: encode(ev(store_id=1)), "wrong_type"),
    ("unit_price_nan", lambda ev: with_raw(ev(), "unit_price", b"NaN"), "non_finite_number"),
    ("unit_price_infinity", lambda ev: with_raw(ev(), "unit_price", b"Infinity"), "non_finite_number"),
    ("unit_price_minus_infinity", lambda ev: with_raw(ev(), "unit_price", b"-Infinity"), "non_finite_number"),
    ("unit_price_1e999", lambda ev: with_raw(ev(), "unit_price", b"1e999"), "non_finite_number"),
    ("quantity_1e999", lambda ev: with_raw(ev(), "quantity", b"1e999"), "non_finite_number"),
    ("zero_quantity_order", lambda ev: encode(ev(quantity=0)), "invalid_quantity"),
    ("negative_quantity_order", lambda ev: encode(ev(quantity=-5)), "invalid_quantity"),
    ("huge_quantity_order", lambda ev: encode(ev(quantity=contract.MAX_UNITS + 1)), "invalid_quantity"),
    ("return_with_positive_quantity", lambda ev: encode(ev("return", quantity=3)), "invalid_quantity"),
    ("return_with_zero_quantity", lambda ev: encode(ev("return", quantity=0)), "invalid_quantity"),
    ("negative_snapshot", lambda ev: encode(ev("inventory_snapshot", quantity=-1)), "invalid_quantity"),
    ("zero_adjustment", lambda ev: encode(ev("inventory_adjustment", quantity=0)), "invalid_quantity"),
    ("negative_price", lambda ev: encode(ev(unit_price=-0.01)), "negative_price"),
    ("negative_price_on_return", lambda ev: encode(ev("return", unit_price=-3.0)), "negative_price"),
    ("unparseable_timestamp", lambda ev: encode(ev(event_ts="yesterday")), "invalid_timestamp"),
    ("impossible_date", lambda ev: encode(ev(event_ts="2025-13-45T99:00:00Z")), "invalid_timestamp"),
    ("timestamp_without_offset", lambda ev: encode(ev(event_ts="2025-03-01T10:30:00")), "invalid_timestamp"),
    ("timestamp_as_number", lambda ev: encode(ev(event_ts=1740825000)), "invalid_timestamp"),
    ("timestamp_before_1990", lambda ev: encode(ev(event_ts="1989-12-31T23:59:59Z")), "invalid_timestamp"),
    ("before_1990_in_utc", lambda ev: encode(ev(event_ts="1990-01-01T00:30:00+01:00")), "invalid_timestamp"),
    ("far_future_timestamp", lambda ev: encode(ev(event_ts="2025-06-02T00:00:01Z")), "future_timestamp"),
    ("year_9999", lambda ev: encode(ev(event_ts="9999-12-31T23:59:59Z")), "future_timestamp"),
    ("unknown_event_type", lambda ev: encode(ev(event_type="refund_request")), "unknown_event_type"),
    ("bad_currency", lambda ev: encode(ev(currency="gbp")), "invalid_value"),
    ("bad_channel", lambda ev: encode(ev(channel="phone")), "invalid_value"),
    ("empty_event_id", lambda ev: encode(ev(event_id="")), "invalid_value"),
    ("discount_of_100_percent", lambda ev: encode(ev(discount_pct=1.0)), "invalid_value"),
    ("bad_adjustment_reason", lambda ev: encode(ev("inventory_adjustment", reason="theft")), "invalid_value"),
    ("oversized_payload", lambda ev: encode(ev(padding="x" * 1_000_000)), "oversized_payload"),
    ("invalid_utf8_in_a_string", lambda ev: with_raw(ev(), "store_id", b'"S0\xff\xfe1"'), "invalid_utf8"),
    ("invalid_utf8_outside_strings", lambda ev: b"{\xff" + encode(ev())[1:], "invalid_utf8"),
    ("invalid_utf8_after_the_object", lambda ev: encode(ev()) + b"\xc3", "invalid_utf8"),
    ("latin1_text", lambda ev: encode(ev(customer_id="Jos\u00e9")).replace(b"\xc3\xa9", b"\xe9"), "invalid_utf8"),
    ("empty_line", lambda ev: b"", "empty_line"),
    ("whitespace_line", lambda ev: b" \t  \r", "empty_line"),
]


@pytest.mark.parametrize(("builder", "reason"), [pytest.param(b, r, id=i) for i, b, r in BAD_LINES])
def test_bad_line_is_rejected_with_its_reason(builder, reason, event, limits):
    assert_rejected(parse_line(builder(event), limits), reason)


@pytest.mark.parametrize("field", ["event_id", "event_ts", "store_id", "product_id", "quantity", "unit_price",
                                   "currency", "channel"])
def test_missing_field_detail_names_the_field(field, event, limits):
    rejection = assert_rejected(parse_line(encode(without(event(), field)), limits), "missing_field")
    assert field in rejection.detail


def test_oversized_detail_gives_size_and_limit(event, limits):
    raw = encode(event(padding="x" * 1_000_000))
    rejection = assert_rejected(parse_line(raw, limits), "oversized_payload")
    assert (rejection.stage, f"{len(raw):,}" in rejection.detail, "1,000,000" in rejection.detail) == (
        "read", True, True)


def test_payload_of_exactly_the_limit_is_accepted(event, limits):
    body = encode(event(padding=""))
    raw = encode(event(padding="x" * (limits.max_payload_bytes - len(body))))
    assert len(raw) == limits.max_payload_bytes
    assert isinstance(parse_line(raw, limits), contract.OrderEvent)


def test_future_bound_is_now_plus_the_configured_skew(event):
    limits = Limits(now=NOW, max_future_skew=dt.timedelta(hours=1))
    assert isinstance(parse_line(encode(event(event_ts="2025-06-01T01:00:00Z")), limits), contract.OrderEvent)
    assert_rejected(parse_line(encode(event(event_ts="2025-06-01T01:00:00.000001Z")), limits), "future_timestamp")
    # the offset counts: 02:30+02:00 is 00:30Z, inside the bound
    assert isinstance(parse_line(encode(event(event_ts="2025-06-01T02:30:00+02:00")), limits), contract.OrderEvent)


def test_limits_refuse_a_naive_clock():
    with pytest.raises(ValueError, match="timezone-aware"):
        Limits(now=dt.datetime(2025, 6, 1))


# ---- identifying fields on a rejection -------------------------------------------------------
@pytest.mark.parametrize(("fields", "reason"), [
    ({"quantity": "3"}, "wrong_type"),
    ({"unit_price": -1.0}, "negative_price"),
    ({"quantity": 0}, "invalid_quantity"),
    ({"event_ts": "2030-01-01T00:00:00+02:00"}, "future_timestamp"),
    ({"event_type": "refund_request"}, "unknown_event_type"),
    ({"currency": "pounds"}, "invalid_value"),
    ({"store_id": None}, "wrong_type"),
])
def test_rejection_of_a_json_object_keeps_its_identifying_fields(fields, reason, event, limits):
    obj = event(event_id="id-42", **fields)
    rejection = assert_rejected(parse_line(encode(obj), limits), reason)
    assert (rejection.event_id, rejection.event_type) == ("id-42", obj["event_type"])
    assert rejection.event_ts == dt.datetime.fromisoformat(obj["event_ts"])


def test_rejection_keeps_what_it_can_read(event, limits):
    bad_ts = assert_rejected(parse_line(encode(event(event_ts="yesterday")), limits), "invalid_timestamp")
    assert (bad_ts.event_id, bad_ts.event_type, bad_ts.event_ts) == ("e-0001", "order", None)
    no_type = assert_rejected(parse_line(encode(without(event(), "event_type")), limits), "missing_field")
    assert (no_type.event_id, no_type.event_type) == ("e-0001", None)
    assert no_type.event_ts == dt.datetime(2025, 3, 1, 10, 30, tzinfo=dt.UTC)
    long_id = assert_rejected(parse_line(encode(event(event_id="x" * 500)), limits), "invalid_value")
    assert long_id.event_id == "x" * 128


@pytest.mark.parametrize("raw", [b"[]", b"42", b"not json", b"", b'{"event_id": "e-1",', b"\xff"])
def test_rejection_of_a_non_object_has_no_identifying_fields(raw, limits):
    rejection = parse_line(raw, limits)
    assert (rejection.event_id, rejection.event_type, rejection.event_ts) == (None, None, None)


def test_out_of_range_number_keeps_identifying_fields(event, limits):
    rejection = assert_rejected(parse_line(with_raw(event(), "quantity", b"1e999"), limits), "non_finite_number")
    assert (rejection.event_id, rejection.event_type) == ("e-0001", "order")


@pytest.mark.parametrize("value", [5, None])
def test_non_string_event_type_is_a_wrong_type(value, event, limits):
    assert_rejected(parse_line(encode(event(event_type=value)), limits), "wrong_type")


def test_invalid_utf8_in_an_unknown_field_is_rejected(event, limits):
    assert_rejected(parse_line(with_raw(event(), "note", b'"caf\xe9"'), limits), "invalid_utf8")


# ---- valid events ----------------------------------------------------------------------------
@pytest.mark.parametrize(("event_type", "cls"), [
    ("order", contract.OrderEvent),
    ("return", contract.ReturnEvent),
    ("inventory_snapshot", contract.InventorySnapshot),
    ("inventory_adjustment", contract.InventoryAdjustment),
])
def test_each_event_type_is_accepted(event_type, cls, event, limits):
    obj = event(event_type)
    parsed = parse_line(encode(obj), limits)
    assert type(parsed) is cls
    assert msgspec.to_builtins(parsed) == {**msgspec.to_builtins(parsed), **obj}


def test_order_with_every_optional_field(event, limits):
    obj = event(on_promo=True, discount_pct=0.25, customer_id="C1", order_id="O1", channel="online")
    parsed = parse_line(encode(obj), limits)
    assert (parsed.on_promo, parsed.discount_pct, parsed.customer_id, parsed.order_id, parsed.channel) == (
        True, 0.25, "C1", "O1", "online")


def test_optional_fields_default(event, limits):
    parsed = parse_line(encode(event()), limits)
    assert (parsed.on_promo, parsed.discount_pct, parsed.customer_id, parsed.order_id) == (False, 0.0, None, None)


@pytest.mark.parametrize(("text", "utc"), [
    ("2025-03-01T12:30:00+02:00", dt.datetime(2025, 3, 1, 10, 30, tzinfo=dt.UTC)),
    ("2025-03-01T23:30:00-02:00", dt.datetime(2025, 3, 2, 1, 30, tzinfo=dt.UTC)),
    ("2025-03-01T05:00:00+05:30", dt.datetime(2025, 2, 28, 23, 30, tzinfo=dt.UTC)),
    ("2025-03-01T10:30:00.123456Z", dt.datetime(2025, 3, 1, 10, 30, 0, 123456, tzinfo=dt.UTC)),
    ("1990-01-01T00:00:00Z", dt.datetime(1990, 1, 1, tzinfo=dt.UTC)),
    ("2025-06-02T00:00:00Z", NOW + dt.timedelta(hours=24)),
])
def test_timestamps_with_an_offset_are_the_same_utc_instant(text, utc, event, limits):
    parsed = parse_line(encode(event(event_ts=text)), limits)
    assert parsed.event_ts == utc
    assert parsed.event_ts.astimezone(dt.UTC).replace(tzinfo=None) == utc.replace(tzinfo=None)


def test_unknown_extra_fields_are_ignored(event, limits):
    extra = event(note="hi", nested={"a": [1, 2, {"b": None}]}, score=1.5, flags=[True, False])
    assert parse_line(encode(extra), limits) == parse_line(encode(event()), limits)


def test_surrounding_whitespace_and_carriage_return_are_tolerated(event, limits):
    raw = encode(event())
    assert parse_line(b"  " + raw + b"\r", limits) == parse_line(raw, limits)


# ---- fuzzing -----------------------------------------------------------------------------------
FUZZ_LIMITS = Limits(now=NOW, max_payload_bytes=8_192)
VALID_LINE = encode({"event_type": "order", "event_id": "e-1", "event_ts": "2025-03-01T10:30:00Z",
                     "store_id": "S001", "product_id": "P0001", "quantity": 2, "unit_price": 4.99,
                     "currency": "GBP", "channel": "store"})


def assert_event_or_known_rejection(result) -> None:
    if isinstance(result, Rejection):
        assert result.reason in contract.REASONS
        assert result.stage in contract.STAGES
        assert result.detail
    else:
        assert type(result) in EVENT_CLASSES


@st.composite
def spliced_lines(draw) -> bytes:
    """A valid line with a few random bytes written over, inserted or cut: reaches the deeper checks."""
    raw = bytearray(VALID_LINE)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(raw)))
        cut = draw(st.integers(0, 4))
        raw[at:at + cut] = draw(st.binary(max_size=4))
    return bytes(raw)


@FUZZ
@given(st.binary(max_size=512) | st.binary(min_size=7_000, max_size=10_000) | spliced_lines())
def test_fuzz_arbitrary_bytes_never_raise(raw):
    raw = raw.replace(b"\n", b"")
    assert_event_or_known_rejection(parse_line(raw, FUZZ_LIMITS))


FIELD_NAMES = ["event_id", "event_type", "event_ts", "store_id", "product_id", "quantity", "unit_price", "currency",
               "channel", "on_promo", "discount_pct", "customer_id", "order_id", "reason"]
OFFSETS = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=14)), dt.timezone(-dt.timedelta(hours=23,
                                                                                                   minutes=59))])
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
    | st.sampled_from([*contract.EVENT_TYPES, "store", "online", "GBP", "write_off", ""])
    | st.datetimes(timezones=OFFSETS).map(dt.datetime.isoformat)
)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)
JSON_OBJECTS = (
    st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), JSON_VALUES, max_size=16)
    | st.builds(lambda base, changes: {**base, **changes}, st.sampled_from(
        [msgspec.json.decode(VALID_LINE), {**msgspec.json.decode(VALID_LINE), "event_type": "inventory_snapshot"}]),
        st.dictionaries(st.sampled_from(FIELD_NAMES), JSON_VALUES, max_size=3))
)


@FUZZ
@given(JSON_OBJECTS)
def test_fuzz_json_objects_never_raise_and_keep_their_ids(obj):
    result = parse_line(encode(obj), FUZZ_LIMITS)
    assert_event_or_known_rejection(result)
    if isinstance(result, Rejection) and result.reason != "oversized_payload":
        event_id = obj.get("event_id")
        assert result.event_id == (event_id[:128] if isinstance(event_id, str) else None)
    elif not isinstance(result, Rejection):
        assert (result.event_id, result.__struct_config__.tag) == (obj["event_id"], obj["event_type"])


IDS = st.text(min_size=1, max_size=64)
SHORT = st.none() | st.text(min_size=1, max_size=64)
TIMES = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2025, 5, 30),
    timezones=st.just(dt.UTC) | st.integers(-(23 * 60 + 59), 23 * 60 + 59).map(
        lambda m: dt.timezone(dt.timedelta(minutes=m))),
)
PRICES = st.floats(min_value=0, max_value=10_000_000, allow_nan=False)
COMMON = {"event_id": st.text(min_size=1, max_size=128), "event_ts": TIMES, "store_id": IDS, "product_id": IDS}
ORDER_LINE = {**COMMON, "unit_price": PRICES, "currency": st.from_regex(r"\A[A-Z]{3}\Z"),
              "channel": st.sampled_from(["store", "online"]), "on_promo": st.booleans(),
              "discount_pct": st.floats(min_value=0, max_value=1, exclude_max=True), "customer_id": SHORT,
              "order_id": SHORT}
ADJUSTMENT_REASONS = st.sampled_from([None, "receipt", "write_off", "shrinkage", "count_correction", "transfer"])
M = contract.MAX_UNITS
VALID_EVENTS = st.one_of(
    st.builds(contract.OrderEvent, quantity=st.integers(1, M), **ORDER_LINE),
    st.builds(contract.ReturnEvent, quantity=st.integers(-M, -1), **ORDER_LINE),
    st.builds(contract.InventorySnapshot, quantity=st.integers(0, 100 * M), reason=ADJUSTMENT_REASONS, **COMMON),
    st.builds(contract.InventoryAdjustment, quantity=st.integers(-100 * M, 100 * M).filter(bool),
              reason=ADJUSTMENT_REASONS, **COMMON),
)


@FUZZ
@given(VALID_EVENTS)
def test_fuzz_valid_events_round_trip(event):
    parsed = parse_line(encode(event), FUZZ_LIMITS)
    assert parsed == event
    assert type(parsed) is type(event)


def assert_chunk_agrees_with_parse_line(lines: list[bytes], limits: Limits) -> None:
    """parse_chunk's verdict on each line (event id and type, or reason and detail) is parse_line's."""
    lines = [raw.replace(b"\n", b"") for raw in lines]
    result = parse_chunk(LineChunk("file:///fuzz.jsonl", 1, lines), RunInfo("fuzz", limits.now, limits))
    said = {}
    for table in result.events.values():
        said.update({n: (i, t) for n, i, t in zip(*(table[c].to_pylist() for c in ("source_line", "event_id",
                                                                                   "event_type")))})
    if result.dead_letters is not None:
        dead = result.dead_letters
        said.update({n: (r, d) for n, r, d in zip(*(dead[c].to_pylist() for c in ("source_line", "reason", "detail")))})
    expected = {}
    for n, raw in enumerate(lines, start=1):
        verdict = parse_line(raw, limits)
        expected[n] = (verdict.reason, verdict.detail) if isinstance(verdict, Rejection) else (
            verdict.event_id, verdict.__struct_config__.tag)
    assert said == expected


def test_chunks_check_the_contract_patterns_as_parse_line_does():
    order = msgspec.json.decode(VALID_LINE)
    lines = [encode({**order, "currency": c}) for c in ("GBP", "gbp", "GB", "GBP\n", "EURO", "", "ÉUR", "USD")]
    future = {**order, "event_ts": "2030-01-01T00:00:00Z"}
    lines += [encode({**future, "currency": "gbp"}), encode({**future, "currency": "GBP"}),
              encode({**order, "currency": "gbp", "channel": "web"}), encode({**order, "currency": 7}),
              encode({**order, "event_type": "return", "quantity": -1, "currency": "eur"})]
    assert_chunk_agrees_with_parse_line(lines, FUZZ_LIMITS)


@FUZZ
@given(st.lists(JSON_OBJECTS.map(encode) | spliced_lines() | VALID_EVENTS.map(encode), max_size=8))
def test_fuzz_chunks_say_of_every_line_what_parse_line_says(lines):
    assert_chunk_agrees_with_parse_line(lines, FUZZ_LIMITS)
