"""The batch job: landed event files -> bronze, silver and dead letters, with the streaming job's transforms.

    lakehouse backfill --input 'data/sim/events/*.jsonl' --dims data/sim/dims
    lakehouse backfill --input 'gs://bucket/events/*.jsonl' --dims gs://bucket/dims \\
        --runner DataflowRunner            # with LAKEHOUSE_ENVIRONMENT=gcp: writes BigQuery instead

Locally it runs on Beam's DirectRunner and writes the Parquet lakehouse under $LAKEHOUSE_HOME (see
pipelines.sinks); a re-run over the same files gives the same tables. Every run leaves a record in
$LAKEHOUSE_HOME/runs/ (counts, dead letters by reason, timings) and a structured log line.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import logging
import multiprocessing as mp
import time
import uuid
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import contract, landing, progress, tables
from pipelines.batches import Dimensions, RunInfo, file_lineage, with_lineage
from pipelines.config import Settings
from pipelines.parsing import Limits
from pipelines.shards import plan_shards, shard_context
from pipelines.sinks import PARTITIONS, LakeTable, WriteToBigQueryTables, WriteToLakehouse, partitions_written
from pipelines.transforms import DEAD_LETTER, NAMESPACE, DeduplicateEvents, ProcessEvents, ReadLineChunks

log = logging.getLogger("lakehouse.backfill")

#: On one machine "DirectRunner" means Beam's bundle-based direct runner. It hands elements (here Arrow
#: tables of thousands of events) from step to step in memory; the portable FnApiRunner, which Beam picks
#: for batch by default, serialises every one through its data plane and ran this job 1.8x slower
#: (benchmarks/backfill_throughput.py prints both). `--runner FnApiRunner` still selects it.
LOCAL_RUNNERS = {"DirectRunner": "BundleBasedDirectRunner", "FnApiRunner": "DirectRunner"}


@dataclass
class BackfillResult:
    """What one run did: the counters of the run and where its record is."""

    run_id: str
    input_pattern: str
    files: int
    seconds: float
    counters: dict[str, int] = field(default_factory=dict)
    record_path: Path | None = None
    views_refreshed: bool = True

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    @property
    def lines_read(self) -> int:
        return self.get("lines_read")

    @property
    def dead_letters(self) -> dict[str, int]:
        return {k.split(".", 1)[1]: v for k, v in sorted(self.counters.items()) if k.startswith("dead_letter.")}

    @property
    def silver_rows(self) -> int:
        return sum(self.get(f"rows_written.{fqn}") for fqn in tables.SILVER_EVENTS)

    @property
    def duplicates(self) -> int:
        """Copies removed: repeated within the run, or of events the lakehouse already had."""
        return self.get("duplicates_removed")

    @property
    def reconciles(self) -> bool:
        return self.lines_read == self.silver_rows + sum(self.dead_letters.values()) + self.duplicates

    @property
    def events_per_second(self) -> float:
        return self.lines_read / self.seconds if self.seconds else 0.0


def match_inputs(pattern: str) -> list[str]:
    """Files matching the pattern (local or gs://), sorted; a clear error when there are none."""
    if "://" not in pattern:
        pattern = str(Path(pattern).expanduser().absolute())
    matches = FileSystems.match([pattern])[0].metadata_list
    paths = sorted(m.path for m in matches if not m.path.endswith("/"))
    if not paths:
        raise FileNotFoundError(f"no input files match {pattern!r}")
    return paths


def load_dimensions(dims_dir: str) -> tuple[Dimensions, list[tuple[str, pa.Table]]]:
    """Read and validate the dimension files; returns the side input and the rows for silver.* tables."""
    records, rows = {}, []
    for name in contract.DIMENSIONS:
        uri = FileSystems.join(dims_dir if "://" in dims_dir else str(Path(dims_dir).absolute()), f"{name}.jsonl")
        if not FileSystems.exists(uri):
            raise FileNotFoundError(f"dimension file {uri} is missing (expected {', '.join(contract.DIMENSIONS)})")
        with FileSystems.open(uri) as f:
            parsed = landing.decode_dimension(f.read(), name, uri)
        records[name] = [r for r, _line in parsed]
        spec = tables.dimension(name)
        data = [dict(zip(r.__struct_fields__, (getattr(r, k) for k in r.__struct_fields__))) for r, _ in parsed]
        rows.append((spec.fqn, with_lineage(data, file_lineage(uri, [line for _, line in parsed]), spec.schema)))
    return Dimensions.from_records(records["products"], records["stores"]), rows


def run(
    input_pattern: str | list[str],
    dims_dir: str,
    settings: Settings,
    *,
    runner: str = "DirectRunner",
    beam_args: list[str] | None = None,
    now: dt.datetime | None = None,
    run_id: str | None = None,
    workers: int = 1,
) -> BackfillResult:
    """Run the backfill and wait for it; returns the run's counters (also written as a run record).

    Locally the input files can be split into `workers` shards (`shards.default_workers()` picks one per core
    for inputs over 64 MB; the CLI does), each run by the DirectRunner in its own process: the
    DirectRunner executes a pipeline on one core. More than one worker may start a fork server (see
    `shards.shard_context`), so a calling script needs the usual `if __name__ == "__main__":` guard. Shards
    cannot clobber or double count each other: each replaces only its own files' rows, partition writes
    take a lock and merge by key, and the first copy in source order wins. A failed run leaves every
    partition it did not reach as it was.
    """
    started = time.perf_counter()
    now = now or dt.datetime.now(dt.timezone.utc)
    run_id = run_id or f"backfill-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    run_info = RunInfo(run_id, now, Limits(now=now, max_payload_bytes=settings.max_payload_bytes,
                                           max_future_skew=dt.timedelta(hours=settings.max_future_skew_hours)))
    patterns = [input_pattern] if isinstance(input_pattern, str) else input_pattern
    paths = sorted({path for pattern in patterns for path in match_inputs(pattern)})
    input_pattern = ",".join(patterns)
    dims, dim_rows = load_dimensions(dims_dir)
    to_bigquery = settings.environment == "gcp"
    if runner == "DataflowRunner" and not to_bigquery:
        raise ValueError("the DataflowRunner writes BigQuery: set LAKEHOUSE_ENVIRONMENT=gcp and the gcp settings")

    if to_bigquery:
        sink = {fqn: settings.bigquery_table(s.layer, s.name) for fqn, s in tables.written_by("events").items()}
        shards = [paths]
    else:
        sink = [(spec.fqn, value) for spec in tables.written_by("events").values()
                for value in LakeTable(settings.lake_dir, spec).partitions()]
        shards = plan_shards(paths, 1 if mp.current_process().daemon else workers)  # daemons have no children
    jobs = [Shard(shard, dim_rows if i == 0 else []) for i, shard in enumerate(shards)]
    args = (dims, settings, runner, cloud_options(settings, beam_args or []) if to_bigquery else beam_args or [],
            run_info, sink)
    shard_results = run_shards(jobs, args)
    total: Counter[str] = Counter()
    for shard_result in shard_results:
        total.update(shard_result.counters)  # update(), unlike +, keeps counters that are zero
    counters = dict(total)
    if len(jobs) > 1:
        written = {fqn: silver_rows_kept(settings, fqn, paths, shard_results) for fqn in tables.SILVER_EVENTS}
        counters.update({f"rows_written.{fqn}": n for fqn, n in written.items()})
        counters["duplicates_removed"] = counters.get("enriched", 0) - sum(written.values())
    result = BackfillResult(run_id, input_pattern, len(paths), time.perf_counter() - started, counters)
    if not to_bigquery:
        from pipelines import warehouse  # duckdb is a local-only dependency

        result.record_path = write_run_record(settings, result, now)  # first: the ops view reads it
        result.views_refreshed = warehouse.refresh_views(settings)
        if not result.views_refreshed:
            write_run_record(settings, result, now)
            log.warning("warehouse.duckdb stayed locked by another process: its views of tables loaded for the "
                        "first time are not updated yet; `lakehouse summary` updates them later")
    log.info(json.dumps({"event": "backfill_finished", "run_id": run_id, "files": len(paths),
                         "seconds": round(result.seconds, 2), "lines_read": result.lines_read,
                         "silver_rows": result.silver_rows, "duplicates": result.duplicates,
                         "dead_letters": result.dead_letters, "reconciles": result.reconciles}))
    return result


