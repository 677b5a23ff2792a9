"""One run's steps again, timed, on a copy of a kept lakehouse put back to how it was at a moment (issue 15).

    python bench/bench_scale.py --customers 100000 --keep --work W            # keeps W/100000x30/{landing,lakehouse}
    python bench/bench_steps.py --landing W/100000x30/landing --lakehouse W/100000x30/lakehouse \
        --before "2026-12-05 02:58:22" --steps ingest,silver --work /tmp/steps
    py-spy record --idle --rate 10 --format raw -o prof.txt -- python bench/bench_steps.py ...   # where the time goes

`--before` is a UTC time between two runs of the kept lakehouse (ops/runs says when each started and ended: the
extra day of bench_scale started just after the full run ended). Every Delta table of the copy is restored to its
version at that moment (Delta `RESTORE TABLE ... TO TIMESTAMP AS OF`; a table with no commit after it is left as it
is), and the steps then run one at a time (`Runner.run(step=...)`) over the dates pending for each, as `atende run
--step` would (a step finds a date pending only once the step before it has run for it: give them in order, from
the first one the restore undid). Changing the code between two invocations over fresh copies gives an A/B of one
step on data of a size no test builds, without rerunning the history. Prints one JSON document: seconds per step.

A moment inside a run finds nothing pending: a run records its jobs in ops/runs when it ends, so the restored copy
holds no trace of the run's earlier steps. To time the training steps alone, `atende train --lakehouse COPY` on a
plain copy retrains every model and re-scores.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def restore(spark, lake: Path, before: str) -> list[str]:
    """Restore every Delta table under `lake` (folders starting with `_` aside) to its version at `before`; the
    tables left as they were, with the reason."""
    untouched = []
    for log in sorted(lake.glob("**/_delta_log")):
        table = log.parent
        if any(part.startswith("_") for part in table.relative_to(lake).parts):
            continue
        try:
            spark.sql(f"RESTORE TABLE delta.`{table}` TO TIMESTAMP AS OF '{before}'")
        except Exception as error:  # no commit after `before`, or the table did not exist yet
            untouched.append(f"{table.relative_to(lake)}: {str(error).splitlines()[0][:160]}")
    return untouched


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--landing", type=Path, required=True)
    parser.add_argument("--lakehouse", type=Path, required=True, help="the kept lakehouse (left untouched: a copy is used)")
    parser.add_argument("--before", required=True, help="UTC time to restore to, e.g. '2026-12-05 02:58:22'")
    parser.add_argument("--steps", default="ingest,silver", help="comma-separated steps, in order")
    parser.add_argument("--work", type=Path, required=True, help="where the copy goes (replaced if there)")
    parser.add_argument("--conf", type=Path, help="a YAML file over conf/local.yaml, e.g. `models: {retrain: always}` "
                        "to train again (the copy's `_mlflow` store is not restored: its models are found and scored)")
    args = parser.parse_args()

    from atende.conf import load_settings
    from atende.jobs.run import STEPS, Runner
    from atende.lakehouse.spark import build_spark_session

    steps = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        parser.error(f"unknown step(s) {', '.join(unknown)}: the steps are {', '.join(STEPS)}")
    if not (args.lakehouse / "ops" / "runs").is_dir():
        parser.error(f"{args.lakehouse} is not a lakehouse a run wrote (no ops/runs)")
    copy = args.work / "lakehouse"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(args.lakehouse, copy)  # file times kept: Delta's commit times come from them
    settings = load_settings("local", conf_file=args.conf, environ={})
    spark = build_spark_session(settings, "atende-bench-steps")
    try:
        started = time.perf_counter()
        untouched = restore(spark, copy, args.before)
        seconds = {"restore": round(time.perf_counter() - started, 1)}
        for step in steps:
            started = time.perf_counter()
            Runner(spark, settings, args.landing, copy).run(step=step)
            seconds[step] = round(time.perf_counter() - started, 1)
            print(f"{step}: {seconds[step]} s", file=sys.stderr, flush=True)
    finally:
        spark.stop()
    print(json.dumps({"before": args.before, "seconds": seconds, "left_as_they_were": untouched}, indent=2))


if __name__ == "__main__":
    main()
