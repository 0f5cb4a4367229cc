"""Import real order-line CSV exports as contract events and dimensions in the landing layout.

    lakehouse import-orders data/online_retail_ii.csv.xz --format online-retail --out landing/oretail
    lakehouse import-orders orders.csv.gz --format generic --out landing/shop \\
        --map event_ts=created --map product_id=sku --map quantity=qty --map unit_price=price \\
        --set store_id=web --set currency=EUR --set channel=online --timezone Europe/Berlin

`import_orders()` reads a `.csv`, `.csv.gz` or `.csv.xz` file with pyarrow (every column as a string
first, so one bad cell never aborts the import), types the columns vectorised, and writes
(see `pipelines.landing`):

    OUT/events/<prefix>-YYYY-MM.jsonl   one file per UTC month of event_ts, rows in event-time order
    OUT/events/<prefix>-undated.jsonl   rows whose timestamp could not be parsed (dead letters to be)
    OUT/dims/products.jsonl, OUT/dims/stores.jsonl
    OUT/manifest.json                   counts by type, rows per file, notes, expected duplicates

Every line is `landing.encode()` of a contract struct. Nothing is dropped or repaired quietly: a row
that breaks the contract (negative price, zero quantity, unparseable number or timestamp) is still
written, carrying its raw value, so the backfill dead-letters it with a reason; the manifest counts
such rows under `notes` and says how many lines decode against the contract (`contract_check`). Only
lines the CSV parser cannot split into the header's columns are not events; they are counted under
`skipped` with their text. Earlier `<prefix>-*.jsonl` files in OUT/events are replaced, so a re-run
never leaves stale months behind.

Event ids are content-based: `<prefix>-` + blake2b-80 of the raw row (all columns, as read, joined
by U+001F). The same row gives the same id in every run and every file, so re-imports and
overlapping exports do not double count: the backfill's dedupe removes repeats.

Format `online-retail`: "Online Retail II" by Daqing Chen, UCI Machine Learning Repository (2012),
CC BY 4.0, https://doi.org/10.24432/C5CG6D. 1,067,371 invoice lines of a UK online retailer,
2009-12-01..2011-12-09, header `Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,
Country` (the "Online Retail" I names InvoiceNo/UnitPrice/CustomerID are accepted too). Mapping:
- InvoiceDate `12/1/2009 7:45` is m/d/Y H:M, UK local time: read as Europe/London and converted
  to UTC across DST (GMT in winter, BST = UTC+1 in summer; an ambiguous autumn hour takes the
  first (BST) reading, a time in the spring gap is shifted forward; both are counted in `notes`).
- Invoice "C..." (cancellation) -> `return`; the quantity is already negative and kept as is
  (the one cancellation line with a positive quantity is written and fails as invalid_quantity).
- numeric invoice, quantity > 0 -> `order`, except lines with price 0 and no customer: those are
  stock-keeping entries ("found", blank descriptions, up to 10,200 units), not sales, and become
  `inventory_adjustment` with reason `count_correction` (price-0 lines of a known customer stay orders).
- numeric invoice, quantity < 0 (price 0, no customer: "damaged", "missing", "?") ->
  `inventory_adjustment`, reason `write_off`, quantity kept negative.
- Invoice "A..." (six "Adjust bad debt" lines, StockCode B) are accounting entries, not demand.
  They are written as `order` lines as they stand: the five with a negative price are dead-lettered
  as negative_price; the one positive line (A563185) lands as a non_merchandise order of product B.
- quantity 0 or unparseable, any other invoice prefix -> `order`, which the validator rejects.
- store = the customer's country as an online market: store_id = slug of Country ("united-kingdom"),
  "Online - <Country>", channel online, ISO 3166-1 alpha-2 code from `COUNTRIES` (EIRE -> IE,
  RSA -> ZA, Channel Islands -> JE; European Community, Unspecified, West Indies -> null), a
  best-effort time zone.
- product = StockCode, trimmed and upper-cased (the data spells 173 codes both ways, e.g. 85014b and
  85014B); name = the description seen most often on lines with a positive price (then on any
  line; ties -> alphabetically first); category `merchandise` when the code matches
  `^\\d{5}[A-Z]*$`, else `non_merchandise` (POST, M, D, DOT, BANK CHARGES, AMAZONFEE, gift vouchers);
  base_price = median positive price; currency GBP.
- orders: channel online, currency GBP, unit_price = Price, order_id = Invoice, customer_id =
  Customer ID without its ".0" (null when empty).
- duplicates: the published file concatenates the two workbook sheets, which overlap for
  2010-12-01..2010-12-09 (22,523 lines twice), and also repeats ~11,500 lines within a sheet (the same
  item, quantity and minute on one invoice). Identical rows share their event_id, so the backfill's
  dedupe keeps one; the manifest reports how many rows will go (`duplicates_expected`).

Format `generic`: `mapping` names the CSV column of each contract field (a column named like the
field is used without mapping), `defaults` gives constants (`--set currency=EUR`); required are
event_ts, store_id, product_id, quantity, unit_price, currency and channel. Optional: event_id,
order_id, customer_id, on_promo, discount_pct, and for the dimensions product_name, category (default
"uncategorised"), store_name, country_code. Timestamps: `ts_format` (strptime) or ISO-8601; naive ones
are read in `timezone` (IANA, default UTC). A negative quantity is a `return`, anything else an `order`.

`start`/`end` (inclusive) select by the UTC date of event_ts; undated rows are always written.
Dimensions are built from the whole file, so they do not depend on the range.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import hashlib
import io
import lzma
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from pipelines import contract, landing

Format = Literal["online-retail", "generic"]
#: progress(stage, done, total): stages "read", "parse", "dimensions", "write" (done/total in rows), "done".
Progress = Callable[[str, int, int], Any]

ORDER, RETURN, ADJUSTMENT = 0, 1, 2
_TYPE_NAMES = ("order", "return", "inventory_adjustment")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US = dt.timedelta(microseconds=1)
_MAX_PRICE = 10_000_000.0

ONLINE_RETAIL_CREDIT = (
    '"Online Retail II" by Daqing Chen, UCI Machine Learning Repository (2012), CC BY 4.0, '
    "https://doi.org/10.24432/C5CG6D"
)
ONLINE_RETAIL_TS_FORMAT = "%m/%d/%Y %H:%M"
ONLINE_RETAIL_TIMEZONE = "Europe/London"
#: preset column -> accepted header names ("Online Retail" I spells three of them differently)
ONLINE_RETAIL_COLUMNS: dict[str, tuple[str, ...]] = {
    "Invoice": ("Invoice", "InvoiceNo"),
    "StockCode": ("StockCode",),
    "Description": ("Description",),
    "Quantity": ("Quantity",),
    "InvoiceDate": ("InvoiceDate",),
    "Price": ("Price", "UnitPrice"),
    "Customer ID": ("Customer ID", "CustomerID"),
    "Country": ("Country",),
}
MERCHANDISE_CODE = r"^\d{5}[A-Z]*$"  # applied to the upper-cased code

#: Country as spelt in Online Retail II -> (ISO 3166-1 alpha-2 or None, best-effort IANA time zone)
COUNTRIES: dict[str, tuple[str | None, str]] = {
    "Australia": ("AU", "Australia/Sydney"),
    "Austria": ("AT", "Europe/Vienna"),
    "Bahrain": ("BH", "Asia/Bahrain"),
    "Belgium": ("BE", "Europe/Brussels"),
    "Bermuda": ("BM", "Atlantic/Bermuda"),
    "Brazil": ("BR", "America/Sao_Paulo"),
    "Canada": ("CA", "America/Toronto"),
    "Channel Islands": ("JE", "Europe/Jersey"),
    "Cyprus": ("CY", "Asia/Nicosia"),
    "Czech Republic": ("CZ", "Europe/Prague"),
    "Denmark": ("DK", "Europe/Copenhagen"),
    "EIRE": ("IE", "Europe/Dublin"),
    "European Community": (None, "UTC"),
    "Finland": ("FI", "Europe/Helsinki"),
    "France": ("FR", "Europe/Paris"),
    "Germany": ("DE", "Europe/Berlin"),
    "Greece": ("GR", "Europe/Athens"),
    "Hong Kong": ("HK", "Asia/Hong_Kong"),
    "Iceland": ("IS", "Atlantic/Reykjavik"),
    "Israel": ("IL", "Asia/Jerusalem"),
    "Italy": ("IT", "Europe/Rome"),
    "Japan": ("JP", "Asia/Tokyo"),
    "Korea": ("KR", "Asia/Seoul"),
    "Lebanon": ("LB", "Asia/Beirut"),
    "Lithuania": ("LT", "Europe/Vilnius"),
    "Malta": ("MT", "Europe/Malta"),
    "Netherlands": ("NL", "Europe/Amsterdam"),
    "Nigeria": ("NG", "Africa/Lagos"),
    "Norway": ("NO", "Europe/Oslo"),
    "Poland": ("PL", "Europe/Warsaw"),
    "Portugal": ("PT", "Europe/Lisbon"),
    "RSA": ("ZA", "Africa/Johannesburg"),
    "Saudi Arabia": ("SA", "Asia/Riyadh"),
    "Singapore": ("SG", "Asia/Singapore"),
    "Spain": ("ES", "Europe/Madrid"),
    "Sweden": ("SE", "Europe/Stockholm"),
    "Switzerland": ("CH", "Europe/Zurich"),
    "Thailand": ("TH", "Asia/Bangkok"),
    "USA": ("US", "America/New_York"),
    "United Arab Emirates": ("AE", "Asia/Dubai"),
    "United Kingdom": ("GB", "Europe/London"),
    "Unspecified": (None, "UTC"),
    "West Indies": (None, "UTC"),
}

#: generic format: fields a mapping or a default may name
EVENT_FIELDS = (
    "event_id", "event_ts", "store_id", "product_id", "quantity", "unit_price", "currency", "channel",
    "on_promo", "discount_pct", "customer_id", "order_id",
)  # fmt: skip
DIMENSION_FIELDS = ("product_name", "category", "store_name", "country_code")
REQUIRED_FIELDS = ("event_ts", "store_id", "product_id", "quantity", "unit_price", "currency", "channel")

_INT_RE = r"^[+-]?\d{1,15}(\.0*)?$"
_FLOAT_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?$"
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


# ---- reading ---------------------------------------------------------------------------------
def _open(path: Path) -> io.BufferedReader | gzip.GzipFile | lzma.LZMAFile:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith((".xz", ".lzma")):
        return lzma.open(path, "rb")
    return open(path, "rb")


@dataclass
class _Csv:
    columns: dict[str, pa.Array]  # every column as strings, in file order
    n: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    invalid_utf8_cells: int = 0


def read_csv_strings(path: Path) -> _Csv:
    """Read a (compressed) CSV with every column as a string; malformed lines are collected, not fatal."""
    skipped: list[dict[str, Any]] = []

    def on_invalid_row(row: Any) -> str:
        skipped.append({"line": row.number, "reason": "malformed_csv_row", "text": row.text[:500]})
        return "skip"

    with _open(path) as f:
        header_line = f.readline()
        if not header_line.strip():
            raise ValueError(f"{path}: empty file, expected a CSV header line")
        names = next(csv.reader([header_line.decode("utf-8-sig", errors="replace")]))
        names = [n.strip() for n in names]
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: duplicate column names in header {names}")
        if not f.peek(1):  # a header and nothing else (pyarrow calls that an empty CSV file)
            table = pa.table({n: pa.array([], pa.binary()) for n in names})
        else:
            table = pacsv.read_csv(
                f,
                read_options=pacsv.ReadOptions(column_names=names, block_size=8 << 20),
                parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid_row),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.binary() for n in names},
                    strings_can_be_null=False,
                    quoted_strings_can_be_null=False,
                ),
            )
    columns: dict[str, pa.Array] = {}
    bad_cells = 0
    for name in names:
        raw = table[name].combine_chunks()
        try:
            columns[name] = pc.cast(raw, pa.string())
        except pa.ArrowInvalid:  # invalid UTF-8: replace the bad bytes, count the cells
            values = raw.to_pylist()
            fixed = [v.decode("utf-8", errors="replace") for v in values]
            bad_cells += sum(1 for v, s in zip(values, fixed) if "\ufffd" in s and b"\xef\xbf\xbd" not in v)
            columns[name] = pa.array(fixed, pa.string())
    skipped.sort(key=lambda s: (s["line"] is None, s["line"] or 0))
    return _Csv(columns=columns, n=table.num_rows, skipped=skipped, invalid_utf8_cells=bad_cells)


# ---- typing helpers (vectorised; invalid -> null, the raw text is kept) --------------------------
def _trim(a: pa.Array) -> pa.Array:
    return pc.utf8_trim_whitespace(a)


def parse_int(a: pa.Array) -> pa.Array:
    """Whole numbers ("12", "-3", "+4", "5.0") -> int64; anything else -> null."""
    t = _trim(a)
    ok = pc.match_substring_regex(t, _INT_RE)
    clean = pc.replace_substring_regex(pc.replace_substring_regex(t, r"^\+", ""), r"\.0*$", "")
    return pc.if_else(ok, pc.cast(pc.if_else(ok, clean, "0"), pa.int64()), pa.scalar(None, pa.int64()))


def parse_float(a: pa.Array) -> pa.Array:
    """Finite decimal numbers -> float64 (correctly rounded, like Python's float()); else null."""
    t = _trim(a)
    ok = pc.match_substring_regex(t, _FLOAT_RE)
    values = pc.cast(pc.if_else(ok, t, "0"), pa.float64())
    ok = pc.and_(ok, pc.is_finite(values))
    return pc.if_else(ok, values, pa.scalar(None, pa.float64()))


def parse_bool(a: pa.Array) -> pa.Array:
    t = pc.utf8_lower(_trim(a))
    yes, no = pc.is_in(t, pa.array(_TRUE)), pc.is_in(t, pa.array(_FALSE))
    return pc.if_else(yes, True, pc.if_else(no, False, pa.scalar(None, pa.bool_())))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as Europe/London)") from e


