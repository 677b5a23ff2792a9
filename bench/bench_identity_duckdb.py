"""Identity's over-merge guards, both routes on the same inputs: in Spark and on the driver in DuckDB (issue 15).

    python bench/bench_identity_duckdb.py --lakehouse L                # a lakehouse a run wrote (its bronze is read)
    python bench/bench_identity_duckdb.py --lakehouse L --rounds 3

Reads the lakehouse's bronze (nothing is written), builds the observations and the resolution's inputs as the
silver step does (`pipelines.identity.resolution`'s own stage functions: the identifiers per record, the units,
the CRM customers, the names), then times, warm and in one process, `--rounds` times each:

- the Spark route: `_crm_reach`, `_name_conflicts` and `_hubs`, each materialised before the next;
- the driver route: `guards_sql.guards_on_driver` whole (its inputs collected through Arrow, the guards as DuckDB
  SQL, the results back as Spark frames).

Then both routes' outputs are compared row for row (the identifiers reaching too many CRM customers, the name
conflicts, the hubs, the CRM customers each held-back identifier reaches); a difference fails the script.
Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
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
    from atende.pipelines.identity import assign_email_threads, build_identifier_observations, distinct_email_messages
    from atende.pipelines.identity import resolution as R
    from atende.pipelines.identity.graph import materialise
    from atende.pipelines.identity.guards_sql import guards_on_driver

    settings = load_settings("local", conf_file=args.conf, environ={})
    cfg = settings.identity
    spark = build_spark_session(settings, "atende-bench-identity-duckdb")
    ident = ["identifier_type", "identifier"]
    try:
        lake = Lakehouse(spark, args.lakehouse, settings.storage)
        bronze = {s: lake.read_or_empty("bronze", s, schemas.BRONZE[s]) for s in schemas.SOURCES}
        threads = materialise(assign_email_threads(distinct_email_messages(bronze["email"])))
        observations = build_identifier_observations(bronze, settings, email_threads=threads).cache()
        n_observations = observations.count()
        # the guards' inputs, as the pipeline's stages give them (materialised there)
        company = R._company_identifiers(observations, cfg)
        obs = R._record_identifiers(observations, company, R._blocklisted(cfg))
        n_rows = obs.count()
        groups = materialise(R._groups(observations))
        attributes, names = R._attributes_and_names(observations)
        unit_of = R._units(groups)
        crm = R._crm_customers(obs, attributes, names, cfg)
        customer_names = materialise(crm.customer_names)

        def timed(compute):
            started = time.perf_counter()
            value = compute()
            return value, round(time.perf_counter() - started, 2)

        spark_rounds, driver_rounds = [], []
        for _ in range(args.rounds):
            reach, t_reach = timed(lambda: R._crm_reach(obs, unit_of, crm.crm_customers, cfg))
            conflicting, t_conf = timed(lambda r=reach: materialise(
                R._name_conflicts(r, names, unit_of, customer_names, cfg)))
            hubs, t_hubs = timed(lambda r=reach, c=conflicting: materialise(R._hubs(r, c, cfg)))
            spark_rounds.append({"crm_reach": t_reach, "name_conflicts": t_conf, "hubs": t_hubs,
                                 "total": round(t_reach + t_conf + t_hubs, 2)})
            print(f"spark round {len(spark_rounds)}: {spark_rounds[-1]}", file=sys.stderr, flush=True)
            guards, t_driver = timed(lambda: guards_on_driver(obs, unit_of, crm.crm_customers, names, customer_names,
                                                              cfg, max_rows=max(n_rows, 1)))
            driver_rounds.append(t_driver)
            print(f"driver round {len(driver_rounds)}: {t_driver} s", file=sys.stderr, flush=True)

        held = reach.shared.select(*ident).unionByName(conflicting.select(*ident)).unionByName(hubs.select(*ident))
        compared = {}
        for label, theirs, ours, cols in (
            ("shared", reach.shared, guards.shared, [*ident, "crm_customers"]),
            ("name_conflicts", conflicting, guards.conflicting, [*ident, "crm_customers"]),
            ("hubs", hubs, guards.hubs, [*ident, "partners", "p_type", "crm_customers"]),
            ("held_reached", reach.reached.join(held, on=ident, how="left_semi"), guards.reached, [*ident, "crm"]),
        ):
            a, b = theirs.select(*cols), ours.select(*cols)
            differing = a.exceptAll(b).count() + b.exceptAll(a).count()
            if differing:
                raise SystemExit(f"the driver's {label} differ from Spark's in {differing} rows: "
                                 "pipelines/identity/guards_sql.py no longer follows resolution.py")
            compared[label] = a.count()
    finally:
        spark.stop()
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "duckdb": duckdb.__version__},
        "lakehouse": str(args.lakehouse),
        "observations": n_observations,
        "identifier_rows": n_rows,
        "spark_seconds": spark_rounds,
        "driver_seconds": driver_rounds,
        "same_rows": compared,
    }, indent=2))


if __name__ == "__main__":
    main()
