"""The one place a SparkSession is made."""
from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pyspark
from pyspark import SparkContext
from pyspark.sql import SparkSession

from atende.conf.settings import Settings
from atende.pipelines.frames import executors_in_driver


def _local_cores(master: str) -> int:
    inside = master[master.find("[") + 1 : master.find("]")] if "[" in master else "1"
    if inside in ("*", ""):
        return os.cpu_count() or 1
    try:
        return int(inside.split(",")[0])
    except ValueError:
        return os.cpu_count() or 1


class SparkStartError(RuntimeError):
    """Spark could not start as configured; the message says why and what to change."""


DELTA_EXTENSIONS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def delta_package(settings: Settings) -> str:
    """The Delta connector's Maven coordinates: from config, else what delta-spark's own pip helper asks for."""
    if settings.spark.delta_package:
        return settings.spark.delta_package
    from delta import configure_spark_with_delta_pip

    probe = configure_spark_with_delta_pip(SparkSession.builder)
    # the helper only sets spark.jars.packages on the builder; read it back without starting anything
    packages = probe._options.pop("spark.jars.packages")
    return packages.split(",")[0]


def bundled_hadoop_version() -> str:
    """The Hadoop version pyspark ships (its hadoop-client-api jar), which hadoop-aws must match."""

    for jar in sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar")):
        found = re.fullmatch(r"hadoop-client-api-(.+)\.jar", jar.name)
        if found:
            return found.group(1)
    raise SparkStartError("pyspark's bundled Hadoop jars were not found; name org.apache.hadoop:hadoop-aws:<version> in spark.packages")


def resolve_packages(names: tuple[str, ...]) -> list[str]:
    """Maven coordinates; the short name `hadoop-aws` stands for the S3A connector matching the bundled Hadoop."""
    return [f"org.apache.hadoop:hadoop-aws:{bundled_hadoop_version()}" if n == "hadoop-aws" else n for n in names]


def _base_options(settings: Settings, is_local: bool) -> dict[str, str]:
    cfg = settings.spark
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
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Spark's _SUCCESS markers are noise inside Delta table folders
        "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
        "spark.hadoop.parquet.enable.summary-metadata": "false",
        "spark.sql.parquet.compression.codec": "snappy",
    }
    if is_local:
        # workers run the driver's interpreter so they see the same virtual environment; a cluster keeps its own
        options["spark.pyspark.python"] = sys.executable
        options["spark.pyspark.driver.python"] = sys.executable
        options["spark.driver.host"] = "127.0.0.1"
        options["spark.driver.bindAddress"] = "127.0.0.1"
        if cfg.driver_memory:
            options["spark.driver.memory"] = cfg.driver_memory
        # Delta's VACUUM lists the table in this many tasks (10,000 by default: two minutes of empty tasks
        # for a small table on two cores)
        options["spark.sql.sources.parallelPartitionDiscovery.parallelism"] = str(partitions)
        # the checkpoint files of RDDs no longer referenced are deleted (the session's checkpoint directory is a
        # temporary one in local mode: _ensure_checkpoint_dir), so a long session does not pile them up
        options["spark.cleaner.referenceTracking.cleanCheckpoints"] = "true"
        # Delta rebuilds a table's snapshot from its log in this many tasks (50 by default)
        options["spark.databricks.delta.snapshotPartitions"] = str(partitions)
        options.update(metastore_options(settings.catalog.metastore))
    return options


def metastore_options(folder: str | None) -> dict[str, str]:
    """A Hive catalog kept in a Derby database under `folder` (local mode); empty without a folder."""
    if not folder:
        return {}

    base = Path(folder).expanduser().resolve()
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(base / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={base / 'metastore_db'};create=true",
    }


