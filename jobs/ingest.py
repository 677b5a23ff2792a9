"""Bronze ingest, the reading side: landing files → typed bronze rows, quarantine, per-file counts.

Landing layout (CONTRACTS §2): ``<landing>/<source>/<YYYY-MM-DD>/<file>``. The
files of the requested arrival dates are listed on the driver, read by Spark
(text lines, or whole files for e-mail; ``.gz`` is decompressed) and classified
by the pure transforms of ``pipelines.ingest``.

* Names starting with "." or "_" (``_SUCCESS``, ``.crc``) and sub-folders inside a
  date folder are not landing files: skipped, with a warning.
* A ``.gz`` file that does not decompress cannot be split into records: it
  counts as one record, quarantined with the reason, and the run goes on. So
  does an empty ``.eml`` (one empty message), which Spark would skip.
* A landing zone that does not exist, or a folder or file that cannot be read
  (permissions), is an operational fault, not bad data: ``LandingNotReadable``
  (a ``FileNotFoundError``) naming the path.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import overload

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from atende.conf.settings import Settings
from atende.lakehouse.storage import (
    Entry,
    LocationNotFound,
    NotAFolder,
    PermissionDenied,
    Storage,
    StorageError,
    join,
    location,
    name_of,
)
from atende.pipelines.ingest import (
    FILE_COUNTS,
    FILE_SOURCES,
    REASON,
    IngestRules,
    RunLineage,
    accepted_records,
    classify,
    quarantined_records,
    records_per_file,
)
from atende.pipelines.schemas import BRONZE, QUARANTINE, SOURCES

log = logging.getLogger(__name__)

_DATE_FOLDER = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_GLOB_CHARS = re.compile(r"([\[\]{}*?\\])")


class LandingNotReadable(FileNotFoundError):
    """A landing path that does not exist or cannot be read; the message names it."""


@dataclass(frozen=True)
class IngestResult:
    accepted: DataFrame      # schema pipelines.schemas.BRONZE[source] (names, types, order)
    quarantined: DataFrame   # schema pipelines.schemas.QUARANTINE
    file_counts: DataFrame   # common.FILE_COUNTS: per file, records = accepted + quarantined
    # The classified frame the three share, persisted so the files are parsed once.
    _persisted: tuple[DataFrame, ...] = field(default=(), repr=False, compare=False)

    def release(self) -> None:
        """Drop the cached parse once the frames have been written."""
        for frame in self._persisted:
            frame.unpersist()


@dataclass(frozen=True)
class LandingFile:
    path: str          # a location (lakehouse.storage): an absolute local path or a remote URI
    arrival_date: date
    size: int = 0

    @property
    def name(self) -> str:
        return self.path


# ------------------------------------------------------------------ listing

def _check_source(source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; known sources: {', '.join(SOURCES)}")


@overload
def _entries(storage: Storage, folder: str, what: str) -> list[Entry]: ...
@overload
def _entries(storage: Storage, folder: str, what: str, missing_ok: bool) -> list[Entry] | None: ...


def _entries(storage: Storage, folder: str, what: str, missing_ok: bool = False) -> list[Entry] | None:
    """The folder's entries; a folder that is not there is None with `missing_ok`, else LandingNotReadable
    (as is one that cannot be read)."""
    try:
        return storage.listdir(folder)
    except LocationNotFound:
        if missing_ok:
            return None
        raise LandingNotReadable(f"{what} not found: {folder}") from None
    except PermissionDenied:
        raise LandingNotReadable(f"{what} cannot be read (permission denied): {folder}") from None
    except NotAFolder:
        raise LandingNotReadable(f"{what} is not a folder: {folder}") from None
    except StorageError as exc:
        raise LandingNotReadable(f"{what}: {exc}") from None


def list_arrival_dates(landing: str | os.PathLike, source: str, storage: Storage | None = None) -> list[date]:
    """The arrival dates (``YYYY-MM-DD`` folders) a source has in the landing zone, oldest first.

    A source with no folder yet has no dates (warning); entries that are not date
    folders are ignored (warning naming them). ``storage`` reaches remote landing zones
    (``Storage(spark)``); a local one needs none.
    """
    return [arrival for arrival, _ in arrival_folders(landing, source, storage)]


def arrival_folders(landing: str | os.PathLike, source: str,
                    storage: Storage | None = None) -> list[tuple[date, Entry]]:
    """`list_arrival_dates` with each date's folder entry (its `mtime_ms`: when a file last entered it, on a
    file system that keeps folder times; 0 on an object store, which has no folders)."""
    _check_source(source)
    storage = storage or Storage()
    landing = location(landing)
    children = {e.name: e for e in _entries(storage, landing, "landing zone")}
    if source not in children:
        log.warning("landing zone %s has no %s/ folder: no %s files to ingest", landing, source, source)
        return []
    folder = children[source].path
    if not children[source].is_dir:
        raise LandingNotReadable(f"{source} landing folder is not a folder: {folder}")
    dates: list[tuple[date, Entry]] = []
    ignored: list[str] = []
    for child in _entries(storage, folder, f"{source} landing folder"):
        arrival = _folder_date(child)
        if arrival:
            dates.append((arrival, child))
        else:
            ignored.append(child.name)
    if ignored:
        log.warning("ignored in %s (not a YYYY-MM-DD folder): %s", folder, ", ".join(sorted(ignored)))
    return sorted(dates, key=lambda d: d[0])


def _folder_date(entry: Entry) -> date | None:
    if not (entry.is_dir and _DATE_FOLDER.match(entry.name)):
        return None
    try:
        return date.fromisoformat(entry.name)
    except ValueError:  # 2026-02-30
        return None


def landing_files(landing: str | os.PathLike, source: str, arrival_dates: list[date],
                  storage: Storage | None = None) -> list[LandingFile]:
    """The files to ingest for these dates; a date with no folder has none."""
    _check_source(source)
    storage = storage or Storage()
    landing = location(landing)
    _entries(storage, landing, "landing zone")
    files: list[LandingFile] = []
    for arrival in sorted(set(arrival_dates)):
        folder = join(landing, source, arrival.isoformat())
        children = _entries(storage, folder, f"{source} arrival folder", missing_ok=True)
        if children is None:
            log.info("no %s folder for %s: nothing to ingest", source, arrival)
            continue
        skipped = []
        for child in children:
            if child.name.startswith((".", "_")) or not child.is_file:
                skipped.append(child.name)
                continue
            if not storage.readable(child):
                raise LandingNotReadable(f"landing file cannot be read (permission denied): {child.path}")
            files.append(LandingFile(child.path, arrival, child.size))
        if skipped:
            log.warning("skipped in %s (hidden, or not a file): %s", folder, ", ".join(skipped))
    return files


def whole_file_problem(file: LandingFile, source: str, storage: Storage | None = None) -> str | None:
    """Why a file must be quarantined whole, as one record, before Spark reads it (None: it need not).

    Spark's reader fails the whole job on a corrupt gzip stream, so that is
    caught here (streamed, in the storage module). Spark also yields nothing for a
    0-byte file, while an empty .eml is still one (empty) message.
    """
    name = name_of(file.path).lower()
    if source in FILE_SOURCES and not name.endswith(".mbox") and file.size == 0:
        return "empty message"
    if not name.endswith(".gz"):
        return None
    return (storage or Storage()).gzip_problem(file.path)


# ------------------------------------------------------------------ reading

def _spark_path(path: str) -> str:
    """A location as Spark's reader takes it literally (glob characters escaped)."""
    return _GLOB_CHARS.sub(r"\\\1", path)


