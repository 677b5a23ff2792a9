"""The recommendations' kept parts against recomputing them, on a lakehouse a run has filled (issue 15).

    python bench/bench_scale.py --customers 100000 --no-baseline --keep --work W   # a full run, then one more day
    python bench/bench_kept_parts.py W/100000x30/lakehouse [--rounds 3]

Two parts of the daily recommendations are kept per input (jobs/modeling.py): `gold/interaction_tones` (the tone
detector's reading of each agent reply) and `gold/product_picks` (each customer's product list). For each, in one
warm Spark session and alternating, three ways are timed (a no-op write of the frame scoring reads):

- **before**: what the job did until session 32, recomputing for everyone (detecting every reply; scoring every
  customer's products);
- **a day**: the kept table brought up to date after one arrival date — the rows of the newest arrival date's
  replies (tones) and of the customers who ordered on it (products) are taken out of the table first, so those
  are detected or scored again, as on a day whose data they are;
- **whole**: the table built from nothing (a first run, a new model).

It also checks that what the kept table gives equals recomputing everything. Prints one line per timing, and one
JSON document at the end. The lakehouse's two kept tables are rewritten (its other tables are only read).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import time
from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from atende.conf import load_settings
from atende.jobs import modeling
from atende.jobs.run import Runner
from atende.lakehouse.spark import build_spark_session
from atende.models.products import build_purchases, load_product_model, recommend_products
from atende.models.tone import detect_tones, load_tone_model


def timed(label: str, make: Callable[[], DataFrame], into: dict[str, list[float]]) -> None:
    start = time.perf_counter()
    make().write.format("noop").mode("overwrite").save()
    seconds = time.perf_counter() - start
    into.setdefault(label, []).append(round(seconds, 2))
    print(f"{label}: {seconds:.1f} s", flush=True)


def same_rows(a: DataFrame, b: DataFrame) -> bool:
    return a.exceptAll(b).isEmpty() and b.exceptAll(a).isEmpty()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lakehouse")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    settings = load_settings("local", environ={})
    spark = build_spark_session(settings, "bench-kept-parts")
    ctx = Runner(spark, settings, None, args.lakehouse)._models()
    lake = ctx.lake
    features = lake.read("gold", "customer_features").cache()
    segments = lake.read("gold", "persona_segments").select("customer_key", "persona_id").cache()
    interactions = lake.read("silver", "interactions")
    orders, products = lake.read("silver", "orders"), lake.read("silver", "products")
    inputs = modeling._Inputs(features=features, segments=segments, context=features, interactions=interactions,
                              responses=interactions, orders=orders, products=products, actions=orders, comments=None,
                              feature_cols=[], as_of=ctx.now)
    top_n = settings.models.products.top_n
    newest = lake.column_max("silver", "interactions", "_arrival_date")
    day_replies = (interactions.where((F.col("_arrival_date") == F.lit(newest)) & F.col("agent_text").isNotNull())
                   .select("interaction_id").cache())
    day_buyers = (orders.where((F.col("_arrival_date") == F.lit(newest)) & F.col("customer_key").isNotNull())
                  .select("customer_key").distinct().cache())
    report: dict = {"lakehouse": args.lakehouse, "newest_arrival_date": str(newest), "customers": features.count(),
                    "replies": interactions.where(F.col("agent_text").isNotNull()).count(),
                    "replies_of_the_newest_date": day_replies.count(), "buyers_of_the_newest_date": day_buyers.count()}
    print(json.dumps(report), flush=True)
    times: dict[str, list[float]] = {}

    with contextlib.ExitStack() as folders:
        tone_dir, _ = ctx.champion_or_fallback(modeling.TONE_MODEL, "tone", None, "none")
        tone = load_tone_model(tone_dir)
        product_dir, _ = ctx.champion_or_fallback(modeling.PRODUCT_MODEL, "products", None, "none")
        model = load_product_model(spark, ctx.readable_by_executors(product_dir, folders))
        digest = modeling.folder_sha256(product_dir)

        def tones_now() -> DataFrame:
            return modeling.interaction_tones(ctx, interactions, tone)

        def picks_now() -> DataFrame:
            return modeling.product_picks(ctx, model, digest, inputs)

        def every_tone() -> DataFrame:
            return detect_tones(interactions, tone.detector)

        def every_pick() -> DataFrame:
            return recommend_products(model, features.select("customer_key"), segments, top_n, products=products,
                                      orders=orders, purchases=build_purchases(orders))

        for table in ("interaction_tones", "product_picks"):
            shutil.rmtree(lake.path("gold", table), ignore_errors=True)
        for rnd in range(args.rounds):
            print(f"round {rnd}", flush=True)
            timed("tones: before (every reply detected)", every_tone, times)
            shutil.rmtree(lake.path("gold", "interaction_tones"), ignore_errors=True)
            timed("tones: whole (the table built)", tones_now, times)
            lake.delete_matching("gold", "interaction_tones", day_replies, ["interaction_id"])
            timed("tones: a day (the newest date's replies detected)", tones_now, times)
            timed("products: before (every customer scored)", every_pick, times)
            shutil.rmtree(lake.path("gold", "product_picks"), ignore_errors=True)
            timed("products: whole (the table built)", picks_now, times)
            lake.delete_matching("gold", "product_picks", day_buyers, ["customer_key"])
            timed("products: a day (the newest date's buyers scored)", picks_now, times)
        report["equal_to_recomputing"] = {
            "tones": same_rows(lake.read("gold", "interaction_tones").select("interaction_id", "tone", "tone_probability"),
                               every_tone()),
            "products": same_rows(lake.read("gold", "product_picks").select("customer_key", "products"), every_pick()),
        }
    report["seconds"] = times
    later = {k: v[1:] or v for k, v in times.items()}  # the first round pays the JVM's warm-up
    report["median_after_the_first_round"] = {k: statistics.median(v) for k, v in later.items()}
    print(json.dumps(report, indent=2))
    spark.stop()


if __name__ == "__main__":
    main()
