"""
### demand_forecasting_pipeline: the lakehouse's daily cycle

backfill the interval's landed files (Beam) -> dbt build of staging and the gold marts (one Airflow task per
dbt model with its tests, through astronomer-cosmos) -> forecasting job -> dbt build of the forecast marts ->
quality gate (source freshness, dead-letter rate, forecast accuracy against the `LAKEHOUSE_MAX_*` settings).

One file, two targets, chosen by `LAKEHOUSE_ENVIRONMENT`:

| step | `local` (one machine) | `gcp` (Cloud Composer) |
|---|---|---|
| backfill | `pipelines.backfill`, DirectRunner -> Parquet | Flex Template on Dataflow, a job per glob -> BigQuery |
| dbt | dbt-duckdb, target `local` | dbt-bigquery, target `gcp` |
| forecast | `ml.job` on local cores | `ml.job` with the DataflowRunner |
| gate | DuckDB | BigQuery (`BigQueryHook`) |

Landed files of a day D: `LANDING/events/D*.jsonl` (producer drops, as `lakehouse simulate --out LANDING`
writes them), the stream's raw archive (gcp: `LANDING/archive/events/D/`, local: `$LAKEHOUSE_HOME/archive/events/`)
and the dimensions in `LANDING/dims`; see `pipelines/orchestration.py`. A backfill never double counts, so
re-running a day, or a range, is safe.

**Params**: `start`/`end` (YYYY-MM-DD, end exclusive) reprocess a date range instead of the data interval
(`lakehouse airflow dags trigger demand_forecasting_pipeline -c '{"start": "2024-01-01", "end": "2024-02-01"}'`);
`horizon`, `freq`, `models`, `folds` for the forecast.

Run it locally: `make airflow` (UI on http://localhost:8080), or once, without a scheduler:
`lakehouse airflow dags test demand_forecasting_pipeline`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os

import pendulum
from airflow.sdk import Param, dag, get_current_context, task

from pipelines import orchestration
from pipelines.config import Settings, get_settings

# astronomer-cosmos reports usage to a telemetry endpoint by default; this platform makes no such calls.
os.environ.setdefault("AIRFLOW__COSMOS__ENABLE_TELEMETRY", "False")

log = logging.getLogger("lakehouse.dags")

DAG_ID = "demand_forecasting_pipeline"


def _window(params: dict) -> tuple[dt.date, dt.date]:
    context = get_current_context()
    return orchestration.interval_from(params, context.get("data_interval_start"), context.get("data_interval_end"))


def dbt_task_group(settings: Settings, group_id: str, *, forecast_side: bool):
    """dbt models as Airflow tasks (astronomer-cosmos): one `dbt build --select <model>` task per model and
    seed, so each runs with its own tests, retries and logs. The graph comes from dbt's manifest, written
    by `dbt parse` when the project changed (no dbt call while the DAG file is parsed otherwise).

    `forecast_side`: the models that read the forecasts (the forecast marts, and dim_date, whose calendar
    runs to the last forecast day); otherwise every other model and seed. Tests with parents in several
    models run as tasks of their own once all of those are built."""
    from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import ExecutionMode, InvocationMode, LoadMode, TestBehavior

    from pipelines import transform

    target = settings.environment
    manifest = orchestration.dbt_manifest(settings, target)
    models = orchestration.dbt_forecast_side(manifest)
    group = DbtTaskGroup(
        group_id=group_id,
        project_config=ProjectConfig(
            dbt_project_path=transform.DBT_DIR,
            manifest_path=manifest,
            env_vars=orchestration.dbt_env_vars(settings),
            install_dbt_deps=False,
        ),
        profile_config=ProfileConfig(profile_name="lakehouse", target_name=target,
                                     profiles_yml_filepath=transform.DBT_DIR / "profiles.yml"),
        execution_config=ExecutionConfig(execution_mode=ExecutionMode.LOCAL,
                                         invocation_mode=InvocationMode.DBT_RUNNER),
        render_config=RenderConfig(load_method=LoadMode.DBT_MANIFEST, test_behavior=TestBehavior.BUILD,
                                   select=models if forecast_side else [], exclude=[] if forecast_side else models,
                                   should_detach_multiple_parents_tests=True),
    )
    if not forecast_side:
        # cosmos renders the forecast side's tests that join several nodes here too, where dbt's --exclude makes
        # them no-ops: drop those tasks (they run in the forecast marts' group)
        _drop_tasks(group, {f"{group_id}.{name}_test" for name in models})
    return group


def _drop_tasks(group, task_ids: set[str]) -> None:
    """Remove leaf tasks from a task group and its DAG before the group is wired to anything else."""
    dag = group.dag
    for task_id in sorted(task_ids & set(group.children)):
        task = dag.task_dict[task_id]
        if task.downstream_task_ids:
            continue  # not a leaf: keep the graph as cosmos built it
        for upstream in task.upstream_list:
            upstream.downstream_task_ids.discard(task_id)
        del group.children[task_id]
        del dag.task_dict[task_id]


def build(settings: Settings):
    """The DAG for these settings (the module builds it once from the environment; tests build others)."""
    local = settings.environment == "local"

    @dag(
        dag_id=DAG_ID,
        schedule="@daily",
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,  # history is reprocessed on purpose, with params start/end (or `airflow backfill`)
        max_active_runs=1,
        # one DuckDB file, one writer: locally the steps run one at a time
        max_active_tasks=1 if local else 16,
        dagrun_timeout=dt.timedelta(hours=6),
        default_args=orchestration.default_args(settings),
        tags=["lakehouse", "daily", settings.environment],
        doc_md=__doc__,
        params={
            "start": Param(None, type=["null", "string"], format="date",
                           description="First day to reprocess (YYYY-MM-DD); with end, instead of the interval."),
            "end": Param(None, type=["null", "string"], format="date", description="Day after the last one."),
            "horizon": Param(28, type="integer", minimum=1, description="Periods to forecast."),
            "freq": Param("D", enum=["D", "W"], description="D (daily) or W (weekly) forecasts."),
            "models": Param("prophet,snaive,tsb", type="string", description="Comma-separated forecast models."),
            "folds": Param(3, type="integer", minimum=0, description="Rolling-origin backtest folds."),
        },
    )
    def demand_forecasting_pipeline():
        @task
        def interval(params: dict | None = None) -> dict[str, str]:
            """The days this run covers."""
            start, end = _window(params or {})
            log.info("processing %s .. %s (end exclusive)", start, end)
            return {"start": start.isoformat(), "end": end.isoformat()}

        window = interval()
        if local:
            @task
            def backfill(window: dict[str, str]) -> dict:
                """Load the interval's landed files with the Beam backfill (DirectRunner)."""
                from pipelines import backfill as job
                from pipelines import shards, warehouse

                orchestration.release_dbt_duckdb()
                found = orchestration.landed_patterns(settings, dt.date.fromisoformat(window["start"]),
                                                      dt.date.fromisoformat(window["end"]))
                files = sorted({f for matched in found.values() for f in matched})
                if not files:
                    log.warning("no landed files for %s .. %s under %s: nothing to backfill",
                                window["start"], window["end"], settings.landing)
                    warehouse.refresh_views(settings)  # the sources dbt reads exist even in a new lakehouse
                    return {"files": 0}
                result = job.run(files, orchestration.dims_uri(settings), settings,
                                 workers=shards.default_workers(files, "DirectRunner"))
                if not result.reconciles:
                    raise RuntimeError(f"backfill {result.run_id} does not reconcile: {result.counters}")
                return {"run_id": result.run_id, "files": result.files, "lines_read": result.lines_read,
                        "silver_rows": result.silver_rows, "dead_letters": sum(result.dead_letters.values())}

            landed = backfill(window)
        else:
            from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
            from airflow.providers.standard.operators.empty import EmptyOperator

            @task
            def backfill_jobs(window: dict[str, str]) -> list[dict]:
                """One Flex Template launch body per landed glob of the interval (none: nothing to launch)."""
                start, end = dt.date.fromisoformat(window["start"]), dt.date.fromisoformat(window["end"])
                return orchestration.backfill_bodies(settings, orchestration.landed_patterns(settings, start, end))

            jobs = DataflowStartFlexTemplateOperator.partial(
                task_id="backfill_dataflow",
                project_id=settings.gcp_project,
                location=settings.gcp_region,
                wait_until_finished=True,
                append_job_name=True,  # a retry launches a new job, not a clash with the failed one's name
            ).expand(body=backfill_jobs(window))
            landed = EmptyOperator(task_id="landed", trigger_rule="none_failed")  # no files: mapped over nothing
            jobs >> landed

        gold = dbt_task_group(settings, "dbt_gold", forecast_side=False)

        @task
        def forecast(window: dict[str, str], params: dict | None = None) -> dict:
            """Forecast every store x product series of gold.fact_daily_demand (backtested), into ml.*."""
            from ml import job

            orchestration.release_dbt_duckdb()
            params = params or {}
            models = tuple(m.strip() for m in str(params.get("models", "prophet,snaive,tsb")).split(",") if m.strip())
            result = job.run(settings, horizon=int(params.get("horizon", 28)), freq=params.get("freq", "D"),
                             models_=models, folds=int(params.get("folds", 3)),
                             run_id=orchestration.forecast_run_id(window["end"]),
                             runner="DirectRunner" if local else "DataflowRunner")
            return {"run_id": result.run_id, "series": result.series, "seconds": round(result.seconds, 1),
                    "wape": result.overall.get("wape"), "chosen": result.chosen}

        forecasts = forecast(window)
        marts = dbt_task_group(settings, "dbt_forecast_marts", forecast_side=True)

        @task
        def quality_gate(window: dict[str, str], forecast_run: dict) -> list[dict]:
            """Fail the run, naming each breach, when the thresholds in the settings are not met."""
            start, end = dt.date.fromisoformat(window["start"]), dt.date.fromisoformat(window["end"])
            if local:
                query = orchestration.duckdb_query(settings)
            else:
                from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook

                client = BigQueryHook(use_legacy_sql=False, location=settings.gcp_region).get_client(
                    project_id=settings.gcp_project)

                def query(sql: str):
                    return next(iter(client.query(sql).result()), None)

            checks = orchestration.evaluate(settings, start, end, query, run_id=forecast_run["run_id"])
            orchestration.enforce(checks)
            return [vars(c) for c in checks]

        window >> landed >> gold >> forecasts >> marts >> quality_gate(window, forecasts)

    return demand_forecasting_pipeline()


dag_object = build(get_settings())
