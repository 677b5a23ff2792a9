"""bookkeeping.pending_dates: what `atende run --step JOB` works on, from hand-written ops/runs rows."""
from __future__ import annotations

import datetime as dt

from atende.jobs.bookkeeping import JobRecord, pending_dates, record_jobs
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
