"""Identity-resolution quality (issue 4): pairwise precision, recall and F1 of record -> customer_key.

    python bench/bench_identity.py                                   # generate 2,000 customers x 14 days (seed 7), run, score
    python bench/bench_identity.py --customers 20000 --days 30       # larger
    python bench/bench_identity.py --landing L --lakehouse H         # score an existing run (landing keeps _truth/)
    python bench/bench_identity.py --landing L --lakehouse H --resolve-only
        # re-run identity resolution (and the silver interactions / survey responses it keys) in memory over
        # the run's bronze tables with the current code and conf, and score that: writes nothing
    python bench/bench_identity.py --landing L --lakehouse H --oracle
        # and the identity oracle on the same records (the recall ceiling, issue 17 item 7)
    python bench/bench_identity.py --seed 11 --ingest-only --baseline-without-hubs
        # generate, ingest only (bronze), resolve in memory and score, with the hub guard
        # (identity.max_partners_per_identifier) and, in the same session, without it

Records scored, each joined to `<landing>/_truth/records.csv` (source, record_id, person_id):
* silver `interactions`: `interaction_id` -> conversation_id / call_id as is; `wa:<id>` -> the WhatsApp
  message id; `email:<id>` -> the e-mail Message-ID (the thread's first message);
* silver `survey_responses`: `response_id`;
* CRM records: silver `identity_map` rows with identifier_type 'crm_id' (crm_id -> the profile's key).

Pairwise scores: a predicted pair is two records sharing a customer_key, a true pair two records
of the same person. precision = true pairs predicted / predicted pairs, recall = true pairs
predicted / true pairs. Pairs are counted in Spark from group sizes (n*(n-1)/2 per key, per person,
and per (key, person)). A record whose customer_key is null is its own singleton cluster (it
predicts no pair). Scores are given per record type (pairs inside that type) and overall (all
scored records together, so pairs across types count too).

Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def generate(out: Path, customers: int, days: int, seed: int) -> dict:
    from atende.synthetic.generate import generate_landing_zone

    started = time.perf_counter()
    stats = generate_landing_zone(out, customers, days, seed)
    return {"seconds": round(time.perf_counter() - started, 1), "records": stats.records, "files": stats.files}


def run_ingest(spark, settings, landing: Path, lakehouse: Path) -> dict:
    """Only the ingest job (landing -> bronze): all that --resolve-only scoring needs."""
    from atende.jobs.bookkeeping import JobRecord, utc_now
    from atende.jobs.run import Runner, _landing_dates

    runner = Runner(spark, settings, landing, lakehouse)
    started = time.perf_counter()
    runner.ingest(JobRecord(job="ingest", started_at=utc_now()), landing, sorted(_landing_dates(landing)))
    return {"seconds": round(time.perf_counter() - started, 1), "jobs": {"ingest": round(time.perf_counter() - started, 1)}}


def run_pipeline(spark, settings, landing: Path, lakehouse: Path) -> dict:
    from atende.jobs.run import Runner

    runner = Runner(spark, settings, landing, lakehouse)
    started = time.perf_counter()
    summary = runner.run()
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "jobs": {j.job: round(j.seconds, 1) for j in summary.jobs},
        "run_id": summary.run_id,
    }


def resolve_in_memory(spark, settings, lake):
    """(interactions, survey_responses, identity_map) computed from the lakehouse's bronze tables by the
    current pipeline code, as the silver job would write them (nothing is written)."""
    from datetime import datetime, timezone

    from atende.pipelines import schemas
    from atende.pipelines.identity import build_identifier_observations, resolve_identities
    from atende.pipelines.interactions import build_interactions
    from atende.pipelines.surveys import build_survey_responses

    bronze = {s: lake.read_or_empty("bronze", s, schemas.BRONZE[s]) for s in schemas.SOURCES}
    now = datetime.now(timezone.utc)
    observations = build_identifier_observations(bronze, settings).cache()
    identity_map, _merges, record_keys = resolve_identities(observations, None, settings, "bench", now)
    record_keys = record_keys.cache()
    interactions = build_interactions(bronze, record_keys, settings, "bench", now).cache()
    responses = build_survey_responses(bronze["surveys"], interactions, record_keys, "bench", now)
    return interactions, responses, identity_map.cache()


def predicted_records(lake, frames=None):
    """(type, source, record_id, customer_key) for every scored silver record (`frames`: the silver
    (interactions, survey_responses, identity_map) to score instead of the lakehouse's)."""
    from pyspark.sql import functions as F

    if frames is None:
        frames = (lake.read("silver", "interactions"), lake.read("silver", "survey_responses"),
                  lake.read("silver", "identity_map"))
    interactions_table, responses_table, map_table = frames
    inter = interactions_table.select("interaction_id", "channel", "customer_key")
    iid = F.col("interaction_id")
    source = (
        F.when(iid.startswith("wa:"), F.lit("whatsapp"))
        .when(iid.startswith("email:"), F.lit("email"))
        .when(F.col("channel") == "voice", F.lit("calls"))
        .otherwise(F.lit("conversations"))
    )
    record_id = F.regexp_replace(iid, r"^(wa|email):", "")
    interactions = inter.select(
        F.concat(F.lit("interaction:"), source).alias("type"), source.alias("source"),
        record_id.alias("record_id"), "customer_key",
    )
    surveys = responses_table.select(
        F.lit("survey_response").alias("type"), F.lit("surveys").alias("source"),
        F.col("response_id").alias("record_id"), "customer_key",
    )
    crm = map_table.where(F.col("identifier_type") == "crm_id").select(
        F.lit("crm").alias("type"), F.lit("crm").alias("source"),
        F.col("identifier").alias("record_id"), "customer_key",
    )
    return interactions.unionByName(surveys).unionByName(crm)


def _pairs(col):
    from pyspark.sql import functions as F

    return (F.col(col) * (F.col(col) - 1) / 2).cast("long")


def pairwise(scored, group_col: str | None) -> dict:
    """Pair counts and scores per value of group_col (None: everything together)."""
    from pyspark.sql import functions as F

    def sum_pairs(keys: list[str], name: str):
        by = ([group_col] if group_col else []) + keys
        sizes = scored.groupBy(*by).agg(F.count("*").alias("n"))
        return sizes.groupBy(*([group_col] if group_col else [])).agg(
            F.sum(_pairs("n")).alias(name), *([F.count("*").alias(name + "_groups")] if len(keys) == 1 else [])
        )

    g = [group_col] if group_col else []
    base = scored.groupBy(*g).agg(
        F.count("*").alias("records"),
        F.sum(F.col("customer_key_raw").isNull().cast("long")).alias("null_key_records"),
    )
    pred = sum_pairs(["key"], "predicted_pairs")
    true = sum_pairs(["person_id"], "true_pairs")
    both = sum_pairs(["key", "person_id"], "correct_pairs")
    if g:
        table = base.join(pred, g).join(true, g).join(both, g)
    else:
        table = base.crossJoin(pred).crossJoin(true).crossJoin(both)
    out = {}
    for row in table.collect():
        r = row.asDict()
        tp, pp, tt = r["correct_pairs"] or 0, r["predicted_pairs"] or 0, r["true_pairs"] or 0
        precision = tp / pp if pp else None
        recall = tp / tt if tt else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall > 0 else None)
        out[r[group_col] if group_col else "overall"] = {
            "records": r["records"],
            "null_key_records": r["null_key_records"],
            "predicted_keys": r["predicted_pairs_groups"],
            "true_persons": r["true_pairs_groups"],
            "predicted_pairs": pp,
            "true_pairs": tt,
            "correct_pairs": tp,
            "precision": round(precision, 4) if precision is not None else None,
            "recall": round(recall, 4) if recall is not None else None,
            "f1": round(f1, 4) if f1 is not None else None,
        }
    return out


