"""Offline checks of terraform/ and the Flex Template (Terraform's providers cannot be downloaded here).

python-hcl2 parses every module; the tests check what `terraform validate/plan` cannot check for us here:
that every table the jobs write is provisioned from the contract's schema files (the wiring of paths
and for_each), that the stream's subscription has its dead-letter and retry policies, that no
primitive role or key is granted, that every variable is typed, described and validated, that the
defaults agree with pipelines.config, and that the Flex Template's parameters reach the CLI.
`make tf-check` adds `terraform fmt -check` and checkov.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import hcl2
import pytest
from hcl2 import SerializationOptions

from pipelines import flex_template, tables
from pipelines.config import Settings

REPO = Path(__file__).resolve().parents[1]
TF = REPO / "terraform"
FLEX = REPO / "pipelines" / "flex_template"
#: BigQuery's standard SQL type names and the legacy spellings the API answers with
TYPE_ALIASES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}
PRIMITIVE = re.compile(r"roles/(owner|editor|viewer)\b")
#: Terraform variables that are pipelines.config settings under the same name
SHARED_WITH_SETTINGS = ("region", "events_topic", "events_subscription", "dead_letter_topic",
                        "dead_letter_subscription", "stream_window_seconds", "allowed_lateness_seconds")


@functools.cache
def module(name: str = "") -> dict[str, list]:
    """All blocks of a module (root: ""), merged over its .tf files: kind -> list of blocks."""
    folder = TF / "modules" / name if name else TF
    merged: dict[str, list] = {}
    for path in sorted(folder.glob("*.tf")):
        with path.open() as f:
            parsed = hcl2.load(f, serialization_options=SerializationOptions(strip_string_quotes=True,
                                                                               explicit_blocks=False))
        for kind, blocks in parsed.items():
            if not kind.startswith("__"):
                merged.setdefault(kind, []).extend(blocks)
    return merged


def named(name: str, kind: str) -> dict[str, dict]:
    """Blocks with one label (variable, output, module) by name; locals merged into one dict."""
    if kind == "locals":
        return {k: v for block in module(name).get("locals", []) for k, v in block.items()}
    return {label: body for block in module(name).get(kind, []) for label, body in block.items()}


def resources(name: str) -> dict[tuple[str, str], dict]:
    return {(rtype, label): body for block in module(name).get("resource", [])
            for rtype, labelled in block.items() for label, body in labelled.items()}


def module_names() -> list[str]:
    return ["", *sorted(p.name for p in (TF / "modules").iterdir() if p.is_dir())]


def hcl_string(text: str) -> str:
    """A quoted HCL string literal as it was parsed (escapes kept) -> its value."""
    return text.replace('\\"', '"').replace("\\\\", "\\")


def regex_of(variable: dict) -> str:
    """The pattern of a variable's `can(regex("...", var.x))` validation."""
    for rule in variable["validation"]:
        found = re.search(r'regex\("((?:[^"\\]|\\.)*)", var\.', rule["condition"])
        if found:
            return hcl_string(found.group(1))
    raise AssertionError(f"no regex validation in {variable}")


# ---- BigQuery: tables from the contract's schema files -------------------------------------------
def rendered_table_files() -> tuple[Path, dict[str, Path]]:
    """Follow the wiring like Terraform: root schema_dir -> module's file() paths -> files on disk."""
    call = named("", "module")["bigquery"]
    assert call["source"] == "./modules/bigquery"
    schema_dir = (TF / call["schema_dir"].replace("${path.module}", ".")).resolve()
    local = named("bigquery", "locals")
    index_file = re.fullmatch(r'\$\{jsondecode\(file\("(.+)"\)\)\}', local["index"]).group(1)
    table = resources("bigquery")[("google_bigquery_table", "this")]
    schema_file = re.search(r'file\("([^"]+)"\)', table["schema"]).group(1)
    index_path = Path(index_file.replace("${var.schema_dir}", str(schema_dir)))
    index = json.loads(index_path.read_text())
    return index_path, {fqn: Path(schema_file.replace("${var.schema_dir}", str(schema_dir))
                                  .replace("${each.key}", fqn)) for fqn in index}


