"""The Airflow DAGs (composer_dags/): they parse cleanly, follow the house rules, build Google's operators with
the right arguments without calling Google, and the daily DAG runs end to end on one machine (`dag.test()`).

Airflow reads its configuration when first imported, so this module points it at a throwaway home (SQLite
metadata database, no examples, no usage reporting) before importing it; nothing touches ~/airflow.
"""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="lakehouse-airflow-test-"))
DAGS = Path(__file__).resolve().parents[1] / "composer_dags"
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",  # a busy machine, and a first parse that runs `dbt parse`
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_AIRFLOW_HOME}/airflow.db",
    "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
    "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
})

import pytest  # noqa: E402

from pipelines import orchestration, tables  # noqa: E402
from pipelines.config import Settings  # noqa: E402

DAILY, STREAMING = "demand_forecasting_pipeline", "streaming_job"
GCP = {"LAKEHOUSE_ENVIRONMENT": "gcp", "LAKEHOUSE_GCP_PROJECT": "retail-lake-42",
       "LAKEHOUSE_GCP_REGION": "europe-west2",
       "LAKEHOUSE_GCS_BUCKET": "retail-lake-42-dataflow", "LAKEHOUSE_LANDING_URI": "gs://retail-lake-42-landing",
       "LAKEHOUSE_FLEX_TEMPLATE_PATH": "gs://retail-lake-42-dataflow/templates/pipeline-abc123.json",
       "LAKEHOUSE_DATAFLOW_SERVICE_ACCOUNT": "dataflow@retail-lake-42.iam.gserviceaccount.com"}


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """One lakehouse home for the module, with dbt's manifest written once (as the first parse of the DAG would)."""
    home = tmp_path_factory.mktemp("lake")
    for target in ("local", "gcp"):
        orchestration.dbt_manifest(Settings(home=home, environment=target, gcp_project="retail-lake-42"), target)
    return home


@pytest.fixture
def local_env(lake, monkeypatch) -> Path:
    for name in [k for k in os.environ if k.startswith("LAKEHOUSE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("LAKEHOUSE_HOME", str(lake))
    return lake


@pytest.fixture(scope="module")
def airflow_db():
    from airflow.utils import db

    db.initdb()


def load_dag_module(name: str):
    """A DAG file imported afresh, so that it builds its DAG from the current environment."""
    if str(DAGS) not in sys.path:
        sys.path.insert(0, str(DAGS))
    sys.modules.pop(name, None)
    return importlib.import_module(name)


# ---- the DagBag: every file parses, every DAG follows the rules -------------------------------------------
def test_dagbag_has_no_import_errors_and_every_dag_follows_the_rules(local_env):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == {DAILY, STREAMING}
    for dag_id, dag in bag.dags.items():
        assert dag.tags and "lakehouse" in dag.tags, dag_id
        assert dag.catchup is False, dag_id
        assert dag.doc_md and dag_id in dag.doc_md, dag_id
        assert dag.max_active_runs == 1, dag_id
        for task in dag.tasks:
            assert task.owner == "data-platform", (dag_id, task.task_id)
            assert task.retries >= 1, (dag_id, task.task_id)
            assert task.on_failure_callback, (dag_id, task.task_id)


def test_the_daily_dag_has_one_dbt_task_per_model_around_the_forecast(local_env):
    dag = load_dag_module(DAILY).dag_object
    ids = set(dag.task_dict)
    gold = {t.split(".", 1)[1] for t in ids if t.startswith("dbt_gold.")}
    marts = {t.split(".", 1)[1] for t in ids if t.startswith("dbt_forecast_marts.")}
    assert {"fact_daily_demand_model_build", "fact_orders_model_build", "public_holidays_seed_build"} <= gold
    assert {"fact_demand_forecast_model_build", "mart_forecast_accuracy_model_build", "dim_date_model_build"} <= marts
    # nothing that reads the forecasts, model or test, runs before them
    assert not [t for t in gold if "ml__" in t or "_ml_" in t or "forecast" in t or "dim_date" in t]
    assert "relationships_fact_orders_order_date__date_day__ref_dim_date__test" in marts
    forecast = dag.task_dict["forecast"]
    upstream = {t.task_id for t in forecast.upstream_list} - {"interval"}  # interval: the window it forecasts to
    assert upstream and all(t.startswith("dbt_gold.") for t in upstream)
    assert all(t.task_id.startswith(("dbt_forecast_marts.", "quality_gate"))
               for t in forecast.downstream_list if t.task_id != "quality_gate")
    gate_upstream = {t.task_id for t in dag.task_dict["quality_gate"].upstream_list}
    assert "forecast" in gate_upstream and any(t.startswith("dbt_forecast_marts.") for t in gate_upstream)
    assert dag.task_dict["backfill"].downstream_list and dag.max_active_tasks == 1  # one DuckDB writer at a time


def _top_level_calls(tree: ast.AST):
    """Calls executed when a module is imported (not inside a function body)."""
    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Call) and not in_function:
                yield child
            yield from visit(child, nested)
    yield from visit(tree, False)


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_no_variable_get_or_network_call_at_import_time(path):
    tree = ast.parse(path.read_text())
    banned = {"get", "urlopen", "request", "Client"}
    for call in _top_level_calls(tree):
        func = call.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func.value, "id", "") if isinstance(func, ast.Attribute) else ""
        assert not (owner == "Variable" and name == "get"), f"{path.name}:{call.lineno}: Variable.get at import time"
        assert name not in banned or owner in ("os", "environ", "dict"), f"{path.name}:{call.lineno}: {name}()"


