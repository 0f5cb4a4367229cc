"""The contract validator: one raw line in, a typed event or a dead-letter reason out.

Pure functions, no Beam, no I/O; `pipelines.batches` applies them to chunks of lines and the tests
fuzz them. The checks come from `pipelines.contract` (msgspec decodes and validates in one pass);
this module only turns msgspec's errors into the contract's reason codes and adds the checks that
need context (the clock, the payload size).

    >>> parse_line(b'{"event_type": "order", ...}', now=datetime.now(timezone.utc))
    OrderEvent(...)  or  Rejection(stage="validate", reason="missing_field", detail="...")
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Any, Union, get_args, get_origin

import msgspec

from pipelines import contract

EVENT_DECODER = msgspec.json.Decoder(contract.Event)
_NON_FINITE = re.compile(rb"(?<![\w\"])-?(NaN|Infinity)(?![\w\"])")
_AT_PATH = re.compile(r" - at `\$\.([A-Za-z0-9_]+)")
_MISSING = re.compile(r"missing required field `([^`]+)`")
#: Earliest event time the contract accepts; anything older is a broken clock, not history.
MIN_EVENT_TS = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
_MAX_KEPT_TS = dt.datetime(9000, 1, 1, tzinfo=dt.UTC)


class _Identifying(msgspec.Struct):
    """The fields a dead letter keeps when it can read them; anything else in the payload is skipped."""

    event_id: Any = None
    event_type: Any = None
    event_ts: Any = None


_IDENTIFYING = msgspec.json.Decoder(_Identifying)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record is a dead letter, plus whatever identifying fields could still be read."""

    stage: str
    reason: str
    detail: str
    event_id: str | None = None
    event_type: str | None = None
    event_ts: dt.datetime | None = None


@dataclass(frozen=True)
class Limits:
    """Context-dependent checks: the wall clock and the payload size (see pipelines.config)."""

    now: dt.datetime
    max_payload_bytes: int = 1_000_000
    max_future_skew: dt.timedelta = dt.timedelta(hours=24)

    @cached_property  # read once per event
    def latest_event_ts(self) -> dt.datetime:
        return self.now + self.max_future_skew

    def __post_init__(self) -> None:
        if self.now.tzinfo is None:
            raise ValueError("Limits.now must be timezone-aware")


def parse_line(raw: bytes, limits: Limits) -> contract.Event | Rejection:
    """Validate one raw event (bytes of one line, newline stripped)."""
    if len(raw) > limits.max_payload_bytes:
        return Rejection("read", "oversized_payload",
                         f"payload is {len(raw):,} bytes; the limit is {limits.max_payload_bytes:,}")
    try:
        event = EVENT_DECODER.decode(raw)
    except msgspec.ValidationError as e:  # a subclass of DecodeError: catch it first
        return _invalid(raw, str(e))
    except msgspec.DecodeError as e:
        return _undecodable(raw, e)
    except UnicodeDecodeError:
        return invalid_utf8(raw)
    except RecursionError:  # msgspec skips unknown fields recursively; a hostile payload nests deeply
        return Rejection("parse", "malformed_json", "JSON nested too deeply to read")
    if not is_utf8(raw):  # msgspec skips unknown fields unchecked; the payload is stored as text
        return invalid_utf8(raw)
    return check_event(event, limits)


def check_event(event: contract.Event, limits: Limits) -> contract.Event | Rejection:
    """The rules msgspec cannot express: event time bounds, non-zero adjustments."""
    if event.event_ts > limits.latest_event_ts:
        return _rejected(event, "future_timestamp",
                         f"event_ts {event.event_ts.isoformat()} is after {limits.latest_event_ts.isoformat()}")
    if event.event_ts < MIN_EVENT_TS:
        return _rejected(event, "invalid_timestamp", f"event_ts {event.event_ts.isoformat()} is before 1990")
    if type(event) in _ADJUSTMENTS and event.quantity == 0:
        return _rejected(event, "invalid_quantity", "an inventory_adjustment must change stock (quantity != 0)")
    return event


# ---- the hot path's decoder -------------------------------------------------------------------
def _without_pattern(tp):
    """The type with no `pattern` in its constraints."""
    if get_origin(tp) is Annotated:
        inner, *metas = get_args(tp)
        metas = [msgspec.Meta(**{k: v for k in _META_ATTRIBUTES if k != "pattern" and (v := getattr(m, k)) is not None})
                 if isinstance(m, msgspec.Meta) else m for m in metas]
        return Annotated[(_without_pattern(inner), *metas)]
    if get_origin(tp) is Union:
        return Union[tuple(_without_pattern(t) for t in get_args(tp))]
    return tp


def _patterns(tp) -> list[str]:
    if get_origin(tp) is Annotated:
        inner, *metas = get_args(tp)
        return [m.pattern for m in metas if isinstance(m, msgspec.Meta) and m.pattern] + _patterns(inner)
    return [p for t in get_args(tp) for p in _patterns(t)] if get_origin(tp) is Union else []


