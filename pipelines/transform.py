"""dbt for the lakehouse: run `dbt build` with live progress, count the gold tables, and write the files
dbt reads that are derived from the contract (the sources yml and the public-holidays seed).

    lakehouse transform                      # dbt build on DuckDB ($LAKEHOUSE_HOME/warehouse.duckdb)
    lakehouse transform --select fact_daily_demand+
    lakehouse transform --target gcp         # the same project on BigQuery (LAKEHOUSE_GCP_PROJECT, ...)
    lakehouse schemas                        # also rewrites dbt/models/staging/_sources.yml

dbt runs in a child process (`pipelines.dbt_runner`, dbt's programmatic runner: the project is parsed
once, then the source tests and the build run on that manifest) whose JSON log events feed the
progress bar: the DuckDB file is opened and released by that process alone, and one run's dbt state never
leaks into the next. While it runs, dbt holds the warehouse file's write lock; readers
(`warehouse.connect`) wait up to 10 s for it, then fail.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec.inspect as mi
import yaml

from pipelines import contract, dbt_runner, tables
from pipelines.config import Settings

DBT_DIR = Path(__file__).resolve().parents[1] / "dbt"
SOURCES_YML = DBT_DIR / "models" / "staging" / "_sources.yml"
SOURCE_OVERRIDES = DBT_DIR / "sources_overrides.yml"
HOLIDAYS_SEED = DBT_DIR / "seeds" / "public_holidays.csv"
HOLIDAY_YEARS = range(2009, 2031)
#: the gold tables `lakehouse transform` counts after a build (models/marts)
GOLD_MODELS = ("dim_date", "dim_product", "dim_store", "fact_orders", "fact_daily_demand", "fact_inventory",
               "fact_demand_forecast", "mart_forecast_accuracy")
TARGETS = ("local", "gcp")
#: the sources (bronze, silver, ml); with dbt's eager indirect selection, also the tests on them
SOURCES_SELECTOR = "source:*"
#: the dbt child's logging: no console log (it passes on the events this process hears); dbt.log in dbt's own
#: text format, which costs a fraction of JSON per line (a build logs ~20 debug lines per node)
CHILD_LOGGING = ("--log-level", "none", "--log-level-file", "debug", "--log-format-file", "debug", "--no-use-colors")
#: a test runs in the command that selects every model it reads (one that reads a source and a model, like
#: the reconciliation with silver, runs in the build, after the model)
CAUTIOUS = ("--indirect-selection", "cautious")


# ---- files derived from the contract ---------------------------------------------------------------------
def _literal_values() -> dict[str, list[str]]:
    """Allowed values of the contract's Literal fields by column name (channel, reason, ...)."""
    found: dict[str, list[str]] = {}

    def literal(t: mi.Type) -> list[str] | None:
        while isinstance(t, mi.Metadata):
            t = t.type
        if isinstance(t, mi.UnionType):
            return next((v for v in map(literal, t.types) if v), None)
        return list(t.values) if isinstance(t, mi.LiteralType) else None

    for struct in [*contract.ENTITY_STRUCT.values(), *contract.DIMENSIONS.values()]:
        for f in mi.type_info(struct).fields:
            if values := literal(f.type):
                found[f.name] = values
    return found


def _accepted_values(spec: tables.TableSpec) -> dict[str, list[str]]:
    values = {name: v for name, v in _literal_values().items() if name in spec.schema.names}
    entity = tables.ENTITY_OF_TABLE.get(spec.fqn)
    if entity:
        values["event_type"] = [t for t, e in contract.ENTITY_OF.items() if e == entity]
    if spec is tables.DEAD_LETTER:
        # (event_type is not checked: an unknown event type is one of the reasons a record is here)
        values |= {"stage": list(contract.STAGES), "reason": list(contract.REASONS)}
    return values


def _column(f, bq_type: str) -> dict[str, Any]:
    return {"name": f.name, "description": (f.metadata or {}).get(b"description", b"").decode(), "data_type": bq_type}


def test_window_column(spec: tables.TableSpec) -> str | None:
    """The event-date column by which an incremental build tests only the days it rebuilt (meta.test_window,
    read by dbt/macros/test_window.sql): the partition column of the tables the event pipelines write."""
    return spec.partition_by if spec.writer != "forecast" else None


