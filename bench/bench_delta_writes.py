"""What one small Delta write costs on the delta-spark engine, per Delta setting, against delta-rs (issue 20).

    python bench/bench_delta_writes.py                       # 5 rounds of 6 partition overwrites per variant
    python bench/bench_delta_writes.py --rounds 7 --writes 10
    python bench/bench_delta_writes.py --variants default,protocol-from-checksum,delta-rs --rounds 5 --writes 8

A run writes many small tables (ingest 11, silver 10, gold a few each), so the fixed cost of one commit
is multiplied by every table a run touches. This measures `Lakehouse.write` as a run calls it: a
5,000-row frame partitioned by day, replacing one day (`replace_where`), into a table of five days.

Every variant (a set of `spark.databricks.delta.*` session settings, or the delta-rs engine) writes to
its own table in one shared Spark session. Variants take turns write by write, in a rotating order, so a
machine that speeds up or slows down (the JIT warming up, another process) spreads over all of them.
The first round is a warm-up and not counted. Prints one JSON document: the median seconds per write of
each variant and its ratio to the delta-spark default.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from pathlib import Path

from atende.conf import load_settings
from atende.lakehouse.spark import build_spark_session
from atende.lakehouse.tables import DeltaRsEngine, DeltaSparkEngine, Lakehouse

PREFIX = "spark.databricks.delta."
# session settings that each skip some work Delta does around a commit; every name is one Delta 4.4 reads
VARIANTS: dict[str, dict[str, str]] = {
    "default": {},
    "no-commit-validation": {"commitValidation.enabled": "false", "numRecordsValidation.enabled": "false"},
    "no-crc-verification": {"incremental.commit.verify": "false", "allFilesInCrc.verificationMode.enabled": "false"},
    "no-commit-metrics": {"commitMetrics.enabled": "false", "fileSizeHistogramMetrics.enabled": "false",
                          "checksumDVMetrics.enabled": "false"},
    "protocol-from-checksum": {"readProtocolAndMetadataFromChecksum.enabled": "true"},
    "no-checksum-file": {"writeChecksumFile.enabled": "false"},
    "no-stats": {"stats.collect": "false"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds counted (one more warms up)")
    parser.add_argument("--writes", type=int, default=6, help="writes per variant per round")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--variants", default=",".join([*VARIANTS, "delta-rs"]),
                        help="comma-separated names among: " + ", ".join([*VARIANTS, "delta-rs"]))
    args = parser.parse_args()

    settings = load_settings("local", environ={})
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-delta-writes-"))
    spark = build_spark_session(settings, "atende-bench-delta-writes")
    days = [dt.date(2026, 3, 1) + dt.timedelta(days=i) for i in range(5)]
    frame = spark.range(args.rows).selectExpr(
        "cast(id as string) AS customer_key", "id % 97 AS v",
        f"date_add(DATE'{days[0]}', cast(id % 5 as int)) AS day").cache()
    frame.count()
    one_day = frame.where(f"day = DATE'{days[0]}'").cache()
    one_day.count()

    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = sorted(set(names) - {*VARIANTS, "delta-rs"})
    if unknown or "default" not in names:
        parser.error(f"unknown variants {unknown}" if unknown else "the variants must include default")
    lakes = {}
    for name in names:
        engine = (DeltaRsEngine if name == "delta-rs" else DeltaSparkEngine)(spark, settings.storage)
        lakes[name] = Lakehouse(spark, work / name, settings.storage, engine=engine)
        lakes[name].write("silver", "t", frame, mode="overwrite", partition_by=["day"])

    seconds: dict[str, list[float]] = {name: [] for name in names}
    for number in range(args.rounds + 1):
        for write in range(args.writes):
            shift = number * args.writes + write
            for name in names[shift % len(names):] + names[: shift % len(names)]:
                for key, value in VARIANTS.get(name, {}).items():
                    spark.conf.set(PREFIX + key, value)
                try:
                    started = time.perf_counter()
                    lakes[name].write("silver", "t", one_day, mode="overwrite",
                                      replace_where=f"day = DATE'{days[0]}'")
                    took = time.perf_counter() - started
                finally:
                    for key in VARIANTS.get(name, {}):
                        spark.conf.unset(PREFIX + key)
                if number > 0:
                    seconds[name].append(took)
    spark.stop()

    base = statistics.median(seconds["default"])
    print(json.dumps({
        "rows": args.rows, "rounds": args.rounds, "writes_per_round": args.writes,
        "median_seconds_per_write": {n: round(statistics.median(s), 3) for n, s in seconds.items()},
        "ratio_to_default": {n: round(statistics.median(s) / base, 3) for n, s in seconds.items()},
        "settings": {n: {PREFIX + k: v for k, v in VARIANTS.get(n, {}).items()} for n in names},
    }, indent=2))


if __name__ == "__main__":
    main()
