"""Foundation benchmark: generator throughput and demo wall time, measured in one run.

    python bench/bench_foundation.py                      # 100,000 customers x 30 days, then `atende demo`
    python bench/bench_foundation.py --customers 20000 --days 7 --skip-demo

Prints one JSON document; bench/RESULTS.md records the figures with the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bytes_under(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def bench_generator(customers: int, days: int, seed: int, workers: int | None, keep: Path | None) -> dict:
    from atende.synthetic.generate import generate_landing_zone

    out = keep or Path(tempfile.mkdtemp(prefix="atende-bench-")) / "landing"
    started = time.perf_counter()
    stats = generate_landing_zone(out, customers, days, seed, workers=workers)
    seconds = time.perf_counter() - started
    size = _bytes_under(out)
    result = {
        "customers": customers,
        "days": days,
        "workers": workers or os.cpu_count(),
        "seconds": round(seconds, 2),
        "records": stats.records,
        "files": stats.files,
        "bytes": size,
        "customers_per_second": round(customers / seconds, 1),
        "records_per_second": round(stats.records / seconds, 1),
        "megabytes_per_second": round(size / seconds / 1e6, 2),
        "per_source": {k: v.records for k, v in sorted(stats.sources.items())},
    }
    if keep is None:
        shutil.rmtree(out.parent, ignore_errors=True)
    return result


def bench_demo() -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="atende-demo-bench-"))
    atende = Path(sys.executable).parent / "atende"
    command = [str(atende)] if atende.exists() else [sys.executable, "-m", "atende.jobs.cli"]
    started = time.perf_counter()
    done = subprocess.run(command + ["demo", "--dir", str(workdir / "demo")], capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    shutil.rmtree(workdir, ignore_errors=True)
    if done.returncode != 0:
        raise SystemExit(f"demo failed: {done.stderr.strip()[-2000:]}")
    return {"seconds": round(seconds, 1), "summary_tail": done.stdout.strip().splitlines()[-12:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="write the landing zone here and keep it")
    parser.add_argument("--skip-demo", action="store_true")
    args = parser.parse_args()
    report = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "generator": bench_generator(args.customers, args.days, args.seed, args.workers, args.keep),
    }
    if not args.skip_demo:
        report["demo"] = bench_demo()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
