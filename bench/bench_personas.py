"""Persona assignment quality (issue 6): adjusted Rand index against `_truth/people.csv`.

    python bench/bench_personas.py                                 # generate 2,000 customers x 14 days (seed 7), run, score
    python bench/bench_personas.py --landing L --lakehouse H       # score an existing run (landing keeps _truth/)
    python bench/bench_personas.py --landing L --lakehouse H --refit
        # refit the persona model in memory with the current code and conf on gold/customer_features
        # (nothing is registered or written) and score that assignment too, next to an oracle: the same
        # latent class model with its parameters estimated from the true personas (in-sample, so an
        # optimistic ceiling for what these features can tell apart)

Each customer_key is mapped to the person most of its records belong to (silver interactions,
survey responses, orders, actions and CRM ids, joined to `_truth/records.csv`); the ARI compares
`gold/persona_segments.persona_id` with the person's true persona over those customers. Also
reported: the ARI over customers with a CRM record, over customers with at least one interaction,
and per-persona purity. Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def customer_persons(spark, lake, landing: Path):
    """customer_key -> the person most of its records belong to (ties: the smallest person_id)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    truth = spark.read.option("header", True).csv(str(landing / "_truth" / "records.csv"))
    iid = F.col("interaction_id")
    source = (F.when(iid.startswith("wa:"), "whatsapp").when(iid.startswith("email:"), "email")
              .when(F.col("channel") == "voice", "calls").otherwise("conversations"))
    records = (
        lake.read("silver", "interactions").select(source.alias("source"),
                                                   F.regexp_replace(iid, r"^(wa|email):", "").alias("record_id"),
                                                   "customer_key")
        .unionByName(lake.read("silver", "survey_responses").select(
            F.lit("surveys").alias("source"), F.col("response_id").alias("record_id"), "customer_key"))
        .unionByName(lake.read("silver", "identity_map").where(F.col("identifier_type") == "crm_id").select(
            F.lit("crm").alias("source"), F.col("identifier").alias("record_id"), "customer_key"))
    )
    for table, id_col in (("orders", "order_id"), ("actions", "action_id")):
        if lake.exists("silver", table):
            records = records.unionByName(lake.read("silver", table).select(
                F.lit(table).alias("source"), F.col(id_col).alias("record_id"), "customer_key"))
    votes = (records.where(F.col("customer_key").isNotNull())
             .join(truth, on=["source", "record_id"], how="inner")
             .groupBy("customer_key", "person_id").count())
    best = Window.partitionBy("customer_key").orderBy(F.col("count").desc(), F.col("person_id"))
    return votes.withColumn("_r", F.row_number().over(best)).where("_r = 1").select("customer_key", "person_id")


def score_assignment(assigned, truth_people) -> dict:
    """ARI and purity of a pandas frame (customer_key, persona_id, person_id, has_crm, interactions_count)."""
    from sklearn.metrics import adjusted_rand_score

    frame = assigned.merge(truth_people, on="person_id", how="inner")

    def ari(rows):
        return round(float(adjusted_rand_score(rows["persona"], rows["persona_id"])), 4) if len(rows) > 1 else None

    purity = (frame.groupby("persona_id")["persona"].agg(lambda s: s.value_counts(normalize=True).iloc[0]))
    majority = frame.groupby("persona_id")["persona"].agg(lambda s: s.value_counts().index[0])
    return {
        "customers_scored": int(len(frame)),
        "ari": ari(frame),
        "ari_with_crm": ari(frame[frame["has_crm"] == 1.0]),
        "ari_with_interactions": ari(frame[frame["interactions_count"] > 0]),
        "ari_one_key_per_person": ari(frame.sort_values("interactions_count", ascending=False)
                                      .drop_duplicates("person_id")),
        "personas_found": int(frame["persona_id"].nunique()),
        "purity": {pid: {"majority": majority[pid], "share": round(float(p), 3)} for pid, p in purity.items()},
    }