def silver_rows_kept(settings: Settings, fqn: str, paths: list[str], shards: list[ShardResult]) -> int:
    """Rows of a silver table that a sharded run's files left in the lakehouse.

    Shards merge into shared partitions in no fixed order, so where two shards rewrote one partition, which
    shard's copy of an event won is only known at the end: those partitions are counted on disk. A partition
    one shard alone rewrote holds exactly the rows it kept there (the others hold no row of theirs in it, or they
    would have swept it). If a shard's report does not add up to its counter, every partition is counted."""
    writers: dict[str | None, list[int]] = {}
    for shard in shards:
        mine = {value: rows for (table, value), rows in shard.partitions.items() if table == fqn}
        if sum(mine.values()) != shard.counters.get(f"rows_written.{fqn}", 0):
            return LakeTable(settings.lake_dir, tables.TABLES[fqn]).count_from(frozenset(paths))
        for value, rows in mine.items():
            writers.setdefault(value, []).append(rows)
    shared = [value for value, rows in writers.items() if len(rows) > 1]
    alone = sum(rows[0] for rows in writers.values() if len(rows) == 1)
    return alone + LakeTable(settings.lake_dir, tables.TABLES[fqn]).count_from(frozenset(paths), shared)


def run_shards(jobs: list[Shard], args: tuple) -> list[ShardResult]:
    """Run every shard's pipeline. This process runs the first shard itself while the others start (in processes from
    `shards.shard_context`)."""
    if len(jobs) == 1:
        return [run_shard(jobs[0], *args)]
    ctx = shard_context()
    with ProcessPoolExecutor(len(jobs) - 1, mp_context=ctx, initializer=progress.attach,
                             initargs=(progress.share(ctx),)) as pool:
        others = [pool.submit(run_shard, job, *args) for job in jobs[1:]]
        return [run_shard(jobs[0], *args), *(future.result() for future in others)]


