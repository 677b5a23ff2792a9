"""Gold `service_kpis`: the service metrics of docs/CONTRACTS.md section 4, per day and channel.

Rows are in long format (see `pipelines.schemas_gold.SERVICE_KPIS`): `grouping_level` says
what a row aggregates, "date,channel" or "date,channel,<dimension>" for each configured
`kpis.extra_dimensions`, with the dimension's value in `dimension_value`. A rate or mean
is null when its group has no qualifying rows; the count behind it is then 0.
"""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from atende.conf.settings import Settings
from atende.pipelines import rules
from atende.pipelines.schemas_gold import KPI_BASE_LEVEL, SERVICE_KPIS

UNKNOWN_CHANNEL = "unknown"


MICROS_PER_DAY = rules.MICROS_PER_DAY


def business_date(ts: Column, timezone: str) -> Column:
    """The calendar date of the instant `ts` on the wall clock of `timezone`.

    `to_date` would read the shifted timestamp in the session time zone, so the date would be
    right only where the session runs in UTC; the wall-clock microseconds are counted directly."""
    wall_clock_us = F.unix_micros(F.from_utc_timestamp(ts, timezone))
    return F.date_from_unix_date(F.floor(wall_clock_us / F.lit(MICROS_PER_DAY)).cast("int"))


def _count(condition: Column) -> Column:
    return F.count(F.when(condition, F.lit(1)))


def build_service_kpis(
    interactions: DataFrame,
    survey_responses: DataFrame,
    settings: Settings,
    run_id: str,
    now: datetime,
) -> DataFrame:
    """SERVICE_KPIS from silver interactions and survey_responses: one fact row per interaction and per
    response (a response on its interaction's date, channel and dimensions), each counted once per
    grouping level, then aggregated per date, channel and level."""
    dims = list(settings.kpis.extra_dimensions)
    unknown = [d for d in dims if d not in interactions.columns]
    if unknown:
        raise ValueError(f"kpis.extra_dimensions names columns interactions does not have: {unknown}")
    interaction_facts = _interaction_facts(interactions, dims, settings)
    survey_facts = _survey_facts(survey_responses, interaction_facts, dims, settings.kpis.business_timezone)
    levels = [F.struct(F.lit(KPI_BASE_LEVEL).alias("level"), F.lit(None).cast("string").alias("value"))] + [
        F.struct(F.lit(f"{KPI_BASE_LEVEL},{d}").alias("level"), F.col(d).cast("string").alias("value")) for d in dims
    ]
    facts = (
        interaction_facts.unionByName(survey_facts)
        .withColumn("_g", F.explode(F.array(*levels)))
        .select("*", F.col("_g.level").alias("grouping_level"), F.col("_g.value").alias("dimension_value"))
    )
    aggregated = facts.groupBy("date", "channel", "grouping_level", "dimension_value").agg(*_kpi_aggregates())
    return aggregated.select(
        *[F.col(f.name) for f in SERVICE_KPIS.fields if f.name not in ("run_id", "_written_at")],
        F.lit(run_id).alias("run_id"),
        F.lit(now).cast("timestamp").alias("_written_at"),
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SERVICE_KPIS.fields])


def _interaction_facts(interactions: DataFrame, dims: list[str], settings: Settings) -> DataFrame:
    """One fact row per interaction: its date (business time zone), channel, dimensions and the flags and
    values its KPIs count."""
    tz = settings.kpis.business_timezone
    is_call = rules.is_call(F.col("channel"))
    answered = is_call & (F.col("disposition") == "answered")
    is_conversation = ~is_call
    bot_handled = rules.bot_handled(F.col("channel"), F.col("has_bot"))
    aht_value = (
        F.when(answered, F.col("talk_seconds") + F.coalesce("hold_seconds", F.lit(0.0)))
        .when(is_conversation, F.col("handle_seconds"))
    )
    interaction_facts = interactions.select(
        "interaction_id",
        business_date(F.col("started_at"), tz).alias("date"),
        "channel",
        *dims,
        F.lit(True).alias("is_interaction"),
        F.lit(None).cast("string").alias("survey"),
        F.lit(None).cast("int").alias("score"),
        rules.first_contact_resolution(settings.kpis.fcr_window_days, settings.kpis.repeat_contact_channels)
        .alias("fcr"),
        F.col("first_response_seconds").cast("double").alias("first_response_seconds"),
        bot_handled.alias("bot_handled"),
        (F.coalesce("resolved", F.lit(False)) & ~F.coalesce("handed_off", F.lit(False))).alias("contained"),
        F.coalesce("handed_off", F.lit(False)).alias("handed_off"),
        is_call.alias("is_call"),
        answered.alias("answered"),
        (is_call & (F.col("disposition") == "abandoned")).alias("abandoned"),
        aht_value.cast("double").alias("aht_value"),
    )
    return interaction_facts


