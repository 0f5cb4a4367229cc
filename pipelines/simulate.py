"""Simulated retail demand with a known generating process, written to the landing zone as events.

Forecasts can only be judged against the truth when the truth is known: this module draws daily demand
per (store, product) from a documented process, runs it through shelves that can run empty, and writes
what a shop's systems would emit (order lines, returns, stock snapshots and adjustments) as JSONL
events (see pipelines.landing for the layout), plus the truth next to them:

    OUT/events/YYYY-MM-DD.jsonl      the events that arrived that day, in arrival order
    OUT/dims/products.jsonl, stores.jsonl
    OUT/truth/daily_demand.parquet   one row per date x store x product: expected and realised demand, ...
    OUT/truth/products.parquet       the per-product parameters of the process
    OUT/truth/injections.parquet     where each injected bad line, duplicate and late event sits (file, line)
    OUT/manifest.json                parameters and exact counts, to reconcile the pipeline against

Run it:

    lakehouse simulate --days 90 --stores 5 --products 40 --seed 7 --out data/sim \\
        --bad-rate 0.01 --dup-rate 0.02 --late-rate 0.02
    python -c "from pathlib import Path; from pipelines.simulate import simulate; simulate(Path('data/sim'))"

The same arguments give byte-identical files (OUT/events/*.jsonl of an earlier run are removed first).
About 1M events take 5-7 s on two cores; memory grows with days x stores x products (3M events: 1 GB).

Demand process, per store s, product p and day t (a store's local business day)
    λ = base_rate(p) * store_factor(s) * trend(p, t) * weekly(category, weekday)
        * yearly(category, day of year) * holiday(t) * (price(p, t) / base_price(p))^elasticity(p)
        * promo_lift(p, t)
    demand ~ NegativeBinomial: Poisson(λ * G), G ~ Gamma(shape=k(p), scale=1/k(p)), mean λ, var λ + λ²/k
    units_sold = min(demand, units on hand): demand is censored when the shelf is empty.
- base_rate: lognormal (heavy tail, up to 120 units/day); 30% of products are slow movers with
  0.02-0.35 units/day (`intermittent`), and lumpier noise (k < 1).
- store_factor: lognormal around 1. trend: exp(growth * years), growth ~ N(3%, 12%) per product.
- weekly, yearly: per category (CATEGORIES): a weekday profile, and exp of two yearly cosine terms.
- holiday: from the `holidays` package for `country`: x1.35 the day before a public holiday, x1.15 two
  days before, x0.7 on the holiday; stores are closed (λ = 0, no orders) on 25 December.
- price: piecewise constant from base_price, changing every 60-120 days by ±5-15% (up more often
  than down), rounded to a price ending in 9p; elasticity ~ U(-2.5, -0.5). Same price in every store.
- promotions: national windows of 3-10 days, 20-90 days apart, discount 10-40% in 5% steps. The lift
  is the price cut through the same elasticity, (1 - discount)^elasticity, times 1.2 for display.
Stock: each store-product starts full and is reviewed daily with an (s, S) policy: when on hand plus on
order falls to s, order up to S; the delivery arrives `lead_time(p)` (2-7) days later, before opening
(a delivery due on a closed day comes the next day). s covers the mean demand over the lead time plus
z ∈ U(-0.5, 1.5) standard deviations, so some series run out, mostly in promotions. Shrinkage removes 1-3
units on 0.2% of store-product-days.
Returns: each sold unit comes back with probability 2%, 1-14 days later (returns due after the last day
are not emitted), at the price and discount it was sold for; returned goods are not put back on sale.

Events (pipelines.contract), all timestamps in UTC; stores open 08:00-20:00 local time (Sunday
10:00-16:00):
- `order`: units sold are split into lines of 1-3 units (up to 6 for fast movers), lines are grouped
  into baskets (one order_id, one timestamp, 35% with a loyalty customer_id), spread over opening hours.
- `return`: quantity < 0, with the order_id and customer_id of the sale.
- `inventory_adjustment`: deliveries (reason "receipt", > 0) at 06:00-07:00, shrinkage ("shrinkage", < 0).
- `inventory_snapshot`: on hand at 23:00 local, one per store-product per day (also when closed).
event_id is f"sim-{seed}-{n:010d}", n counting events in (day, event_ts, type, store, product) order.
A day's file and the truth's `date` are the store's local date; for GB stores it equals the UTC date of
every event_ts (not so for stores far from UTC, e.g. US).

Injected faults (independent random streams, so the valid events and the truth do not depend on them;
every count is exact and in the manifest; rates are fractions of the number of valid events N):
- bad lines: round(bad_rate * N) extra lines from pipelines.faults, drawn by weight (every kind at least
  once when there are enough, at most one oversized line), each derived from a real order and given
  a fresh event id `sim-{seed}-bad-{k}`, placed in that order's file. They never replace a valid event.
- duplicates: round(dup_rate * N) distinct events get one more identical copy (same event_id, same
  bytes), after the first copy in the same file or in the next day's file (at-least-once redelivery).
- late: round(late_rate * N) distinct events are written to the file 1-3 days after their date; they keep
  their event_ts. Late arrivals after the last day go to files dated after it.

The manifest reconciles exactly: lines_total = valid_lines + bad_lines, valid_lines = events_valid +
duplicates; events_by_type counts distinct events; late_events counts first copies in a later file,
late_lines every valid line in a file after its event date; bad_lines_by_kind / _by_reason count bad lines.

The validator rejects event_ts more than 24 h after the real clock, so valid data must lie in the past:
the default start (2024-01-01) keeps default runs there, and a run reaching past today warns.
"""

