"""`lakehouse forecast`: run the forecasting job with a progress bar, then a closing table and a plot.

    lakehouse forecast --horizon 28 --freq D --models prophet,snaive,tsb --folds 3
    lakehouse forecast --truth data/sim/truth          # also score against the simulator's expected demand

The command is registered in pipelines/cli.py, which imports this module only when the command runs.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ml import job, models
from ml.plots import plot_forecasts
from pipelines.config import Settings
from pipelines.sinks import LakeTable
from pipelines.tables import FORECASTS

console = Console(stderr=True)
out = Console()


def parse_models(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    unknown = [m for m in names if m not in models.MODELS]
    if unknown or not names:
        raise ValueError(f"unknown model(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(models.MODELS)}")
    return names


def forecast(settings: Settings, *, horizon: int, freq: str, model_names: str, folds: int, truth: Path | None,
             run_id: str | None, runner: str, workers: int, beam_args: list[str], plot: int,
             stores: tuple[str, ...] = ()) -> job.RunResult:
    chosen_models = parse_models(model_names)
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("Reading demand history", total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, description="Fitting series", completed=done, total=total)

        result = job.run(settings, horizon=horizon, freq=freq, models_=chosen_models, folds=folds, run_id=run_id,
                         truth_dir=truth, runner=runner, workers=workers, beam_args=beam_args, progress=tick,
                         stores=stores)
    print_run(result)
    if plot and settings.environment == "local":
        path = settings.lake_dir / "ml" / "plots" / f"{result.run_id}.png"
        plot_run(settings, result, path, plot)
        out.print(f"plot of {min(plot, result.series)} series: [bold]{path}[/]")
    out.print(f"models (JSON): {result.models_dir}")
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_run(result: job.RunResult) -> None:
    row = result.overall
    table = Table(title=f"Forecast {result.run_id}: {result.series:,} series, {result.freq}, horizon "
                        f"{result.horizon}, {result.folds} fold(s), {result.seconds:.1f} s")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("models chosen", ", ".join(f"{m} {n:,}" for m, n in sorted(result.chosen.items(),
                                                                            key=lambda kv: -kv[1])))
    notes = sum(1 for r in result.results if r["note"])
    table.add_row("series with notes (bad input, slow movers, ...)", f"{notes:,}")
    if row["wape"] is not None:
        better = (1 - row["wape"] / row["wape_seasonal_naive"]) if row["wape_seasonal_naive"] else None
        table.add_row("backtest WAPE, chosen models", _pct(row["wape"]))
        table.add_row("backtest WAPE, seasonal naive", _pct(row["wape_seasonal_naive"]))
        table.add_row("improvement over seasonal naive", _pct(better))
        if result.oracle:
            table.add_row("backtest WAPE, oracle (simulator's expected demand)", _pct(result.oracle["wape"]))
        table.add_row("MASE (mean over series) / bias", f"{row['mase']:.3f} / {_pct(row['bias'])}"
                      if row["mase"] is not None else f"- / {_pct(row['bias'])}")
        table.add_row("interval coverage 80% / 95%", f"{_pct(row['coverage_80'])} / {_pct(row['coverage_95'])}")
    else:
        table.add_row("backtest", "none (no folds or no series long enough)")
    out.print(table)
    per_model = Table(title="Backtest by model (all series where it ran)")
    for col in ("model", "points", "WAPE", "bias", "coverage 80%", "coverage 95%"):
        per_model.add_column(col, justify="left" if col == "model" else "right")
    for name, m in sorted(result.per_model.items()):
        per_model.add_row(name, f"{m['points']:,}", _pct(m["wape"]), _pct(m["bias"]), _pct(m["coverage_80"]),
                          _pct(m["coverage_95"]))
    if result.per_model:
        out.print(per_model)


def plot_run(settings: Settings, result: job.RunResult, path: Path, count: int) -> Path:
    """The run's forecasts for the `count` series with the most demand, next to their history."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from ml import data

    lake = LakeTable(settings.lake_dir, FORECASTS)
    parts = [lake.read_partition(v) for v in lake.partitions()]
    rows = pa.concat_tables(parts) if parts else FORECASTS.empty()
    rows = rows.filter(pc.equal(rows["run_id"], result.run_id))
    forecast = set(zip(rows["store_id"].to_pylist(), rows["product_id"].to_pylist()))
    # the history the run used: complete days before the run, the run's series only
    series = {s.key: s for s in data.read_series(settings, result.freq, before=result.created_at.date(),
                                                 keys=forecast)}
    busiest = sorted(series, key=lambda k: -float(sum(v for v in series[k].y if v == v)))[:count]
    return plot_forecasts(series, rows, path, busiest, title=f"Forecast run {result.run_id}")
