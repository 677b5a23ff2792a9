"""Gold `customer_profiles`: one row per customer_key, everything the company knows about them."""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from atende.conf.settings import Settings
from atende.pipelines.rules import age_band, channel_usage
from atende.pipelines.schemas_gold import CUSTOMER_PROFILES


def build_customer_profiles(
    customers: DataFrame,
    interactions: DataFrame,
    survey_responses: DataFrame,
    orders: DataFrame,
    settings: Settings,
    run_id: str,
    now: datetime,
    segments: DataFrame | None = None,
) -> DataFrame:
    """CUSTOMER_PROFILES. `customers` is silver CUSTOMERS (contact points and the values that survived:
    name, CRM fields, consent); `orders` is silver ORDERS (one row per order, keyed to its customer, its
    `amount` by `rules.order_amount`), the same rows the features read. `persona_id` comes from `segments`
    (gold persona_segments) when given.
    """
    now_lit = F.lit(now).cast("timestamp")
    today = F.to_date(F.from_utc_timestamp(now_lit, settings.kpis.business_timezone))

    keyed = interactions.where(F.col("customer_key").isNotNull())
    by_channel = keyed.groupBy("customer_key", "channel").agg(F.count("*").alias("n")).groupBy("customer_key").agg(
        F.map_from_entries(F.array_sort(F.collect_list(F.struct("channel", "n")))).alias("interactions_by_channel"),
    )
    channels = channel_usage(keyed).join(by_channel, on="customer_key", how="inner")

    s = survey_responses.where(F.col("customer_key").isNotNull())
    surveys = s.groupBy("customer_key").agg(
        F.max(F.when(F.col("survey") == "nps", F.struct("submitted_at", "response_id", "score"))).getField("score").alias("nps_last"),
        F.avg(F.when(F.col("survey") == "csat", F.col("score"))).alias("csat_avg"),
        F.avg(F.when(F.col("survey") == "ces", F.col("score"))).alias("ces_avg"),
        F.avg(F.when(F.col("survey") == "sps", F.col("score"))).alias("sps_avg"),
    )

    spend = (
        orders.where(F.col("customer_key").isNotNull())
        .groupBy("customer_key")
        .agg(F.count("*").alias("orders_count"), F.sum("amount").alias("total_spend"))
    )

    profiles = (
        customers.drop("run_id", "_written_at").join(channels, on="customer_key", how="left")
        .join(surveys, on="customer_key", how="left")
        .join(spend, on="customer_key", how="left")
    )
    if segments is not None:
        profiles = profiles.join(segments.select("customer_key", "persona_id"), on="customer_key", how="left")
    else:
        profiles = profiles.withColumn("persona_id", F.lit(None).cast("string"))
    return profiles.select(
        "customer_key",
        "crm_ids",
        "display_name",
        F.col("email").alias("primary_email"),
        F.col("phone").alias("primary_phone"),
        "birth_date",
        age_band(F.col("birth_date"), today).alias("age_band"),
        "gender",
        "city",
        "state",
        "income_band",
        "profession",
        "marketing_consent",
        "first_seen_at",
        "last_seen_at",
        F.coalesce("interactions_total", F.lit(0)).alias("interactions_total"),
        F.coalesce("interactions_by_channel", F.create_map().cast("map<string,bigint>")).alias("interactions_by_channel"),
        "preferred_channel",
        "last_channel",
        "nps_last",
        "csat_avg",
        "ces_avg",
        "sps_avg",
        F.coalesce("orders_count", F.lit(0)).alias("orders_count"),
        F.coalesce("total_spend", F.lit(0.0)).alias("total_spend"),
        "persona_id",
        F.lit(run_id).alias("run_id"),
        now_lit.alias("_written_at"),
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in CUSTOMER_PROFILES.fields])