def _survey_facts(survey_responses: DataFrame, interaction_facts: DataFrame, dims: list[str], tz: str) -> DataFrame:
    """One fact row per survey response, on the date, channel and dimensions of the interaction it names
    (a response naming none: its own submission date and the unknown channel)."""
    about = interaction_facts.select(
        F.col("interaction_id").alias("_about"),
        F.col("date").alias("_date"),
        F.col("channel").alias("_channel"),
        *[F.col(d).alias(f"_dim_{d}") for d in dims],
    )
    responses = survey_responses.join(about, on=F.col("interaction_id") == F.col("_about"), how="left")
    survey_facts = responses.select(
        F.lit(None).cast("string").alias("interaction_id"),
        F.coalesce("_date", business_date(F.col("submitted_at"), tz)).alias("date"),
        F.coalesce("_channel", F.lit(UNKNOWN_CHANNEL)).alias("channel"),
        *[F.col(f"_dim_{d}").alias(d) for d in dims],
        F.lit(False).alias("is_interaction"),
        F.lower("survey").alias("survey"),
        F.col("score").cast("int").alias("score"),
        F.lit(None).cast("boolean").alias("fcr"),
        F.lit(None).cast("double").alias("first_response_seconds"),
        F.lit(False).alias("bot_handled"),
        F.lit(False).alias("contained"),
        F.lit(False).alias("handed_off"),
        F.lit(False).alias("is_call"),
        F.lit(False).alias("answered"),
        F.lit(False).alias("abandoned"),
        F.lit(None).cast("double").alias("aht_value"),
    )
    return survey_facts


def _kpi_aggregates() -> list[Column]:
    """The KPIs of a group of facts (docs/CONTRACTS.md, gold/service_kpis)."""
    survey = F.col("survey")
    score = F.col("score")
    nps_n = _count(survey == "nps")
    promoters = _count((survey == "nps") & rules.promoter(score))
    detractors = _count((survey == "nps") & rules.detractor(score))
    csat_n = _count(survey == "csat")
    bot_n = _count(F.col("bot_handled"))
    calls_n = _count(F.col("is_call"))
    return [
        _count(F.col("is_interaction")).alias("interactions"),
        F.try_divide(F.lit(100.0) * (promoters - detractors), nps_n).alias("nps"),
        nps_n.alias("nps_responses"),
        F.try_divide(F.lit(100.0) * _count((survey == "csat") & rules.csat_satisfied(score)), csat_n).alias("csat_pct"),
        F.avg(F.when(survey == "csat", score)).alias("csat_avg"),
        csat_n.alias("csat_responses"),
        F.avg(F.when(survey == "ces", score)).alias("ces_avg"),
        _count(survey == "ces").alias("ces_responses"),
        F.avg(F.when(survey == "sps", score)).alias("sps_avg"),
        _count(survey == "sps").alias("sps_responses"),
        F.try_divide(_count(F.col("fcr")).cast("double"), _count(F.col("fcr").isNotNull())).alias("fcr_rate"),
        _count(F.col("fcr").isNotNull()).alias("fcr_eligible"),
        F.percentile("first_response_seconds", F.lit(0.5)).alias("first_response_seconds_p50"),
        F.percentile("first_response_seconds", F.lit(0.9)).alias("first_response_seconds_p90"),
        F.count("first_response_seconds").alias("first_response_count"),
        F.try_divide(_count(F.col("bot_handled") & F.col("contained")).cast("double"), bot_n).alias("bot_containment_rate"),
        F.try_divide(_count(F.col("bot_handled") & F.col("handed_off")).cast("double"), bot_n).alias("handoff_rate"),
        bot_n.alias("bot_handled"),
        F.try_divide(_count(F.col("abandoned")).cast("double"), calls_n).alias("abandonment_rate"),
        calls_n.alias("calls"),
        _count(F.col("answered")).alias("answered_calls"),
        F.avg("aht_value").alias("aht_seconds"),
        F.count("aht_value").alias("aht_count"),
    ]


def build_channel_overview(service_kpis: DataFrame) -> DataFrame:
    """Per channel over every day in the table: the rates re-weighted by the counts behind them.

    Rates and NPS are linear in their counts, so weighting each day's value by its
    response count gives exactly the metric over the whole period.
    """
    base = service_kpis.where(F.col("grouping_level") == "date,channel")

    def weighted(metric: str, weight: str) -> Column:
        total = F.sum(F.when(F.col(metric).isNotNull(), F.col(weight)))
        return F.sum(F.col(metric) * F.col(weight)) / total

    return base.groupBy("channel").agg(
        F.sum("interactions").alias("interactions"),
        weighted("nps", "nps_responses").alias("nps"),
        weighted("csat_pct", "csat_responses").alias("csat_pct"),
        weighted("fcr_rate", "fcr_eligible").alias("fcr_rate"),
        weighted("bot_containment_rate", "bot_handled").alias("bot_containment_rate"),
    ).select("channel", "interactions", "nps", "csat_pct", "fcr_rate", "bot_containment_rate").orderBy(
        F.col("interactions").desc(), "channel"
    )
