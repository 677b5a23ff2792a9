"""Where a run's driver time goes between Spark jobs: Python-to-JVM calls per call site (issue 15).

    python bench/bench_py4j.py                              # 50 customers x 2 days (about 260 records)
    python bench/bench_py4j.py --customers 2000 --days 14   # the demo's zone

Building a DataFrame or a Column is a call into the JVM per function, literal and alias (about 0.1 ms each
here); an expression written call by call over a model's parameters can cost seconds before any Spark job runs
(the persona scoring expressions did: 5 s a run). This runs `Runner.run` over one generated zone twice in one
Spark session, each time into a fresh lakehouse: the first warms the JVM, the second is measured with every
py4j call timed and attributed to the innermost frame of this repository on the Python stack ("?": none, such as
pyspark's and py4j's own threads). Calls under 5 ms are the per-call cost of building plans; longer ones are
Spark actions and writes (bench_jobs.py says which jobs they run). Prints one JSON document.
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import py4j.clientserver

from atende.conf import load_settings
from atende.jobs.run import Runner
from atende.lakehouse.spark import build_spark_session
from atende.synthetic.generate import generate_landing_zone

ROOT = str(Path(__file__).resolve().parents[1]) + "/"
SHORT_CALL_SECONDS = 0.005


def _site() -> str:
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(ROOT) and "/site-packages/" not in name and "/bench/" not in name:
            return f"{name[len(ROOT):]}:{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--top", type=int, default=30, help="call sites to list")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-py4j-"))
    work.mkdir(parents=True, exist_ok=True)
    landing = work / "landing"
    if not landing.exists():
        generate_landing_zone(landing, args.customers, args.days, args.seed)

    # site -> [short calls, their seconds, long calls, their seconds]
    calls: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0, 0.0])
    timing = False
    send = py4j.clientserver.ClientServerConnection.send_command

    def timed_send(connection, command):
        if not timing:
            return send(connection, command)
        started = time.perf_counter()
        try:
            return send(connection, command)
        finally:
            seconds = time.perf_counter() - started
            entry = calls[_site()]
            slot = 0 if seconds < SHORT_CALL_SECONDS else 2
            entry[slot] += 1
            entry[slot + 1] += seconds

    py4j.clientserver.ClientServerConnection.send_command = timed_send
    settings = load_settings("local", environ={})
    spark = build_spark_session(settings, "atende-bench-py4j")
    runs = []
    try:
        for measured in (False, True):
            lake_dir = work / f"lakehouse-{'measured' if measured else 'warm-up'}"
            shutil.rmtree(lake_dir, ignore_errors=True)
            timing = measured
            started = time.perf_counter()
            Runner(spark, settings, landing, lake_dir).run()
            runs.append(round(time.perf_counter() - started, 1))
            timing = False
    finally:
        py4j.clientserver.ClientServerConnection.send_command = send
        spark.stop()

    def total(slot: int) -> float:
        return sum(entry[slot] for entry in calls.values())

    top = sorted(calls.items(), key=lambda kv: -kv[1][1])[: args.top]
    print(json.dumps({
        "zone": {"customers": args.customers, "days": args.days, "seed": args.seed},
        "run_seconds": {"warm_up": runs[0], "measured": runs[1]},
        "short_calls": {"count": int(total(0)), "seconds": round(total(1), 1)},
        "long_calls": {"count": int(total(2)), "seconds": round(total(3), 1)},
        "top_sites_by_short_call_seconds": [
            {"site": site, "short_calls": int(e[0]), "short_seconds": round(e[1], 2), "long_calls": int(e[2]),
             "long_seconds": round(e[3], 1)} for site, e in top],
    }, indent=2))


if __name__ == "__main__":
    main()
