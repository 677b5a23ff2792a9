"""Silver `orders`, `actions` and `products`: the commercial records tied to their customer."""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from atende.pipelines.dedup import first_delivery
from atende.pipelines.rules import order_amount
from atende.pipelines.schemas import ACTIONS, ORDERS, PRODUCTS


def _keys_of(record_keys: DataFrame, source: str, id_column: str) -> DataFrame:
    return record_keys.where(F.col("source") == source).select(
        F.col("record_id").alias(id_column), "customer_key"
    )


def latest_products(products: DataFrame) -> DataFrame:
    """`product_id, name, category, price, active`: one row per product, from its latest snapshot row.

    Snapshot files carry no timestamp of their own: the latest `_arrival_date` wins, then the latest
    ingestion, then the last file name. A frame without those lineage columns (silver: one row per
    product already) passes through, one row per product_id."""
    lineage = [c for c in ("_arrival_date", "_ingested_at", "_source_file") if c in products.columns]
    values = F.struct("name", "category", "price", "active")
    latest = F.max_by(values, F.struct(*lineage)) if lineage else F.max(values)
    return (
        products.where(F.col("product_id").isNotNull())
        .groupBy("product_id")
        .agg(latest.alias("_latest"))
        .select("product_id", "_latest.*")
    )


def build_products(products: DataFrame, run_id: str, now: datetime) -> DataFrame:
    """PRODUCTS: the latest snapshot row of each product (snapshot files: the latest arrival wins)."""
    return (
        latest_products(products)
        .select("*", F.lit(run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("_written_at"))
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in PRODUCTS.fields])
    )


def build_orders(orders: DataFrame, products: DataFrame, record_keys: DataFrame, run_id: str,
                 now: datetime) -> DataFrame:
    """ORDERS: one row per order_id (first delivery), with the customer its identifiers resolved to
    and the category of its product. `products` is the silver PRODUCTS frame."""
    catalogue = products.select("product_id", "category")
    distinct = first_delivery(orders, "order_id")
    return (
        distinct.join(_keys_of(record_keys, "orders", "order_id"), on="order_id", how="left")
        .join(catalogue, on="product_id", how="left")
        .select(
            "order_id", "ordered_at", "customer_key", "product_id", "category", "quantity", "unit_price",
            order_amount(F.col("quantity"), F.col("unit_price")).alias("amount"),
            "channel", "_arrival_date",
            F.lit(run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("_written_at"),
        )
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in ORDERS.fields])
    )


def build_actions(actions: DataFrame, record_keys: DataFrame, run_id: str, now: datetime) -> DataFrame:
    """ACTIONS: one row per action_id (first delivery), with its customer."""
    distinct = first_delivery(actions, "action_id")
    return (
        distinct.join(_keys_of(record_keys, "actions", "action_id"), on="action_id", how="left")
        .select(
            "action_id", "sent_at", F.lower(F.trim("action")).alias("action"), "channel", "customer_key",
            "propensity", "responded", "converted", "revenue", "_arrival_date",
            F.lit(run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("_written_at"),
        )
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in ACTIONS.fields])
    )
