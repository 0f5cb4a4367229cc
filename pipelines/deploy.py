"""The launch steps after `terraform apply`: image, Flex Template, streaming job, Composer uploads.

    lakehouse deploy --dry-run                      # print every command and what it creates; calls nothing
    lakehouse deploy --dry-run --outputs out.json   # the same with real names (terraform output -json > out.json)
    lakehouse deploy                                # run them (needs gcloud, terraform; docker with --builder docker)

The plan is data (a list of `Step`s built from Terraform's outputs), so the dry run shows exactly what a
real run executes. In order:

1. build the pipeline image (pipelines/flex_template/Dockerfile) with Cloud Build, or docker, and push it
   to the Artifact Registry repository Terraform created;
2. write the Flex Template spec (image + metadata.json) to the Dataflow bucket;
3. `terraform apply` with that template and image (written to terraform/stream.auto.tfvars.json):
   starts the streaming job, or updates it in place;
4. install the package's Python requirements on Composer (from the installed package's metadata);
5. upload the packages and the dbt project beside them (plugins/), and the DAGs (dags/) to the Composer bucket.

Composer's LAKEHOUSE_* environment variables are set by Terraform itself (output `lakehouse_env`), so
they never drift from the infrastructure; the dry run prints them.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FLEX_DIR = Path("pipelines/flex_template")
PACKAGE = "demand-lakehouse"
#: variables file `terraform apply` loads by itself (git-ignored): the deployed template and image
STREAM_VARS = "stream.auto.tfvars.json"
BUILDERS = ("cloud-build", "docker")
#: Terraform outputs the plan reads
OUTPUTS = ("project_id", "region", "image_repository", "dataflow_bucket", "composer_bucket", "composer_environment",
           "stream_job_name", "lakehouse_env")
#: folders uploaded to the Composer bucket: local folder -> bucket prefix (Composer mounts the bucket at
#: /home/airflow/gcs; dags/ and plugins/ are on Airflow's PYTHONPATH, data/ is for everything else)
# dbt/ sits beside the packages, where pipelines.transform.DBT_DIR looks for it (as in the repository)
UPLOADS = {"pipelines": "plugins/pipelines", "ml": "plugins/ml", "composer_dags": "dags", "dbt": "plugins/dbt"}
#: never uploaded: caches, local builds and databases
UPLOAD_EXCLUDE = r".*__pycache__.*|.*\.pyc$|(.*/)?(target|dbt_packages|logs)/.*|.*\.duckdb(\.wal)?$|.*\.user\.yml$"
#: extras Composer needs on top of the base requirements (dbt-bigquery, cosmos), and what it must not get:
#: Airflow and its Google/Beam providers come with the Composer image; dbt-duckdb is for the local lakehouse.
COMPOSER_EXTRAS = ("dbt", "airflow")
NOT_ON_COMPOSER = frozenset({"apache-airflow", "apache-airflow-providers-google",
                             "apache-airflow-providers-apache-beam", "dbt-duckdb"})


@dataclass(frozen=True)
class Step:
    """One command of the deployment: what it does, what it creates, and why it may be skipped."""

    title: str
    creates: str
    argv: tuple[str, ...] = ()
    skip: str | None = None  # reason not to run it (e.g. a folder that does not exist yet)
    #: stderr fragments that mean "nothing to do" rather than failure
    tolerate: tuple[str, ...] = ()
    #: a file the command reads, written just before it runs: (path, content); the dry run prints the content
    writes: tuple[Path, str] | None = None

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def placeholder_outputs() -> dict:
    """Stand-ins for Terraform's outputs when the dry run has none (it never reads remote state)."""
    values: dict = {name: f"<{name}>" for name in OUTPUTS}
    values["lakehouse_env"] = {}
    return values


def load_outputs(path: Path) -> dict:
    """Outputs from `terraform output -json` (saved to a file, or read from the command's output)."""
    raw = json.loads(Path(path).read_text())
    return _flatten(raw)


def terraform_outputs(terraform_dir: Path) -> dict:
    result = subprocess.run(["terraform", f"-chdir={terraform_dir}", "output", "-json"], check=True,
                            capture_output=True, text=True)
    return _flatten(json.loads(result.stdout))


def _flatten(raw: dict) -> dict:
    values = {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in raw.items()}
    missing = [name for name in OUTPUTS if name not in values]
    if missing:
        raise ValueError(f"Terraform outputs lack {', '.join(missing)}: run `terraform apply` in terraform/ first")
    return values


def composer_requirements(package: str = PACKAGE) -> list[str]:
    """The package's runtime requirements plus its dbt and Airflow extras, as pip lines for Composer."""
    lines = []
    for requirement in metadata.requires(package) or []:
        spec, _, marker = requirement.partition(";")
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", marker)
        if extra and extra.group(1) not in COMPOSER_EXTRAS:
            continue
        name = re.split(r"[\s\[<>=!~;]", spec.strip(), maxsplit=1)[0].lower()
        if name not in NOT_ON_COMPOSER:
            lines.append(spec.strip())
    return sorted(set(lines), key=str.lower)