def cloud_options(settings: Settings, beam_args: list[str]) -> list[str]:
    """Beam options for Dataflow from the settings, unless given: project, region, temp location, and
    this distribution (setup.py) so workers install the `pipelines` package with its `beam` extra."""
    given = {arg.split("=", 1)[0].lstrip("-") for arg in beam_args}
    defaults = {"project": settings.gcp_project, "region": settings.gcp_region,
                "temp_location": f"gs://{settings.gcs_bucket}/dataflow/tmp" if settings.gcs_bucket else None}
    setup_file = Path(__file__).resolve().parents[1] / "setup.py"
    if setup_file.exists():
        defaults["setup_file"] = str(setup_file)
    return [*beam_args, *(f"--{k}={v}" for k, v in defaults.items() if v and k not in given)]


@dataclass
class Shard:
    """The input files one pipeline run reads, and the dimension rows it writes (only one shard does)."""

    paths: list[str]
    dim_rows: list[tuple[str, pa.Table]]


@dataclass
class ShardResult:
    """A shard's counters by name, and the lakehouse partitions it rewrote: (fqn, partition) -> rows kept."""

    counters: dict[str, int]
    partitions: dict[tuple[str, str | None], int] = field(default_factory=dict)


def run_shard(shard: Shard, dims: Dimensions, settings: Settings, runner: str, beam_args: list[str],
              run_info: RunInfo, sink) -> ShardResult:
    """Build and run the pipeline over one shard's files; returns its counters and the partitions it rewrote."""
    # from the start: a full collection while the pipeline was built took ~0.2 s, and in a forked shard it wrote to
    # (so copied) every page of the objects inherited from the parent
    with fewer_gc_passes():
        return _run_pipeline(shard, dims, settings, runner, beam_args, run_info, sink)


