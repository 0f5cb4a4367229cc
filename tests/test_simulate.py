"""The simulator: seeded, decodable, consistent with its truth, and its manifest counts are exact."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path

import msgspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines import contract, faults, landing
from pipelines.simulate import simulate

DECODER = msgspec.json.Decoder(contract.Event)
#: Covers Christmas (stores closed), Boxing Day and New Year's Day.
ARGS = {"days": 28, "stores": 3, "products": 15, "start": dt.date(2024, 12, 10), "seed": 3}
RATES = {"bad_rate": 0.05, "dup_rate": 0.05, "late_rate": 0.05}
FAR_FUTURE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    simulate(out, **ARGS, **RATES)
    return out


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    simulate(out, **ARGS)
    return out


@pytest.fixture(scope="module")
def manifest(sim) -> dict:
    return json.loads((sim / landing.MANIFEST).read_text())


@pytest.fixture(scope="module")
def truth(sim) -> dict[str, np.ndarray]:
    table = pq.read_table(sim / landing.TRUTH_DIR / "daily_demand.parquet")
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def read_lines(root: Path) -> list[tuple[str, int, bytes]]:
    """(file, line number, raw line) for every line of every event file, the way a reader sees them."""
    rows = []
    for path in sorted((root / landing.EVENTS_DIR).glob("*.jsonl")):
        lines = path.read_bytes().split(b"\n")
        assert lines[-1] == b""  # every line ends with a newline
        rows += [(f"{landing.EVENTS_DIR}/{path.name}", n, line) for n, line in enumerate(lines[:-1], 1)]
    return rows


def dimension(root: Path, name: str) -> list:
    decoder = msgspec.json.Decoder(contract.DIMENSIONS[name])
    lines = (root / landing.DIMS_DIR / f"{name}.jsonl").read_bytes().splitlines()
    return [decoder.decode(line) for line in lines]


def known_ids(root: Path) -> tuple[set[str], set[str]]:
    products = {p.product_id for p in dimension(root, "products")}
    return products, {s.store_id for s in dimension(root, "stores")}


def valid_events(root: Path) -> list[tuple[str, int, contract.Event]]:
    """Lines that pass every check (decoding, dimensions, clock); the rest are the bad lines."""
    products, stores = known_ids(root)
    out = []
    for file, n, line in read_lines(root):
        try:
            event = DECODER.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError):
            continue
        if len(line) <= faults.OVERSIZED_BYTES and event.store_id in stores and event.product_id in products \
                and event.event_ts < FAR_FUTURE:
            out.append((file, n, event))
    return out


def unique(events: list[tuple[str, int, contract.Event]]) -> dict[str, contract.Event]:
    return {e.event_id: e for _, _, e in events}


def truth_keys(truth: dict[str, np.ndarray]) -> list[tuple[dt.date, str, str]]:
    columns = (truth[name].tolist() for name in ("date", "store_id", "product_id"))
    return list(zip(*columns, strict=True))


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- determinism ------------------------------------------------------------------------------------------
def test_same_seed_gives_identical_files(sim, tmp_path):
    simulate(tmp_path, **ARGS, **RATES)
    assert tree(tmp_path) == tree(sim)


def test_another_seed_gives_other_data(sim, tmp_path):
    simulate(tmp_path, **{**ARGS, "seed": 4}, **RATES)
    assert tree(tmp_path)["events/2024-12-12.jsonl"] != tree(sim)["events/2024-12-12.jsonl"]


def test_injected_faults_leave_the_valid_events_and_the_truth_alone(sim, clean):
    assert tree(sim)["truth/daily_demand.parquet"] == tree(clean)["truth/daily_demand.parquet"]
    clean_lines = {line for _, _, line in read_lines(clean)}
    assert {landing.encode(e) for e in unique(valid_events(sim)).values()} == clean_lines


# ---- events and dimensions --------------------------------------------------------------------------------
def test_every_valid_line_is_a_contract_event_encoded_like_landing_encode(sim):
    events = valid_events(sim)
    assert events
    lines = {(file, n): line for file, n, line in read_lines(sim)}
    for file, n, event in events:
        assert lines[file, n] == landing.encode(event)
        assert event.event_id.startswith(f"sim-{ARGS['seed']}-")


def test_dimensions_decode_and_cover_the_events(sim):
    products, stores = known_ids(sim)
    assert products == {f"P{i:04d}" for i in range(1, ARGS["products"] + 1)}
    assert stores == {f"S{i:03d}" for i in range(1, ARGS["stores"] + 1)}
    for store in dimension(sim, "stores"):
        assert (store.country_code, store.timezone, store.channel) == ("GB", "Europe/London", "store")
    for product in dimension(sim, "products"):
        assert product.currency == "GBP" and product.base_price > 0


def test_returns_are_negative_and_refer_to_an_earlier_sale(sim):
    events = unique(valid_events(sim)).values()
    sales = {(e.order_id, e.product_id): e for e in events if isinstance(e, contract.OrderEvent)}
    returns = [e for e in events if isinstance(e, contract.ReturnEvent)]
    assert returns
    for back in returns:
        sale = sales[back.order_id, back.product_id]
        assert back.quantity < 0
        assert (back.store_id, back.unit_price, back.discount_pct) == (sale.store_id, sale.unit_price,
                                                                       sale.discount_pct)
        assert back.event_ts > sale.event_ts


def test_on_time_events_are_in_event_time_order_and_injections_are_where_the_table_says(sim):
    injections = pq.read_table(sim / landing.TRUTH_DIR / "injections.parquet").to_pylist()
    injected = {(r["file"], r["line"]): r for r in injections}
    lines = {(file, n): line for file, n, line in read_lines(sim)}
    by_file = defaultdict(list)
    for file, n, event in valid_events(sim):
        row = injected.get((file, n))
        assert row is None or (row["injection"] in ("late", "duplicate")
                               and row["event_id"] == event.event_id)
        if row is None:
            assert file == f"{landing.EVENTS_DIR}/{event.event_ts.date()}.jsonl"
            by_file[file].append(event.event_ts)
    assert all(ts == sorted(ts) for ts in by_file.values())
    bad = [r for r in injections if r["injection"] == "bad"]
    assert len(bad) == len(lines) - len(valid_events(sim))
    for row in bad:
        assert faults.FAULTS[row["kind"]].reason == row["reason"]


def test_late_events_arrive_one_to_three_days_late_and_duplicates_are_identical(sim):
    copies = defaultdict(list)
    for file, _, event in valid_events(sim):
        arrived = dt.date.fromisoformat(Path(file).stem)
        copies[event.event_id].append(((arrived - event.event_ts.date()).days, landing.encode(event)))
    lags = Counter(min(lag for lag, _ in c) for c in copies.values())
    assert set(lags) == {0, 1, 2, 3}
    for c in copies.values():
        assert len(c) <= 2 and len({line for _, line in c}) == 1
        if len(c) == 2:
            assert abs(c[1][0] - c[0][0]) <= 1


# ---- the manifest reconciles with the files ---------------------------------------------------------------
def test_manifest_counts_match_the_files(sim, manifest):
    lines = read_lines(sim)
    events = valid_events(sim)
    ids = unique(events)
    assert manifest["files"] == dict(Counter(file for file, _, _ in lines))
    assert manifest["lines_total"] == len(lines) == manifest["valid_lines"] + manifest["bad_lines"]
    assert manifest["valid_lines"] == len(events) == manifest["events_valid"] + manifest["duplicates"]
    assert manifest["events_valid"] == len(ids)
    assert manifest["events_by_type"] == dict(Counter(type(e).__struct_config__.tag for e in ids.values()))
    late = [e for file, _, e in events if Path(file).stem != e.event_ts.date().isoformat()]
    assert manifest["late_lines"] == len(late)
    first_file = defaultdict(lambda: "9999")
    for file, _, e in events:
        first_file[e.event_id] = min(first_file[e.event_id], Path(file).stem)
    late_ids = [i for i, e in ids.items() if first_file[i] > e.event_ts.date().isoformat()]
    assert manifest["late_events"] == len(late_ids)
    assert manifest["late_events"] == round(RATES["late_rate"] * manifest["events_valid"])
    assert manifest["duplicates"] == round(RATES["dup_rate"] * manifest["events_valid"])


def test_manifest_bad_lines_by_kind_and_reason(sim, manifest):
    injections = pq.read_table(sim / landing.TRUTH_DIR / "injections.parquet").to_pylist()
    bad = [r for r in injections if r["injection"] == "bad"]
    by_kind = {k: v for k, v in manifest["bad_lines_by_kind"].items() if v}
    assert by_kind == dict(Counter(r["kind"] for r in bad))
    assert set(by_kind) == set(faults.FAULTS)  # a run with enough bad lines has every kind
    by_reason = {k: v for k, v in manifest["bad_lines_by_reason"].items() if v}
    assert by_reason == dict(Counter(r["reason"] for r in bad))
    assert manifest["bad_lines"] == round(RATES["bad_rate"] * manifest["events_valid"])
    assert manifest["duplicates"] == sum(r["injection"] == "duplicate" for r in injections)
    assert manifest["late_events"] == sum(r["injection"] == "late" for r in injections)
    assert manifest["parameters"]["seed"] == ARGS["seed"]


# ---- the truth --------------------------------------------------------------------------------------------
def test_truth_has_one_row_per_day_store_product(truth, manifest):
    n = ARGS["days"] * ARGS["stores"] * ARGS["products"]
    assert len(truth["date"]) == n == manifest["truth"]["daily_demand_rows"]
    keys = set(truth_keys(truth))
    assert len(keys) == n


def test_truth_is_consistent(truth):
    assert (truth["units_sold"] <= truth["demand"]).all()
    stockout = truth["stockout"]
    assert stockout.any()
    assert (truth["units_sold"][stockout] < truth["demand"][stockout]).all()
    assert (truth["on_hand_end"][stockout] == 0).all()
    assert ((truth["discount_pct"] > 0) == truth["on_promo"]).all()


def test_stock_balances_day_to_day(truth):
    shape = (ARGS["days"], ARGS["stores"] * ARGS["products"])
    on_hand, received, sold, shrunk = (truth[c].reshape(shape) for c in
                                       ("on_hand_end", "received", "units_sold", "shrinkage"))
    assert (on_hand[1:] == on_hand[:-1] + received[1:] - sold[1:] - shrunk[1:]).all()


def test_christmas_day_is_closed(truth, sim):
    christmas = truth["date"] == np.datetime64("2024-12-25")
    assert christmas.sum() == ARGS["stores"] * ARGS["products"]
    assert truth["is_closed"][christmas].all() and truth["is_holiday"][christmas].all()
    assert (truth["expected_demand"][christmas] == 0).all() and (truth["units_sold"][christmas] == 0).all()
    sales = [e for _, _, e in valid_events(sim) if isinstance(e, contract.OrderEvent | contract.ReturnEvent)]
    assert not [e for e in sales if e.event_ts.date() == dt.date(2024, 12, 25)]


def test_events_add_up_to_the_truth(sim, truth):
    sold, returned, on_hand = Counter(), Counter(), {}
    for e in unique(valid_events(sim)).values():
        key = (e.event_ts.date(), e.store_id, e.product_id)  # GB: the UTC date is the local business day
        if isinstance(e, contract.OrderEvent):
            sold[key] += e.quantity
        elif isinstance(e, contract.ReturnEvent):
            returned[key] -= e.quantity
        elif isinstance(e, contract.InventorySnapshot):
            on_hand[key] = e.quantity
    keys = truth_keys(truth)
    assert [sold[k] for k in keys] == truth["units_sold"].tolist()
    assert [returned[k] for k in keys] == truth["units_returned"].tolist()
    assert [on_hand[k] for k in keys] == truth["on_hand_end"].tolist()


@pytest.fixture(scope="module")
def long_truth(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("long")
    simulate(out, days=150, stores=2, products=30, seed=11)
    table = pq.read_table(out / landing.TRUTH_DIR / "daily_demand.parquet")
    return {name: table[name].to_numpy(zero_copy_only=False) for name in table.column_names}


def test_promotions_lift_demand_of_the_same_series(long_truth):
    ratios = []
    for series in set(zip(long_truth["store_id"].tolist(), long_truth["product_id"].tolist(), strict=True)):
        rows = (long_truth["store_id"] == series[0]) & (long_truth["product_id"] == series[1])
        promo, demand = long_truth["on_promo"][rows], long_truth["expected_demand"][rows]
        if promo.any() and (~promo).any():
            ratios.append(demand[promo].mean() / demand[~promo].mean())
    assert len(ratios) > 20
    assert np.mean(ratios) > 1.3 and np.median(ratios) > 1.0


def test_a_share_of_products_is_intermittent(long_truth):
    ids, flags = long_truth["product_id"].tolist(), long_truth["intermittent"].tolist()
    per_product = dict(zip(ids, flags, strict=True))
    assert sum(per_product.values()) == round(0.3 * 30)
    slow = long_truth["intermittent"]
    assert long_truth["expected_demand"][slow].mean() < 1.0 < long_truth["expected_demand"][~slow].mean()
    assert (long_truth["demand"][slow] == 0).mean() > 0.5


# ---- arguments and progress -------------------------------------------------------------------------------
def test_progress_reports_every_simulated_day(tmp_path):
    advances = []
    simulate(tmp_path, days=6, stores=1, products=3, late_rate=0.3, progress=advances.append)
    assert sum(advances) == 6


@pytest.mark.parametrize("bad", [{"days": 0}, {"stores": 0}, {"bad_rate": 1.0}, {"dup_rate": -0.1},
                                 {"country": "XX"}])
def test_bad_arguments_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        simulate(tmp_path, **{"days": 2, "stores": 1, "products": 2, **bad})


def test_a_run_without_sales_still_writes_its_bad_lines(tmp_path):
    manifest = simulate(tmp_path, days=1, stores=1, products=2, start=dt.date(2024, 12, 25), bad_rate=0.5)
    assert manifest["events_by_type"]["order"] == 0
    assert manifest["bad_lines"] == 1 and manifest["lines_total"] == 3
