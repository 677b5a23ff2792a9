"""atende on Airflow: the daily run as one task per job, so a failed step is retried on its own, and the
weekly table upkeep.

Copy this file into the DAGs folder of an Airflow (2.x or 3.x) whose workers can run the `atende` command
(the package installed in their Python, or a wrapper that calls `spark-submit` as the README's cluster
section shows). Set, in the workers' environment:

- ATENDE_COMMAND: the command (default `atende`);
- ATENDE_LANDING and ATENDE_LAKEHOUSE: the locations (a local folder, or s3a://, abfss://, gs://, hdfs://);
- ATENDE_CONF: a YAML file of settings (optional; `--conf`);
- ATENDE_TIMEZONE: the timezone of the 02:30 schedule and of the arrival dates (default UTC).

The daily DAG's ingest task takes the run's logical date (`--date {{ ds }}`): re-running a DAG run, or
backfilling a range, replaces those arrival dates' rows and rebuilds what follows. The later tasks work on
what the last ingest brought (`atende run --step`); the last one marks the dates processed.
"""
from __future__ import annotations

import datetime as dt
import os
import shlex

from airflow import DAG
from airflow.timetables.interval import CronDataIntervalTimetable

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2
    from airflow.operators.bash import BashOperator

# the jobs of `atende run`, in order (atende.jobs.run.STEPS)
STEPS = ("ingest", "silver", "features", "personas", "gold", "recommendations")


def _atende(*args: str) -> str:
    command = os.environ.get("ATENDE_COMMAND", "atende")  # may be several words (a wrapper and its options)
    conf = os.environ.get("ATENDE_CONF")
    # the Jinja date stays unquoted so Airflow renders it; everything else is quoted for the shell
    quoted = [a if a.startswith("{{") else shlex.quote(a) for a in [*(["--conf", conf] if conf else []), *args]]
    return " ".join([command, *quoted])


LAKEHOUSE = os.environ.get("ATENDE_LAKEHOUSE", "/data/atende/lakehouse")
LANDING = os.environ.get("ATENDE_LANDING", "/data/atende/landing")

with DAG(
    dag_id="atende_daily",
    description="landing -> bronze -> silver -> features -> personas -> gold -> recommendations",
    # after the day's files have arrived; a data-interval timetable on Airflow 2 and 3 alike, so
    # {{ ds }} is the day that ended (Airflow 3's default for a cron string would give today)
    schedule=CronDataIntervalTimetable("30 2 * * *", timezone=os.environ.get("ATENDE_TIMEZONE", "UTC")),
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,              # one writer per lakehouse at a time
    default_args={"retries": 2, "retry_delay": dt.timedelta(minutes=10)},
    tags=["atende"],
) as daily:
    previous = None
    for step in STEPS:
        args = ["run", "--lakehouse", LAKEHOUSE, "--step", step]
        if step == "ingest":
            args += ["--landing", LANDING, "--date", "{{ ds }}"]
        task = BashOperator(task_id=step, bash_command=_atende(*args))
        if previous is not None:
            previous >> task
        previous = task

with DAG(
    dag_id="atende_upkeep",
    description="compact and Z-order the tables, then delete files no version within the retention needs",
    schedule="0 4 * * 0",           # Sundays, after that day's run
    start_date=dt.datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["atende"],
) as upkeep:
    optimize = BashOperator(task_id="optimize", bash_command=_atende("maintain", "optimize", "--lakehouse", LAKEHOUSE))
    vacuum = BashOperator(task_id="vacuum", bash_command=_atende("maintain", "vacuum", "--lakehouse", LAKEHOUSE))
    optimize >> vacuum