def test_the_top_level_check_catches_a_variable_get():
    tree = ast.parse("from airflow.models import Variable\nX = Variable.get('x')\ndef f():\n    Variable.get('y')\n")
    found = [c.lineno for c in _top_level_calls(tree) if getattr(c.func, "attr", "") == "get"]
    assert found == [2]


# ---- the gcp variant: Google's operators with the right arguments, Google never called ---------------------
@pytest.fixture
def gcp_env(local_env, monkeypatch) -> Settings:
    for name, value in GCP.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_the_gcp_daily_dag_launches_the_flex_template_per_landed_glob(gcp_env, monkeypatch):
    from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

    dag = load_dag_module(DAILY).dag_object
    assert "gcp" in dag.tags and dag.max_active_tasks > 1
    mapped = dag.task_dict["backfill_dataflow"]
    assert mapped.operator_class is DataflowStartFlexTemplateOperator or \
        mapped.operator_class.__name__ == "DataflowStartFlexTemplateOperator"
    kwargs = mapped.partial_kwargs
    assert kwargs["project_id"] == "retail-lake-42" and kwargs["location"] == "europe-west2"
    assert kwargs["wait_until_finished"] is True
    assert dag.task_dict["landed"].trigger_rule == "none_failed"  # nothing landed: the dbt steps still run

    # the bodies the mapped task receives, from two landed globs (no listing of the bucket here)
    found = {"gs://retail-lake-42-landing/archive/events/2024-03-10/*.jsonl": ["a"],
             "gs://retail-lake-42-landing/events/2024-03-10*.jsonl*": ["b"]}
    monkeypatch.setattr(orchestration, "_match", lambda pattern: found.get(pattern, []))
    bodies = dag.task_dict["backfill_jobs"].python_callable({"start": "2024-03-10", "end": "2024-03-11"})
    assert len(bodies) == 2
    launch = bodies[0]["launchParameter"]
    assert launch["containerSpecGcsPath"] == GCP["LAKEHOUSE_FLEX_TEMPLATE_PATH"]
    assert launch["jobName"] == "lakehouse-backfill-20240310-1"
    params = launch["parameters"]
    assert params["command"] == "backfill" and params["input"] == sorted(found)[0]
    assert params["dims"] == "gs://retail-lake-42-landing/dims"
    assert params["environment"] == "gcp" and params["gcp_project"] == "retail-lake-42"
    assert params["gcp_region"] == "europe-west2" and params["gold_dataset"] == "gold"
    assert launch["environment"]["tempLocation"] == "gs://retail-lake-42-dataflow/dataflow/tmp"
    assert launch["environment"]["serviceAccountEmail"] == GCP["LAKEHOUSE_DATAFLOW_SERVICE_ACCOUNT"]
    accepted = {p["name"] for p in json.loads(orchestration.FLEX_METADATA.read_text())["parameters"]}
    assert set(params) <= accepted  # Dataflow rejects parameters its template does not declare


def test_the_gcp_forecast_runs_on_dataflow_and_dbt_targets_bigquery(gcp_env, monkeypatch):
    from ml import job

    dag = load_dag_module(DAILY).dag_object
    seen = {}

    def fake_run(settings, **kwargs):
        seen.update(kwargs, project=settings.gcp_project)
        return job.RunResult(kwargs["run_id"], dt.datetime(2024, 3, 11, tzinfo=dt.UTC), "D", 7, 1, 3, 1.0, {},
                             {"wape": 0.4}, {}, None, "gs://x")

    monkeypatch.setattr(job, "run", fake_run)
    out = dag.task_dict["forecast"].python_callable({"start": "2024-03-10", "end": "2024-03-11"},
                                                     params={"horizon": 7, "folds": 1, "models": "snaive,tsb"})
    assert seen["runner"] == "DataflowRunner" and seen["project"] == "retail-lake-42"
    assert seen["run_id"] == out["run_id"] == "fc-daily-20240311"
    assert seen["models_"] == ("snaive", "tsb") and seen["horizon"] == 7
    assert dag.task_dict["dbt_gold.fact_daily_demand_model_build"].profile_config.target_name == "gcp"