def test_every_table_the_jobs_write_is_provisioned_from_the_contract_schema():
    index_path, schema_files = rendered_table_files()
    assert index_path == REPO / "schemas" / "bigquery" / "tables.json"
    writers = {spec.writer for spec in tables.TABLES.values()}
    assert writers == {"events", "stream", "forecast"}  # a new writer must be looked at here
    assert set(schema_files) == {fqn for w in writers for fqn in tables.written_by(w)}
    legacy = named("bigquery", "locals")["legacy_type"]
    assert legacy == TYPE_ALIASES  # only spellings change, never a type
    for fqn, path in schema_files.items():
        spec = tables.TABLES[fqn]
        assert path.is_file(), f"{fqn}: Terraform would read {path}, which does not exist"
        assert json.loads(path.read_text()) == spec.bigquery_schema(), f"{path} is stale: run make schemas"


def test_tables_iterate_the_index_with_its_partitioning_and_clustering():
    local = named("bigquery", "locals")
    assert re.match(r"\$\{\{for fqn, spec in local\.index :", local["tables"])
    table = resources("bigquery")[("google_bigquery_table", "this")]
    assert table["for_each"] == "${local.tables}"
    assert table["dataset_id"] == "${google_bigquery_dataset.this[each.value.layer].dataset_id}"
    assert "each.value.cluster_by" in table["clustering"]
    partitioning = table["dynamic"][0]["time_partitioning"]
    assert partitioning["for_each"] == "${each.value.partition_by == null ? [] : [each.value.partition_by]}"
    content = partitioning["content"][0]
    assert (content["type"], content["field"]) == ("DAY", "${time_partitioning.value}")
    index = json.loads((REPO / "schemas" / "bigquery" / "tables.json").read_text())
    for fqn, entry in index.items():
        spec = tables.TABLES[fqn]
        assert (entry["partition_by"], tuple(entry["cluster_by"])) == (spec.partition_by, spec.cluster_by)
        if fqn.split(".")[1].endswith("_events") or fqn == "ml.forecasts":
            assert spec.partition_by in ("event_date", "forecast_date")
            assert spec.cluster_by == ("store_id", "product_id"), fqn


def test_datasets_cover_every_layer_and_gold_for_dbt():
    default = named("", "variable")["datasets"]["default"]
    assert default == {layer: Settings().dataset(layer) for layer in ("bronze", "silver", "gold", "ml", "staging")}
    assert {fqn.split(".")[0] for fqn in tables.TABLES} <= set(default)
    expiry = named("", "variable")["partition_expiration_days"]["default"]
    assert set(expiry) <= set(default) | set(tables.TABLES)  # a typo would silently keep data forever
    assert "silver" not in expiry and "ml" not in expiry