def parse_timestamps(a: pa.Array, ts_format: str | None, timezone: str) -> tuple[pa.Array, Counter]:
    """Timestamps -> int64 microseconds since the epoch, UTC (null when unparseable).

    Work is per distinct value (an export repeats each invoice's minute on every line). Naive times
    are read in `timezone` with zoneinfo: an ambiguous time (autumn, clocks back) takes the first
    reading (fold=0), a time in the spring gap is shifted forward by the gap.
    """
    tz = _zone(timezone)
    notes: Counter = Counter()
    encoded = pc.dictionary_encode(_trim(a))
    uniques: pa.Array = encoded.dictionary
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    texts = uniques.to_pylist()
    # Python's strptime, once per distinct value: pyarrow's vectorised strptime reads the
    # non-zero-padded "12/1/2009 7:45" too, but silently rolls impossible dates over
    # ("2/30/2010" -> 2010-03-02), and a bad date must stay bad.
    flags = np.zeros(len(texts), dtype=np.int8)  # 1 ambiguous, 2 nonexistent
    out: list[int | None] = []
    for i, text in enumerate(texts):
        value = _parse_one(text, ts_format)
        if value is None:
            out.append(None)
            continue
        if value.tzinfo is None:
            local = value.replace(tzinfo=tz)
            if local.utcoffset() != value.replace(tzinfo=tz, fold=1).utcoffset():
                back = local.astimezone(dt.UTC).astimezone(tz).replace(tzinfo=None)
                flags[i] = 1 if back == value else 2
            value = local
        out.append((value - _EPOCH) // _US)
    counts = np.bincount(indices, minlength=len(texts)) if len(texts) else np.zeros(0, np.int64)
    notes["ambiguous_local_time"] = int(counts[flags == 1].sum())
    notes["nonexistent_local_time_shifted"] = int(counts[flags == 2].sum())
    return pc.take(pa.array(out, pa.int64()), encoded.indices), notes


def _parse_one(text: str | None, ts_format: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        if ts_format:
            return dt.datetime.strptime(text, ts_format)
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def slug(text: str) -> str:
    """'United Kingdom' -> 'united-kingdom' (ASCII, lower case, runs of other characters -> '-')."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


def row_ids(columns: list[pa.Array], prefix: str) -> pa.Array:
    """Content-based event ids: `<prefix>-` + blake2b-80 of the raw row (fields joined by U+001F)."""
    joined = pc.cast(pc.binary_join_element_wise(*columns, "\x1f"), pa.binary()).to_pylist()
    blake = hashlib.blake2b
    return pa.array([f"{prefix}-{blake(r, digest_size=10).hexdigest()}" for r in joined], pa.string())


# ---- the normalised lines both formats produce --------------------------------------------------
@dataclass
class _Lines:
    """One entry per CSV row: typed values (null where invalid) next to the raw text they came from."""

    event_type: np.ndarray  # int8: ORDER / RETURN / ADJUSTMENT
    event_id: pa.Array
    ts: pa.Array  # int64 us UTC, null = unparseable
    ts_raw: pa.Array
    store_id: pa.Array
    product_id: pa.Array
    quantity: pa.Array  # int64, null = unparseable
    quantity_raw: pa.Array
    unit_price: pa.Array  # float64, null = unparseable
    price_raw: pa.Array
    currency: pa.Array
    channel: pa.Array
    customer_id: pa.Array  # nullable
    order_id: pa.Array  # nullable
    reason: pa.Array  # nullable; adjustments only
    on_promo: pa.Array | None = None  # bool, null = unparseable; None = constant False
    on_promo_raw: pa.Array | None = None
    discount_pct: pa.Array | None = None  # float64; None = constant 0.0
    discount_raw: pa.Array | None = None
    notes: Counter = field(default_factory=Counter)


def _const(value: str | None, n: int) -> pa.Array:
    return pa.array([value] * n, pa.string()) if value is None else pc.cast(pa.repeat(value, n), pa.string())


def _nullify_empty(a: pa.Array) -> pa.Array:
    t = _trim(a)
    return pc.if_else(pc.equal(t, ""), pa.scalar(None, pa.string()), t)


def _count(mask: pa.Array | np.ndarray) -> int:
    if isinstance(mask, np.ndarray):
        return int(mask.sum())
    return int(pc.sum(pc.cast(pc.fill_null(mask, False), pa.int64())).as_py() or 0)


# ---- online-retail -----------------------------------------------------------------------------
def _online_retail_columns(data: _Csv, path: Path) -> dict[str, pa.Array]:
    cols, missing = {}, []
    for role, names in ONLINE_RETAIL_COLUMNS.items():
        found = next((n for n in names if n in data.columns), None)
        if found is None:
            missing.append(" or ".join(names))
        else:
            cols[role] = data.columns[found]
    if missing:
        raise ValueError(
            f"{path}: not an Online Retail II export, missing column(s) {missing}; has {list(data.columns)}"
        )
    return cols


def _online_retail_lines(data: _Csv, path: Path, ts_format: str, timezone: str, prefix: str) -> _Lines:
    c = _online_retail_columns(data, path)
    n = data.n
    invoice = _trim(c["Invoice"])
    is_cancel = pc.starts_with(invoice, "C")
    is_bad_debt = pc.starts_with(invoice, "A")
    is_numeric = pc.utf8_is_digit(invoice)
    quantity = parse_int(c["Quantity"])
    price = parse_float(c["Price"])
    customer = _nullify_empty(pc.replace_substring_regex(_trim(c["Customer ID"]), r"\.0+$", ""))
    q = quantity.to_numpy(zero_copy_only=False)  # NaN where null
    p = price.to_numpy(zero_copy_only=False)
    cancel = is_cancel.to_numpy(zero_copy_only=False)
    numeric = is_numeric.to_numpy(zero_copy_only=False)
    no_customer = customer.is_null().to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        write_off = numeric & (q < 0)
        correction = numeric & (q > 0) & (p == 0) & no_customer
    event_type = np.full(n, ORDER, dtype=np.int8)
    event_type[cancel] = RETURN
    event_type[write_off | correction] = ADJUSTMENT
    reason = pa.array(
        np.where(write_off, "write_off", np.where(correction, "count_correction", None)), pa.string()
    )

    ts, notes = parse_timestamps(c["InvoiceDate"], ts_format, timezone)
    code = _trim(c["StockCode"])
    product = pc.utf8_upper(code)
    country = _trim(c["Country"])
    uniq_countries = pc.unique(country)
    store = pc.take(
        pa.array([slug(x) for x in uniq_countries.to_pylist()], pa.string()),
        pc.index_in(country, uniq_countries),
    )
    sales = event_type != ADJUSTMENT
    with np.errstate(invalid="ignore"):
        notes.update(
            {
                "cancellations": int(cancel.sum()),
                "cancellation_with_positive_quantity": int((cancel & (q > 0)).sum()),
                "write_offs": int(write_off.sum()),
                "stock_count_corrections": int(correction.sum()),
                "bad_debt_adjustments": _count(is_bad_debt),
                "unknown_invoice_prefix": _count(
                    pc.invert(pc.or_(pc.or_(is_cancel, is_bad_debt), is_numeric))
                ),
                "zero_quantity": int((q == 0).sum()),
                "unparseable_quantity": quantity.null_count,
                "unparseable_price": int((np.isnan(p) & sales).sum()),
                "negative_price": int(((p < 0) & sales).sum()),
                "zero_price_sales": int(((p == 0) & sales).sum()),
                "missing_customer_id": int((no_customer & sales).sum()),
                "empty_stock_code": _count(pc.equal(code, "")),
                "stock_code_trimmed": _count(pc.not_equal(code, c["StockCode"])),
                "stock_code_case_folded": _count(pc.not_equal(product, code)),
                "unknown_country": _count(pc.invert(pc.is_in(country, pa.array(list(COUNTRIES))))),
                "unparseable_timestamp": ts.null_count,
            }
        )
    return _Lines(
        event_type=event_type,
        event_id=row_ids(list(data.columns.values()), prefix),
        ts=ts,
        ts_raw=c["InvoiceDate"],
        store_id=store,
        product_id=product,
        quantity=quantity,
        quantity_raw=c["Quantity"],
        unit_price=price,
        price_raw=c["Price"],
        currency=_const("GBP", n),
        channel=_const("online", n),
        customer_id=customer,
        order_id=invoice,
        reason=reason,
        notes=notes,
    )


def _online_retail_dims(data: _Csv, path: Path, lines: _Lines) -> tuple[list, list]:
    c = _online_retail_columns(data, path)
    product = lines.product_id
    names = _most_frequent_names(product, _trim(c["Description"]), lines.unit_price)
    prices = _median_positive(product, lines.unit_price)
    merch = re.compile(MERCHANDISE_CODE)
    products = [
        contract.Product(
            product_id=pid,
            product_name=names.get(pid, pid)[:256],
            category="merchandise" if merch.match(pid) else "non_merchandise",
            base_price=prices.get(pid, 0.0),
            currency="GBP",
        )
        for pid in sorted(set(pc.unique(product).to_pylist()))
        if 1 <= len(pid) <= 64
    ]
    stores = []
    for country in sorted(set(pc.unique(_trim(c["Country"])).to_pylist())):
        store_id = slug(country)
        if not 1 <= len(store_id) <= 64:
            continue  # its events are dead-lettered for the store_id itself
        code, zone = COUNTRIES.get(country, (None, "UTC"))
        stores.append(
            contract.Store(
                store_id=store_id,
                store_name=f"Online - {country}"[:256],
                channel="online",
                country_code=code,
                timezone=zone,
            )
        )
    return products, _unique_stores(stores)


def _most_frequent_names(product: pa.Array, name: pa.Array, price: pa.Array) -> dict[str, str]:
    """product_id -> the name seen most often on lines with a positive price, then on any line;
    ties go to the alphabetically first name, so the choice does not depend on row order."""
    priced = pc.fill_null(pc.greater(price, 0), False)
    table = pa.table({"p": product, "n": name, "priced": pc.cast(priced, pa.int64())})
    table = table.filter(pc.not_equal(table["n"], ""))
    grouped = table.group_by(["p", "n"]).aggregate([("priced", "sum"), ("priced", "count")])
    best: dict[str, tuple[int, int, str]] = {}
    for p, n, priced_count, count in zip(
        grouped["p"].to_pylist(),
        grouped["n"].to_pylist(),
        grouped["priced_sum"].to_pylist(),
        grouped["priced_count"].to_pylist(),
    ):
        rank = (-priced_count, -count, n)  # smallest wins
        if p not in best or rank < best[p]:
            best[p] = rank
    return {p: rank[2] for p, rank in best.items()}


def _median_positive(keys: pa.Array, price: pa.Array) -> dict[str, float]:
    """key -> median of its valid positive prices (exact; mean of the two middle values)."""
    encoded = pc.dictionary_encode(keys)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    values = price.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        ok = (values > 0) & (values <= _MAX_PRICE)
    codes, values = codes[ok], values[ok]
    order = np.lexsort((values, codes))
    codes, values = codes[order], values[order]
    counts = np.bincount(codes, minlength=len(encoded.dictionary))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    result = {}
    for key, count, start in zip(encoded.dictionary.to_pylist(), counts.tolist(), starts.tolist()):
        if count:
            mid = (values[start + (count - 1) // 2] + values[start + count // 2]) / 2
            result[key] = round(float(mid), 6)
    return result


def _unique_stores(stores: list[contract.Store]) -> list[contract.Store]:
    """Two spellings can slug alike; keep the first (sorted) so store_id stays a key."""
    seen: dict[str, contract.Store] = {}
    for s in stores:
        seen.setdefault(s.store_id, s)
    return sorted(seen.values(), key=lambda s: s.store_id)


# ---- generic -----------------------------------------------------------------------------------
def resolve_mapping(
    columns: list[str], mapping: dict[str, str] | None, defaults: dict[str, str] | None
) -> dict[str, tuple[str, str]]:
    """field -> ("column", name) or ("default", value); raises ValueError naming what is wrong."""
    mapping, defaults = dict(mapping or {}), dict(defaults or {})
    allowed = EVENT_FIELDS + DIMENSION_FIELDS
    for kind, given in (("mapping", mapping), ("default", defaults)):
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise ValueError(f"unknown field(s) in {kind}: {unknown}; fields are {list(allowed)}")
    resolved: dict[str, tuple[str, str]] = {}
    for name, column in mapping.items():
        if column not in columns:
            raise ValueError(
                f"mapping {name}={column!r} names a column that is not in the file; columns are {columns}"
            )
        resolved[name] = ("column", column)
    for name in allowed:
        if name in resolved:
            continue
        if name in defaults:
            resolved[name] = ("default", defaults[name])
        elif name in columns:
            resolved[name] = ("column", name)
    missing = [f for f in REQUIRED_FIELDS if f not in resolved]
    if missing:
        raise ValueError(
            "required field(s) " + ", ".join(missing) + " have neither a column (--map FIELD=COLUMN) "
            f"nor a default (--set FIELD=VALUE); columns are {columns}"
        )
    return resolved


def _generic_lines(
    data: _Csv, resolved: dict[str, tuple[str, str]], ts_format: str | None, timezone: str, prefix: str
) -> _Lines:
    n = data.n

    def col(name: str) -> pa.Array | None:
        if name not in resolved:
            return None
        kind, value = resolved[name]
        return data.columns[value] if kind == "column" else _const(value, n)

    quantity_raw, price_raw = col("quantity"), col("unit_price")
    quantity, price = parse_int(quantity_raw), parse_float(price_raw)
    q = quantity.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        negative = q < 0
    event_type = np.where(negative, RETURN, ORDER).astype(np.int8)
    ts, notes = parse_timestamps(col("event_ts"), ts_format, timezone)
    event_id = col("event_id")
    event_id = _trim(event_id) if event_id is not None else row_ids(list(data.columns.values()), prefix)
    promo_raw, discount_raw = col("on_promo"), col("discount_pct")
    customer, order = col("customer_id"), col("order_id")
    p = price.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        notes.update(
            {
                "returns": int(negative.sum()),
                "zero_quantity": int((q == 0).sum()),
                "unparseable_quantity": quantity.null_count,
                "unparseable_price": price.null_count,
                "negative_price": int((p < 0).sum()),
                "zero_price_sales": int((p == 0).sum()),
                "unparseable_timestamp": ts.null_count,
            }
        )
    lines = _Lines(
        event_type=event_type,
        event_id=event_id,
        ts=ts,
        ts_raw=col("event_ts"),
        store_id=_trim(col("store_id")),
        product_id=_trim(col("product_id")),
        quantity=quantity,
        quantity_raw=quantity_raw,
        unit_price=price,
        price_raw=price_raw,
        currency=_trim(col("currency")),
        channel=_trim(col("channel")),
        customer_id=_nullify_empty(customer) if customer is not None else _const(None, n),
        order_id=_nullify_empty(order) if order is not None else _const(None, n),
        reason=_const(None, n),
        notes=notes,
    )
    if promo_raw is not None:
        lines.on_promo, lines.on_promo_raw = parse_bool(promo_raw), promo_raw
        notes["unparseable_on_promo"] = lines.on_promo.null_count
    if discount_raw is not None:
        lines.discount_pct, lines.discount_raw = parse_float(discount_raw), discount_raw
        notes["unparseable_discount_pct"] = lines.discount_pct.null_count
    return lines


def _generic_dims(
    data: _Csv, resolved: dict[str, tuple[str, str]], lines: _Lines, timezone: str
) -> tuple[list, list]:
    n = data.n

    def col(name: str) -> pa.Array | None:
        if name not in resolved:
            return None
        kind, value = resolved[name]
        return _trim(data.columns[value]) if kind == "column" else _const(value.strip(), n)

    product = lines.product_id
    name_col = col("product_name")
    names = _most_frequent_names(product, name_col, lines.unit_price) if name_col is not None else {}
    category_col = col("category")
    categories = (
        _most_frequent_names(product, category_col, lines.unit_price) if category_col is not None else {}
    )
    prices = _median_positive(product, lines.unit_price)
    currencies = _most_frequent_names(product, lines.currency, lines.unit_price)
    fallback_currency = next(
        (
            v
            for v in Counter(lines.currency.to_pylist()).most_common()
            if re.fullmatch("[A-Z]{3}", v[0] or "")
        ),
        ("XXX", 0),
    )[0]
    products = []
    for pid in sorted(set(pc.unique(product).to_pylist()) - {None}):
        if not 1 <= len(pid) <= 64:
            continue
        currency = currencies.get(pid, "")
        products.append(
            contract.Product(
                product_id=pid,
                product_name=names.get(pid, pid)[:256],
                category=(categories.get(pid) or "uncategorised")[:64],
                base_price=prices.get(pid, 0.0),
                currency=currency if re.fullmatch("[A-Z]{3}", currency) else fallback_currency,
            )
        )
    store_names_col = col("store_name")
    store_names = (
        _most_frequent_names(lines.store_id, store_names_col, lines.unit_price)
        if store_names_col is not None
        else {}
    )
    channels = _most_frequent_names(
        lines.store_id,
        pc.if_else(pc.is_in(lines.channel, pa.array(["store", "online"])), lines.channel, ""),
        lines.unit_price,
    )
    country_col = col("country_code")
    countries = (
        _most_frequent_names(lines.store_id, pc.utf8_upper(country_col), lines.unit_price)
        if country_col is not None
        else {}
    )
    stores = []
    for sid in sorted(set(pc.unique(lines.store_id).to_pylist()) - {None}):
        if not 1 <= len(sid) <= 64:
            continue
        country = countries.get(sid)
        stores.append(
            contract.Store(
                store_id=sid,
                store_name=store_names.get(sid, sid)[:256],
                channel=channels.get(sid, "store"),
                country_code=country if country and re.fullmatch("[A-Z]{2}", country) else None,
                timezone=timezone,
            )
        )
    return products, stores


# ---- writing -----------------------------------------------------------------------------------
def _merge(typed: list, raw: pa.Array) -> list:
    """Typed values, with the raw text where typing failed, so the validator sees the bad value."""
    raws = raw.to_pylist()
    return [t if t is not None else r for t, r in zip(typed, raws)]


class _Writer:
    def __init__(self, lines: _Lines):
        self.lines = lines
        self.encoder = msgspec.json.Encoder()
        self.decoder = msgspec.json.Decoder(contract.Event)
        self.datetimes: dict[int, dt.datetime] = {}
        self.valid = 0
        self.invalid: Counter = Counter()

    def _timestamps(self, take: pa.Array) -> list:
        """UTC datetimes (one object per distinct instant), the raw text where parsing failed."""
        chunk = self.lines.ts.take(take)
        values = chunk.fill_null(0).to_numpy()
        uniques, inverse = np.unique(values, return_inverse=True)
        cache = self.datetimes
        for v in uniques.tolist():
            if v not in cache:
                cache[v] = _EPOCH + dt.timedelta(microseconds=v)
        objects = [cache[v] for v in uniques.tolist()]
        out = [objects[i] for i in inverse.tolist()]
        if chunk.null_count:
            raw = self.lines.ts_raw.take(take).to_pylist()
            for k in np.flatnonzero(chunk.is_null().to_numpy(zero_copy_only=False)).tolist():
                out[k] = raw[k]
        return out

    def encode(self, idx: np.ndarray) -> bytes:
        """Encode the rows `idx` (in that order) as JSON lines of contract structs."""
        L = self.lines
        take = pa.array(idx, pa.int64())

        def get(a: pa.Array, raw: pa.Array | None = None) -> list:
            values = a.take(take).to_pylist()
            return _merge(values, raw.take(take)) if raw is not None and None in values else values

        m = len(idx)
        types = L.event_type[idx]
        ids, ts = get(L.event_id), self._timestamps(take)
        store, product = get(L.store_id), get(L.product_id)
        qty, price = get(L.quantity, L.quantity_raw), get(L.unit_price, L.price_raw)
        currency, channel = get(L.currency), get(L.channel)
        customer, order = get(L.customer_id), get(L.order_id)
        promo = get(L.on_promo, L.on_promo_raw) if L.on_promo is not None else [False] * m
        discount = get(L.discount_pct, L.discount_raw) if L.discount_pct is not None else [0.0] * m
        # every row as an order line first (a zip is much faster than indexing), then the few
        # adjustments replaced
        classes = (contract.OrderEvent, contract.ReturnEvent, contract.OrderEvent)
        events = [
            classes[t](
                event_id=i, event_ts=e, store_id=s, product_id=p, quantity=q, unit_price=u,
                currency=c, channel=h, on_promo=o, discount_pct=d, customer_id=cu, order_id=oi,
            )
            for t, i, e, s, p, q, u, c, h, o, d, cu, oi in zip(
                types.tolist(), ids, ts, store, product, qty, price, currency, channel, promo, discount,
                customer, order,
            )
        ]  # fmt: skip
        adjustments = np.flatnonzero(types == ADJUSTMENT).tolist()
        if adjustments:
            reason = get(L.reason)
            for k in adjustments:
                events[k] = contract.InventoryAdjustment(
                    event_id=ids[k], event_ts=ts[k], store_id=store[k], product_id=product[k],
                    quantity=qty[k], reason=reason[k],
                )  # fmt: skip
        buf = self.encoder.encode_lines(events)
        self._check(buf, m)
        return buf

    def _check(self, buf: bytes, m: int) -> None:
        """Count the lines that decode against the contract, and why the others do not.

        decode_lines() checks the whole chunk in one call and names the first bad line (`$[k]`);
        counting resumes after it, so a chunk costs one pass however many bad lines it has.
        """
        starts = np.concatenate([[0], np.flatnonzero(np.frombuffer(buf, np.uint8) == 10) + 1]).tolist()
        view, pos = memoryview(buf), 0
        while pos < m:
            try:
                self.decoder.decode_lines(view[starts[pos] :])
            except msgspec.ValidationError as e:
                found = re.search(r"`\$\[(\d+)\]", str(e))
                bad = pos + int(found.group(1)) if found else pos
                self.valid += bad - pos
                self.invalid[_error_kind(str(e))] += 1
                pos = bad + 1
            else:
                self.valid += m - pos
                return


def _error_kind(message: str) -> str:
    """msgspec's message -> the dead-letter reason `pipelines.parsing` gives it (for the manifest)."""
    found = re.search(r" - at `\$(?:\[\d+\])?\.(\w+)`", message)
    name = found.group(1) if found else None
    if message.startswith("Number out of range"):
        return "non_finite_number"
    if name == "event_ts":
        return "invalid_timestamp"
    if message.startswith("Expected `") and ", got `" in message:
        return "wrong_type"
    if name == "quantity":
        return "invalid_quantity"
    if name == "unit_price" and ">= 0" in message:
        return "negative_price"
    return "invalid_value"


def _replace_old_outputs(events_dir: Path, prefix: str) -> list[str]:
    pattern = re.compile(rf"^{re.escape(prefix)}-(\d{{4}}-\d{{2}}|undated)\.jsonl$")
    removed = []
    if events_dir.is_dir():
        for p in sorted(events_dir.iterdir()):
            if pattern.match(p.name):
                p.unlink()
                removed.append(p.name)
    return removed


def _iso(us: int) -> str:
    return (_EPOCH + dt.timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")


# ---- the entry point -----------------------------------------------------------------------------
def import_orders(
    path: Path,
    out: Path,
    *,
    format: Format,
    mapping: dict[str, str] | None = None,
    ts_format: str | None = None,
    timezone: str | None = None,
    defaults: dict[str, str] | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    progress: Progress | None = None,
    prefix: str | None = None,
) -> dict[str, Any]:
    """Import an order-line CSV export into the landing layout under `out`; returns the manifest.

    `progress(stage, done, total)` is called at each stage ("read", "parse", "dimensions",
    "write" with rows written so far, "done"). Raises ValueError for a wrong header, mapping,
    default or time zone; bad cells never raise, they become events the validator rejects.
    """
    path, out = Path(path), Path(out)
    tick: Progress = progress or (lambda stage, done, total: None)
    if format not in ("online-retail", "generic"):
        raise ValueError(f"unknown format {format!r}; use online-retail or generic")
    if format == "online-retail" and (mapping or defaults):
        raise ValueError("--map/--set apply to --format generic; online-retail has a fixed mapping")
    if start and end and start > end:
        raise ValueError(f"start {start} is after end {end}")
    prefix = prefix or ("oretail" if format == "online-retail" else "orders")
    if not re.fullmatch(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*", prefix):
        raise ValueError(f"prefix {prefix!r} must be letters, digits, '_', '.', '-'")
    timezone = timezone or (ONLINE_RETAIL_TIMEZONE if format == "online-retail" else "UTC")
    _zone(timezone)
    if format == "online-retail":
        ts_format = ts_format or ONLINE_RETAIL_TS_FORMAT

    tick("read", 0, 0)
    data = read_csv_strings(path)
    tick("parse", 0, data.n)
    if format == "online-retail":
        lines = _online_retail_lines(data, path, ts_format, timezone, prefix)
        resolved = None
    else:
        resolved = resolve_mapping(list(data.columns), mapping, defaults)
        lines = _generic_lines(data, resolved, ts_format, timezone, prefix)

    tick("dimensions", 0, data.n)
    if format == "online-retail":
        products, stores = _online_retail_dims(data, path, lines)
    else:
        products, stores = _generic_dims(data, resolved, lines, timezone)

    # time order: sort by UTC event time, ties keep file order; undated rows go last
    dated = lines.ts.is_valid().to_numpy(zero_copy_only=False)
    ts_us = lines.ts.fill_null(0).to_numpy()
    keep = np.ones(data.n, dtype=bool)
    day = ts_us // 86_400_000_000
    if start is not None:
        keep &= ~dated | (day >= (start - _EPOCH.date()).days)
    if end is not None:
        keep &= ~dated | (day <= (end - _EPOCH.date()).days)
    rows = np.flatnonzero(keep)
    order = rows[np.lexsort((rows, np.where(dated[rows], ts_us[rows], np.iinfo(np.int64).max)))]
    month = np.where(
        dated[order], ts_us[order].astype("datetime64[us]").astype("datetime64[M]").astype(np.int64), -1
    )
    bounds = np.flatnonzero(np.diff(month)) + 1
    groups = np.split(order, bounds) if len(order) else []

    events_dir = out / landing.EVENTS_DIR
    events_dir.mkdir(parents=True, exist_ok=True)
    replaced = _replace_old_outputs(events_dir, prefix)
    writer = _Writer(lines)
    files: dict[str, int] = {}
    done = 0
    tick("write", 0, len(order))
    for group in groups:
        first = int(month[done])
        label = "undated" if first < 0 else str(np.datetime64(first, "M"))
        name = f"{prefix}-{label}.jsonl"
        tmp = events_dir / f"{prefix}-{label}.tmp"  # not matched by the backfill's *.jsonl* glob
        tmp.write_bytes(writer.encode(group))
        os.replace(tmp, events_dir / name)
        files[f"{landing.EVENTS_DIR}/{name}"] = len(group)
        done += len(group)
        tick("write", done, len(order))
    landing.write_dimensions(out, products, stores)

    written_types = lines.event_type[order]
    ids_written = lines.event_id.take(pa.array(order, pa.int64()))
    duplicates = len(order) - pc.count_distinct(ids_written).as_py() if len(order) else 0
    dated_written = ts_us[order][dated[order]]
    manifest: dict[str, Any] = {
        "producer": "pipelines.importers",
        "source": str(path),
        "format": format,
        "parameters": {
            "ts_format": ts_format,
            "timezone": timezone,
            "mapping": {k: v for k, (kind, v) in (resolved or {}).items() if kind == "column"} or None,
            "defaults": {k: v for k, (kind, v) in (resolved or {}).items() if kind == "default"} or None,
            "start": start.isoformat() if start else None,
            "end": end.isoformat() if end else None,
            "prefix": prefix,
        },
        "rows_read": data.n,
        "rows_outside_range": int(data.n - len(order)),
        "skipped": {
            "malformed_csv_row": len(data.skipped),
            "examples": data.skipped[:20],
        },
        "events_written": len(order),
        "events_by_type": {name: int((written_types == code).sum()) for code, name in enumerate(_TYPE_NAMES)},
        "files": files,
        "replaced_files": replaced,
        "products": len(products),
        "stores": len(stores),
        "date_range": {
            "first_event_ts": _iso(int(dated_written.min())) if len(dated_written) else None,
            "last_event_ts": _iso(int(dated_written.max())) if len(dated_written) else None,
            "undated_events": int(len(order) - len(dated_written)),
        },
        "notes": {k: v for k, v in sorted(lines.notes.items()) if v}
        | ({"invalid_utf8_cells_replaced": data.invalid_utf8_cells} if data.invalid_utf8_cells else {}),
        "duplicates_expected": int(duplicates),
        "contract_check": {
            "valid": writer.valid,
            "invalid": sum(writer.invalid.values()),
            "invalid_by_reason": dict(sorted(writer.invalid.items())),
        },
    }
    if format == "online-retail":
        manifest["credit"] = ONLINE_RETAIL_CREDIT
    landing.write_manifest(out, manifest)
    tick("done", len(order), len(order))
    return manifest
