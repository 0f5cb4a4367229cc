"""The catalogue of bad inputs: every kind is really broken, in the way its reason code says."""

from __future__ import annotations

import datetime as dt
import json

import msgspec
import numpy as np
import pytest

from pipelines import contract, faults

DECODER = msgspec.json.Decoder(contract.Event)
#: Kinds that are a valid event to msgspec; later checks (dimensions, clock, size) must catch them.
DECODABLE = {"unknown_store", "unknown_product", "future_timestamp", "oversized"}
REQUIRED_KINDS = {
    "not_json", "json_array", "json_scalar", "missing_field", "wrong_type", "nan", "infinity",
    "zero_quantity", "negative_quantity", "negative_price", "bad_timestamp", "future_timestamp",
    "unknown_event_type",
    "unknown_store", "unknown_product", "oversized", "invalid_utf8", "empty_line", "whitespace_line",
}
GOOD = faults.good_event_dict(contract.OrderEvent(
    event_id="sim-1-0000000007", event_ts=dt.datetime(2024, 3, 1, 10, 30, tzinfo=dt.UTC), store_id="S001",
    product_id="P0001", quantity=2, unit_price=4.99, currency="GBP", channel="store", on_promo=True,
    discount_pct=0.2, customer_id="C0000042", order_id="sim-1-o000000003",
))


def lines_of(kind: str, n: int = 40) -> list[bytes]:
    rng = np.random.default_rng(123)
    return [faults.FAULTS[kind].make(rng, GOOD) for _ in range(n)]


def test_the_catalogue_names_every_kind_with_a_contract_reason():
    assert set(faults.FAULTS) == REQUIRED_KINDS
    for kind, fault in faults.FAULTS.items():
        assert fault.kind == kind
        assert fault.reason in contract.REASONS
        assert fault.weight > 0


@pytest.mark.parametrize("kind", sorted(REQUIRED_KINDS))
def test_each_kind_is_one_line_that_only_passes_decoding_when_a_later_check_must_catch_it(kind):
    for line in lines_of(kind):
        assert b"\n" not in line and b"\r" not in line
        if kind in DECODABLE:
            event = DECODER.decode(line)
            assert event.event_id == GOOD["event_id"]
        else:
            with pytest.raises((msgspec.DecodeError, UnicodeDecodeError)):
                DECODER.decode(line)


def test_decodable_kinds_carry_their_marker():
    for line in lines_of("unknown_store"):
        assert DECODER.decode(line).store_id.startswith("S-UNKNOWN-")
    for line in lines_of("unknown_product"):
        assert DECODER.decode(line).product_id.startswith("P-UNKNOWN-")
    for line in lines_of("future_timestamp"):
        assert DECODER.decode(line).event_ts > dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    for line in lines_of("oversized", 2):
        assert len(line) > faults.OVERSIZED_BYTES


def test_future_timestamp_is_relative_to_now_when_given():
    now = dt.datetime(2030, 6, 1, tzinfo=dt.UTC)
    line = faults.FAULTS["future_timestamp"].make(np.random.default_rng(0), GOOD, now)
    assert now + dt.timedelta(days=30) <= DECODER.decode(line).event_ts <= now + dt.timedelta(days=400)


def test_each_kind_has_the_defect_its_reason_names():
    def obj(line: bytes) -> object:
        return json.loads(line)  # Python's json reads NaN/Infinity, so those can be inspected too

    assert all(not line.strip() for line in lines_of("empty_line") + lines_of("whitespace_line"))
    assert lines_of("empty_line", 1) == [b""]
    assert all(isinstance(obj(line), list) for line in lines_of("json_array"))
    assert all(not isinstance(obj(line), dict) for line in lines_of("json_scalar"))
    for line in lines_of("not_json"):
        with pytest.raises(ValueError):
            json.loads(line)
    for line in lines_of("missing_field"):
        assert set(GOOD) - set(obj(line))
    for line in lines_of("wrong_type"):
        assert isinstance(obj(line)["quantity"], str) or isinstance(obj(line)["unit_price"], str)
    assert all(np.isnan(obj(line)["unit_price"]) for line in lines_of("nan"))
    assert all(np.isinf(obj(line)["unit_price"]) for line in lines_of("infinity"))
    assert all(obj(line)["quantity"] == 0 for line in lines_of("zero_quantity"))
    assert all(obj(line)["quantity"] < 0 and obj(line)["event_type"] == "order"
               for line in lines_of("negative_quantity"))
    assert all(obj(line)["unit_price"] < 0 for line in lines_of("negative_price"))
    for line in lines_of("bad_timestamp"):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(json.dumps(obj(line)["event_ts"]).encode(), type=contract.EventTs)
    assert all(obj(line)["event_type"] not in contract.EVENT_TYPES for line in lines_of("unknown_event_type"))
    for line in lines_of("invalid_utf8"):
        with pytest.raises(UnicodeDecodeError):
            line.decode("utf-8")


def test_faults_are_only_made_from_orders():
    snapshot = {**GOOD, "event_type": "inventory_snapshot"}
    with pytest.raises(ValueError, match="order"):
        faults.FAULTS["nan"].make(np.random.default_rng(0), snapshot)


def test_draw_kinds_covers_every_kind_caps_oversized_and_is_seeded():
    kinds = faults.draw_kinds(np.random.default_rng(5), 500)
    assert len(kinds) == 500
    assert set(kinds) == set(faults.FAULTS)
    assert kinds.count("oversized") == 1
    assert kinds == faults.draw_kinds(np.random.default_rng(5), 500)
    few = faults.draw_kinds(np.random.default_rng(5), 5)
    assert len(few) == 5 and few.count("oversized") <= 1


def test_sample_bad_lines_gives_fresh_ids():
    pairs = faults.sample_bad_lines(np.random.default_rng(1), [GOOD], 60, id_prefix="x-")
    assert len(pairs) == 60
    assert {kind for kind, _ in pairs} == set(faults.FAULTS)
    assert all(GOOD["event_id"].encode() not in line for _, line in pairs)
    with pytest.raises(ValueError, match="order"):
        faults.sample_bad_lines(np.random.default_rng(1), [{**GOOD, "event_type": "return"}], 1)


def test_the_validator_gives_each_kind_its_reason():
    parsing = pytest.importorskip("pipelines.parsing")
    limits = parsing.Limits(now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    for kind, fault in faults.FAULTS.items():
        for line in lines_of(kind, 10 if kind != "oversized" else 1):
            result = parsing.parse_line(line, limits)
            if kind in ("unknown_store", "unknown_product"):  # caught by the enricher, not the validator
                assert isinstance(result, contract.OrderEvent)
            else:
                assert (kind, result.reason) == (kind, fault.reason)