def _source_file(file_path: Column) -> Column:
    """Spark's file URI (``file:/a%20b/x.csv``, ``s3a://b/a%20b/x.csv``) back to the location the listing
    uses (``/a b/x.csv``, ``s3a://b/a b/x.csv``)."""
    without_scheme = F.regexp_replace(file_path, r"^file:(//)?", "")
    # url_decode reads "+" as a space; a "+" in a URI path is a literal plus.
    decoded = F.try_url_decode(F.replace(without_scheme, F.lit("+"), F.lit("%2B")))
    return F.coalesce(decoded, without_scheme)


def _arrival_date_of(source_file: Column) -> Column:
    return F.to_date(F.regexp_extract(source_file, r"(\d{4}-\d{2}-\d{2})/[^/]+$", 1))


def read_lines(spark: SparkSession, files: list[LandingFile]) -> DataFrame:
    """common.RAW_LINES of text files: one row per physical line."""
    source_file = _source_file(F.col("_metadata.file_path"))
    return spark.read.text([_spark_path(f.path) for f in files]).select(
        source_file.alias("_source_file"),
        _arrival_date_of(source_file).alias("_arrival_date"),
        F.col("_metadata.file_block_start").alias("_split_start"),
        # Taken at the scan, before any exchange: grows along each file split.
        F.monotonically_increasing_id().alias("_position"),
        F.col("value"),
    )


def read_files(spark: SparkSession, files: list[LandingFile]) -> DataFrame:
    """common.RAW_FILES: one row per file, its bytes as stored (still gzip-compressed)."""
    source_file = _source_file(F.col("_metadata.file_path"))
    return spark.read.format("binaryFile").load([_spark_path(f.path) for f in files]).select(
        source_file.alias("_source_file"),
        _arrival_date_of(source_file).alias("_arrival_date"),
        F.col("content"),
    )