from __future__ import annotations

import datetime as dt
import warnings
import zoneinfo
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import holidays
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines import contract, faults, landing

# ---- the process's constants ------------------------------------------------------------------------
INTERMITTENT_SHARE = 0.3
RETURN_RATE = 0.02
SHRINKAGE_RATE = 0.002
PROMO_DISPLAY_LIFT = 1.2
CUSTOMER_ID_SHARE = 0.35
CUSTOMERS_PER_STORE = 5_000
BASKET_CONTINUE = 0.45  # chance that the next line joins the current basket
FAST_MOVER_RATE = 15.0  # units/day above which order lines hold up to 6 units
OPEN_HOURS = {"weekday": (8, 20), "sunday": (10, 16)}
RECEIPT_HOUR, SNAPSHOT_HOUR = 6, 23
CLOSED_DAYS = ((12, 25),)  # (month, day)
PRE_HOLIDAY_LIFT = ((1, 1.35), (2, 1.15))  # (days before a public holiday, demand factor)
HOLIDAY_FACTOR = 0.7

ORDER, RETURN, SNAPSHOT, ADJUSTMENT = range(4)
EVENT_TYPE_NAMES = ("order", "return", "inventory_snapshot", "inventory_adjustment")
RECEIPT, SHRINKAGE = 1, 2
ADJUSTMENT_REASONS = (None, "receipt", "shrinkage")
ON_TIME, LATE, DUPLICATE, BAD = range(4)
INJECTION_NAMES = ("on_time", "late", "duplicate", "bad")
_LINES = msgspec.json.Encoder()


@dataclass(frozen=True)
class Category:
    """How demand for a merchandise category moves over the week and the year."""

    weekly: tuple[float, ...]  # Monday..Sunday, mean 1
    yearly: tuple[float, int, float, int]  # amplitude and peak day of year of the annual and half-year term
    price_scale: float
    items: tuple[str, ...]


CATEGORIES: dict[str, Category] = {
    "grocery": Category((0.9, 0.85, 0.9, 0.95, 1.15, 1.3, 0.95), (0.08, 355, 0.0, 0), 1.0,
                        ("Oat Biscuits", "Coffee Beans", "Tea Bags", "Olive Oil", "Pasta", "Chocolate Bar")),
    "household": Category((0.95, 0.9, 0.9, 0.95, 1.05, 1.25, 1.0), (0.1, 15, 0.0, 0), 1.2,
                          ("Washing Liquid", "Bin Bags", "Sponges", "Kitchen Roll", "Light Bulb")),
    "personal_care": Category((1.0, 0.95, 0.95, 1.0, 1.1, 1.1, 0.9), (0.15, 190, 0.0, 0), 1.3,
                              ("Sun Cream", "Shampoo", "Toothpaste", "Hand Soap", "Razor Blades")),
    "toys": Category((0.8, 0.75, 0.8, 0.85, 1.0, 1.5, 1.3), (0.35, 345, 0.15, 345), 3.0,
                     ("Building Bricks", "Jigsaw Puzzle", "Plush Bear", "Card Game", "Toy Car")),
    "garden": Category((0.8, 0.75, 0.8, 0.85, 1.0, 1.5, 1.3), (0.6, 160, 0.1, 160), 2.5,
                       ("Garden Hose", "Plant Food", "Seed Tray", "Gloves", "Compost")),
    "electronics": Category((0.85, 0.85, 0.9, 0.9, 1.05, 1.4, 1.05), (0.25, 335, 0.1, 330), 6.0,
                            ("USB Cable", "Headphones", "Batteries", "Phone Charger", "Smart Plug")),
}
VARIANTS = ("Classic", "Large", "Mini", "Deluxe", "Value", "Family", "Eco", "Pro")


@dataclass(frozen=True)
class Country:
    timezone: str
    currency: str
    cities: tuple[tuple[str, str], ...]  # (city, region)


COUNTRIES: dict[str, Country] = {
    "GB": Country("Europe/London", "GBP", (
        ("London", "London"), ("Manchester", "North West"), ("Birmingham", "West Midlands"),
        ("Leeds", "Yorkshire and the Humber"), ("Glasgow", "Scotland"), ("Bristol", "South West"),
        ("Newcastle", "North East"), ("Cardiff", "Wales"), ("Nottingham", "East Midlands"),
        ("Norwich", "East of England"), ("Brighton", "South East"), ("Belfast", "Northern Ireland"))),
    "IE": Country("Europe/Dublin", "EUR", (
        ("Dublin", "Leinster"), ("Cork", "Munster"), ("Galway", "Connacht"))),
    "US": Country("America/New_York", "USD", (
        ("New York", "NY"), ("Boston", "MA"), ("Philadelphia", "PA"), ("Atlanta", "GA"), ("Miami", "FL"))),
    "DE": Country("Europe/Berlin", "EUR", (
        ("Berlin", "Berlin"), ("Hamburg", "Hamburg"), ("München", "Bayern"),
        ("Köln", "Nordrhein-Westfalen"))),
    "FR": Country("Europe/Paris", "EUR", (
        ("Paris", "Île-de-France"), ("Lyon", "Auvergne-Rhône-Alpes"),
        ("Marseille", "Provence-Alpes-Côte d'Azur"))),
    "NL": Country("Europe/Amsterdam", "EUR", (
        ("Amsterdam", "Noord-Holland"), ("Rotterdam", "Zuid-Holland"), ("Utrecht", "Utrecht"))),
}


