"""Run bookkeeping: the ``ops/runs`` table and the ledger of processed arrival dates.

``ops/runs`` has one row per job of a run (and one for the run as a whole,
job ``run``): what it processed, when, how it ended, rows read and written, the
Spark jobs it submitted, and the error if any. ``ops/processed_dates`` names each arrival date whose run
finished every job; a date is recorded only then, so a run that fails leaves
its dates unprocessed and the next run takes them again. Re-running a date is
safe because every table write replaces that date's rows.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from atende.lakehouse.tables import Lakehouse
from atende.pipelines.frames import scalar
from atende.pipelines.schemas import SILVER_STATE

log = logging.getLogger(__name__)

RUNS = StructType([
    StructField("run_id", StringType(), True),
    StructField("job", StringType(), True),
    StructField("arrival_dates", ArrayType(DateType(), True), True),
    StructField("started_at", TimestampType(), True),
    StructField("ended_at", TimestampType(), True),
    StructField("status", StringType(), True),  # succeeded | degraded | failed
    StructField("rows_read", LongType(), True),
    StructField("rows_written", LongType(), True),
    # failed: the error; degraded (a model job that kept its champion or answered with a named
    # fallback): why, one reason per model, separated by " | "
    StructField("error", StringType(), True),
    # the Spark jobs the step submitted (the fixed cost of a run is mostly their number); null where Spark
    # cannot tell (Spark Connect has no job groups to count by; `spark_jobs_between`)
    StructField("spark_jobs", LongType(), True),
])

PROCESSED_DATES = StructType([
    StructField("arrival_date", DateType(), True),
    StructField("run_id", StringType(), True),
    StructField("processed_at", TimestampType(), True),
])


def new_run_id(now: dt.datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclass
class JobRecord:
    job: str
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    status: str = "running"
    rows_read: int = 0
    rows_written: int = 0
    error: str | None = None
    spark_jobs: int | None = None

    @property
    def seconds(self) -> float:
        end = self.ended_at or utc_now()
        return (end - self.started_at).total_seconds()


def error_line(exc: BaseException) -> str:
    """One line saying what went wrong, for ops/runs and the terminal. An error raised in the JVM reaches
    Python through py4j, whose own first line names only the call ("An error occurred while calling
    o44965.getResult."): the JVM exception's deepest cause that says something (an out-of-memory error in a
    task, a file not found) is the line given, else the JVM exception itself."""
    java = getattr(exc, "java_exception", None)
    if java is not None:
        try:
            told, cause, seen = None, java, 0
            while cause is not None and seen < 20:  # a cause chain can loop
                if cause.getMessage():
                    told = cause
                cause, seen = cause.getCause(), seen + 1
            lines = str((told or java).toString()).strip().splitlines()
            if lines:
                return lines[0]
        except Exception:  # the JVM gone (a killed driver): py4j's own line is all there is
            pass
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def name_spark_jobs(spark: SparkSession, step: str) -> None:
    """Spark jobs the calling thread submits from here on belong to `step` (a job group: a property of the
    submitting thread; the UI, `spark_job_ids` and bench/bench_jobs.py group them so)."""
    try:
        spark.sparkContext.setJobGroup(step, f"atende {step}", interruptOnCancel=False)
    except Exception:  # Spark Connect has no SparkContext
        pass


@contextlib.contextmanager
def spark_jobs_named(spark: SparkSession, step: str) -> Iterator[None]:
    """`name_spark_jobs` for the block; after it the calling thread's group is what it was (none, or an
    outer one), so work a caller does after a step is not counted as the step's."""
    previous = spark_job_group(spark)
    name_spark_jobs(spark, step)
    try:
        yield
    finally:
        if previous is not None:
            name_spark_jobs(spark, previous)
        else:
            try:
                spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]
                spark.sparkContext.setLocalProperty("spark.job.description", None)  # type: ignore[arg-type]
            except Exception:  # Spark Connect has no SparkContext
                pass


def spark_job_group(spark: SparkSession) -> str | None:
    """The calling thread's job group (`name_spark_jobs`), for threads it starts to carry on."""
    try:
        return spark.sparkContext.getLocalProperty("spark.jobGroup.id")
    except Exception:  # Spark Connect
        return None


def threads_in_job_group(spark: SparkSession, max_workers: int, name: str) -> ThreadPoolExecutor:
    """A thread pool whose threads submit their Spark jobs in the calling thread's job group
    (`name_spark_jobs`): a job group is a property of the submitting thread, and work a step hands to threads
    (concurrent writes, models trained side by side) still counts as the step's (ops/runs.spark_jobs)."""
    group = spark_job_group(spark)
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name,
                              initializer=None if group is None else lambda: name_spark_jobs(spark, group))


