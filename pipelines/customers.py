"""Silver `customers`: one row per customer key, the values that survive from what the sources hold.

Every source value of a field becomes a *candidate* (customer, field, source, value, how often it was
seen, when last), and `survivorship` (conf, `FieldRule`) picks one per customer and field in one
aggregation. The same rules give the features their CRM fields at a cut (`surviving_values` over the
history before it), so a profile and a feature never disagree about what a customer's city is.
"""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from atende.conf.settings import FieldRule, Settings, SurvivorshipSettings
from atende.pipelines.frames import union_all
from atende.pipelines.schemas import CUSTOMERS

# the column of each source that holds a field's value (silver/crm column; interactions and identifiers
# supply one field each, below)
CRM_COLUMNS = {"display_name": "full_name", "birth_date": "birth_date", "gender": "gender", "city": "city",
               "state": "state", "country": "country", "income_band": "income_band", "profession": "profession",
               "marketing_consent": "marketing_consent", "consent_updated_at": "consent_updated_at"}
IDENTIFIER_FIELDS = {"email": "email", "phone": "phone"}  # field -> identity_map identifier_type
CANDIDATE_COLUMNS = ("customer_key", "field", "source", "value", "n", "last_at", "tiebreak")


def _blank_to_null(value: Column) -> Column:
    text = F.trim(value.cast("string"))
    return F.when(text != "", text)


def crm_candidates(crm: DataFrame, fields: list[str]) -> DataFrame:
    """A candidate per CRM row and field (blank values included, for the `latest` rule), observed at the
    row's `updated_at`; ties between rows of one instant go to the greatest crm_id."""
    wanted = [f for f in fields if f in CRM_COLUMNS]
    keyed = crm.where(F.col("customer_key").isNotNull())
    if not wanted:
        return keyed.limit(0).select(*_empty_candidate())
    pairs = F.array(*[F.struct(F.lit(f).alias("field"), _blank_to_null(F.col(CRM_COLUMNS[f])).alias("value"))
                      for f in wanted])
    return keyed.select(
        "customer_key", F.explode(pairs).alias("_p"), F.col("updated_at").alias("last_at"),
        F.col("crm_id").alias("tiebreak"),
    ).select("customer_key", "_p.field", F.lit("crm").alias("source"), "_p.value", F.lit(1).cast("long").alias("n"),
             "last_at", "tiebreak")


def interaction_name_candidates(interactions: DataFrame) -> DataFrame:
    """The names customers gave on interactions: one candidate per name, counted per interaction."""
    name = _blank_to_null(F.col("customer_name"))
    return (
        interactions.where(F.col("customer_key").isNotNull() & name.isNotNull())
        .groupBy("customer_key", name.alias("value"))
        .agg(F.count("*").alias("n"), F.max("started_at").alias("last_at"))
        .select("customer_key", F.lit("display_name").alias("field"), F.lit("interactions").alias("source"),
                "value", "n", "last_at", F.col("value").alias("tiebreak"))
    )


def identifier_candidates(identity_map: DataFrame, fields: list[str]) -> DataFrame:
    """E-mail addresses and phones of the identity map, observed when last seen."""
    types = {IDENTIFIER_FIELDS[f]: f for f in fields if f in IDENTIFIER_FIELDS}
    field = F.create_map(*[x for t, f in types.items() for x in (F.lit(t), F.lit(f))])
    return identity_map.where(F.col("identifier_type").isin(list(types) or [""])).select(
        "customer_key", field[F.col("identifier_type")].alias("field"), F.lit("identifiers").alias("source"),
        F.col("identifier").alias("value"), F.lit(1).cast("long").alias("n"), F.col("last_seen_at").alias("last_at"),
        F.col("identifier").alias("tiebreak"),
    )


def _empty_candidate() -> list[Column]:
    return [F.lit(None).cast(t).alias(c) for c, t in zip(
        CANDIDATE_COLUMNS, ("string", "string", "string", "string", "long", "timestamp", "string"))]


def _rank(rule: FieldRule) -> Column:
    """The order candidates of one field compete in (greatest wins): a struct of three longs and the
    tie-break. Sources are ranked by their place in `rule.sources` (earlier is better)."""
    sources = rule.sources
    prio = F.lit(0).cast("long")
    for i, s in enumerate(sources):
        prio = F.when(F.col("source") == s, F.lit(len(sources) - i).cast("long")).otherwise(prio)
    recent = F.unix_micros(F.col("last_at"))
    n = F.col("n")
    if rule.rule in ("most_recent", "latest"):
        keys = (recent, prio, n)
    elif rule.rule == "most_frequent":
        keys = (n, recent, prio)
    else:  # source_priority: the source first, then what `within` picks inside it
        frequent = F.col("source").isin([s for s, pick in rule.within.items() if pick == "most_frequent"] or [""])
        keys = (prio, F.when(frequent, n).otherwise(recent), F.when(frequent, recent).otherwise(n))
    return F.struct(keys[0].alias("k1"), keys[1].alias("k2"), keys[2].alias("k3"), F.col("tiebreak"), F.col("value"))


