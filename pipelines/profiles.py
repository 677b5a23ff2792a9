"""Gold `customer_profiles`: one row per customer_key, everything the company knows about them."""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from atende.conf.settings import Settings
from atende.features.identifiers import normalize_as_given, normalize_email
from atende.pipelines.identity import first_delivery
from atende.pipelines.schemas_gold import CUSTOMER_PROFILES

CRM_FIELDS = ("full_name", "birth_date", "gender", "city", "state", "income_band", "profession", "marketing_consent")


def age_band(birth_date: Column, as_of: Column) -> Column:
    """18-24 … 65+ from completed years at `as_of`; null when unknown or under 18."""
    age = F.floor(F.months_between(as_of, birth_date) / F.lit(12))
    return (
        F.when(age >= 65, "65+")
        .when(age >= 55, "55-64")
        .when(age >= 45, "45-54")
        .when(age >= 35, "35-44")
        .when(age >= 25, "25-34")
        .when(age >= 18, "18-24")
    )


def latest_crm_rows(crm: DataFrame) -> DataFrame:
    """One row per crm_id: the latest `updated_at` (then latest arrival) supersedes earlier ones."""
    order = F.struct("updated_at", "_arrival_date", "_ingested_at", "_source_file")
    rest = [c for c in crm.columns if c != "crm_id"]
    return (
        crm.withColumn("crm_id", normalize_as_given(F.col("crm_id")))
        .where(F.col("crm_id").isNotNull())
        .groupBy("crm_id")
        .agg(F.max_by(F.struct(*rest), order).alias("_latest"))
        .select("crm_id", "_latest.*")
    )


def _order_customers(orders: DataFrame, identity_map: DataFrame, record_keys: DataFrame | None) -> DataFrame:
    """order_id -> customer_key: the record's key when record_keys is given, else the key of the
    order's crm_id, else of its e-mail (the same identifiers identity resolution saw)."""
    if record_keys is not None:
        return record_keys.where(F.col("source") == "orders").select(F.col("record_id").alias("order_id"), "customer_key")
    by_crm = identity_map.where(F.col("identifier_type") == "crm_id").select(
        F.col("identifier").alias("_crm"), F.col("customer_key").alias("_crm_key")
    )
    by_email = identity_map.where(F.col("identifier_type") == "email").select(
        F.col("identifier").alias("_email"), F.col("customer_key").alias("_email_key")
    )
    return (
        orders.select("order_id", normalize_as_given(F.col("crm_id")).alias("_crm"), normalize_email(F.col("email")).alias("_email"))
        .join(by_crm, on="_crm", how="left")
        .join(by_email, on="_email", how="left")
        .select("order_id", F.coalesce("_crm_key", "_email_key").alias("customer_key"))
    )


def build_customer_profiles(
    identity_map: DataFrame,
    interactions: DataFrame,
    survey_responses: DataFrame,
    crm: DataFrame,
    orders: DataFrame,
    settings: Settings,
    run_id: str,
    now: datetime,
    record_keys: DataFrame | None = None,
    segments: DataFrame | None = None,
) -> DataFrame:
    """CUSTOMER_PROFILES. `persona_id` comes from `segments` (gold persona_segments) when given.

    `crm` and `orders` are the bronze frames (history, re-deliveries). Orders reach customers
    through `record_keys` (source "orders") when given, else through identity_map.
    """
    now_lit = F.lit(now).cast("timestamp")
    today = F.to_date(F.from_utc_timestamp(now_lit, settings.kpis.business_timezone))
    itype = F.col("identifier_type")

    customers = identity_map.groupBy("customer_key").agg(
        F.array_sort(F.collect_set(F.when(itype == "crm_id", F.col("identifier")))).alias("crm_ids"),
        F.max(F.when(itype == "email", F.struct("last_seen_at", "identifier"))).getField("identifier").alias("primary_email"),
        F.max(F.when(itype == "phone", F.struct("last_seen_at", "identifier"))).getField("identifier").alias("primary_phone"),
        F.min("first_seen_at").alias("first_seen_at"),
        F.max("last_seen_at").alias("last_seen_at"),
    )

    crm_customer = identity_map.where(itype == "crm_id").select(F.col("identifier").alias("crm_id"), "customer_key")
    crm_latest = (
        latest_crm_rows(crm)
        .join(crm_customer, on="crm_id", how="inner")
        .groupBy("customer_key")
        .agg(F.max_by(F.struct(*CRM_FIELDS), F.struct("updated_at", "crm_id")).alias("crm"))
        .select("customer_key", "crm.*")
    )

    keyed = interactions.where(F.col("customer_key").isNotNull())
    per_channel = keyed.groupBy("customer_key", "channel").agg(
        F.count("*").alias("n"), F.max("started_at").alias("last_at")
    )
    channels = per_channel.groupBy("customer_key").agg(
        F.sum("n").alias("interactions_total"),
        F.map_from_entries(F.array_sort(F.collect_list(F.struct("channel", "n")))).alias("interactions_by_channel"),
        # most frequent; ties go to the channel used most recently
        F.max(F.struct("n", "last_at", "channel")).getField("channel").alias("preferred_channel"),
        F.max(F.struct("last_at", "channel")).getField("channel").alias("last_channel"),
    )
    named = keyed.where(F.col("customer_name").isNotNull() & (F.trim("customer_name") != "")).groupBy(
        "customer_key", F.trim("customer_name").alias("name")
    ).agg(F.count("*").alias("n"), F.max("started_at").alias("last_at"))
    names = named.groupBy("customer_key").agg(
        F.max(F.struct("n", "last_at", "name")).getField("name").alias("seen_name")
    )

    s = survey_responses.where(F.col("customer_key").isNotNull())
    surveys = s.groupBy("customer_key").agg(
        F.max(F.when(F.col("survey") == "nps", F.struct("submitted_at", "response_id", "score"))).getField("score").alias("nps_last"),
        F.avg(F.when(F.col("survey") == "csat", F.col("score"))).alias("csat_avg"),
        F.avg(F.when(F.col("survey") == "ces", F.col("score"))).alias("ces_avg"),
        F.avg(F.when(F.col("survey") == "sps", F.col("score"))).alias("sps_avg"),
    )

    distinct_orders = first_delivery(orders, "order_id")
    spend = (
        distinct_orders.join(_order_customers(distinct_orders, identity_map, record_keys), on="order_id", how="inner")
        .where(F.col("customer_key").isNotNull())
        .groupBy("customer_key")
        .agg(
            F.count("*").alias("orders_count"),
            F.sum(F.col("quantity") * F.col("unit_price")).alias("total_spend"),
        )
    )

    profiles = (
        customers.join(crm_latest, on="customer_key", how="left")
        .join(names, on="customer_key", how="left")
        .join(channels, on="customer_key", how="left")
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
        F.coalesce(F.when(F.trim("full_name") != "", F.trim("full_name")), F.col("seen_name")).alias("display_name"),
        "primary_email",
        "primary_phone",
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
