"""What the Airflow DAGs (composer_dags/) decide, without Airflow: which landed files a data interval
covers, the quality gate that ends the daily run, and the structured event a failed task leaves.

Kept here, importable without Airflow, so it is tested directly and the DAG files stay thin.

Landed files of a day D (a folder locally, gs:// on Google Cloud; see `Settings.landing`):
    LANDING/events/D*.jsonl[.gz]          producer drops named by date (`lakehouse simulate --out LANDING` writes
                                          events/YYYY-MM-DD.jsonl)
    LANDING/archive/events/D/*.jsonl      the raw stream archive of the Pub/Sub Cloud Storage subscription (gcp)
    $LAKEHOUSE_HOME/archive/events/YYYYMMDDT*.jsonl   the local stream archive (`lakehouse simulate --publish`)
The backfill keeps what the stream already wrote and adds only what is missing, so loading the archive again
is a repair that never double counts.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines import contract, landing, tables
from pipelines.config import Settings

log = logging.getLogger("lakehouse.orchestration")

#: the stream archive layout the Cloud Storage subscription writes (terraform/modules/pubsub)
GCS_ARCHIVE = "archive/events"


# ---- the data interval ------------------------------------------------------------------------------------
def days(start: dt.date, end: dt.date) -> list[dt.date]:
    """The days of the half-open interval [start, end)."""
    if end <= start:
        raise ValueError(f"empty interval: {start} .. {end} (the end is exclusive)")
    return [start + dt.timedelta(days=n) for n in range((end - start).days)]


def day_patterns(settings: Settings, day: dt.date) -> list[str]:
    """Globs of the event files landed on `day` (see the module docstring)."""
    root = settings.landing
    patterns = [f"{root}/{landing.EVENTS_DIR}/{day.isoformat()}*.jsonl*"]
    if settings.environment == "gcp":
        patterns.append(f"{root}/{GCS_ARCHIVE}/{day.isoformat()}/*.jsonl")
    else:
        patterns.append(str(settings.archive_dir / "events" / f"{day:%Y%m%d}T*.jsonl"))
    return patterns


def dims_uri(settings: Settings) -> str:
    return f"{settings.landing}/{landing.DIMS_DIR}"


def landed_patterns(settings: Settings, start: dt.date, end: dt.date,
                    match: Callable[[str], list[str]] | None = None) -> dict[str, list[str]]:
    """Pattern -> matching files, for every pattern of the interval that matches at least one file."""
    match = match or _match
    found = {}
    for day in days(start, end):
        for pattern in day_patterns(settings, day):
            if files := match(pattern):
                found[pattern] = files
    return found


def _match(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list if not m.path.endswith("/"))


def interval_from(params: dict[str, Any], data_interval_start: dt.datetime | None,
                  data_interval_end: dt.datetime | None) -> tuple[dt.date, dt.date]:
    """[start, end) days to process: the params `start`/`end` (YYYY-MM-DD, end exclusive) when given
    (a backfill of a date range), else the run's data interval (a daily run covers one day)."""
    start, end = params.get("start"), params.get("end")
    if bool(start) != bool(end):
        raise ValueError("give both params start and end (YYYY-MM-DD, end exclusive), or neither")
    if start:
        first, last = dt.date.fromisoformat(str(start)), dt.date.fromisoformat(str(end))
    else:
        if data_interval_start is None or data_interval_end is None:
            raise ValueError("a manual run without a data interval needs params start and end")
        first, last = data_interval_start.date(), data_interval_end.date()
        if last == first:  # an interval shorter than a day still names its day
            last = first + dt.timedelta(days=1)
    days(first, last)  # validates
    return first, last


# ---- Dataflow (gcp) ------------------------------------------------------------------------------------------
FLEX_METADATA = Path(__file__).resolve().parent / "flex_template" / "metadata.json"


def template_settings(settings: Settings) -> dict[str, str]:
    """The settings the Flex Template accepts as parameters (metadata.json), with their values here."""
    accepted = {p["name"] for p in json.loads(FLEX_METADATA.read_text())["parameters"]}
    values = settings.model_dump(include=accepted & set(Settings.model_fields), exclude_none=True)
    return {name: str(value) for name, value in sorted(values.items())}


