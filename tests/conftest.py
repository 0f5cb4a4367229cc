"""Shared fixtures for the parser, batch and Beam transform tests: a fixed clock, valid events, dimensions.

Every test that validates events uses the same explicit `now` (2025-06-01T00:00Z), so no test depends
on the wall clock. Event builders return plain dicts/bytes so each test can break one field at a time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from pipelines import contract
from pipelines.batches import Dimensions, RunInfo
from pipelines.parsing import Limits

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)

_BASE: dict[str, Any] = {
    "event_id": "e-0001",
    "event_ts": "2025-03-01T10:30:00Z",
    "store_id": "S001",
    "product_id": "P0001",
}
_BY_TYPE: dict[str, dict[str, Any]] = {
    "order": {"quantity": 2, "unit_price": 4.99, "currency": "GBP", "channel": "store"},
    "return": {"quantity": -1, "unit_price": 4.99, "currency": "GBP", "channel": "online"},
    "inventory_snapshot": {"quantity": 40},
    "inventory_adjustment": {"quantity": -3, "reason": "write_off"},
}


def _event(kind: str = "order", /, **fields: Any) -> dict[str, Any]:
    """A valid event of type `kind` as a JSON-ready dict (event_type first); `fields` override or add fields
    (event_type included, to break it)."""
    return {"event_type": kind, **_BASE, **_BY_TYPE[kind], **fields}


@pytest.fixture(scope="session")
def now() -> dt.datetime:
    return NOW


@pytest.fixture(scope="session")
def limits() -> Limits:
    return Limits(now=NOW)


@pytest.fixture(scope="session")
def run_info(limits) -> RunInfo:
    return RunInfo("test-run", NOW, limits)


@pytest.fixture(scope="session")
def event() -> Callable[..., dict[str, Any]]:
    """Factory: event("return", quantity=-2) -> a valid return event dict with quantity -2."""
    return _event


@pytest.fixture(scope="session")
def line() -> Callable[..., bytes]:
    """Factory: line("order", event_id="x") -> that event as one JSON line (bytes, no newline)."""
    return lambda kind="order", /, **fields: msgspec.json.encode(_event(kind, **fields))


@pytest.fixture(scope="session")
def dims() -> Dimensions:
    """Products P0001, P0002 and stores S001 (GB), S002 (no country): the enrichment side input."""
    products = [
        contract.Product(product_id="P0001", product_name="Mug", category="Kitchen", base_price=4.99,
                         currency="GBP"),
        contract.Product(product_id="P0002", product_name="Lamp", category="Home", base_price=19.5, currency="GBP"),
    ]
    stores = [
        contract.Store(store_id="S001", store_name="London", channel="store", country_code="GB"),
        contract.Store(store_id="S002", store_name="Web", channel="online"),
    ]
    return Dimensions.from_records(products, stores)
