"""Where identity resolution's time goes: each stage of `resolve_identities_with_report`'s Spark route, timed alone.

    python bench/bench_identity_stages.py --lakehouse L                 # a lakehouse a run wrote (its bronze)
    python bench/bench_identity_stages.py --lakehouse L --rounds 2      # the second round is the warm one

Reads the lakehouse's bronze tables (nothing is written), builds the e-mail threads and the identifier
observations as the silver step does (cached, counted), then runs the resolution's stages in its order, each
one computed before the next starts, and prints each stage's seconds. The stages are the pipeline's own functions
(`pipelines.identity.resolution`), called here one by one: after the last round the record keys they give are
compared with `resolve_identities_with_report`'s, so the script fails rather than time something the pipeline no
longer does. These are the Spark route's stages; the pipeline runs them all on the driver up to
`on_driver.DRIVER_MAX_ROWS` observations (`bench_identity_duckdb.py` times both routes), so the final comparison
also checks the two routes end in the same keys.

Four stages the pipeline leaves lazy (name conflicts, hubs, tie candidates, record components) are checkpointed
here so that each has a time of its own: the rounds' totals are this script's, a few jobs more than the pipeline
runs, and compare with each other, not with a silver step. A stage's figure includes what it reads that is not
computed yet, so the order matters and is the pipeline's. Prints one JSON document.
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
    parser.add_argument("--rounds", type=int, default=2, help="times the stages run in the one session")
    parser.add_argument("--conf", type=Path, default=None, help="a settings file layered over conf/local.yaml")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not (args.lakehouse / "bronze").is_dir():
        parser.error(f"{args.lakehouse} has no bronze tables")

    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

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
    from atende.pipelines.identity import resolution as R
    from atende.pipelines.identity.graph import connected_components, materialise

    settings = load_settings("local", conf_file=args.conf, environ={})
    spark = build_spark_session(settings, "atende-bench-identity-stages")
    rounds: list[dict[str, float]] = []
    try:
        lake = Lakehouse(spark, args.lakehouse, settings.storage)
        bronze = {s: lake.read_or_empty("bronze", s, schemas.BRONZE[s]) for s in schemas.SOURCES}
        seconds: dict[str, float] = {}

        def timed(name: str, compute):
            started = time.perf_counter()
            value = compute()
            seconds[name] = round(time.perf_counter() - started, 2)
            return value

        threads = timed("email_threads", lambda: materialise(assign_email_threads(distinct_email_messages(bronze["email"]))))
        observations = build_identifier_observations(bronze, settings, email_threads=threads).cache()
        n_observations = timed("observations", observations.count)
        inputs = dict(seconds)
        cfg = settings.identity

        def in_stages() -> DataFrame:
            """The resolution's record keys, each stage timed (`seconds`) as it is computed."""
            blocked = R._blocklisted(cfg)
            company = timed("company_identifiers", lambda: R._company_identifiers(observations, cfg))
            obs = timed("record_identifiers", lambda: R._record_identifiers(observations, company, blocked))
            groups = timed("groups", lambda: materialise(R._groups(observations)))
            attributes, names = timed("attributes_and_names", lambda: R._attributes_and_names(observations))
            unit_of = timed("units", lambda: R._units(groups))
            crm = timed("crm_customers", lambda: R._crm_customers(obs, attributes, names, cfg))
            reach = timed("crm_reach", lambda: R._crm_reach(obs, unit_of, crm.crm_customers, cfg))
            conflicting = timed("name_conflicts", lambda: materialise(
                R._name_conflicts(reach, names, unit_of, crm.customer_names, cfg)))
            hubs = timed("hubs", lambda: materialise(R._hubs(reach, conflicting, cfg)))
            held = timed("held_back", lambda: R._held_back(
                R.Guards(shared=reach.shared, conflicting=conflicting, hubs=hubs, reached=reach.reached), cfg))
            records = timed("records", lambda: materialise(R._records(obs, groups, attributes)))
            linked = timed("graph_components", lambda: connected_components(
                R._graph_edges(obs, held, records, unit_of, crm.dup_edges)))
            ties = timed("tie_candidates", lambda: materialise(R._tie_candidates(held, reach.reached, cfg)))
            components = timed("placed_components", lambda: R._placed_components(linked, obs, names, crm, ties, cfg))
            ids, comp_keys = timed("component_keys", lambda: R._component_keys(obs, components, cfg))
            record_components = timed("record_components", lambda: materialise(
                R._record_components(records, components, comp_keys)))
            identity = timed("identifier_keys", lambda: R._identifier_keys(obs, ids, comp_keys, held, record_components))
            return timed("record_keys", lambda: R._record_keys(R._own_keys(obs, identity, held, record_components), groups))

        for _ in range(args.rounds):
            seconds.clear()
            record_keys = in_stages()
            rounds.append({**seconds, "total": round(sum(seconds.values()), 1)})
            print(f"round {len(rounds)}: {rounds[-1]['total']} s", file=sys.stderr, flush=True)
        # the stages above are the pipeline's: the same keys as the pipeline's own resolution
        whole = resolve_identities_with_report(observations, None, settings, "bench", datetime.now(timezone.utc))
        differing = record_keys.exceptAll(whole.record_keys).count() + whole.record_keys.exceptAll(record_keys).count()
        if differing:
            raise SystemExit(f"the stages' record keys differ from resolve_identities_with_report's in {differing} rows: "
                             "this script no longer follows the pipeline")
        n_records = record_keys.count()
        n_keys = record_keys.select(F.countDistinct("customer_key")).first()[0]
    finally:
        spark.stop()
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "lakehouse": str(args.lakehouse),
        "observations": n_observations, "records": n_records, "customer_keys": n_keys,
        "inputs_seconds": inputs,
        "rounds": rounds,
    }, indent=2))


if __name__ == "__main__":
    main()
