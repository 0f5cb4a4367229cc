"""Demand history for forecasting: read `gold.fact_daily_demand` and cut it into one `Series` per store x product.

    from ml import data
    frame = data.read_demand(settings)                  # DuckDB locally, BigQuery when environment=gcp
    series = data.to_series(frame, freq="D", countries={"S001": "GB"})

The input is dbt's `fact_daily_demand` mart (one row per date x store x product, zero-demand days included);
`DEMAND_COLUMNS` is the contract between that model and this package: dbt's model must keep these names.
Every series is laid on one calendar from the first to the last date in the table, so all forecasts start
the period after the last one with data. Missing days (gaps) stay NaN here; models decide what to do
with them (Prophet skips them, the baselines count them as zero demand), and `Series.issues` says so.
Weekly series (`freq="W"`) sum units over weeks starting Monday, labelled by that Monday.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipelines.config import Settings

#: where the history lives (dbt's mart) and the columns this package reads from it
DEMAND_LAYER, DEMAND_TABLE = "gold", "fact_daily_demand"
DEMAND_COLUMNS = ("demand_date", "store_id", "product_id", "units_ordered", "units_returned", "net_revenue",
                  "avg_unit_price", "on_promo", "stockout")
#: the target: gross units ordered (returns excluded), as the mart defines it
TARGET = "units_ordered"
DEFAULT_COUNTRY = "GB"
FREQS = {"D": "daily", "W": "weekly"}
SEASON = {"D": 7, "W": 52}


@dataclass
class Series:
    """One store x product history on a regular calendar, with what is known about its future."""

    store_id: str
    product_id: str
    freq: str
    dates: np.ndarray  # datetime64[D]: day, or the Monday of the week
    y: np.ndarray  # units ordered; NaN where the period has no row (a gap)
    price: np.ndarray  # average unit price paid, carried forward over zero-demand periods
    promo: np.ndarray  # 1.0 when on promotion (weekly: share of promo days)
    stockout: np.ndarray  # bool: the shelf ran empty, so demand was censored
    country: str = DEFAULT_COUNTRY
    #: planned price/promo for the horizon (None: price carried forward, promotion assumed off)
    future_price: np.ndarray | None = None
    future_promo: np.ndarray | None = None
    #: periods the store sold anything at all (None: unknown); a day the whole store sold nothing is a
    #: closed day, not an intermittent-demand zero
    store_open: np.ndarray | None = None
    #: simulator truth when known: expected demand per period (for the oracle score)
    expected: np.ndarray | None = None
    issues: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str]:
        return self.store_id, self.product_id

    @property
    def season(self) -> int:
        return SEASON[self.freq]

    def future_dates(self, horizon: int) -> np.ndarray:
        step = np.timedelta64(7 if self.freq == "W" else 1, "D")
        return self.dates[-1] + step * np.arange(1, horizon + 1)

    def head(self, n: int) -> Series:
        """The first n periods, for a backtest that knows what this run knows: when the run has planned prices
        and promotions, the next periods' actual ones stand for the plan; when it has none, neither does the
        backtest (its regressors are carried forward as the final forecast's are)."""
        planned = self.future_price is not None
        return Series(self.store_id, self.product_id, self.freq, self.dates[:n], self.y[:n], self.price[:n],
                      self.promo[:n], self.stockout[:n], self.country,
                      future_price=self.price[n:] if planned else None,
                      future_promo=self.promo[n:] if planned else None,
                      store_open=None if self.store_open is None else self.store_open[:n],
                      expected=None if self.expected is None else self.expected[:n], issues=self.issues)


def demand_query(table: str, columns=DEMAND_COLUMNS, before: dt.date | None = None) -> str:
    where = f" WHERE demand_date < DATE '{before.isoformat()}'" if before else ""
    return f"SELECT {', '.join(columns)} FROM {table}{where} ORDER BY store_id, product_id, demand_date"


def read_demand(settings: Settings, before: dt.date | None = None) -> pd.DataFrame:
    """The daily demand mart as a DataFrame (columns DEMAND_COLUMNS), days before `before` only (the job passes
    today: a day still streaming in is not a complete period)."""
    if settings.environment == "gcp":
        from google.cloud import bigquery

        client = bigquery.Client(project=settings.gcp_project)
        return client.query(demand_query(demand_table_sql(settings), before=before)).to_dataframe()
    import duckdb

    from pipelines import warehouse

    with warehouse.connect(settings) as con:
        try:
            return con.execute(demand_query(demand_table_sql(settings), before=before)).df()
        except duckdb.CatalogException as e:
            raise ValueError(f"{DEMAND_LAYER}.{DEMAND_TABLE} is not in {settings.warehouse_path}: build it with "
                             f"dbt first (lakehouse transform)") from e


def read_series(settings: Settings, freq: str = "D", *, before: dt.date | None = None, stores: tuple[str, ...] = (),
                keys: set[tuple[str, str]] | None = None) -> list[Series]:
    """The mart's series, only `stores`' or the (store, product) `keys` when given, on the whole mart's calendar
    (so they end where they would among all series). Choosing before cutting matters: every series runs to the
    calendar's last day, and a store of another dataset years older would be cut into years of periods."""
    frame = read_demand(settings, before=before)
    span = (frame["demand_date"].min(), frame["demand_date"].max()) if len(frame) else None
    if stores:
        frame = frame[frame["store_id"].isin(stores)]
    if keys is not None:
        frame = frame[pd.MultiIndex.from_frame(frame[["store_id", "product_id"]]).isin(list(keys))]
    return to_series(frame, freq, read_countries(settings), calendar=span)


def demand_table_sql(settings: Settings) -> str:
    """The mart's name as the warehouse's SQL spells it."""
    if settings.environment == "gcp":
        return f"`{settings.bigquery_table(DEMAND_LAYER, DEMAND_TABLE).replace(':', '.')}`"
    return f"{DEMAND_LAYER}.{DEMAND_TABLE}"


def read_countries(settings: Settings) -> dict[str, str]:
    """store_id -> country code from the store dimension (empty when it cannot be read)."""
    if settings.environment == "gcp":
        return {}
    from pipelines import tables, warehouse

    try:
        with warehouse.connect(settings) as con:
            rows = con.execute(f"SELECT store_id, country_code FROM {tables.dimension('stores').fqn}").fetchall()
    except Exception:  # no stores loaded yet: every series falls back to the default country
        return {}
    return {s: c for s, c in rows if c}


def to_series(frame: pd.DataFrame, freq: str = "D", countries: Mapping[str, str] | None = None,
              default_country: str = DEFAULT_COUNTRY, calendar: tuple | None = None) -> list[Series]:
    """One Series per (store, product), on the calendar from the table's first to last date (or from
    `calendar` = (first, last) when the frame holds only some series, as in a Beam worker)."""
    if freq not in FREQS:
        raise ValueError(f"freq must be one of {', '.join(FREQS)}, got {freq!r}")
    missing = [c for c in ("demand_date", "store_id", "product_id", TARGET) if c not in frame.columns]
    if missing:
        raise ValueError(f"demand history lacks column(s) {', '.join(missing)}")
    if frame.empty:
        return []
    df = frame.copy()
    df["demand_date"] = pd.to_datetime(df["demand_date"]).dt.normalize()
    for col, default in (("avg_unit_price", np.nan), ("on_promo", False), ("stockout", False)):
        if col not in df.columns:
            df[col] = default
    df["y"] = pd.to_numeric(df[TARGET], errors="coerce").astype(float)
    df["price"] = pd.to_numeric(df["avg_unit_price"], errors="coerce").astype(float)
    df["promo"] = df["on_promo"].fillna(False).astype(float)
    df["stockout"] = df["stockout"].fillna(False).astype(bool)
    first, last = calendar or (df["demand_date"].min(), df["demand_date"].max())
    calendar = pd.date_range(pd.Timestamp(first), pd.Timestamp(last), freq="D")
    countries = countries or {}
    store_units = df.groupby(["store_id", "demand_date"])["y"].sum()
    out = []
    for (store, product), g in df.groupby(["store_id", "product_id"], sort=True):
        # from the series' own first day: periods before it are not gaps (two datasets years apart in one
        # warehouse must not give each other's series years of missing values); all end on the last day
        own = calendar[calendar >= g["demand_date"].min()]
        g = g.drop_duplicates("demand_date", keep="last").set_index("demand_date").reindex(own)
        if freq == "W":
            g = _weekly(g)
        issues = []
        gaps = int(g["y"].isna().sum())
        if gaps:
            issues.append(f"{gaps} missing period(s)")
        price = g["price"].where(g["price"] > 0).ffill().bfill().to_numpy(float)
        sold = store_units.loc[store].reindex(own).fillna(0.0)
        if freq == "W":
            sold = sold.groupby(sold.index.to_period("W-SUN").start_time).sum().reindex(g.index).fillna(0.0)
        out.append(Series(str(store), str(product), freq, g.index.to_numpy().astype("datetime64[D]"),
                          g["y"].to_numpy(float), price, g["promo"].fillna(0.0).to_numpy(float),
                          g["stockout"].fillna(False).to_numpy(bool),
                          country=countries.get(str(store), default_country), issues=issues,
                          store_open=sold.to_numpy() > 0))
    return out


def _weekly(daily: pd.DataFrame) -> pd.DataFrame:
    """Daily rows -> weeks starting Monday (labelled by the Monday); a week with no row at all is a gap.
    Partial weeks at either end of the calendar are left out: their totals are not comparable."""
    week = daily.index.to_period("W-SUN").start_time
    grouped = daily.groupby(week)
    days = grouped.size()
    return pd.DataFrame({
        "y": grouped["y"].sum(min_count=1),
        "price": grouped["price"].mean(),
        "promo": grouped["promo"].mean(),
        "stockout": grouped["stockout"].agg(lambda s: bool(s.fillna(False).any())),
    })[days == 7]