def oracle_components(spark, settings, lake, truth, with_names: bool):
    """(source, record_id, component) of the identity oracle (issue 17 item 7): every record of every source
    linked to another exactly when they share an identifier (the pipeline's own observations of bronze,
    normalised as it normalises them) *and* belong to the same true person — so no identifier ever joins
    two persons, and every identifier joins all of one person's records that carry it — plus, `with_names`,
    every record of a person that carries a typed name linked to every other that does (perfect name
    matching). Birth dates are left out (they never link by themselves). Records without an observation
    are in no component (singletons)."""
    from pyspark.sql import functions as F

    from atende.pipelines import schemas
    from atende.pipelines.identity import build_identifier_observations
    from atende.pipelines.identity.common import BIRTH_DATE, NAME, PROFILE_NAME
    from atende.pipelines.identity.graph import connected_components

    bronze = {s: lake.read_or_empty("bronze", s, schemas.BRONZE[s]) for s in schemas.SOURCES}
    observed = build_identifier_observations(bronze, settings).where(
        F.col("identifier").isNotNull() & (F.col("identifier_type") != BIRTH_DATE)
    ).join(truth, ["source", "record_id"])
    is_name = F.col("identifier_type").isin(NAME, PROFILE_NAME)
    if not with_names:
        observed = observed.where(~is_name)
    node = F.when(is_name, F.concat(F.lit("n|"), "person_id")).otherwise(
        F.concat_ws("|", F.lit("i"), "person_id", "identifier_type", "identifier"))
    record = F.concat_ws("|", F.lit("r"), "source", "record_id")
    components = connected_components(observed.select(record.alias("src"), node.alias("dst")))
    parts = F.split(F.col("node"), r"\|", 3)
    return components.where(F.col("node").startswith("r|")).select(
        parts[1].alias("source"), parts[2].alias("record_id"), "component")


