"""SQL over the lakehouse's tables for the interactive commands (reports, segment exports), without Spark.

A report reads a few thousand rows of gold; starting a JVM for that costs 15 seconds. Here delta-rs reads
the Delta log (which files make up the table's current version) and hands those Parquet files to DuckDB as
an Arrow dataset, so a query reads only the columns and row groups it needs, streaming, out of core.

The same SQL runs on Spark when a table is past `reports.spark_above_rows` rows (counted from the Delta
log's add actions, no data read), or when a table uses a feature delta-rs cannot read (deletion vectors).
So the queries keep to the SQL both engines speak; the one construct they spell differently — turning a
map column into rows — is a method of the engine (`map_rows`).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from atende.conf.settings import Settings
from atende.lakehouse.locations import DELTA_RS_UNREADABLE, is_storage_uri
from atende.lakehouse.storage import ArrowAccess, NoArrowRoute, Storage, arrow_access, join, location

log = logging.getLogger(__name__)


class QueryEngine(Protocol):
    name: str

    def sql(self, text: str) -> pd.DataFrame:
        """The query's result, collected to the driver (callers ask for small results)."""

    def map_rows(self, column: str, key: str, value: str) -> str:
        """A select-list fragment giving one row per entry of the map `column`, as columns `key`, `value`."""

    def export(self, text: str, out: Path, fmt: str) -> int:
        """The query's rows to one CSV (header, UTF-8) or Parquet file at `out`; returns the row count."""

    def instant(self, value: dt.datetime) -> str:
        """A SQL literal of an instant (a UTC moment) that compares with the tables' timestamp columns."""


class DuckDbEngine:
    """delta-rs lists each table's files; DuckDB queries them as Arrow datasets (views named as given)."""

    name = "duckdb"

    def __init__(self, tables: Mapping[str, Any], access: ArrowAccess | None = None):
        """Views over Delta tables (deltalake.DeltaTable, their files reached through `access` when the
        lakehouse is remote) or over Arrow tables already in memory (tests)."""
        import duckdb

        self.con = duckdb.connect()
        for view, source in tables.items():
            self.con.register(view, source if isinstance(source, pa.Table) else delta_dataset(source, access))

    def sql(self, text: str) -> pd.DataFrame:
        return self.con.sql(text).to_arrow_table().to_pandas()

    def map_rows(self, column: str, key: str, value: str) -> str:
        return f"unnest(map_keys({column})) AS {key}, unnest(map_values({column})) AS {value}"

    def instant(self, value: dt.datetime) -> str:
        return f"TIMESTAMPTZ '{_utc(value):%Y-%m-%d %H:%M:%S.%f}+00'"

    def export(self, text: str, out: Path, fmt: str) -> int:
        written = []

        def write(staging: Path) -> None:
            options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT parquet"
            # COPY answers with the number of rows it wrote
            result = self.con.execute(f"COPY ({text}) TO '{_sql_string(str(staging))}' ({options})").fetchone()
            written.append(int(result[0]) if result else 0)

        _write_atomically(out, write)
        return written[0]

    def close(self) -> None:
        self.con.close()


class SparkEngine:
    """The same queries on Spark, over temporary views of the tables (for tables past the size threshold)."""

    name = "spark"

    def __init__(self, lake: Any, tables: Mapping[str, tuple[str, str]]):
        self.spark = lake.spark
        for view, (layer, table) in tables.items():
            lake.read(layer, table).createOrReplaceTempView(view)

    def sql(self, text: str) -> pd.DataFrame:
        return self.spark.sql(text).toPandas()

    def map_rows(self, column: str, key: str, value: str) -> str:
        return f"explode({column}) AS ({key}, {value})"

    def instant(self, value: dt.datetime) -> str:
        return f"TIMESTAMP '{_utc(value):%Y-%m-%d %H:%M:%S.%f}+00:00'"

    def export(self, text: str, out: Path, fmt: str) -> int:
        from atende.jobs.segments import write_export

        return write_export(self.spark.sql(text), out, fmt)


def delta_dataset(table: Any, access: ArrowAccess | None = None) -> Any:
    """The current version of a local Delta table as an Arrow dataset: the files its log lists, read with
    the table's schema, partition values from the Hive-style folder names.

    Not `DeltaTable.to_pyarrow_dataset()`: deltalake 1.6 turns the statistics a file lacks (Delta writes no
    min/max for booleans) into a fragment guarantee `column >= null`, which prunes every file, so a filter
    `marketing_consent = TRUE` returned no rows at all on the demo lakehouse."""
    import pyarrow.dataset as ds

    schema = pa.schema(table.schema().to_arrow())
    partition_columns = list(table.metadata().partition_columns)
    partitioning = None
    if partition_columns:
        partitioning = ds.partitioning(pa.schema([schema.field(c) for c in partition_columns]), flavor="hive")
    if access is None or access.filesystem is None:
        return ds.dataset(table.file_uris(), schema=schema, format="parquet", partitioning=partitioning,
                          partition_base_dir=_local(table.table_uri) if partitioning else None)
    return ds.dataset([access.arrow_path(u) for u in table.file_uris()], schema=schema, format="parquet",
                      partitioning=partitioning, filesystem=access.filesystem,
                      partition_base_dir=access.arrow_path(table.table_uri.rstrip("/")) if partitioning else None)


