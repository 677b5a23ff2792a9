"""`atende maintain`: the upkeep a Delta lakehouse needs, on either engine.

* ``optimize``: compacts each table's small files (a daily run adds a few per table) and Z-orders by the
  columns of ``storage.zorder_by`` the table has (``customer_key``: the service apps read one customer).
* ``vacuum``: deletes files that no table version within ``storage.vacuum_retention_hours`` needs, and the
  leftovers of crashed writes, which no commit names. Time travel reaches back only as far as the retention.
* ``register``: names every table in Spark's catalog, one database per layer (``atende_gold.recommendations``),
  as path-based Delta tables, so analysts can ``SELECT`` them from ``spark-sql`` or a notebook.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from pyspark.sql import SparkSession

from atende.lakehouse.tables import Lakehouse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Maintained:
    table: str
    files_added: int
    files_removed: int
    seconds: float


def _selected(lake: Lakehouse, layers: tuple[str, ...] = (), tables: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    found = lake.tables()
    unknown = [t for t in tables if t not in {f"{layer}.{name}" for layer, name in found} | {n for _, n in found}]
    if unknown:
        raise ValueError(f"no such table in {lake.root}: {', '.join(unknown)}")
    return [
        (layer, name) for layer, name in found
        if (not layers or layer in layers) and (not tables or name in tables or f"{layer}.{name}" in tables)
    ]


def optimize_tables(lake: Lakehouse, layers: tuple[str, ...] = (), tables: tuple[str, ...] = ()) -> list[Maintained]:
    done = []
    for layer, name in _selected(lake, layers, tables):
        started = time.perf_counter()
        result = lake.optimize(layer, name)
        done.append(Maintained(f"{layer}.{name}", result["files_added"], result["files_removed"],
                               time.perf_counter() - started))
    return done


def vacuum_tables(
    lake: Lakehouse, retention_hours: int | None = None, layers: tuple[str, ...] = (), tables: tuple[str, ...] = ()
) -> list[Maintained]:
    done = []
    for layer, name in _selected(lake, layers, tables):
        started = time.perf_counter()
        removed = lake.vacuum(layer, name, retention_hours)
        done.append(Maintained(f"{layer}.{name}", 0, removed, time.perf_counter() - started))
    if not layers and not tables:  # the whole lakehouse: also what crashed runs left beside the tables
        started = time.perf_counter()
        removed = lake.clear_stale_scratch(retention_hours)
        done.append(Maintained("_staging/models", 0, removed, time.perf_counter() - started))
    return done


def time_travel_horizon(lake: Lakehouse, retention_hours: int | None = None) -> dt.datetime:
    """After a vacuum with this retention, versions older than this moment can no longer be read."""
    hours = lake.settings.vacuum_retention_hours if retention_hours is None else retention_hours
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=hours)


def database_name(prefix: str, layer: str) -> str:
    return f"{prefix}{layer}"


def register_tables(spark: SparkSession, lake: Lakehouse, prefix: str = "atende_") -> list[str]:
    """CREATE DATABASE per layer and CREATE TABLE ... USING DELTA LOCATION per table; a name already
    pointing elsewhere (another lakehouse) is re-pointed (dropping an external table deletes no data)."""
    names = []
    for layer, table in lake.tables():
        database = database_name(prefix, layer)
        name = f"`{database}`.`{table}`"
        location = lake.path(layer, table)
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        if spark.catalog.tableExists(f"{database}.{table}"):
            current = spark.sql(f"DESCRIBE DETAIL {name}").collect()[0]["location"]
            if current.removeprefix("file:").rstrip("/") == location.rstrip("/"):
                names.append(f"{database}.{table}")
                continue
            log.info("%s pointed at %s; re-pointing it at %s", name, current, location)
            spark.sql(f"DROP TABLE {name}")
        escaped = location.replace("'", "\\'")
        spark.sql(f"CREATE TABLE {name} USING DELTA LOCATION '{escaped}'")
        names.append(f"{database}.{table}")
    return names
