"""Typed settings for the whole platform, read from the environment (prefix `LAKEHOUSE_`) or `.env`.

One object says where everything lives: the local lakehouse under `LAKEHOUSE_HOME` (default `./.lakehouse`)
or the Google Cloud project, datasets and bucket. Modules ask it for paths and table ids instead of
spelling them out, so no path or table name is written twice.

    LAKEHOUSE_HOME=/data/lake lakehouse backfill ...
    LAKEHOUSE_ENVIRONMENT=gcp LAKEHOUSE_GCP_PROJECT=my-project lakehouse backfill --runner DataflowRunner ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the lakehouse lives and the limits its pipelines enforce."""

    model_config = SettingsConfigDict(env_prefix="LAKEHOUSE_", env_file=".env", extra="ignore", populate_by_name=True)

    environment: Literal["local", "gcp"] = "local"
    home: Path = Field(
        default=Path(".lakehouse"),
        validation_alias="LAKEHOUSE_HOME",
        description="Root of the local lakehouse: Parquet tables, warehouse.duckdb, run records.",
    )

    # Google Cloud (environment=gcp)
    gcp_project: str | None = Field(default=None, pattern=r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
    gcp_region: str = "europe-west2"
    gcs_bucket: str | None = Field(default=None, description="Bucket for Dataflow staging/temp and landing files.")
    bronze_dataset: str = "bronze"
    silver_dataset: str = "silver"
    gold_dataset: str = "gold"
    ml_dataset: str = "ml"
    staging_dataset: str = Field(default="staging", description="dbt's staging and intermediate views.")

    # Pub/Sub: the emulator locally (LAKEHOUSE_PUBSUB_EMULATOR_HOST), the real service with environment=gcp
    pubsub_project: str = Field(default="local-dev", pattern=r"^[a-z][-a-z0-9:.]{4,61}[a-z0-9]$",
                                description="Project of the emulator's topics (gcp: gcp_project is used).")
    pubsub_emulator_host: str = Field(default="127.0.0.1:8085", description="host:port of the local emulator.")
    events_topic: str = "events"
    events_subscription: str = "events-stream"
    dead_letter_topic: str = "events-dead-letter"
    dead_letter_subscription: str = "events-dead-letter-sub"

    # The stream
    stream_batch_seconds: float = Field(default=2.0, gt=0, description="Micro-batch length: how often files land.")
    stream_window_seconds: int = Field(default=60, gt=0, description="Event-time window of demand aggregates.")
    allowed_lateness_seconds: int = Field(
        default=300, ge=0, description="Events up to this late still update their window; later ones are flagged.")
    pubsub_max_messages: int = Field(default=1000, gt=0, description="Messages per pull of the local stream.")

    # Orchestration (composer_dags/): where the daily DAG finds landed files, the streaming job, alerts
    landing_uri: str | None = Field(default=None, description=(
        "Landing zone: events/YYYY-MM-DD*.jsonl[.gz] and dims/ (local default $LAKEHOUSE_HOME/landing; gcp: "
        "gs://LANDING_BUCKET, whose archive/events/YYYY-MM-DD/ the Cloud Storage subscription fills)."))
    flex_template_path: str | None = Field(default=None, description=(
        "gs:// path of the pipeline's Flex Template spec (written by `lakehouse deploy`)."))
    stream_job_name: str = Field(default="lakehouse-stream", description="Name of the streaming Dataflow job.")
    dataflow_service_account: str | None = Field(default=None, description=(
        "Service account of Dataflow jobs the DAGs launch (Terraform's dataflow_service_account)."))
    dataflow_subnetwork: str | None = Field(default=None, description=(
        "Subnetwork of those jobs' workers (private IPs: it needs Private Google Access)."))
    alert_webhook_url: str | None = Field(default=None, description=(
        "Task failures are POSTed here as JSON (e.g. a chat webhook); they are always logged."))

    # Quality gate of the daily DAG: a breach fails the run
    max_dead_letter_rate: float = Field(default=0.05, ge=0, le=1, description=(
        "Largest share of the interval's records that may be dead letters."))
    max_source_lag_hours: float = Field(default=48.0, gt=0, description=(
        "Newest silver order event may be at most this much older than the end of the interval."))
    max_forecast_wape: float = Field(default=1.0, gt=0, description="Largest backtest WAPE of a forecast run.")
    max_wape_vs_naive: float = Field(default=1.1, gt=0, description=(
        "A run's WAPE may exceed seasonal naive's on the same points by at most this factor."))

    # Limits of the event contract
    max_payload_bytes: int = Field(default=1_000_000, gt=0, description="Larger raw events are dead letters.")
    max_future_skew_hours: float = Field(
        default=24.0, ge=0, description="Events stamped later than now + this are dead letters."
    )

    # ---- derived paths (local) -------------------------------------------------------------
    @property
    def lake_dir(self) -> Path:
        return self.home.resolve()

    @property
    def warehouse_path(self) -> Path:
        return self.lake_dir / "warehouse.duckdb"

    @property
    def runs_dir(self) -> Path:
        return self.lake_dir / "runs"

    @property
    def archive_dir(self) -> Path:
        """Raw events as published (JSONL), the local counterpart of a Cloud Storage subscription."""
        return self.lake_dir / "archive"

    @property
    def landing(self) -> str:
        """Root of the landing zone (a folder or gs:// URI)."""
        if self.landing_uri:
            return self.landing_uri.rstrip("/")
        if self.environment == "gcp":
            raise ValueError("LAKEHOUSE_LANDING_URI must be set on gcp (gs://LANDING_BUCKET)")
        return str(self.lake_dir / "landing")

    @property
    def project_for_pubsub(self) -> str:
        return self.gcp_project if self.environment == "gcp" and self.gcp_project else self.pubsub_project

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project_for_pubsub}/topics/{name}"

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project_for_pubsub}/subscriptions/{name}"

    def dataset(self, layer: str) -> str:
        return {
            "bronze": self.bronze_dataset,
            "silver": self.silver_dataset,
            "gold": self.gold_dataset,
            "ml": self.ml_dataset,
            "staging": self.staging_dataset,
        }[layer]

    def bigquery_table(self, layer: str, name: str) -> str:
        if not self.gcp_project:
            raise ValueError("LAKEHOUSE_GCP_PROJECT must be set to write to BigQuery")
        return f"{self.gcp_project}:{self.dataset(layer)}.{name}"


def get_settings() -> Settings:
    """Fresh settings from the current environment (cheap; tests change the environment)."""
    return Settings()
