"""The local dashboard: demand against forecast, forecast accuracy, pipeline health and inventory risk, read from
the gold reporting views (DuckDB locally, BigQuery with LAKEHOUSE_ENVIRONMENT=gcp) through dashboards.data.

    lakehouse dashboard                     # http://localhost:8501
    streamlit run dashboards/app.py         # the same, by hand

Reads are short read-only queries cached for a few seconds (CACHE_SECONDS), so the page never holds the
warehouse while dbt, a backfill or the stream writes, and refreshing shows new data within that time.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboards import data
from pipelines.config import get_settings

CACHE_SECONDS = 15
MARGIN = {"t": 50, "b": 30}
PCT_COLUMNS = ["wape", "baseline_wape", "coverage_80", "coverage_95"]
BUILD_HINT = "Run `lakehouse transform` (dbt) to build the gold views the dashboard reads."
FORECAST_HINT = "No forecast yet: run `lakehouse forecast`, then `lakehouse transform` to join it to the actuals."


@st.cache_resource
def _source() -> data.Source:
    return data.open_source(get_settings())


@st.cache_data(ttl=CACHE_SECONDS, show_spinner=False)
def _read(name: str, *args) -> pd.DataFrame | None:
    """One cached read of dashboards.data (errors, such as a busy warehouse, are not cached)."""
    return getattr(data, name)(_source(), *args)


def _pct(x) -> str:
    return "-" if x is None or pd.isna(x) else f"{100 * x:.1f}%"


def _empty(frame: pd.DataFrame | None, hint: str) -> bool:
    """Say what to run when a view is missing or empty; True if there is nothing to show."""
    if frame is None:
        st.info(BUILD_HINT)
        return True
    if frame.empty:
        st.info(hint)
        return True
    return False


# ---- demand vs forecast ------------------------------------------------------------------------
def demand_page() -> None:
    st.subheader("Demand vs forecast")
    series = _read("series")
    if _empty(series, "No demand yet: backfill or stream some events, then run `lakehouse transform`."):
        return
    stores = series.drop_duplicates("store_id").set_index("store_id")["store_name"].fillna("").to_dict()
    left, right = st.columns(2)
    store = left.selectbox("Store", list(stores), format_func=lambda s: f"{stores[s]} ({s})".strip(),
                           key="store")
    of_store = series[series["store_id"] == store]
    products = of_store.set_index("product_id")["product_name"].fillna("").to_dict()
    product = right.selectbox("Product", list(products), format_func=lambda p: f"{products[p]} ({p})".strip(),
                              key="product")
    frame = _read("demand_vs_forecast", store, product)
    if _empty(frame, "No rows for this series."):
        return
    history_days = st.slider("Days of history shown", 14, 365, 90, step=7)
    last_actual = frame.loc[frame["actual_units"].notna(), "demand_date"].max()
    if pd.notna(last_actual):
        frame = frame[frame["demand_date"] > last_actual - pd.Timedelta(days=history_days)]
    st.plotly_chart(demand_figure(frame, f"{stores[store]} / {products[product]}"), use_container_width=True,
                    key="demand_chart")
    forecast = frame[frame["forecast_units"].notna()]
    if forecast.empty:
        st.info(FORECAST_HINT)
        return
    scores = _read("accuracy")
    model = forecast["forecast_model"].iloc[0]
    mine = None if scores is None else scores[(scores["store_id"] == store) & (scores["product_id"] == product)
                                              & scores["is_chosen"]]
    cols = st.columns(4)
    cols[0].metric("Model (chosen by backtest)", model)
    cols[1].metric("Forecast, next 7 days", f"{forecast['forecast_units'].head(7).sum():,.0f} units")
    if mine is not None and not mine.empty:
        row = mine.iloc[0]
        cols[2].metric("Backtest WAPE", _pct(row["wape"]), delta=_pct(row["wape"] - row["baseline_wape"])
                       if pd.notna(row["baseline_wape"]) else None, delta_color="inverse",
                       help="Delta: against seasonal naive on the same points (negative is better).")
        cols[3].metric("Coverage 80% / 95%", f"{_pct(row['coverage_80'])} / {_pct(row['coverage_95'])}")
    st.caption(f"Run {forecast['forecast_run_id'].iloc[0]}; shaded: 80% (dark) and 95% (light) prediction "
               "intervals.")


def demand_figure(frame: pd.DataFrame, title: str) -> go.Figure:
    fig = go.Figure()
    future = frame[frame["forecast_units"].notna()]
    band = {"mode": "lines", "line": {"width": 0}, "hoverinfo": "skip", "showlegend": True}
    for level, alpha in ((95, 0.15), (80, 0.3)) if not future.empty else ():
        fig.add_trace(go.Scatter(x=future["demand_date"], y=future[f"forecast_upper_{level}"], name=f"{level}% upper",
                                 **{**band, "showlegend": False}))
        fig.add_trace(go.Scatter(x=future["demand_date"], y=future[f"forecast_lower_{level}"],
                                 name=f"{level}% interval", fill="tonexty", fillcolor=f"rgba(31,119,180,{alpha})",
                                 **band))
    fig.add_trace(go.Scatter(x=frame["demand_date"], y=frame["actual_units"], name="actual units",
                             mode="lines+markers", marker={"size": 4}, line={"color": "#333"}))
    if not future.empty:
        fig.add_trace(go.Scatter(x=future["demand_date"], y=future["forecast_units"], name="forecast",
                                 mode="lines", line={"color": "#1f77b4", "width": 2}))
    stockouts = frame[frame["stockout"].fillna(False).astype(bool)]
    if not stockouts.empty:
        fig.add_trace(go.Scatter(x=stockouts["demand_date"], y=stockouts["actual_units"], name="stock-out",
                                 mode="markers", marker={"symbol": "x", "color": "#d62728", "size": 8}))
    fig.update_layout(title=title, xaxis_title="date", yaxis_title="units per day", hovermode="x unified",
                      margin=MARGIN, legend={"orientation": "h", "y": -0.2})
    return fig


# ---- forecast accuracy -------------------------------------------------------------------------
def accuracy_page() -> None:
    st.subheader("Forecast accuracy (latest run, rolling-origin backtest)")
    scores = _read("accuracy")
    if _empty(scores, FORECAST_HINT):
        return
    summary = data.accuracy_by_model(scores)
    chosen = summary[summary["model"] == "chosen per series"].iloc[0]
    cols = st.columns(4)
    cols[0].metric("WAPE, chosen models", _pct(chosen["wape"]))
    cols[1].metric("WAPE, seasonal naive", _pct(chosen["baseline_wape"]))
    gain = 1 - chosen["wape"] / chosen["baseline_wape"] if chosen["baseline_wape"] else None
    cols[2].metric("Better than seasonal naive by", _pct(gain))
    cols[3].metric("Coverage 80% / 95%", f"{_pct(chosen['coverage_80'])} / {_pct(chosen['coverage_95'])}")
    st.markdown("**By model** (weighted WAPE over all series it ran on)")
    st.dataframe(summary.style.format(dict.fromkeys(PCT_COLUMNS, _pct)), hide_index=True, use_container_width=True)
    by_series = scores[scores["is_chosen"]].copy()
    by_series["series"] = by_series["store_name"].fillna(by_series["store_id"]) + " / " + \
        by_series["product_name"].fillna(by_series["product_id"])
    fig = go.Figure([
        go.Bar(x=by_series["series"], y=by_series["wape"], name="chosen model",
               text=by_series["model"], hovertemplate="%{x}<br>%{text}: %{y:.1%}<extra></extra>"),
        go.Bar(x=by_series["series"], y=by_series["baseline_wape"], name="seasonal naive"),
    ])
    fig.update_layout(title="WAPE by series", barmode="group", yaxis_tickformat=".0%", margin=MARGIN)
    st.plotly_chart(fig, use_container_width=True, key="accuracy_chart")
    shown = by_series[["series", "model", "points", *PCT_COLUMNS, "live_wape", "note"]]
    st.dataframe(shown.style.format(dict.fromkeys([*PCT_COLUMNS, "live_wape"], _pct)), hide_index=True,
                 use_container_width=True)


# ---- pipeline health ---------------------------------------------------------------------------
def health_page() -> None:
    st.subheader("Pipeline health")
    fresh = _read("freshness")
    now = pd.Timestamp.now(tz="UTC")
    cols = st.columns(4)
    if fresh is not None and not fresh.empty and pd.notna(fresh["last_event_at"].iloc[0]):
        last = pd.Timestamp(fresh["last_event_at"].iloc[0])
        cols[0].metric("Newest event", f"{last:%Y-%m-%d}", help=f"Event time of the newest event in silver: {last}.")
        cols[1].metric("Freshness", _age(now - last))
        published = fresh["last_published_at"].iloc[0]
        if pd.notna(published):
            cols[2].metric("Last message from Pub/Sub", _age(now - pd.Timestamp(published)) + " ago")
    else:
        cols[0].metric("Newest event", "none yet")
    health = _read("health")
    if health is not None and not health.empty:
        records, dead = health["records"].sum(), health["dead_letters"].sum()
        cols[3].metric("Dead-letter rate", _pct(dead / records if records else None),
                       help=f"{dead:,} of {records:,} records")
    left, right = st.columns(2)
    with left:
        per_minute = _read("events_per_minute")
        if per_minute is not None and not per_minute.empty:
            fig = go.Figure(go.Bar(x=per_minute["minute"], y=per_minute["events"]))
            fig.update_layout(title="Events per minute (event time, last hour with data)", margin=MARGIN)
            st.plotly_chart(fig, use_container_width=True, key="events_chart")
        else:
            st.info("No events in silver yet.")
    with right:
        if health is None:
            st.info(BUILD_HINT)
        else:
            reasons = (health[health["outcome"] == "dead_letter"].groupby(["stage", "reason"], as_index=False)
                       ["records"].sum().sort_values("records", ascending=False).head(10))
            if reasons.empty:
                st.success("No dead letters.")
            else:
                fig = go.Figure(go.Bar(x=reasons["records"], y=reasons["reason"], orientation="h",
                                       text=reasons["stage"]))
                fig.update_layout(title="Top dead-letter reasons", yaxis_autorange="reversed", margin=MARGIN)
                st.plotly_chart(fig, use_container_width=True, key="reasons_chart")
    windows = _read("stream_windows")
    if windows is not None and not windows.empty:
        st.markdown("**Stream windows** (silver.demand_windows, newest first)")
        st.dataframe(windows, hide_index=True, use_container_width=True)
    reconciliation_section()
    runs = _read("pipeline_runs")
    if runs is not None:
        st.markdown("**Latest runs** (ops.pipeline_runs)")
        if runs.empty:
            st.info("No run records yet.")
        else:
            st.dataframe(runs, hide_index=True, use_container_width=True)


@st.cache_data(ttl=60, show_spinner="Reconciling the archive with the lakehouse ...")
def _reconcile() -> dict | None:
    from pipelines import reconcile

    settings = get_settings()
    if settings.environment != "local" or not list((settings.archive_dir / "events").glob("*.jsonl")):
        return None
    r = reconcile.reconcile(settings)
    return {"ok": r.ok, "archive_lines": r.archive_lines, "silver_rows": r.silver_rows,
            "dead_letters": r.dead_letters, "missing": len(r.missing_ids) + len(r.missing_lines),
            "doubled": len(r.doubled_ids) + len(r.doubled_lines)}


def reconciliation_section() -> None:
    st.markdown("**Reconciliation** (what was published against what landed)")
    r = _reconcile()
    if r is None:
        st.info("No published archive to reconcile (only the stream writes one: `lakehouse simulate --publish`).")
    elif r["ok"]:
        st.success(f"Reconciles: {r['archive_lines']:,} published lines = {r['silver_rows']:,} silver rows + "
                   f"{r['dead_letters']:,} dead letters (copies counted once).")
    else:
        st.error(f"Does not reconcile: {r['missing']:,} missing, {r['doubled']:,} doubled. Repair with a backfill "
                 "over the archive (README: Streaming).")


def _age(delta: pd.Timedelta) -> str:
    seconds = max(delta.total_seconds(), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


# ---- inventory risk ----------------------------------------------------------------------------
def inventory_page() -> None:
    st.subheader("Inventory risk: forecast demand against stock on hand")
    risk = _read("inventory_risk")
    if _empty(risk, "No inventory risk yet: it needs inventory events and a daily forecast (`lakehouse forecast`)."):
        return
    counts = risk["risk_level"].value_counts()
    cols = st.columns(3)
    for col, level in zip(cols, ("stockout likely", "at risk", "ok")):
        col.metric(level.capitalize(), int(counts.get(level, 0)))
    days = int(risk["forecast_days"].max())
    shown = risk[risk["risk_level"] != "ok"] if st.toggle("Only series at risk", value=True) else risk
    if shown.empty:
        st.success("Stock covers the forecast everywhere.")
        return
    label = shown["store_name"].fillna(shown["store_id"]) + " / " + shown["product_name"].fillna(shown["product_id"])
    fig = go.Figure([
        go.Bar(x=label, y=shown["on_hand"], name="on hand"),
        go.Bar(x=label, y=shown["forecast_units"], name=f"forecast, next {days} days",
               error_y={"type": "data", "symmetric": False,
                            "array": shown["forecast_upper_80"] - shown["forecast_units"]}),
    ])
    fig.update_layout(title="On hand vs forecast demand (error bar: summed upper 80% bounds)", barmode="group",
                      margin=MARGIN)
    st.plotly_chart(fig, use_container_width=True, key="inventory_chart")
    st.dataframe(shown[["risk_level", "store_name", "product_name", "stock_date", "on_hand", "forecast_units",
                        "forecast_upper_80", "shortfall_units", "days_of_cover", "forecast_model"]],
                 hide_index=True, use_container_width=True)


def main() -> None:
    st.set_page_config(page_title="Demand lakehouse", layout="wide")
    settings = get_settings()
    where = (f"BigQuery {settings.gcp_project}" if settings.environment == "gcp"
             else f"DuckDB {settings.warehouse_path}")
    st.title("Demand lakehouse")
    st.caption(f"Reading {where} (gold views, read-only; refreshed every {CACHE_SECONDS} s)")
    if settings.environment == "local" and not settings.warehouse_path.exists():
        st.warning(f"No warehouse at {settings.warehouse_path} yet: run `make demo`, or backfill and "
                   "`lakehouse transform`.")
        return
    pages = {"Demand vs forecast": demand_page, "Forecast accuracy": accuracy_page,
             "Pipeline health": health_page, "Inventory risk": inventory_page}
    for tab, page in zip(st.tabs(list(pages)), pages.values()):
        with tab:
            try:
                page()
            except data.Busy as e:
                st.warning(f"The warehouse is busy ({e}); refresh in a moment.")


main()