def _utc(value: dt.datetime) -> dt.datetime:
    """An aware datetime in UTC; a naive one is taken as UTC already."""
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _local(uri: str) -> str:
    """A file:// table URI as the plain path `file_uris()` lists its files under."""
    return uri.removeprefix("file://").rstrip("/")


def _sql_string(text: str) -> str:
    return text.replace("'", "''")


def _write_atomically(out: Path, write) -> None:
    """`write(staging)` writes a temporary sibling of `out`, which then replaces `out` in one rename:
    a failed export leaves no half file behind."""
    out = Path(out).resolve()
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a directory; give a file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        write(staging)
        os.replace(staging, out)
    finally:
        staging.unlink(missing_ok=True)


def table_rows(table: Any) -> int | None:
    """Rows of a Delta table's current version from its log's statistics; None when a file has none."""
    actions = pa.table(table.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    if "num_records" not in actions.column_names or actions["num_records"].null_count:
        return None
    return int(pc.sum(actions["num_records"]).as_py() or 0)


def _readable_by_delta_rs(table: Any) -> bool:
    """Whether reading the log's file list with the table's schema gives the table's rows: reader
    version 1, or 3 with no reader feature but timestampNtz; no column mapping (files would carry
    physical column names, and every column would read as null); no deletion vectors."""
    protocol = table.protocol()
    features = set(protocol.reader_features or ())
    if protocol.min_reader_version > 3 or features & DELTA_RS_UNREADABLE or features - {"timestampNtz"}:
        return False
    return table.metadata().configuration.get("delta.columnMapping.mode", "none") == "none"


def table_uri(root: str, layer: str, table: str) -> str:
    return join(root, layer, table)


def lakehouse_root(path: str | os.PathLike) -> str:
    """The lakehouse as delta-rs addresses it: an absolute local folder, or the URI as given."""
    root = location(path)
    if not is_storage_uri(root):
        found = Storage().stat(root)
        if found is None or not found.is_dir:
            raise FileNotFoundError(f"lakehouse not found: {root}")
    return root


@contextlib.contextmanager
def open_tables(settings: Settings, lakehouse: str | os.PathLike, tables: Mapping[str, tuple[str, str]],
                start_spark: Callable[[str], Any] | None = None, spark: Any = None) -> Iterator[QueryEngine]:
    """An engine with a view per table (view name -> (layer, table)). DuckDB unless a table is past
    `reports.spark_above_rows` rows or needs Spark to be read; then Spark: the session given as `spark`
    (left running), else one started by `start_spark(root)` (the CLI's factory) and stopped on leaving."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    root = lakehouse_root(lakehouse)
    try:
        access: ArrowAccess | None = arrow_access(root, settings.spark.conf)
    except NoArrowRoute:
        access = None  # a store only Spark is pointed at: read the tables with Spark
    opened: dict[str, Any] = {}
    unreachable = None
    if access is not None:
        for view, (layer, table) in tables.items():
            # each log read once; opened rather than probed: `DeltaTable.is_deltatable` hung on an S3-compatible
            # server (deltalake 1.6.6 against moto) where opening the table answered in milliseconds
            try:
                opened[view] = DeltaTable(table_uri(access.uri, layer, table),
                                          storage_options=access.storage_options or None)
            except TableNotFoundError:
                raise FileNotFoundError(f"no {layer}/{table} table in {root}: run `atende run` first") from None
            except Exception as exc:
                if access.filesystem is None:
                    raise
                # a store the deltalake package cannot reach with the settings it was given (credentials
                # from a provider class of S3A's, a per-bucket setting): Spark has the connector's own reach
                unreachable = f"the deltalake package could not open {layer}/{table} ({str(exc).splitlines()[0]})"
                opened, access = {}, None
                break
    limit = settings.reports.spark_above_rows
    sizes = {view: table_rows(table) for view, table in opened.items()}
    big = [view for view, rows in sizes.items() if rows is not None and rows > limit]
    unreadable = [view for view, table in opened.items() if not _readable_by_delta_rs(table)]
    if access is not None and not big and not unreadable:
        engine = DuckDbEngine(opened, access)
        try:
            yield engine
        finally:
            engine.close()
        return
    reason = (f"{', '.join(big)} past reports.spark_above_rows ({limit:,} rows)" if big
              else f"{', '.join(unreadable)} uses a Delta feature this reader does not follow "
                   "(deletion vectors, column mapping)" if unreadable
              else unreachable or f"the lakehouse {root} is on a store only Spark's connectors reach here")
    log.info("reading with Spark: %s", reason)
    from atende.lakehouse.tables import Lakehouse

    if spark is not None:
        yield SparkEngine(Lakehouse(spark, root, settings.storage), tables)
        return
    if start_spark is None:
        from atende.lakehouse.spark import build_spark_session

        started = build_spark_session(settings)
    else:
        started = start_spark(root)
    try:
        yield SparkEngine(Lakehouse(started, root, settings.storage), tables)
    finally:
        started.stop()
