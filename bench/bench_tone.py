"""Tone recommendation quality (issue 7): accuracy against the generator's preferred_tone.

    python bench/bench_tone.py --landing /tmp/tone-demo/landing --lakehouse /tmp/tone-demo/lakehouse
    python bench/bench_tone.py --demo-dir /tmp/tone-demo            # the same, for an `atende demo` folder

Trains the tone model (models/tone.py) on the lakehouse of an `atende run` -- silver interactions and
survey_responses, bronze surveys' comments, gold customer_profiles as the customer context -- scores
every customer, and only then reads `<landing>/_truth/` (the model never sees it):

* each customer_key's person is the majority person of its records (silver interaction_id -> the
  conversation_id / call_id, `wa:<id>` -> the WhatsApp message id, `email:<id>` -> the Message-ID;
  survey response_id as is), as bench/bench_identity.py maps them; that person's preferred_tone is the
  customer's true tone;
* accuracy over every scored customer with a person, and over those with at least one agent-handled
  interaction (an agent_id or agent text) and with own tone evidence (a detected tone with an outcome);
* ceilings a context-only prior cannot beat: knowing each customer's true persona and answering its
  most common tone; and the in-sample best of the context columns given (majority truth per context).
* variants: prior_strength from conf and the empirical-Bayes estimate from the data; adaptation_weight
  0 (satisfaction outcomes only) and 1 (an agent leaving their habitual tone counts as evidence);
* the detector: holdout agreement with the cue labels, agreement with them over every cue-labelled
  reply, and timings. The generator does not write the tone it used, so agreement with the cues is
  the measurable one.

Prints one JSON document.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

DEFAULT_CONTEXT = ("age_band", "income_band", "gender", "preferred_channel", "persona_id")


def record_ids(interactions, surveys):
    """(source, record_id, customer_key) of silver interactions and survey responses, in truth's terms."""
    from pyspark.sql import functions as F

    iid = F.col("interaction_id")
    source = (
        F.when(iid.startswith("wa:"), F.lit("whatsapp")).when(iid.startswith("email:"), F.lit("email"))
        .when(F.col("channel") == "voice", F.lit("calls")).otherwise(F.lit("conversations"))
    )
    a = interactions.select(source.alias("source"), F.regexp_replace(iid, r"^(wa|email):", "").alias("record_id"),
                            "customer_key")
    b = surveys.select(F.lit("surveys").alias("source"), F.col("response_id").alias("record_id"), "customer_key")
    return a.unionByName(b).where(F.col("customer_key").isNotNull())