def dbt_sources(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dbt sources of every lakehouse table (bronze, silver, ml), derived from `tables.TABLES`:
    names, descriptions and types from the contract, `not_null_columns` over the required fields and
    `accepted_values_columns` over the columns whose values the contract lists (one scan each); then the
    hand-written `overrides` (freshness, keys, relationships) merged in by source, table and column name
    (lists are appended, mappings updated)."""
    layers: dict[str, list[tables.TableSpec]] = {}
    for spec in tables.TABLES.values():
        layers.setdefault(spec.layer, []).append(spec)
    sources = []
    for layer, specs in layers.items():
        table_list = []
        for spec in specs:
            enumerated = _accepted_values(spec)
            types = {c["name"]: c["type"] for c in spec.bigquery_schema()}
            table = {"name": spec.name, "description": spec.description}
            if window := test_window_column(spec):
                table["config"] = {"meta": {"test_window": window}}
            # one scan for all required columns, one for all enumerated ones (dbt/tests/generic/)
            tests = []
            # named by test and table (dbt's default name spells out every argument)
            if required := [f.name for f in spec.schema if not f.nullable]:
                tests.append({"not_null_columns": {"name": f"source_not_null_columns_{layer}_{spec.name}",
                                                   "arguments": {"columns": required}}})
            if enumerated:
                values = {name: enumerated[name] for name in spec.schema.names if name in enumerated}
                tests.append({"accepted_values_columns": {"name": f"source_accepted_values_columns_{layer}_{spec.name}",
                                                          "arguments": {"values": values}}})
            if tests:
                table["data_tests"] = tests
            table["columns"] = [_column(f, types[f.name]) for f in spec.schema]
            table_list.append(table)
        sources.append({"name": layer, "description": f"The {layer} layer, written by the lakehouse pipelines.",
                        "schema": f"{{{{ env_var('LAKEHOUSE_{layer.upper()}_DATASET', '{layer}') }}}}",
                        "tables": table_list})
    generated = {"version": 2, "sources": sources}
    return _merge(generated, overrides or {}) if overrides else generated


def _merge(base: Any, extra: Any) -> Any:
    """Deep merge for dbt yml: lists of named entries merge by name, other lists append, mappings update."""
    if isinstance(base, dict) and isinstance(extra, dict):
        merged = dict(base)
        for key, value in extra.items():
            merged[key] = _merge(base[key], value) if key in base else deepcopy(value)
        return merged
    if isinstance(base, list) and isinstance(extra, list):
        named = {e["name"]: i for i, e in enumerate(base) if isinstance(e, dict) and "name" in e}
        merged = list(base)
        for entry in extra:
            if isinstance(entry, dict) and entry.get("name") in named:
                i = named[entry["name"]]
                merged[i] = _merge(base[i], entry)
            elif isinstance(entry, dict) and "name" in entry:
                raise ValueError(f"override names {entry['name']!r}, which the contract does not have")
            else:
                merged.append(deepcopy(entry))
        return merged
    return deepcopy(extra)


def write_dbt_sources(path: Path = SOURCES_YML, overrides_path: Path = SOURCE_OVERRIDES) -> Path:
    """Write the generated dbt sources yml (do not edit it; edit the contract or the overrides file)."""
    overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.exists() else None
    header = ("# GENERATED by `lakehouse schemas` from pipelines/tables.py and dbt/sources_overrides.yml: "
              "do not edit.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(dbt_sources(overrides), sort_keys=False, width=120))
    return path


def holiday_countries() -> list[str]:
    """Every country a store can have: those the simulator and the real-history importer know."""
    from pipelines import importers, simulate

    return sorted(set(simulate.COUNTRIES) | {code for code, _ in importers.COUNTRIES.values() if code})


def write_holiday_seed(path: Path = HOLIDAYS_SEED, years: range = HOLIDAY_YEARS) -> Path:
    """Public holidays per country (the `holidays` package) as the dbt seed `public_holidays`."""
    import holidays

    rows = sorted((day, country, name) for country in holiday_countries()
                  for day, name in holidays.country_holidays(country, years=years).items())
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["holiday_date", "country_code", "holiday_name"])
        writer.writerows((day.isoformat(), country, name) for day, country, name in rows)
    return path


# ---- running dbt ----------------------------------------------------------------------------------------
def dbt_env(settings: Settings) -> dict[str, str]:
    """Environment for dbt: the profile reads LAKEHOUSE_* variables; the paths are made absolute here."""
    env = dict(os.environ)
    env["LAKEHOUSE_HOME"] = str(settings.lake_dir)
    env["LAKEHOUSE_WAREHOUSE_PATH"] = str(settings.warehouse_path)
    for layer in ("bronze", "silver", "gold", "ml", "staging"):
        env[f"LAKEHOUSE_{layer.upper()}_DATASET"] = settings.dataset(layer)
    if settings.gcp_project:
        env["LAKEHOUSE_GCP_PROJECT"] = settings.gcp_project
    env["LAKEHOUSE_GCP_REGION"] = settings.gcp_region
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    return env


def dbt_state(settings: Settings, target: str) -> Path:
    """dbt's state for `target` (target/ with its artifacts, logs/), under $LAKEHOUSE_HOME/dbt/<target>, so
    lakehouses never share dbt's partial-parse or run results."""
    return settings.lake_dir / "dbt" / target


def dbt_args(settings: Settings, command: str, target: str, *args: str) -> list[str]:
    """Arguments of one dbt command (`dbt <these>`; `command` may hold a subcommand: "docs generate"), its state
    in `dbt_state`."""
    state = dbt_state(settings, target)
    return [*command.split(), "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR), "--target", target,
            "--target-path", str(state / "target"), "--log-path", str(state / "logs"), *args]


@dataclass
class NodeResult:
    """One finished dbt node (model, seed, test, unit test) as the build reported it."""

    name: str
    resource_type: str
    status: str  # success, pass, warn, fail, error, skipped
    seconds: float
    message: str = ""
    failures: int | None = None


@dataclass
class BuildResult:
    target: str
    returncode: int
    seconds: float = 0.0
    nodes: list[NodeResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # dbt errors outside any node (parse, connection)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def by_status(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for node in self.nodes:
            counts[node.status] = counts.get(node.status, 0) + 1
        return counts

    def problems(self) -> list[NodeResult]:
        return [n for n in self.nodes if n.status in ("warn", "fail", "error", "skipped")]


@dataclass
class Progress:
    """What a progress display hears: a node started or finished, or dbt said something."""

    kind: str  # "start", "done" or "log"
    index: int = 0
    total: int = 0
    name: str = ""
    status: str = ""
    message: str = ""
    level: str = "info"
    phase: str = "build"  # "sources" (source tests) or "build"


#: statuses as the log events spell them -> as run_results.json does
_STATUS = {"ok": "success", "created": "success", "insert": "success"}


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            if line:
                yield {"info": {"name": "Text", "msg": line, "level": "info"}, "data": {}}
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            yield {"info": {"name": "Text", "msg": line, "level": "info"}, "data": {}}


def build(settings: Settings, target: str = "local", select: list[str] | None = None,
          exclude: list[str] | None = None, full_refresh: bool = False,
          on_progress: Callable[[Progress], None] | None = None, env: dict[str, str] | None = None,
          unit_tests: bool | None = None) -> BuildResult:
    """Test the sources, then `dbt build` (seeds, models, data tests, unit tests) on `target`; with
    `select`, only `dbt build --select ...` (the selection's models and the tests of what it selects).

    Unit tests check the models' logic, not the data: by default (`unit_tests=None`) they run on a full
    build (a warehouse without the facts yet, `full_refresh`), with `select`, and on gcp, and an
    incremental local build leaves them out, as dbt advises for production runs (CI runs them).

    Two dbt commands, because in one `dbt build` a failing source test skips every model downstream:
    bad rows in silver (a broken key, an unknown product) would leave gold stale. Here the source tests
    report (errors for broken keys, warnings for redelivered events), staging keeps such rows out, and the
    models still build; the result is not ok when any error-severity test failed.
    """
    def phases() -> list[tuple[str, list[str]]]:
        build_args = _build_args(settings, target, select, exclude, full_refresh, unit_tests)
        # manifest.json and run_results.json are written once, by the build (the others' would be overwritten)
        sources = ("sources", dbt_args(settings, "test", target, *CHILD_LOGGING, "--no-write-json", *CAUTIOUS,
                                       "--select", SOURCES_SELECTOR))
        build_all = ("build", dbt_args(settings, "build", target, *CHILD_LOGGING, *build_args))
        # a chosen part of the graph: only its own tests, as `dbt build --select` does
        return [build_all] if select else [sources, build_all]

    return _in_dbt_child(settings, target, env, on_progress, phases)


def docs(settings: Settings, target: str = "local", on_progress: Callable[[Progress], None] | None = None,
         env: dict[str, str] | None = None) -> BuildResult:
    """`dbt docs generate --static`: the project's documentation with the warehouse's catalog (tables, columns,
    types, row counts) in one HTML file that opens from disk, `docs_page(settings, target)`."""
    # --no-compile: the page shows each model's code as written (compiling would also rewrite target/compiled/
    # with this moment's incremental filters)
    return _in_dbt_child(settings, target, env, on_progress, lambda: [
        ("docs", dbt_args(settings, "docs generate", target, *CHILD_LOGGING, "--static", "--no-compile"))])


def docs_page(settings: Settings, target: str = "local") -> Path:
    """Where `docs` writes the documentation page of `target`."""
    return dbt_state(settings, target) / "target" / "static_index.html"


def _build_args(settings: Settings, target: str, select: list[str] | None, exclude: list[str] | None,
                full_refresh: bool, unit_tests: bool | None) -> list[str]:
    """The arguments of the build command after the common ones (see `build`)."""
    args = [*CAUTIOUS, "--exclude", SOURCES_SELECTOR, *(exclude or [])]
    if select:
        args += ["--select", *select]
    if full_refresh:
        args.append("--full-refresh")
    if unit_tests is None:
        unit_tests = full_refresh or bool(select) or target != "local" or "fact_daily_demand" not in \
            gold_row_counts(settings)
    if not unit_tests:
        args += ["--exclude-resource-type", "unit_test"]
    return args


def _in_dbt_child(settings: Settings, target: str, env: dict[str, str] | None,
                  on_progress: Callable[[Progress], None] | None,
                  phases: Callable[[], list[tuple[str, list[str]]]]) -> BuildResult:
    """Run dbt commands in the dbt child: `phases()` (named commands) is called while the child parses and
    once the warehouse's views are current."""
    import time

    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    started = time.monotonic()
    result = BuildResult(target, returncode=0)
    with _dbt_child(settings, target, env) as dbt:
        result.returncode = _run_dbt(dbt, phases(), result, on_progress or (lambda p: None))
    result.seconds = time.monotonic() - started
    return result


@contextmanager
def _dbt_child(settings: Settings, target: str, env: dict[str, str] | None) -> Iterator[subprocess.Popen]:
    """The dbt child, started first: it imports dbt and parses the project (seconds) while this process
    refreshes the warehouse's views (local) and decides the commands; killed and reaped if that fails."""
    dbt = _start_dbt(dbt_args(settings, "parse", target, *CHILD_LOGGING, "--no-write-json"), env or dbt_env(settings))
    try:
        if target == "local":
            from pipelines import warehouse

            warehouse.refresh_views(settings)  # the sources (bronze/silver/ml views) exist before dbt reads them
        yield dbt
    except BaseException:
        dbt.kill()
        dbt.wait()
        raise


def _start_dbt(parse: list[str], env: dict[str, str]) -> subprocess.Popen:
    """The dbt child process (`pipelines.dbt_runner`), parsing the project with the `parse` arguments; it waits
    for its commands on stdin (`_run_dbt`) before it touches the warehouse."""
    return subprocess.Popen([sys.executable, "-m", "pipelines.dbt_runner", json.dumps(parse)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=DBT_DIR.parent)


def _run_dbt(proc: subprocess.Popen, phases: list[tuple[str, list[str]]], result: BuildResult,
             notify: Callable[[Progress], None]) -> int:
    """Send the dbt commands to the child started by `_start_dbt`, turning its JSON log events into Progress
    calls and its phase summaries into `result.nodes`; returns the worst exit code."""
    phase, returncode = "parse", 0
    with proc:
        try:
            proc.stdin.write(json.dumps(phases) + "\n")
            proc.stdin.close()
        except BrokenPipeError:  # it stopped already (the parse failed): its output says why
            pass
        for event in _events(iter(proc.stdout.readline, "")):
            info, data = event.get("info", {}), event.get("data", {})
            name, level, msg = info.get("name", ""), info.get("level", "info"), info.get("msg", "")
            node = data.get("node_info") or {}
            if name == dbt_runner.PHASE_START:
                phase = data["phase"]
            elif name == dbt_runner.PHASE_DONE:
                returncode = max(returncode, data["returncode"])
                result.nodes += [_node_result(r) for r in data["results"]]
            elif name == "LogStartLine":
                notify(Progress("start", data.get("index", 0), data.get("total", 0), node.get("node_name", ""),
                                phase=phase))
            elif name in dbt_runner.RESULT_EVENTS and node:
                status = str(data.get("status") or node.get("node_status", "")).lower()
                notify(Progress("done", data.get("index", 0), data.get("total", 0), node.get("node_name", ""),
                                status=_STATUS.get(status, status), message=msg, level=level, phase=phase))
            elif level in ("error", "warn") or name == "Text":
                if level == "error" and not node:
                    result.errors.append(msg)
                notify(Progress("log", message=msg, level=level, phase=phase))
        child = proc.wait()
    return returncode if child == 0 else max(child, 2)


def _node_result(r: dict[str, Any]) -> NodeResult:
    kind, _, *parts = r["unique_id"].split(".")  # e.g. test.lakehouse.not_null_fact_orders_event_id.<hash>
    return NodeResult(name=parts[0] if kind == "test" else ".".join(parts), resource_type=kind, status=r["status"],
                      seconds=r.get("execution_time") or 0.0, message=r.get("message") or "",
                      failures=r.get("failures"))


def gold_row_counts(settings: Settings) -> dict[str, int]:
    """Rows per gold table in the local warehouse (tables a build has not made yet are left out)."""
    from pipelines import warehouse

    gold = settings.dataset("gold")
    with warehouse.connect(settings) as con:
        present = {r[0] for r in con.execute(
            "select table_name from information_schema.tables where table_schema = ?", [gold]).fetchall()}
        return {name: con.execute(f'select count(*) from "{gold}"."{name}"').fetchone()[0]
                for name in GOLD_MODELS if name in present}

