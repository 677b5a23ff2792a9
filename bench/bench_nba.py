"""Next best action (issue 7): response-model AUC per action, IPS policy value, scoring throughput.

    .venv/bin/atende demo --dir /tmp/nba-demo                     # once (~3 min): the lakehouse to read
    python bench/bench_nba.py --lakehouse /tmp/nba-demo/lakehouse  # train, evaluate, score
    python bench/bench_nba.py --lakehouse L --replicate 50         # throughput over 50 x the customers

What it does, over an existing lakehouse:
1. the action log: silver `actions`; when the run wrote none, bronze `actions` mapped to customers
   through silver `identity_map` (crm_id, then e-mail, then phone) — FALLBACK, marked in the report;
2. rolling cuts: features as of each cut T (every `--step` days after the first action) and the actions
   sent in [T, T + step); the windows are stacked into one training set. Features come from
   `features.customer.build_customer_features` when it runs on this lakehouse, else from a minimal
   inline builder below (FALLBACK, marked in the report);
3. `models.nba.train_response_models` (label converted, or --label responded; a hash of customer_key holds out 25 % of
   customers): AUC per action and pooled on the held-out customers, and the IPS estimate of the
   learned policy's value per logged action (reward = converted x configured value, BRL) against the
   logging policy's observed value;
4. scoring throughput: features as of the day after the last action, for every customer (times
   `--replicate`, with distinct keys), cached first; then `score_next_best_action` forced with a
   no-op write; customers/s = customers / wall seconds of that write.

Prints one JSON document.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path


# ------------------------------------------------------------------------------------------ inputs
def action_log(lake, settings):
    """(silver ACTIONS-like frame, source). FALLBACK when silver/actions is missing: bronze actions
    mapped to customers through identity_map, the way profiles map orders (crm_id, e-mail, phone)."""
    from pyspark.sql import functions as F

    if lake.exists("silver", "actions"):
        return lake.read("silver", "actions"), "silver.actions"

    from atende.features.identifiers import normalize_as_given, normalize_email, normalize_phone
    from atende.pipelines.dedup import first_delivery

    bronze = first_delivery(lake.read("bronze", "actions"), "action_id")
    idmap = lake.read("silver", "identity_map")

    def keyed(identifier_type: str, alias: str):
        return idmap.where(F.col("identifier_type") == identifier_type).select(
            F.col("identifier").alias(alias), F.col("customer_key").alias(alias + "_key"))

    region = settings.identity.default_region
    mapped = (
        bronze.withColumns({
            "_crm": normalize_as_given(F.col("crm_id")),
            "_email": normalize_email(F.col("email")),
            "_phone": normalize_phone(F.col("phone"), region),
        })
        .join(keyed("crm_id", "_crm"), on="_crm", how="left")
        .join(keyed("email", "_email"), on="_email", how="left")
        .join(keyed("phone", "_phone"), on="_phone", how="left")
    )
    return mapped.select(
        "action_id", "sent_at", F.lower(F.trim("action")).alias("action"), "channel",
        F.coalesce("_crm_key", "_email_key", "_phone_key").alias("customer_key"),
        "propensity", "responded", "converted", "revenue",
    ), "FALLBACK: bronze.actions mapped via silver.identity_map"


def project_features(lake, settings, actions):
    """A function as_of -> features DataFrame, the numeric feature columns, and a label; None when
    the project's feature builder cannot run on this lakehouse."""
    try:
        from atende.features.customer import build_customer_features, numeric_feature_columns
        from atende.pipelines import schemas

        frames = dict(
            identity_map=lake.read("silver", "identity_map"),
            interactions=lake.read("silver", "interactions"),
            survey_responses=lake.read("silver", "survey_responses"),
            crm=lake.read("bronze", "crm"),
            orders=lake.read_or_empty("silver", "orders", schemas.ORDERS),
            products=lake.read_or_empty("silver", "products", schemas.PRODUCTS),
            actions=actions,
        )
        cols = list(numeric_feature_columns(settings))

        def build(as_of: dt.datetime):
            return build_customer_features(**frames, settings=settings, as_of=as_of)

        build(dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)).limit(1).collect()  # does it run here?
        return build, cols, "atende.features.customer.build_customer_features"
    except Exception as exc:  # noqa: BLE001 - report and fall back
        print(f"project feature builder unavailable ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
              "using the inline fallback", file=sys.stderr)
        return None


# FALLBACK: the minimal customer features NBA needs, inline, for a lakehouse without the project's
# feature builder. Same meaning as gold customer_features for the columns it has.
INLINE_FEATURES = ["interactions_count", "recency_days", "tenure_days", "resolved_rate", "ch_whatsapp",
                   "ch_voice", "actions_recent", "action_response_rate"]


