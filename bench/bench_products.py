"""Product recommender quality (issue 7): ALS vs the popularity baseline on a time split.

    python bench/bench_products.py --lakehouse H                       # conf's parameters
    python bench/bench_products.py --lakehouse H --truth L/_truth      # personas from the generator's truth
    python bench/bench_products.py --lakehouse H --grid                # also try a few ALS settings
    python bench/bench_products.py --landing L                         # a generated landing zone, truth-keyed

`H` is a lakehouse written by `atende run` (or `atende demo`). Orders come from silver/orders;
before that table exists, from bronze/orders keyed to customers through silver/identity_map
(crm_id, then e-mail), as gold customer_profiles does. Interest comes from
silver/interactions, the catalogue from bronze/products, personas from gold/persona_segments
when present. Without it, `--truth DIR` (the landing zone's `_truth/`) gives each customer
their generated persona (through their CRM id), to measure cold start by persona; without
either, customers unknown to ALS get the most bought items.

The last `test_days` of orders are held out; metrics are over the customers with at least one
held-out purchase (see models/products.py: `als_*` is the recommender as served, with cold
start; `*_warm_*` only the customers ALS knows). Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

TARGET_NDCG_RATIO = 1.3


def silver_orders(lake):
    """silver/orders, or the same rows built from bronze/orders and silver/identity_map."""
    from pyspark.sql import functions as F

    from atende.pipelines.commerce import latest_products
    from atende.pipelines.dedup import first_delivery
    from atende.pipelines.profiles import _order_customers

    if lake.exists("silver", "orders"):
        return lake.read("silver", "orders"), "silver/orders"
    bronze = first_delivery(lake.read("bronze", "orders"), "order_id")
    keys = _order_customers(bronze, lake.read("silver", "identity_map"), None)
    categories = latest_products(lake.read("bronze", "products")).select("product_id", "category")
    orders = (
        bronze.join(keys, on="order_id", how="left")
        .join(categories, on="product_id", how="left")
        .select("order_id", "ordered_at", "customer_key", "product_id", "category", "quantity", "unit_price",
                (F.col("quantity") * F.col("unit_price")).alias("amount"), "channel")
    )
    return orders, "bronze/orders + silver/identity_map"


def persona_segments(spark, lake, truth: Path | None):
    """customer_key, persona_id, or None."""
    from pyspark.sql import functions as F

    if lake.exists("gold", "persona_segments"):
        return lake.read("gold", "persona_segments").select("customer_key", "persona_id"), "gold/persona_segments"
    if truth is None:
        return None, "none"
    people = spark.read.csv(str(truth / "people.csv"), header=True).select("person_id", F.col("persona").alias("persona_id"))
    records = spark.read.csv(str(truth / "records.csv"), header=True).where(F.col("source") == "crm_id")
    crm = lake.read("silver", "identity_map").where(F.col("identifier_type") == "crm_id").select(
        F.col("identifier").alias("record_id"), "customer_key")
    # a customer reached by CRM ids of two people (an over-merge) takes the smaller persona id
    segments = (
        crm.join(records, on="record_id", how="inner").join(people, on="person_id", how="inner")
        .groupBy("customer_key").agg(F.min("persona_id").alias("persona_id"))
    )
    return segments, f"truth ({truth})"


def truth_keyed_inputs(spark, settings, landing: Path):
    """(orders, interactions, products, segments) straight from a generated landing zone, each
    record keyed to its true person (`_truth/records.csv`): the silver transforms run in memory
    with the truth standing in for identity resolution, so the recommender is measured alone,
    on landing zones larger than a full `atende run` here would allow."""
    from datetime import datetime, timezone

    from pyspark.sql import functions as F

    from atende.jobs.ingest import ingest_source, list_arrival_dates
    from atende.pipelines.commerce import latest_products
    from atende.pipelines.dedup import first_delivery
    from atende.pipelines.interactions import build_interactions
    from atende.pipelines.profiles import _order_customers

    now = datetime.now(timezone.utc)
    bronze = {}
    for source in ("orders", "products", "conversations", "whatsapp", "email", "calls"):
        dates = list_arrival_dates(landing, source)
        bronze[source] = ingest_source(spark, settings, landing, source, dates, "bench", now).accepted
    truth = landing / "_truth"
    record_keys = spark.read.csv(str(truth / "records.csv"), header=True).select(
        "source", "record_id", F.col("person_id").alias("customer_key")).cache()
    interactions = build_interactions(bronze, record_keys, settings, "bench", now).select(
        "interaction_id", "started_at", "customer_key", "customer_text")
    distinct_orders = first_delivery(bronze["orders"], "order_id")
    categories = latest_products(bronze["products"]).select("product_id", "category")
    orders = (
        distinct_orders.join(_order_customers(distinct_orders, None, record_keys), on="order_id", how="left")
        .join(categories, on="product_id", how="left")
        .select("order_id", "ordered_at", "customer_key", "product_id", "category", "quantity", "unit_price",
                (F.col("quantity") * F.col("unit_price")).alias("amount"), "channel")
    )
    segments = spark.read.csv(str(truth / "people.csv"), header=True).select(
        F.col("person_id").alias("customer_key"), F.col("persona").alias("persona_id"))
    return orders, interactions, bronze["products"], segments


def evaluate(inputs, settings, exclude_purchased: bool = True) -> dict:
    from atende.models.products import evaluate_time_split

    started = time.perf_counter()
    model, metrics = evaluate_time_split(*inputs, settings, exclude_purchased=exclude_purchased)
    seconds = time.perf_counter() - started
    model.unpersist()
    out = {k: round(v, 4) for k, v in metrics.items()}
    out["seconds"] = round(seconds, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--lakehouse", type=Path, help="a lakehouse written by `atende run`")
    source.add_argument("--landing", type=Path,
                        help="a generated landing zone, keyed by its _truth/ (no `atende run` needed)")
    parser.add_argument("--truth", type=Path, default=None, help="the landing zone's _truth/ folder (personas)")
    parser.add_argument("--grid", action="store_true", help="also evaluate a few other ALS settings")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override one ProductSettings field (repeatable), e.g. --set alpha=40")
    parser.add_argument("--keep-purchased", action="store_true", help="do not leave bought items out")
    args = parser.parse_args(argv)

    from atende.conf.settings import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse

    settings = load_settings()
    params = settings.models.products
    overrides = {}
    for item in args.set:
        name, _, value = item.partition("=")
        overrides[name] = type(getattr(params, name))(value)
    params = params.model_copy(update=overrides)

    started = time.perf_counter()
    spark = build_spark_session(settings, app_name="bench-products")
    try:
        if args.landing is not None:
            orders, interactions, products, segments = truth_keyed_inputs(spark, settings, args.landing)
            orders_from = segments_from = f"landing zone keyed by its truth ({args.landing})"
        else:
            lake = Lakehouse(spark, args.lakehouse, settings.storage)
            orders, orders_from = silver_orders(lake)
            interactions = lake.read("silver", "interactions").select(
                "interaction_id", "started_at", "customer_key", "customer_text")
            products = lake.read("bronze", "products")
            segments, segments_from = persona_segments(spark, lake, args.truth)
        orders, interactions, products = orders.cache(), interactions.cache(), products.cache()
        if segments is not None:
            segments = segments.cache()
        from pyspark.sql import functions as F

        stats = orders.agg(F.count("*").alias("orders"), F.countDistinct("customer_key").alias("customers"),
                           F.countDistinct("product_id").alias("products"),
                           F.min("ordered_at").alias("first"), F.max("ordered_at").alias("last")).first()
        report = {
            "input": str(args.lakehouse or args.landing),
            "orders_from": orders_from,
            "segments_from": segments_from,
            "data": {"orders": stats["orders"], "customers_with_orders": stats["customers"],
                     "products_ordered": stats["products"], "first_order": str(stats["first"]),
                     "last_order": str(stats["last"]),
                     "interactions_with_text": interactions.where(F.col("customer_text").isNotNull()
                                                                  & F.col("customer_key").isNotNull()).count()},
            "params": params.model_dump(),
            "exclude_purchased": not args.keep_purchased,
        }
        inputs = (orders, interactions, products, segments)
        result = evaluate(inputs, params, exclude_purchased=not args.keep_purchased)
        report["result"] = result
        report["ndcg_ratio"] = result["ndcg_ratio"]
        report["target_met"] = result["ndcg_ratio"] >= TARGET_NDCG_RATIO
        if args.grid:
            grid = []
            for change in ({"rank": 8}, {"rank": 32}, {"alpha": 5.0}, {"alpha": 40.0}, {"reg_param": 0.01},
                           {"reg_param": 1.0}, {"max_iter": 20}, {"interest_weight": 0.0}, {"interest_weight": 1.0}):
                r = evaluate(inputs, params.model_copy(update=change), exclude_purchased=not args.keep_purchased)
                grid.append({"change": change, "als_ndcg_at_10": r["als_ndcg_at_10"], "ndcg_ratio": r["ndcg_ratio"],
                             "als_warm_ndcg_at_10": r["als_warm_ndcg_at_10"], "seconds": r["seconds"]})
                print(json.dumps(grid[-1]), file=sys.stderr, flush=True)
            report["grid"] = grid
        report["seconds_total"] = round(time.perf_counter() - started, 1)
        report["machine"] = {"python": platform.python_version(), "cores": __import__("os").cpu_count()}
        print(json.dumps(report, indent=2, default=str))
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
