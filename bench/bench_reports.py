"""Interactive commands on a lakehouse: wall seconds of `report kpis`, `report personas` and
`segments export`, each run as a user runs it (a new process), read without Spark (delta-rs + DuckDB,
the default) and, as the baseline of the same run, with Spark (`reports.spark_above_rows: 0`).

    atende demo --dir /tmp/demo                                    # the demo lakehouse (once)
    python bench/bench_reports.py --lakehouse /tmp/demo/lakehouse  # 5 runs without Spark, 2 with

Prints one JSON document: per command, every run's seconds, the median, and the ratio of the medians.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def commands(lakehouse: Path, out: Path) -> dict[str, list[str]]:
    return {
        "report kpis": ["report", "kpis", "--lakehouse", str(lakehouse), "--out", str(out / "kpis.html")],
        "report personas": ["report", "personas", "--lakehouse", str(lakehouse), "--out", str(out / "personas.html")],
        "segments export": ["segments", "export", "--lakehouse", str(lakehouse), "--persona", "all",
                            "--out", str(out / "segment.csv")],
    }


def timed(args: list[str], conf: Path | None) -> float:
    argv = [sys.executable, "-m", "atende.jobs.cli", *(["--conf", str(conf)] if conf else []), *args]
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {done.stderr.strip()[-500:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", required=True, type=Path)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--spark-runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-reports-") as tmp:
        out = Path(tmp)
        spark_conf = out / "spark.yaml"
        spark_conf.write_text("reports:\n  spark_above_rows: 0\n")
        results = {}
        for name, argv in commands(args.lakehouse, out).items():
            timed(argv, None)  # warm-up: the OS's file cache, Python's bytecode cache
            fast = [timed(argv, None) for _ in range(args.runs)]
            slow = [timed(argv, spark_conf) for _ in range(args.spark_runs)]
            results[name] = {
                "without_spark_s": [round(s, 2) for s in fast], "without_spark_median_s": round(statistics.median(fast), 2),
                "spark_s": [round(s, 2) for s in slow], "spark_median_s": round(statistics.median(slow), 2),
                "ratio": round(statistics.median(fast) / statistics.median(slow), 3),
            }
    print(json.dumps({"lakehouse": str(args.lakehouse), "machine": f"{platform.machine()}, "
                      f"{__import__('os').cpu_count()} cores, Python {platform.python_version()}",
                      "commands": results}, indent=2))


if __name__ == "__main__":
    main()
