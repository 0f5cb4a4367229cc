"""`lakehouse`: the command line of the demand-forecasting lakehouse.

    lakehouse simulate --days 90 --stores 5 --products 40 --out data/sim --bad-rate 0.01
    lakehouse import-orders ../shared/data/online_retail_ii.csv.xz --format online-retail --out data/retail
    lakehouse backfill --input 'data/sim/events/*.jsonl' --dims data/sim/dims
    lakehouse summary            # what the lakehouse holds, dead letters by reason
    lakehouse sql "select count(*) from silver.order_events"
    lakehouse forecast --horizon 28 --freq D --folds 3   # per-series forecasts into ml.* (needs dbt's gold)
    lakehouse schemas --out schemas/bigquery
    lakehouse demo               # all of the above on a small dataset

Settings come from the environment (see pipelines.config), e.g. LAKEHOUSE_HOME=/data/lake.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
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

from pipelines import landing
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
    out_dir: Annotated[Path, typer.Option("--out", help="Landing folder to write (events/, dims/, truth/).")],
    days: Annotated[int, typer.Option(min=1, help="Days of history.")] = 90,
    stores: Annotated[int, typer.Option(min=1, help="Number of stores.")] = 5,
    products: Annotated[int, typer.Option(min=1, help="Number of products.")] = 40,
    start: Annotated[dt.datetime, typer.Option(formats=["%Y-%m-%d"], help="First day.")] = dt.datetime(2024, 1, 1),
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = 42,
    bad_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of extra malformed lines.")] = 0.0,
    dup_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of events delivered twice.")] = 0.0,
    late_rate: Annotated[float, typer.Option(min=0, max=1, help="Share of events arriving 1-3 days late.")] = 0.0,
    country: Annotated[str, typer.Option(help="ISO country of the stores (holidays).")] = "GB",
) -> None:
    """Simulate order and inventory events from a known demand process."""
    from pipelines.simulate import simulate as run_simulation

    with _bar("Simulating days", total=days) as (bar, task):
        manifest = run_simulation(out_dir, days=days, stores=stores, products=products, start=start.date(),
                                  seed=seed, bad_rate=bad_rate, dup_rate=dup_rate, late_rate=late_rate,
                                  country=country, progress=lambda n: bar.advance(task, n))
    _print_manifest(manifest, out_dir)


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
) -> None:
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
                                           workers=workers or job.default_workers(paths, runner))
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
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Forecast every store x product series of gold.fact_daily_demand, backtested against baselines."""
    from ml.cli import forecast as run_forecast  # lazy: the pipelines package never imports ml at import time

    _quiet_logs(verbose)
    if freq not in ("D", "W"):
        raise typer.BadParameter("--freq must be D or W")
    try:
        run_forecast(get_settings(), horizon=horizon, freq=freq, model_names=models, folds=folds, truth=truth,
                     run_id=run_id, runner=runner, workers=workers, beam_args=beam_arg or [], plot=plot)
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
    """Write the BigQuery table schemas derived from the event contract (for Terraform and dbt)."""
    from pipelines.tables import write_bigquery_schemas

    for path in write_bigquery_schemas(out_dir):
        out.print(f"wrote {path}")


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
) -> None:
    """Simulate a few months, import a slice of real history, backfill both, print the summary."""
    sim_dir, retail_dir = data_dir / "sim", data_dir / "online_retail"
    out.rule("1. Simulate demand (known process, with bad, duplicate and late events)")
    simulate(sim_dir, days=days, stores=stores, products=products, start=dt.datetime(2024, 1, 1), seed=7,
             bad_rate=0.01, dup_rate=0.02, late_rate=0.02, country="GB")
    sources = [("simulated", sim_dir)]
    if retail_csv.exists():
        out.rule(f"2. Import real order history: {retail_csv.name}, {retail_start:%Y-%m-%d}..{retail_end:%Y-%m-%d}")
        import_orders(retail_csv, retail_dir, format="online-retail", mapping=None, defaults=None, ts_format=None,
                      timezone=None, start=retail_start, end=retail_end)
        sources.append(("real history", retail_dir))
    else:
        console.print(f"[yellow]{retail_csv} not found: skipping the real-history import[/]")
    for n, (label, folder) in enumerate(sources, 3):
        out.rule(f"{n}. Backfill {label} through the Beam pipeline")
        backfill(input=landing.events_glob(folder), dims=str(folder / landing.DIMS_DIR), runner="DirectRunner",
                 beam_arg=None, workers=0, verbose=False)
    out.rule("The lakehouse")
    summary()
    out.print(f"\nQuery it: [bold]lakehouse sql \"select * from silver.order_events limit 5\"[/] "
              f"(DuckDB file {get_settings().warehouse_path})")


# ---- output helpers --------------------------------------------------------------------------
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


if __name__ == "__main__":
    app()
