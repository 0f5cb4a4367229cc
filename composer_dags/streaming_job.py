"""
### streaming_job: keep the streaming pipeline running; drain or update it on demand

Every hour (and when triggered) it looks for the streaming job and acts on the `action` param:

| action | job running | job absent |
|---|---|---|
| `ensure` (default) | nothing to do | launch it |
| `drain` | drain it (in-flight events are written, then it stops) | nothing to do |
| `update` | replace it in place with the current template (state kept) | launch it |

**gcp**: the Dataflow job `LAKEHOUSE_STREAM_JOB_NAME` (default `lakehouse-stream`), found with the Dataflow
hook, launched or updated from the pipeline's Flex Template (`LAKEHOUSE_FLEX_TEMPLATE_PATH`) with
`DataflowStartFlexTemplateOperator`, drained with `DataflowStopJobOperator`. Terraform creates the job in the
first place (`lakehouse deploy`); this DAG brings it back if it failed or was drained, and carries out
drains and updates between deployments.

**local**: `lakehouse stream` as a background process of this machine (pid and log in
`$LAKEHOUSE_HOME/stream/`), against the Pub/Sub emulator (`lakehouse pubsub up` first: without it the task
fails with the stream's own message). Drain sends SIGTERM: the stream writes its open micro-batches and exits.

Trigger: `lakehouse airflow dags trigger streaming_job -c '{"action": "drain"}'`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging

import pendulum
from airflow.sdk import Param, dag, task

from pipelines import orchestration
from pipelines.config import Settings, get_settings

log = logging.getLogger("lakehouse.dags")

DAG_ID = "streaming_job"
ACTIONS = ("ensure", "drain", "update")


def build(settings: Settings):
    """The DAG for these settings (the module builds it once from the environment; tests build others)."""
    local = settings.environment == "local"

    @dag(
        dag_id=DAG_ID,
        schedule="@hourly",
        start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
        catchup=False,  # only the present state of the job matters
        max_active_runs=1,
        dagrun_timeout=dt.timedelta(minutes=50),
        default_args=orchestration.default_args(settings),
        tags=["lakehouse", "streaming", settings.environment],
        doc_md=__doc__,
        params={"action": Param("ensure", enum=list(ACTIONS), description="ensure, drain or update the stream")},
    )
    def streaming_job():
        if local:
            @task
            def local_stream(params: dict | None = None) -> dict:
                """Start, drain or restart `lakehouse stream` on this machine."""
                action = (params or {}).get("action", "ensure")
                stream = orchestration.LocalStream(settings)
                running = stream.pid()
                if action == "drain":
                    drained = stream.drain()
                    return {"action": action, "drained": drained}
                if action == "update" and running is not None:
                    stream.drain()  # the DirectRunner has no in-place update: stop, then start the current code
                pid = stream.start()
                log.info(json.dumps({"event": "stream_ensured", "action": action, "pid": pid,
                                     "was_running": running is not None}))
                return {"action": action, "pid": pid, "was_running": running is not None}

            local_stream()
            return

        from airflow.providers.google.cloud.operators.dataflow import (
            DataflowStartFlexTemplateOperator,
            DataflowStopJobOperator,
        )
        from airflow.providers.standard.operators.empty import EmptyOperator

        @task.branch
        def decide(params: dict | None = None) -> str:
            """Look the job up by name and pick what to do."""
            from airflow.providers.google.cloud.hooks.dataflow import DataflowHook

            action = (params or {}).get("action", "ensure")
            running = DataflowHook().is_job_dataflow_running(name=settings.stream_job_name,
                                                             project_id=settings.gcp_project,
                                                             location=settings.gcp_region)
            choice = {("ensure", True): "nothing_to_do", ("ensure", False): "launch_stream",
                      ("drain", True): "drain_stream", ("drain", False): "nothing_to_do",
                      ("update", True): "update_stream", ("update", False): "launch_stream"}[(action, running)]
            log.info(json.dumps({"event": "stream_decision", "action": action, "running": running,
                                 "task": choice}))
            if choice in ("launch_stream", "update_stream"):
                orchestration.stream_body(settings)  # fails here, clearly, when the template is not set
            return choice

        common = {"project_id": settings.gcp_project, "location": settings.gcp_region}
        launch = DataflowStartFlexTemplateOperator(
            task_id="launch_stream", body=stream_launch(settings), append_job_name=False, **common)
        update = DataflowStartFlexTemplateOperator(
            task_id="update_stream", body=stream_launch(settings, update=True), append_job_name=False, **common)
        drain = DataflowStopJobOperator(task_id="drain_stream", job_name_prefix=settings.stream_job_name,
                                        drain_pipeline=True, **common)
        decide() >> [launch, update, drain, EmptyOperator(task_id="nothing_to_do")]

    return streaming_job()


def stream_launch(settings: Settings, *, update: bool = False) -> dict:
    """The launch body; without a template setting an empty one, never sent: `decide` fails first, naming it."""
    try:
        return orchestration.stream_body(settings, update=update)
    except ValueError:
        return {}


dag_object = build(get_settings())
