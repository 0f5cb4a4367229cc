"""`lakehouse deploy`: the launch steps after `terraform apply`, checked without Google.

The dry run (what CI runs) must print every command and call nothing; a real run is exercised with
the commands replaced by a recorder, so the order, the files written first and the failure handling
are tested without gcloud, docker or terraform.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines import deploy
from pipelines.cli import app

OUTPUTS = {
    "project_id": "retail-lake", "region": "europe-west2",
    "image_repository": "europe-west2-docker.pkg.dev/retail-lake/lakehouse-images",
    "dataflow_bucket": "retail-lake-lakehouse-dataflow", "composer_bucket": "retail-lake-lakehouse-composer",
    "composer_environment": "lakehouse-composer", "stream_job_name": "lakehouse-stream",
    "lakehouse_env": {"LAKEHOUSE_ENVIRONMENT": "gcp", "LAKEHOUSE_GCP_PROJECT": "retail-lake"},
}


@pytest.fixture
def outputs_file(tmp_path) -> Path:
    """What `terraform output -json` prints: every output wrapped with its type."""
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({k: {"value": v, "type": "string", "sensitive": False} for k, v in OUTPUTS.items()}))
    return path


@pytest.fixture
def no_commands(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"the dry run called {args[0] if args else kwargs}")

    monkeypatch.setattr(deploy.subprocess, "run", refuse)


def test_dry_run_prints_every_command_and_calls_nothing(outputs_file, no_commands):
    result = CliRunner().invoke(app, ["deploy", "--dry-run", "--outputs", str(outputs_file), "--tag", "abc123"])
    assert result.exit_code == 0, result.output
    image = f"{OUTPUTS['image_repository']}/pipeline:abc123"
    template = f"gs://{OUTPUTS['dataflow_bucket']}/templates/pipeline-abc123.json"
    for expected in (
        f"gcloud builds submit --project=retail-lake --region=europe-west2 "
        f"--config=pipelines/flex_template/cloudbuild.yaml --substitutions=_IMAGE={image} .",
        f"gcloud dataflow flex-template build {template} --image={image} --sdk-language=PYTHON "
        "--metadata-file=pipelines/flex_template/metadata.json --project=retail-lake",
        "terraform -chdir=terraform apply -input=false",
        f'"stream_template_gcs_path": "{template}"',
        "gcloud composer environments update lakehouse-composer --location=europe-west2",
        f"gcloud storage rsync pipelines gs://{OUTPUTS['composer_bucket']}/plugins/pipelines --recursive",
        "LAKEHOUSE_GCP_PROJECT=retail-lake",
        "dry run",
    ):
        assert expected in result.output, expected


def test_dry_run_without_terraform_state_uses_placeholders(no_commands):
    result = CliRunner().invoke(app, ["deploy", "--dry-run", "--tag", "t1"])
    assert result.exit_code == 0, result.output
    assert "gs://<dataflow_bucket>/templates/pipeline-t1.json" in result.output


def test_missing_folders_are_reported_not_uploaded(tmp_path):
    (tmp_path / "pipelines").mkdir()
    steps = deploy.plan(OUTPUTS, tag="t", repo=tmp_path)
    uploads = {s.argv[3]: s for s in steps if s.argv[:3] == ("gcloud", "storage", "rsync")}
    assert set(uploads) == set(deploy.UPLOADS)
    assert uploads["pipelines"].skip is None
    assert "dbt/ does not exist" in uploads["dbt"].skip and "composer_dags/ does not exist" in uploads[
        "composer_dags"].skip
    assert uploads["composer_dags"].argv[4] == f"gs://{OUTPUTS['composer_bucket']}/dags"
    assert uploads["dbt"].argv[4] == f"gs://{OUTPUTS['composer_bucket']}/plugins/dbt"


def test_without_composer_only_the_stream_is_deployed():
    steps = deploy.plan({**OUTPUTS, "composer_environment": None}, tag="t", builder="docker")
    run = [s for s in steps if not s.skip]
    assert [s.argv[0] for s in run] == ["docker", "docker", "gcloud", "terraform"]
    assert all("composer" in s.skip.lower() for s in steps if s.skip)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"builder": "podman"}, "builder"), ({"tag": "bad tag!"}, "tag"),
])
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        deploy.plan(OUTPUTS, **{"tag": "t", **kwargs})


def test_incomplete_outputs_fail_with_a_clear_message(tmp_path):
    path = tmp_path / "outputs.json"
    path.write_text(json.dumps({"project_id": {"value": "retail-lake"}}))
    result = CliRunner().invoke(app, ["deploy", "--dry-run", "--outputs", str(path)])
    assert result.exit_code == 2
    assert "terraform apply" in result.output


def test_a_real_run_executes_in_order_and_writes_inputs_first(tmp_path, monkeypatch):
    (tmp_path / "terraform").mkdir()
    calls = []

    def fake_run(argv, cwd, stderr, text):
        calls.append(argv)
        if argv[:2] == ("terraform", "-chdir=terraform"):  # terraform reads the job's variables file
            assert json.loads((tmp_path / "terraform" / deploy.STREAM_VARS).read_text())["stream_image"].endswith(":t")
        if argv[:3] == ("gcloud", "composer", "environments"):  # unchanged requirements: not a failure
            return subprocess.CompletedProcess(argv, 1, stderr="ERROR: INVALID_ARGUMENT: No change in configuration")
        return subprocess.CompletedProcess(argv, 0, stderr="")

    monkeypatch.setattr(deploy.subprocess, "run", fake_run)
    requirements = tmp_path / "req.txt"
    steps = deploy.plan(OUTPUTS, tag="t", repo=tmp_path, requirements_file=requirements)
    assert deploy.run(steps, dry_run=False, repo=tmp_path, echo=lambda _: None) == len(calls) == 4
    assert [c[:2] for c in calls] == [("gcloud", "builds"), ("gcloud", "dataflow"), ("terraform", "-chdir=terraform"),
                                      ("gcloud", "composer")]
    assert "dbt-bigquery" in requirements.read_text()


def test_a_failing_step_stops_the_run(tmp_path, monkeypatch):
    calls = []

    def fake_run(argv, cwd, stderr, text):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 1, stderr="permission denied")

    monkeypatch.setattr(deploy.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match="step 1 failed"):
        deploy.run(deploy.plan(OUTPUTS, tag="t", repo=tmp_path), dry_run=False, repo=tmp_path, echo=lambda _: None)
    assert len(calls) == 1


def test_composer_gets_the_package_requirements_but_not_airflow():
    requirements = deploy.composer_requirements()
    names = {r.split("<")[0].split(">")[0].split("=")[0].split("[")[0] for r in requirements}
    assert {"pydantic", "pydantic-settings", "dbt-core", "dbt-bigquery", "astronomer-cosmos"} <= names
    assert not names & {"apache-airflow", "dbt-duckdb", "prophet", "streamlit", "pytest"}
