"""The event contract, defined once: order and inventory events, product and store dimensions.

Every other schema is derived from the structs below: the validator (`pipelines.parsing`), the Arrow /
Parquet schemas and the BigQuery table schemas (`pipelines.tables`), and the JSON files that
`lakehouse schemas` writes for Terraform and dbt. Change a field here and all of them follow.

Conventions
- `event_ts` is an RFC 3339 timestamp with an offset (`Z` or `+01:00`); it is stored in UTC.
- `quantity` is signed demand: an `order` sells units (> 0), a `return` (or cancellation) gives
  them back (< 0), so summing quantity gives net demand.
- Inventory: an `inventory_snapshot` states units on hand (>= 0); an `inventory_adjustment` is a
  signed change (a receipt > 0, a write-off < 0, never 0).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta

# ---- field types, each with its constraint and description ---------------------------------
EventId = Annotated[str, Meta(min_length=1, max_length=128, description="Globally unique event id; the dedupe key.")]
EventTs = Annotated[dt.datetime, Meta(tz=True, description="When the event happened (event time), UTC.")]
StoreId = Annotated[str, Meta(min_length=1, max_length=64, description="Store (or sales channel/market) id.")]
ProductId = Annotated[str, Meta(min_length=1, max_length=64, description="Product (SKU) id.")]
Price = Annotated[float, Meta(ge=0, le=10_000_000, description="Unit price before discount, in `currency`.")]
Currency = Annotated[str, Meta(pattern="^[A-Z]{3}$", description="ISO 4217 currency code.")]
Channel = Annotated[Literal["store", "online"], Meta(description="Where the sale happened.")]
OnPromo = Annotated[bool, Meta(description="True while the product is on promotion.")]
Discount = Annotated[float, Meta(ge=0, lt=1, description="Promotional discount as a fraction of unit_price.")]
ShortText = Annotated[str, Meta(min_length=1, max_length=64)]
CustomerId = Annotated[ShortText | None, Meta(description="Customer id, when known.")]
OrderId = Annotated[ShortText | None, Meta(description="Order/invoice the line belongs to, when known.")]
AdjustmentReason = Annotated[
    Literal["receipt", "write_off", "shrinkage", "count_correction", "transfer"] | None,
    Meta(description="Why stock changed (adjustments only)."),
]

MAX_UNITS = 1_000_000
_STOCK_UNITS = "On-hand units (snapshot) or signed change of stock (adjustment)."


class _Event(msgspec.Struct, kw_only=True, tag_field="event_type", frozen=True):
    event_id: EventId
    event_ts: EventTs
    store_id: StoreId
    product_id: ProductId
    quantity: int  # narrowed by each event type below


class _OrderLine(_Event, kw_only=True, frozen=True):
    unit_price: Price
    currency: Currency
    channel: Channel
    on_promo: OnPromo = False
    discount_pct: Discount = 0.0
    customer_id: CustomerId = None
    order_id: OrderId = None


class OrderEvent(_OrderLine, tag="order", kw_only=True, frozen=True):
    """A customer bought `quantity` units."""

    quantity: Annotated[int, Meta(ge=1, le=MAX_UNITS, description="Units; > 0 for orders, < 0 for returns.")]


class ReturnEvent(_OrderLine, tag="return", kw_only=True, frozen=True):
    """A return or cancellation: `quantity` units came back (negative)."""

    quantity: Annotated[int, Meta(ge=-MAX_UNITS, le=-1, description="Units; > 0 for orders, < 0 for returns.")]


class InventorySnapshot(_Event, tag="inventory_snapshot", kw_only=True, frozen=True):
    """Units on hand at `event_ts`."""

    quantity: Annotated[int, Meta(ge=0, le=100 * MAX_UNITS, description=_STOCK_UNITS)]
    reason: AdjustmentReason = None


class InventoryAdjustment(_Event, tag="inventory_adjustment", kw_only=True, frozen=True):
    """A signed change of stock on hand (receipt > 0, write-off < 0)."""

    quantity: Annotated[int, Meta(ge=-100 * MAX_UNITS, le=100 * MAX_UNITS, description=_STOCK_UNITS)]
    reason: AdjustmentReason = None


Event = Union[OrderEvent, ReturnEvent, InventorySnapshot, InventoryAdjustment]

#: event_type -> entity (the table family it lands in)
ENTITY_OF: dict[str, str] = {
    "order": "order",
    "return": "order",
    "inventory_snapshot": "inventory",
    "inventory_adjustment": "inventory",
}
#: entity -> the struct whose fields define its tables (order and return share fields)
ENTITY_STRUCT: dict[str, type[msgspec.Struct]] = {"order": OrderEvent, "inventory": InventorySnapshot}
EVENT_TYPES: tuple[str, ...] = tuple(ENTITY_OF)


# ---- dimensions ------------------------------------------------------------------------------
class Product(msgspec.Struct, kw_only=True, frozen=True):
    """A product (SKU) sold by the retailer."""

    product_id: ProductId
    product_name: Annotated[str, Meta(max_length=256, description="Display name.")]
    category: Annotated[str, Meta(min_length=1, max_length=64, description="Merchandise category.")]
    base_price: Annotated[float, Meta(ge=0, le=10_000_000, description="Regular (list) unit price.")]
    currency: Currency


class Store(msgspec.Struct, kw_only=True, frozen=True):
    """A store, or an online market treated as one."""

    store_id: StoreId
    store_name: Annotated[str, Meta(max_length=256, description="Display name.")]
    channel: Channel
    country_code: Annotated[
        Annotated[str, Meta(pattern="^[A-Z]{2}$")] | None,
        Meta(description="ISO 3166-1 alpha-2 country (holidays); null when unknown."),
    ] = None
    region: Annotated[ShortText | None, Meta(description="Region or state.")] = None
    city: Annotated[ShortText | None, Meta(description="City.")] = None
    timezone: Annotated[str, Meta(min_length=1, max_length=64, description="IANA time zone of the store.")] = "UTC"


DIMENSIONS: dict[str, type[msgspec.Struct]] = {"products": Product, "stores": Store}
DIMENSION_KEYS: dict[str, str] = {"products": "product_id", "stores": "store_id"}


# ---- dead letters ----------------------------------------------------------------------------
#: Every reason a record can be dead-lettered for, by pipeline stage. The validator, the enricher and
#: the tests all name reasons from here.
REASONS: dict[str, str] = {
    "unreadable_file": "the file breaks off (truncated or corrupt compression); one record stands for the rest",
    "empty_line": "the line is empty",
    "oversized_payload": "the raw payload is larger than the configured maximum",
    "invalid_utf8": "the bytes are not valid UTF-8",
    "malformed_json": "the payload is not valid JSON",
    "non_finite_number": "the payload uses NaN or Infinity, which JSON does not allow",
    "not_an_object": "the payload is JSON but not an object",
    "missing_field": "a required field is missing",
    "unknown_event_type": "event_type is not one of the known event types",
    "wrong_type": "a field has the wrong JSON type",
    "invalid_timestamp": "event_ts is not an RFC 3339 timestamp with an offset",
    "future_timestamp": "event_ts lies too far in the future",
    "invalid_quantity": "quantity is outside what the event type allows",
    "negative_price": "unit_price is negative",
    "invalid_value": "a field breaks its constraint (range, length, pattern or allowed values)",
    "unknown_store": "store_id is not in the store dimension",
    "unknown_product": "product_id is not in the product dimension",
}
STAGES: tuple[str, ...] = ("read", "parse", "validate", "enrich")
