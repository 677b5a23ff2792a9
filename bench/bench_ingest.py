"""Ingest throughput (issue 3): the ingest job against the I/O floor, measured in one run.

    python bench/bench_ingest.py                          # generate 20,000 customers x 30 days (seed 7), then measure
    python bench/bench_ingest.py --customers 100000       # the large landing zone
    python bench/bench_ingest.py --landing DIR            # an existing landing zone

Floor: Spark reads the same files as the ingest job (text for JSON Lines / CSV, binaryFile for
e-mail) and writes them as Parquet, no transformation, one write per source.
Subject: the ingest job as `atende run` does it: `Runner.ingest` (ingest_source for every source,
bronze + quarantine + file_reconciliation written through the Lakehouse, delta-rs or delta-spark).

Both run in the same Spark session (the JVM is started and warmed by a small job first; the files
are read once beforehand so both find them in the OS page cache). The floor runs before and after
the subject (`--floor-runs`); records/s use the ingest job's record count (records in the files,
as the reconciliation counts them) for both. Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and "_truth" not in p.parts)


def _warm_page_cache(landing: Path) -> None:
    for p in landing.rglob("*"):
        if p.is_file() and "_truth" not in p.parts:
            with open(p, "rb") as stream:
                while stream.read(1 << 20):
                    pass


def landing_dates(landing: Path):
    from atende.jobs.ingest import list_arrival_dates
    from atende.pipelines.schemas import SOURCES

    dates = set()
    for source in SOURCES:
        if (landing / source).is_dir():
            dates.update(list_arrival_dates(landing, source))
    return sorted(dates)


def floor(spark, landing: Path, dates, out: Path) -> dict:
    """Read every source's files with Spark and write them as Parquet, untransformed."""
    from atende.jobs.ingest import _spark_path, landing_files
    from atende.pipelines.ingest import FILE_SOURCES
    from atende.pipelines.schemas import SOURCES

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    files = 0
    for source in SOURCES:
        listed = landing_files(landing, source, dates)
        if not listed:
            continue
        files += len(listed)
        paths = [_spark_path(f.path) for f in listed]
        reader = spark.read.format("binaryFile") if source in FILE_SOURCES else spark.read.format("text")
        reader.load(paths).write.mode("overwrite").parquet(str(out / source))
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "files": files, "parquet_bytes": _bytes_under(out)}


def subject(spark, settings, landing: Path, dates, lakehouse: Path) -> dict:
    from atende.jobs.bookkeeping import JobRecord, utc_now
    from atende.jobs.run import Runner

    shutil.rmtree(lakehouse, ignore_errors=True)
    steps: list[str] = []  # the job's own progress lines: parse + reconcile, gates, writes
    runner = Runner(spark, settings, landing, lakehouse, progress=steps.append)
    record = JobRecord(job="ingest", started_at=utc_now())
    started = time.perf_counter()
    runner.ingest(record, landing, dates)
    seconds = time.perf_counter() - started
    return {
        "seconds": round(seconds, 2),
        "steps": steps,
        "engine": runner.lake.engine.name if hasattr(runner.lake, "engine") else None,
        "records": record.rows_read,
        "rows_written": record.rows_written,
        "tables": runner.table_rows(),
        "lakehouse_bytes": _bytes_under(lakehouse),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--landing", type=Path, default=None, help="existing landing zone (not generated, kept)")
    parser.add_argument("--floor-runs", type=int, default=2, help="floor runs, split around the subject (default 2)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder, removed)")
    args = parser.parse_args()

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session

    work = args.keep or Path(tempfile.mkdtemp(prefix="atende-bench-ingest-"))
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    landing = args.landing
    if landing is None:
        from atende.synthetic.generate import generate_landing_zone

        landing = work / "landing"
        started = time.perf_counter()
        stats = generate_landing_zone(landing, args.customers, args.days, args.seed)
        report["generate"] = {"customers": args.customers, "days": args.days, "seed": args.seed,
                              "seconds": round(time.perf_counter() - started, 1), "records": stats.records,
                              "files": stats.files}
    report["landing"] = {"path": str(landing), "bytes": _bytes_under(landing)}
    dates = landing_dates(landing)
    report["landing"]["arrival_dates"] = len(dates)

    settings = load_settings()
    spark = build_spark_session(settings, "atende-bench-ingest")
    try:
        spark.range(1000).selectExpr("sum(id)").collect()  # start the JVM's executors before timing
        _warm_page_cache(landing)
        floors = []
        before = (args.floor_runs + 1) // 2
        for _ in range(before):
            floors.append(floor(spark, landing, dates, work / "floor"))
        result = subject(spark, settings, landing, dates, work / "lakehouse")
        for _ in range(args.floor_runs - before):
            floors.append(floor(spark, landing, dates, work / "floor"))
    finally:
        spark.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    records = result["records"]
    floor_best = min(f["seconds"] for f in floors)
    report["floor"] = {
        "runs": floors,
        "best_seconds": floor_best,
        "records_per_second": round(records / floor_best, 1),
        "megabytes_per_second": round(report["landing"]["bytes"] / floor_best / 1e6, 2),
    }
    report["ingest"] = {
        **result,
        "records_per_second": round(records / result["seconds"], 1),
        "megabytes_per_second": round(report["landing"]["bytes"] / result["seconds"] / 1e6, 2),
    }
    report["ratio_ingest_to_floor"] = round(result["seconds"] / floor_best, 2)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