def flex_template_body(settings: Settings, job_name: str, parameters: dict[str, str], *,
                       update: bool = False) -> dict[str, Any]:
    """The `body` of a Flex Template launch (DataflowStartFlexTemplateOperator): the pipeline's template
    with the settings and `parameters` (command, input, dims, ...); `update` replaces a running job of the
    same name in place (streaming)."""
    if not settings.flex_template_path:
        raise ValueError("LAKEHOUSE_FLEX_TEMPLATE_PATH is not set: `lakehouse deploy` writes the template "
                         "(gs://DATAFLOW_BUCKET/templates/pipeline-TAG.json)")
    launch: dict[str, Any] = {
        "jobName": job_name,
        "containerSpecGcsPath": settings.flex_template_path,
        "parameters": {**template_settings(settings), **parameters},
    }
    environment: dict[str, Any] = {}
    if settings.gcs_bucket:
        environment |= {"tempLocation": f"gs://{settings.gcs_bucket}/dataflow/tmp",
                        "stagingLocation": f"gs://{settings.gcs_bucket}/dataflow/staging"}
    if settings.dataflow_service_account:
        environment["serviceAccountEmail"] = settings.dataflow_service_account
    if settings.dataflow_subnetwork:
        environment |= {"subnetwork": settings.dataflow_subnetwork, "ipConfiguration": "WORKER_IP_PRIVATE"}
    if environment:
        launch["environment"] = environment
    if update:
        launch["update"] = True
    return {"launchParameter": launch}


# ---- the quality gate --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    name: str
    value: float | None
    threshold: float
    ok: bool
    detail: str


class QualityGateError(RuntimeError):
    """At least one check of the gate failed; the message lists every check."""


def table_sql(settings: Settings, spec: tables.TableSpec) -> str:
    """How a query names a lakehouse table: DuckDB views locally, `project.dataset.table` on BigQuery."""
    if settings.environment == "gcp":
        return f"`{settings.bigquery_table(spec.layer, spec.name).replace(':', '.')}`"
    return spec.fqn


def gate_queries(settings: Settings, start: dt.date, end: dt.date, run_id: str | None) -> dict[str, str]:
    """The gate's SQL (valid on DuckDB and BigQuery), one single-row query per figure."""
    between = f"BETWEEN DATE '{start.isoformat()}' AND DATE '{(end - dt.timedelta(days=1)).isoformat()}'"
    dead = table_sql(settings, tables.DEAD_LETTER)
    bronze = " + ".join(f"(SELECT COUNT(*) FROM {table_sql(settings, tables.bronze_events(e))} "
                        f"WHERE event_date {between})" for e in contract.ENTITY_STRUCT)
    runs = table_sql(settings, tables.FORECAST_RUNS)
    run_filter = f"WHERE run_id = '{run_id}'" if run_id else ""
    return {
        "freshness": f"SELECT MAX(event_ts) FROM {table_sql(settings, tables.silver_events('order'))}",
        "dead_letters": (f"SELECT (SELECT COUNT(*) FROM {dead} WHERE COALESCE(event_date, CAST(failed_at AS DATE)) "
                         f"{between}), {bronze}"),
        "forecast": (f"SELECT run_id, wape, wape_seasonal_naive FROM {runs} {run_filter} "
                     f"ORDER BY created_at DESC LIMIT 1"),
    }


