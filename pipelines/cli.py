"""`lakehouse`: the command line of the demand-forecasting lakehouse.

    lakehouse simulate --days 90 --stores 5 --products 40 --out data/sim --bad-rate 0.01
    lakehouse import-orders ../shared/data/online_retail_ii.csv.xz --format online-retail --out data/retail
    lakehouse backfill --input 'data/sim/events/*.jsonl' --dims data/sim/dims
    lakehouse pubsub up          # the Pub/Sub emulator with topics and subscriptions (pubsub down stops it)
    lakehouse simulate --publish --rate 2000 --duration 60     # live events to Pub/Sub, archived
    lakehouse stream --duration 60                             # Pub/Sub -> lakehouse, within seconds
    lakehouse reconcile          # archive vs lakehouse: nothing lost, nothing doubled
    lakehouse summary            # what the lakehouse holds, dead letters by reason
    lakehouse sql "select count(*) from silver.order_events"
    lakehouse forecast --horizon 28 --freq D --folds 3   # per-series forecasts into ml.* (needs dbt's gold)
    lakehouse schemas --out schemas/bigquery
    lakehouse deploy --dry-run   # the Google Cloud launch steps after `terraform apply` (README)
    lakehouse transform          # dbt build: staging, marts in gold, tests (--target gcp for BigQuery)
    lakehouse docs               # dbt docs generate: one HTML page of models, tests, lineage and columns
    lakehouse dashboard          # the dashboard in the browser: http://localhost:8501
    lakehouse demo               # all of the above on a small dataset

Settings come from the environment (see pipelines.config), e.g. LAKEHOUSE_HOME=/data/lake.
"""

from __future__ import annotations

import datetime as dt
import glob
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.live import Live
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from pipelines import landing, shards
from pipelines.config import get_settings