def oracle_assignment(sample, persona_of_key: dict[str, str]):
    """Persona index per sample row from the latent class model fitted with the true personas as its
    responsibilities (customers without a known person are left out of the estimate)."""
    import numpy as np

    from atende.models.personas import _m_step, _normalise, _skeleton, numeric_variances

    personas = sorted(set(persona_of_key.values()))
    truth = sample["customer_key"].map(persona_of_key)
    known = truth.notna().to_numpy()
    model = _skeleton(sample, len(personas))
    encoded = model.encode(sample)
    variance = numeric_variances(encoded)
    resp = np.zeros((int(known.sum()), len(personas)))
    resp[np.arange(len(resp)), truth[known].map({p: i for i, p in enumerate(personas)}).to_numpy()] = 1.0
    _m_step(model, encoded.take(np.nonzero(known)[0]), resp, variance)
    labels = _normalise(model.log_likelihoods(encoded))[0].argmax(axis=1)
    return np.asarray(personas)[labels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--landing", type=Path)
    parser.add_argument("--lakehouse", type=Path)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--refit", action="store_true")
    args = parser.parse_args()

    import pandas as pd

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse

    settings = load_settings("local", environ=dict(os.environ))
    report: dict = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()}}
    workdir = None
    if args.landing is None:
        from atende.synthetic.generate import generate_landing_zone

        workdir = Path(tempfile.mkdtemp(prefix="bench-personas-"))
        args.landing, args.lakehouse = workdir / "landing", workdir / "lakehouse"
        generate_landing_zone(args.landing, args.customers, args.days, args.seed)
        report["landing"] = {"customers": args.customers, "days": args.days, "seed": args.seed}
    spark = build_spark_session(settings)
    try:
        lake = Lakehouse(spark, args.lakehouse, settings.storage)
        if workdir is not None:
            from atende.jobs.run import Runner

            started = time.perf_counter()
            summary = Runner(spark, settings, args.landing, args.lakehouse).run()
            report["run_seconds"] = round(time.perf_counter() - started, 1)
            report["jobs"] = {j.job: round(j.seconds, 1) for j in summary.jobs}
        persons = customer_persons(spark, lake, args.landing)
        features = lake.read("gold", "customer_features")
        base = features.select("customer_key", "has_crm", "interactions_count").join(persons, "customer_key", "inner")
        truth_people = pd.read_csv(args.landing / "_truth" / "people.csv", usecols=["person_id", "persona"])
        segments = lake.read("gold", "persona_segments").select("customer_key", "persona_id")
        assigned = base.join(segments, "customer_key", "inner").toPandas()
        report["champion"] = score_assignment(assigned, truth_people)
        report["champion"]["model_version"] = lake.read("gold", "persona_segments").select("model_version").first()[0]
        if args.refit:
            from atende.models.personas import fit_personas, sample_for_fit, score_personas

            cfg = settings.models.personas
            started = time.perf_counter()
            model, metrics = fit_personas(sample_for_fit(features, cfg), cfg)
            fit_seconds = time.perf_counter() - started
            started = time.perf_counter()
            scored = score_personas(features, model).cache()
            n = scored.count()
            score_seconds = time.perf_counter() - started
            refit = base.join(scored.select("customer_key", "persona_id"), "customer_key", "inner").toPandas()
            everyone = sample_for_fit(features, cfg.model_copy(update={"min_activity": 0, "sample_size": 10**9}))
            key_persona = base.select("customer_key", "person_id").toPandas().merge(truth_people, on="person_id")
            oracle = everyone[["customer_key"]].assign(persona_id=oracle_assignment(
                everyone, dict(zip(key_persona["customer_key"], key_persona["persona"]))))
            oracle = base.toPandas().merge(oracle, on="customer_key")
            report["oracle"] = {k: v for k, v in score_assignment(oracle, truth_people).items() if k != "purity"}
            report["refit"] = {**score_assignment(refit, truth_people), "metrics": metrics,
                               "names": dict(zip(model.persona_ids, model.names)),
                               "fit_seconds": round(fit_seconds, 1),
                               "scoring_customers_per_second": round(n / score_seconds, 1)}
        print(json.dumps(report, indent=1, ensure_ascii=False))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