def evaluate(settings: Settings, start: dt.date, end: dt.date, query: Callable[[str], Sequence[Any] | None],
             run_id: str | None = None) -> list[Check]:
    """Run the gate's queries (`query(sql)` returns the first row or None) and judge them by the settings."""
    sql = gate_queries(settings, start, end, run_id)
    checks = []

    (newest,) = query(sql["freshness"]) or (None,)
    interval_end = dt.datetime.combine(end, dt.time(), dt.UTC)
    if newest is None:
        checks.append(Check("source_freshness", None, settings.max_source_lag_hours, False,
                            "silver.order_events is empty"))
    else:
        newest = newest if newest.tzinfo else newest.replace(tzinfo=dt.UTC)
        lag = max((interval_end - newest).total_seconds() / 3600, 0.0)
        checks.append(Check("source_freshness", round(lag, 2), settings.max_source_lag_hours,
                            lag <= settings.max_source_lag_hours,
                            f"newest order event {newest:%Y-%m-%d %H:%M}Z is {lag:.1f} h before the interval's end "
                            f"(max {settings.max_source_lag_hours:g} h)"))

    dead, good = query(sql["dead_letters"]) or (0, 0)
    total = (dead or 0) + (good or 0)
    rate = (dead or 0) / total if total else 0.0
    checks.append(Check("dead_letter_rate", round(rate, 5), settings.max_dead_letter_rate,
                        total > 0 and rate <= settings.max_dead_letter_rate,
                        f"{dead or 0:,} dead letters of {total:,} records with event dates {start} .. "
                        f"{end - dt.timedelta(days=1)} ({rate:.2%}, max {settings.max_dead_letter_rate:.2%})"
                        if total else f"no records with event dates {start} .. {end - dt.timedelta(days=1)}"))

    row = query(sql["forecast"])
    if not row:
        checks.append(Check("forecast_accuracy", None, settings.max_forecast_wape, False,
                            f"no forecast run {run_id or ''} in ml.forecast_runs".replace("  ", " ")))
    else:
        found_run, wape, naive = row
        problems = []
        if wape is not None and wape > settings.max_forecast_wape:
            problems.append(f"WAPE {wape:.3f} > max {settings.max_forecast_wape:g}")
        if wape is not None and naive and wape > naive * settings.max_wape_vs_naive:
            problems.append(f"WAPE {wape:.3f} > {settings.max_wape_vs_naive:g} x seasonal naive's {naive:.3f}")
        detail = (f"run {found_run}: backtest WAPE {'-' if wape is None else f'{wape:.3f}'}, seasonal naive "
                  f"{'-' if naive is None else f'{naive:.3f}'}"
                  + (" (no backtest: not judged)" if wape is None else ""))
        checks.append(Check("forecast_accuracy", None if wape is None else round(wape, 4),
                            settings.max_forecast_wape, not problems, "; ".join(problems) or detail))
    return checks


def enforce(checks: list[Check]) -> None:
    """Log every check as one JSON line; raise QualityGateError naming each failed one."""
    log.info(json.dumps({"event": "quality_gate", "checks": [asdict(c) for c in checks]}, default=str))
    failed = [c for c in checks if not c.ok]
    if failed:
        raise QualityGateError("quality gate failed: " + "; ".join(f"{c.name}: {c.detail}" for c in failed))


def duckdb_query(settings: Settings) -> Callable[[str], Sequence[Any] | None]:
    """A `query` for `evaluate` on the local warehouse (read-only: never blocks a writer)."""
    from pipelines import warehouse

    def query(sql: str) -> Sequence[Any] | None:
        release_dbt_duckdb()
        with warehouse.connect(settings) as con:
            return con.execute(sql).fetchone()

    return query


# ---- alerting ------------------------------------------------------------------------------------------------
def failure_event(dag_id: str, task_id: str, run_id: str, try_number: int | None, logical_date: Any,
                  exception: BaseException | str | None, log_url: str | None = None) -> dict[str, Any]:
    return {"event": "task_failed", "dag_id": dag_id, "task_id": task_id, "run_id": run_id,
            "try_number": try_number, "logical_date": None if logical_date is None else str(logical_date),
            "error": None if exception is None else f"{type(exception).__name__}: {exception}"
            if isinstance(exception, BaseException) else str(exception), "log_url": log_url}