# ---- the parts of the process -----------------------------------------------------------------------
@dataclass(frozen=True)
class Calendar:
    dates: list[dt.date]
    dow: np.ndarray  # 0 = Monday
    doy: np.ndarray
    is_holiday: np.ndarray
    holiday_factor: np.ndarray
    closed: np.ndarray
    midnight: np.ndarray  # UTC epoch seconds of each local midnight
    open_s: np.ndarray  # opening hours, seconds after local midnight
    close_s: np.ndarray


@dataclass(frozen=True)
class Catalogue:
    ids: list[str]
    names: list[str]
    category: np.ndarray  # index into CATEGORIES
    base_price: np.ndarray
    base_rate: np.ndarray
    intermittent: np.ndarray
    elasticity: np.ndarray
    dispersion: np.ndarray
    growth: np.ndarray
    lead_time: np.ndarray
    max_line: np.ndarray


@dataclass(frozen=True)
class Shelf:
    """Outcome of the stock simulation, each (days, stores, products)."""

    sold: np.ndarray
    on_hand_end: np.ndarray
    received: np.ndarray
    shrinkage: np.ndarray


@dataclass
class Events:
    """All valid events as columns, in canonical (event id) order once sorted."""

    etype: np.ndarray
    day: np.ndarray
    ts: np.ndarray  # UTC epoch seconds
    store: np.ndarray
    product: np.ndarray
    quantity: np.ndarray
    price: np.ndarray
    discount: np.ndarray
    customer: np.ndarray  # -1: none
    order: np.ndarray  # -1: none
    reason: np.ndarray

    def take(self, idx: np.ndarray) -> Events:
        return Events(**{k: v[idx] for k, v in vars(self).items()})

    @staticmethod
    def concat(parts: list[Events]) -> Events:
        return Events(**{k: np.concatenate([vars(p)[k] for p in parts]) for k in vars(parts[0])})

    def __len__(self) -> int:
        return len(self.etype)

    @staticmethod
    def empty() -> Events:
        return Events(**{k: np.zeros(0, dtype=np.float64 if k in ("price", "discount") else np.int64)
                         for k in Events.__dataclass_fields__})


def _streams(seed: int) -> dict[str, np.random.Generator]:
    # one independent stream per concern, so that e.g. a bad_rate change cannot move a valid event
    names = ("catalogue", "stores", "prices", "demand", "stock", "lines", "returns", "bad", "dup", "late")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children, strict=True)}


def make_calendar(start: dt.date, days: int, country: str) -> Calendar:
    dates = [start + dt.timedelta(days=i) for i in range(days)]
    tz = zoneinfo.ZoneInfo(COUNTRIES[country].timezone)
    public = holidays.country_holidays(country, years=range(start.year, dates[-1].year + 2))
    holiday = np.array([d in public for d in dates])
    before = [max((f for lag, f in PRE_HOLIDAY_LIFT if d + dt.timedelta(days=lag) in public), default=1.0)
              for d in dates]
    closed = np.array([(d.month, d.day) in CLOSED_DAYS for d in dates])
    factor = np.array(before) * np.where(holiday, HOLIDAY_FACTOR, 1.0) * ~closed
    dow = np.array([d.weekday() for d in dates])
    # DST switches at night, so the offset at noon holds for the whole trading day
    offset = np.array([dt.datetime.combine(d, dt.time(12), tz).utcoffset().total_seconds() for d in dates])
    epoch_days = np.array([(d - dt.date(1970, 1, 1)).days for d in dates], dtype=np.int64)
    hours = np.array([OPEN_HOURS["sunday" if w == 6 else "weekday"] for w in dow]) * 3600
    return Calendar(dates=dates, dow=dow, doy=np.array([d.timetuple().tm_yday for d in dates]),
                    is_holiday=holiday, holiday_factor=factor, closed=closed,
                    midnight=epoch_days * 86400 - offset.astype(np.int64), open_s=hours[:, 0],
                    close_s=hours[:, 1])


def make_catalogue(rng: np.random.Generator, n: int) -> Catalogue:
    cats = list(CATEGORIES.values())
    category = rng.integers(len(cats), size=n)
    intermittent = np.zeros(n, dtype=bool)
    intermittent[rng.choice(n, size=round(INTERMITTENT_SHARE * n), replace=False)] = True
    slow, regular = rng.uniform(0.02, 0.35, n), np.clip(rng.lognormal(1.0, 1.0, n), 0.8, 120.0)
    base_rate = np.where(intermittent, slow, regular)
    price = rng.lognormal(np.log(4.0), 0.6, n) * np.array([c.price_scale for c in cats])[category]
    names = [f"{cats[c].items[i % len(cats[c].items)]} {VARIANTS[(i // 7) % len(VARIANTS)]}"
             for i, c in enumerate(category)]
    return Catalogue(
        ids=[f"P{i + 1:04d}" for i in range(n)],
        names=names,
        category=category,
        base_price=_price_point(price),
        base_rate=base_rate,
        intermittent=intermittent,
        elasticity=rng.uniform(-2.5, -0.5, n),
        dispersion=np.where(intermittent, rng.uniform(0.3, 1.0, n), rng.uniform(2.0, 12.0, n)),
        growth=rng.normal(0.03, 0.12, n),
        lead_time=rng.integers(2, 8, n),
        max_line=np.where(base_rate > FAST_MOVER_RATE, 6, 3),
    )


