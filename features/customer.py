"""One customer feature table, shared by every model for training and scoring alike.

`build_customer_features(..., as_of)` sees only what was known before `as_of`: interactions that
started, surveys submitted, orders placed, actions sent, identifiers first seen and CRM rows
updated before it. Training at a past cut and scoring today therefore compute the same columns
the same way, and training never sees the future.
"""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from atende.conf.settings import Settings
from atende.pipelines import rules
from atende.pipelines.customers import surviving_values
from atende.pipelines.schemas import ALL_CHANNELS

# the fields the features take from the CRM (through survivorship, as silver/customers does)
CRM_FEATURE_FIELDS = ("birth_date", "gender", "income_band", "profession", "state", "marketing_consent")

# income bands (Brazilian social classes) on a 0..1 scale
INCOME_LEVELS = {"DE": 0.0, "C2": 0.2, "C1": 0.4, "B2": 0.6, "B1": 0.8, "A": 1.0}
# hour of day (business time zone) -> band
HOUR_BANDS = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))
SURVEYS = ("nps", "csat", "ces", "sps")


def channel_share_columns() -> tuple[str, ...]:
    return tuple(f"ch_{c}" for c in ALL_CHANNELS)


def topic_share_columns(settings: Settings) -> tuple[str, ...]:
    return tuple(f"topic_{t}" for t in settings.models.features.topics)


def order_channel_share_columns(settings: Settings) -> tuple[str, ...]:
    return tuple(f"ochan_{c}" for c in settings.models.features.order_channels)


def numeric_feature_columns(settings: Settings) -> tuple[str, ...]:
    """Every numeric feature, in a fixed order: what the models take."""
    return (
        "has_crm", "age", "income_level", "tenure_days", "recency_days",
        "interactions_count", "interactions_per_week", "orders_count", "total_spend", "avg_order_value",
        "price_level",
        *channel_share_columns(),
        *(f"hour_{name}" for name, _, _ in HOUR_BANDS),
        *topic_share_columns(settings),
        *order_channel_share_columns(settings),
        "survey_count", "nps_avg", "csat_avg", "ces_avg", "sps_avg", "satisfaction_index",
        "effort_index", "resolved_rate", "fcr_rate", "bot_only_rate", "handoff_rate",
        "avg_wait_seconds", "avg_handle_seconds", "avg_messages", "lang_pt_share",
        "actions_recent", "action_response_rate",
    )


def _share(condition: Column) -> Column:
    return F.avg(F.when(condition, 1.0).otherwise(0.0))


def _days_between(later: Column, earlier: Column) -> Column:
    return (later.cast("double") - earlier.cast("double")) / F.lit(86400.0)


def build_customer_features(
    identity_map: DataFrame,
    interactions: DataFrame,
    survey_responses: DataFrame,
    crm: DataFrame,
    orders: DataFrame,
    products: DataFrame,
    actions: DataFrame,
    settings: Settings,
    as_of: datetime,
) -> DataFrame:
    """One row per customer_key known before `as_of`: demographics, tenure, RFM, channel mix,
    preferred hours, topic mix, satisfaction and effort, resolution history, language, contact
    pressure. Every frame is a silver table (`crm`: the CRM history, silver CRM)."""
    cut = F.lit(as_of).cast("timestamp")
    customers = (
        identity_map.where(F.col("first_seen_at") < cut)
        .groupBy("customer_key")
        .agg(
            F.min("first_seen_at").alias("first_seen_at"),
            F.max(F.when(F.col("identifier_type") == "phone", True)).alias("_has_phone"),
            F.max(F.when(F.col("identifier_type") == "email", True)).alias("_has_email"),
        )
    )
    # demographics as the CRM stood at the cut, by the survivorship rules of silver/customers
    crm_values = surviving_values(settings, list(CRM_FEATURE_FIELDS), crm=crm.where(F.col("updated_at") < cut))
    parts = [
        crm_values,
        *_interaction_parts(interactions.where(F.col("customer_key").isNotNull() & (F.col("started_at") < cut)),
                            settings),
        _survey_part(survey_responses.where(F.col("customer_key").isNotNull() & (F.col("submitted_at") < cut))),
        *_order_parts(orders.where(F.col("customer_key").isNotNull() & (F.col("ordered_at") < cut)), products,
                      settings),
        _action_part(actions.where(F.col("customer_key").isNotNull() & (F.col("sent_at") < cut)), cut, settings),
    ]
    joined = customers
    for part in parts:
        joined = joined.join(part, on="customer_key", how="left")
    return _feature_columns(joined, cut, settings)