def customer_truth(spark, interactions, surveys, landing: Path):
    """customer_key -> person_id (majority of its records), persona, preferred_tone."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    truth = spark.read.option("header", True).csv(str(landing / "_truth" / "records.csv")).select(
        "source", "record_id", "person_id")
    people = spark.read.option("header", True).csv(str(landing / "_truth" / "people.csv")).select(
        "person_id", "persona", "preferred_tone")
    counts = record_ids(interactions, surveys).join(truth, ["source", "record_id"], "inner").groupBy(
        "customer_key", "person_id").count()
    best = Window.partitionBy("customer_key").orderBy(F.desc("count"), F.asc("person_id"))
    return counts.withColumn("r", F.row_number().over(best)).where("r = 1").join(
        people, "person_id", "left").select("customer_key", "person_id", "persona", "preferred_tone")


def crm_truth(spark, lake, landing: Path):
    """customer_key -> person via CRM ids, for customers known only from the CRM (no interaction, no survey)."""
    from pyspark.sql import functions as F

    truth = spark.read.option("header", True).csv(str(landing / "_truth" / "records.csv")).where(
        F.col("source") == "crm").select(F.col("record_id").alias("identifier"), "person_id")
    people = spark.read.option("header", True).csv(str(landing / "_truth" / "people.csv")).select(
        "person_id", "persona", "preferred_tone")
    ids = lake.read("silver", "identity_map").where(F.col("identifier_type") == "crm_id").select(
        "identifier", "customer_key")
    return ids.join(truth, "identifier", "inner").groupBy("customer_key").agg(
        F.min("person_id").alias("person_id")).join(people, "person_id", "left")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", type=Path, default=None, help="an `atende demo` folder (landing/ + lakehouse/)")
    parser.add_argument("--landing", type=Path, default=None)
    parser.add_argument("--lakehouse", type=Path, default=None)
    parser.add_argument("--context", default=",".join(DEFAULT_CONTEXT), help="context columns of customer_profiles")
    parser.add_argument("--max-rows", type=int, default=50_000, help="bound on each sample sent to the driver")
    parser.add_argument("--adaptation-weights", default="0,1",
                        help="comma-separated adaptation_weight values to compare (0: outcomes only)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    landing = args.landing or (args.demo_dir / "landing" if args.demo_dir else None)
    lakehouse = args.lakehouse or (args.demo_dir / "lakehouse" if args.demo_dir else None)
    if landing is None or lakehouse is None:
        parser.error("give --demo-dir, or --landing and --lakehouse")

    from pyspark.sql import functions as F

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse
    from atende.models.tone import (
        agent_adaptations,
        detect_tones,
        interaction_outcomes,
        label_tones_by_cues,
        recommend_tone,
        train_tone_model,
    )

    settings = load_settings()
    tone_settings = settings.models.tone
    context = tuple(c for c in args.context.split(",") if c)
    spark = build_spark_session(settings, "atende-bench-tone")
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "landing": str(landing), "lakehouse": str(lakehouse), "context_columns": list(context),
                    "prior_strength": tone_settings.prior_strength}
    try:
        lake = Lakehouse(spark, lakehouse, settings.storage)
        interactions = lake.read("silver", "interactions").cache()
        surveys = lake.read("silver", "survey_responses").cache()
        comments = lake.read("bronze", "surveys").select("response_id", "comment")
        features = lake.read("gold", "customer_profiles").select("customer_key", *context).cache()

        started = time.perf_counter()
        model, metrics = train_tone_model(interactions, surveys, features, tone_settings, context,
                                          survey_comments=comments, max_rows=args.max_rows, seed=args.seed)
        report["train_seconds"] = round(time.perf_counter() - started, 1)
        report["train_metrics"] = metrics

        started = time.perf_counter()
        tones = detect_tones(interactions, model.detector).cache()
        n_tones = tones.count()
        report["detect_seconds"] = round(time.perf_counter() - started, 1)
        labelled = interactions.transform(label_tones_by_cues(tone_settings.catalogue)).where(
            F.col("cue_tone").isNotNull()).select("interaction_id", "cue_tone")
        agree = labelled.join(tones, "interaction_id", "inner").agg(
            F.count("*").alias("n"), F.avg((F.col("cue_tone") == F.col("tone")).cast("double")).alias("agreement")
        ).first()
        report["detector"] = {
            "replies_scored": n_tones,
            "cue_labelled_replies": agree["n"],
            "agreement_with_cues_all_labelled": round(agree["agreement"] or 0.0, 4),
            "holdout_agreement_with_cues": metrics.get("detector_holdout_accuracy"),
            "cue_unlabelled_share": metrics.get("cue_unlabelled_share"),
            "tone_distribution": {r["tone"]: r["count"] for r in tones.groupBy("tone").count().collect()},
        }
        outcomes = interaction_outcomes(interactions, surveys, comments).cache()
        adaptations = agent_adaptations(interactions, tones).cache()

        truth = customer_truth(spark, interactions, surveys, landing)
        crm_only = crm_truth(spark, lake, landing).join(truth.select("customer_key"), "customer_key", "left_anti")
        truth = truth.unionByName(crm_only).cache()
        handled = interactions.where(F.col("agent_id").isNotNull() | F.col("agent_text").isNotNull()).select(
            "customer_key").distinct().withColumn("handled", F.lit(True))
        evidence = tones.join(outcomes, "interaction_id", "inner").select("customer_key").distinct().withColumn(
            "evidence", F.lit(True))

        results = {}
        strengths = {"config": tone_settings.prior_strength}
        if metrics["policy_eb_same_tone_pairs"] >= 200:  # the estimate's own minimum (models.tone)
            strengths["estimated"] = metrics["policy_eb_prior_strength"]
        else:
            report["estimated_prior_strength_skipped"] = (
                f"only {metrics['policy_eb_same_tone_pairs']:.0f} same-tone pairs of interactions in the sample")
        variants = [(name, k, float(w)) for name, k in strengths.items()
                    for w in args.adaptation_weights.split(",") if w]
        for name, strength, weight in variants:
            policy = dataclasses.replace(model.policy, adaptation_weight=weight, prior_strength=strength)
            started = time.perf_counter()
            recs = recommend_tone(features, tones, outcomes, policy, adaptations=adaptations)
            scored = (recs.join(truth, "customer_key", "inner").join(handled, "customer_key", "left")
                      .join(evidence, "customer_key", "left")
                      .withColumn("hit", (F.col("tone") == F.col("preferred_tone")).cast("double"))).cache()

            def acc(frame):
                r = frame.agg(F.count("*").alias("n"), F.avg("hit").alias("a"), F.avg("tone_confidence").alias("c")).first()
                return {"customers": r["n"], "accuracy": round(r["a"] or 0.0, 4), "mean_confidence": round(r["c"] or 0.0, 4)}

            res = {
                "all_customers": acc(scored),
                "with_agent_handled_interaction": acc(scored.where(F.col("handled"))),
                "with_own_tone_evidence": acc(scored.where(F.col("evidence"))),
                "without_own_tone_evidence": acc(scored.where(F.col("evidence").isNull())),
                "score_seconds": round(time.perf_counter() - started, 1),
                "recommended_tone_share": {r["tone"]: r["count"] for r in scored.groupBy("tone").count().collect()},
            }
            # calibration: accuracy per confidence band
            bands = scored.withColumn("band", F.floor(F.col("tone_confidence") * 5) / 5).groupBy("band").agg(
                F.count("*").alias("n"), F.avg("hit").alias("accuracy")).orderBy("band").collect()
            res["accuracy_by_confidence_band"] = {f"{r['band']:.1f}": {"n": r["n"], "accuracy": round(r["accuracy"], 4)}
                                                  for r in bands}
            results[f"prior_strength={name}({strength:.3g}),adaptation_weight={weight:g}"] = res
            scored.unpersist()
        report["recommendation"] = results
        customers = recs.select("customer_key").count()
        report["customers_scored"] = customers
        report["customers_with_truth"] = truth.count()

        # ceilings of a context-only prior, over the customers evaluated
        evaluated = features.join(truth, "customer_key", "inner").cache()
        n = evaluated.count()
        persona_best = evaluated.groupBy("persona", "preferred_tone").count().groupBy("persona").agg(
            F.max("count").alias("m")).agg(F.sum("m")).first()[0]
        cols = [F.coalesce(F.col(c).cast("string"), F.lit("<null>")).alias(c) for c in context]
        context_best = evaluated.select(*cols, "preferred_tone").groupBy(*context, "preferred_tone").count().groupBy(
            *context).agg(F.max("count").alias("m")).agg(F.sum("m")).first()[0]
        majority = evaluated.groupBy("preferred_tone").count().agg(F.max("count")).first()[0]
        report["ceilings"] = {
            "customers": n,
            "true_persona_known_context_only": round(persona_best / n, 4) if n else None,
            "context_columns_in_sample_best": round(context_best / n, 4) if n else None,
            "single_most_common_tone": round(majority / n, 4) if n else None,
            "note": ("no context-only prior can beat true_persona_known (the generator draws preferred_tone from "
                     "the persona's tone distribution); context_columns_in_sample_best is the in-sample optimum "
                     "of the given columns with truth labels, an optimistic bound"),
        }
        ev = evaluated.join(evidence, "customer_key", "left")
        report["share_of_customers_with_own_tone_evidence"] = round(
            ev.where(F.col("evidence")).count() / n, 4) if n else None
    finally:
        spark.stop()
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
