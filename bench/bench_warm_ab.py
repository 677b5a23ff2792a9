"""Runtime Spark settings compared in one warm session (issue 15): the fixed cost a run pays when the JVM has
already compiled Spark's code paths, as in a long-lived driver, a notebook or the test suite.

    python bench/bench_warm_ab.py --set "B:spark.sql.ui.explainMode=simple"
    python bench/bench_warm_ab.py --set "B:spark.sql.adaptive.enabled=false" --rounds 4

One landing zone is generated; one untimed run warms the JVM; then each round runs every variant once (the
order rotating round by round), each `Runner.run` (every job, models trained) into a fresh lakehouse over
the same zone, with the variant's SQL settings set on the session for its run and put back after. Variant A
is the session as configured. Prints each run's seconds, and per variant the median and its ratio to A's.
"""
from __future__ import annotations

import argparse
import json
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


def _variants(specs: list[str]) -> dict[str, dict[str, str]]:
    """"NAME:key=value" (repeatable; settings of one name accumulate) -> {name: {key: value}}; A is empty."""
    variants: dict[str, dict[str, str]] = {"A": {}}
    for spec in specs:
        name, sep, setting = spec.partition(":")
        key, eq, value = setting.partition("=")
        if not sep or not eq or not key:
            raise SystemExit(f"--set wants NAME:key=value, not {spec!r}")
        variants.setdefault(name, {})[key] = value
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="NAME:KEY=VALUE",
                        help="a runtime SQL setting of variant NAME (repeatable); A is the session as configured")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    variants = _variants(args.set)
    work = args.work or Path(tempfile.mkdtemp(prefix="atende-warm-ab-"))
    shutil.rmtree(work, ignore_errors=True)
    landing = work / "landing"
    generate_landing_zone(landing, args.customers, args.days, args.seed, workers=1)

    settings = load_settings("local", environ={})
    spark = build_spark_session(settings, app_name="atende-bench-warm-ab")

    def one_run(settings_of_run: dict[str, str], tag: str) -> float:
        before = {key: spark.conf.get(key, None) for key in settings_of_run}
        for key, value in settings_of_run.items():
            spark.conf.set(key, value)
        lake = work / f"lake-{tag}"
        # each run its own model store: a run never scores with another variant's champions
        run_settings = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(
            update={"tracking_uri": f"sqlite:///{work}/mlflow-{tag}.db"})})
        start = time.perf_counter()
        try:
            Runner(spark, run_settings, landing, lake).run()
        finally:
            for key, value in before.items():
                if value is None:
                    spark.conf.unset(key)
                else:
                    spark.conf.set(key, value)
        seconds = time.perf_counter() - start
        shutil.rmtree(lake, ignore_errors=True)
        return seconds

    one_run({}, "warmup")
    names = list(variants)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            s = one_run(variants[name], f"{name}-{r}")
            seconds[name].append(s)
            print(f"round {r + 1} {name}: {s:.1f} s", flush=True)
    medians = {name: statistics.median(v) for name, v in seconds.items()}
    print(json.dumps({
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
        "zone": f"{args.customers} x {args.days}, seed {args.seed}",
        "variants": variants, "seconds": seconds, "median": medians,
        "ratio_to_A": {name: round(m / medians["A"], 3) for name, m in medians.items()},
    }, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