def _interaction_parts(seen: DataFrame, settings: Settings) -> list[DataFrame]:
    """Per customer, from the interactions before the cut: counts and mixes, service history, the latest
    interaction (`_last`: open issue, last topic), preferred and last channel, main language."""
    local_hour = F.hour(F.from_utc_timestamp("started_at", settings.kpis.business_timezone))
    topics = settings.models.features.topics
    is_bot_handled = rules.bot_handled(F.col("channel"), F.col("has_bot"))
    fcr = rules.first_contact_resolution(settings.kpis.fcr_window_days, settings.kpis.repeat_contact_channels)
    inter = seen.withColumn("_fcr", fcr).groupBy("customer_key").agg(
        F.count("*").alias("interactions_count"),
        F.max("started_at").alias("last_interaction_at"),
        *[_share(F.col("channel") == c).alias(f"ch_{c}") for c in ALL_CHANNELS],
        *[_share((local_hour >= lo) & (local_hour < hi)).alias(f"hour_{name}") for name, lo, hi in HOUR_BANDS],
        *[_share(F.col("topic") == t).alias(f"topic_{t}") for t in topics],
        F.avg(F.col("resolved").cast("double")).alias("resolved_rate"),
        # the KPI's rule, per customer: resolved at first contact / contacts whose outcome is known
        F.avg(F.col("_fcr").cast("double")).alias("fcr_rate"),
        _share(F.col("bot_only")).alias("bot_only_rate"),
        F.avg(F.when(is_bot_handled, F.col("handed_off").cast("double"))).alias("handoff_rate"),
        F.avg("wait_seconds").alias("avg_wait_seconds"),
        F.avg("handle_seconds").alias("avg_handle_seconds"),
        F.avg("message_count").alias("avg_messages"),
        _share(F.col("language") == "pt").alias("lang_pt_share"),
        F.max(F.when(F.col("channel") == "whatsapp", True)).alias("_used_whatsapp"),
        # the latest interaction (ordered as rules.channel_usage orders it): open issue, last topic
        F.max_by(F.struct("resolved", "topic", "started_at"), F.struct("started_at", "interaction_id"))
        .alias("_last"),
    )
    preferred = rules.channel_usage(seen).drop("interactions_total")
    per_language = seen.where(F.col("language").isNotNull()).groupBy("customer_key", "language").agg(
        F.count("*").alias("n")
    )
    language = per_language.groupBy("customer_key").agg(
        F.max(F.struct("n", "language")).getField("language").alias("main_language")
    )
    return [inter, preferred, language]


def _survey_part(answered: DataFrame) -> DataFrame:
    """Per customer, from the responses before the cut: averages per survey, satisfaction and effort."""
    return answered.groupBy("customer_key").agg(
        F.count("*").alias("survey_count"),
        *[F.avg(F.when(F.col("survey") == s, F.col("score").cast("double"))).alias(f"{s}_avg") for s in SURVEYS],
        F.avg(rules.normalised_score(F.col("survey"), F.col("score"))).alias("satisfaction_index"),
        # effort: CES on 0..1, 1 = very high effort
        F.avg(F.when(F.col("survey") == "ces", rules.effort(F.col("score")))).alias("effort_index"),
    )


def _order_parts(ordered: DataFrame, products: DataFrame, settings: Settings) -> list[DataFrame]:
    """Per customer, from the orders before the cut: spend, order-channel mix, the price level of what was
    bought (its percentile within its category), and the counts per category."""
    price_rank = Window.partitionBy("category").orderBy("price")
    levels = products.where(F.col("price").isNotNull()).select(
        "product_id", F.percent_rank().over(price_rank).alias("_price_level")
    )
    bought = ordered.join(levels, on="product_id", how="left")
    spend = bought.groupBy("customer_key").agg(
        F.count("*").alias("orders_count"),
        F.sum("amount").alias("total_spend"),
        F.avg("amount").alias("avg_order_value"),
        F.avg("_price_level").alias("price_level"),
        F.max("ordered_at").alias("last_order_at"),
        *[_share(F.col("channel") == c).alias(f"ochan_{c}") for c in settings.models.features.order_channels],
    )
    per_category = bought.where(F.col("category").isNotNull()).groupBy("customer_key", "category").agg(
        F.count("*").alias("n")
    )
    categories = per_category.groupBy("customer_key").agg(
        F.map_from_entries(F.array_sort(F.collect_list(F.struct("category", "n")))).alias("_category_counts"),
        F.sum("n").alias("_category_total"),
    )
    return [spend, categories]


