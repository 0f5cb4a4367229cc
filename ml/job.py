"""The forecasting job: a Beam pipeline fans the series out to workers, then the run is written back.

    lakehouse forecast --horizon 28 --freq D --models prophet,snaive,tsb --folds 3
    python -c "from ml.job import run; from pipelines.config import get_settings; print(run(get_settings()))"

Steps (one Beam element per store x product series):
    SeriesFile -> ReadSeries (the launcher's series, staged as one file) or ReadDemand -> SeriesFromRows
    (Dataflow: the workers read BigQuery)
    -> KeyByShard -> GroupByShard -> FitShard (backtest, choose, refit, forecast; intervals calibrated on the
    shard's pooled backtest errors; writes the shard's rows as Parquet and its Prophet models as JSON under
    the run's staging folder; yields (shard, series count))
then, in the launching process, `publish` replaces this run's rows in ml.forecasts, ml.backtest_metrics and
ml.forecast_runs: the local Parquet lakehouse (views in warehouse.duckdb) or BigQuery (environment=gcp).
Re-running with the same run_id replaces that run's rows and leaves every other run's rows alone.

Where things go (`ml_root(settings)`: $LAKEHOUSE_HOME/ml locally, gs://BUCKET/ml on gcp):
    ML_ROOT/runs/<run_id>/<table>/shard-*.parquet     what the workers produced (the staging area)
    ML_ROOT/runs/<run_id>/series.pickle               the launcher's series, for its own pipeline to read
    ML_ROOT/models/<run_id>/<store_id>/<product_id>.json   fitted Prophet models (prophet.serialize), never pickled

Locally the DirectRunner (in memory) runs one shard and FitShard spreads its series over a process pool,
one process per core, each with its own temp directory for cmdstanpy. Beam's own multi_processing mode
was measured first and ran 2-4x slower here than one in-memory worker (30 series: 26 s vs 7 s; 100: 34 s
vs 15 s; each SDK worker process starts Beam, Prophet and matplotlib from scratch, elements cross gRPC).
With `--runner DataflowRunner` the same pipeline runs on Dataflow with shards of SERIES_PER_SHARD and no pool
(options from the settings, this distribution as the setup file, the forecasting libraries pinned).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import pickle
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from ml import data, models
from ml.backtest import Config, SeriesResult, calibrate, fit_series
from ml.metrics import Score
from pipelines import tables
from pipelines.config import Settings
from pipelines.sinks import LakeTable

log = logging.getLogger("lakehouse.forecast")
OUTPUTS = tables.written_by("forecast")  # ml.forecasts, ml.forecast_runs, ml.backtest_metrics
SCORES = "scores"  # staging only: the exact sums behind the run's pooled metrics
SERIES_FILE = "series.pickle"  # staging only: the launcher's series, read by the pipeline
#: series per shard on Dataflow: enough that a shard's pooled backtest errors place a 95% bound (50 series
#: x 3 folds x 28 days = 4,200 errors), few enough to spread tens of thousands of series over many workers
SERIES_PER_SHARD = 50


def ml_root(settings: Settings) -> str:
    if settings.environment == "gcp":
        if not settings.gcs_bucket:
            raise ValueError("LAKEHOUSE_GCS_BUCKET must be set to run the forecast on gcp")
        return f"gs://{settings.gcs_bucket}/ml"
    return str(settings.lake_dir / "ml")


def new_run_id(now: dt.datetime) -> str:
    return f"fc-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"


@dataclass
class RunResult:
    run_id: str
    created_at: dt.datetime
    freq: str
    horizon: int
    folds: int
    series: int
    seconds: float
    chosen: dict[str, int]
    overall: dict  # the ml.forecast_runs row
    per_model: dict[str, dict]
    oracle: dict | None
    models_dir: str
    results: list[dict] = field(default_factory=list)  # per series: key, model, note (for the closing table)


# ---- the pipeline ----------------------------------------------------------------------------------------
def shard_of(series: data.Series, shards: int) -> int:
    digest = hashlib.blake2b(f"{series.store_id}\x1f{series.product_id}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") % shards


class ForecastSeries(beam.PTransform):
    """Series -> (shard, series count) after fitting and staging every shard's results (no I/O in expand).

    `processes` > 1 fits a shard's series in that many local processes (the DirectRunner runs one bundle
    at a time; on Dataflow leave it at 1: the runner spreads the shards over workers and their cores).
    """

    def __init__(self, config: Config, run_id: str, staging: str, models_dir: str, shards: int,
                 progress_file: str | None = None, processes: int = 1):
        super().__init__()
        self.fit = FitShard(config, run_id, staging, models_dir, progress_file, processes)
        self.shards = shards

    def expand(self, pcoll):
        return (
            pcoll
            | "KeyByShard" >> beam.Map(lambda s, n=self.shards: (shard_of(s, n), s))
            | "GroupByShard" >> beam.GroupByKey()
            | "FitShard" >> beam.ParDo(self.fit)
        )


class SeriesFromRows(beam.PTransform):
    """Rows of the demand mart (dicts) -> one Series per store x product, on the calendar [first, last].

    Used on Dataflow, where the workers read the mart themselves instead of the launcher sending every
    series through the job graph."""

    def __init__(self, freq: str, first: dt.date, last: dt.date, countries: dict[str, str] | None = None):
        super().__init__()
        self.freq, self.calendar, self.countries = freq, (first, last), countries or {}

    def expand(self, rows):
        return (
            rows
            | "KeyBySeries" >> beam.Map(lambda row: ((row["store_id"], row["product_id"]), row))
            | "GroupBySeries" >> beam.GroupByKey()
            | "BuildSeries" >> beam.FlatMap(self._series)
        )

    def _series(self, element):
        import pandas as pd

        _, rows = element
        yield from data.to_series(pd.DataFrame(list(rows)), self.freq, self.countries, calendar=self.calendar)


class FitShard(beam.DoFn):
    """(shard, [Series]) -> every series forecast; the shard's rows staged as Parquet; yields (shard, count)."""

    def __init__(self, config: Config, run_id: str, staging: str, models_dir: str, progress_file: str | None,
                 processes: int = 1):
        self.config, self.run_id, self.staging, self.models_dir = config, run_id, staging, models_dir
        self.progress_file, self.processes = progress_file, processes
        self.pool = None
        self.series = beam.metrics.Metrics.counter("forecast", "series")
        self.with_notes = beam.metrics.Metrics.counter("forecast", "series_with_notes")

    def setup(self):
        if self.processes > 1:
            # forkserver: children fork from a clean process (no threads of this one) that has imported, once,
            # what every child needs (none of it Beam, none of it cmdstanpy: each child imports cmdstanpy
            # itself after getting its own temp directory); '__main__' too, which each child would otherwise
            # import again for itself
            context = mp.get_context("forkserver")
            context.set_forkserver_preload(["__main__", *models.WORKER_PRELOAD, "ml.backtest"])
            self.pool = ProcessPoolExecutor(self.processes, mp_context=context, initializer=models.start_worker,
                                            initargs=(self.config.models,))
        else:  # one process fitting one series at a time: cmdstanpy's own temp directory is not shared
            models.warm_up(self.config.models)
            models.quiet_prophet()

    def process(self, element):
        shard, batch = element
        if self.pool is not None:
            futures = [self.pool.submit(fit_series, series, self.config) for series in batch]
            done = (future.result() for future in as_completed(futures))
        else:
            done = (fit_series(series, self.config) for series in batch)
        results = []
        for result in done:
            results.append(result)
            self.series.inc()
            if result.notes:
                self.with_notes.inc()
            if self.progress_file:
                with open(self.progress_file, "ab") as f:
                    f.write(b".")
        results.sort(key=lambda r: r.key)
        calibrate(results)  # intervals pooled over the shard's series (locally: all of them)
        stage_results(results, self.run_id, self.staging, self.models_dir, f"shard-{shard:05d}")
        yield shard, len(results)

    def teardown(self):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


