"""Runs at scale (issue 15): every job over N customers x D days, then one more arrival day.

    python bench/bench_scale.py                                   # 25,000, 50,000 and 100,000 customers x 30 days
    python bench/bench_scale.py --customers 5000 --days 14        # a quick look
    python bench/bench_scale.py --work /data/bench --keep         # keep the zones and lakehouses

For each size, one landing zone of D + 1 arrival dates is generated (seed 7). Its last date is held
back; `atende run` (`Runner.run`: every job, the models trained) runs over the first D dates into a
fresh lakehouse; the ingest I/O floor (Spark reads the same files and writes them as Parquet,
untransformed: bench_ingest.floor) is measured over the same dates in the same session; then the
held-back date is put in place, as a new day's files arrive, and `atende run` runs again: first on a
copy of the lakehouse with silver rebuilt from the whole of bronze (the baseline), then on the lakehouse itself
with `silver.incremental_max_share` at `--silver-share`: 1 (the default here) takes the incremental path, which the
baseline is compared with; 0 (`conf/local.yaml`'s default) rebuilds whole, as a daily run does by default
(`day_silver_records` is null when silver was rebuilt whole).

All sizes share one Spark session configured as `atende run` configures it (conf/local.yaml), so
the ratios compare like with like. Prints one JSON document: seconds per job for the full run and
for the extra day, the extra day over the full run, ingest over its floor, and each size's full run
over the previous size's.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _hold_back(landing: Path, day: str, aside: Path) -> None:
    """Move every source's folder of arrival date `day` out of the zone."""
    for source in sorted(p for p in landing.iterdir() if p.is_dir() and not p.name.startswith("_")):
        if (source / day).is_dir():
            (aside / source.name).mkdir(parents=True, exist_ok=True)
            shutil.move(str(source / day), str(aside / source.name / day))


def _deliver(aside: Path, landing: Path) -> None:
    for source in aside.iterdir():
        for day in source.iterdir():
            shutil.move(str(day), str(landing / source.name / day.name))


def _jobs(summary) -> dict[str, float]:
    return {j.job: round(j.seconds, 1) for j in summary.jobs}


def one_size(spark, settings, customers: int, days: int, seed: int, work: Path, compare_whole: bool = True,
             silver_share: float = 1.0) -> dict:
    from bench_ingest import floor, landing_dates

    from atende.jobs.run import Runner
    from atende.synthetic.generate import generate_landing_zone

    landing, lakehouse, aside = work / "landing", work / "lakehouse", work / "held-back"
    if not landing.exists():
        started = time.perf_counter()
        generate_landing_zone(landing, customers, days + 1, seed)
        print(f"{customers:,} x {days + 1} days generated in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
    shutil.rmtree(lakehouse, ignore_errors=True)
    shutil.rmtree(aside, ignore_errors=True)
    dates = landing_dates(landing)
    last = dates[-1].isoformat()
    _hold_back(landing, last, aside)
    try:
        started = time.perf_counter()
        full = Runner(spark, settings, landing, lakehouse).run()
        full_seconds = time.perf_counter() - started
        print(f"{customers:,}: full run {full_seconds:.0f} s", file=sys.stderr, flush=True)
        io_floor = floor(spark, landing, dates[:-1], work / "floor")
    finally:
        _deliver(aside, landing)
    whole = None
    if compare_whole:  # the same day on a copy of the lakehouse, silver rebuilt from all of bronze (the baseline)
        copy = work / "lakehouse-whole"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(lakehouse, copy)
        runner = Runner(spark, settings, landing, copy)
        runner.full_refresh = True  # silver from the whole of bronze; ingest still takes the new date alone
        started = time.perf_counter()
        whole = runner.run()
        whole_seconds = time.perf_counter() - started
        shutil.rmtree(copy, ignore_errors=True)
        print(f"{customers:,}: one more day, silver rebuilt whole {whole_seconds:.0f} s", file=sys.stderr, flush=True)
    started = time.perf_counter()
    day_settings = settings.model_copy(
        update={"silver": settings.silver.model_copy(update={"incremental_max_share": silver_share})})
    day = Runner(spark, day_settings, landing, lakehouse).run()
    day_seconds = time.perf_counter() - started
    print(f"{customers:,}: one more day {day_seconds:.0f} s (silver incremental: {day.silver_incremental}, "
          f"{day.silver_records} records)", file=sys.stderr, flush=True)
    ingest = _jobs(full).get("ingest", 0.0)
    baseline = {} if whole is None else {
        "day_whole_silver_seconds": round(whole_seconds, 1),
        "day_whole_silver_jobs": _jobs(whole),
        "day_silver_over_whole": round(_jobs(day)["silver"] / _jobs(whole)["silver"], 3),
    }
    return {
        "customers": customers,
        "days": days,
        "records": full.jobs[0].rows_read if full.jobs else 0,
        "day_records": day.jobs[0].rows_read if day.jobs else 0,
        "full_run_seconds": round(full_seconds, 1),
        "full_run_jobs": _jobs(full),
        "floor_seconds": io_floor["seconds"],
        "ingest_over_floor": round(ingest / io_floor["seconds"], 2) if io_floor["seconds"] else None,
        "day_run_seconds": round(day_seconds, 1),
        "day_run_jobs": _jobs(day),
        "day_over_full": round(day_seconds / full_seconds, 3),
        "day_silver_records": day.silver_records,
        **baseline,
        "table_rows": {k: v for k, v in full.table_rows.items() if not k.startswith("ops.")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, nargs="+", default=[25_000, 50_000, 100_000])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the zones and lakehouses")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the extra day with silver rebuilt whole on a copy of the lakehouse")
    parser.add_argument("--silver-share", type=float, default=1.0,
                        help="silver.incremental_max_share for the extra day (1: incremental; 0: whole, the default "
                             "of conf/local.yaml)")
    args = parser.parse_args()

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session

    settings = load_settings("local", environ={})
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    spark = build_spark_session(settings, "atende-bench-scale")
    sizes = []
    try:
        for customers in args.customers:
            folder = work / f"{customers}x{args.days}"
            sizes.append(one_size(spark, settings, customers, args.days, args.seed, folder, not args.no_baseline,
                                  args.silver_share))
            if not args.keep:
                shutil.rmtree(folder / "lakehouse", ignore_errors=True)
    finally:
        spark.stop()
        if not args.keep and args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for smaller, larger in zip(sizes, sizes[1:]):
        larger["full_over_previous_size"] = round(larger["full_run_seconds"] / smaller["full_run_seconds"], 2)
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "engine": settings.storage.engine,
        "command": " ".join(["python", "bench/bench_scale.py", *sys.argv[1:]]),
        "sizes": sizes,
    }, indent=2))


if __name__ == "__main__":
    main()
