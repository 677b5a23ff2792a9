"""bookkeeping: what `atende run --step JOB` works on (pending_dates, from hand-written ops/runs rows), the Spark
jobs a step submitted, and the line an error is told by."""
from __future__ import annotations

import datetime as dt

import pytest
from py4j.protocol import Py4JJavaError

from atende.jobs.bookkeeping import (
    JobRecord,
    error_line,
    name_spark_jobs,
    pending_dates,
    record_jobs,
    spark_job_group,
    spark_job_ids,
    spark_jobs_between,
    spark_jobs_named,
    threads_in_job_group,
)
from atende.jobs.run import STEPS
from atende.lakehouse.tables import Lakehouse

D1, D2, D3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)
T0 = dt.datetime(2026, 3, 4, 2, 0, tzinfo=dt.timezone.utc)


def _at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def _job(lake, spark, job: str, dates, start: int, end: int, status: str = "succeeded") -> None:
    record_jobs(spark, lake, f"run-{job}-{start}", dates, [JobRecord(job, _at(start), _at(end), status)])


def test_dates_flow_down_the_chain_one_step_at_a_time(spark, settings, tmp_path):
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage)
    assert pending_dates(lake, "silver", STEPS) == []  # no ops/runs yet
    _job(lake, spark, "ingest", [D1], 0, 1)
    assert pending_dates(lake, "silver", STEPS) == [D1]
    assert pending_dates(lake, "features", STEPS) == []  # silver has not been through D1
    _job(lake, spark, "silver", [D1], 2, 3, status="failed")
    assert pending_dates(lake, "silver", STEPS) == [D1]  # a failed step is still owed D1 (the retry)
    assert pending_dates(lake, "features", STEPS) == []
    _job(lake, spark, "silver", [D1], 4, 6)
    _job(lake, spark, "ingest", [D2, D3], 5, 7)  # ended while silver ran: new for silver's next run
    assert pending_dates(lake, "silver", STEPS) == [D2, D3]
    assert pending_dates(lake, "features", STEPS) == [D1]  # what silver brought, not what ingest did
    _job(lake, spark, "features", [D1], 8, 9)
    assert pending_dates(lake, "features", STEPS) == []
    _job(lake, spark, "silver", [D2, D3], 10, 11, status="degraded")  # degraded still delivered its data
    assert pending_dates(lake, "features", STEPS) == [D2, D3]


def test_folders_changed_after_their_date_was_processed_are_late():
    from atende.jobs.run import late_folders

    day1, day2, day3 = dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)
    processed = {day1: dt.datetime(2026, 3, 4, 2, 30), day2: dt.datetime(2026, 3, 4, 2, 30, tzinfo=dt.timezone.utc)}
    at = dt.datetime(2026, 3, 4, 2, 30, tzinfo=dt.timezone.utc).timestamp() * 1000
    folders = {
        day1: [("orders", int(at - 3_600_000)), ("products", int(at + 3_600_000))],  # products came an hour late
        day2: [("calls", int(at + 30_000)),  # within the minute clocks may differ by: not late
               ("crm", 0)],  # no folder time (an object store): never late
        day3: [("orders", int(at + 7_200_000))],  # not processed yet: the run takes it anyway
    }
    assert late_folders(folders, processed) == ["products/2026-03-01"]
    assert late_folders(folders, {}) == []


def test_an_error_from_the_jvm_is_told_by_its_root_cause(spark):
    """py4j's own first line names only the call; the JVM's root cause says what happened. (PySpark turns the
    JVM errors it knows into Python ones with their own message; these are errors it does not know.)"""
    jvm, gateway = spark.sparkContext._jvm, spark.sparkContext._gateway
    with pytest.raises(Py4JJavaError) as direct:
        jvm.java.lang.Class.forName("no.such.Klass")
    assert str(direct.value).startswith("An error occurred while calling")
    assert error_line(direct.value) == "java.lang.ClassNotFoundException: no.such.Klass"
    # wrapped, as a task's error is in its job's: reflection wraps it in an InvocationTargetException
    types = gateway.new_array(jvm.java.lang.Class, 1)
    types[0] = jvm.java.lang.Class.forName("java.lang.String")
    arguments = gateway.new_array(jvm.java.lang.Object, 1)
    arguments[0] = "no.such.Other"
    with pytest.raises(Py4JJavaError) as wrapped:
        jvm.java.lang.Class.forName("java.lang.Class").getMethod("forName", types).invoke(None, arguments)
    assert "InvocationTargetException" in str(wrapped.value.java_exception.toString())
    assert error_line(wrapped.value) == "java.lang.ClassNotFoundException: no.such.Other"
    # Python's own errors: their first line, or their type when they say nothing
    assert error_line(ValueError("bad value\nand more")) == "bad value"
    assert error_line(RuntimeError()) == "RuntimeError"


def test_a_steps_spark_jobs_are_counted_by_its_group_threads_included(spark):
    with spark_jobs_named(spark, "outer-step"):
        with spark_jobs_named(spark, "counted-step"):
            assert spark_job_group(spark) == "counted-step"
        assert spark_job_group(spark) == "outer-step"  # a step's group lasts as long as the step
    assert spark_job_group(spark) is None
    with threads_in_job_group(spark, 1, "no-group") as pool:  # a caller in no group: threads in none
        assert pool.submit(spark_job_group, spark).result() is None

    name_spark_jobs(spark, "counted-step")
    try:
        before = spark_job_ids(spark, "counted-step")
        assert before is not None
        spark.range(10).count()
        own = spark_job_ids(spark, "counted-step") - before
        assert own  # the thread's own action, listed as soon as it returned (the listener's queue drained)

        with threads_in_job_group(spark, 2, "counted") as pool:  # as the writers and trainers do
            assert [f.result() for f in [pool.submit(lambda: spark.range(5).collect()) for _ in range(2)]]
        threads = spark_job_ids(spark, "counted-step") - before - own
        assert threads  # the other thread's, in the same group
        name_spark_jobs(spark, "another-step")
        spark.range(3).count()
        after = spark_job_ids(spark, "counted-step")
        assert after - before == own | threads  # the next step's are its own
        assert spark_job_ids(spark, "another-step")
        assert spark_jobs_between(spark, before, after) == len(own | threads)
        assert spark_jobs_between(spark, None, after) is None
        # a step whose jobs would fill Spark's list of retained jobs is not counted (some may have been dropped)
        assert spark_jobs_between(spark, set(), set(range(950))) is None
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # the session's next tests in no group
