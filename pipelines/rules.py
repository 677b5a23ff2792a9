"""The business rules, each in one place: what a promoter is, what an order is worth, when a contact
was resolved at first contact, which CRM row describes a customer.

KPIs (`pipelines.kpis`), profiles (`pipelines.profiles`), silver commerce (`pipelines.commerce`) and
the customer features (`features.customer`) all call these, so a metric and the feature of the same
name cannot drift apart. docs/CONTRACTS.md section 4 defines each rule in words; a change here is a
change of the contract.

Column rules take and return `Column`s; frame rules take and return `DataFrame`s.
"""
from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from atende.pipelines.schemas import SURVEY_SCALES

MICROS_PER_DAY = 86_400_000_000

# ------------------------------------------------------------------ surveys
# surveys where a low score is the good answer (CES: 1 = very low effort)
LOWER_IS_BETTER = frozenset({"ces"})


# NPS classes: promoters answer 9 or 10, detractors 0 to 6 (the SQL of the reports reads these too)
NPS_PROMOTER_MIN = 9
NPS_DETRACTOR_MAX = 6


def promoter(score: Column) -> Column:
    """An NPS response scoring 9 or 10."""
    return score >= NPS_PROMOTER_MIN


def detractor(score: Column) -> Column:
    """An NPS response scoring 0 to 6."""
    return score <= NPS_DETRACTOR_MAX


def csat_satisfied(score: Column) -> Column:
    """A CSAT response scoring 4 or 5."""
    return score >= 4


def normalised_score(survey: Column, score: Column) -> Column:
    """A survey score on 0..1 from its scale (SURVEY_SCALES), higher is better, clipped to the
    scale; null for an unknown survey."""
    result: Column | None = None
    for name, (low, high) in SURVEY_SCALES.items():
        scaled = (score.cast("double") - F.lit(float(low))) / F.lit(float(high - low))
        value = F.lit(1.0) - scaled if name in LOWER_IS_BETTER else scaled
        value = F.least(F.greatest(value, F.lit(0.0)), F.lit(1.0))
        result = F.when(survey == name, value) if result is None else result.when(survey == name, value)
    assert result is not None  # SURVEY_SCALES is never empty
    return result


def effort(score: Column) -> Column:
    """A CES score on 0..1 from the CES scale, 1 = the highest effort."""
    low, high = SURVEY_SCALES["ces"]
    return (score.cast("double") - F.lit(float(low))) / F.lit(float(high - low))


# ------------------------------------------------------------------ contacts
def is_call(channel: Column) -> Column:
    return channel == "voice"


def bot_handled(channel: Column, has_bot: Column) -> Column:
    """A conversation (not a call) on the chatbot channel, or one that holds a bot message; a
    chatbot conversation is bot-handled even when silver saw no bot message in it."""
    return ~is_call(channel) & ((channel == "chatbot") | F.coalesce(has_bot, F.lit(False)))


def first_contact_resolution(window_days: int, repeat_contact_channels: Iterable[str] = ()) -> Column:
    """Over silver interactions (`interaction_id, customer_key, channel, topic, started_at, resolved`):
    true when the contact was resolved at first contact, false when not, null when unknown.

    * **Resolution flag** (channels that record `resolved`): resolved, and no other interaction of
      the same customer on the same topic, on any channel, starts strictly within `window_days` x 24 h
      after it (to the microsecond). An interaction without a customer or a topic is never followed
      up, and one without a topic is never a follow-up.
    * **Repeat contact** (`repeat_contact_channels`, e.g. WhatsApp and e-mail, which carry no
      resolution flag): when `resolved` is null there, the contact counts as resolved at first
      contact when the same customer does not contact again, on any channel and any topic, strictly
      within the window; null without a customer (nobody to follow).
    * Anything else with a null `resolved` is null (not eligible).
    """
    horizon_us = window_days * MICROS_PER_DAY
    anonymous = F.concat(F.lit("~"), F.col("interaction_id"))
    started = F.unix_micros("started_at")
    same_topic = (
        Window.partitionBy(F.coalesce(F.col("customer_key"), anonymous), F.col("topic"))
        .orderBy(started).rangeBetween(1, horizon_us - 1)
    )
    any_topic = Window.partitionBy(F.coalesce(F.col("customer_key"), anonymous)).orderBy(started).rangeBetween(
        1, horizon_us - 1
    )
    known_customer = F.col("customer_key").isNotNull()
    followed_on_topic = known_customer & F.col("topic").isNotNull() & (F.count("*").over(same_topic) > 0)
    followed_at_all = F.count("*").over(any_topic) > 0
    channels = list(repeat_contact_channels)
    by_repeat = F.col("resolved").isNull() & known_customer & (
        F.col("channel").isin(channels) if channels else F.lit(False)
    )
    return (
        F.when(F.col("resolved").isNotNull(), F.col("resolved") & ~followed_on_topic)
        .when(by_repeat, ~followed_at_all)
    )


def channel_usage(keyed_interactions: DataFrame) -> DataFrame:
    """`customer_key, interactions_total, preferred_channel, last_channel` over interactions with a
    customer: the most frequent channel (a tie goes to the channel used most recently, then the
    channel's name), and the channel of the latest interaction (ties: the greatest interaction_id)."""
    per_channel = keyed_interactions.groupBy("customer_key", "channel").agg(
        F.count("*").alias("n"), F.max("started_at").alias("last_at")
    )
    preferred = per_channel.groupBy("customer_key").agg(
        F.sum("n").alias("interactions_total"),
        F.max(F.struct("n", "last_at", "channel")).getField("channel").alias("preferred_channel"),
    )
    last = keyed_interactions.groupBy("customer_key").agg(
        F.max_by("channel", F.struct("started_at", "interaction_id")).alias("last_channel")
    )
    return preferred.join(last, on="customer_key", how="inner")


# ------------------------------------------------------------------ commerce
def order_amount(quantity: Column, unit_price: Column) -> Column:
    """What an order is worth: quantity x unit price, a missing quantity counting as one unit."""
    return F.coalesce(quantity, F.lit(1)) * unit_price


# ------------------------------------------------------------------ people
def age_years(birth_date: Column, as_of: Column) -> Column:
    """Completed years at `as_of`; null when unknown or the birth date is after `as_of`."""
    age = F.floor(F.months_between(as_of, birth_date) / F.lit(12))
    return F.when(age >= 0, age)


def age_band(birth_date: Column, as_of: Column) -> Column:
    """18-24 … 65+ from completed years at `as_of`; null when unknown or under 18."""
    age = age_years(birth_date, as_of)
    return (
        F.when(age >= 65, "65+")
        .when(age >= 55, "55-64")
        .when(age >= 45, "45-54")
        .when(age >= 35, "35-44")
        .when(age >= 25, "25-34")
        .when(age >= 18, "18-24")
    )