def _run_pipeline(shard: Shard, dims: Dimensions, settings: Settings, runner: str, beam_args: list[str],
                  run_info: RunInfo, sink) -> ShardResult:
    if mp.parent_process() is not None:  # a shard process: the parent's CLI configured logging, not this one
        logging.getLogger("apache_beam").setLevel(logging.ERROR)
    local = LOCAL_RUNNERS.get(runner, runner)
    to_bigquery = isinstance(sink, dict)
    if to_bigquery and runner == "DirectRunner":
        # to BigQuery from this machine: the bundle-based runner loses the counter updates of steps after a
        # ParDo with a side input (the sink's row counts), so the run would not reconcile; Beam's default
        # local runner keeps them (and the rows go over the network anyway)
        local = LOCAL_RUNNERS["FnApiRunner"]
    # Locally, Beam's construction-time type inference (it disassembles every DoFn) only labels PCollections whose
    # elements are Arrow tables anyway, and there are no workers to spread the input files over.
    options = PipelineOptions(beam_args, runner=local, save_main_session=False, pipeline_type_check=to_bigquery)
    p = beam.Pipeline(options=options)
    files = (
        p
        | "ListInputFiles" >> beam.Create(shard.paths, reshuffle=to_bigquery)
        | "ReadMatches" >> fileio.ReadMatches()
    )
    dims_side = beam.pvalue.AsSingleton(p | "DimensionsSideInput" >> beam.Create([dims]))
    unreadable = []
    if to_bigquery:  # on Dataflow: spread one big file's chunks over many workers
        chunks = files | "ReadLineChunks" >> beam.ParDo(ReadLineChunks(run_info)).with_outputs(DEAD_LETTER,
                                                                                              main="chunks")
        unreadable.append(chunks[DEAD_LETTER])
        processed = chunks.chunks | "SpreadChunks" >> beam.Reshuffle() | "ProcessEvents" >> ProcessEvents(
            run_info, dims_side)
    else:  # each file read and parsed in one step (its dead letter, if unreadable, among the others)
        processed = files | "ProcessEvents" >> ProcessEvents(run_info, dims_side, from_files=True)
    dim_tables = p | "DimensionRows" >> beam.Create(shard.dim_rows, reshuffle=False)
    silver = processed.silver
    if to_bigquery:  # BigQuery appends; the lakehouse drops copies as it merges a table's rows
        silver = silver | "Deduplicate" >> DeduplicateEvents()
    tables_out = (processed.bronze, silver, processed.dead_letter, *unreadable, dim_tables)
    outputs = tables_out | "AllTables" >> beam.Flatten()
    if to_bigquery:  # BigQuery table ids
        outputs | "WriteBigQuery" >> WriteToBigQueryTables(sink)
    else:  # existing lakehouse partitions; the lakehouse merges by key, so a replay never double counts
        sources = [*shard.paths, *(uri for _, t in shard.dim_rows for uri in t["source_uri"].unique().to_pylist())]
        outputs | "WriteLakehouse" >> WriteToLakehouse(settings.lake_dir, sources, sink)
    # test_runner_api: the bundle-based runner would first rebuild the graph from its runner API form, only to test
    # that form (~0.3 CPU-s); other runners skip that test anyway
    result = p.run(test_runner_api=False)
    result.wait_until_finish()
    counters: Counter[str] = Counter()
    for r in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]:
        counters[r.key.metric.name] += int(r.committed or r.attempted or 0)  # one name, several steps: add up
    partitions = result.metrics().query(MetricsFilter().with_namespace(PARTITIONS))["distributions"]
    return ShardResult(dict(counters), partitions_written((r.key.metric.name, (r.committed or r.attempted).sum)
                                                          for r in partitions))


@contextmanager
def fewer_gc_passes(young: int = 50_000):
    """Python's cyclic garbage collector, tuned for a pipeline run: it scans the objects that exist when the run
    starts (modules: ~200,000) in each full pass, and the run allocates millions of short-lived objects (decoded
    events, rows), each of which may trigger a pass. Here the existing objects are frozen out of the passes (unless
    the caller froze some already) and a young pass waits for `young` allocations instead of 700: a shard now makes
    ~3 young passes and no full one (the collector took ~4% of a run's CPU before). Cyclic garbage is still
    collected."""
    threshold, freeze = gc.get_threshold(), gc.get_freeze_count() == 0
    if freeze:
        gc.freeze()
    gc.set_threshold(max(young, threshold[0]), *threshold[1:])
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        if freeze:
            gc.unfreeze()


def write_run_record(settings: Settings, result: BackfillResult, started_at: dt.datetime) -> Path:
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    path = settings.runs_dir / f"{result.run_id}.json"
    record = {
        "run_id": result.run_id,
        "job": "backfill",
        "started_at": started_at.isoformat(),
        "seconds": round(result.seconds, 3),
        "input": result.input_pattern,
        "files": result.files,
        "lines_read": result.lines_read,
        "silver_rows": result.silver_rows,
        "duplicates": result.duplicates,
        "dead_letters": sum(result.dead_letters.values()),
        "dead_letters_by_reason": result.dead_letters,
        "reconciles": result.reconciles,
        "views_refreshed": result.views_refreshed,
        "counters": result.counters,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
