"""All table reads and writes go through here: Delta Lake with two engines.

* ``delta-spark``: the Delta connector inside Spark, used when its classes are on
  the running JVM's classpath (Databricks, EMR, a cluster started with
  ``io.delta:delta-spark``).
* ``delta-rs``: the ``deltalake`` package, used otherwise. Spark's executors
  write the Parquet files (in parallel, Spark's native writer) into a staging
  folder inside the table; the driver moves them into the table's Hive-style
  layout and commits them to the Delta log in one atomic transaction with
  delta-rs. Files of a write that crashes before its commit are in no commit,
  so no reader sees them; ``vacuum`` removes them.

Both engines write standard Delta tables; a table written by one opens in the other.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import ArrayType, MapType, StringType, StructField, StructType

from atende.conf.settings import StorageSettings
from atende.lakehouse.locations import DELTA_RS_UNREADABLE as _DELTA_RS_UNREADABLE
from atende.lakehouse.locations import is_storage_uri
from atende.lakehouse.spark import delta_spark_available
from atende.lakehouse.storage import ArrowAccess, Storage, StorageError, arrow_access, join, location
from atende.pipelines.schemas import stats_properties

log = logging.getLogger(__name__)

WriteMode = Literal["append", "overwrite"]
STAGING_DIR = "_staging"


class LakehouseError(RuntimeError):
    """A table operation that cannot be done; the message says why."""


class ConcurrentWriteError(LakehouseError):
    """Another writer committed first and retrying did not resolve the conflict."""


@dataclass(frozen=True)
class CommitInfo:
    table: str
    version: int
    operation: str
    files_added: int
    files_removed: int
    rows_written: int


# --------------------------------------------------------------------- schema helpers

def _nullable(dtype):
    """The same type with every nested field nullable (Delta tables here are all-nullable)."""
    if isinstance(dtype, StructType):
        return StructType([StructField(f.name, _nullable(f.dataType), True) for f in dtype.fields])
    if isinstance(dtype, ArrayType):
        return ArrayType(_nullable(dtype.elementType), True)
    if isinstance(dtype, MapType):
        return MapType(_nullable(dtype.keyType), _nullable(dtype.valueType), True)
    return dtype


def nullable_schema(schema: StructType) -> StructType:
    return _nullable(schema)


def spark_to_arrow_schema(schema: StructType) -> pa.Schema:
    return to_arrow_schema(nullable_schema(schema), timezone="UTC")


def arrow_to_spark_schema(schema: pa.Schema) -> StructType:
    return nullable_schema(from_arrow_schema(schema, prefer_timestamp_ntz=False))


def _same_columns(a: StructType, b: StructType) -> bool:
    """Same names and types, in any order (frames are re-ordered to the table's columns)."""
    def columns(s: StructType) -> dict[str, str]:
        return {f.name: f.dataType.simpleString() for f in nullable_schema(s).fields}

    return len(a.fields) == len(b.fields) and columns(a) == columns(b)


def _schema_difference(table: StructType, frame: StructType) -> str:
    t = {f.name: f.dataType.simpleString() for f in table.fields}
    d = {f.name: f.dataType.simpleString() for f in frame.fields}
    parts = []
    missing = [n for n in t if n not in d]
    extra = [n for n in d if n not in t]
    changed = [f"{n} ({t[n]} -> {d[n]})" for n in t if n in d and t[n] != d[n]]
    if missing:
        parts.append("missing " + ", ".join(missing))
    if extra:
        parts.append("unexpected " + ", ".join(extra))
    if changed:
        parts.append("changed " + ", ".join(changed))
    if not parts:
        parts.append("column order differs")
    return "; ".join(parts)


def _partition_value_to_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------- Parquet file stats

_STAT_TYPES = (pa.types.is_integer, pa.types.is_date, pa.types.is_floating)


def _file_stats(path: Path, data_columns: Sequence[str]) -> str:
    """numRecords, nullCount and exact min/max (integers, floats, dates) from the Parquet footer."""
    meta = pq.ParquetFile(path).metadata
    arrow_schema = pq.read_schema(path)
    stats: dict[str, Any] = {"numRecords": meta.num_rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for index in range(meta.num_columns):
        column = meta.schema.column(index)
        name = column.path
        if name not in data_columns or "." in name:
            continue
        field_type = arrow_schema.field(name).type
        nulls, lo, hi, complete = 0, None, None, True
        for rg in range(meta.num_row_groups):
            st = meta.row_group(rg).column(index).statistics
            if st is None or not st.has_null_count:
                complete = False
                break
            nulls += st.null_count
            if st.has_min_max:
                lo = st.min if lo is None else min(lo, st.min)
                hi = st.max if hi is None else max(hi, st.max)
        if not complete:
            continue
        stats["nullCount"][name] = nulls
        if lo is not None and any(check(field_type) for check in _STAT_TYPES):
            if pa.types.is_date(field_type):
                lo, hi = str(lo), str(hi)
            stats["minValues"][name] = lo
            stats["maxValues"][name] = hi
    return json.dumps(stats, default=str)


# --------------------------------------------------------------------- engines

class DeltaRsEngine:
    """Spark writes Parquet in parallel; the driver commits with delta-rs."""

    name = "delta-rs"

    def __init__(self, spark: SparkSession, settings: StorageSettings):
        self.spark = spark
        self.settings = settings
        # called with the table path after the files are in place and before the commit;
        # tests use it to kill a writer or let another one win the race
        self.before_commit: Callable[[str], None] | None = None

    # -- reading -------------------------------------------------------
    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)

    def _table(self, path: str, version: int | None = None):
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            table = DeltaTable(path, version=version)
        except TableNotFoundError as exc:
            raise LakehouseError(f"no Delta table at {path}") from exc
        except Exception as exc:  # delta-rs raises DeltaError for a version that does not exist
            if version is not None:
                raise LakehouseError(f"table {path} has no version {version}: {exc}") from exc
            raise
        unreadable = set(table.protocol().reader_features or ()) & _DELTA_RS_UNREADABLE
        if unreadable:
            # listing its files would show rows a DELETE removed: refuse rather than answer wrongly
            raise LakehouseError(
                f"table {path} uses {', '.join(sorted(unreadable))}, which the delta-rs engine cannot read; "
                "use storage.engine delta-spark"
            )
        return table

    def spark_schema(self, path: str, version: int | None = None) -> StructType:
        dt = self._table(path, version)
        return arrow_to_spark_schema(pa.schema(dt.schema().to_arrow()))

    def read(self, path: str, version: int | None = None) -> DataFrame:
        dt = self._table(path, version)
        schema = arrow_to_spark_schema(pa.schema(dt.schema().to_arrow()))
        files = dt.file_uris()
        if not files:
            return self.spark.createDataFrame([], schema)
        # basePath makes Spark read partition columns from the Hive-style folders; the explicit schema
        # stops it from guessing their types. The base is spelt as delta-rs spells the files (a table
        # reached through a symlink is listed by its resolved path)
        frame = (
            self.spark.read.schema(schema)
            .option("basePath", location(dt.table_uri))
            .parquet(*files)
        )
        return frame.select(*[F.col(f"`{f.name}`") for f in schema.fields])

    def version(self, path: str) -> int | None:
        return self._table(path).version() if self.exists(path) else None

    def partition_columns(self, path: str) -> list[str]:
        return list(self._table(path).metadata().partition_columns)

    def add_columns(self, path: str, fields: Sequence[StructField]) -> None:
        """New nullable columns at the end of the table's schema (a metadata-only commit)."""
        from deltalake import Schema as DeltaSchema

        new = DeltaSchema.from_arrow(spark_to_arrow_schema(StructType(list(fields)))).fields
        self._retry_on_conflict(path, "add columns to", lambda: self._table(path).alter.add_columns(new))

    def history(self, path: str) -> list[dict[str, Any]]:
        return self._table(path).history()

    # -- writing -------------------------------------------------------
    def _write_files(
        self, df: DataFrame, path: str, partition_by: Sequence[str], properties: dict[str, str] | None = None
    ) -> tuple[list[Any], int, str]:
        """Executors write Parquet into a staging folder; move the files into the table layout."""
        from deltalake.transaction import AddAction

        storage = Storage(self.spark)
        staging = join(path, STAGING_DIR, uuid.uuid4().hex)
        writer = df.write.mode("errorifexists").option("compression", "snappy")
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        writer.parquet(staging)
        data_columns = [c for c in df.columns if c not in partition_by]
        config = properties or {}
        if "delta.dataSkippingStatsColumns" in config:  # the table keeps statistics of these columns only
            listed = {c.strip() for c in config["delta.dataSkippingStatsColumns"].split(",")}
            data_columns = [c for c in data_columns if c in listed]
        elif config.get("delta.dataSkippingNumIndexedCols") == "0":
            data_columns = []
        actions, rows = [], 0
        for file in storage.files(staging):
            if not file.name.endswith(".parquet"):
                continue  # _SUCCESS, checksums
            rel = storage.relative(file.path, staging)
            partition_values: dict[str, str | None] = {}
            for part in rel.split("/")[:-1]:
                key, _, raw = part.partition("=")
                partition_values[key] = _partition_value_to_str(
                    None if raw == "__HIVE_DEFAULT_PARTITION__" else _unescape(raw)
                )
            stats = _file_stats(Path(file.path), data_columns)
            target = join(path, rel)
            storage.move(file.path, target)
            moved = storage.stat(target)
            rows += json.loads(stats)["numRecords"]
            actions.append(
                AddAction(
                    path=rel,
                    size=file.size,
                    partition_values=partition_values,
                    modification_time=moved.mtime_ms if moved is not None else file.mtime_ms,
                    data_change=True,
                    stats=stats,
                )
            )
        return actions, rows, staging

    def _commit(
        self,
        path: str,
        schema: StructType,
        partition_by: Sequence[str],
        plan: Callable[[Any], tuple[list[Any], int]],
        operation: str,
    ) -> tuple[int, int]:
        """Run plan(snapshot) -> (actions, files removed) and commit them, retrying on conflict."""
        from deltalake import CommitProperties

        def attempt() -> tuple[int, int]:
            dt = self._table(path)
            actions, removed = plan(dt)
            if self.before_commit is not None:
                self.before_commit(path)
            dt.create_write_transaction(
                actions,
                mode="append",
                schema=spark_to_arrow_schema(schema),
                partition_by=list(partition_by) or None,
                commit_properties=CommitProperties(custom_metadata={"atende.operation": operation}),
            )
            return self._table(path).version(), removed

        return self._retry_on_conflict(path, "commit to", attempt)

    def _retry_on_conflict(self, path: str, what: str, attempt: Callable[[], Any]) -> Any:
        """Run attempt() until it is not beaten by a concurrent commit; each try starts from a fresh snapshot."""
        from deltalake.exceptions import CommitFailedError

        return _retry_on_conflict(self.settings, path, what, attempt, CommitFailedError)

    def write(
        self,
        df: DataFrame,
        path: str,
        mode: WriteMode,
        partition_by: Sequence[str] = (),
        replace_where: str | None = None,
        properties: dict[str, str] | None = None,
    ) -> CommitInfo:
        from deltalake import Schema as DeltaSchema
        from deltalake.transaction import RemoveAction, create_table_with_add_actions

        if replace_where is not None and mode != "overwrite":
            raise LakehouseError("replace_where applies to mode='overwrite' only")
        schema = nullable_schema(df.schema)
        exists = self.exists(path)
        if exists:
            df = _conform(self, df, path, partition_by)
            partition_by = self.partition_columns(path)
        Storage(self.spark).makedirs(path)
        config = dict(self._table(path).metadata().configuration) if exists else properties
        adds, rows, staging = self._write_files(df, path, partition_by, config)
        try:
            if not exists:
                if replace_where is not None:
                    log.info("table %s does not exist yet; replace_where has nothing to replace", path)
                if self.before_commit is not None:
                    self.before_commit(path)
                try:
                    create_table_with_add_actions(
                        path,
                        DeltaSchema.from_arrow(spark_to_arrow_schema(schema)),
                        adds,
                        mode="error",
                        partition_by=list(partition_by) or None,
                        configuration=_delta_rs_properties(properties) or None,
                    )
                    return CommitInfo(path, 0, "create", len(adds), 0, rows)
                except Exception:
                    if not self.exists(path):
                        raise
                    # another writer created the table first: commit on top of it instead
                    table_schema = self.spark_schema(path)
                    if not _same_columns(table_schema, schema):
                        raise
                    log.warning("table %s was created by a concurrent writer; committing on top", path)

            now_ms = int(time.time() * 1000)

            def plan(dt) -> tuple[list[Any], int]:
                if mode == "append":
                    return list(adds), 0
                if replace_where is None:
                    victims = self._all_files(dt)
                    rewritten: list[Any] = []
                else:
                    victims, rewritten = self._replace_plan(dt, path, schema, partition_by, replace_where)
                removes = [
                    RemoveAction(
                        path=v["path"],
                        data_change=True,
                        deletion_timestamp=now_ms,
                        size=v["size"],
                        partition_values=v["partition_values"],
                    )
                    for v in victims
                ]
                return list(adds) + rewritten + removes, len(removes)

            version, removed = self._commit(path, schema, partition_by, plan, mode if replace_where is None else "replace_where")
            return CommitInfo(path, version, mode, len(adds), removed, rows)
        finally:
            # on failure the moved files are in no commit: no reader sees them, vacuum removes them
            Storage(self.spark).remove(staging)

    @staticmethod
    def _all_files(dt) -> list[dict[str, Any]]:
        actions = pa.table(dt.get_add_actions(flatten=False))
        out = []
        parts_col = actions.column("partition").to_pylist() if "partition" in actions.column_names else None
        for i, (p, size) in enumerate(zip(actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist())):
            partition_values = {}
            if parts_col is not None and parts_col[i]:
                partition_values = {k: _partition_value_to_str(v) for k, v in parts_col[i].items()}
            out.append({"path": p, "size": size, "partition_values": partition_values})
        return out

    def _replace_plan(
        self, dt, path: str, schema: StructType, partition_by: Sequence[str], predicate: str
    ) -> tuple[list[dict[str, Any]], list[Any]]:
        """Files whose rows all match the predicate are dropped; files with some matching rows are rewritten."""
        files = self._all_files(dt)
        if not files:
            return [], []
        by_path = {f["path"]: f for f in files}
        part_fields = [f for f in schema.fields if f.name in partition_by]
        if part_fields and _names_in(predicate) <= {p.name for p in part_fields}:
            # A predicate over partition columns only is decided per file from its partition values.
            rows = [tuple([f["path"]] + [f["partition_values"].get(p.name) for p in part_fields]) for f in files]
            frame = self.spark.createDataFrame(
                rows, StructType([StructField("_path", StringType(), True)] + [StructField(p.name, StringType(), True) for p in part_fields])
            ).select("_path", *[F.col(p.name).cast(p.dataType).alias(p.name) for p in part_fields])
            try:
                matched = frame.where(F.coalesce(F.expr(predicate), F.lit(False))).select("_path").collect()
            except Exception as exc:
                raise LakehouseError(f"bad replace_where predicate {predicate!r}: {exc}") from exc
            return [by_path[r["_path"]] for r in matched], []
        table_frame = self.read(path).withColumn("_file", F.input_file_name())
        try:
            touched = {
                r["_file"] for r in table_frame.where(F.coalesce(F.expr(predicate), F.lit(False))).select("_file").distinct().collect()
            }
        except Exception as exc:
            raise LakehouseError(f"bad replace_where predicate {predicate!r}: {exc}") from exc
        storage = Storage(self.spark)
        victims = []
        for uri in touched:
            # delta-rs lists (and Spark then reports) a table reached through a symlink by its resolved path
            victims.append(by_path[_unescape_path(storage.relative(uri, path), by_path)])
        if not victims:
            return [], []
        keep = (
            table_frame.where(F.col("_file").isin(list(touched)))
            .where(~F.coalesce(F.expr(predicate), F.lit(False)))
            .drop("_file")
        )
        rewritten, _, staging = self._write_files(keep, path, partition_by,
                                                  dict(self._table(path).metadata().configuration))
        Storage(self.spark).remove(staging)
        return victims, rewritten

    def upsert(
        self, df: DataFrame, path: str, keys: Sequence[str], partition_by: Sequence[str] = (),
        properties: dict[str, str] | None = None, remove: DataFrame | None = None,
    ) -> CommitInfo:
        _check_upsert_source(df, path, keys)
        if not self.exists(path):
            return self.write(df, path, "overwrite", partition_by, properties=properties)
        conformed = _conform(self, df, path, ())
        source_df = _with_removals(conformed, keys, remove)
        source = source_df.toArrow().cast(spark_to_arrow_schema(nullable_schema(source_df.schema)))
        predicate = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        columns = {c: f"s.`{c}`" for c in conformed.columns}

        def attempt() -> CommitInfo:
            metrics = (
                self._table(path)
                .merge(source=source, predicate=predicate, source_alias="s", target_alias="t")
                .when_matched_delete(predicate=f"s.`{_REMOVE}` = true")
                .when_matched_update(updates=columns)
                .when_not_matched_insert(updates=columns, predicate=f"s.`{_REMOVE}` = false")
                .execute()
            )
            return CommitInfo(
                path,
                self._table(path).version(),
                "upsert",
                int(metrics.get("num_target_files_added", 0)),
                int(metrics.get("num_target_files_removed", 0)),
                int(metrics.get("num_target_rows_inserted", 0)) + int(metrics.get("num_target_rows_updated", 0)),
            )

        return self._retry_on_conflict(path, "upsert into", attempt)

    def changes(self, path: str, since_version: int) -> DataFrame:
        table = self._table(path)
        try:
            batches = pa.RecordBatchReader.from_stream(table.load_cdf(starting_version=since_version)).read_all()
        except Exception as exc:
            raise LakehouseError(f"no change feed for {path} from version {since_version}: {exc}") from exc
        schema = arrow_to_spark_schema(pa.schema(table.schema().to_arrow()))
        meta = StructType([StructField("_change_type", StringType(), True)]).add("_commit_version", "long").add(
            "_commit_timestamp", "timestamp")
        full = StructType(schema.fields + meta.fields)
        if batches.num_rows == 0:
            return self.spark.createDataFrame([], full)
        # delta-rs hands out string_view / large types that Spark's Arrow conversion does not take: cast to the table's
        frame = self.spark.createDataFrame(batches.select(full.fieldNames()).cast(spark_to_arrow_schema(full)))
        return frame.select(*[F.col(f"`{f.name}`").cast(f.dataType).alias(f.name) for f in full.fields])

    def delete(self, path: str, predicate: str) -> CommitInfo:
        def attempt() -> CommitInfo:
            try:
                metrics = self._table(path).delete(predicate)
            except Exception as exc:
                from deltalake.exceptions import CommitFailedError

                if isinstance(exc, CommitFailedError):
                    raise
                raise LakehouseError(f"bad delete predicate {predicate!r} for {path}: {exc}") from exc
            return CommitInfo(path, self._table(path).version(), "delete", int(metrics.get("num_added_files", 0)),
                              int(metrics.get("num_removed_files", 0)), -int(metrics.get("num_deleted_rows", 0)))

        return self._retry_on_conflict(path, "delete from", attempt)

    def delete_matching(self, path: str, rows: DataFrame, columns: Sequence[str]) -> CommitInfo:
        """A MERGE ... WHEN MATCHED THEN DELETE against these rows (a small frame, collected): the commit
        records the join condition, not the values."""
        source = pa.Table.from_pandas(rows.select(*columns).distinct().toPandas(), preserve_index=False)
        condition = " AND ".join(f"t.{c} = s.{c}" for c in columns)

        def attempt() -> CommitInfo:
            metrics = (self._table(path).merge(source, predicate=condition, source_alias="s", target_alias="t")
                       .when_matched_delete().execute())
            return CommitInfo(path, self._table(path).version(), "delete", int(metrics.get("num_target_files_added", 0)),
                              int(metrics.get("num_target_files_removed", 0)),
                              -int(metrics.get("num_target_rows_deleted", 0)))

        return self._retry_on_conflict(path, "delete from", attempt)

    def purge(self, path: str) -> None:
        """delta-rs deletes by rewriting files (no deletion vectors): deleted rows are already out of the live files."""

    def optimize(self, path: str, zorder_by: Sequence[str] = ()) -> dict[str, int]:
        table = self._table(path)
        metrics = table.optimize.z_order(list(zorder_by)) if zorder_by else table.optimize.compact()
        return {"files_added": int(metrics.get("numFilesAdded", 0)), "files_removed": int(metrics.get("numFilesRemoved", 0))}

    def vacuum_many(self, paths: Sequence[str], retention_hours: int) -> list[int]:
        return [self.vacuum(path, retention_hours) for path in paths]

    def vacuum(self, path: str, retention_hours: int) -> int:
        dt = self._table(path)
        # full: also files of crashed writes that no commit names, not only tombstones
        removed = dt.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False, full=True)
        return len(removed) + len(_clear_stale_staging(path, retention_hours))



