"""Where a run's fixed cost goes: Spark jobs per step and per call site (issue 15).

    python bench/bench_jobs.py                              # 50 customers x 2 days (about 260 records)
    python bench/bench_jobs.py --customers 2000 --days 14   # the demo's zone
    python bench/bench_jobs.py --engine delta-rs --top 40

One landing zone is generated and `Runner.run` (every job, models trained) runs over it into a fresh
lakehouse, with the Spark UI on so its REST API can be asked afterwards which jobs ran. Every job of
the session is attributed to the pipeline step that was running (a Spark job group per step) and to
the first call site in this repository that Python's stack shows when the job was submitted
(Spark records it as the job's call site). Prints one JSON document: seconds and Spark jobs per step,
and the call sites that submitted the most jobs with their total job seconds.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from atende.conf import load_settings
from atende.jobs.run import Runner
from atende.lakehouse.spark import build_spark_session
from atende.synthetic.generate import generate_landing_zone


def _rest(spark, path: str) -> list[dict]:
    base = spark.sparkContext.uiWebUrl
    app = spark.sparkContext.applicationId
    with urllib.request.urlopen(f"{base}/api/v1/applications/{app}/{path}") as response:
        return json.load(response)


def _seconds(job: dict) -> float:
    def parse(value: str) -> dt.datetime:
        return dt.datetime.strptime(value.replace("GMT", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")

    if not job.get("submissionTime") or not job.get("completionTime"):
        return 0.0
    return (parse(job["completionTime"]) - parse(job["submissionTime"])).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--top", type=int, default=25, help="call sites to list")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra Spark setting for the session (repeatable), to compare configurations")
    args = parser.parse_args()

    settings = load_settings("local", environ={})
    settings = settings.model_copy(update={
        "spark": settings.spark.model_copy(update={
            "ui_enabled": True,
            "conf": {**settings.spark.conf, "spark.ui.retainedJobs": "100000", "spark.ui.retainedStages": "100000",
                     "spark.ui.port": "4099", **dict(c.split("=", 1) for c in args.conf)},
        }),
        "storage": settings.storage.model_copy(update={"engine": args.engine}),
    })
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-jobs-"))
    work.mkdir(parents=True, exist_ok=True)
    landing = work / "landing"
    if not landing.exists():
        generate_landing_zone(landing, args.customers, args.days, args.seed)
    lake_dir = work / "lakehouse"
    shutil.rmtree(lake_dir, ignore_errors=True)

    started = time.perf_counter()
    spark = build_spark_session(settings, "atende-bench-jobs")
    session_seconds = time.perf_counter() - started
    before = {j["jobId"] for j in _rest(spark, "jobs")}
    started = time.perf_counter()
    summary = Runner(spark, settings, landing, lake_dir).run()
    run_seconds = time.perf_counter() - started
    jobs = [j for j in _rest(spark, "jobs") if j["jobId"] not in before]
    # every job and stage as the UI knows them, for a closer look than the summary below
    (work / "spark-jobs.json").write_text(json.dumps({"jobs": jobs, "stages": _rest(spark, "stages")}))
    spark.stop()

    per_step: dict[str, dict] = collections.defaultdict(lambda: {"spark_jobs": 0, "job_seconds": 0.0})
    per_site: dict[str, dict] = collections.defaultdict(lambda: {"spark_jobs": 0, "job_seconds": 0.0})
    for job in jobs:
        step = job.get("jobGroup") or "(no step)"
        per_step[step]["spark_jobs"] += 1
        per_step[step]["job_seconds"] += _seconds(job)
        site = f"{step}: {job.get('name', '?')}"
        per_site[site]["spark_jobs"] += 1
        per_site[site]["job_seconds"] += _seconds(job)
    steps = {
        j.job: {"seconds": round(j.seconds, 1), **{k: round(v, 1) if isinstance(v, float) else v
                                                   for k, v in per_step.get(j.job, {}).items()}}
        for j in summary.jobs
    }
    sites = sorted(per_site.items(), key=lambda kv: -kv[1]["job_seconds"])[: args.top]
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "zone": {"customers": args.customers, "days": args.days, "seed": args.seed,
                 "records": summary.jobs[0].rows_read if summary.jobs else 0},
        "engine": summary.engine,
        "session_start_seconds": round(session_seconds, 1),
        "run_seconds": round(run_seconds, 1),
        "spark_jobs": len(jobs),
        "job_seconds": round(sum(_seconds(j) for j in jobs), 1),
        "steps": steps,
        "top_call_sites": [{"site": s, "spark_jobs": v["spark_jobs"], "job_seconds": round(v["job_seconds"], 1)}
                           for s, v in sites],
    }, indent=2))


if __name__ == "__main__":
    main()
