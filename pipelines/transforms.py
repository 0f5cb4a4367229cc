"""The Beam transforms every pipeline shares: read chunks, parse and validate, deduplicate, enrich.

Business logic only: no transform here opens a sink, so the backfill and (later) the stream choose
their sources and sinks in `run()` and the tests feed `beam.Create`/`TestStream`. Elements are Arrow
tables of thousands of events (see `pipelines.batches`), which keeps Beam's per-element cost off the
per-event path. Every bad record leaves through the `dead_letter` output with a reason; counters in the
`lakehouse` namespace say how many of each.

    results = chunks | ProcessEvents(run_info, dims_side_input)
    results.bronze, results.silver   # PCollections of (table fqn, pyarrow.Table)
    results.dead_letter              # PCollection of (table fqn, pyarrow.Table)
"""

from __future__ import annotations

import threading
import zlib
from collections import Counter
from typing import NamedTuple

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.metrics import Metrics

from pipelines import progress, tables
from pipelines.batches import (
    Dimensions,
    LineChunk,
    RunInfo,
    dead_letter_table,
    enrich,
    file_lineage,
    first_copies,
    parse_chunk,
    split_by,
)
from pipelines.landing import UTF8_BOM
from pipelines.parsing import Rejection

NAMESPACE = "lakehouse"
#: what makes two rows copies of one event; the same key the lakehouse merges on
DEDUPE_KEY = tables.silver_events("order").key
DEAD_LETTER = "dead_letter"
CHUNK_LINES = 20_000
_READ_BLOCK = 8 << 20


#: the same counts, for this process only: a DirectRunner stream reads them while it runs (querying Beam's
#: metrics of a running DirectRunner stream stalls it) and after a cancel (which leaves metrics incomplete)
PROCESS_COUNTS: Counter[str] = Counter()
_COUNTS_LOCK = threading.Lock()


def count(name: str, n: int = 1) -> None:
    Metrics.counter(NAMESPACE, name).inc(n)
    with _COUNTS_LOCK:
        PROCESS_COUNTS[name] += n


def process_counts() -> dict[str, int]:
    with _COUNTS_LOCK:
        return dict(PROCESS_COUNTS)


def count_dead_letters(table: pa.Table) -> None:
    for item in pc.value_counts(table["reason"]).to_pylist():
        count(f"dead_letter.{item['values']}", item["counts"])
    count("dead_letters", table.num_rows)


class ReadLineChunks(beam.DoFn):
    """A matched file (fileio.ReadableFile) -> LineChunks of consecutive raw lines, bytes untouched.

    Lines are split on b"\\n" only, so invalid UTF-8 or a 5 MB line reaches the validator instead of
    crashing a text decoder; compressed files (.gz, .bz2, ...) are decompressed by Beam's filesystems,
    except gzip, read with Python's gzip module because Beam's reader ends a truncated file silently. A
    file that breaks off (truncated or corrupt) keeps the lines read so far and adds one dead letter,
    `unreadable_file`, for the rest (one input record).
    """

    def __init__(self, run: RunInfo | None = None, chunk_lines: int = CHUNK_LINES):
        self.run, self.chunk_lines = run, chunk_lines

    def process(self, readable: fileio.ReadableFile):
        uri = readable.metadata.path
        first_line, pending, tail, error = 1, [], [], None
        try:
            for block in _blocks(readable):
                progress.advance(len(block))
                if first_line == 1 and not pending and not tail:
                    block = block.removeprefix(UTF8_BOM)
                end = block.rfind(b"\n")
                if end < 0:  # no line ends here: keep the pieces, join once (a long line stays linear)
                    tail.append(block)
                    continue
                lines = (b"".join(tail) + block[:end]).split(b"\n")
                tail = [block[end + 1:]]
                pending.extend(lines)
                while len(pending) >= self.chunk_lines:
                    yield LineChunk(uri, first_line, pending[: self.chunk_lines])
                    first_line += self.chunk_lines
                    pending = pending[self.chunk_lines:]
        except (EOFError, OSError, zlib.error) as e:
            if self.run is None:
                raise
            error = e
        if last := b"".join(tail):  # a last line without a newline is still a line
            pending.append(last)
        if pending:
            yield LineChunk(uri, first_line, pending)
        lines_read = first_line - 1 + len(pending)
        count("files_read")
        count("lines_read", lines_read + (error is not None))
        if error is not None:
            rejection = Rejection("read", "unreadable_file", f"{type(error).__name__}: {error} after "
                                  f"{lines_read:,} lines; the rest of the file is not loaded")
            dead = dead_letter_table([(rejection, b"")], file_lineage(uri, [None]), self.run)
            count_dead_letters(dead)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, (tables.DEAD_LETTER.fqn, dead))