def _action_part(sent: DataFrame, cut: Column, settings: Settings) -> DataFrame:
    """Per customer, from the actions sent before the cut: contact pressure and responsiveness."""
    fatigue_start = cut - F.expr(f"INTERVAL {settings.models.nba.fatigue_days} DAYS")
    return sent.groupBy("customer_key").agg(
        F.count(F.when(F.col("sent_at") >= fatigue_start, True)).alias("actions_recent"),
        F.avg(F.when(F.col("action") != "no_action", F.col("responded").cast("double"))).alias("action_response_rate"),
        F.max("sent_at").alias("last_action_at"),
    )


def _feature_columns(joined: DataFrame, cut: Column, settings: Settings) -> DataFrame:
    """The feature table's columns, in order, from the customers joined to every part."""
    zero = F.lit(0.0)
    last_activity = F.greatest("last_interaction_at", "last_order_at", "first_seen_at")
    tenure = _days_between(cut, F.col("first_seen_at"))
    open_issue_start = cut - F.expr(f"INTERVAL {settings.models.nba.open_issue_days} DAYS")
    is_open_issue = (
        F.col("_last.started_at").isNotNull()
        & (F.col("_last.started_at") >= open_issue_start)
        & (F.col("_last.resolved") == F.lit(False))
    )
    income_level = F.create_map(*[x for k, v in INCOME_LEVELS.items() for x in (F.lit(k), F.lit(v))])
    age = rules.age_years(F.col("birth_date"), cut).cast("double")
    return joined.select(
        "customer_key",
        cut.alias("as_of"),
        # demographics
        # a CRM row with any value before the cut
        (F.coalesce(F.size("value_sources"), F.lit(0)) > 0).cast("double").alias("has_crm"),
        age.alias("age"),
        rules.age_band(F.col("birth_date"), F.to_date(cut)).alias("age_band"),
        "gender",
        "income_band",
        income_level[F.col("income_band")].alias("income_level"),
        "profession",
        "state",
        "marketing_consent",
        # tenure and RFM
        tenure.alias("tenure_days"),
        _days_between(cut, last_activity).alias("recency_days"),
        F.coalesce("interactions_count", F.lit(0)).cast("long").alias("interactions_count"),
        (F.coalesce("interactions_count", F.lit(0)) / F.greatest(tenure / 7.0, F.lit(1.0))).alias("interactions_per_week"),
        F.coalesce("orders_count", F.lit(0)).cast("long").alias("orders_count"),
        F.coalesce("total_spend", zero).alias("total_spend"),
        "avg_order_value",
        "price_level",
        # mixes (0 when the customer has no interaction / order)
        *[F.coalesce(c, zero).alias(c) for c in channel_share_columns()],
        *[F.coalesce(f"hour_{name}", zero).alias(f"hour_{name}") for name, _, _ in HOUR_BANDS],
        *[F.coalesce(c, zero).alias(c) for c in topic_share_columns(settings)],
        *[F.coalesce(c, zero).alias(c) for c in order_channel_share_columns(settings)],
        F.coalesce(
            F.transform_values("_category_counts", lambda _, n: n / F.col("_category_total")),
            F.create_map().cast("map<string,double>"),
        ).alias("category_shares"),
        # satisfaction and effort
        F.coalesce("survey_count", F.lit(0)).cast("long").alias("survey_count"),
        "nps_avg", "csat_avg", "ces_avg", "sps_avg", "satisfaction_index", "effort_index",
        # service history
        "resolved_rate", "fcr_rate", "bot_only_rate", "handoff_rate",
        "avg_wait_seconds", "avg_handle_seconds", "avg_messages",
        "lang_pt_share", "main_language",
        "preferred_channel",
        "last_channel",
        F.col("_last.topic").alias("last_topic"),
        F.col("_last.started_at").alias("last_interaction_at"),
        is_open_issue.alias("open_issue"),
        # reachability and contact pressure
        F.coalesce("_has_email", F.lit(False)).alias("has_email"),
        F.coalesce("_has_phone", F.lit(False)).alias("has_phone"),
        (F.coalesce("_used_whatsapp", F.lit(False)) | F.coalesce("_has_phone", F.lit(False))).alias("has_whatsapp"),
        F.coalesce("actions_recent", F.lit(0)).cast("long").alias("actions_recent"),
        "action_response_rate",
        "last_action_at",
    )