_SQL_WORDS = {
    "and", "or", "not", "in", "is", "null", "true", "false", "between", "like", "date",
    "timestamp", "interval", "case", "when", "then", "else", "end", "cast", "as",
}


def _names_in(predicate: str) -> set[str]:
    """Column names a simple SQL predicate mentions (literals, keywords and function names left out)."""
    text = re.sub(r"'(?:[^'\\]|\\.)*'", " ", predicate)
    names = set()
    for match in re.finditer(r"`([^`]+)`|([A-Za-z_][A-Za-z0-9_]*)(\s*\()?", text):
        if match.group(1):
            names.add(match.group(1))
        elif not match.group(3) and match.group(2).lower() not in _SQL_WORDS:
            names.add(match.group(2))
    return names


def _unescape(raw: str) -> str:
    return unquote(raw)


def _unescape_path(rel: str, known: dict[str, Any]) -> str:
    if rel in known:
        return rel
    for candidate in known:
        if unquote(candidate) == unquote(rel):
            return candidate
    raise LakehouseError(f"file {rel} is not in the table's current snapshot")


class DeltaSparkEngine:
    """The Delta Lake connector inside Spark (delta-spark): Spark's own reads, writes, MERGE, OPTIMIZE, VACUUM."""

    name = "delta-spark"
    _RETENTION_CHECK = "spark.databricks.delta.retentionDurationCheck.enabled"
    _VACUUM_LOGGING = "spark.databricks.delta.vacuum.logging.enabled"

    def __init__(self, spark: SparkSession, settings: StorageSettings):
        self.spark = spark
        self.settings = settings

    @staticmethod
    def _ident(path: str) -> str:
        return "delta.`" + path.replace("`", "``") + "`"

    def _table(self, path: str):
        from delta.tables import DeltaTable

        return DeltaTable.forPath(self.spark, path)

    # -- reading -------------------------------------------------------
    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, path)

    def read(self, path: str, version: int | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        try:
            return reader.load(path)
        except Exception as exc:
            if not self.exists(path):
                raise LakehouseError(f"no Delta table at {path}") from exc
            if version is not None:
                raise LakehouseError(f"table {path} has no version {version}: {str(exc).splitlines()[0]}") from exc
            raise

    def spark_schema(self, path: str, version: int | None = None) -> StructType:
        return nullable_schema(self.read(path, version).schema)

    def version(self, path: str) -> int | None:
        if not self.exists(path):
            return None
        return int(self._last_commit(path)["version"])

    def partition_columns(self, path: str) -> list[str]:
        return list(self.spark.sql(f"DESCRIBE DETAIL {self._ident(path)}").collect()[0]["partitionColumns"])

    def add_columns(self, path: str, fields: Sequence[StructField]) -> None:
        """New nullable columns at the end of the table's schema (a metadata-only commit)."""
        columns = ", ".join(f"`{f.name.replace('`', '``')}` {f.dataType.simpleString()}" for f in fields)
        self._retry_on_conflict(path, "add columns to",
                                lambda: self.spark.sql(f"ALTER TABLE {self._ident(path)} ADD COLUMNS ({columns})"))

    def properties(self, path: str) -> dict[str, str]:
        return dict(self.spark.sql(f"DESCRIBE DETAIL {self._ident(path)}").collect()[0]["properties"] or {})

    def history(self, path: str) -> list[dict[str, Any]]:
        return [r.asDict(recursive=True) for r in self._table(path).history().collect()]

    def _last_commit(self, path: str) -> dict[str, Any]:
        """The table's newest commit: its version, operation and metrics. A local table's log is read by the
        deltalake package (milliseconds for the tables a run writes, where Delta's `history(1)` is a Spark job,
        about a second, after every write); a remote table's, or one the package cannot open, by Delta's own
        history (same version and operationMetrics keys; checked on WRITE, MERGE and DELETE commits)."""
        if not is_storage_uri(path):
            from deltalake import DeltaTable as LogReader

            try:
                newest = LogReader(path).history(1)
                if newest and "version" in newest[0]:
                    return newest[0]
            except Exception:  # a log feature the package does not follow: Delta answers below
                log.info("deltalake could not read the log of %s; asking Delta (a Spark job)", path, exc_info=True)
        return self._table(path).history(1).collect()[0].asDict(recursive=True)

    # -- writing -------------------------------------------------------
    def _retry_on_conflict(self, path: str, what: str, attempt: Callable[[], Any]) -> Any:
        """Delta's optimistic concurrency: a commit beaten by a conflicting one is retried from a fresh snapshot."""
        from delta.exceptions import DeltaConcurrentModificationException

        return _retry_on_conflict(self.settings, path, what, attempt, DeltaConcurrentModificationException)

    def write(self, df, path, mode, partition_by=(), replace_where=None, properties=None) -> CommitInfo:
        if replace_where is not None and mode != "overwrite":
            raise LakehouseError("replace_where applies to mode='overwrite' only")
        exists = self.exists(path)
        # the partitioning of an existing table is checked by Delta itself (DESCRIBE DETAIL costs a second a call)
        df = _conform(self, df, path, ()) if exists else df
        writer = df.write.format("delta").mode(mode)
        if partition_by:
            writer = writer.partitionBy(*partition_by)
        if not exists:
            # delta.* options of the writer that creates a table become its properties
            for key, value in (properties or {}).items():
                writer = writer.option(key, value)
        if replace_where is not None and exists:
            writer = writer.option("replaceWhere", replace_where)
        elif mode == "overwrite":
            # the session's dynamic partition overwrite must not turn a full overwrite into a partial one
            writer = writer.option("partitionOverwriteMode", "static")

        def attempt() -> CommitInfo:
            try:
                writer.save(path)
            except Exception as exc:
                from delta.exceptions import DeltaConcurrentModificationException

                if isinstance(exc, DeltaConcurrentModificationException):
                    raise
                if "partition" in str(exc).lower() and "not match" in str(exc).lower():
                    raise LakehouseError(f"table {path} is partitioned differently than {list(partition_by)}: "
                                         f"{str(exc).splitlines()[0]}") from exc
                if replace_where is not None and not isinstance(exc, LakehouseError):
                    raise LakehouseError(
                        f"bad replace_where predicate {replace_where!r} for {path}: {str(exc).splitlines()[0]}"
                    ) from exc
                raise
            h = self._last_commit(path)
            metrics = h.get("operationMetrics") or {}
            operation = "create" if not exists else (mode if replace_where is None else "replace_where")
            return CommitInfo(path, int(h["version"]), operation, int(metrics.get("numFiles", 0)),
                              int(metrics.get("numRemovedFiles", 0)), int(metrics.get("numOutputRows", 0)))

        return self._retry_on_conflict(path, "commit to", attempt)

    def upsert(self, df, path, keys, partition_by=(), properties=None, remove=None) -> CommitInfo:
        _check_upsert_source(df, path, keys)
        if not self.exists(path):
            return self.write(df, path, "overwrite", partition_by, properties=properties)
        conformed = _conform(self, df, path, ())
        source = _with_removals(conformed, keys, remove)
        condition = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
        columns = {c: f"s.`{c}`" for c in conformed.columns}

        def attempt() -> CommitInfo:
            (self._table(path).alias("t").merge(source.alias("s"), condition)
             .whenMatchedDelete(condition=f"s.`{_REMOVE}`")
             .whenMatchedUpdate(set=columns)
             .whenNotMatchedInsert(condition=f"NOT s.`{_REMOVE}`", values=columns)
             .execute())
            h = self._last_commit(path)
            metrics = h.get("operationMetrics") or {}
            return CommitInfo(path, int(h["version"]), "upsert", int(metrics.get("numTargetFilesAdded", 0)),
                              int(metrics.get("numTargetFilesRemoved", 0)),
                              int(metrics.get("numTargetRowsInserted", 0)) + int(metrics.get("numTargetRowsUpdated", 0)))

        return self._retry_on_conflict(path, "upsert into", attempt)

    def changes(self, path: str, since_version: int) -> DataFrame:
        try:
            return (self.spark.read.format("delta").option("readChangeFeed", "true")
                    .option("startingVersion", since_version).load(path))
        except Exception as exc:
            raise LakehouseError(f"no change feed for {path} from version {since_version}: {str(exc).splitlines()[0]}") from exc

    def delete(self, path: str, predicate: str) -> CommitInfo:
        """Rows matching the predicate leave the table's current version (deletion vectors where enabled)."""
        def attempt() -> CommitInfo:
            try:
                self._table(path).delete(predicate)
            except Exception as exc:
                from delta.exceptions import DeltaConcurrentModificationException

                if isinstance(exc, DeltaConcurrentModificationException):
                    raise
                raise LakehouseError(f"bad delete predicate {predicate!r} for {path}: {str(exc).splitlines()[0]}") from exc
            h = self._last_commit(path)
            metrics = h.get("operationMetrics") or {}
            return CommitInfo(path, int(h["version"]), "delete", int(metrics.get("numAddedFiles", 0)),
                              int(metrics.get("numRemovedFiles", 0)), -int(metrics.get("numDeletedRows", 0)))

        return self._retry_on_conflict(path, "delete from", attempt)

    def delete_matching(self, path: str, rows: DataFrame, columns: Sequence[str]) -> CommitInfo:
        """A MERGE ... WHEN MATCHED THEN DELETE against these rows: the commit records the join condition,
        not the values (a DELETE's predicate would keep them in the log)."""
        condition = " AND ".join(f"t.`{c}` = s.`{c}`" for c in columns)
        source = rows.select(*columns).distinct()

        def attempt() -> CommitInfo:
            self._table(path).alias("t").merge(source.alias("s"), condition).whenMatchedDelete().execute()
            h = self._last_commit(path)
            metrics = h.get("operationMetrics") or {}
            deleted = int(metrics.get("numTargetRowsDeleted", 0)) if h.get("operation") == "MERGE" else 0
            return CommitInfo(path, int(h["version"]), "delete", int(metrics.get("numTargetFilesAdded", 0)),
                              int(metrics.get("numTargetFilesRemoved", 0)), -deleted)

        return self._retry_on_conflict(path, "delete from", attempt)

    def purge(self, path: str) -> None:
        """Rewrite files carrying deletion vectors so deleted rows leave the data files (then vacuum removes the old)."""
        self.spark.sql(f"REORG TABLE {self._ident(path)} APPLY (PURGE)").collect()

    def optimize(self, path: str, zorder_by: Sequence[str] = ()) -> dict[str, int]:
        table = self._table(path)
        builder = table.optimize()
        result = builder.executeZOrderBy(*zorder_by) if zorder_by else builder.executeCompaction()
        metrics = result.collect()[0]["metrics"].asDict(recursive=True)
        return {"files_added": int(metrics.get("numFilesAdded", 0)), "files_removed": int(metrics.get("numFilesRemoved", 0))}

    def vacuum(self, path: str, retention_hours: int) -> int:
        return self.vacuum_many([path], retention_hours)[0]

    def vacuum_many(self, paths: Sequence[str], retention_hours: int) -> list[int]:
        """VACUUM each table, a few at once (each is mostly a listing and the driver's planning); returns the
        files deleted per table. The session settings a vacuum needs are set once around them all."""
        # the retention check refuses less than a week; logging records VACUUM START/END commits with the
        # count of deleted files (off by default on some stores, S3 among them)
        wanted = {self._RETENTION_CHECK: "true" if retention_hours >= 168 else "false", self._VACUUM_LOGGING: "true"}
        previous = {key: self.spark.conf.get(key, None) for key in wanted}
        for key, value in wanted.items():
            self.spark.conf.set(key, value)

        def one(path: str) -> int:
            self.spark.sql(f"VACUUM {self._ident(path)} RETAIN {retention_hours} HOURS").collect()
            last = self._last_commit(path)
            metrics = last.get("operationMetrics") or {}
            deleted = int(metrics.get("numDeletedFiles", 0)) if last["operation"] == "VACUUM END" else 0
            return deleted + len(_clear_stale_staging(path, retention_hours))

        try:
            with ThreadPoolExecutor(max_workers=min(4, len(paths)) or 1, thread_name_prefix="atende-vacuum") as pool:
                return list(pool.map(one, paths))
        finally:
            for key, old in previous.items():
                if old is None:
                    self.spark.conf.unset(key)
                else:
                    self.spark.conf.set(key, old)


def _retry_on_conflict(
    settings: StorageSettings, path: str, what: str, attempt: Callable[[], Any], conflict: type[BaseException]
) -> Any:
    """Run attempt() until no concurrent commit beats it (`conflict` is the engine's error for that), at most
    `storage.commit_retries` more times, backing off; then a ConcurrentWriteError naming the table."""
    attempts = settings.commit_retries + 1
    last_error: BaseException | None = None
    for number in range(attempts):
        try:
            return attempt()
        except conflict as exc:
            last_error = exc
            log.warning("%s %s lost a race (attempt %d/%d): %s", what, path, number + 1, attempts,
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            time.sleep(min(2.0, 0.05 * 2**number))
    raise ConcurrentWriteError(
        f"could not {what} {path} after {attempts} attempts: another writer kept winning ({last_error})"
    )


def _conform(engine, df: DataFrame, path: str, partition_by: Sequence[str]) -> DataFrame:
    """The frame's columns in the table's order; a clear error when names, types or partitioning differ.

    Columns the frame has and the table lacks (a table written by an earlier version of atende) are added
    to the table first, in a commit of their own (`ALTER TABLE ... ADD COLUMNS`): its older rows read them
    as null. A column the table has and the frame lacks, or of another type, is an error."""
    table_schema = engine.spark_schema(path)
    frame_schema = nullable_schema(df.schema)
    known = set(table_schema.fieldNames())
    added = [f for f in frame_schema.fields if f.name not in known]
    if added and _same_columns(table_schema, StructType([f for f in frame_schema.fields if f.name in known])):
        log.info("table %s: adding the columns %s (the table was written by an earlier version)",
                 path, ", ".join(f.name for f in added))
        engine.add_columns(path, added)
        table_schema = engine.spark_schema(path)
    if not _same_columns(table_schema, frame_schema):
        raise LakehouseError(
            f"schema of the data does not match table {path}: {_schema_difference(table_schema, frame_schema)}"
        )
    if partition_by:
        existing = engine.partition_columns(path)
        if list(partition_by) != existing:
            raise LakehouseError(f"table {path} is partitioned by {existing}, not {list(partition_by)}")
    return df.select(*[F.col(f"`{f.name}`") for f in table_schema.fields])


# table features delta-rs cannot write to or read: asking for them would lock this engine out of the table
_DELTA_RS_UNWRITABLE = {"delta.enableDeletionVectors"}


def _delta_rs_properties(properties: dict[str, str] | None) -> dict[str, str]:
    kept = {k: v for k, v in (properties or {}).items() if k not in _DELTA_RS_UNWRITABLE}
    if len(kept) != len(properties or {}):
        log.debug("delta-rs engine: table properties %s left out (it cannot write such tables)",
                  sorted(set(properties or {}) - set(kept)))
    return kept

# the MERGE source's flag for a key whose row leaves the table (`upsert(remove=...)`)
_REMOVE = "_atende_remove"


def _with_removals(rows: DataFrame, keys: Sequence[str], remove: DataFrame | None) -> DataFrame:
    """The MERGE source of an upsert: the rows to write, flagged kept, plus one row per key of `remove` that
    is not among them, flagged removed (its other columns null)."""
    source = rows.withColumn(_REMOVE, F.lit(False))
    if remove is None:
        return source
    gone = remove.select(*keys).dropna(how="all").distinct().join(
        rows.select(*keys), on=list(keys), how="left_anti")
    return source.unionByName(gone.select(*[
        F.col(f.name) if f.name in keys else F.lit(None).cast(f.dataType).alias(f.name) for f in rows.schema.fields
    ], F.lit(True).alias(_REMOVE)))


def _check_upsert_source(df: DataFrame, path: str, keys: Sequence[str]) -> None:
    if not keys:
        raise LakehouseError("upsert needs at least one key column")
    duplicates = df.groupBy(*keys).count().where(F.col("count") > 1).limit(1).collect()
    if duplicates:
        raise LakehouseError(
            f"upsert into {path}: source has several rows for key {dict((k, duplicates[0][k]) for k in keys)}"
        )


def _clear_stale_staging(path: str, retention_hours: int) -> list[str]:
    """Staging folders of crashed delta-rs writes start with "_", which vacuum treats as hidden."""
    removed: list[str] = []
    if is_storage_uri(path):  # delta-rs stages only in local lakehouses
        return removed
    storage = Storage()
    cutoff_ms = (time.time() - retention_hours * 3600) * 1000
    staging_root = join(path, STAGING_DIR)
    entry = storage.stat(staging_root)
    if entry is not None and entry.is_dir:
        for leftover in storage.listdir(staging_root):
            if leftover.mtime_ms <= cutoff_ms:
                storage.remove(leftover.path)
                removed.append(f"{STAGING_DIR}/{leftover.name}")
    return removed


# column types whose statistics in the Delta log are exact (string maxima are truncated, timestamps kept to the
# millisecond), so a maximum read from the log equals the maximum a scan finds
_EXACT_STAT_TYPES = ("date", "byte", "short", "integer", "long")


def _log_files(path: str, storage_options: dict[str, str] | None = None) -> tuple[pa.Table, dict[str, str]] | None:
    """The table's live files with their row counts and statistics, and its columns' Delta types, read from
    its Delta log by the deltalake package on the driver (milliseconds, no Spark job); None when the log
    cannot answer exactly: a file written without statistics, a deletion vector hiding rows of a file (its row
    count then overstates the table), a table the package cannot open, or one on an object store without
    `storage_options` (`storage.arrow_access`: the s3:// path and options the package reads s3a:// with).
    On an object store a log that cannot be read raises: the caller stops asking (`Lakehouse._from_log`)."""
    remote = is_storage_uri(path)
    if remote and storage_options is None:
        return None
    from deltalake import DeltaTable as LogReader
    from deltalake.exceptions import TableNotFoundError

    try:
        reader = LogReader(path, storage_options=storage_options or None)
        if set(reader.protocol().reader_features or ()) & _DELTA_RS_UNREADABLE \
                and pa.table(reader.deletion_vectors().read_all()).num_rows:
            return None
        files = pa.table(reader.get_add_actions(flatten=True))
        types = {f.name: str(getattr(f.type, "type", "")) for f in reader.schema().fields}
    except TableNotFoundError:
        return None
    except Exception:  # a log feature the package does not follow: Spark answers
        if remote:
            raise
        log.info("deltalake could not read the log of %s; asking Spark", path, exc_info=True)
        return None
    if files.num_rows and files.column("num_records").null_count:
        return None
    return files, types


def _log_access_for(spark: SparkSession, uri: str) -> ArrowAccess | None:
    """How the deltalake package reaches a lakehouse's Delta logs (`storage.arrow_access`: s3a:// as s3:// with
    the S3A settings Spark was given); None for a scheme it is not pointed at, or under Spark Connect."""
    try:
        return arrow_access(uri, dict(spark.sparkContext.getConf().getAll()) if is_storage_uri(uri) else None)
    except Exception:  # NoArrowRoute: another scheme; Spark Connect has no SparkContext
        return None


def log_row_count(path: str, storage_options: dict[str, str] | None = None) -> int | None:
    """The table's rows as its Delta log counts them, or None when only a scan can tell (`_log_files`)."""
    found = _log_files(path, storage_options)
    if found is None:
        return None
    files, _ = found
    return int(pc.sum(files.column("num_records")).as_py() or 0) if files.num_rows else 0


def log_column_max(path: str, column: str, storage_options: dict[str, str] | None = None) -> tuple[bool, Any]:
    """(True, the column's largest non-null value, None when it has none) from the log's per-file
    statistics, or (False, None) when they cannot say exactly: a type whose statistics are truncated, a
    partition column (no statistics), a file without statistics for the column, or `_log_files` declining."""
    found = _log_files(path, storage_options)
    if found is None:
        return False, None
    files, types = found
    if types.get(column) not in _EXACT_STAT_TYPES:
        return False, None
    if not files.num_rows:
        return True, None
    if f"max.{column}" not in files.column_names or f"null_count.{column}" not in files.column_names:
        return False, None
    maxima = files.column(f"max.{column}").to_pylist()
    nulls = files.column(f"null_count.{column}").to_pylist()
    rows = files.column("num_records").to_pylist()
    if any(m is None and (n is None or n < r) for m, n, r in zip(maxima, nulls, rows, strict=True)):
        return False, None  # a file with non-null values but no maximum recorded
    present = [m for m in maxima if m is not None]
    return True, max(present) if present else None


def choose_engine(spark: SparkSession, settings: StorageSettings):
    wanted = settings.engine
    if wanted == "auto":
        wanted = "delta-spark" if delta_spark_available(spark) else "delta-rs"
    if wanted == "delta-spark":
        if not delta_spark_available(spark):
            raise LakehouseError(
                "storage.engine is delta-spark but the running Spark has no Delta classes "
                "(start it with the io.delta:delta-spark package, or set storage.engine to auto or delta-rs)"
            )
        return DeltaSparkEngine(spark, settings)
    return DeltaRsEngine(spark, settings)


class Lakehouse:
    """Tables under ``<root>/<layer>/<table>``; the one door to storage for jobs."""

    LAYERS = ("bronze", "silver", "gold", "ops")

    def __init__(self, spark: SparkSession, root: str | os.PathLike, settings: StorageSettings, engine=None):
        self.spark = spark
        # a local folder, or a Hadoop file system URI (s3a://bucket/lake, abfss://…, gs://…, hdfs://…)
        self.uri = location(root)
        self.is_uri = is_storage_uri(self.uri)
        # jobs keep quality docs and the MLflow store beside a local lakehouse's tables
        self.root: Any = self.uri if self.is_uri else Path(self.uri)
        self.settings = settings
        self.engine = engine or choose_engine(spark, settings)
        if self.is_uri and self.engine.name == "delta-rs":
            raise LakehouseError(
                f"the delta-rs engine commits through the driver's file system and cannot write {self.uri}; "
                "a lakehouse on an object store needs the delta-spark engine (storage.engine: auto or delta-spark)"
            )
        if self.is_uri:
            try:  # a scheme this Spark has no file system for fails here, naming the connector it needs
                Storage(spark).check(self.uri)
            except StorageError as exc:
                raise LakehouseError(str(exc)) from None
        # how the deltalake package reads the tables' Delta logs (`_from_log`): a local folder as it is, s3a://
        # with the S3A settings Spark was given; None where it is not pointed at the store (Spark answers)
        access = _log_access_for(spark, self.uri)
        self._log_root = self.uri if access is None else access.uri
        self._log_options: dict[str, str] | None = None if access is None else access.storage_options

    def path(self, layer: str, table: str) -> str:
        if layer not in self.LAYERS:
            raise LakehouseError(f"unknown layer {layer!r} (expected one of {', '.join(self.LAYERS)})")
        return f"{self.uri}/{layer}/{table}"

    def exists(self, layer: str, table: str) -> bool:
        return self.engine.exists(self.path(layer, table))

    def read(self, layer: str, table: str, version: int | None = None) -> DataFrame:
        return self.engine.read(self.path(layer, table), version)

    def read_or_empty(self, layer: str, table: str, schema: StructType) -> DataFrame:
        if self.exists(layer, table):
            return self.read(layer, table)
        return self.spark.createDataFrame([], nullable_schema(schema))

    def version(self, layer: str, table: str) -> int | None:
        return self.engine.version(self.path(layer, table))

    def history(self, layer: str, table: str) -> list[dict[str, Any]]:
        return self.engine.history(self.path(layer, table))

    def write(
        self,
        layer: str,
        table: str,
        df: DataFrame,
        mode: WriteMode = "append",
        partition_by: Sequence[str] = (),
        replace_where: str | None = None,
    ) -> CommitInfo:
        if mode not in ("append", "overwrite"):
            raise LakehouseError(f"unknown write mode {mode!r} (append or overwrite)")
        return self.engine.write(
            df, self.path(layer, table), mode, tuple(partition_by), replace_where,
            properties=self._properties(layer, table, df, partition_by),
        )

    def _properties(self, layer: str, table: str, df: DataFrame, partition_by: Sequence[str]) -> dict[str, str]:
        """A new table's properties: the layer's (storage.table_properties), and no log statistics of its
        personal columns (pipelines.schemas.PERSONAL_COLUMNS)."""
        return {**self.settings.properties_for(layer), **stats_properties(layer, table, df.schema, tuple(partition_by))}

    def upsert(self, layer: str, table: str, df: DataFrame, keys: Sequence[str], partition_by: Sequence[str] = (),
               remove: DataFrame | None = None) -> CommitInfo:
        """MERGE by key: matched rows updated, the rest inserted (one row per key in the source); rows whose
        key is in `remove` (a frame of the key columns) and not in `df` leave the table. One commit."""
        return self.engine.upsert(
            df, self.path(layer, table), tuple(keys), tuple(partition_by),
            properties=self._properties(layer, table, df, partition_by), remove=remove,
        )

    def changes(self, layer: str, table: str, since_version: int) -> DataFrame:
        """Rows inserted, deleted or updated from `since_version` on, from the table's Change Data Feed
        (`delta.enableChangeDataFeed`, on for silver): the table's columns + `_change_type`
        (insert, delete, update_preimage, update_postimage), `_commit_version`, `_commit_timestamp`."""
        return self.engine.changes(self.path(layer, table), since_version)

    def delete(self, layer: str, table: str, predicate: str) -> CommitInfo:
        """Rows matching a SQL predicate leave the table's current version (old versions keep them until vacuum)."""
        return self.engine.delete(self.path(layer, table), predicate)

    def delete_matching(self, layer: str, table: str, rows: DataFrame, columns: Sequence[str]) -> CommitInfo:
        """Rows whose `columns` equal those of a row of `rows` leave the table's current version; the log
        records the join condition only, never the values (what an erasure needs)."""
        return self.engine.delete_matching(self.path(layer, table), rows, tuple(columns))

    def purge(self, layer: str, table: str) -> None:
        """Deleted rows out of the data files too (REORG ... APPLY (PURGE) where deletion vectors hold them)."""
        self.engine.purge(self.path(layer, table))

    def optimize(self, layer: str, table: str, zorder_by: Sequence[str] | None = None) -> dict[str, int]:
        """Compact small files; Z-order by the configured columns the table has (`storage.zorder_by`)."""
        path = self.path(layer, table)
        wanted = self.settings.zorder_by if zorder_by is None else tuple(zorder_by)
        columns = set(self.engine.spark_schema(path).fieldNames())
        partitions = set(self.engine.partition_columns(path))
        return self.engine.optimize(path, [c for c in wanted if c in columns and c not in partitions])

    def vacuum(self, layer: str, table: str, retention_hours: int | None = None) -> int:
        """Delete files no version within the retention needs (and leftovers of crashed writes); returns how many."""
        hours = self.settings.vacuum_retention_hours if retention_hours is None else retention_hours
        return self.engine.vacuum(self.path(layer, table), hours)

    def vacuum_many(self, tables: Sequence[tuple[str, str]], retention_hours: int | None = None) -> dict[tuple[str, str], int]:
        """`vacuum` of several tables, run a few at once where the engine can; files deleted per table."""
        hours = self.settings.vacuum_retention_hours if retention_hours is None else retention_hours
        counts = self.engine.vacuum_many([self.path(layer, table) for layer, table in tables], hours)
        return dict(zip(tables, counts, strict=True))

    def clear_stale_scratch(self, retention_hours: int | None = None) -> int:
        """Remove the model scratch folders (`_staging/models/`, see jobs.modeling) a run that crashed left
        behind, once their newest file is older than the retention; returns how many were removed."""
        hours = self.settings.vacuum_retention_hours if retention_hours is None else retention_hours
        cutoff_ms = (time.time() - hours * 3600) * 1000
        storage = Storage(self.spark)
        scratch = join(self.uri, STAGING_DIR, "models")
        entry = storage.stat(scratch)
        if entry is None or not entry.is_dir:
            return 0
        removed = 0
        for folder in storage.listdir(scratch):
            # an object store's "folders" carry no time of their own: the files inside them do
            newest = max((f.mtime_ms for f in storage.files(folder.path)), default=folder.mtime_ms)
            if newest <= cutoff_ms:
                storage.remove(folder.path)
                removed += 1
        return removed

    def tables(self) -> list[tuple[str, str]]:
        """(layer, table) of every Delta table in the lakehouse (listed through lakehouse.storage)."""
        storage = Storage(self.spark)
        found: list[tuple[str, str]] = []
        for layer in self.LAYERS:
            base = join(self.uri, layer)
            entry = storage.stat(base)
            if entry is None or not entry.is_dir:
                continue
            for child in storage.listdir(base):
                delta_log = storage.stat(join(base, child.name, "_delta_log")) if child.is_dir else None
                if delta_log is not None and delta_log.is_dir:
                    found.append((layer, child.name))
        return found

    def _from_log(self, layer: str, table: str, read: Callable[[str, dict[str, str] | None], Any]) -> Any:
        """`read(log path, storage_options)` over a table's Delta log with the deltalake package; None when the package
        is not pointed at this lakehouse. On an object store it reads with the S3A settings Spark was given
        (a Spark snapshot and count per table saved: on the cluster test's S3A lakehouse the time after the
        run's last step went from about 66 to 30 s); the first log it cannot read there turns it off for the
        lakehouse, and Spark answers from then on."""
        if self._log_options is None:
            return None
        try:
            return read(join(self._log_root, layer, table), self._log_options)
        except Exception as exc:
            log.info("the deltalake package could not read a Delta log of %s (%s); Spark answers from now on",
                     self.uri, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._log_options = None
            return None

    def row_count(self, layer: str, table: str) -> int:
        """The table's rows: from its Delta log when the log counts them exactly (no Spark job), else a count."""
        counted = self._from_log(layer, table, log_row_count)
        return counted if counted is not None else self.read(layer, table).count()

    def column_max(self, layer: str, table: str, column: str) -> Any:
        """The column's largest value (None for an empty table or an all-null column): from the Delta log's
        statistics where they are exact for its type, else one aggregation."""
        known, value = self._from_log(layer, table, lambda path, options: log_column_max(
            path, column, options)) or (False, None)
        if known:
            return value
        row = self.read(layer, table).agg(F.max(column)).first()
        return None if row is None else row[0]

    def stored_bytes(self, layer: str) -> int:
        """Bytes of every file under a layer's folder (all table versions, logs included); 0 for a layer
        not written yet."""
        if layer not in self.LAYERS:
            raise LakehouseError(f"unknown layer {layer!r} (expected one of {', '.join(self.LAYERS)})")
        return Storage(self.spark).size(join(self.uri, layer))