def survive(candidates: DataFrame, survivorship: SurvivorshipSettings, fields: list[str]) -> DataFrame:
    """`customer_key`, one string column per field (its surviving value) and `value_sources` (field ->
    the source its value came from), one row per customer holding a candidate."""
    rules = {f: survivorship.fields[f] for f in fields}
    if not rules:  # no field asked for: no customer holds a candidate of one
        return candidates.limit(0).select("customer_key", F.create_map().cast("map<string,string>").alias("value_sources"))
    allowed = F.lit(False)
    for f, rule in rules.items():
        usable = (F.col("field") == f) & F.col("source").isin(list(rule.sources))
        if rule.rule != "latest":
            usable = usable & F.col("value").isNotNull()
        allowed = allowed | usable
    # one row per candidate value: how often it was seen, when last, and its tie-break at that instant
    grouped = (
        candidates.where(allowed)
        .groupBy("customer_key", "field", "source", "value")
        .agg(F.sum("n").alias("n"), F.max_by("tiebreak", F.struct("last_at", "tiebreak")).alias("tiebreak"),
             F.max("last_at").alias("last_at"))
    )
    # each field's winner in one aggregation per customer: max_by skips the rows whose ordering is null (the
    # other fields' candidates); a rank is unique within a field (it ends with the value, and sources rank apart)
    winners = grouped.groupBy("customer_key").agg(*[
        F.max_by(F.struct("value", "source"), F.when(F.col("field") == f, _rank(rule))).alias(f"_w_{f}")
        for f, rule in rules.items()
    ])
    return winners.select(
        "customer_key",
        *[F.col(f"_w_{f}.value").alias(f) for f in fields],
        F.map_from_entries(F.array_compact(F.array(*[
            F.when(F.col(f"_w_{f}.value").isNotNull(),
                   F.struct(F.lit(f).alias("field"), F.col(f"_w_{f}.source").alias("source")))
            for f in sorted(fields)
        ]))).alias("value_sources"),
    )


def surviving_values(settings: Settings, fields: list[str], *, crm: DataFrame | None = None,
                     interactions: DataFrame | None = None, identity_map: DataFrame | None = None,
                     schema: StructType = CUSTOMERS) -> DataFrame:
    """`survive` over the candidates of the frames given, each field cast to its type in `schema`. Filter
    the frames first to see the customers as they were at a cut."""
    parts = []
    if crm is not None:
        parts.append(crm_candidates(crm, fields))
    if interactions is not None and "display_name" in fields:
        parts.append(interaction_name_candidates(interactions))
    if identity_map is not None and any(f in IDENTIFIER_FIELDS for f in fields):
        parts.append(identifier_candidates(identity_map, fields))
    if not parts:
        raise ValueError("surviving_values needs at least one source frame")
    types = {f.name: f.dataType for f in schema.fields}
    chosen = survive(union_all(parts), settings.survivorship, fields)
    return chosen.select("customer_key", *[F.col(f).cast(types[f]).alias(f) for f in fields], "value_sources")


def build_customers(identity_map: DataFrame, crm: DataFrame, interactions: DataFrame, settings: Settings,
                    run_id: str, now: datetime) -> DataFrame:
    """CUSTOMERS: one row per customer key of the identity map — its contact points (every crm_id,
    e-mail and phone it holds), when it was first and last seen, and the surviving value of each field
    (`survivorship`), with the source each came from."""
    itype = F.col("identifier_type")
    points = identity_map.groupBy("customer_key").agg(
        *[F.array_sort(F.collect_set(F.when(itype == t, F.col("identifier")))).alias(name)
          for t, name in (("crm_id", "crm_ids"), ("email", "emails"), ("phone", "phones"))],
        F.min("first_seen_at").alias("first_seen_at"),
        F.max("last_seen_at").alias("last_seen_at"),
    )
    fields = list(settings.survivorship.fields)
    values = surviving_values(settings, fields, crm=crm, interactions=interactions, identity_map=identity_map)
    return (
        points.join(values, on="customer_key", how="left")
        .withColumn("value_sources", F.coalesce("value_sources", F.create_map().cast("map<string,string>")))
        .select("*", F.lit(run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("_written_at"))
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in CUSTOMERS.fields])
    )