# ---- Pub/Sub ----------------------------------------------------------------------------------
def test_stream_subscription_has_dead_letter_and_retry_policies():
    stream = resources("pubsub")[("google_pubsub_subscription", "stream")]
    assert stream["topic"] == "${google_pubsub_topic.events.id}"
    policy = stream["dead_letter_policy"]
    policy = policy[0] if isinstance(policy, list) else policy
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.dead_letter.id}"
    assert policy["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    retry = stream["retry_policy"]
    retry = retry[0] if isinstance(retry, list) else retry
    assert {"minimum_backoff", "maximum_backoff"} <= set(retry)
    # Pub/Sub's own agent may forward to the dead-letter topic and take messages off the subscription
    agent = resources("pubsub")
    assert agent[("google_pubsub_topic_iam_member", "agent_publishes_dead_letters")]["role"] == "roles/pubsub.publisher"
    assert agent[("google_pubsub_subscription_iam_member", "agent_forwards_dead_letters")]["role"] == (
        "roles/pubsub.subscriber")


def test_raw_events_are_archived_as_jsonl_in_the_landing_bucket():
    archive = resources("pubsub")[("google_pubsub_subscription", "archive")]
    config = archive["cloud_storage_config"]
    config = config[0] if isinstance(config, list) else config
    assert config["bucket"] == "${var.landing_bucket}" and config["filename_suffix"] == ".jsonl"
    assert named("", "module")["pubsub"]["landing_bucket"] == "${module.storage.landing_bucket}"
    assert named("", "module")["pubsub"]["archive_prefix"] == "${local.archive_prefix}"
    assert "${local.archive_prefix}*/*.jsonl" in named("", "output")["archive_glob"]["value"]


# ---- IAM --------------------------------------------------------------------------------------
def test_no_primitive_roles_no_keys_no_authoritative_bindings():
    for path in TF.rglob("*.tf"):
        assert not PRIMITIVE.search(path.read_text()), f"{path}: primitive role"
    for name in module_names():
        for rtype, label in resources(name):
            assert rtype != "google_service_account_key", f"{name}: {label} creates a key"
            # authoritative bindings would remove grants made outside this configuration
            assert not rtype.endswith(("_iam_policy", "_iam_binding")), f"{name}: {rtype}.{label}"
    roles = re.findall(r'role\s*=\s*"(roles/[^"]+)"', "".join(p.read_text() for p in TF.rglob("*.tf")))
    assert roles and all(not PRIMITIVE.match(r) for r in roles)


def test_service_accounts_get_dataset_and_bucket_roles_not_project_wide_data_access():
    local = named("iam", "locals")
    project_roles = [r["role"] for r in local["project_roles"].values()]
    assert not [r for r in project_roles if "dataEditor" in r or "storage.object" in r or "pubsub" in r]
    assert resources("iam")[("google_project_iam_member", "composer_worker")]["role"] == "roles/composer.worker"


# ---- variables --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", module_names(), ids=lambda n: n or "root")
def test_every_variable_has_a_type_and_a_description(name):
    variables = named(name, "variable")
    assert variables, f"module {name!r} declares no variables"
    for var, body in variables.items():
        assert body.get("type"), f"{name or 'root'}: variable {var} has no type"
        assert len(body.get("description", "")) > 10, f"{name or 'root'}: variable {var} has no description"


@pytest.mark.parametrize(("variable", "good", "bad"), [
    ("project_id", ["retail-lake-prod", "my-project-123"],
     ["Retail-lake", "demo", "my_project", "1project", "project-", "a" * 31]),
    ("region", ["europe-west2", "us-central1", "asia-southeast1"], ["europe-west2-a", "EU", "", "europe west2"]),
    ("name_prefix", ["lakehouse", "lh-prod"], ["Lakehouse", "lh", "a" * 17, "lake_house", "lakehouse-"]),
    ("events_topic", ["events", "events.v2"], ["goog-events", "1events", "ev", "events/x"]),
    ("events_subscription", ["events-stream"], ["googstream", "-stream", "s"]),
    ("dead_letter_topic", ["events-dead-letter"], ["googdl", "dl", "dead letter"]),
    ("dead_letter_subscription", ["events-dead-letter-sub"], ["googdl", "d", "dead/letter"]),
])
def test_validation_rejects_bad_names_and_accepts_good_ones(variable, good, bad):
    body = named("", "variable")[variable]
    pattern = regex_of(body)
    for value in good:
        assert re.search(pattern, value) and not value.startswith("goog"), (variable, value)
    for value in bad:
        assert not re.search(pattern, value) or value.startswith("goog"), (variable, value)
    if "default" in body:
        assert re.search(pattern, body["default"])
    assert all(rule["error_message"].startswith(variable) for rule in body["validation"])


def test_names_fit_google_limits():
    prefix_max = 16  # name_prefix validation
    assert len(f"{'x' * prefix_max}-composer") <= 30  # service account ids: 6-30 characters
    assert len(f"{'x' * 30}-{'x' * prefix_max}-composer") <= 63  # bucket names: at most 63


def test_project_rule_and_defaults_agree_with_the_settings():
    variables = named("", "variable")
    assert regex_of(variables["project_id"]) == Settings.model_fields["gcp_project"].metadata[0].pattern
    defaults = Settings()
    for name in SHARED_WITH_SETTINGS:
        field = "gcp_region" if name == "region" else name
        assert variables[name]["default"] == getattr(defaults, field), name


def test_deployed_settings_are_settings_fields():
    settings = named("", "locals")["settings"]
    unknown = set(settings) - set(Settings.model_fields)
    assert not unknown, f"Terraform sets LAKEHOUSE_* variables that pipelines.config does not read: {unknown}"
    for name in SHARED_WITH_SETTINGS:  # the deployed value is the variable, not a copy of its default
        field = "gcp_region" if name == "region" else name
        assert re.fullmatch(rf"\$\{{(tostring\()?var\.{name}\)?\}}", settings[field]), field


def test_composer_gets_every_setting_its_dataflow_launches_need():
    local = named("", "locals")
    dag_only = set(re.findall(r"(\w+)\s*=(?!=)", local["composer_settings"].split("{", 2)[-1]))
    assert {"landing_uri", "flex_template_path", "dataflow_service_account", "dataflow_subnetwork"} <= dag_only
    assert dag_only <= set(Settings.model_fields)
    assert local["composer_settings"].startswith("${merge(local.settings, {")
    assert "local.composer_settings" in local["lakehouse_env"]
    composer = named("", "module")["composer"]
    assert composer["env_variables"] == "${local.lakehouse_env}"


# ---- the Flex Template ---------------------------------------------------------------------------
def metadata_parameters() -> dict[str, dict]:
    return {p["name"]: p for p in json.loads((FLEX / "metadata.json").read_text())["parameters"]}


def test_the_streaming_job_passes_only_parameters_the_template_declares():
    job = resources("dataflow")[("google_dataflow_flex_template_job", "stream")]
    fixed = re.findall(r"(\w+)\s*=", job["parameters"].split("{", 2)[-1])
    declared = metadata_parameters()
    assert job["parameters"].startswith("${merge(var.settings, {")
    assert set(fixed) <= set(declared), set(fixed) - set(declared)
    assert set(named("", "locals")["settings"]) <= set(declared)
    assert job["on_delete"] == "drain" and job["ip_configuration"] == "WORKER_IP_PRIVATE"


def test_every_template_parameter_reaches_a_setting_or_a_cli_option():
    import typer

    from pipelines.cli import app
    from pipelines.flex_template import _command_options

    commands = typer.main.get_command(app).commands
    options = {name: set(_command_options(name)) for name in flex_template.COMMANDS if name in commands}
    assert set(options) == set(flex_template.COMMANDS)
    unplaced = []
    for name in metadata_parameters():
        if name == "command" or name in Settings.model_fields or any(name in o for o in options.values()):
            continue
        unplaced.append(name)
    assert not unplaced, f"metadata.json parameters nothing reads: {unplaced}"


def test_the_image_runs_the_pinned_beam_and_python():
    dockerfile = (FLEX / "Dockerfile").read_text()
    beam = re.search(r"^apache-beam==(\S+)$", (REPO / "requirements" / "constraints.txt").read_text(), re.M).group(1)
    assert re.search(rf"^ARG BEAM_VERSION={re.escape(beam)}$", dockerfile, re.M)
    assert re.search(r"^ARG PYTHON_VERSION=3\.11$", dockerfile, re.M)
    assert "requirements/constraints.txt" in dockerfile and "'.[beam]'" in dockerfile
    entry = re.search(r"FLEX_TEMPLATE_PYTHON_PY_FILE=/template/(\S+)", dockerfile).group(1)
    assert (REPO / entry).is_file()


def test_template_arguments_become_settings_options_and_beam_options():
    env, cli = flex_template.translate([
        "--command=backfill", "--input=gs://b/archive/*.jsonl", "--dims", "gs://b/dims", "--silver_dataset=s2",
        "--project=retail-lake", "--region=us-east1", "--temp_location=gs://b/tmp", "--verbose=true",
        "--experiments=use_runner_v2"])
    assert env == {"LAKEHOUSE_ENVIRONMENT": "gcp", "LAKEHOUSE_SILVER_DATASET": "s2",
                   "LAKEHOUSE_GCP_PROJECT": "retail-lake", "LAKEHOUSE_GCP_REGION": "us-east1"}
    assert cli[:5] == ["backfill", "--input", "gs://b/archive/*.jsonl", "--dims", "gs://b/dims"]
    assert {"--beam-arg=--project=retail-lake", "--beam-arg=--temp_location=gs://b/tmp",
            "--beam-arg=--experiments=use_runner_v2", "--verbose"} <= set(cli)
    assert cli[-2:] == ["--runner", "DataflowRunner"]
    # an explicit project setting wins over the job's project
    env, _ = flex_template.translate(["--command=backfill", "--gcp_project=other-proj", "--project=retail-lake"])
    assert env["LAKEHOUSE_GCP_PROJECT"] == "other-proj"


@pytest.mark.parametrize("argv", [["--command=delete"], ["--command=backfill", "stray"], ["--command=sql"]])
def test_bad_template_arguments_fail_clearly(argv):
    with pytest.raises(SystemExit, match=r"command|argument|does not exist|beam-arg"):
        flex_template.translate(argv)