def _blocks(readable: fileio.ReadableFile):
    """The file's bytes in blocks, decompressed; gzip by hand so a truncated file yields all it has."""
    if not readable.metadata.path.endswith(".gz"):
        with readable.open() as f:
            while block := f.read(_READ_BLOCK):
                yield block
        return
    with readable.open(compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        inflate, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
        while data := raw.read(_READ_BLOCK):
            while data:
                fed = True
                if out := inflate.decompress(data):
                    yield out
                if not inflate.eof:
                    break
                data = inflate.unused_data  # concatenated gzip members
                inflate, fed = zlib.decompressobj(16 + zlib.MAX_WBITS), False
        if fed and not inflate.eof:
            raise EOFError("compressed file ended before the end-of-stream marker was reached")


class ParseEvents(beam.DoFn):
    """LineChunk -> (bronze fqn, valid events) and, tagged `dead_letter`, (dead-letter fqn, rejects)."""

    def __init__(self, run: RunInfo):
        self.run = run

    def process(self, chunk: LineChunk):
        parsed = parse_chunk(chunk, self.run)
        for entity, table in parsed.events.items():
            count(f"valid.{entity}", table.num_rows)
            yield tables.bronze_events(entity).fqn, table
        if parsed.dead_letters is not None:
            count_dead_letters(parsed.dead_letters)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, (tables.DEAD_LETTER.fqn, parsed.dead_letters))


class ReadAndParseEvents(beam.DoFn):
    """A matched file -> what ParseEvents makes of each of its LineChunks (ReadLineChunks), in one step.

    The DirectRunner runs a step over all its input before the next one starts, so with two steps every line
    of the input (a Python object each) would wait in memory for the parser; here a chunk's lines are parsed as
    soon as they are read and their memory serves the next chunk (~100,000 page faults fewer per 1M events)."""

    def __init__(self, run: RunInfo, chunk_lines: int = CHUNK_LINES):
        self.read, self.parse = ReadLineChunks(run, chunk_lines), ParseEvents(run)

    def process(self, readable: fileio.ReadableFile):
        for chunk in self.read.process(readable):
            if isinstance(chunk, beam.pvalue.TaggedOutput):  # an unreadable file's dead letter
                yield chunk
            else:
                yield from self.parse.process(chunk)


def _key_by_event_id_bucket(element, buckets: int):
    """(fqn, events) -> ((fqn, bucket), [event_date, event_id, source_uri, source_line]) per bucket present."""
    fqn, table = element
    thin = table.select([*DEDUPE_KEY, "source_uri", "source_line"])
    bucket = np.fromiter((zlib.crc32(i.encode()) % buckets for i in thin["event_id"].to_pylist()),
                         dtype=np.int32, count=thin.num_rows)
    for b in np.unique(bucket):
        yield (fqn, int(b)), thin.filter(pa.array(bucket == b))


def _later_copies(element):
    """((fqn, bucket), [thin tables]) -> (fqn, source_uri, source_lines) of every copy but the first."""
    (fqn, _bucket), parts = element
    thin = pa.concat_tables(list(parts))
    first = first_copies(thin, list(DEDUPE_KEY), ["source_uri", "source_line"])
    if first.all():
        return
    count("duplicates_removed", int((~first).sum()))
    for uri, lines in _lines_by_source(thin.filter(pa.array(~first))).items():
        yield fqn, uri, lines


def _lines_by_source(table: pa.Table) -> dict[str, np.ndarray]:
    return {uri: np.sort(part["source_line"].to_numpy()) for uri, part in split_by(table, "source_uri")}


