"""Identity resolution, both routes on the same observations: in Spark and on the driver in DuckDB (issue 15).

    python bench/bench_identity_duckdb.py --lakehouse L                # a lakehouse a run wrote (its bronze is read)
    python bench/bench_identity_duckdb.py --lakehouse L --rounds 3

Reads the lakehouse's bronze and its silver identity map when there is one (nothing is written), builds the
observations as the silver step does (cached, counted), then times, warm and in one process, `--rounds` times each
`resolve_identities_with_report` whole, its four results (map, merges, record keys, exceptions) cached and
counted as the silver step's do:

- the Spark route (`driver_max_rows=0`);
- the driver route (`pipelines.identity.on_driver`: the observations collected through Arrow, every stage as
  DuckDB SQL and scipy's union-find, the results back as Spark frames).

Then both routes' results are compared row for row (the map and merges without their run columns); a difference
fails the script. Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lakehouse", type=Path, required=True, help="a lakehouse a run wrote (bronze is read)")
    parser.add_argument("--rounds", type=int, default=2, help="times each route runs in the one process")
    parser.add_argument("--conf", type=Path, default=None, help="a settings file layered over conf/local.yaml")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not (args.lakehouse / "bronze").is_dir():
        parser.error(f"{args.lakehouse} has no bronze tables")

    import duckdb

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse
    from atende.pipelines import schemas
    from atende.pipelines.identity import (
        assign_email_threads,
        build_identifier_observations,
        distinct_email_messages,
        resolve_identities_with_report,
    )
    from atende.pipelines.identity.graph import materialise

    settings = load_settings("local", conf_file=args.conf, environ={})
    spark = build_spark_session(settings, "atende-bench-identity-duckdb")
    try:
        lake = Lakehouse(spark, args.lakehouse, settings.storage)
        bronze = {s: lake.read_or_empty("bronze", s, schemas.BRONZE[s]) for s in schemas.SOURCES}
        previous = lake.read("silver", "identity_map").cache() if lake.exists("silver", "identity_map") else None
        n_previous = previous.count() if previous is not None else 0
        threads = materialise(assign_email_threads(distinct_email_messages(bronze["email"])))
        observations = build_identifier_observations(bronze, settings, email_threads=threads).cache()
        n_observations = observations.count()
        now = datetime.now(timezone.utc)

        def resolve(driver_max_rows: int):
            started = time.perf_counter()
            r = resolve_identities_with_report(observations, previous, settings, "bench", now,
                                               driver_max_rows=driver_max_rows)
            frames = {"map": r.identity_map.drop("run_id", "_written_at").cache(),
                      "merges": r.merges.drop("run_id", "merged_at").cache(),
                      "record_keys": r.record_keys.cache(), "exceptions": r.exceptions.cache()}
            counts = {name: frame.count() for name, frame in frames.items()}
            return frames, counts, round(time.perf_counter() - started, 2)

        rounds: dict[str, list[float]] = {"spark": [], "driver": []}
        results = {}
        for _ in range(args.rounds):
            for route, bound in (("spark", 0), ("driver", max(n_observations, 1))):
                if route in results:
                    for frame in results[route][0].values():
                        frame.unpersist()
                results[route] = resolve(bound)
                rounds[route].append(results[route][2])
                print(f"{route} round {len(rounds[route])}: {results[route][2]} s {results[route][1]}",
                      file=sys.stderr, flush=True)
        compared = {}
        for name, theirs in results["spark"][0].items():
            ours = results["driver"][0][name]
            differing = theirs.exceptAll(ours).count() + ours.exceptAll(theirs).count()
            if differing:
                raise SystemExit(f"the driver's {name} differ from Spark's in {differing} rows: "
                                 "pipelines/identity/on_driver.py no longer follows resolution.py")
            compared[name] = results["spark"][1][name]
    finally:
        spark.stop()
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "duckdb": duckdb.__version__},
        "lakehouse": str(args.lakehouse),
        "observations": n_observations,
        "previous_map_rows": n_previous,
        "seconds": rounds,
        "same_rows": compared,
    }, indent=2))


if __name__ == "__main__":
    main()