def _start(app_name: str, master: str, options: dict[str, str], jvm_log: Path | None = None) -> SparkSession:
    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    for key, value in options.items():
        builder = builder.config(key, value)
    if jvm_log is None or SparkContext._active_spark_context is not None:
        return builder.getOrCreate()
    # The JVM that PySpark launches inherits this process's stdout and stderr: pointed at the log file
    # while it starts, everything the JVM prints (Ivy's resolution, log4j, the JDK's and BLAS's warnings,
    # Delta's console lines such as VACUUM's "Deleted N files") lands there for the whole session, and
    # Python's own stdout and stderr are put back at once.
    jvm_log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(jvm_log, "ab") as log_file:
            for fd in saved:
                os.dup2(log_file.fileno(), fd)
            try:
                return builder.getOrCreate()
            finally:
                for fd, copy in saved.items():
                    os.dup2(copy, fd)
    finally:
        for copy in saved.values():
            os.close(copy)


def _classpath_record(settings: Settings, packages: list[str]) -> Path:
    """Where the jars Ivy resolved for these packages are listed after a start: in Ivy's own folder, named by
    a hash of what decides the resolution (the packages, the repositories, pyspark's version)."""
    cfg = settings.spark
    ivy = Path(cfg.jars_ivy).expanduser() if cfg.jars_ivy else Path.home() / ".ivy2.5.2"
    key = "\n".join([pyspark.__version__, *packages, "--", *cfg.jars_repositories])
    return ivy / f"atende-classpath-{hashlib.sha256(key.encode()).hexdigest()[:16]}.txt"


def _recorded_jars(record: Path) -> list[str] | None:
    """The jars an earlier start resolved, when every one of them is still in Ivy's cache."""
    try:
        jars = [line for line in record.read_text().splitlines() if line]
    except OSError:
        return None
    paths = [Path(j.removeprefix("file:")) for j in jars]
    if not jars or not all(p.is_file() and p.stat().st_size > 0 for p in paths):
        return None
    return jars


def _record_jars(spark: SparkSession, record: Path) -> None:
    """List the local jars Ivy resolved (Spark put them in `spark.jars`), for the next start to skip Ivy."""
    jars = [j for j in (spark.sparkContext.getConf().get("spark.jars", "") or "").split(",") if j]
    if not jars or not all(j.startswith(("file:", "/")) for j in jars):
        return
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        partial = record.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text("\n".join(jars) + "\n")
        partial.replace(record)  # whole or not at all: another process may be reading it
    except OSError:  # a read-only home: Ivy resolves again next time, nothing else changes
        pass