class DropLaterCopies(beam.DoFn):
    """(fqn, events) -> (fqn, events without the rows named in the `copies` side input)."""

    def setup(self):
        self._index_of, self._index = None, {}

    def process(self, element, copies):
        if self._index_of is not copies:  # index the side input once, not per table
            index: dict[tuple[str, str], list[np.ndarray]] = {}
            for fqn_, uri, lines in copies:
                index.setdefault((fqn_, uri), []).append(lines)
            self._index = {k: np.concatenate(v) for k, v in index.items()}
            self._index_of = copies
        fqn, table = element
        for uri in table["source_uri"].unique().to_pylist() if self._index else ():
            if (fqn, uri) in self._index:
                keep = ~np.isin(table["source_line"].to_numpy(), self._index[(fqn, uri)]) | pc.not_equal(
                    table["source_uri"], uri).to_numpy(zero_copy_only=False)
                table = table.filter(pa.array(keep))
        if table.num_rows:
            yield fqn, table


class DeduplicateEvents(beam.PTransform):
    """(fqn, events) -> (fqn, events with one row per (event_date, event_id) across the whole run).

    Only the ids travel through the shuffle: (event_id, source_uri, source_line) rows are hash-partitioned
    by event_id into `buckets`, every copy after the first (in source order) is named, and the named rows
    are filtered out of the full tables where they are. The first copy in (source_uri, source_line) order wins.
    """

    def __init__(self, buckets: int = 16):
        super().__init__()
        self.buckets = buckets

    def expand(self, events):
        copies = (
            events
            | "KeyByEventIdBucket" >> beam.FlatMap(_key_by_event_id_bucket, self.buckets)
            | "GroupByBucket" >> beam.GroupByKey()
            | "FindLaterCopies" >> beam.FlatMap(_later_copies)
        )
        return events | "DropLaterCopies" >> beam.ParDo(DropLaterCopies(), copies=beam.pvalue.AsList(copies))


class EnrichEvents(beam.DoFn):
    """(bronze fqn, valid events) -> (silver fqn, events with dimension attributes).

    An event whose store or product is not in the dimensions leaves, tagged `dead_letter`, with its
    original payload, which only the bronze rows carry: so this runs before deduplication, fused with
    parsing, while the payload is at hand. (Every copy of such an event is a dead letter.)
    """

    def __init__(self, run: RunInfo):
        self.run = run

    def process(self, element, dims: Dimensions):
        fqn, table = element
        entity = tables.ENTITY_OF_TABLE[fqn]
        silver, rejects = enrich(table, entity, dims, self.run)
        count("enriched", silver.num_rows)
        if silver.num_rows:
            yield tables.silver_events(entity).fqn, silver
        if rejects is not None:
            count_dead_letters(rejects)
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, (tables.DEAD_LETTER.fqn, rejects))


class Processed(NamedTuple):
    bronze: beam.PCollection  # (fqn, valid events as received, duplicates included)
    silver: beam.PCollection  # (fqn, enriched events, not yet deduplicated: the sink or DeduplicateEvents does)
    dead_letter: beam.PCollection  # (fqn, rejected records with reason)


class ProcessEvents(beam.PTransform):
    """LineChunks -> bronze, silver and dead-letter tables: parse, validate, enrich (all fused, no shuffle).

    `from_files`: the input is matched files (fileio.ReadableFile), read and parsed in one step (ReadAndParseEvents);
    an unreadable file's dead letter joins the others."""

    def __init__(self, run: RunInfo, dims, from_files: bool = False):
        super().__init__()
        self.run, self.dims, self.from_files = run, dims, from_files

    def expand(self, chunks) -> Processed:
        parse = ReadAndParseEvents(self.run) if self.from_files else ParseEvents(self.run)
        parsed = chunks | "ParseAndValidate" >> beam.ParDo(parse).with_outputs(DEAD_LETTER, main="valid")
        enriched = parsed.valid | "EnrichWithDimensions" >> beam.ParDo(
            EnrichEvents(self.run), dims=self.dims).with_outputs(DEAD_LETTER, main="silver")
        dead = (parsed[DEAD_LETTER], enriched[DEAD_LETTER]) | "CollectDeadLetters" >> beam.Flatten()
        return Processed(bronze=parsed.valid, silver=enriched.silver, dead_letter=dead)
