"""Gold tables written by the profile and KPI stages (docs/CONTRACTS.md section 3 gold, section 4)."""
from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructType,
    TimestampType,
)

from atende.pipelines.schemas import _s

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")

CUSTOMER_PROFILES = StructType([
    _s("customer_key", StringType(), False),
    _s("crm_ids", ArrayType(StringType()), False),  # sorted; empty when no CRM record
    _s("display_name", StringType()),
    _s("primary_email", StringType()),
    _s("primary_phone", StringType()),
    _s("birth_date", DateType()),
    _s("age_band", StringType()),  # one of AGE_BANDS; null when unknown or under 18
    _s("gender", StringType()),
    _s("city", StringType()),
    _s("state", StringType()),
    _s("income_band", StringType()),
    _s("profession", StringType()),
    _s("marketing_consent", BooleanType()),
    _s("first_seen_at", TimestampType(), False),
    _s("last_seen_at", TimestampType(), False),
    _s("interactions_total", LongType(), False),
    _s("interactions_by_channel", MapType(StringType(), LongType()), False),
    _s("preferred_channel", StringType()),
    _s("last_channel", StringType()),
    _s("nps_last", IntegerType()),
    _s("csat_avg", DoubleType()),
    _s("ces_avg", DoubleType()),
    _s("sps_avg", DoubleType()),
    _s("orders_count", LongType(), False),
    _s("total_spend", DoubleType(), False),
    _s("persona_id", StringType()),  # null until personas exist
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

# Long format: each row aggregates the interactions (and the survey responses about them) of one
# `date` (started_at in the business time zone) and `channel`, and — when `grouping_level` names a
# third dimension ("date,channel,agent_id") — one value of it in `dimension_value` (null: the
# interactions without one, e.g. bot-only chats under agent_id). Summing a count over the
# dimension values of a level gives the "date,channel" row's count.
KPI_BASE_LEVEL = "date,channel"

SERVICE_KPIS = StructType([
    _s("date", DateType(), False),
    _s("channel", StringType(), False),
    _s("grouping_level", StringType(), False),
    _s("dimension_value", StringType()),
    _s("interactions", LongType(), False),
    _s("nps", DoubleType()),
    _s("nps_responses", LongType(), False),
    _s("csat_pct", DoubleType()),
    _s("csat_avg", DoubleType()),
    _s("csat_responses", LongType(), False),
    _s("ces_avg", DoubleType()),
    _s("ces_responses", LongType(), False),
    _s("sps_avg", DoubleType()),
    _s("sps_responses", LongType(), False),
    _s("fcr_rate", DoubleType()),
    _s("fcr_eligible", LongType(), False),  # interactions with a known resolution outcome
    _s("first_response_seconds_p50", DoubleType()),
    _s("first_response_seconds_p90", DoubleType()),
    _s("first_response_count", LongType(), False),
    _s("bot_containment_rate", DoubleType()),
    _s("handoff_rate", DoubleType()),
    _s("bot_handled", LongType(), False),
    _s("abandonment_rate", DoubleType()),
    _s("calls", LongType(), False),
    _s("answered_calls", LongType(), False),
    _s("aht_seconds", DoubleType()),
    _s("aht_count", LongType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

PERSONAS = StructType([
    _s("persona_id", StringType(), False),
    _s("persona_name", StringType(), False),
    _s("description", StringType()),
    _s("size", LongType(), False),  # customers scored into the persona in this run
    _s("traits", MapType(StringType(), DoubleType()), False),  # mean feature values of its members (fit sample)
    _s("model_version", StringType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

PERSONA_SEGMENTS = StructType([
    _s("customer_key", StringType(), False),
    _s("persona_id", StringType(), False),
    _s("confidence", DoubleType(), False),
    _s("model_version", StringType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

# the tone of each agent reply, as the tone champion's detector reads it (models/tone.py, jobs/modeling.py)
INTERACTION_TONES = StructType([
    _s("interaction_id", StringType(), False),
    _s("customer_key", StringType()),
    _s("tone", StringType(), False),
    _s("tone_probability", DoubleType(), False),
    _s("detector", StringType(), False),  # the SHA-256 of the detector's saved file
    _s("text_sha256", StringType(), False),  # of the reply's agent_text
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

PRODUCT_SCORE = StructType([
    _s("product_id", StringType()),
    _s("score", DoubleType()),
    _s("rank", IntegerType()),
])

# each customer's list from the product champion, before consent (jobs/modeling.py::product_picks)
PRODUCT_PICKS = StructType([
    _s("customer_key", StringType(), False),
    _s("products", ArrayType(PRODUCT_SCORE), False),
    _s("inputs_sha256", StringType(), False),  # of the customer's persona and order lines (product_inputs)
    _s("picked_by", StringType(), False),  # the SHA-256 of the model's files, the catalogue and top_n
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

RECOMMENDATIONS = StructType([
    _s("customer_key", StringType(), False),
    _s("tone", StringType()),
    _s("tone_confidence", DoubleType()),
    _s("products", ArrayType(PRODUCT_SCORE), False),
    _s("next_best_action", StringType()),
    _s("nba_score", DoubleType()),
    _s("reasons", ArrayType(StringType()), False),
    _s("model_versions", MapType(StringType(), StringType()), False),
    _s("holdout", BooleanType(), False),  # in the global control group: the baseline answered (models.holdout)
    _s("as_of", TimestampType(), False),  # the end of the data these recommendations were made from
    _s("valid_from", TimestampType(), False),
    _s("valid_until", TimestampType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])