app = typer.Typer(help="Real-time demand-forecasting lakehouse: simulate, import, backfill, query.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
console = Console(stderr=True)
out = Console()


def _quiet_logs(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    for name in ("apache_beam", "absl", "py4j"):
        logging.getLogger(name).setLevel(logging.WARNING if verbose else logging.ERROR)


def _parse_pairs(values: list[str] | None, what: str) -> dict[str, str]:
    pairs = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{what} takes field=value, got {item!r}")
        pairs[key.strip()] = value.strip()
    return pairs


@app.command()
def simulate(
    out_dir: Annotated[Path | None, typer.Option("--out", help="Landing folder to write (events/, dims/, truth/); "
                                                               "not with --publish.")] = None,
    days: Annotated[int, typer.Option(min=1, help="Days of history.")] = 90,
    stores: Annotated[int, typer.Option(min=1, help="Number of stores.")] = 5,
    products: Annotated[int, typer.Option(min=1, help="Number of products.")] = 40,
    start: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day.")] = dt.datetime(2024, 1, 1),
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 42,
    bad_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of extra malformed lines.")] = 0.0,
    dup_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of events delivered twice.")] = 0.0,
    late_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of events arriving 1-3 days late.")] = 0.0,
    country: Annotated[str, typer.Option(help="ISO country of the stores (holidays).")] = "GB",
    publish: Annotated[bool, typer.Option(
        "--publish", help="Publish live events to Pub/Sub instead of writing history (archived under "
                          "$LAKEHOUSE_HOME).")] = False,
    topic: Annotated[str | None, typer.Option(help="--publish: topic (default: the configured events topic).")] = None,
    rate: Annotated[float, typer.Option(min=0.001, help="--publish: events per second.")] = 100.0,
    duration: Annotated[float, typer.Option(min=0.001, help="--publish: seconds to publish for.")] = 60.0,
    to_files: Annotated[bool, typer.Option("--to-files", help="--publish without Pub/Sub: the archive alone, "
                                                              "a new file every 5 s (the file stream).")] = False,
) -> None:
    """Simulate order and inventory events from a known demand process (history to files, or live to Pub/Sub)."""
    from pipelines.simulate import simulate as run_simulation

    if publish:
        _publish(topic, rate, duration, seed=seed, stores=stores, products=products, bad_rate=bad_rate,
                 dup_rate=dup_rate, late_rate=late_rate, to_files=to_files)
        return
    if out_dir is None:
        raise typer.BadParameter("--out is required (or --publish)")

    with _bar("Simulating days", total=days) as (bar, task):
        manifest = run_simulation(out_dir, days=days, stores=stores, products=products, start=start.date(),
                                  seed=seed, bad_rate=bad_rate, dup_rate=dup_rate, late_rate=late_rate,
                                  country=country, progress=lambda n: bar.advance(task, n))
    _print_manifest(manifest, out_dir)


def _publish(topic: str | None, rate: float, duration: float, **kw) -> None:
    from pipelines import pubsub
    from pipelines.publish import publish as run_publish

    settings = get_settings()
    if not kw.get("to_files") and settings.environment == "local" and not pubsub.listening(
            settings.pubsub_emulator_host):
        console.print(f"[red]error:[/] no Pub/Sub emulator at {settings.pubsub_emulator_host}: run "
                      "[bold]lakehouse pubsub up[/] first (or publish --to-files)")
        raise typer.Exit(2)
    with _bar(f"Publishing {rate:,.0f} events/s for {duration:,.0f} s", total=round(rate * duration)) as (bar, task):
        result = run_publish(settings, rate=rate, duration=duration, topic=topic,
                             progress=lambda n: bar.advance(task, n), **kw)
    counts = ", ".join(f"{role} {n:,}" for role, n in sorted(result.counts.items()))
    out.print(f"published {result.published:,} messages in {result.seconds:.1f} s ({result.rate:,.0f}/s): {counts}; "
              f"archive {result.archive}")


pubsub_app = typer.Typer(help="The local Pub/Sub emulator: start it with the topics and subscriptions, stop it.",
                         no_args_is_help=True)
app.add_typer(pubsub_app, name="pubsub")


@pubsub_app.command("up")
def pubsub_up(
    fresh: Annotated[bool, typer.Option("--fresh", help="Recreate the stream's subscription (drop its backlog).")]
    = False,
) -> None:
    """Start the Pub/Sub emulator (unless running) and create the topics and subscriptions."""
    from pipelines import pubsub

    settings = get_settings()
    try:
        emulator = pubsub.up(settings)
        if fresh:
            pubsub.ensure_resources(settings, fresh_subscription=True)
    except (FileNotFoundError, RuntimeError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    started = f"started (pid {emulator.pid}, log {emulator.log})" if emulator.log else "already running"
    out.print(f"Pub/Sub emulator at {emulator.host}: {started}; topics {settings.events_topic}, "
              f"{settings.dead_letter_topic}; subscription {settings.events_subscription}. "
              f"Use it with: export PUBSUB_EMULATOR_HOST={emulator.host}")


@pubsub_app.command("down")
def pubsub_down() -> None:
    """Stop the emulator started by `lakehouse pubsub up`."""
    from pipelines import pubsub

    stopped = pubsub.down(get_settings())
    out.print("Pub/Sub emulator stopped" if stopped else "no emulator started by this lakehouse is running")


@app.command()
def stream(
    subscription: Annotated[str | None, typer.Option(help="Subscription (default: the configured one).")] = None,
    duration: Annotated[float | None, typer.Option(min=0.1, help="Stop after this many seconds "
                                                                 "(default: until Ctrl-C or SIGTERM).")] = None,
    dims: Annotated[str | None, typer.Option(help="Folder with products.jsonl and stores.jsonl (default: the "
                                                  "dimensions loaded in the lakehouse).")] = None,
    runner: Annotated[str, typer.Option(help="DirectRunner (local) or DataflowRunner (gcp).")] = "DirectRunner",
    beam_arg: Annotated[list[str] | None, typer.Option(help="Extra Beam pipeline option, repeatable.")] = None,
    from_files: Annotated[Path | None, typer.Option("--from-files", help="No Pub/Sub: load the JSONL files that "
                                                    "appear in this folder (needs --dims).")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Stream events from Pub/Sub into bronze, silver, dead letters and windowed demand, until stopped."""
    from pipelines import pubsub
    from pipelines import stream as job

    _quiet_logs(verbose)
    settings = get_settings()
    if from_files is None and settings.environment == "local" and not pubsub.listening(
            settings.pubsub_emulator_host):
        console.print(f"[red]error:[/] no Pub/Sub emulator at {settings.pubsub_emulator_host}: run "
                      "[bold]lakehouse pubsub up[/] first, or stream --from-files DIR")
        raise typer.Exit(2)
    if from_files is not None and not dims:
        raise typer.BadParameter("--from-files needs --dims")
    status = _stream_status()
    with Live(status({}), console=console, refresh_per_second=2) as live:
        try:
            if from_files is not None:
                result = job.run_files(settings, from_files, dims_dir=dims, duration=duration,
                                       on_tick=lambda c: live.update(status(c)))
            else:
                result = job.run(settings, subscription=subscription, duration=duration, dims_dir=dims,
                                 runner=runner, beam_args=beam_arg or [], on_tick=lambda c: live.update(status(c)))
        except (FileNotFoundError, ValueError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from e
    print_stream(result)


def _stream_status():
    from pipelines import tables

    started = dt.datetime.now()

    def status(c: dict) -> str:
        silver = sum(c.get(f"rows_written.{fqn}", 0) for fqn in tables.SILVER_EVENTS)
        return (f"streaming {(dt.datetime.now() - started).seconds} s: {c.get('messages', 0):,} records, "
                f"{silver:,} silver rows, {c.get('dead_letters', 0):,} dead letters, "
                f"{c.get('duplicates_removed', 0):,} duplicates removed, {c.get('arrived_late', 0):,} too late "
                f"for their window (Ctrl-C stops)")

    return status


def print_stream(result) -> None:
    from pipelines import tables

    c = result.counters
    table = Table(title=f"Stream {result.run_id}: {result.seconds:.0f} s, stopped by {result.stopped_by}")
    table.add_column("records")
    table.add_column("count", justify="right")
    for label, key in [("records read", "messages"), ("messages acked after the write", "messages_acked"),
                       ("micro-batches", "batches"),
                       *((f"rows: {fqn}", f"rows_written.{fqn}") for fqn in tables.written_by("events")
                         if not fqn.startswith(("silver.products", "silver.stores"))),
                       ("duplicates removed", "duplicates_removed"), ("too late for their window", "arrived_late"),
                       ("window panes (on time / late)", None)]:
        value = f"{c.get('window_panes.on_time', 0):,} / {c.get('window_panes.late', 0):,}" if key is None \
            else f"{c.get(key, 0):,}"
        table.add_row(label, value)
    for key, n in sorted(c.items()):
        if key.startswith("dead_letter."):
            table.add_row(f"dead letter: {key.split('.', 1)[1]}", f"{n:,}")
    out.print(table)


@app.command("reconcile")
def reconcile_cmd(
    archive: Annotated[str | None, typer.Option(help="Glob of archive files (default: "
                                                     "$LAKEHOUSE_HOME/archive/events/*.jsonl).")] = None,
) -> None:
    """Compare what was published (the archive) with what landed; exit 1 on anything missing or doubled."""
    from pipelines.reconcile import reconcile

    try:
        r = reconcile(get_settings(), archive)
    except FileNotFoundError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    if not print_reconciliation(r):
        out.print("Repair: [bold]lakehouse backfill --input '<archive glob>' --dims DIR[/] loads what is missing "
                  "(a replay never double counts), then reconcile again.")
        raise typer.Exit(1)


def print_reconciliation(r) -> bool:
    out.print(f"archive: {r.archive_lines:,} messages, {r.event_ids:,} event ids; landed: {r.silver_rows:,} silver "
              f"rows, {r.dead_letters:,} dead letters")
    for label, items in [("event ids missing", r.missing_ids), ("event ids doubled in silver", r.doubled_ids),
                         ("unreadable lines missing from dead letters", r.missing_lines),
                         ("lines dead-lettered twice", r.doubled_lines)]:
        colour = "red" if items else "green"
        sample = f" e.g. {', '.join(map(str, items[:5]))}" if items else ""
        out.print(f"[{colour}]{label}: {len(items):,}[/]{sample}")
    if r.ok:
        out.print("[green]nothing lost, nothing doubled[/]")
    return r.ok


@app.command("import-orders")
def import_orders(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV export (.csv, .csv.gz, .csv.xz).")],
    out_dir: Annotated[Path, typer.Option("--out", help="Landing folder to write (events/, dims/).")],
    format: Annotated[str, typer.Option(help="online-retail (UCI Online Retail II) or generic.")] = "online-retail",
    mapping: Annotated[list[str] | None, typer.Option("--map", help="generic: field=Column, repeatable.")] = None,
    defaults: Annotated[list[str] | None, typer.Option("--set", help="Constant field=value, repeatable.")] = None,
    ts_format: Annotated[str | None, typer.Option(help="strptime format of the timestamp column.")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA zone of naive timestamps.")] = None,
    start: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="First day kept.")] = None,
    end: Annotated[dt.datetime | None, typer.Option(formats=["%Y-%m-%d"], help="Last day kept.")] = None,
) -> dict:
    """Turn real order-line history (CSV) into contract events and dimensions."""
    from pipelines.importers import import_orders as run_import

    if format not in ("online-retail", "generic"):
        raise typer.BadParameter("--format must be online-retail or generic")
    with _bar("Importing", total=None) as (bar, task):
        def tick(stage: str, done: int, total: int) -> None:
            bar.update(task, description=f"Importing: {stage}", completed=done, total=total or None)

        try:
            manifest = run_import(path, out_dir, format=format, mapping=_parse_pairs(mapping, "--map") or None,
                                  ts_format=ts_format, timezone=timezone,
                                  defaults=_parse_pairs(defaults, "--set") or None,
                                  start=start.date() if start else None, end=end.date() if end else None,
                                  progress=tick)
        except ValueError as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from e
    _print_manifest(manifest, out_dir)
    return manifest


@app.command()
def backfill(
    input: Annotated[str, typer.Option(help="Glob of event files (local or gs://), e.g. 'data/sim/events/*.jsonl'.")],
    dims: Annotated[str, typer.Option(help="Folder with products.jsonl and stores.jsonl.")],
    runner: Annotated[str, typer.Option(help="DirectRunner (local) or DataflowRunner (gcp).")] = "DirectRunner",
    beam_arg: Annotated[list[str] | None, typer.Option(help="Extra Beam pipeline option, repeatable.")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Local processes (input shards); 0: one per core "
                                                     "for inputs over 64 MB.")] = 0,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Load landed event files through the Beam pipeline into bronze, silver and dead letters."""
    if runner == "DirectRunner" and workers != 1 and "://" not in input:
        local = sorted(glob.glob(os.path.expanduser(input), recursive=True))
        if (workers or shards.default_workers(local, runner)) > 1:
            shards.start_fork_server()  # shard processes fork from it; it imports Beam while this process does
    from pipelines import backfill as job
    from pipelines import progress

    _quiet_logs(verbose)
    settings = get_settings()
    try:
        paths = job.match_inputs(input)
    except FileNotFoundError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    total = sum(os.path.getsize(p) for p in paths if "://" not in p) or None
    progress.reset()
    result_box = {}

    def work() -> None:
        try:
            result_box["result"] = job.run(input, dims, settings, runner=runner, beam_args=beam_arg or [],
                                           workers=workers or shards.default_workers(paths, runner))
        except BaseException as e:  # reported below, in the main thread
            result_box["error"] = e

    with _bar(f"Backfilling {len(paths)} file(s)", total=total, download=True) as (bar, task):
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(0.2)
            done = progress.done()
            bar.update(task, completed=min(done, total) if total else done)
            if total and done >= total:
                bar.update(task, description="Writing bronze, silver, dead letters")
    if "error" in result_box:
        error = result_box["error"]
        if isinstance(error, (FileNotFoundError, ValueError)):
            console.print(f"[red]error:[/] {error}")
            raise typer.Exit(2)
        raise error
    print_backfill(result_box["result"])


@app.command()
def forecast(
    horizon: Annotated[int, typer.Option(min=1, help="Periods to forecast after the last one with data.")] = 28,
    freq: Annotated[str, typer.Option(help="D (daily) or W (weekly, weeks starting Monday).")] = "D",
    models: Annotated[str, typer.Option(help="Comma-separated: prophet, snaive, tsb, croston, adida, ets.")] = (
        "prophet,snaive,tsb"),
    folds: Annotated[int, typer.Option(min=0, help="Rolling-origin backtest folds (0: no backtest).")] = 3,
    truth: Annotated[Path | None, typer.Option(help="Simulator truth folder (DIR/truth): also score the "
                                                     "backtest against the expected demand.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id; re-running one replaces its rows.")] = None,
    runner: Annotated[str, typer.Option(help="DirectRunner (local cores) or DataflowRunner.")] = "DirectRunner",
    beam_arg: Annotated[list[str] | None, typer.Option(help="Extra Beam pipeline option, repeatable.")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Local worker processes; 0: one per core.")] = 0,
    plot: Annotated[int, typer.Option(min=0, help="Series to plot as PNG (0: no plot).")] = 4,
    store: Annotated[list[str] | None, typer.Option(help="Only this store's series, repeatable (local runner).")
                     ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Forecast every store x product series of gold.fact_daily_demand, backtested against baselines."""
    from ml.cli import forecast as run_forecast  # lazy: the pipelines package never imports ml at import time

    _quiet_logs(verbose)
    if freq not in ("D", "W"):
        raise typer.BadParameter("--freq must be D or W")
    try:
        run_forecast(get_settings(), horizon=horizon, freq=freq, model_names=models, folds=folds, truth=truth,
                     run_id=run_id, runner=runner, workers=workers, beam_args=beam_arg or [], plot=plot,
                     stores=tuple(store or ()))
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e


@app.command()
def summary() -> None:
    """Row counts of the lakehouse tables and dead letters by reason."""
    from pipelines import warehouse

    settings = get_settings()
    warehouse.refresh_views(settings)
    with warehouse.connect(settings) as con:
        table = Table(title=f"Lakehouse {settings.lake_dir}")
        table.add_column("table")
        table.add_column("rows", justify="right")
        for fqn, rows in warehouse.row_counts(con).items():
            table.add_row(fqn, f"{rows:,}")
        out.print(table)
        reasons = con.execute("select stage, reason, count(*) from bronze.dead_letter group by all "
                              "order by 3 desc").fetchall()
    if reasons:
        dl = Table(title="Dead letters by reason")
        for col in ("stage", "reason", "rows"):
            dl.add_column(col, justify="right" if col == "rows" else "left")
        for stage, reason, n in reasons:
            dl.add_row(stage, reason, f"{n:,}")
        out.print(dl)


@app.command()
def sql(query: Annotated[str, typer.Argument(help="SQL for DuckDB, e.g. 'select * from silver.stores'.")]) -> None:
    """Query the local warehouse (read-only)."""
    from pipelines import warehouse

    settings = get_settings()
    with warehouse.connect(settings) as con:
        rel = con.sql(query)
        if rel is None:
            return
        table = Table()
        for name in rel.columns:
            table.add_column(name)
        for row in rel.limit(200).fetchall():
            table.add_row(*("" if v is None else str(v) for v in row))
        out.print(table)


@app.command()
def schemas(
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the BigQuery schema JSON files.")] = Path(
        "schemas/bigquery"),
) -> None:
    """Write the BigQuery table schemas derived from the event contract (for Terraform and dbt), the dbt
    sources and the dbt seed of public holidays."""
    from pipelines.tables import write_bigquery_schemas
    from pipelines.transform import write_dbt_sources, write_holiday_seed

    for path in [*write_bigquery_schemas(out_dir), write_dbt_sources(), write_holiday_seed()]:
        out.print(f"wrote {path}")


@app.command()
def deploy(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each command and what it creates; call nothing.")
                       ] = False,
    outputs: Annotated[Optional[Path], typer.Option(exists=True, dir_okay=False, help=(
        "Saved `terraform output -json`; default: read from terraform/ (dry run: placeholders)."))] = None,
    tag: Annotated[Optional[str], typer.Option(help="Image tag; default: the git commit.")] = None,
    builder: Annotated[str, typer.Option(help="cloud-build (no local Docker needed) or docker.")] = "cloud-build",
    terraform_dir: Annotated[Path, typer.Option(help="The Terraform root module.")] = Path("terraform"),
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Apply the job change without asking.")
                            ] = False,
) -> None:
    """Build and push the pipeline image, start or update the streaming job, upload DAGs and dbt to Composer."""
    from pipelines import deploy as steps

    try:
        if outputs:
            tf = steps.load_outputs(outputs)
        elif dry_run:
            console.print("[yellow]dry run without --outputs: names in <...> come from `terraform output` later[/]")
            tf = steps.placeholder_outputs()
        else:
            tf = steps.terraform_outputs(terraform_dir)
        plan = steps.plan(tf, tag=tag or steps.default_tag(), builder=builder, terraform_dir=terraform_dir,
                          auto_approve=auto_approve)
    except ValueError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from e
    if not dry_run and (missing := steps.missing_tools(plan)):
        console.print(f"[red]error:[/] not on PATH: {', '.join(missing)} (see README: Deploy to Google Cloud)")
        raise typer.Exit(2)
    try:
        steps.run(plan, dry_run=dry_run, echo=lambda line: out.print(line, markup=False, highlight=False,
                                                                      soft_wrap=True))
    except RuntimeError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(1) from e
    if tf.get("lakehouse_env"):
        out.print("Composer environment variables (set by Terraform): "
                  + ", ".join(f"{k}={v}" for k, v in sorted(tf["lakehouse_env"].items())), markup=False)
    if dry_run:
        out.print("[bold]dry run[/]: nothing was called")


@app.command()
def transform(
    target: Annotated[str, typer.Option(help="local (DuckDB warehouse) or gcp (BigQuery).")] = "local",
    select: Annotated[list[str] | None, typer.Option("--select", "-s", help="dbt selector, repeatable.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="dbt selector to leave out, repeatable.")] = None,
    full_refresh: Annotated[bool, typer.Option(help="Rebuild incremental models from scratch.")] = False,
    unit_tests: Annotated[bool | None, typer.Option(
        "--unit-tests/--no-unit-tests",
        help="Run dbt's unit tests (default: on full builds, with --select and on gcp, not on incremental "
             "local builds).")] = None,
) -> None:
    """Run dbt build (seeds, models, tests) and print the gold tables' row counts."""
    from pipelines import transform as job

    if target not in job.TARGETS:
        raise typer.BadParameter(f"--target must be one of {', '.join(job.TARGETS)}")
    settings = get_settings()
    with _bar(f"dbt build ({target})", total=None) as (bar, task):
        def show(p: job.Progress) -> None:
            if p.kind == "start":
                step = "testing sources" if p.phase == "sources" else "building"
                bar.update(task, total=p.total or None, description=f"dbt ({target}) {step}: {p.name}")
            elif p.kind == "done":
                bar.update(task, total=p.total or None, completed=p.index)
                if p.status in ("warn", "fail", "error"):
                    style = "yellow" if p.status in ("warn", "skipped") else "red"
                    console.print(f"[{style}]{p.status:>7}[/] {p.name}")

        result = job.build(settings, target=target, select=select, exclude=exclude, full_refresh=full_refresh,
                           on_progress=show, unit_tests=unit_tests)
    print_build(result)
    if target == "local" and result.nodes:
        print_gold_counts(job.gold_row_counts(settings), settings.dataset("gold"))
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def docs(target: Annotated[str, typer.Option(help="local (DuckDB warehouse) or gcp (BigQuery).")] = "local") -> None:
    """Write the dbt project's documentation (models, tests, lineage, the warehouse's tables and columns) as one
    HTML page that opens from disk."""
    from pipelines import transform as job

    if target not in job.TARGETS:
        raise typer.BadParameter(f"--target must be one of {', '.join(job.TARGETS)}")
    settings = get_settings()
    with _bar(f"dbt docs generate ({target})", total=None):
        result = job.docs(settings, target=target)
    if result.returncode:
        for error in result.errors:
            console.print(f"[red]{error}[/]")
        raise typer.Exit(1)
    console.print(f"dbt docs ({target}): [bold]{job.docs_page(settings, target)}[/] (open it in a browser)")


@app.command()
def dashboard(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to serve on.")] = 8501,
    address: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 to reach it from other machines).")
                       ] = "localhost",
) -> None:
    """Serve the dashboard (Streamlit): demand vs forecast, accuracy, pipeline health, inventory risk."""
    import importlib.util
    import sys

    app_path = importlib.util.find_spec("dashboards.app").origin
    settings = get_settings()
    where = f"BigQuery {settings.gcp_project}" if settings.environment == "gcp" else str(settings.warehouse_path)
    out.print(f"Dashboard on [bold]http://{address}:{port}[/] reading {where} (Ctrl-C stops it)")
    cmd = [sys.executable, "-m", "streamlit", "run", app_path, "--server.port", str(port), "--server.address", address,
           "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    sys.stdout.flush()
    os.execv(sys.executable, cmd)  # the server replaces this process: Ctrl-C and SIGTERM reach it directly


@app.command()
def demo(
    data_dir: Annotated[Path, typer.Option("--data", help="Where the demo's landing data goes.")] = Path("data"),
    days: Annotated[int, typer.Option(help="Days of simulated history.")] = 120,
    stores: Annotated[int, typer.Option(help="Simulated stores.")] = 5,
    products: Annotated[int, typer.Option(help="Simulated products.")] = 40,
    retail_csv: Annotated[Path, typer.Option(help="Real order history to import a slice of.")] = Path(
        "../shared/data/online_retail_ii.csv.xz"),
    retail_start: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"])] = dt.datetime(2011, 9, 1),
    retail_end: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"])] = dt.datetime(2011, 11, 30),
    stream_seconds: Annotated[float, typer.Option(help="Seconds of live events to stream (0: skip).")] = 60,
    stream_rate: Annotated[float, typer.Option(help="Live events per second.")] = 500,
    file_stream: Annotated[bool, typer.Option(help="Stream through files even when the Pub/Sub emulator is "
                                                   "installed.")] = False,
) -> None:
    """Simulate a few months, import a slice of real history, backfill both, stream live events, summarise."""
    sim_dir, retail_dir = data_dir / "sim", data_dir / "online_retail"
    step = _Steps()
    step("Simulate demand (known process, with bad, duplicate and late events)")
    # history up to yesterday, so the live events streamed next continue it and forecasts start tomorrow
    start = dt.datetime.combine(dt.date.today() - dt.timedelta(days=days), dt.time())
    simulate(sim_dir, days=days, stores=stores, products=products, start=start, seed=7,
             bad_rate=0.01, dup_rate=0.02, late_rate=0.02, country="GB")
    sources = [("simulated", sim_dir)]
    if retail_csv.exists():
        step(f"Import real order history: {retail_csv.name}, {retail_start:%Y-%m-%d}..{retail_end:%Y-%m-%d}")
        imported = import_orders(retail_csv, retail_dir, format="online-retail", mapping=None, defaults=None,
                                 ts_format=None, timezone=None, start=retail_start, end=retail_end)
        if imported["events_written"]:
            sources.append(("real history", retail_dir))
        else:
            console.print(f"[yellow]{retail_csv.name} has no order lines in {retail_start:%Y-%m-%d}.."
                          f"{retail_end:%Y-%m-%d}: nothing to backfill from it[/]")
    else:
        console.print(f"[yellow]{retail_csv} not found: skipping the real-history import[/]")
    for label, folder in sources:
        step(f"Backfill {label} through the Beam pipeline")
        backfill(input=landing.events_glob(folder), dims=str(folder / landing.DIMS_DIR), runner="DirectRunner",
                 beam_arg=None, workers=0, verbose=False)
    if stream_seconds > 0:
        step(f"Stream live events for {stream_seconds:.0f} s, then reconcile")
        demo_stream(sim_dir, stores, products, stream_seconds, stream_rate, to_files=file_stream)
    step("The lakehouse: rows per table, dead letters by reason")
    summary()
    step("Transform with dbt: staging, gold marts, tests")
    transform(target="local", select=None, exclude=None, full_refresh=False)
    step("Forecast the simulated stores' series (backtested against baselines)")
    from ml.cli import forecast as run_forecast  # lazy, as in `lakehouse forecast`

    sim_stores = tuple(json.loads(line)["store_id"] for line in
                       (sim_dir / landing.DIMS_DIR / "stores.jsonl").read_text().splitlines() if line.strip())
    run = run_forecast(get_settings(), horizon=28, freq="D", model_names="prophet,snaive,tsb", folds=2,
                       truth=sim_dir / landing.TRUTH_DIR, run_id=None, runner="DirectRunner", workers=0,
                       beam_args=[], plot=4, stores=sim_stores)
    step("Build the forecast marts with dbt")
    transform(target="local", select=["fact_demand_forecast+", "mart_forecast_accuracy+"], exclude=None,
              full_refresh=False)
    step.finish()
    print_demo_summary(run)
    out.print(f"\nQuery it: [bold]lakehouse sql \"select * from gold.fact_demand_forecast limit 5\"[/] "
              f"(DuckDB file {get_settings().warehouse_path})")
    out.print("See it: [bold]lakehouse dashboard[/] serves demand vs forecast, accuracy, pipeline health and inventory "
              "risk on [bold]http://localhost:8501[/]")


def print_demo_summary(run) -> None:
    """Events in, dead letters by reason, freshness, forecast accuracy vs seasonal naive."""
    from pipelines import warehouse

    settings = get_settings()
    with warehouse.connect(settings) as con:
        runs = con.execute("select job, count(*), sum(coalesce(try_cast(counters->>'lines_read' as bigint), "
                           "try_cast(counters->>'messages' as bigint), 0)) from ops.pipeline_runs "
                           "group by all order by 1").fetchall()
        dead = con.execute("select reason, count(*) from bronze.dead_letter group by all order by 2 desc "
                           "limit 5").fetchall()
        total_dead = con.execute("select count(*) from bronze.dead_letter").fetchone()[0]
        latest = con.execute("select max(publish_time), max(event_ts) from silver.order_events").fetchone()
    table = Table(title="The platform, end to end")
    table.add_column("")
    table.add_column("value", justify="right")
    for job_name, n, records in runs:
        table.add_row(f"{job_name} runs / records read", f"{n:,} / {records:,}")
    table.add_row("dead letters (top reasons)", f"{total_dead:,}: " + ", ".join(f"{r} {n:,}" for r, n in dead))
    if latest[0] is not None:
        age = (dt.datetime.now(dt.UTC) - latest[0]).total_seconds()
        table.add_row("freshness: newest streamed event published", f"{age:,.0f} s ago")
    row = run.overall
    if row.get("wape") is not None and row.get("wape_seasonal_naive"):
        table.add_row("forecast WAPE (backtest) vs seasonal naive",
                      f"{row['wape']:.1%} vs {row['wape_seasonal_naive']:.1%} "
                      f"({1 - row['wape'] / row['wape_seasonal_naive']:.0%} better)")
        table.add_row("interval coverage 80% / 95%", f"{row['coverage_80']:.0%} / {row['coverage_95']:.0%}")
    out.print(table)


def demo_stream(sim_dir: Path, stores: int, products: int, seconds: float, rate: float, to_files: bool = False) -> None:
    """Publish live events while the stream runs (Pub/Sub emulator, or the file stream without one or when asked),
    then reconcile the archive with the lakehouse."""
    from pipelines import publish, pubsub, reconcile
    from pipelines import stream as job

    settings = get_settings()
    emulator = None
    if to_files:
        console.print("[yellow]File stream, as asked: new archive files every 5 s, loaded as they appear.[/]")
    elif not pubsub.emulator_installed() and not pubsub.listening(settings.pubsub_emulator_host):
        to_files = True
        console.print("[yellow]No Pub/Sub emulator on this machine (it comes with the Google Cloud SDK and needs "
                      "Java): falling back to the file stream (new archive files every 5 s, loaded as they "
                      "appear).[/]")
    else:
        emulator = pubsub.up(settings)
        pubsub.ensure_resources(settings, fresh_subscription=True)
        out.print(f"Pub/Sub emulator at {emulator.host}")
    box: dict = {}

    def produce() -> None:
        box["published"] = publish.publish(settings, rate=rate, duration=seconds, seed=7, stores=stores,
                                           products=products, to_files=to_files)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    stop = threading.Event()
    status = _stream_status()
    with Live(status({}), console=console, refresh_per_second=2) as live:
        def tick(counts: dict) -> None:
            live.update(status(counts))
            done = box.get("published")
            if done is not None and counts.get("messages_acked" if not to_files else "messages", 0) >= done.published:
                stop.set()

        dims = str(sim_dir / landing.DIMS_DIR)
        if to_files:
            result = job.run_files(settings, settings.archive_dir / "events", dims_dir=dims, duration=seconds + 60,
                                   on_tick=tick, stop=stop)
        else:
            result = job.run(settings, dims_dir=dims, duration=seconds + 60, on_tick=tick, stop=stop)
    producer.join()
    published = box["published"]
    out.print(f"published {published.published:,} events in {published.seconds:.0f} s "
              f"({', '.join(f'{k} {v:,}' for k, v in sorted(published.counts.items()))})")
    print_stream(result)
    print_reconciliation(reconcile.reconcile(settings))
    if emulator is not None and emulator.log is not None:
        pubsub.down(settings)


# ---- output helpers --------------------------------------------------------------------------
class _Steps:
    """The demo's numbered steps: `step(title)` closes the running one and starts the next under a rule;
    `finish()` prints how long each took."""

    def __init__(self):
        self.done: list[tuple[str, float]] = []
        self.running: tuple[str, float] | None = None

    def __call__(self, title: str) -> None:
        self._close()
        title = f"{len(self.done) + 1}. {title}"
        out.rule(title)
        self.running = (title, time.monotonic())

    def _close(self) -> None:
        if self.running:
            self.done.append((self.running[0], time.monotonic() - self.running[1]))
            self.running = None

    def finish(self) -> None:
        self._close()
        table = Table(title=f"The demo's steps: {sum(s for _, s in self.done):,.0f} s in all")
        table.add_column("step")
        table.add_column("seconds", justify="right")
        for title, seconds in self.done:
            table.add_row(title, f"{seconds:,.0f}")
        out.print(table)


class _bar:
    """A rich progress bar as a context manager yielding (progress, task id)."""

    def __init__(self, description: str, total: int | None, download: bool = False):
        columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   DownloadColumn() if download else MofNCompleteColumn(),
                   TimeElapsedColumn()]
        self.progress = Progress(*columns, console=console, transient=False)
        self.description, self.total = description, total

    def __enter__(self):
        self.progress.start()
        return self.progress, self.progress.add_task(self.description, total=self.total)

    def __exit__(self, *exc):
        self.progress.stop()


def print_backfill(result) -> None:
    table = Table(title=f"Backfill {result.run_id}: {result.files} file(s) in {result.seconds:.1f} s "
                        f"({result.events_per_second:,.0f} events/s)")
    table.add_column("records", justify="left")
    table.add_column("count", justify="right")
    table.add_row("input records (lines)", f"{result.lines_read:,}")
    table.add_row("silver rows", f"{result.silver_rows:,}")
    table.add_row("duplicates removed", f"{result.duplicates:,}")
    for reason, n in result.dead_letters.items():
        table.add_row(f"dead letter: {reason}", f"{n:,}")
    out.print(table)
    dead = sum(result.dead_letters.values())
    verdict = "[green]reconciles[/]" if result.reconciles else "[red]DOES NOT RECONCILE[/]"
    out.print(f"{result.lines_read:,} input = {result.silver_rows:,} silver + {dead:,} dead letters + "
              f"{result.duplicates:,} duplicates removed: {verdict}")
    if not result.reconciles:
        raise typer.Exit(1)


def print_build(result) -> None:
    """dbt's verdict: nodes by status, then every test that warned or failed with its message."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(result.by_status().items()))
    colour = "green" if result.ok else "red"
    out.print(f"[{colour}]dbt build ({result.target}) {'passed' if result.ok else 'FAILED'}[/] in "
              f"{result.seconds:.1f} s: {counts or 'no nodes ran'}")
    problems = result.problems()
    if problems:
        table = Table(title="Needs attention")
        for col in ("status", "node", "message"):
            table.add_column(col)
        for node in problems:
            style = "yellow" if node.status in ("warn", "skipped") else "red"
            table.add_row(f"[{style}]{node.status}[/]", node.name, node.message.strip()[:300])
        out.print(table)
    if not problems:  # an error outside any node (a parse error, a connection failure)
        for error in result.errors:
            console.print(f"[red]{error}[/]")


def print_gold_counts(counts: dict[str, int], schema: str) -> None:
    table = Table(title=f"Gold tables ({schema})")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in counts.items():
        table.add_row(name, f"{rows:,}")
    out.print(table)


def _print_manifest(manifest: dict, folder: Path) -> None:
    """The producer's headline counts (the full manifest is in FOLDER/manifest.json)."""
    shown = ["lines_total", "events_valid", "duplicates", "late_events", "bad_lines", "rows_read",
             "rows_outside_range", "events_written", "duplicates_expected", "products", "stores"]
    counts = []
    for key in shown:
        value = manifest.get(key)
        if isinstance(value, dict):  # e.g. {"kind": n}
            value = sum(v for v in value.values() if isinstance(v, int))
        elif isinstance(value, list):
            value = len(value)
        if isinstance(value, int):
            counts.append(f"{key.replace('_', ' ')} {value:,}")
    out.print(f"wrote [bold]{folder}[/] ({folder / 'manifest.json'}): " + ", ".join(counts))


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def airflow(
    ctx: typer.Context,
    port: Annotated[int, typer.Option(help="Port of the UI and API (standalone).")] = 8080,
) -> None:
    """Airflow on this machine with the project's DAGs (composer_dags/), its database under $LAKEHOUSE_HOME.

    `lakehouse airflow` runs it standalone (scheduler, DAG processor, UI on http://localhost:PORT; Ctrl-C stops
    it); anything after is an airflow command in the same setup, e.g. `lakehouse airflow dags test
    demand_forecasting_pipeline`.
    """
    import shutil
    import sys

    from pipelines import orchestration

    settings = get_settings()
    env = orchestration.airflow_env(settings, port)
    args = ctx.args or ["standalone"]
    executable = shutil.which("airflow", path=str(Path(sys.executable).parent)) or shutil.which("airflow")
    if executable is None:
        console.print("[red]error:[/] Airflow is not installed: pip install -e '.[airflow]' (make install has it)")
        raise typer.Exit(2)
    if args == ["standalone"]:
        console.print(f"Airflow standalone: DAGs from [bold]{env['AIRFLOW__CORE__DAGS_FOLDER']}[/], home "
                      f"[bold]{env['AIRFLOW_HOME']}[/], UI on [bold]http://localhost:{port}[/] (Ctrl-C stops it)")
    raise typer.Exit(orchestration.run_airflow([executable, *args], env))


if __name__ == "__main__":
    app()
