"""The one place a SparkSession is made."""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from conf.settings import Settings


def _local_cores(master: str) -> int:
    inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
    if inside in ("*", ""):
        return os.cpu_count() or 1
    try:
        return int(inside.split(",")[0])
    except ValueError:
        return os.cpu_count() or 1


def build_spark_session(settings: Settings, app_name: str | None = None) -> SparkSession:
    """Local mode sized for the machine by default; under spark-submit keeps the cluster's master.

    Python workers run the driver's interpreter so they see the same virtual environment.
    Timestamps are written as microsecond Parquet timestamps so every Delta reader agrees.
    """
    cfg = settings.spark
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    builder = SparkSession.builder.appName(app_name or cfg.app_name)
    is_local = cfg.master.startswith("local")
    if cfg.master:
        builder = builder.master(cfg.master)
    if cfg.shuffle_partitions == "auto":
        partitions = max(2, 2 * _local_cores(cfg.master)) if is_local else 200
    else:
        partitions = cfg.shuffle_partitions
    options = {
        "spark.sql.shuffle.partitions": str(partitions),
        "spark.ui.enabled": str(cfg.ui_enabled).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.pyspark.python": sys.executable,
        "spark.pyspark.driver.python": sys.executable,
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Spark's _SUCCESS markers are noise inside Delta table folders
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.hadoop.parquet.enable.summary-metadata": "false",
        "spark.sql.parquet.compression.codec": "snappy",
    }
    if is_local:
        options["spark.driver.host"] = "127.0.0.1"
        options["spark.driver.bindAddress"] = "127.0.0.1"
        if cfg.driver_memory:
            options["spark.driver.memory"] = cfg.driver_memory
    if cfg.delta_connector:
        options["spark.sql.extensions"] = "io.delta.sql.DeltaSparkSessionExtension"
        options["spark.sql.catalog.spark_catalog"] = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    options.update(cfg.conf)
    for key, value in options.items():
        builder = builder.config(key, value)
    if cfg.delta_connector:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(cfg.log_level)
    return spark


def delta_spark_available(spark: SparkSession) -> bool:
    """True when the running JVM has the Delta Lake connector's classes."""
    try:
        jvm = spark.sparkContext._jvm  # type: ignore[union-attr]
        # jars of `spark.jars.packages` are on the context class loader, not the system one that a bare
        # Class.forName(name) asks: that missed a connector fetched at session start
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable", False, loader)
        return True
    except Exception:  # py4j raises its own error type for ClassNotFoundException
        return False
