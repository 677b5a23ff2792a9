"""The whole pipeline on the delta-spark engine against the delta-rs route, measured in one run (issue 20).

    python bench/bench_engines.py                         # the demo's zone: 2,000 customers x 14 days, seed 7
    python bench/bench_engines.py --customers 20000 --days 30 --rounds 2

One landing zone is generated, then `Runner.run` (every job, models trained and registered) runs
over it into a fresh lakehouse per engine, alternating engines round by round (delta-spark first in
odd rounds, delta-rs first in even ones) so a machine that speeds up or slows down during the call
does not favour one. Both share one Spark session that has the Delta connector (the delta-rs engine
needs nothing of it); before anything is timed each engine runs once, untimed, over a tiny zone
(`--warmup-customers`, 2 days), so the JVM has compiled the code paths a run takes. Prints one JSON document: seconds
per job and per run for each engine, and delta-spark / delta-rs per round and as the median.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from atende.conf import load_settings
from atende.jobs.run import Runner
from atende.lakehouse.spark import build_spark_session
from atende.synthetic.generate import generate_landing_zone

ENGINES = ("delta-spark", "delta-rs")


def run_once(spark, settings, engine: str, landing: Path, work: Path, label: str) -> dict:
    lake_dir = work / f"lake-{label}"
    shutil.rmtree(lake_dir, ignore_errors=True)
    # MLflow's store is under the lakehouse by default: each run trains and registers its models from nothing
    chosen = settings.model_copy(update={"storage": settings.storage.model_copy(update={"engine": engine})})
    started = time.perf_counter()
    summary = Runner(spark, chosen, landing, lake_dir).run()
    seconds = time.perf_counter() - started
    assert summary.engine == engine, summary.engine
    return {
        "engine": engine,
        "seconds": round(seconds, 1),
        "jobs": {j.job: round(j.seconds, 1) for j in summary.jobs},
        "statuses": sorted({j.status for j in summary.jobs}),
        "rows": sum(summary.table_rows.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--warmup-customers", type=int, default=50,
                        help="customers of the untimed warm-up zone (2 days) each engine runs first; 0: none")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    settings = load_settings("local", environ={})
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    landing = work / "landing"
    if not landing.exists():
        generate_landing_zone(landing, args.customers, args.days, args.seed)
    spark = build_spark_session(settings, "atende-bench-engines")
    spark.range(1000).selectExpr("sum(id)").collect()  # JVM up before anything is timed
    if args.warmup_customers:
        # the JIT compiles the code paths a run takes the first time it takes them, whatever the data: an
        # untimed run of each engine over a tiny zone, so the first timed engine does not pay for both
        tiny = work / "landing-warmup"
        if not tiny.exists():
            generate_landing_zone(tiny, args.warmup_customers, 2, args.seed)
        for engine in ENGINES:
            run_once(spark, settings, engine, tiny, work, f"warmup-{engine}")

    results: list[dict] = []
    for number in range(args.rounds):
        order = ENGINES if number % 2 == 0 else tuple(reversed(ENGINES))
        for engine in order:
            results.append({"round": number + 1, **run_once(spark, settings, engine, landing, work, f"{engine}-{number}")})
    spark.stop()

    def runs_of(engine: str) -> list[dict]:
        return [r for r in results if r["engine"] == engine]

    ratios = [a["seconds"] / b["seconds"] for a, b in zip(runs_of("delta-spark"), runs_of("delta-rs"))]
    jobs = sorted({job for r in results for job in r["jobs"]}, key=list(results[0]["jobs"]).index)
    print(json.dumps({
        "zone": {"customers": args.customers, "days": args.days, "seed": args.seed},
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "runs": results,
        "median_seconds": {e: statistics.median(r["seconds"] for r in runs_of(e)) for e in ENGINES},
        "median_job_seconds": {
            e: {job: statistics.median(r["jobs"].get(job, 0.0) for r in runs_of(e)) for job in jobs} for e in ENGINES
        },
        "delta_spark_over_delta_rs": {"per_round": [round(x, 3) for x in ratios],
                                      "median": round(statistics.median(ratios), 3)},
    }, indent=2))


if __name__ == "__main__":
    main()
