"""The dashboard in a real browser, and the gold reporting views behind it.

A small simulated lakehouse (2 stores x 3 products, 6 weeks, bad and duplicate lines) is backfilled and built
with dbt; then `lakehouse dashboard` is started on a free port and driven by headless Chromium through Selenium
and Debian's chromium-driver (no browser download): before any forecast the page loads without errors, the
demand chart renders and every page says what to run next; after `lakehouse forecast` and a rebuild, the chart
carries the forecast and its intervals, and choosing another product redraws it with that product's data.

Needs `chromium` and `chromium-driver` (apt-get install -y chromium chromium-driver; .ci/run installs them);
the browser tests skip, saying so, when either is missing. The view checks and the no-browser checks always run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from netutil import free_port  # tests/ is on sys.path

from dashboards import data
from pipelines import backfill, transform, warehouse
from pipelines.config import Settings
from pipelines.simulate import simulate

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
START, DAYS = dt.date(2024, 5, 1), 42
APP = Path(data.__file__).with_name("app.py")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="Debian's chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)")


def _build(settings: Settings, select: list[str] | None = None) -> None:
    result = transform.build(settings, select=select)
    assert result.ok, [(n.name, n.status, n.message) for n in result.problems()] + result.errors


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """Backfilled and built with dbt, no forecast yet."""
    root = tmp_path_factory.mktemp("dashboard")
    simulate(root / "sim", days=DAYS, stores=2, products=3, start=START, seed=11, bad_rate=0.03, dup_rate=0.03,
             late_rate=0.0)
    settings = Settings(home=root / "lake")
    result = backfill.run(str(root / "sim" / "events" / "*.jsonl"), str(root / "sim" / "dims"), settings, now=NOW,
                          workers=1)
    assert result.reconciles and sum(result.dead_letters.values()) > 0
    _build(settings)
    return settings


def _forecast(settings: Settings) -> None:
    from ml import job

    job.run(settings, horizon=14, models_=("snaive", "tsb"), folds=1, now=NOW, workers=1)
    _build(settings, select=["stg_ml__forecasts+", "stg_ml__forecast_runs+", "stg_ml__backtest_metrics+"])


def _count(settings: Settings, view: str, where: str = "true") -> int:
    with warehouse.connect(settings) as con:
        return con.execute(f"select count(*) from gold.{view} where {where}").fetchone()[0]


# ---- the reporting views and the data layer (no browser) -------------------------------------------
@pytest.mark.slow
def test_reporting_views_are_empty_but_valid_before_any_forecast(lake):
    assert _count(lake, data.DEMAND_VS_FORECAST) == _count(lake, "fact_daily_demand") > 0
    assert _count(lake, data.DEMAND_VS_FORECAST, "forecast_units is not null") == 0
    assert _count(lake, data.FORECAST_ACCURACY) == 0
    assert _count(lake, data.INVENTORY_RISK) == 0
    health = data.health(data.open_source(lake))
    landed = health[health["outcome"] == "landed"]["records"].sum()
    with warehouse.connect(lake) as con:
        silver = sum(con.execute(f"select count(distinct event_id) from silver.{t}").fetchone()[0]
                     for t in ("order_events", "inventory_events"))
        dead = dict(con.execute("select reason, count(*) from bronze.dead_letter group by reason").fetchall())
    assert landed == silver and dead
    by_reason = health[health["outcome"] == "dead_letter"].groupby("reason")["dead_letters"].sum().to_dict()
    assert by_reason == dead


def test_accuracy_by_model_weights_wape_by_actual_units():
    scores = pd.DataFrame({
        "store_id": ["S1", "S1", "S2", "S2"], "product_id": ["P1", "P1", "P1", "P1"],
        "model": ["snaive", "tsb", "snaive", "tsb"], "is_chosen": [False, True, True, False],
        "actual_units": [100.0, 100.0, 10.0, 10.0], "abs_error": [50.0, 20.0, 5.0, 9.0],
        "baseline_abs_error": [50.0, 50.0, 5.0, 5.0], "coverage_80": [0.8, 0.6, 1.0, 0.5],
        "coverage_95": [0.9, 0.7, 1.0, 0.5],
    })
    summary = data.accuracy_by_model(scores).set_index("model")
    assert summary.loc["snaive", "wape"] == pytest.approx(55 / 110)
    assert summary.loc["tsb", "wape"] == pytest.approx(29 / 110)
    chosen = summary.loc["chosen per series"]  # tsb for S1, snaive for S2
    assert chosen["wape"] == pytest.approx(25 / 110) and chosen["baseline_wape"] == pytest.approx(55 / 110)
    assert chosen["series"] == 2 and chosen["coverage_80"] == pytest.approx(0.8)
    assert data.accuracy_by_model(scores.iloc[0:0]).empty


def test_sources_name_tables_per_warehouse_and_gcp_needs_a_project(tmp_path):
    local = data.open_source(Settings(home=tmp_path))
    assert local.table("gold", data.DEMAND_VS_FORECAST) == '"gold"."v_demand_vs_forecast"'
    with pytest.raises(data.Missing):  # no warehouse file yet: an empty state, not a crash
        local.query("select 1")
    with pytest.raises(ValueError, match="LAKEHOUSE_GCP_PROJECT"):
        data.open_source(Settings(home=tmp_path, environment="gcp"))
    bq = data.BigQuerySource(Settings(home=tmp_path, environment="gcp", gcp_project="my-retail-lake",
                                      gold_dataset="gold_eu"), client=object())
    assert bq.table("gold", data.INVENTORY_RISK) == "`my-retail-lake.gold_eu.v_inventory_risk`"
    assert bq.param("store_id") == "@store_id"


def test_app_without_a_warehouse_says_what_to_run(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "nothing-here"))
    app = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not app.exception
    assert "make demo" in app.warning[0].value


# ---- the browser ---------------------------------------------------------------------------------
@contextlib.contextmanager
def _dashboard(settings: Settings, log: Path):
    """`lakehouse dashboard` on a free port; yields its URL; stops its process group (ours) on exit."""
    port = free_port()
    env = {**os.environ, "LAKEHOUSE_HOME": str(settings.home)}
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipelines.cli", "dashboard", "--port", str(port),
                                 "--address", "127.0.0.1"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            with contextlib.suppress(urllib.error.URLError, ConnectionError):
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                    break
            assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
            time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the CLI and the Streamlit server it started
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1600",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 60):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(condition)


def _page_text(driver) -> str:
    return driver.find_element("tag name", "body").text


def _no_exceptions(driver) -> None:
    shown = driver.find_elements("css selector", '[data-testid="stException"]')
    assert not shown, [e.text for e in shown]


def _chart(driver) -> dict:
    """Title and traces of the demand chart, as Plotly holds them in the page."""
    return driver.execute_script("""
        const el = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
        if (!el || !el.data) return null;
        // _fullData: the traces as drawn, with the base64-encoded arrays Plotly receives decoded
        return {title: el.layout.title.text,
                traces: el._fullData.map(t => ({name: t.name, y: Array.from(t.y || []).map(v => v ?? null)}))};
    """)


def _open(driver, url: str) -> dict:
    driver.get(url)
    _wait(driver, lambda d: _chart(d) is not None)
    _wait(driver, lambda d: d.find_elements("css selector", '[data-testid="stStatusWidget"]') == [])
    _no_exceptions(driver)
    return _chart(driver)


def _tabs(driver):
    return driver.find_elements("css selector", '[role="tab"]')


@pytest.mark.slow
@needs_browser
def test_dashboard_in_the_browser_before_and_after_a_forecast(lake, browser, tmp_path):
    log = tmp_path / "dashboard.log"
    # 1. Before any forecast: demand only, and every page says what to run instead of failing.
    with _dashboard(lake, log) as url:
        chart = _open(browser, url)
        names = {t["name"] for t in chart["traces"]}
        assert "actual units" in names and not names & {"forecast", "80% interval", "95% interval"}
        assert "No forecast yet" in _page_text(browser)
        for tab, expected in zip(_tabs(browser)[1:], ("No forecast yet", "Dead-letter rate", "No inventory risk yet")):
            tab.click()
            _wait(browser, lambda d, e=expected: e in _page_text(d), timeout=30)
            _no_exceptions(browser)

    # 2. After a forecast run and a rebuild of the forecast marts and views.
    _forecast(lake)
    assert _count(lake, data.DEMAND_VS_FORECAST, "forecast_units is not null") == 2 * 3 * 14
    assert _count(lake, data.INVENTORY_RISK) > 0
    with _dashboard(lake, log) as url:
        before = _open(browser, url)
        names = {t["name"] for t in before["traces"]}
        assert {"actual units", "forecast", "80% interval", "95% interval"} <= names
        assert "No forecast yet" not in _page_text(browser)

        # choose another product: the chart is redrawn with that series
        product_box = browser.find_element(
            "xpath", '//div[@data-testid="stSelectbox"][.//label[contains(., "Product")]]')
        current = product_box.find_element("css selector", 'input[role="combobox"]').get_attribute("value")
        product_box.find_element("css selector", 'button[aria-label="Open"]').click()
        options = _wait(browser, lambda d: d.find_elements("css selector", '[role="option"]'))
        other = next(o for o in options if o.text and o.text != current)
        other_name = other.text.split(" (")[0]
        other.click()
        _wait(browser, lambda d: other_name in (_chart(d) or {}).get("title", ""))
        after = _chart(browser)
        _no_exceptions(browser)
        actual = {t["name"]: t["y"] for t in after["traces"]}["actual units"]
        assert actual and actual != {t["name"]: t["y"] for t in before["traces"]}["actual units"]

        for tab, expected in zip(_tabs(browser)[1:], ("Better than seasonal naive", "Dead-letter rate",
                                                      "Stockout likely")):
            tab.click()
            _wait(browser, lambda d, e=expected: e in _page_text(d), timeout=30)
            _no_exceptions(browser)


# ---- the same queries on BigQuery (the bqemulator) ---------------------------------------------------
@pytest.mark.slow
def test_dashboard_queries_give_the_same_answers_on_bigquery(lake, tmp_path):
    """dashboards.data's BigQuery dialect and query parameters, against the emulator: the silver tables and the
    local build of the gold views are loaded as tables, and every page's query must agree with DuckDB's."""
    bigquery = pytest.importorskip("google.cloud.bigquery")
    import io
    import json

    import pyarrow as pa
    from bq_emulator import running  # tests/ is on sys.path
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    from pipelines import tables
    from pipelines.sinks import bigquery_rows

    types = {pa.string(): "STRING", pa.int64(): "INT64", pa.int32(): "INT64", pa.float64(): "FLOAT64",
             pa.bool_(): "BOOL", pa.date32(): "DATE"}
    settings = lake.model_copy(update={"environment": "gcp", "gcp_project": "local-dev"})
    local = data.open_source(lake)
    with running(settings.gcp_project, tmp_path / "bqemulator.log") as endpoint:
        client = bigquery.Client(project=settings.gcp_project, credentials=AnonymousCredentials(),
                                 client_options=ClientOptions(api_endpoint=endpoint))
        relations = [(spec.layer, spec.name) for spec in (*map(tables.TABLES.get, tables.SILVER_EVENTS),
                                                          tables.DEMAND_WINDOWS)]
        relations += [("gold", v) for v in (data.DEMAND_VS_FORECAST, data.FORECAST_ACCURACY, data.PIPELINE_HEALTH,
                                            data.INVENTORY_RISK)]
        with warehouse.connect(lake) as con:
            for layer, name in relations:
                arrow = con.sql(f"select * from {local.table(layer, name)}").to_arrow_table()
                arrow = arrow.cast(pa.schema([f.with_type(pa.float64()) if pa.types.is_decimal(f.type) else f
                                              for f in arrow.schema]))  # DuckDB's sums of integers: HUGEINT
                schema = [bigquery.SchemaField(f.name, "TIMESTAMP" if pa.types.is_timestamp(f.type) else types[f.type])
                          for f in arrow.schema]
                client.create_dataset(settings.dataset(layer), exists_ok=True)
                table = client.create_table(bigquery.Table(f"{settings.gcp_project}.{settings.dataset(layer)}.{name}",
                                                           schema=schema))
                rows = "".join(json.dumps(r) + "\n" for r in bigquery_rows((f"{layer}.{name}", arrow)))
                if rows:
                    config = bigquery.LoadJobConfig(source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
                                                    schema=schema)
                    client.load_table_from_file(io.BytesIO(rows.encode()), table, job_config=config).result()
        remote = data.BigQuerySource(settings, client=client)

        def same(name: str, *args, key: list[str]) -> pd.DataFrame:
            a, b = (getattr(data, name)(s, *args) for s in (local, remote))
            assert a is not None and b is not None, name
            a, b = (f.sort_values(key).reset_index(drop=True) for f in (a, b))
            assert list(a.columns) == list(b.columns) and len(a) == len(b), name
            for col in a.columns:
                if col == "minutes_since_last_event":  # read off the clock: the two queries may straddle a minute
                    apart = (a[col].astype(float) - b[col].astype(float)).abs()
                    assert ((apart <= 1) | (a[col].isna() & b[col].isna())).all(), (name, col)
                elif pd.api.types.is_numeric_dtype(a[col]) and not pd.api.types.is_bool_dtype(a[col]):
                    assert a[col].astype(float).fillna(-1).round(6).tolist() == \
                        b[col].astype(float).fillna(-1).round(6).tolist(), (name, col)
            return b

        series = same("series", key=["store_id", "product_id"])
        first = series.iloc[0]
        same("demand_vs_forecast", first["store_id"], first["product_id"], key=["demand_date"])
        same("events_per_minute", key=["minute"])
        same("freshness", key=["last_event_at"])
        same("health", key=["activity_date", "outcome", "entity", "reason"])
        same("accuracy", key=["store_id", "product_id", "model"])
        same("inventory_risk", key=["store_id", "product_id"])
        assert data.pipeline_runs(remote) is None  # run records are local files
        assert data.health(data.BigQuerySource(settings.model_copy(update={"gold_dataset": "nope"}),
                                               client=client)) is None