def test_the_gcp_streaming_dag_finds_launches_drains_and_updates(gcp_env, monkeypatch):
    from airflow.providers.google.cloud.hooks.dataflow import DataflowHook

    dag = load_dag_module(STREAMING).dag_object
    launch, update, drain = (dag.task_dict[t] for t in ("launch_stream", "update_stream", "drain_stream"))
    for op in (launch, update, drain):
        assert op.project_id == "retail-lake-42" and op.location == "europe-west2"
    assert launch.body["launchParameter"]["jobName"] == "lakehouse-stream" and launch.append_job_name is False
    assert launch.body["launchParameter"]["parameters"]["command"] == "stream"
    assert launch.body["launchParameter"]["environment"]["enableStreamingEngine"] is True
    assert "update" not in launch.body["launchParameter"] and update.body["launchParameter"]["update"] is True
    assert drain.job_name == "lakehouse-stream" and drain.drain_pipeline is True

    lookups = []

    def running(state):
        def is_running(self, name, project_id, location=None, variables=None):
            lookups.append((name, project_id, location))
            return state
        return is_running

    decide = dag.task_dict["decide"].python_callable
    expected = {("ensure", True): "nothing_to_do", ("ensure", False): "launch_stream",
                ("drain", True): "drain_stream", ("drain", False): "nothing_to_do",
                ("update", True): "update_stream", ("update", False): "launch_stream"}
    for (action, state), task_id in expected.items():
        monkeypatch.setattr(DataflowHook, "__init__", lambda self, *a, **k: None)
        monkeypatch.setattr(DataflowHook, "is_job_dataflow_running", running(state))
        assert decide(params={"action": action}) == task_id
    assert set(lookups) == {("lakehouse-stream", "retail-lake-42", "europe-west2")}


