"""A catalogue of malformed events, each with the dead-letter reason the validator must give it.

Producers (the simulator, the Pub/Sub publisher) inject these lines on purpose so that the pipeline's
dead-letter path is exercised on every run, and tests can check that each kind lands in the dead-letter
table with exactly the reason named here (a key of `contract.REASONS`).

Every kind is derived from one *valid* order event, given as the dict `msgspec.to_builtins(event)`
(which carries `event_type`), so a bad line looks like real traffic except for its one defect:

    >>> rng = numpy.random.default_rng(0)
    >>> FAULTS["negative_price"].make(rng, good)       # b'{"event_type":"order",...,"unit_price":-4.99,...}'
    >>> sample_bad_lines(rng, [good], 100)             # [("not_json", b'{"event_type":"ord'), ...]

Event ids: a bad line keeps the `event_id` of the dict it is given. Give it a fresh id (as
`sample_bad_lines` does) so that deduplication by event_id can never confuse it with a valid event.

Clock: the validator rejects `event_ts` later than its `now` (the real time) plus a skew. So
`future_timestamp` lines are stamped about a century after the good event (or 30-400 days after `now`
when `now` is given) to be in the future for any real clock, while staying deterministic.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from pipelines import contract

#: Matches the default `Settings.max_payload_bytes`; an `oversized` line is longer than this.
OVERSIZED_BYTES = 1_000_000
#: How far past the good event a `future_timestamp` goes when no `now` is given (about a century).
FAR_FUTURE = dt.timedelta(days=36_525)
#: Kinds that a producer injects at most this many times per run (an oversized line is 1 MB).
MAX_PER_RUN: dict[str, int] = {"oversized": 1}

Builder = Callable[[np.random.Generator, dict[str, Any], "dt.datetime | None"], bytes]


@dataclass(frozen=True)
class Fault:
    """One kind of bad input: how to make it and the reason the validator must give."""

    kind: str
    reason: str
    weight: float
    description: str
    build: Builder

    def make(self, rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None = None) -> bytes:
        """One raw line (no trailing newline) derived from the valid order event `good`."""
        if good.get("event_type") != "order":
            raise ValueError(f"faults are derived from order events, got {good.get('event_type')!r}")
        return self.build(rng, dict(good), now)


def _dumps(obj: Any) -> bytes:
    return msgspec.json.encode(obj)


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _with_raw(good: dict[str, Any], field: str, token: bytes) -> bytes:
    """`good` with `field` set to a raw token that a JSON encoder would refuse to write."""
    placeholder = "\x00__raw__\x00"
    return _dumps({**good, field: placeholder}).replace(_dumps(placeholder), token)


def _not_json(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    raw = _dumps(good)
    variant = int(rng.integers(3))
    if variant == 0:  # a truncated write; never empty, never the whole object
        return raw[: int(rng.integers(1, len(raw) - 1))]
    if variant == 1:  # a Python dict written with str() instead of a JSON encoder
        return repr(good).encode()
    return raw[:-1] + b",}"  # trailing comma


def _json_array(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _dumps([good])


def _json_scalar(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _pick(rng, (b"42", b"null", b"true", b'"order"', _dumps(good["event_id"])))


def _missing_field(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    required = ("store_id", "product_id", "quantity", "event_ts", "event_id", "unit_price", "currency")
    field = _pick(rng, required)
    del good[field]
    return _dumps(good)


def _wrong_type(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    field = _pick(rng, ("quantity", "unit_price"))
    good[field] = str(good[field])
    return _dumps(good)


def _nan(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _with_raw(good, "unit_price", b"NaN")


def _infinity(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _with_raw(good, "unit_price", _pick(rng, (b"Infinity", b"-Infinity")))


def _zero_quantity(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _dumps({**good, "quantity": 0})


def _negative_quantity(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _dumps({**good, "quantity": -int(rng.integers(1, 10))})


def _negative_price(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    # -0.0 would pass `>= 0`, so a free item becomes -0.01
    return _dumps({**good, "unit_price": -max(float(good["unit_price"]), 0.01)})


def _bad_timestamp(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    ts = dt.datetime.fromisoformat(good["event_ts"])
    text = _pick(rng, (
        ts.strftime("%d/%m/%Y %H:%M"),               # a spreadsheet's local format
        ts.strftime("%Y-%m-%dT%H:%M:%S"),            # no offset: ambiguous
        f"{ts.year}-13-45T99:00:00Z",                # impossible date and time
        "31/02/2025 10:00",
        "yesterday",
    ))
    return _dumps({**good, "event_ts": text})


def _future_timestamp(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    ahead = dt.timedelta(days=int(rng.integers(30, 401)))
    base = now if now is not None else dt.datetime.fromisoformat(good["event_ts"]) + FAR_FUTURE
    return _dumps({**good, "event_ts": (base + ahead).astimezone(dt.UTC)})


def _unknown_event_type(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _dumps({**good, "event_type": "refund_request"})


def _unknown_store(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _dumps({**good, "store_id": f"S-UNKNOWN-{int(rng.integers(1, 1000))}"})


def _unknown_product(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _dumps({**good, "product_id": f"P-UNKNOWN-{int(rng.integers(1, 100_000))}"})


def _oversized(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    # valid JSON and a valid event but for its size: only the size check may catch it
    return _dumps({**good, "padding": "x" * (OVERSIZED_BYTES + int(rng.integers(1, 100)))})


def _invalid_utf8(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    field = _pick(rng, ("customer_id", "product_id"))
    return _with_raw(good, field, b'"' + str(good.get(field) or "C").encode() + b'\xff\xfe"')


def _empty_line(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return b""


def _whitespace_line(rng: np.random.Generator, good: dict[str, Any], now: dt.datetime | None) -> bytes:
    return _pick(rng, (b"   \t", b" ", b"\t\t"))


def _fault(kind: str, reason: str, weight: float, build: Builder, description: str) -> tuple[str, Fault]:
    return kind, Fault(kind=kind, reason=reason, weight=weight, description=description, build=build)


FAULTS: dict[str, Fault] = dict((
    _fault("not_json", "malformed_json", 10, _not_json, "truncated JSON, a Python repr, or a trailing comma"),
    _fault("json_array", "not_an_object", 3, _json_array, "the event wrapped in a JSON array"),
    _fault("json_scalar", "not_an_object", 3, _json_scalar, "a JSON number, string, boolean or null"),
    _fault("missing_field", "missing_field", 8, _missing_field, "a required field (e.g. store_id) dropped"),
    _fault("wrong_type", "wrong_type", 8, _wrong_type, 'quantity or unit_price as a string ("3")'),
    _fault("nan", "non_finite_number", 4, _nan, "unit_price written as the bare token NaN"),
    _fault("infinity", "non_finite_number", 3, _infinity, "unit_price written as Infinity or -Infinity"),
    _fault("zero_quantity", "invalid_quantity", 5, _zero_quantity, "an order of 0 units"),
    _fault("negative_quantity", "invalid_quantity", 5, _negative_quantity, "an order with quantity < 0"),
    _fault("negative_price", "negative_price", 4, _negative_price, "unit_price below zero"),
    _fault("bad_timestamp", "invalid_timestamp", 8, _bad_timestamp, "event_ts not RFC 3339 with an offset"),
    _fault("future_timestamp", "future_timestamp", 5, _future_timestamp, "event_ts far after any real clock"),
    _fault("unknown_event_type", "unknown_event_type", 4, _unknown_event_type, 'event_type "refund_request"'),
    _fault("unknown_store", "unknown_store", 6, _unknown_store, "a valid event for store S-UNKNOWN-<n>"),
    _fault("unknown_product", "unknown_product", 8, _unknown_product, "a valid event for P-UNKNOWN-<n>"),
    _fault("oversized", "oversized_payload", 0.05, _oversized, f"padded past {OVERSIZED_BYTES:,} bytes"),
    _fault("invalid_utf8", "invalid_utf8", 3, _invalid_utf8, "bytes 0xFF 0xFE inside a JSON string"),
    _fault("empty_line", "empty_line", 4, _empty_line, "an empty line"),
    _fault("whitespace_line", "empty_line", 2, _whitespace_line, "a line of spaces and tabs"),
))


def draw_kinds(rng: np.random.Generator, n: int, *, cover_all: bool = True) -> list[str]:
    """`n` fault kinds drawn by weight, each capped by MAX_PER_RUN.

    With `cover_all` and n >= len(FAULTS), every kind appears at least once, so that even a small run
    exercises every dead-letter reason.
    """
    kinds = list(FAULTS)
    chosen = kinds.copy() if cover_all and n >= len(kinds) else []
    counts = {k: chosen.count(k) for k in kinds}
    while len(chosen) < n:
        allowed = [k for k in kinds if counts[k] < MAX_PER_RUN.get(k, n)]
        weights = np.array([FAULTS[k].weight for k in allowed])
        draws = rng.choice(len(allowed), size=n - len(chosen), p=weights / weights.sum())
        for k in (allowed[i] for i in draws):
            if counts[k] < MAX_PER_RUN.get(k, n):
                chosen.append(k)
                counts[k] += 1
    return [chosen[i] for i in rng.permutation(n)]


def sample_bad_lines(
    rng: np.random.Generator,
    good_events: Sequence[dict[str, Any]],
    n: int,
    *,
    now: dt.datetime | None = None,
    id_prefix: str = "bad-",
) -> list[tuple[str, bytes]]:
    """`n` (kind, line) pairs, each built from a random order in `good_events` under a fresh event id."""
    orders = [g for g in good_events if g.get("event_type") == "order"]
    if n and not orders:
        raise ValueError("sample_bad_lines needs at least one order event to derive bad lines from")
    lines = []
    for i, kind in enumerate(draw_kinds(rng, n)):
        good = {**orders[int(rng.integers(len(orders)))], "event_id": f"{id_prefix}{i:06d}"}
        lines.append((kind, FAULTS[kind].make(rng, good, now)))
    return lines


def good_event_dict(event: contract.OrderEvent) -> dict[str, Any]:
    """The dict form of a valid order that `Fault.make` expects (event_type included)."""
    return msgspec.to_builtins(event)