def inline_features(lake, settings, actions):
    from pyspark.sql import functions as F

    from atende.pipelines.rules import latest_crm_rows

    idmap = lake.read("silver", "identity_map")
    interactions = lake.read("silver", "interactions")
    crm = lake.read("bronze", "crm")
    nba = settings.models.nba

    def build(as_of: dt.datetime):
        cut = F.lit(as_of).cast("timestamp")
        customers = idmap.where(F.col("first_seen_at") < cut).groupBy("customer_key").agg(
            F.min("first_seen_at").alias("first_seen_at"),
            F.max(F.when(F.col("identifier_type") == "phone", True)).alias("_has_phone"),
        )
        crm_keys = idmap.where(F.col("identifier_type") == "crm_id").select(F.col("identifier").alias("crm_id"), "customer_key")
        consent = (
            latest_crm_rows(crm.where(F.col("updated_at") < cut)).join(crm_keys, on="crm_id", how="inner")
            .groupBy("customer_key").agg(F.max_by("marketing_consent", F.struct("updated_at", "crm_id")).alias("marketing_consent"))
        )
        seen = interactions.where(F.col("customer_key").isNotNull() & (F.col("started_at") < cut))
        inter = seen.groupBy("customer_key").agg(
            F.count("*").alias("interactions_count"),
            F.max("started_at").alias("_last_at"),
            F.avg(F.col("resolved").cast("double")).alias("resolved_rate"),
            F.avg((F.col("channel") == "whatsapp").cast("double")).alias("ch_whatsapp"),
            F.avg((F.col("channel") == "voice").cast("double")).alias("ch_voice"),
            F.max_by(F.struct("resolved", "topic", "started_at"), F.struct("started_at", "interaction_id")).alias("_last"),
        )
        sent = actions.where(F.col("customer_key").isNotNull() & (F.col("sent_at") < cut))
        fatigue_start = cut - F.expr(f"INTERVAL {nba.fatigue_days} DAYS")
        pressure = sent.groupBy("customer_key").agg(
            F.count(F.when(F.col("sent_at") >= fatigue_start, True)).alias("actions_recent"),
            F.avg(F.when(F.col("action") != "no_action", F.col("responded").cast("double"))).alias("action_response_rate"),
        )
        open_start = cut - F.expr(f"INTERVAL {nba.open_issue_days} DAYS")
        is_open_issue = (F.col("_last.started_at") >= open_start) & (F.col("_last.resolved") == F.lit(False))
        days = lambda later, earlier: (later.cast("double") - earlier.cast("double")) / 86400.0  # noqa: E731
        return (
            customers.join(consent, on="customer_key", how="left")
            .join(inter, on="customer_key", how="left")
            .join(pressure, on="customer_key", how="left")
            .select(
                "customer_key", "marketing_consent",
                F.coalesce(is_open_issue, F.lit(False)).alias("open_issue"),
                F.col("_last.topic").alias("last_topic"),
                F.coalesce("actions_recent", F.lit(0)).cast("long").alias("actions_recent"),
                (F.coalesce("_has_phone", F.lit(False)) | (F.coalesce("ch_whatsapp", F.lit(0.0)) > 0)).alias("has_whatsapp"),
                F.coalesce("interactions_count", F.lit(0)).cast("double").alias("interactions_count"),
                days(cut, F.greatest("_last_at", "first_seen_at")).alias("recency_days"),
                days(cut, F.col("first_seen_at")).alias("tenure_days"),
                "resolved_rate", F.coalesce("ch_whatsapp", F.lit(0.0)).alias("ch_whatsapp"),
                F.coalesce("ch_voice", F.lit(0.0)).alias("ch_voice"), "action_response_rate",
            )
        )

    return build, INLINE_FEATURES, "FALLBACK: inline minimal features (bench/bench_nba.py)"