def build_spark_session(settings: Settings, app_name: str | None = None, jvm_log: Path | None = None) -> SparkSession:
    """Local mode sized for the machine by default; under spark-submit keeps the cluster's master.

    In local mode the Delta connector (and ``spark.packages``) are fetched from Maven at start, the way
    ``configure_spark_with_delta_pip`` does, from ``spark.jars_repositories`` first. When they cannot be
    fetched and ``storage.engine`` is ``auto``, Spark starts without them and the delta-rs engine is used
    (one warning says so); with ``storage.engine: delta-spark`` that is an error.
    Timestamps are written as microsecond Parquet timestamps so every Delta reader agrees.
    With ``jvm_log`` (local mode), what the JVM prints goes to that file instead of the terminal.
    """
    cfg = settings.spark
    is_local = cfg.master.startswith("local")
    if is_local:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    name = app_name or cfg.app_name
    options = _base_options(settings, is_local)

    packages: list[str] = resolve_packages(cfg.packages)
    fetch_delta = cfg.delta_connector and settings.storage.engine != "delta-rs"
    if fetch_delta:
        packages.insert(0, delta_package(settings))
        # on a cluster the connector comes with it (spark-submit --packages, Databricks, EMR)
        options.update(DELTA_EXTENSIONS)
    fetching = is_local and bool(packages)
    if fetching:
        options["spark.jars.packages"] = ",".join(packages)
        if cfg.jars_repositories:
            options["spark.jars.repositories"] = ",".join(cfg.jars_repositories)
        if cfg.jars_ivy:
            options["spark.jars.ivy"] = cfg.jars_ivy
    options.update(cfg.conf)

    jvm_log = jvm_log if is_local else None
    # Ivy resolves the packages again at every start (2-3 s, even with every jar in its cache): the jars the
    # last start resolved are handed to Spark directly while they are all still there. Not with jars of the
    # settings' own (spark.conf spark.jars), which that list would override.
    record = _classpath_record(settings, packages) if fetching and "spark.jars" not in cfg.conf else None
    fresh = SparkContext._active_spark_context is None  # else getOrCreate hands back the running session
    recorded = _recorded_jars(record) if record is not None and fresh else None
    if recorded and record is not None:
        direct = {k: v for k, v in options.items()
                  if k not in ("spark.jars.packages", "spark.jars.repositories", "spark.jars.ivy")}
        try:
            spark = _start(name, cfg.master, {**direct, "spark.jars": ",".join(recorded)}, jvm_log)
        except Exception:  # noqa: BLE001 - the recorded list is stale somehow: Ivy resolves as usual
            record.unlink(missing_ok=True)
        else:
            return _finish(spark, settings)
    try:
        spark = _start(name, cfg.master, options, jvm_log)
        if record is not None and fresh:
            _record_jars(spark, record)
    except Exception as exc:  # the JVM exits before the gateway answers when Ivy cannot resolve a package
        if not fetching:
            if jvm_log is not None:
                raise SparkStartError(f"Spark did not start ({str(exc).splitlines()[0][:160]}); "
                                      f"its output is in {jvm_log}") from exc
            raise
        where = ", ".join(cfg.jars_repositories) + (" and " if cfg.jars_repositories else "") + "Maven Central"
        reason = f"could not fetch {', '.join(packages)} from {where} ({str(exc).splitlines()[0][:160]})"
        if jvm_log is not None:
            reason += f"; Ivy's output is in {jvm_log}"
        # the extra packages were asked for by name (an s3a:// lakehouse needs hadoop-aws): no fallback for them
        if settings.storage.engine == "delta-spark" or cfg.packages:
            raise SparkStartError(
                f"{reason}; set spark.jars_repositories to a reachable mirror, or storage.engine: delta-rs "
                "to run without the Delta connector"
            ) from exc
        # said once, on stderr (the CLI's logging would print a log line as well)
        print(f"warning: {reason}; continuing without them on the delta-rs engine", file=sys.stderr)
        for key in ("spark.jars.packages", "spark.jars.repositories", *DELTA_EXTENSIONS):
            options.pop(key, None)
        spark = _start(name, cfg.master, options, jvm_log)
    return _finish(spark, settings)


def _finish(spark: SparkSession, settings: Settings) -> SparkSession:
    """The log level, and in local mode (as the running context says: `getOrCreate` may hand back a session
    started otherwise) a checkpoint directory when none is set."""
    spark.sparkContext.setLogLevel(settings.spark.log_level)
    if executors_in_driver(spark.sparkContext):
        _ensure_checkpoint_dir(spark.sparkContext)
    return spark


def _ensure_checkpoint_dir(context: SparkContext) -> None:
    """Give a local session a checkpoint directory (a temporary one, removed when the process ends) unless
    it has one (`spark.checkpoint.dir`).

    MLlib's ALS checkpoints its factors every few iterations only when the context has a directory; without
    one each iteration's RDDs hang on the last, and a task's deserialisation recursed through ten iterations
    of them deep enough to overflow a task thread's stack (a StackOverflowError that stopped the JVM in a
    demo run; bench/RESULTS.md, session 35). On a cluster `spark.checkpoint.dir` names shared storage."""
    if context.getCheckpointDir() is not None:
        return
    folder = tempfile.mkdtemp(prefix="atende-checkpoints-")
    atexit.register(shutil.rmtree, folder, True)
    context.setCheckpointDir(folder)


def delta_spark_available(spark: SparkSession) -> bool:
    """True when the running JVM has the Delta Lake connector's classes."""
    try:
        jvm = spark.sparkContext._jvm
        if jvm is None:  # no JVM gateway: nothing to look the classes up in
            return False
        # jars of `spark.jars.packages` are on the context class loader, not the system one that a bare
        # Class.forName(name) asks: that missed a connector fetched at session start
        loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
        jvm.java.lang.Class.forName("io.delta.tables.DeltaTable", False, loader)
        return True
    except Exception:  # py4j raises its own error type for ClassNotFoundException
        return False