def test_a_missing_template_fails_the_launch_with_a_clear_message(gcp_env, monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_FLEX_TEMPLATE_PATH")
    with pytest.raises(ValueError, match="LAKEHOUSE_FLEX_TEMPLATE_PATH"):
        orchestration.backfill_bodies(Settings(), {"gs://l/events/2024-01-01*.jsonl*": ["x"]})


def test_the_gate_queries_name_bigquery_tables_on_gcp(gcp_env):
    sql = orchestration.gate_queries(gcp_env, dt.date(2024, 3, 1), dt.date(2024, 3, 8), "fc-1")
    assert "`retail-lake-42.silver.order_events`" in sql["freshness"]
    assert "`retail-lake-42.bronze.dead_letter`" in sql["dead_letters"]
    assert "BETWEEN DATE '2024-03-01' AND DATE '2024-03-07'" in sql["dead_letters"]
    assert "`retail-lake-42.ml.forecast_runs`" in sql["forecast"] and "run_id = 'fc-1'" in sql["forecast"]


# ---- pieces of the daily DAG --------------------------------------------------------------------------------
def test_the_interval_comes_from_params_or_the_data_interval():
    utc = dt.UTC
    assert orchestration.interval_from({}, dt.datetime(2024, 3, 10, tzinfo=utc), dt.datetime(2024, 3, 11, tzinfo=utc)) \
        == (dt.date(2024, 3, 10), dt.date(2024, 3, 11))
    # a manual run's interval is a point in time: its day
    moment = dt.datetime(2024, 3, 10, 15, tzinfo=utc)
    assert orchestration.interval_from({}, moment, moment) == (dt.date(2024, 3, 10), dt.date(2024, 3, 11))
    assert orchestration.interval_from({"start": "2024-01-01", "end": "2024-02-01"}, moment, moment) \
        == (dt.date(2024, 1, 1), dt.date(2024, 2, 1))
    with pytest.raises(ValueError, match="both"):
        orchestration.interval_from({"start": "2024-01-01"}, moment, moment)
    with pytest.raises(ValueError, match="empty interval"):
        orchestration.interval_from({"start": "2024-02-01", "end": "2024-01-01"}, moment, moment)
    with pytest.raises(ValueError):
        orchestration.interval_from({"start": "yesterday", "end": "today"}, moment, moment)


def test_landed_files_of_an_interval_are_the_days_drops_and_stream_archive(local_env):
    settings = Settings()
    landing, archive = Path(settings.landing), settings.archive_dir / "events"
    for path in [landing / "events" / "2024-03-09.jsonl", landing / "events" / "2024-03-10.jsonl",
                 landing / "events" / "2024-03-10-late.jsonl.gz", landing / "events" / "2024-03-11.jsonl",
                 archive / "20240310T101500-77.jsonl", archive / "20240311T000001-77.jsonl"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    found = orchestration.landed_patterns(settings, dt.date(2024, 3, 10), dt.date(2024, 3, 11))
    files = sorted(Path(f).name for matched in found.values() for f in matched)
    assert files == ["2024-03-10-late.jsonl.gz", "2024-03-10.jsonl", "20240310T101500-77.jsonl"]
    assert orchestration.landed_patterns(settings, dt.date(2024, 3, 12), dt.date(2024, 3, 14)) == {}


class FakeWarehouse:
    """The gate's three queries answered from fixed figures."""

    def __init__(self, newest=dt.datetime(2024, 3, 10, 22, tzinfo=dt.UTC), dead=3, good=997,
                 run=("fc-1", 0.42, 0.50)):
        self.answers = {"freshness": (newest,), "dead_letters": (dead, good), "forecast": run}

    def __call__(self, sql: str):
        key = "freshness" if "MAX(event_ts)" in sql else "dead_letters" if "dead_letter" in sql else "forecast"
        return self.answers[key]


def _gate(settings, warehouse):
    return orchestration.evaluate(settings, dt.date(2024, 3, 10), dt.date(2024, 3, 11), warehouse, run_id="fc-1")


def test_the_quality_gate_passes_within_the_thresholds(caplog):
    checks = _gate(Settings(), FakeWarehouse())
    assert [c.name for c in checks] == ["source_freshness", "dead_letter_rate", "forecast_accuracy"]
    assert all(c.ok for c in checks)
    assert checks[0].value == 2.0 and checks[1].value == 0.003
    with caplog.at_level(logging.INFO, logger="lakehouse.orchestration"):
        orchestration.enforce(checks)
    event = json.loads(caplog.records[-1].getMessage())
    assert event["event"] == "quality_gate" and len(event["checks"]) == 3


@pytest.mark.parametrize("warehouse, settings, message", [
    (FakeWarehouse(dead=80, good=920), {}, r"dead_letter_rate: 80 dead letters of 1,000 .*8\.00%, max 5\.00%"),
    (FakeWarehouse(newest=dt.datetime(2024, 3, 1, tzinfo=dt.UTC)), {}, r"source_freshness: newest order event "),
    (FakeWarehouse(newest=None), {}, "silver.order_events is empty"),
    (FakeWarehouse(run=("fc-1", 0.7, 0.5)), {}, r"WAPE 0\.700 > 1\.1 x seasonal naive's 0\.500"),
    (FakeWarehouse(run=("fc-1", 0.42, None)), {"max_forecast_wape": 0.3}, r"WAPE 0\.420 > max 0\.3"),
    (FakeWarehouse(run=None), {}, "no forecast run fc-1"),
    (FakeWarehouse(dead=0, good=0), {}, "no records with event dates 2024-03-10"),
])
def test_a_breach_fails_the_gate_naming_it(warehouse, settings, message):
    with pytest.raises(orchestration.QualityGateError, match=message):
        orchestration.enforce(_gate(Settings(**settings), warehouse))


def test_a_forecast_without_backtest_is_not_judged_on_accuracy():
    check = _gate(Settings(), FakeWarehouse(run=("fc-1", None, None)))[2]
    assert check.ok and "not judged" in check.detail


# ---- alerting ---------------------------------------------------------------------------------------------------
class _TI:
    dag_id, task_id, run_id, try_number, log_url = DAILY, "forecast", "scheduled__2024-03-10", 2, "http://af/log"


def test_a_failed_task_logs_one_structured_event(caplog, monkeypatch):
    monkeypatch.delenv("LAKEHOUSE_ALERT_WEBHOOK_URL", raising=False)
    with caplog.at_level(logging.ERROR, logger="lakehouse.orchestration"):
        orchestration.on_task_failure({"task_instance": _TI(), "logical_date": dt.datetime(2024, 3, 10),
                                       "exception": ValueError("no demand history")})
    event = json.loads(caplog.records[-1].getMessage())
    assert event == {"event": "task_failed", "dag_id": DAILY, "task_id": "forecast", "run_id": "scheduled__2024-03-10",
                     "try_number": 2, "logical_date": "2024-03-10 00:00:00", "error": "ValueError: no demand history",
                     "log_url": "http://af/log"}


def test_the_webhook_gets_the_event_and_its_failure_never_raises(monkeypatch, caplog):
    import urllib.request

    sent = []

    class Response:
        status = 200

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(request, timeout):
        sent.append((request.full_url, json.loads(request.data), timeout))
        return Response()

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    settings = Settings(alert_webhook_url="https://hooks.example.invalid/T000")
    event = orchestration.failure_event(DAILY, "quality_gate", "r1", 1, None, RuntimeError("gate"))
    assert orchestration.notify(event, settings) is True
    url, body, _ = sent[0]
    assert url == "https://hooks.example.invalid/T000" and body["task_id"] == "quality_gate"
    assert body["text"] == f"{DAILY}.quality_gate failed: RuntimeError: gate"

    def refused(request, timeout):
        raise OSError("connection refused")

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    with caplog.at_level(logging.WARNING, logger="lakehouse.orchestration"):
        assert orchestration.notify(event, settings) is False
    assert "alert_not_sent" in caplog.text


# ---- the local stream counterpart --------------------------------------------------------------------------------
SLEEPER = [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
                                 "print('streaming', flush=True); time.sleep(120)"]


def test_the_local_stream_starts_once_and_drains_on_request(local_env):
    stream = orchestration.LocalStream(Settings(), command=SLEEPER)
    pid = stream.start(settle_seconds=0.5)
    try:
        assert stream.pid() == pid and stream.start(settle_seconds=0.5) == pid  # ensure: already running
    finally:
        assert stream.drain(timeout=20) is True
    assert stream.pid() is None and not stream.pid_file.exists()
    assert stream.drain() is False
    assert "streaming" in stream.log_file.read_text()


def test_a_stream_that_cannot_start_fails_with_its_own_message(local_env):
    broken = [sys.executable, "-c", "import sys; print('no Pub/Sub emulator at 127.0.0.1:8085'); sys.exit(2)"]
    stream = orchestration.LocalStream(Settings(), command=broken)
    with pytest.raises(RuntimeError, match="no Pub/Sub emulator"):
        stream.start(settle_seconds=5)
    assert stream.pid() is None


# ---- end to end: the daily DAG on one machine -------------------------------------------------------------------
@pytest.mark.slow
def test_the_daily_dag_runs_end_to_end_locally(local_env, airflow_db, monkeypatch, capsys):
    """70 days x 3 stores x 4 products (1% bad lines, 2% duplicates) landed, then one `dag.test()` over that
    range: backfill -> dbt (a task per model) -> forecast -> forecast marts -> quality gate."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    from pipelines import warehouse
    from pipelines.simulate import simulate

    settings = Settings()
    simulate(Path(settings.landing), days=70, stores=3, products=4, start=dt.date(2024, 1, 1), seed=5,
             bad_rate=0.01, dup_rate=0.02)
    dag = load_dag_module(DAILY).dag_object
    started = time.perf_counter()
    run = dag.test(run_conf={"start": "2024-01-01", "end": "2024-03-11", "horizon": 7, "folds": 1,
                             "models": "snaive,tsb"})
    seconds = time.perf_counter() - started
    with create_session() as session:
        tis = session.query(TaskInstance).filter(TaskInstance.dag_id == DAILY, TaskInstance.run_id == run.run_id).all()
        durations = sorted(((ti.task_id, ti.state, ti.duration or 0.0) for ti in tis), key=lambda r: -r[2])
    with capsys.disabled():
        print(f"\ndag.test() of {DAILY}: {seconds:.0f} s, {len(durations)} tasks")
        for task_id, state, duration in durations:
            print(f"  {duration:6.1f} s  {state:<8} {task_id}")
    assert run.state == "success", [d for d in durations if d[1] != "success"]

    orchestration.release_dbt_duckdb()
    with warehouse.connect(settings) as con:
        count = {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in (
            "gold.fact_daily_demand", "gold.fact_orders", "gold.fact_demand_forecast", "gold.mart_forecast_accuracy",
            tables.FORECASTS.fqn, tables.FORECAST_RUNS.fqn)}
        dead = con.execute(f"select count(*) from {tables.DEAD_LETTER.fqn}").fetchone()[0]
    assert count["gold.fact_daily_demand"] == 70 * 3 * 4
    assert count["gold.fact_orders"] > 1000 and dead > 0
    assert count[tables.FORECASTS.fqn] == 7 * 3 * 4 == count["gold.fact_demand_forecast"]
    assert count[tables.FORECAST_RUNS.fqn] == 1 and count["gold.mart_forecast_accuracy"] > 0
