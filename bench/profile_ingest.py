"""Where the ingest job's time goes, per source (issue 3): plan building, parse + per-file counts, write.

    python bench/profile_ingest.py LANDING [--dates N]

For each source, on the first N arrival dates (default: all) of a landing zone: `ingest_source`
(listing, whole-file checks, building the classifier's plan), then the per-file counts (the parse,
persisted, and the independent line count: what the reconciliation needs), then a plain Parquet
write of the accepted rows from the persisted parse. Prints one line per source and a JSON summary.
Run it on an idle machine; the figures are wall-clock seconds in one Spark session (local[*]).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("landing", type=Path)
    parser.add_argument("--dates", type=int, default=None, help="only the first N arrival dates")
    args = parser.parse_args()

    from bench_ingest import landing_dates

    from atende.conf import load_settings
    from atende.jobs.ingest import ingest_source
    from atende.lakehouse.spark import build_spark_session
    from atende.pipelines.schemas import SOURCES

    settings = load_settings()
    spark = build_spark_session(settings, "atende-profile-ingest")
    dates = landing_dates(args.landing)
    dates = dates[: args.dates] if args.dates else dates
    out = Path(tempfile.mkdtemp(prefix="atende-profile-ingest-"))
    rows = []
    try:
        spark.range(1000).selectExpr("sum(id)").collect()  # start the executors before timing
        for source in SOURCES:
            t0 = time.perf_counter()
            result = ingest_source(spark, settings, args.landing, source, dates, "profile", dt.datetime.now(dt.timezone.utc))
            t1 = time.perf_counter()
            counts = result.file_counts.collect()
            t2 = time.perf_counter()
            result.accepted.write.mode("overwrite").parquet(str(out / source))
            t3 = time.perf_counter()
            result.release()
            row = {"source": source, "files": len(counts), "records": sum(r["records"] for r in counts),
                   "build_s": round(t1 - t0, 2), "parse_and_count_s": round(t2 - t1, 2), "write_s": round(t3 - t2, 2)}
            rows.append(row)
            print(f"{source:14s} files={row['files']:5d} records={row['records']:8d} build={row['build_s']:6.1f}s "
                  f"parse+count={row['parse_and_count_s']:6.1f}s write={row['write_s']:6.1f}s", flush=True)
    finally:
        spark.stop()
        shutil.rmtree(out, ignore_errors=True)
    print(json.dumps({"landing": str(args.landing), "arrival_dates": len(dates), "sources": rows}, indent=2))


if __name__ == "__main__":
    main()