def oracle_scores(spark, settings, lake, truth, scored) -> dict:
    """The pairwise scores of `oracle_components` over the same scored records as the pipeline's, without
    and with perfect names: the recall any resolution from these identifiers (and names) can reach."""
    from pyspark.sql import functions as F

    out = {}
    for label, with_names in (("identifiers_within_person", False), ("identifiers_and_perfect_names", True)):
        components = oracle_components(spark, settings, lake, truth, with_names)
        keyed = scored.drop("key", "customer_key_raw").join(components, ["source", "record_id"], "left").select(
            "type", "source", "record_id", "person_id",
            F.coalesce("component", F.concat(F.lit("<single>:"), "source", F.lit(":"), "record_id")).alias("key"),
        ).withColumn("customer_key_raw", F.col("key")).cache()
        out[label] = {"overall": pairwise(keyed, None)["overall"], "per_type": pairwise(keyed, "type")}
        keyed.unpersist()
    return out


def score(spark, settings, landing: Path, lakehouse: Path, worst: int, resolve_only: bool = False,
          dump: Path | None = None, oracle: bool = False) -> dict:
    from pyspark.sql import functions as F

    from atende.lakehouse.tables import Lakehouse

    lake = Lakehouse(spark, lakehouse, settings.storage)
    truth = spark.read.option("header", True).csv(str(landing / "_truth" / "records.csv")).select(
        "source", "record_id", "person_id"
    )
    predicted = predicted_records(lake, resolve_in_memory(spark, settings, lake) if resolve_only else None).cache()
    joined = predicted.join(truth, ["source", "record_id"], "left").cache()
    # silver records the truth does not know (should be none), and truth records silver lacks
    coverage = {
        r["type"]: {"silver_records": r["silver"], "without_truth": r["no_truth"]}
        for r in joined.groupBy("type").agg(
            F.count("*").alias("silver"), F.sum(F.col("person_id").isNull().cast("long")).alias("no_truth")
        ).collect()
    }
    truth_sources = {"conversations", "calls", "surveys", "crm"}  # for whatsapp/email only a thread's first id is a record
    missing = truth.where(F.col("source").isin(*truth_sources)).join(
        predicted.select("source", "record_id"), ["source", "record_id"], "left_anti"
    ).groupBy("source").count().collect()
    for name in ("interaction:conversations", "interaction:calls", "survey_response", "crm"):
        coverage.setdefault(name, {})["truth_records_missing_from_silver"] = 0
    for r in missing:
        name = {"surveys": "survey_response", "crm": "crm"}.get(r["source"], "interaction:" + r["source"])
        coverage.setdefault(name, {})["truth_records_missing_from_silver"] = r["count"]

    scored = joined.where(F.col("person_id").isNotNull()).select(
        "type", "source", "record_id", "person_id",
        F.col("customer_key").alias("customer_key_raw"),
        # a null key is a singleton cluster: no pair predicted for it
        F.coalesce("customer_key", F.concat(F.lit("<null>:"), "source", F.lit(":"), "record_id")).alias("key"),
    ).cache()
    if dump is not None:
        scored.select("type", "source", "record_id", "person_id", "customer_key_raw").coalesce(1).write.mode(
            "overwrite").option("header", True).csv(str(dump))
    result = {"per_type": pairwise(scored, "type"), "overall": pairwise(scored, None)["overall"],
              "coverage": coverage}
    if oracle:
        result["oracle"] = oracle_scores(spark, settings, lake, truth, scored)
        ceiling = result["oracle"]["identifiers_and_perfect_names"]["overall"]["recall"]
        if ceiling:
            result["recall_share_of_oracle"] = round(result["overall"]["recall"] / ceiling, 3)

    # where precision is lost: keys holding the most persons (with their records); recall: persons split most
    over = scored.where(F.col("customer_key_raw").isNotNull()).groupBy("key").agg(
        F.countDistinct("person_id").alias("persons"), F.count("*").alias("records"),
        F.collect_set("type").alias("types"),
    ).where(F.col("persons") > 1)
    result["keys_with_several_persons"] = over.count()
    result["worst_keys"] = [r.asDict() for r in over.orderBy(F.desc("persons"), F.desc("records")).limit(worst).collect()]
    split = scored.groupBy("person_id").agg(
        F.countDistinct("key").alias("keys"), F.count("*").alias("records"),
        F.sum(F.col("customer_key_raw").isNull().cast("long")).alias("null_key_records"),
    ).where(F.col("keys") > 1)
    result["persons_with_several_keys"] = split.count()
    result["most_split_persons"] = [r.asDict() for r in split.orderBy(F.desc("keys")).limit(worst).collect()]
    for frame in (scored, joined, predicted):
        frame.unpersist()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--landing", type=Path, default=None, help="existing landing zone (with _truth/)")
    parser.add_argument("--lakehouse", type=Path, default=None,
                        help="existing lakehouse of a run over --landing: score it, do not run")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder, removed)")
    parser.add_argument("--resolve-only", action="store_true",
                        help="with --landing and --lakehouse: re-resolve identities from the run's bronze in memory "
                             "(current code and conf) and score that")
    parser.add_argument("--ingest-only", action="store_true",
                        help="without --lakehouse: run only the ingest job, then score with --resolve-only")
    parser.add_argument("--baseline-without-hubs", action="store_true",
                        help="with --resolve-only: also score the same bronze with the hub guard off "
                             "(identity.max_partners_per_identifier empty), in the same session")
    parser.add_argument("--dump", type=Path, default=None,
                        help="write the scored records (type, source, record_id, person_id, customer_key) as CSV here")
    parser.add_argument("--worst", type=int, default=5, help="how many worst keys / most split persons to list")
    parser.add_argument("--oracle", action="store_true",
                        help="also score the identity oracle on the same records (identifiers linked only within "
                             "their true person, then with perfect names too): the recall ceiling")
    args = parser.parse_args()
    if args.lakehouse and not args.landing:
        parser.error("--lakehouse needs --landing (for _truth/records.csv)")
    if args.resolve_only and not args.lakehouse:
        parser.error("--resolve-only needs --landing and --lakehouse (a run's bronze tables)")

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session

    work = args.keep or Path(tempfile.mkdtemp(prefix="atende-bench-identity-"))
    report: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    landing = args.landing
    if landing is None:
        landing = work / "landing"
        report["generate"] = {"customers": args.customers, "days": args.days, "seed": args.seed,
                              **generate(landing, args.customers, args.days, args.seed)}
    settings = load_settings()
    spark = build_spark_session(settings, "atende-bench-identity")
    try:
        lakehouse = args.lakehouse
        resolve_only = args.resolve_only or args.ingest_only
        if lakehouse is None:
            lakehouse = work / "lakehouse"
            run = run_ingest if args.ingest_only else run_pipeline
            report["run"] = run(spark, settings, landing, lakehouse)
        started = time.perf_counter()
        report["scores"] = score(spark, settings, landing, lakehouse, args.worst, resolve_only, args.dump,
                                 oracle=args.oracle)
        report["scoring_seconds"] = round(time.perf_counter() - started, 1)
        if args.baseline_without_hubs and resolve_only:
            without = settings.model_copy(update={
                "identity": settings.identity.model_copy(update={"max_partners_per_identifier": {}})})
            report["scores_without_hubs"] = score(spark, without, landing, lakehouse, args.worst, True)
        report["note"] = ("pairwise scores; a record with a null customer_key is a singleton cluster; "
                          "overall includes pairs across record types")
    finally:
        spark.stop()
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