def notify(event: dict[str, Any], settings: Settings, timeout: float = 10.0) -> bool:
    """Log the event as one JSON line; POST it to the alert webhook when one is set. Never raises: an
    alert that cannot be sent is logged, and the task's own failure stays what Airflow reports."""
    log.error(json.dumps(event, default=str))
    if not settings.alert_webhook_url:
        return False
    body = json.dumps({"text": f"{event['dag_id']}.{event['task_id']} failed: {event['error']}", **event},
                      default=str).encode()
    request = urllib.request.Request(settings.alert_webhook_url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except OSError as e:  # URLError and timeouts are OSErrors
        log.warning(json.dumps({"event": "alert_not_sent", "error": str(e)}))
        return False


def on_task_failure(context: dict[str, Any]) -> None:
    """Airflow's `on_failure_callback`: one structured event per failed task, sent on when configured."""
    ti = context.get("task_instance") or context.get("ti")
    event = failure_event(getattr(ti, "dag_id", "?"), getattr(ti, "task_id", "?"), getattr(ti, "run_id", "?"),
                          getattr(ti, "try_number", None), context.get("logical_date"), context.get("exception"),
                          getattr(ti, "log_url", None))
    from pipelines.config import get_settings

    notify(event, get_settings())


def default_args(settings: Settings) -> dict[str, Any]:
    """Task defaults of every lakehouse DAG: owner, retries (fewer and sooner on one machine), alerting."""
    local = settings.environment == "local"
    return {"owner": "data-platform", "retries": 1 if local else 2,
            "retry_delay": dt.timedelta(seconds=30 if local else 300),
            "on_failure_callback": on_task_failure}


# ---- steps of the daily DAG ----------------------------------------------------------------------------------
def forecast_run_id(interval_end: str) -> str:
    """One forecast run per interval: a retry or a re-run of the interval replaces its rows."""
    return f"fc-daily-{dt.date.fromisoformat(interval_end):%Y%m%d}"


def backfill_bodies(settings: Settings, found: dict[str, list[str]]) -> list[dict[str, Any]]:
    """Flex Template launch bodies of the backfill, one job per landed glob (the template takes one input)."""
    bodies = []
    for n, pattern in enumerate(sorted(found), 1):
        day = next((part for part in pattern.split("/") if len(part) >= 10 and part[:4].isdigit()), "")[:10]
        name = f"lakehouse-backfill-{day.replace('-', '')}-{n}" if day else f"lakehouse-backfill-{n}"
        bodies.append(flex_template_body(settings, name, {"command": "backfill", "input": pattern,
                                                          "dims": dims_uri(settings)}))
    return bodies


def dbt_env_vars(settings: Settings) -> dict[str, str]:
    """The LAKEHOUSE_* and DBT_* variables dbt's profile and project read, as `lakehouse transform` sets them."""
    from pipelines import transform

    return {k: v for k, v in transform.dbt_env(settings).items() if k.startswith(("LAKEHOUSE_", "DBT_"))}


def dbt_manifest(settings: Settings, target: str) -> Path:
    """dbt's manifest for `target` (where `lakehouse transform` keeps it), written by `dbt parse` when missing
    or older than a file of the dbt project; the DAGs render their dbt tasks from it."""
    import shutil
    import subprocess

    from pipelines import transform

    manifest = transform.dbt_state(settings, target) / "target" / "manifest.json"
    sources = [p for p in transform.DBT_DIR.rglob("*") if p.suffix in (".sql", ".yml", ".yaml", ".csv")
               and "target" not in p.relative_to(transform.DBT_DIR).parts]
    newest = max((p.stat().st_mtime for p in sources), default=0.0)
    if manifest.exists() and manifest.stat().st_mtime >= newest:
        return manifest
    dbt = shutil.which("dbt", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if dbt is None:
        raise FileNotFoundError("the dbt executable is not installed next to this Python or on PATH")
    result = subprocess.run([dbt, *transform.dbt_args(settings, "parse", target, "--quiet")],
                            env=transform.dbt_env(settings), cwd=transform.DBT_DIR.parent, capture_output=True,
                            text=True)
    if result.returncode or not manifest.exists():
        raise RuntimeError(f"dbt parse failed ({result.returncode}): {result.stdout[-2000:]}{result.stderr[-2000:]}")
    log.info(json.dumps({"event": "dbt_manifest_written", "path": str(manifest)}))
    return manifest


def dbt_forecast_side(manifest: Path) -> list[str]:
    """Models and tests that read the forecasts (downstream of the `ml` sources), from dbt's manifest: the
    daily DAG builds them after the forecasting job and everything else before it."""
    graph = json.loads(manifest.read_text())
    children, seen = graph["child_map"], set()
    todo = [uid for uid, source in graph["sources"].items() if source["source_name"] == "ml"]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return sorted(graph["nodes"][uid]["name"] for uid in seen if uid.startswith(("model.", "test.")))


def release_dbt_duckdb() -> None:
    """Close the DuckDB instance dbt keeps open in this process, if it ran here.

    Under `dag.test()` every task runs in one process, and astronomer-cosmos runs dbt in it (dbtRunner);
    dbt-duckdb keeps its connection for the process's lifetime, and DuckDB refuses any other connection to
    the same file from that process. A scheduler runs each task in its own process, where this does nothing.
    """
    module = sys.modules.get("dbt.adapters.duckdb.connections")
    manager = getattr(module, "DuckDBConnectionManager", None)
    if manager is None or getattr(manager, "_ENV", None) is None:
        return
    with manager._LOCK:
        if manager._ENV is not None:
            manager._ENV.close()
            manager._ENV = None


# ---- the streaming job ------------------------------------------------------------------------------------------
def stream_body(settings: Settings, *, update: bool = False) -> dict[str, Any]:
    """Flex Template launch of the streaming job, as Terraform defines it (terraform/modules/dataflow)."""
    body = flex_template_body(settings, settings.stream_job_name,
                              {"command": "stream", "dims": dims_uri(settings)}, update=update)
    body["launchParameter"].setdefault("environment", {})["enableStreamingEngine"] = True
    return body


@dataclass
class LocalStream:
    """`lakehouse stream` as a background process on this machine: the local counterpart of the streaming
    Dataflow job (ensure it runs, drain it, restart it with the current code). Its pid and log live under
    $LAKEHOUSE_HOME/stream/; SIGTERM makes the stream write its open micro-batches, then exit."""

    settings: Settings
    command: Sequence[str] | None = None

    @property
    def folder(self) -> Path:
        return self.settings.lake_dir / "stream"

    @property
    def pid_file(self) -> Path:
        return self.folder / "stream.pid"

    @property
    def log_file(self) -> Path:
        return self.folder / "stream.log"

    def pid(self) -> int | None:
        """The running stream's pid, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            self.pid_file.unlink(missing_ok=True)
            return None
        except PermissionError:  # alive, someone else's
            return pid
        return pid

    def start(self, settle_seconds: float = 5.0) -> int:
        """Start the stream unless it runs; returns its pid. Fails, with its log's end, if it exits at once."""
        import subprocess
        import time

        if (pid := self.pid()) is not None:
            return pid
        self.folder.mkdir(parents=True, exist_ok=True)
        command = list(self.command or [str(Path(sys.executable).parent / "lakehouse"), "stream"])
        with open(self.log_file, "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)  # outlives the task that started it
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                tail = self.log_file.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"`{' '.join(command)}` exited with {process.returncode} at start:\n{tail}")
            time.sleep(0.2)
        log.info(json.dumps({"event": "stream_started", "pid": process.pid, "log": str(self.log_file)}))
        return process.pid

    def drain(self, timeout: float = 120.0) -> bool:
        """SIGTERM the stream and wait for it to finish writing; False if none was running."""
        import signal
        import time

        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                finished, _ = os.waitpid(pid, os.WNOHANG)  # our child: reap it
            except ChildProcessError:  # started by another process: poll
                finished = 0 if _alive(pid) else pid
            if finished:
                break
            time.sleep(0.2)
        else:
            raise TimeoutError(f"the stream (pid {pid}) did not stop within {timeout:.0f} s of SIGTERM")
        self.pid_file.unlink(missing_ok=True)
        log.info(json.dumps({"event": "stream_drained", "pid": pid}))
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- local Airflow -------------------------------------------------------------------------------------------
DAGS_FOLDER = Path(__file__).resolve().parents[1] / "composer_dags"


def airflow_env(settings: Settings, port: int = 8080) -> dict[str, str]:
    """Environment of a local Airflow for this lakehouse: home and SQLite database under $LAKEHOUSE_HOME/airflow,
    the project's DAGs, no examples, nothing reported home, UI on localhost only and without a login."""
    home = settings.lake_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        # standalone starts its parts as `airflow ...` from PATH: this environment's first
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "LAKEHOUSE_HOME": str(settings.lake_dir),  # the DAGs' processes resolve the same lakehouse
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # the first parse of the daily DAG runs `dbt parse` (seconds on a busy machine)
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "180",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    }


def run_airflow(argv: Sequence[str], env: dict[str, str], grace_seconds: float = 30.0) -> int:
    """Run an airflow command in its own process group until it ends; Ctrl-C or SIGTERM stop the whole group.

    `airflow standalone` shuts its scheduler, DAG processor, triggerer and API server down on SIGINT, but a
    SIGTERM leaves them running, so either signal becomes a SIGINT to the group, then SIGTERM and SIGKILL to
    whatever is left after `grace_seconds`.
    """
    import signal
    import subprocess
    import time

    process = subprocess.Popen(list(argv), env=env, start_new_session=True)

    def stop_group(signum, frame) -> None:
        for sig, wait in ((signal.SIGINT, grace_seconds), (signal.SIGTERM, 10.0), (signal.SIGKILL, 0.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    try:  # the leader is gone; its children may not be
                        os.killpg(process.pid, 0)
                    except ProcessLookupError:
                        return
                time.sleep(0.2)

    previous = {sig: signal.signal(sig, stop_group) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