def _price_point(price: np.ndarray) -> np.ndarray:
    """Round to a price ending in 9p (4.99, 12.49), at least 0.09."""
    return np.maximum(np.round(price * 10) * 10 - 1, 9) / 100


def make_stores(rng: np.random.Generator, n: int, country: str) -> tuple[list[contract.Store], np.ndarray]:
    info = COUNTRIES[country]
    stores = []
    for i in range(n):
        city, region = info.cities[i % len(info.cities)]
        branch = i // len(info.cities)
        name = f"{city} {branch + 1}" if branch else city
        stores.append(contract.Store(store_id=f"S{i + 1:03d}", store_name=name, channel="store",
                                     country_code=country, region=region, city=city, timezone=info.timezone))
    return stores, rng.lognormal(0.0, 0.35, n)


def price_paths(rng: np.random.Generator, cat: Catalogue, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Shelf price and promotional discount, each (days, products)."""
    n = len(cat.ids)
    price = np.empty((days, n))
    discount = np.zeros((days, n))
    for p in range(n):
        level, t = cat.base_price[p], 0
        while t < days:
            span = int(rng.integers(60, 121))
            price[t:t + span, p] = level
            step = rng.uniform(0.05, 0.15) * (1 if rng.random() < 0.6 else -1)
            level = float(_price_point(np.array(level * (1 + step))))
            t += span
        t = int(rng.integers(0, 60))
        while t < days:
            length = int(rng.integers(3, 11))
            discount[t:t + length, p] = rng.integers(2, 9) / 20
            t += length + int(rng.integers(20, 91))
    return price, discount


def expected_demand(cal: Calendar, cat: Catalogue, store_factor: np.ndarray, price: np.ndarray,
                    discount: np.ndarray) -> np.ndarray:
    """λ per (day, store, product)."""
    cats = list(CATEGORIES.values())
    t_years = np.arange(len(cal.dates))[:, None] / 365.25
    weekly = np.array([c.weekly for c in cats])[:, cal.dow].T[:, cat.category]
    amplitude = np.array([c.yearly[0::2] for c in cats])[cat.category]  # (products, harmonics)
    peak = np.array([c.yearly[1::2] for c in cats])[cat.category]
    angle = 2 * np.pi * (cal.doy[:, None, None] - peak) / 365.25 * np.array([1, 2])
    yearly = np.exp((amplitude * np.cos(angle)).sum(axis=-1))
    price_effect = (price / cat.base_price) ** cat.elasticity
    promo_lift = np.where(discount > 0, (1 - discount) ** cat.elasticity * PROMO_DISPLAY_LIFT, 1.0)
    per_product = (cat.base_rate * np.exp(cat.growth * t_years) * weekly * yearly * price_effect * promo_lift
                   * cal.holiday_factor[:, None])
    return per_product[:, None, :] * store_factor[None, :, None]


def draw_demand(rng: np.random.Generator, lam: np.ndarray, dispersion: np.ndarray) -> np.ndarray:
    k = np.broadcast_to(dispersion, lam.shape)
    return rng.poisson(lam * rng.gamma(k, 1 / k)).astype(np.int64)


def run_shelves(rng: np.random.Generator, demand: np.ndarray, lam: np.ndarray, cat: Catalogue,
                closed: np.ndarray) -> Shelf:
    """Daily (s, S) replenishment per store-product; sales are capped by stock on hand."""
    days, stores, products = demand.shape
    mean = lam.mean(axis=0)
    cover = mean * (cat.lead_time + 1)
    sd = np.sqrt(cover * (1 + mean / cat.dispersion))
    reorder = np.ceil(cover + rng.uniform(-0.5, 1.5, mean.shape) * sd)
    up_to = reorder + np.maximum(1, np.ceil(mean * rng.integers(4, 15, mean.shape)))
    on_hand, on_order = up_to.astype(np.int64), np.zeros(mean.shape, dtype=np.int64)
    pipeline = np.zeros((days + int(cat.lead_time.max()) + 2, stores, products), dtype=np.int64)
    shrink_draw = rng.random(demand.shape) < SHRINKAGE_RATE
    shrink_units = rng.integers(1, 4, demand.shape)
    out = Shelf(*(np.zeros(demand.shape, dtype=np.int64) for _ in range(4)))
    lead = np.broadcast_to(cat.lead_time, mean.shape)
    s_idx, p_idx = np.indices(mean.shape)
    for t in range(days):
        if closed[t]:
            pipeline[t + 1] += pipeline[t]
            pipeline[t] = 0
        arrived = pipeline[t]
        on_hand += arrived
        on_order -= arrived
        sold = np.minimum(demand[t], on_hand)
        on_hand -= sold
        shrunk = np.where(shrink_draw[t] & ~closed[t], np.minimum(on_hand, shrink_units[t]), 0)
        on_hand -= shrunk
        if not closed[t]:
            qty = np.where(on_hand + on_order <= reorder, up_to - on_hand - on_order, 0).astype(np.int64)
            pipeline[t + lead, s_idx, p_idx] += qty  # indices are distinct: no need for np.add.at
            on_order += qty
        out.sold[t], out.on_hand_end[t], out.received[t], out.shrinkage[t] = sold, on_hand, arrived, shrunk
    return out


def _time_of_day(rng: np.random.Generator, cal: Calendar, day: np.ndarray) -> np.ndarray:
    """UTC epoch seconds within opening hours of `day`, busiest mid-day."""
    span = cal.close_s[day] - cal.open_s[day]
    return cal.midnight[day] + cal.open_s[day] + (rng.beta(2.0, 2.0, len(day)) * span).astype(np.int64)


def order_lines(rng: np.random.Generator, sold: np.ndarray, cal: Calendar, cat: Catalogue, price: np.ndarray,
                discount: np.ndarray) -> Events:
    """Split units sold into order lines, group the lines of a store-day into timed baskets."""
    day, store, product = np.nonzero(sold)
    if not len(day):
        return Events.empty()
    units = sold[day, store, product]
    # draw line sizes per unit (enough for lines of 1), keep those that start before the day's units run out
    cell = np.repeat(np.arange(len(units)), units)
    size = rng.integers(1, cat.max_line[product][cell] + 1)
    before = np.cumsum(size) - size
    before -= np.repeat(before[np.cumsum(units) - units], units)
    keep = before < units[cell]
    cell, size = cell[keep], np.minimum(size[keep], units[cell[keep]] - before[keep])
    day, store, product = day[cell], store[cell], product[cell]
    shuffled = np.lexsort((rng.random(len(cell)), store, day))
    day, store, product, size = day[shuffled], store[shuffled], product[shuffled], size[shuffled]
    new_group = np.r_[True, (day[1:] != day[:-1]) | (store[1:] != store[:-1])]
    basket = np.cumsum(new_group | (rng.random(len(day)) > BASKET_CONTINUE)) - 1
    first = np.r_[True, basket[1:] != basket[:-1]]
    b_day, b_store = day[first], store[first]
    b_ts = _time_of_day(rng, cal, b_day)
    loyalty = b_store * CUSTOMERS_PER_STORE + rng.integers(0, CUSTOMERS_PER_STORE, len(b_day))
    b_customer = np.where(rng.random(len(b_day)) < CUSTOMER_ID_SHARE, loyalty, -1)
    n = len(day)
    return Events(etype=np.full(n, ORDER), day=day, ts=b_ts[basket], store=store, product=product,
                  quantity=size, price=price[day, product], discount=discount[day, product],
                  customer=b_customer[basket], order=basket, reason=np.zeros(n, dtype=np.int64))


def returns(rng: np.random.Generator, orders: Events, cal: Calendar) -> Events:
    units = rng.binomial(orders.quantity, RETURN_RATE)
    day = orders.day + rng.integers(1, 15, len(units))
    day = np.where(cal.closed[np.minimum(day, len(cal.dates) - 1)], day + 1, day)
    idx = np.flatnonzero((units > 0) & (day < len(cal.dates)))
    back = orders.take(idx)
    back.etype[:] = RETURN
    back.day, back.quantity = day[idx], -units[idx]
    back.ts = _time_of_day(rng, cal, back.day)
    return back


def stock_events(shelf: Shelf, cal: Calendar, rng: np.random.Generator) -> Events:
    parts = []
    for etype, qty, hour, jitter, reason in (
        (SNAPSHOT, shelf.on_hand_end, SNAPSHOT_HOUR, 0, 0),
        (ADJUSTMENT, shelf.received, RECEIPT_HOUR, 3600, RECEIPT),
        (ADJUSTMENT, -shelf.shrinkage, OPEN_HOURS["weekday"][1], 3600, SHRINKAGE),
    ):
        day, store, product = np.nonzero(np.ones_like(qty, dtype=bool) if etype == SNAPSHOT else qty)
        n = len(day)
        ts = cal.midnight[day] + hour * 3600 + (rng.integers(0, jitter, n) if jitter else 0)
        parts.append(Events(etype=np.full(n, etype), day=day, ts=ts, store=store, product=product,
                            quantity=qty[day, store, product], price=np.zeros(n), discount=np.zeros(n),
                            customer=np.full(n, -1), order=np.full(n, -1), reason=np.full(n, reason)))
    return Events.concat(parts)


# ---- encoding -----------------------------------------------------------------------------------------
class EventEncoder:
    """Turns rows of `Events` into contract structs (encoded by msgspec, as landing.encode does)."""

    COLUMNS = ("etype", "ts", "store", "product", "quantity", "price", "discount", "customer", "order",
               "reason")

    def __init__(self, ev: Events, seed: int, stores: list[str], products: list[str], currency: str):
        self.ev, self.seed, self.currency = ev, seed, currency
        self.stores, self.products = stores, products

    def event_id(self, i: int) -> str:
        return f"sim-{self.seed}-{i:010d}"

    def structs(self, rows: np.ndarray) -> list[contract.Event]:
        # the hot loop of the simulator: columns are zipped as Python lists, constructors are bound once,
        # and timestamps are shared (baskets, snapshots); keyword arguments are spelled out per type
        # because building a dict of the common fields costs five times as much
        cols = [getattr(self.ev, name)[rows].tolist() for name in self.COLUMNS]
        seed, currency, stores, products = self.seed, self.currency, self.stores, self.products
        snapshot, adjustment = contract.InventorySnapshot, contract.InventoryAdjustment
        sale = (contract.OrderEvent, contract.ReturnEvent)
        times: dict[int, dt.datetime] = {}
        out: list[contract.Event] = []
        for i, etype, seconds, store, product, qty, price, discount, customer, order, reason in zip(
                rows.tolist(), *cols, strict=True):
            ts = times.get(seconds)
            if ts is None:
                ts = times[seconds] = dt.datetime.fromtimestamp(seconds, dt.UTC)
            event_id = f"sim-{seed}-{i:010d}"
            if etype == SNAPSHOT:
                out.append(snapshot(event_id=event_id, event_ts=ts, store_id=stores[store],
                                    product_id=products[product], quantity=qty))
            elif etype == ADJUSTMENT:
                out.append(adjustment(event_id=event_id, event_ts=ts, store_id=stores[store],
                                      product_id=products[product], quantity=qty,
                                      reason=ADJUSTMENT_REASONS[reason]))
            else:
                out.append(sale[etype](
                    event_id=event_id, event_ts=ts, store_id=stores[store], product_id=products[product],
                    quantity=qty, unit_price=price, currency=currency, channel="store", on_promo=discount > 0,
                    discount_pct=discount, customer_id=f"C{customer:07d}" if customer >= 0 else None,
                    order_id=f"sim-{seed}-o{order:09d}" if order >= 0 else None))
        return out

    def struct(self, i: int) -> contract.Event:
        return self.structs(np.array([i]))[0]


# ---- injection plan -------------------------------------------------------------------------------------
@dataclass
class Plan:
    """Every line to write: its file (day index), arrival time, role and what it refers to."""

    file: np.ndarray
    arrival: np.ndarray
    role: np.ndarray
    ref: np.ndarray  # event index, or bad line index for role BAD

    def sorted(self) -> Plan:
        uid = np.arange(len(self.file))
        order = np.lexsort((uid, self.arrival, self.file))
        return Plan(self.file[order], self.arrival[order], self.role[order], self.ref[order])


def plan_lines(streams: dict[str, np.random.Generator], ev: Events, n_bad: int, dup_rate: float,
               late_rate: float) -> tuple[Plan, np.ndarray]:
    """Place first copies (on time or late), duplicates and bad lines; returns the plan and bad-line bases."""
    n = len(ev)
    file, arrival, role = ev.day.copy(), ev.ts.copy(), np.full(n, ON_TIME)
    late = streams["late"].choice(n, size=round(late_rate * n), replace=False)
    lag = streams["late"].integers(1, 4, len(late))
    file[late] += lag
    arrival[late] += lag * 86400
    role[late] = LATE

    rng = streams["dup"]
    dup = np.sort(rng.choice(n, size=round(dup_rate * n), replace=False))
    next_file = rng.random(len(dup)) < 0.5
    dup_arrival = arrival[dup] + np.where(next_file, 86400 + rng.integers(-7200, 7200, len(dup)),
                                          rng.integers(1, 3 * 3600, len(dup)))

    rng = streams["bad"]
    orders = np.flatnonzero(ev.etype == ORDER)
    base = rng.choice(orders if len(orders) else np.arange(n), size=n_bad) if n_bad else np.zeros(0, np.int64)
    plan = Plan(
        file=np.concatenate([file, file[dup] + next_file, file[base]]),
        arrival=np.concatenate([arrival, dup_arrival, arrival[base] + rng.integers(0, 600, n_bad)]),
        role=np.concatenate([role, np.full(len(dup), DUPLICATE), np.full(n_bad, BAD)]),
        ref=np.concatenate([np.arange(n), dup, np.arange(n_bad)]),
    )
    return plan, base


def bad_lines(rng: np.random.Generator, enc: EventEncoder, base: np.ndarray, seed: int,
              catalogue: Catalogue) -> tuple[list[str], list[bytes]]:
    kinds = faults.draw_kinds(rng, len(base))
    lines = []
    for k, (kind, i) in enumerate(zip(kinds, base.tolist(), strict=True)):
        good = msgspec.to_builtins(_as_order(enc.struct(int(i)), catalogue, enc))
        good["event_id"] = f"sim-{seed}-bad-{k:07d}"
        lines.append(faults.FAULTS[kind].make(rng, good))
    return kinds, lines


def _as_order(event: contract.Event, catalogue: Catalogue, enc: EventEncoder) -> contract.OrderEvent:
    """The event itself if an order, else an order for one unit like it (a run that sold nothing)."""
    if isinstance(event, contract.OrderEvent):
        return event
    price = float(catalogue.base_price[catalogue.ids.index(event.product_id)])
    return contract.OrderEvent(event_id=event.event_id, event_ts=event.event_ts, store_id=event.store_id,
                               product_id=event.product_id, quantity=1, unit_price=price,
                               currency=enc.currency, channel="store")


# ---- writing --------------------------------------------------------------------------------------------
def _event_file(start: dt.date, day: int) -> str:
    """The landing file (relative to the output folder) for arrival day `day`."""
    return f"{landing.EVENTS_DIR}/{start + dt.timedelta(days=day)}.jsonl"


def write_events(out: Path, plan: Plan, enc: EventEncoder, bad: list[bytes], start: dt.date, days: int,
                 progress: Callable[[int], Any] | None) -> tuple[dict[str, int], np.ndarray]:
    """Write one file per arrival day; returns lines per file and each sorted plan entry's line number.

    A file is what landing.write_lines would write (each line followed by b"\\n"), produced by msgspec's
    encode_lines in one call, which is twice as fast.
    """
    files: dict[str, int] = {}
    done = 0
    line_no = np.empty(len(plan.file), dtype=np.int64)
    bounds = np.flatnonzero(np.r_[True, plan.file[1:] != plan.file[:-1], True])
    for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        name = _event_file(start, int(plan.file[lo]))
        role, ref = plan.role[lo:hi], plan.ref[lo:hi]
        valid = iter(enc.structs(ref[role != BAD]))
        items = [msgspec.Raw(bad[r]) if k == BAD else next(valid)
                 for k, r in zip(role.tolist(), ref.tolist(), strict=True)]
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(_LINES.encode_lines(items))
        files[name] = hi - lo
        line_no[lo:hi] = np.arange(1, hi - lo + 1)
        if progress is not None and (advance := min(int(plan.file[lo]) + 1, days) - done) > 0:
            progress(advance)
            done += advance
    return files, line_no


def truth_table(world: World) -> pa.Table:
    """One row per (date, store, product), in that order."""
    cal, cat, shelf, shape = world.cal, world.cat, world.shelf, world.lam.shape

    def flat(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.broadcast_to(a, shape)).reshape(-1)

    def ids(values: list[str], axis: int) -> pa.Array:
        index = flat(np.arange(len(values)).reshape([-1 if a == axis else 1 for a in range(3)]))
        return pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), pa.array(values)).cast(pa.string())

    return pa.table({
        "date": pa.array(flat(np.array(cal.dates, dtype="datetime64[D]")[:, None, None]), pa.date32()),
        "store_id": ids([s.store_id for s in world.stores], 1),
        "product_id": ids(cat.ids, 2),
        "expected_demand": flat(world.lam),
        "demand": flat(world.demand),
        "units_sold": flat(shelf.sold),
        "units_returned": flat(world.returned),
        "price": flat(world.price[:, None, :]),
        "on_promo": flat(world.discount[:, None, :] > 0),
        "discount_pct": flat(world.discount[:, None, :]),
        "received": flat(shelf.received),
        "shrinkage": flat(shelf.shrinkage),
        "on_hand_end": flat(shelf.on_hand_end),
        "stockout": flat(shelf.sold < world.demand),
        "is_holiday": flat(cal.is_holiday[:, None, None]),
        "is_closed": flat(cal.closed[:, None, None]),
        "intermittent": flat(cat.intermittent[None, None, :]),
    })


def products_table(cat: Catalogue) -> pa.Table:
    names = list(CATEGORIES)
    return pa.table({
        "product_id": cat.ids, "category": [names[c] for c in cat.category], "base_price": cat.base_price,
        "base_rate": cat.base_rate, "intermittent": cat.intermittent, "elasticity": cat.elasticity,
        "dispersion": cat.dispersion, "growth": cat.growth, "lead_time_days": cat.lead_time,
    })


def injections_table(plan: Plan, line_no: np.ndarray, enc: EventEncoder, kinds: list[str], seed: int,
                     start: dt.date) -> pa.Table:
    idx = np.flatnonzero(plan.role != ON_TIME)
    rows: dict[str, list[Any]] = {k: [] for k in ("file", "line", "injection", "kind", "reason", "event_id")}
    for i in idx.tolist():
        role, ref = int(plan.role[i]), int(plan.ref[i])
        kind = kinds[ref] if role == BAD else None
        rows["file"].append(_event_file(start, int(plan.file[i])))
        rows["line"].append(int(line_no[i]))
        rows["injection"].append(INJECTION_NAMES[role])
        rows["kind"].append(kind)
        rows["reason"].append(faults.FAULTS[kind].reason if kind else None)
        rows["event_id"].append(f"sim-{seed}-bad-{ref:07d}" if role == BAD else enc.event_id(ref))
    schema = pa.schema([("file", pa.string()), ("line", pa.int64()), ("injection", pa.string()),
                        ("kind", pa.string()), ("reason", pa.string()), ("event_id", pa.string())])
    return pa.table(rows, schema=schema)


# ---- the entry point ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class World:
    """One simulated history: the process's draws and the valid events they produce."""

    cal: Calendar
    cat: Catalogue
    stores: list[contract.Store]
    price: np.ndarray
    discount: np.ndarray
    lam: np.ndarray
    demand: np.ndarray
    shelf: Shelf
    returned: np.ndarray  # units returned per (day, store, product), on the day they come back
    events: Events  # sorted: row n has event_id f"sim-{seed}-{n:010d}"


def simulate_world(*, start: dt.date, days: int, stores: int, products: int, country: str,
                   seed: int) -> World:
    """The process and its valid events in memory, without writing anything (same draws as `simulate`)."""
    streams = _streams(seed)
    cal = make_calendar(start, days, country)
    cat = make_catalogue(streams["catalogue"], products)
    store_dims, store_factor = make_stores(streams["stores"], stores, country)
    price, discount = price_paths(streams["prices"], cat, days)
    lam = expected_demand(cal, cat, store_factor, price, discount)
    demand = draw_demand(streams["demand"], lam, cat.dispersion)
    shelf = run_shelves(streams["stock"], demand, lam, cat, cal.closed)
    orders = order_lines(streams["lines"], shelf.sold, cal, cat, price, discount)
    back = returns(streams["returns"], orders, cal)
    ev = Events.concat([orders, back, stock_events(shelf, cal, streams["stock"])])
    ev = ev.take(np.lexsort((ev.product, ev.store, ev.etype, ev.ts, ev.day)))
    returned = np.zeros(lam.shape, dtype=np.int64)
    np.add.at(returned, (back.day, back.store, back.product), -back.quantity)
    return World(cal, cat, store_dims, price, discount, lam, demand, shelf, returned, ev)


def simulate(
    out: Path,
    *,
    days: int = 90,
    stores: int = 5,
    products: int = 40,
    start: dt.date = dt.date(2024, 1, 1),
    seed: int = 42,
    bad_rate: float = 0.0,
    dup_rate: float = 0.0,
    late_rate: float = 0.0,
    country: str = "GB",
    progress: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Simulate `days` of demand from `start` and write events, dimensions, truth and manifest under `out`.

    `progress`, if given, is called with the number of simulated days just written (they add up to `days`),
    e.g. `progress=lambda n: bar.advance(task, n)`. Returns the manifest (also written to out/manifest.json).
    """
    out = Path(out)
    params = {"days": days, "stores": stores, "products": products, "start": start.isoformat(), "seed": seed,
              "bad_rate": bad_rate, "dup_rate": dup_rate, "late_rate": late_rate, "country": country}
    _check_args(days, stores, products, country, bad_rate, dup_rate, late_rate)
    end = start + dt.timedelta(days=days - 1)
    if end > dt.date.today():
        warnings.warn(f"simulated days run to {end}, past today: the validator rejects events more than 24 h "
                      "in the future", stacklevel=2)
    streams = _streams(seed)
    info = COUNTRIES[country]
    world = simulate_world(start=start, days=days, stores=stores, products=products, country=country,
                           seed=seed)
    ev = world.events
    enc = EventEncoder(ev, seed, [s.store_id for s in world.stores], world.cat.ids, info.currency)
    plan, base = plan_lines(streams, ev, round(bad_rate * len(ev)), dup_rate, late_rate)
    kinds, bad = bad_lines(streams["bad"], enc, base, seed, world.cat)
    plan = plan.sorted()

    # a re-run must not leave a longer run's days behind
    for old in (out / landing.EVENTS_DIR).glob("*.jsonl"):
        old.unlink()
    files, line_no = write_events(out, plan, enc, bad, start, days, progress)
    landing.write_dimensions(out, [_product_dim(world.cat, i, info.currency) for i in range(products)],
                             world.stores)
    truth_dir = out / landing.TRUTH_DIR
    truth_dir.mkdir(parents=True, exist_ok=True)
    pq.write_table(truth_table(world), truth_dir / "daily_demand.parquet")
    pq.write_table(products_table(world.cat), truth_dir / "products.parquet")
    pq.write_table(injections_table(plan, line_no, enc, kinds, seed, start), truth_dir / "injections.parquet")

    manifest = {
        "generator": "pipelines.simulate",
        "format_version": 1,
        "parameters": params,
        "period": {"start": start.isoformat(), "end": end.isoformat()},
        "currency": info.currency,
        "timezone": info.timezone,
        "event_id_format": f"sim-{seed}-{{n:010d}}",
        "dimensions": {"products": products, "stores": stores},
        "files": files,
        **_counts(world, plan, kinds),
        "truth": {
            "daily_demand": f"{landing.TRUTH_DIR}/daily_demand.parquet",
            "daily_demand_rows": int(world.lam.size),
            "products": f"{landing.TRUTH_DIR}/products.parquet",
            "injections": f"{landing.TRUTH_DIR}/injections.parquet",
        },
    }
    landing.write_manifest(out, manifest)
    return manifest


def _check_args(days: int, stores: int, products: int, country: str, *rates: float) -> None:
    if min(days, stores, products) < 1:
        raise ValueError("days, stores and products must each be at least 1")
    if country not in COUNTRIES:
        raise ValueError(f"country {country!r} is not one of {sorted(COUNTRIES)}")
    if not all(0.0 <= r < 1.0 for r in rates):
        raise ValueError("bad_rate, dup_rate and late_rate must lie in [0, 1)")


def _product_dim(cat: Catalogue, i: int, currency: str) -> contract.Product:
    return contract.Product(product_id=cat.ids[i], product_name=cat.names[i],
                            category=list(CATEGORIES)[cat.category[i]], base_price=float(cat.base_price[i]),
                            currency=currency)


def _counts(world: World, plan: Plan, kinds: list[str]) -> dict[str, Any]:
    """The manifest's exact counts (see the module docstring for how they reconcile)."""
    ev = world.events
    valid = plan.role != BAD
    late_line = valid & (plan.file > ev.day[np.where(valid, plan.ref, 0)])
    by_type = Counter(ev.etype.tolist())
    by_kind = Counter(kinds)
    by_reason = Counter(faults.FAULTS[k].reason for k in kinds)
    reasons = sorted({f.reason for f in faults.FAULTS.values()})
    ts = [dt.datetime.fromtimestamp(int(t), dt.UTC).isoformat() for t in (ev.ts.min(), ev.ts.max())]
    return {
        "lines_total": len(plan.file),
        "valid_lines": int(valid.sum()),
        "events_valid": len(ev),
        "events_by_type": {name: by_type.get(i, 0) for i, name in enumerate(EVENT_TYPE_NAMES)},
        "duplicates": int((plan.role == DUPLICATE).sum()),
        "duplicates_next_file": int((late_line & (plan.role == DUPLICATE)).sum()),
        "late_events": int((plan.role == LATE).sum()),
        "late_lines": int(late_line.sum()),
        "bad_lines": len(kinds),
        "bad_lines_by_kind": {k: by_kind.get(k, 0) for k in faults.FAULTS},
        "bad_lines_by_reason": {r: by_reason.get(r, 0) for r in reasons},
        "units": {
            "demand": int(world.demand.sum()),
            "sold": int(world.shelf.sold.sum()),
            "returned": int(world.returned.sum()),
            "received": int(world.shelf.received.sum()),
            "shrinkage": int(world.shelf.shrinkage.sum()),
        },
        "first_event_ts": ts[0],
        "last_event_ts": ts[1],
    }