# ---- staging: what one shard produced --------------------------------------------------------------------
def _write_bytes(path: str, payload: bytes) -> None:
    if "://" not in path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    with FileSystems.create(path) as f:
        f.write(payload)


def _write_parquet(path: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    _write_bytes(path, buffer.getvalue())


def result_tables(results: list[SeriesResult], run_id: str) -> dict[str, pa.Table]:
    """Rows of ml.forecasts, ml.backtest_metrics and the staged scores for a list of series results."""
    fc_rows, score_rows = [], []
    for r in results:
        f = r.forecast
        for i, day in enumerate(r.forecast_dates.astype("datetime64[D]").astype(dt.date)):
            fc_rows.append({"run_id": run_id, "store_id": r.store_id, "product_id": r.product_id,
                            "forecast_date": day, "yhat": float(f.yhat[i]), "yhat_lower_80": float(f.lo80[i]),
                            "yhat_upper_80": float(f.hi80[i]), "yhat_lower_95": float(f.lo95[i]),
                            "yhat_upper_95": float(f.hi95[i]), "model": r.model})
        for name, score in {**r.scores, **({"oracle": r.oracle} if r.oracle is not None else {})}.items():
            score_rows.append({"store_id": r.store_id, "product_id": r.product_id, "model": name,
                               "chosen": name == r.model, **asdict(score)})
        if not r.scores:  # no backtest: still count the series and its chosen model
            score_rows.append({"store_id": r.store_id, "product_id": r.product_id, "model": r.model,
                               "chosen": True, **asdict(Score())})
    metric_rows = [{"run_id": run_id, **row} for r in results for row in r.metrics]
    return {
        tables.FORECASTS.fqn: pa.Table.from_pylist(fc_rows, schema=tables.FORECASTS.schema),
        tables.BACKTEST_METRICS.fqn: pa.Table.from_pylist(metric_rows, schema=tables.BACKTEST_METRICS.schema),
        SCORES: pa.Table.from_pylist(score_rows, schema=_scores_schema()),
    }


def _scores_schema() -> pa.Schema:
    sums = [pa.field(name, pa.float64() if isinstance(value, float) else pa.int64())
            for name, value in asdict(Score()).items()]
    return pa.schema([("store_id", pa.string()), ("product_id", pa.string()), ("model", pa.string()),
                      ("chosen", pa.bool_()), *sums])


def stage_results(results: list[SeriesResult], run_id: str, staging: str, models_dir: str, name: str) -> None:
    for fqn, table in result_tables(results, run_id).items():
        _write_parquet(f"{staging}/{fqn}/{name}.parquet", table)
    for r in results:
        if r.forecast.model_json:
            _write_bytes(model_path(models_dir, r.store_id, r.product_id), r.forecast.model_json.encode())


def model_path(models_dir: str, store_id: str, product_id: str) -> str:
    return f"{models_dir}/{store_id}/{product_id}.json"


def read_staged(staging: str, name: str) -> pa.Table:
    paths = [m.path for m in FileSystems.match([f"{staging}/{name}/*.parquet"])[0].metadata_list]
    parts = []
    for path in sorted(paths):
        with FileSystems.open(path) as f:
            parts.append(pq.read_table(io.BytesIO(f.read())))
    return pa.concat_tables(parts) if parts else None


def _clear(path: str) -> None:
    if "://" not in path:
        shutil.rmtree(path, ignore_errors=True)
        return
    matched = FileSystems.match([f"{path}/**"])[0].metadata_list
    if matched:
        FileSystems.delete([m.path for m in matched])


# ---- the run ---------------------------------------------------------------------------------------------
def local_workers() -> int:
    return max(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 1)


#: what Dataflow workers install on top of this distribution (setup.py installs no extras): the forecasting
#: libraries, pinned to the versions the launcher runs
WORKER_PACKAGES = ("prophet", "statsforecast", "holidays")


def worker_requirements(folder: Path) -> Path:
    from importlib.metadata import version

    path = folder / "forecast-worker-requirements.txt"
    path.write_text("".join(f"{name}=={version(name)}\n" for name in WORKER_PACKAGES))
    return path


def pipeline_options(settings: Settings, runner: str, beam_args: list[str], scratch: Path | None = None
                     ) -> PipelineOptions:
    """Dataflow: project, region, temp location and this distribution from the settings (as the backfill),
    plus the forecasting libraries as a requirements file."""
    if runner == "DataflowRunner":
        from pipelines.backfill import cloud_options

        args = cloud_options(settings, beam_args)
        if scratch is not None and not any(a.startswith("--requirements_file") for a in args):
            args.append(f"--requirements_file={worker_requirements(scratch)}")
        return PipelineOptions(args, runner=runner, save_main_session=False)
    return PipelineOptions(beam_args, runner=runner, save_main_session=False)


def run(
    settings: Settings,
    *,
    horizon: int = 28,
    freq: str = "D",
    models_: tuple[str, ...] = models.DEFAULT_MODELS,
    folds: int = 3,
    run_id: str | None = None,
    truth_dir: Path | None = None,
    series: list[data.Series] | None = None,
    runner: str = "DirectRunner",
    workers: int = 0,
    beam_args: list[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    now: dt.datetime | None = None,
    stores: tuple[str, ...] = (),
) -> RunResult:
    """Forecast every series of the demand mart (or `series`; only `stores`' if given) and write the run."""
    unknown = [m for m in models_ if m not in models.MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(models.MODELS)}")
    if horizon < 1 or folds < 0:
        raise ValueError("horizon must be at least 1 and folds at least 0")
    created_at = now or dt.datetime.now(dt.UTC)
    run_id = run_id or new_run_id(created_at)
    started = time.perf_counter()
    read_in_pipeline = series is None and runner == "DataflowRunner"
    if stores and read_in_pipeline:
        raise ValueError("choosing stores works with the local runner (Dataflow workers read the whole mart)")
    if read_in_pipeline:
        calendar, count = demand_calendar(settings)
        source = ("bigquery", calendar)
    else:
        if series is None:
            series = data.read_series(settings, freq, before=created_at.date(), stores=stores)
        if stores:
            series = [s for s in series if s.store_id in stores]
        if truth_dir is not None:
            attach_truth(series, truth_dir)
        count, source = len(series), ("series", series)
        calendar = (min(s.dates[0] for s in series), max(s.dates[-1] for s in series)) if series else None
    if not count:
        raise ValueError(f"no demand history in {data.DEMAND_LAYER}.{data.DEMAND_TABLE}")
    config = Config(horizon=horizon, folds=folds, models=tuple(models_))
    root = ml_root(settings)
    staging, models_dir = f"{root}/runs/{run_id}", f"{root}/models/{run_id}"
    _clear(staging)
    _clear(models_dir)
    local = runner == "DirectRunner"
    processes = min(workers or local_workers(), count) if local else 1
    # locally one shard whose series the process pool spreads over the cores; on Dataflow many small ones
    shards = 1 if local else max(1, -(-count // SERIES_PER_SHARD))
    os.environ.setdefault("NIXTLA_NUMBA_CACHE", "1")  # inherited by local workers: numba compiles once
    with tempfile.TemporaryDirectory(prefix="lakehouse-forecast-") as scratch:
        progress_file = str(Path(scratch) / "done") if local else None
        options = pipeline_options(settings, runner, beam_args or [], Path(scratch))
        _run_pipeline(settings, source, freq, count, config, run_id, staging, models_dir, shards, progress_file,
                      processes, options, progress)
    return publish(settings, run_id, created_at, freq, count, calendar, config, staging, models_dir,
                   time.perf_counter() - started)


def demand_calendar(settings: Settings) -> tuple[tuple[dt.date, dt.date] | None, int]:
    """(first, last) demand date and the number of series in the mart, with one small query."""
    sql = (f"SELECT MIN(demand_date), MAX(demand_date), COUNT(DISTINCT CONCAT(store_id, '|', product_id)) "
           f"FROM {data.demand_table_sql(settings)}")
    from google.cloud import bigquery

    first, last, count = next(iter(bigquery.Client(project=settings.gcp_project).query(sql).result()))
    return ((first, last) if first else None), int(count or 0)


def _run_pipeline(settings, source, freq, count, config, run_id, staging, models_dir, shards, progress_file,
                  processes, options, progress) -> None:
    """Build and run the pipeline; the DirectRunner blocks in run(), so it runs in a thread while this one
    reports progress. `source`: ("series", [Series]) from the launcher, or ("bigquery", (first, last)) to
    read the mart in the pipeline."""
    pipeline = beam.Pipeline(options=options)
    kind, payload = source
    if kind == "series":
        # the launcher's series go to the pipeline as one staged file it reads, not inside the job graph:
        # beam.Create pickles its values into the graph bz2-compressed (level 9), which took ~40 ms of CPU per
        # series (~40 s per 1,000) before any fitting started
        path = f"{staging}/{SERIES_FILE}"
        _write_bytes(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        series = (pipeline | "SeriesFile" >> beam.Create([path], reshuffle=False)
                  | "ReadSeries" >> beam.FlatMap(read_series))
    else:
        from apache_beam.io.gcp.bigquery import ReadFromBigQuery

        series = (
            pipeline
            | "ReadDemand" >> ReadFromBigQuery(query=data.demand_query(data.demand_table_sql(settings)),
                                               use_standard_sql=True)
            | "SeriesFromRows" >> SeriesFromRows(freq, *payload)
        )
    _ = series | "ForecastSeries" >> ForecastSeries(config, run_id, staging, models_dir, shards, progress_file,
                                                    processes)
    box: dict = {}

    def work() -> None:
        try:
            pipeline.run().wait_until_finish()
        except BaseException as e:  # re-raised in the calling thread
            box["error"] = e

    thread = threading.Thread(target=work, name="forecast-pipeline", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.25)
        if progress and progress_file:
            progress(_ticks(progress_file), count)
    if "error" in box:
        raise box["error"]


def read_series(path: str):
    """The series the launcher staged for this run (a pickle it wrote itself, read back by its own pipeline)."""
    with FileSystems.open(path) as f:
        yield from pickle.loads(f.read())


def _ticks(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def attach_truth(series: list[data.Series], truth_dir: Path) -> None:
    """Add the simulator's expected demand (truth/daily_demand.parquet) to each series it covers."""
    import pandas as pd

    truth = pq.read_table(Path(truth_dir) / "daily_demand.parquet",
                          columns=["date", "store_id", "product_id", "expected_demand"]).to_pandas()
    truth["date"] = pd.to_datetime(truth["date"])
    for key, g in truth.groupby(["store_id", "product_id"]):
        for s in series:
            if s.key != key:
                continue
            values = g.set_index("date")["expected_demand"]
            if s.freq == "W":
                values = values.groupby(values.index.to_period("W-SUN").start_time).sum()
            s.expected = values.reindex(pd.to_datetime(s.dates)).to_numpy(float)


# ---- publishing the run ----------------------------------------------------------------------------------
def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("demand-lakehouse")
    except PackageNotFoundError:
        package = "unknown"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{package}+{commit}" if commit else package


def _pooled(scores: pa.Table) -> tuple[dict[str, Score], Score, Score | None, dict[str, int], float]:
    """Pooled scores per model (all series), of the chosen models and of the oracle; chosen counts; and the
    mean of the chosen models' per-series MASE."""
    rows = scores.to_pylist()
    sums = list(Score.__dataclass_fields__)
    by_model: dict[str, Score] = {}
    chosen, oracle = Score(), None
    counts: Counter[str] = Counter()
    mase_values = []
    for row in rows:
        s = Score(**{k: row[k] for k in sums})
        if row["model"] == "oracle":
            oracle = (oracle or Score()) + s
            continue
        by_model[row["model"]] = by_model.get(row["model"], Score()) + s
        if row["chosen"]:
            chosen = chosen + s
            counts[row["model"]] += 1
            if s.mase == s.mase:
                mase_values.append(s.mase)
    return by_model, chosen, oracle, dict(counts), float(np.mean(mase_values)) if mase_values else float("nan")


def publish(settings: Settings, run_id: str, created_at: dt.datetime, freq: str, count: int, calendar, config: Config,
            staging: str, models_dir: str, seconds: float) -> RunResult:
    staged = {name: read_staged(staging, name) for name in
              (tables.FORECASTS.fqn, tables.BACKTEST_METRICS.fqn, SCORES)}
    by_model, chosen, oracle, counts, mase = _pooled(staged[SCORES])
    baseline = by_model.get(models.BASELINE, Score())
    per_model = {m: _summary(s) for m, s in by_model.items()}
    extra = {"per_model": per_model, "chosen_models": counts, "seconds": round(seconds, 3)}
    if oracle is not None:
        extra["oracle"] = _summary(oracle)
    parameters = {"models": list(config.models), "folds": config.folds, "regressors": ["price", "promo"],
                  "holidays": "country of the store (holidays package), with the 2 days before",
                  "future_regressors": "planned if known; else last price carried forward, no promotion",
                  "intervals": "conformal, pooled over the series of a shard (locally all): backtest errors of the "
                               "chosen models scaled by sqrt(yhat + 1); else the model's own"}
    run_row = {
        "run_id": run_id, "created_at": created_at, "freq": freq, "horizon": config.horizon,
        "data_start": _date(calendar[0]) if calendar else None, "data_end": _date(calendar[1]) if calendar else None,
        "series": count, "parameters": json.dumps(parameters, sort_keys=True),
        "code_version": code_version(), "wape": _num(chosen.wape), "wape_seasonal_naive": _num(baseline.wape),
        "mase": _num(mase), "bias": _num(chosen.bias), "coverage_80": _num(chosen.coverage_80),
        "coverage_95": _num(chosen.coverage_95), "metrics": json.dumps(extra, sort_keys=True),
    }
    runs = pa.Table.from_pylist([run_row], schema=tables.FORECAST_RUNS.schema)
    outputs = {tables.FORECASTS.fqn: staged[tables.FORECASTS.fqn],
               tables.BACKTEST_METRICS.fqn: staged[tables.BACKTEST_METRICS.fqn], tables.FORECAST_RUNS.fqn: runs}
    if settings.environment == "gcp":
        write_bigquery(settings, run_id, outputs, staging)
    else:
        for fqn, table in outputs.items():
            replace_run(LakeTable(settings.lake_dir, tables.TABLES[fqn]), run_id, table)
        from pipelines import warehouse

        warehouse.refresh_views(settings)
    notes = staged[tables.BACKTEST_METRICS.fqn].filter(pc.field("chosen")).select(
        ["store_id", "product_id", "model", "note"]).to_pylist()
    return RunResult(run_id, created_at, freq, config.horizon, config.folds, count, seconds,
                     counts, run_row, per_model, _summary(oracle) if oracle is not None else None, models_dir,
                     notes)


def _date(value) -> dt.date:
    return value.astype("datetime64[D]").astype(dt.date) if isinstance(value, np.datetime64) else value


def _summary(s: Score) -> dict:
    return {"points": s.points, "wape": _num(s.wape), "mase": _num(s.mase), "bias": _num(s.bias),
            "coverage_80": _num(s.coverage_80), "coverage_95": _num(s.coverage_95)}


def _num(x: float) -> float | None:
    return None if x is None or x != x else round(float(x), 6)


def replace_run(lake: LakeTable, run_id: str, new: pa.Table) -> None:
    """Replace `run_id`'s rows of one lakehouse table with `new`, partition by partition, atomically per file;
    other runs' rows stay. Partitions that held rows of this run and get none now lose them."""
    spec = lake.spec
    new = new.select(spec.schema.names).cast(spec.schema)
    part = spec.partition_by
    incoming: dict[str | None, pa.Table] = {}
    if part is None:
        incoming[None] = new
    else:
        values = pc.cast(new[part], pa.string())
        for value in pc.unique(values).to_pylist():
            incoming[value] = new.filter(pc.equal(values, value))
    for value in sorted(set(lake.partitions()) | set(incoming), key=lambda v: (v is None, v or "")):
        with lake.lock(value):  # a partition made after the listing holds none of this run (one attempt at a time)
            old = lake.read_partition(value) if lake.partition_file(value).exists() else spec.empty()
            keep = old.filter(pc.invert(pc.equal(old["run_id"], run_id)))
            if value not in incoming and keep.num_rows == old.num_rows:
                continue  # nothing of this run here
            merged = pa.concat_tables([keep, incoming.get(value, spec.empty())])
            merged = merged.sort_by([(k, "ascending") for k in spec.key])
            if merged.num_rows:
                lake.write_partition(value, merged)
            else:
                lake.partition_file(value).unlink(missing_ok=True)


def write_bigquery(settings: Settings, run_id: str, outputs: dict[str, pa.Table], staging: str) -> None:
    """Replace the run's rows in the BigQuery tables: delete them, then load the new rows (Parquet)."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    client = bigquery.Client(project=settings.gcp_project)
    for fqn, table in outputs.items():
        spec = tables.TABLES[fqn]
        table_id = settings.bigquery_table(spec.layer, spec.name).replace(":", ".")
        try:
            client.get_table(table_id)
            client.query(f"DELETE FROM `{table_id}` WHERE run_id = @run_id", job_config=bigquery.QueryJobConfig(
                query_parameters=[bigquery.ScalarQueryParameter("run_id", "STRING", run_id)])).result()
        except NotFound:
            pass
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET, write_disposition="WRITE_APPEND",
            schema=[bigquery.SchemaField.from_api_repr(f) for f in spec.bigquery_schema()],
            time_partitioning=bigquery.TimePartitioning(field=spec.partition_by) if spec.partition_by else None,
            clustering_fields=list(spec.cluster_by) or None)
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        buffer.seek(0)
        client.load_table_from_file(buffer, table_id, job_config=config).result()