def _empty(spark: SparkSession, schema) -> DataFrame:
    return spark.createDataFrame([], schema)


def _whole_file_quarantine(
    spark: SparkSession, source: str, rejected_whole: list[tuple[LandingFile, str]], lineage: RunLineage
) -> DataFrame:
    """QUARANTINE rows of files rejected before reading: no raw text, one row per file."""
    rows = [
        (source, f.name, None, reason, f.arrival_date, lineage.ingested_at, lineage.run_id)
        for f, reason in rejected_whole
    ]
    return spark.createDataFrame(rows, QUARANTINE)


_COUNT_PARTS = "_source_file string, _arrival_date date, records long, accepted long, quarantined long"


def _file_counts(
    spark: SparkSession,
    source: str,
    files: list[LandingFile],
    rejected_whole: list[tuple[LandingFile, str]],
    raw: DataFrame | None,
    classified: DataFrame | None,
) -> DataFrame:
    """One row per listed file (common.FILE_COUNTS).

    A union of partial counts, then one aggregate by file: a file the reader
    named differently from the listing would show up as an extra row, not vanish.
    """
    rejected = {f.name for f, _ in rejected_whole}
    parts = [spark.createDataFrame(
        [(f.name, f.arrival_date, int(f.name in rejected), 0, int(f.name in rejected)) for f in files], _COUNT_PARTS
    )]
    if raw is not None and classified is not None:
        zero = F.lit(0).cast("long")
        parts.append(records_per_file(source, raw, classified).select(
            "_source_file", "_arrival_date", "records", zero, zero
        ))
        is_accepted = F.col(REASON).isNull()
        parts.append(classified.groupBy("_source_file", "_arrival_date").agg(
            zero.alias("records"),
            F.sum(F.when(is_accepted, 1).otherwise(0)).cast("long").alias("accepted"),
            F.sum(F.when(is_accepted, 0).otherwise(1)).cast("long").alias("quarantined"),
        ))
    union = parts[0]
    for part in parts[1:]:
        union = union.unionAll(part.toDF(*union.columns))
    return union.groupBy("_source_file").agg(
        F.max("_arrival_date").alias("_arrival_date"),
        F.sum("records").alias("records"),
        F.sum("accepted").alias("accepted"),
        F.sum("quarantined").alias("quarantined"),
    ).select(
        F.lit(source).alias("source"),
        "_source_file",
        "_arrival_date",
        F.col("records").cast("long"),
        F.col("accepted").cast("long"),
        F.col("quarantined").cast("long"),
    )


def ingest_source(
    spark: SparkSession,
    settings: Settings,
    landing: str | os.PathLike,
    source: str,
    arrival_dates: list[date],
    run_id: str,
    ingested_at: datetime,
) -> IngestResult:
    """Read and classify one source's landing files for these arrival dates.

    The three frames share one parse, persisted (memory, then disk) on first
    use; ``release()`` drops it. A naive ``ingested_at`` is taken as UTC.
    """
    _check_source(source)
    storage = Storage(spark)
    files = landing_files(landing, source, arrival_dates, storage)
    lineage = RunLineage(run_id, ingested_at)
    if not files:
        return IngestResult(_empty(spark, BRONZE[source]), _empty(spark, QUARANTINE), _empty(spark, FILE_COUNTS))

    rejected_whole = [(f, problem) for f in files if (problem := whole_file_problem(f, source, storage))]
    if rejected_whole:
        log.warning(
            "%s: %d file(s) quarantined whole: %s",
            source, len(rejected_whole), "; ".join(f"{f.path}: {p}" for f, p in rejected_whole),
        )
    rejected_names = {f.name for f, _ in rejected_whole}
    readable = [f for f in files if f.name not in rejected_names]
    whole_file_rows = _whole_file_quarantine(spark, source, rejected_whole, lineage)
    if not readable:
        counts = _file_counts(spark, source, files, rejected_whole, None, None)
        return IngestResult(_empty(spark, BRONZE[source]), whole_file_rows, counts)

    rules = IngestRules.from_settings(settings)
    raw = read_files(spark, readable) if source in FILE_SOURCES else read_lines(spark, readable)
    classified = raw.transform(classify(source, rules, lineage)).persist(StorageLevel.MEMORY_AND_DISK)
    accepted = accepted_records(classified, source)
    quarantined = quarantined_records(classified, source)
    if rejected_whole:
        quarantined = whole_file_rows.unionByName(quarantined)
    counts = _file_counts(spark, source, files, rejected_whole, raw, classified)
    return IngestResult(accepted, quarantined, counts, (classified,))