def plan(outputs: dict, *, tag: str, builder: str = "cloud-build", repo: Path = REPO,
         terraform_dir: Path = Path("terraform"), requirements_file: Path | None = None,
         auto_approve: bool = False) -> list[Step]:
    """The deployment's commands, in order, for Terraform's `outputs`. Paths in commands are relative to `repo`."""
    if builder not in BUILDERS:
        raise ValueError(f"builder must be one of {', '.join(BUILDERS)}, got {builder!r}")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag):
        raise ValueError(f"image tag {tag!r} is not a valid Docker tag")
    project, region = outputs["project_id"], outputs["region"]
    image = f"{outputs['image_repository']}/pipeline:{tag}"
    template = f"gs://{outputs['dataflow_bucket']}/templates/pipeline-{tag}.json"
    dockerfile = FLEX_DIR / "Dockerfile"
    steps: list[Step] = []

    if builder == "cloud-build":
        steps.append(Step("Build and push the pipeline image (Cloud Build)", f"image {image}",
                          ("gcloud", "builds", "submit", f"--project={project}", f"--region={region}",
                           f"--config={FLEX_DIR / 'cloudbuild.yaml'}", f"--substitutions=_IMAGE={image}", ".")))
    else:
        steps += [
            Step("Build the pipeline image (docker)", f"local image {image}",
                 ("docker", "build", "-f", str(dockerfile), "-t", image, ".")),
            Step("Push the pipeline image", f"image {image} in Artifact Registry", ("docker", "push", image)),
        ]
    steps.append(Step("Write the Flex Template spec", f"template {template}",
                      ("gcloud", "dataflow", "flex-template", "build", template, f"--image={image}",
                       "--sdk-language=PYTHON", f"--metadata-file={FLEX_DIR / 'metadata.json'}",
                       f"--project={project}")))
    # The template and image go to an auto-loaded variables file, not -var flags, so that a later plain
    # `terraform apply` keeps the job as deployed instead of removing it.
    stream_vars = repo / terraform_dir / STREAM_VARS
    apply = ["terraform", f"-chdir={terraform_dir}", "apply", "-input=false"]
    if auto_approve:
        apply.append("-auto-approve")
    steps.append(Step("Start or update the streaming job (terraform apply)",
                      f"Dataflow job {outputs['stream_job_name']} running {template} (updated in place if running)",
                      tuple(apply), writes=(stream_vars, json.dumps(
                          {"stream_template_gcs_path": template, "stream_image": image}, indent=2) + "\n")))

    environment = outputs.get("composer_environment")
    no_composer = None if environment else "Terraform created no Composer environment (composer_enabled = false)"
    requirements = composer_requirements()
    requirements_file = requirements_file or Path(tempfile.gettempdir()) / "lakehouse-composer-requirements.txt"
    steps.append(Step("Install the package's requirements on Composer",
                      f"PyPI packages in Composer environment {environment}",
                      ("gcloud", "composer", "environments", "update", str(environment), f"--location={region}",
                       f"--project={project}", f"--update-pypi-packages-from-file={requirements_file}"),
                      skip=no_composer, tolerate=("No change in configuration",),
                      writes=(requirements_file, "".join(f"{line}\n" for line in requirements))))
    for folder, prefix in UPLOADS.items():
        target = f"gs://{outputs['composer_bucket']}/{prefix}"
        missing = None if (repo / folder).is_dir() else f"{folder}/ does not exist in this checkout: nothing to upload"
        steps.append(Step(f"Upload {folder}/ to the Composer bucket", f"objects under {target}/",
                          ("gcloud", "storage", "rsync", folder, target, "--recursive",
                           "--delete-unmatched-destination-objects", f"--exclude={UPLOAD_EXCLUDE}"),
                          skip=no_composer or missing))
    return steps


def run(steps: Iterable[Step], *, dry_run: bool, repo: Path = REPO, echo: Callable[[str], None] = print) -> int:
    """Print (dry run) or execute the steps in `repo`; returns the number of commands run or printed."""
    done = 0
    for n, step in enumerate(steps, 1):
        echo(f"[{n}] {step.title}")
        if step.skip:
            echo(f"    skipped: {step.skip}")
            continue
        echo(f"    $ {step.command}")
        echo(f"    creates: {step.creates}")
        if step.writes:
            path, content = step.writes
            echo(f"    with {path}:")
            for line in content.splitlines():
                echo(f"      {line}")
        done += 1
        if dry_run:
            continue
        if step.writes:
            step.writes[0].write_text(step.writes[1])
        result = subprocess.run(step.argv, cwd=repo, stderr=subprocess.PIPE, text=True)
        if result.returncode and not any(t in (result.stderr or "") for t in step.tolerate):
            echo(result.stderr or "")
            raise RuntimeError(f"step {n} failed ({step.title}): exit {result.returncode}")
    return done


def missing_tools(steps: Iterable[Step]) -> list[str]:
    """Executables the steps call that are not on PATH."""
    return sorted({s.argv[0] for s in steps if s.argv and not s.skip and shutil.which(s.argv[0]) is None})


def default_tag(repo: Path = REPO) -> str:
    """The commit the image is built from (with -dirty for uncommitted changes), else the package version."""
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], check=True,
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               check=True, capture_output=True, text=True).stdout.strip()
        return f"{sha}-dirty" if dirty else sha
    except (OSError, subprocess.CalledProcessError):
        return metadata.version(PACKAGE)