def spark_job_ids(spark: SparkSession, step: str) -> set[int] | None:
    """The ids of the Spark jobs of `step`'s group that the application still lists (the newest
    `spark.ui.retainedJobs`, 1,000 by default); None where Spark cannot tell (Spark Connect). The status store
    is filled by a listener, behind the jobs: its queue is drained first (up to 10 s)."""
    try:
        context = spark.sparkContext
    except Exception:  # Spark Connect has no SparkContext
        return None
    try:
        context._jsc.sc().listenerBus().waitUntilEmpty(10_000)
    except Exception:  # still busy after 10 s: the count may miss the last jobs
        log.debug("Spark's listener queue not drained: the step's last jobs may be left out of its count")
    try:
        return set(context.statusTracker().getJobIdsForGroup(step))
    except Exception:
        return None


def spark_jobs_between(spark: SparkSession, before: set[int] | None, after: set[int] | None) -> int | None:
    """How many Spark jobs a group gained between two `spark_job_ids`; None when either is unknown, or when the
    group gained so many that Spark may have dropped some from its list (nine tenths of `spark.ui.retainedJobs`
    or more: raise that setting to count such steps)."""
    if before is None or after is None:
        return None
    gained = len(after - before)
    retained = int(spark.conf.get("spark.ui.retainedJobs", "1000") or 1000)
    return None if gained >= 0.9 * retained else gained


def processed_dates(lake: Lakehouse) -> set[dt.date]:
    return set(processed_at(lake))


def processed_at(lake: Lakehouse) -> dict[dt.date, dt.datetime]:
    """Each processed arrival date with when it was last processed (`ops/processed_dates`)."""
    if not lake.exists("ops", "processed_dates"):
        return {}
    rows = lake.read("ops", "processed_dates").groupBy("arrival_date").agg(F.max("processed_at").alias("at")).collect()
    return {r["arrival_date"]: r["at"] for r in rows}


def record_jobs(spark: SparkSession, lake: Lakehouse, run_id: str, dates: list[dt.date], jobs: list[JobRecord]) -> None:
    rows = [
        (run_id, j.job, list(dates), j.started_at, j.ended_at, j.status, j.rows_read, j.rows_written, j.error,
         j.spark_jobs)
        for j in jobs
    ]
    lake.write("ops", "runs", spark.createDataFrame(rows, RUNS), mode="append")


def mark_processed(spark: SparkSession, lake: Lakehouse, run_id: str, dates: list[dt.date], now: dt.datetime) -> None:
    if not dates:
        return
    frame = spark.createDataFrame([(d, run_id, now) for d in dates], PROCESSED_DATES)
    listed = ", ".join(f"DATE'{d.isoformat()}'" for d in dates)
    lake.write("ops", "processed_dates", frame, mode="overwrite", replace_where=f"arrival_date IN ({listed})")


def pending_dates(lake: Lakehouse, step: str, steps: tuple[str, ...]) -> list[dt.date]:
    """The arrival dates a step run alone (`atende run --step STEP`) works for: those the step before it
    (in `steps`, the run's order) brought in successful runs that ended after this step last started a
    successful run. Dates flow down the chain one step at a time, so a step never marks or works for
    dates its predecessor has not been through; a predecessor that finished while this step was running
    counts as new. Silver and what follows rebuild from whole tables: the dates say what is new since
    the step last ran, and which dates the last step (recommendations) marks processed."""

    if not lake.exists("ops", "runs"):
        return []
    before = steps[steps.index(step) - 1]
    done = lake.read("ops", "runs").where(F.col("status").isin("succeeded", "degraded"))
    last_start = scalar(done.where(F.col("job") == step).agg(F.max("started_at")))
    brought = done.where(F.col("job") == before)
    if last_start is not None:
        brought = brought.where(F.col("ended_at") > F.lit(last_start))
    return sorted({r[0] for r in brought.select(F.explode("arrival_dates")).distinct().collect()})


# ------------------------------------------------------------------ silver state
def silver_state(lake: Lakehouse) -> dict | None:
    """The row of ops/silver_state (`settings`, `rebuild_reason`, ...), or None when there is none."""
    if not lake.exists("ops", "silver_state"):
        return None
    rows = lake.read("ops", "silver_state").limit(1).collect()
    return rows[0].asDict() if rows else None


def write_silver_state(spark: SparkSession, lake: Lakehouse, run_id: str, now: dt.datetime,
                       settings: str | None = None, rebuild_reason: str | None = None) -> None:
    """Replace ops/silver_state: the settings silver was just built whole with, or (`rebuild_reason`) why the
    next silver step must rebuild it whole. Whatever changes bronze or silver behind the incremental path's
    back (a date ingested again, an erasure) writes a reason before it changes anything."""
    lake.write("ops", "silver_state", spark.createDataFrame([(settings, rebuild_reason, run_id, now)], SILVER_STATE),
               mode="overwrite")
