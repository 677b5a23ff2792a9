"""Next best action (issue 7): response-model AUC per action, IPS policy value, scoring throughput.

    .venv/bin/atende demo --dir /tmp/nba-demo                     # once (~3 min): the lakehouse to read
    python bench/bench_nba.py --lakehouse /tmp/nba-demo/lakehouse  # train, evaluate, score
    python bench/bench_nba.py --lakehouse L --replicate 50         # throughput over 50 x the customers
    python bench/bench_nba.py --lakehouse L --conf conversion.yaml # another objective (action values, weights)

What it does, over an existing lakehouse:
1. the action log: silver `actions`;
2. rolling cuts: features as of each cut T (every `--step` days after the first action) and the actions
   sent in [T, T + step); the windows are stacked into one training set. Features come from
   `features.customer.build_customer_features` over the silver tables;
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
import time
from pathlib import Path


# ------------------------------------------------------------------------------------------ inputs
def action_log(lake):
    """Silver ACTIONS: the action log, keyed to customers by the pipeline's identity resolution."""
    if not lake.exists("silver", "actions"):
        raise SystemExit(f"{lake.path('silver', 'actions')} does not exist: run `atende run` (or the demo) first")
    return lake.read("silver", "actions"), "silver.actions"


def project_features(lake, settings, actions):
    """A function as_of -> features DataFrame (the project's feature builder over silver), and the numeric
    feature columns."""
    from atende.features.customer import build_customer_features, numeric_feature_columns
    from atende.jobs.modeling import feature_inputs

    frames = {**feature_inputs(lake), "actions": actions}

    def build(as_of: dt.datetime):
        return build_customer_features(**frames, settings=settings, as_of=as_of)

    return build, list(numeric_feature_columns(settings)), "atende.features.customer.build_customer_features"


# ------------------------------------------------------------------------------------------ bench
def run(spark, settings, lakehouse: Path, step_days: int, replicate: int, sample_size: int, seed: int,
        label: str) -> dict:
    from pyspark.sql import functions as F

    from atende.lakehouse.tables import Lakehouse
    from atende.models.nba import build_response_training_set, score_next_best_action, train_response_models

    nba = settings.models.nba
    lake = Lakehouse(spark, lakehouse, settings.storage)
    actions, actions_source = action_log(lake)
    actions = actions.cache()
    span = actions.agg(F.min("sent_at").alias("first"), F.max("sent_at").alias("last"), F.count("*").alias("n"),
                       F.count("customer_key").alias("keyed")).first()
    build_features, feature_cols, features_source = project_features(lake, settings, actions)

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
    parser.add_argument("--conf", type=Path, default=None,
                        help="a settings file over conf/local.yaml (e.g. other action values: another objective)")
    args = parser.parse_args()

    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session

    settings = load_settings(conf_file=args.conf)
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