# ------------------------------------------------------------------------------------------ bench
def run(spark, settings, lakehouse: Path, step_days: int, replicate: int, sample_size: int, seed: int,
        label: str) -> dict:
    from pyspark.sql import functions as F

    from atende.lakehouse.tables import Lakehouse
    from atende.models.nba import build_response_training_set, score_next_best_action, train_response_models

    nba = settings.models.nba
    lake = Lakehouse(spark, lakehouse, settings.storage)
    actions, actions_source = action_log(lake, settings)
    actions = actions.cache()
    span = actions.agg(F.min("sent_at").alias("first"), F.max("sent_at").alias("last"), F.count("*").alias("n"),
                       F.count("customer_key").alias("keyed")).first()
    built = project_features(lake, settings, actions) or inline_features(lake, settings, actions)
    build_features, feature_cols, features_source = built

    first_day = dt.datetime.combine(span["first"].date(), dt.time(), tzinfo=dt.timezone.utc)
    end = dt.datetime.combine(span["last"].date(), dt.time(), tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    cuts = []
    cut = first_day + dt.timedelta(days=step_days)
    while cut < end:
        cuts.append(cut)
        cut += dt.timedelta(days=step_days)

    started = time.perf_counter()
    windows = [build_response_training_set(actions, build_features(c), c, min(c + dt.timedelta(days=step_days), end))
               for c in cuts]
    training = windows[0]
    for w in windows[1:]:
        training = training.unionByName(w)
    training = training.cache()
    per_action = {r["action"]: r["count"] for r in training.groupBy("action").count().collect()}
    training_seconds_build = time.perf_counter() - started

    started = time.perf_counter()
    model, metrics = train_response_models(training, nba, feature_cols, label=label, sample_size=sample_size, seed=seed)
    train_seconds = time.perf_counter() - started

    # scoring: every customer as of the day after the last action
    base = build_features(end)
    if replicate > 1:
        copies = spark.range(replicate).select(F.col("id").alias("_copy"))
        base = base.crossJoin(copies).withColumn(
            "customer_key", F.concat("customer_key", F.lit("#"), F.col("_copy").cast("string"))).drop("_copy")
    base = base.cache()
    customers = base.count()
    scored = score_next_best_action(base, model, nba, feature_cols)
    started = time.perf_counter()
    scored.write.format("noop").mode("overwrite").save()
    score_seconds = time.perf_counter() - started
    scored = scored.cache()
    mix = {r["next_best_action"]: r["count"] for r in scored.groupBy("next_best_action").count().collect()}
    examples = [r.asDict() for r in scored.orderBy(F.desc("nba_score"), "customer_key").limit(2).collect()]
    examples += [r.asDict() for r in scored.where(F.col("reasons")[0].startswith("open issue")).orderBy("customer_key").limit(1).collect()]
    examples += [r.asDict() for r in scored.where(F.col("next_best_action") == "no_action").orderBy("customer_key").limit(1).collect()]
    for frame in (scored, base, training, actions):
        frame.unpersist()

    rounded = {k: round(v, 4) for k, v in sorted(metrics.items())}
    return {
        "inputs": {
            "actions_source": actions_source, "features_source": features_source,
            "actions": span["n"], "actions_with_customer": span["keyed"],
            "first_sent_at": str(span["first"]), "last_sent_at": str(span["last"]),
            "cuts": [c.date().isoformat() for c in cuts], "window_days": step_days,
            "training_rows_per_action": per_action, "feature_columns": len(feature_cols),
            "training_set_seconds": round(training_seconds_build, 1),
        },
        "model": {"version": model.version, "label": model.label,
                  "kinds": {a: r.kind for a, r in sorted(model.responses.items())},
                  "train_and_evaluate_seconds": round(train_seconds, 1)},
        "auc": {k[4:]: v for k, v in rounded.items() if k.startswith("auc_")},
        "policy_value": {k: v for k, v in rounded.items()
                         if k.startswith(("ips_", "snips_", "logging_"))},
        "metrics": rounded,
        "scoring": {"customers": customers, "replicate": replicate, "seconds": round(score_seconds, 2),
                    "customers_per_second": round(customers / score_seconds, 1) if score_seconds else None,
                    "next_best_action_mix": mix},
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lakehouse", type=Path, default=Path("/tmp/nba-demo/lakehouse"))
    parser.add_argument("--step", type=int, default=3, help="days between cuts = days of actions per cut")
    parser.add_argument("--replicate", type=int, default=1, help="score this many copies of every customer")
    parser.add_argument("--sample-size", type=int, default=100_000)
    parser.add_argument("--label", choices=("converted", "responded"), default="converted")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session

    settings = load_settings()
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "platform": platform.platform(), "load_average": os.getloadavg()}}
    spark = build_spark_session(settings, "atende-bench-nba")
    started = time.perf_counter()
    try:
        report.update(run(spark, settings, args.lakehouse, args.step, args.replicate, args.sample_size, args.seed,
                          args.label))
    finally:
        spark.stop()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"]["load_average_after"] = os.getloadavg()
    print(json.dumps(report, indent=2, default=str, ensure_ascii=False))


if __name__ == "__main__":
    main()