_META_ATTRIBUTES = [k for k in dir(msgspec.Meta) if not k.startswith("_")]


def _unpatterned(cls: type[msgspec.Struct]) -> type[msgspec.Struct]:
    """A subclass of a contract event whose string fields skip their `pattern`, with the same tag."""
    config = cls.__struct_config__
    fields = [(f.name, _without_pattern(f.type), f.default) if f.default is not msgspec.NODEFAULT
              else (f.name, _without_pattern(f.type)) for f in msgspec.structs.fields(cls) if _patterns(f.type)]
    return msgspec.defstruct(f"Unpatterned{cls.__name__}", fields, bases=(cls,), tag=config.tag,
                             tag_field=config.tag_field, kw_only=True, frozen=True, module=__name__)


#: The contract's events minus their `pattern` constraints, for decoding many lines: msgspec checks a pattern by
#: calling Python's `re`, which took ~1.7 of ~2.6 µs per event. `pipelines.batches.parse_chunk` checks the
#: patterns once per distinct value instead and sends any line this decoder or `check_event` rejects to
#: `parse_line`, so the contract's rules and reasons stay those of `EVENT_DECODER`.
UNPATTERNED = {cls: _unpatterned(cls) for cls in contract.Event.__args__}
FAST_EVENT_DECODER = msgspec.json.Decoder(Union[tuple(UNPATTERNED.values())])
_ADJUSTMENTS = frozenset({contract.InventoryAdjustment, UNPATTERNED[contract.InventoryAdjustment]})
#: event struct (the contract's or its unpatterned one) -> (field, compiled pattern) pairs that FAST_EVENT_DECODER
#: leaves unchecked; msgspec matches a pattern with `search`
PATTERNS: dict[type, list[tuple[str, re.Pattern]]] = {
    c: [(f.name, re.compile(p)) for f in msgspec.structs.fields(cls) for p in _patterns(f.type)]
    for cls in contract.Event.__args__ for c in (cls, UNPATTERNED[cls])}


def is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def invalid_utf8(raw: bytes) -> Rejection:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Rejection("read", "invalid_utf8", f"byte {e.start} is not valid UTF-8 ({e.reason})")
    raise ValueError("payload is valid UTF-8")


def _rejected(event: contract.Event, reason: str, detail: str) -> Rejection:
    return Rejection("validate", reason, detail, event.event_id, event.__struct_config__.tag,
                     _plausible(event.event_ts))


def _plausible(ts: dt.datetime | None) -> dt.datetime | None:
    """The timestamp if its UTC date is representable and plausible (1990..9000), else None."""
    try:
        return ts if ts is not None and MIN_EVENT_TS <= ts <= _MAX_KEPT_TS else None
    except OverflowError:
        return None


def _undecodable(raw: bytes, error: msgspec.DecodeError) -> Rejection:
    if not raw.strip():
        return Rejection("read", "empty_line", "the line is empty or only whitespace")
    if not is_utf8(raw):
        return invalid_utf8(raw)
    if _NON_FINITE.search(raw):
        return Rejection("parse", "non_finite_number", f"NaN or Infinity is not JSON ({error})")
    return Rejection("parse", "malformed_json", str(error))


def _invalid(raw: bytes, message: str) -> Rejection:
    """Map msgspec's validation message to a reason code; keep the message as the detail."""
    ids = _identifying_fields(raw)
    path = _AT_PATH.search(message)
    field = path.group(1) if path else None
    if field is None and message.startswith("Expected `object`"):
        reason = "not_an_object"
    elif (missing := _MISSING.search(message)) is not None:
        reason, field = "missing_field", missing.group(1)
    elif field == "event_type" and message.startswith("Invalid value"):
        reason = "unknown_event_type"
    elif field == "event_type":  # the tag: msgspec says "Expected `str`" without ", got ..."
        reason = "wrong_type"
    elif message.startswith("Number out of range"):
        reason = "non_finite_number"
    elif field == "event_ts":
        reason = "invalid_timestamp"
    elif message.startswith("Expected `") and ", got `" in message:
        reason = "wrong_type"
    elif field == "quantity":
        reason = "invalid_quantity"
    elif field == "unit_price" and ">= 0" in message:
        reason = "negative_price"
    else:
        reason = "invalid_value"
    return Rejection("validate", reason, message, *ids)


def _identifying_fields(raw: bytes) -> tuple[str | None, str | None, dt.datetime | None]:
    """Best-effort event_id, event_type and event_ts of a rejected payload (for the dead-letter row)."""
    try:
        ids = _IDENTIFYING.decode(raw)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):
        return None, None, None
    try:
        ts = dt.datetime.fromisoformat(ids.event_ts) if isinstance(ids.event_ts, str) else None
    except ValueError:
        ts = None
    return (
        ids.event_id[:128] if isinstance(ids.event_id, str) else None,
        ids.event_type[:64] if isinstance(ids.event_type, str) else None,
        _plausible(ts) if ts is not None and ts.tzinfo is not None else None,
    )
