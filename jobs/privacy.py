"""LGPD (Lei 13.709/2018) art. 18 in the lakehouse: erasure, access, and the list that keeps erased people out.

* ``forget`` (`atende forget`): a customer (by key or by one of their identifiers) leaves every table.
  What is removed: the bronze records keyed to them in ``silver/record_keys`` and every bronze record that
  carries one of their identifiers (a record of someone else that names them included); quarantined lines
  whose raw text holds one of their identifiers or their registered name; every silver and gold row of
  their key, and the identity rows of their key and identifiers. Their identifiers go to
  ``ops/suppressed_identifiers`` first, hashed with a secret salt, so a file delivered again later does not
  bring them back (ingest drops such records before bronze, counted in ``ops/suppressed_deliveries``).
  Each touched table is then vacuumed with ``privacy.erasure_retention_hours``: older versions keep the
  rows until that many hours have passed (the command says until when; 0 removes them at once). The
  request is recorded in ``ops/erasures`` without personal data (counts per table, the models to retrain);
  the next run retrains every model, since each was fitted on data that held the customer.
* ``export_subject`` (`atende export-subject`): every row held about one customer, as one JSON document.

Order of the erasure: suppression first, identity last, so a run that crashes half-way can be repeated
with the same request (a key is still found through the identity map until the very end); deleting rows
already gone is a no-op.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DateType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from atende.conf.settings import Settings
from atende.features.identifiers import (
    normalize_as_given,
    normalize_email,
    normalize_handle,
    normalize_phone,
)
from atende.jobs.bookkeeping import new_run_id, utc_now
from atende.lakehouse.storage import Storage, join
from atende.lakehouse.tables import Lakehouse
from atende.pipelines import schemas
from atende.pipelines.frames import scalar
from atende.pipelines.identity.common import IDENTIFIER_TYPES

log = logging.getLogger(__name__)

ERASURES = StructType([
    StructField("erasure_id", StringType(), False),
    StructField("requested_at", TimestampType(), False),
    StructField("subjects", IntegerType(), False),        # keys and identifiers named in the request
    StructField("customer_keys", IntegerType(), False),   # customers they resolved to
    StructField("identifiers", IntegerType(), False),     # identifiers put on the suppression list
    StructField("rows_removed", MapType(StringType(), LongType()), False),  # "layer.table" -> rows
    StructField("vacuum_retention_hours", IntegerType(), False),
    StructField("visible_until", TimestampType(), False),  # old table versions hold the rows until then
    StructField("models_to_retrain", ArrayType(StringType()), False),
    StructField("retrained_by_run", StringType(), True),   # the run that retrained them all
])

SUPPRESSED_IDENTIFIERS = StructType([
    StructField("identifier_type", StringType(), False),
    StructField("identifier_hash", StringType(), False),  # sha256 of salt + type + ":" + normalised identifier
    StructField("salt_id", StringType(), False),          # which salt hashed it (the first 12 hex of its sha256)
    StructField("erasure_id", StringType(), False),
    StructField("suppressed_at", TimestampType(), False),
])

SUPPRESSED_DELIVERIES = StructType([
    StructField("run_id", StringType(), False),
    StructField("source", StringType(), False),
    StructField("_source_file", StringType(), False),
    StructField("_arrival_date", DateType(), False),
    StructField("records", LongType(), False),  # accepted records (WhatsApp: messages) dropped before bronze
])

# the id column a bronze source's records are known by in silver/record_keys (WhatsApp: the messages inside
# a payload, by message_id)
RECORD_ID_COLUMNS = {"conversations": "conversation_id", "email": "message_id", "calls": "call_id",
                     "surveys": "response_id", "crm": "crm_id", "orders": "order_id", "actions": "action_id"}
# silver tables whose rows are records by these ids (a record of someone else that named the customer)
_SILVER_RECORD_COLUMNS = {"survey_responses": ("surveys", "response_id"), "orders": ("orders", "order_id"),
                          "actions": ("actions", "action_id"), "crm": ("crm", "crm_id")}
MODELS = ("atende-personas", "atende-tone", "atende-products", "atende-nba")


class PrivacyError(ValueError):
    """A request a person must correct (an unknown identifier type, a value that is not an identifier)."""


@dataclass(frozen=True)
class Subject:
    """Whom a request is about: a customer key, or an identifier (`email:ana@x.com`, `phone:+55 11 ...`)."""
    customer_key: str | None = None
    identifier_type: str | None = None
    value: str | None = None

    def __str__(self) -> str:
        return self.customer_key if self.customer_key else f"{self.identifier_type}:{self.value}"


def parse_subject(text: str) -> Subject:
    """`TYPE:VALUE` for an identifier (TYPE one of IDENTIFIER_TYPES; a handle is `handle:instagram:@ana`),
    `customer_key:K` or a bare key."""
    text = text.strip()
    kind, sep, rest = text.partition(":")
    if not text:
        raise PrivacyError("an empty subject")
    if sep and kind == "customer_key":
        return Subject(customer_key=rest.strip())
    if sep and kind in IDENTIFIER_TYPES:
        if not rest.strip():
            raise PrivacyError(f"{kind}: no value given")
        return Subject(identifier_type=kind, value=rest.strip())
    if sep and kind and not kind.startswith("c-"):
        raise PrivacyError(f"unknown identifier type {kind!r} (expected customer_key or one of {', '.join(IDENTIFIER_TYPES)})")
    return Subject(customer_key=text)


def read_subjects(lines: Iterable[str]) -> list[Subject]:
    """Subjects of a request file: one per line; blank lines and lines starting with # are skipped."""
    found = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            found.append(parse_subject(line))
        except PrivacyError as exc:
            raise PrivacyError(f"line {number}: {exc}") from None
    return found


# ------------------------------------------------------------------ the salt and the suppression list
def _salt(settings: Settings, lake: Lakehouse, create: bool) -> str | None:
    from_env = os.environ.get(settings.privacy.salt_env)
    if from_env:
        return from_env
    storage = Storage(lake.spark)
    path = join(lake.uri, "ops", "_suppression_salt")
    if storage.stat(path) is not None:
        return storage.read_text(path).strip()
    if not create:
        return None
    salt = secrets.token_hex(32)
    storage.makedirs(join(lake.uri, "ops"))
    storage.write_text(path, salt + "\n")
    return salt


def salt_id(salt: str) -> str:
    return hashlib.sha256(salt.encode()).hexdigest()[:12]


def identifier_hash(salt: str, identifier_type: Column, identifier: Column) -> Column:
    return F.sha2(F.concat(F.lit(salt), identifier_type, F.lit(":"), identifier), 256)


def suppression_list(spark: SparkSession, settings: Settings, lake: Lakehouse) -> tuple[DataFrame, str] | None:
    """(identifier_type, identifier_hash) of every suppressed identifier and the salt that hashed them;
    None when nothing was ever erased. Raises when the list was hashed with another salt than the one
    configured now (the list would silently stop matching)."""
    if not lake.exists("ops", "suppressed_identifiers"):
        return None
    salt = _salt(settings, lake, create=False)
    table = lake.read("ops", "suppressed_identifiers")
    ids = [r["salt_id"] for r in table.select("salt_id").distinct().collect()]
    if not ids:
        return None
    if salt is None or ids != [salt_id(salt)]:
        raise PrivacyError(
            f"the suppression list in {lake.path('ops', 'suppressed_identifiers')} was hashed with another salt "
            f"than the one configured now (${settings.privacy.salt_env} or ops/_suppression_salt): erased "
            "customers could come back; restore that salt")
    return table.select("identifier_type", "identifier_hash").distinct(), salt


def carried_identifiers(bronze: dict[str, DataFrame], settings: Settings) -> DataFrame:
    """`source, record_id, identifier_type, identifier` of every customer identifier a bronze record carries:
    those identity resolution observes, and the addresses an e-mail was sent to (the company's replies
    name their customer only there; identity finds it through the thread)."""
    from atende.pipelines.identity.observations import build_identifier_observations

    spark = next(iter(bronze.values())).sparkSession
    # e-mail threads are not needed to see an address: no connected-components run here
    no_threads = spark.createDataFrame([], "message_id string, thread_id string")
    observed = build_identifier_observations(bronze, settings, email_threads=no_threads).where(
        F.col("identifier_type").isin(list(IDENTIFIER_TYPES))).select("source", "record_id", "identifier_type", "identifier")
    if "email" in bronze:
        email = bronze["email"]
        recipients = F.concat(*[F.coalesce(c, F.array().cast("array<string>")) for c in
                                ("to_addresses", "recipient_addresses") if c in email.columns])
        observed = observed.unionByName(
            email.select(F.lit("email").alias("source"), F.col("message_id").alias("record_id"),
                         F.explode(recipients).alias("address"))
            .select("source", "record_id", F.lit("email").alias("identifier_type"),
                    normalize_email(F.col("address"), settings.identity.blocklist_emails).alias("identifier"))
            .where(F.col("identifier").isNotNull() & F.col("record_id").isNotNull()))
    return observed


def suppressed_records(batch: dict[str, DataFrame], settings: Settings, suppressed: DataFrame, salt: str) -> DataFrame:
    """`source, record_id` of the records of a batch of bronze frames that carry a suppressed identifier."""
    return (
        carried_identifiers(batch, settings)
        .withColumn("identifier_hash", identifier_hash(salt, F.col("identifier_type"), F.col("identifier")))
        .join(F.broadcast(suppressed), on=["identifier_type", "identifier_hash"], how="left_semi")
        .select("source", "record_id").distinct()
    )


def drop_records(source: str, frame: DataFrame, record_ids: Sequence[str]) -> DataFrame:
    """A bronze frame without these records (WhatsApp: without these messages; a payload left with no
    message of its own is dropped, one that never had any, a status update, stays)."""
    if not record_ids:
        return frame
    if source == "whatsapp":
        kept = F.filter("messages", lambda m: ~m["message_id"].isin(list(record_ids)))
        had = F.coalesce(F.size("messages"), F.lit(0)) > 0
        return frame.withColumn("messages", F.when(F.col("messages").isNotNull(), kept)).where(
            ~had | (F.size("messages") > 0)).select(*frame.columns)
    column = RECORD_ID_COLUMNS[source]
    return frame.where(~F.col(column).isin(list(record_ids)))


def dropped_counts(source: str, frame: DataFrame, record_ids: Sequence[str]) -> DataFrame:
    """`source, _source_file, _arrival_date, records`: how many of these records each file held."""
    if source == "whatsapp":
        hits = frame.select("_source_file", "_arrival_date", F.size(F.filter(
            F.coalesce("messages", F.array()), lambda m: m["message_id"].isin(list(record_ids)))).alias("n"))
    else:
        hits = frame.select("_source_file", "_arrival_date",
                            F.col(RECORD_ID_COLUMNS[source]).isin(list(record_ids)).cast("int").alias("n"))
    return (hits.groupBy("_source_file", "_arrival_date").agg(F.sum("n").cast("long").alias("records"))
            .where(F.col("records") > 0).select(F.lit(source).alias("source"), "_source_file", "_arrival_date", "records"))


# ------------------------------------------------------------------ who the request is about
def _normalised(spark: SparkSession, settings: Settings, subjects: Sequence[Subject]) -> dict[Subject, tuple[str, str]]:
    """(identifier_type, normalised identifier) of each identifier subject, normalised as ingest does."""
    given = sorted({(s.identifier_type, s.value) for s in subjects if s.identifier_type and s.value})
    if not given:
        return {}
    region = settings.identity.default_region
    frame = spark.createDataFrame(given, "identifier_type string, value string")
    handle_platform = F.substring_index("value", ":", 1)
    handle_name = F.expr("substring(value, instr(value, ':') + 1)")
    normal = (
        F.when(F.col("identifier_type") == "email", normalize_email(F.col("value")))
        .when(F.col("identifier_type") == "phone", normalize_phone(F.col("value"), region))
        .when(F.col("identifier_type") == "handle",
              F.when(F.col("value").contains(":"), normalize_handle(handle_platform, handle_name)))
        .otherwise(normalize_as_given(F.col("value")))
    )
    rows = frame.select("identifier_type", "value", normal.alias("identifier")).collect()
    bad = [f"{r['identifier_type']}:{r['value']}" for r in rows if r["identifier"] is None]
    if bad:
        raise PrivacyError("not a valid identifier: " + ", ".join(bad)
                           + " (a handle is written handle:<platform>:<handle>, e.g. handle:instagram:@ana)")
    normal_of = {(r["identifier_type"], r["value"]): (r["identifier_type"], r["identifier"]) for r in rows}
    return {s: normal_of[(s.identifier_type, s.value)] for s in subjects if s.identifier_type and s.value}


def _quote_spark(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_datafusion(value: str) -> str:  # delta-rs reads predicates as DataFusion SQL: a quote is doubled
    return "'" + value.replace("'", "''") + "'"


# the quoting of string literals in the predicates of the engine at hand (set by `_dialect`)
_quote: Callable[[str], str] = _quote_spark


def _dialect(lake: Lakehouse) -> None:
    global _quote
    _quote = _quote_datafusion if lake.engine.name == "delta-rs" else _quote_spark


def _in(column: str, values: Iterable[str]) -> str | None:
    listed = sorted(set(values))
    return f"{column} IN ({', '.join(_quote(v) for v in listed)})" if listed else None


def _any(*parts: str | None) -> str | None:
    kept = [p for p in parts if p]
    return " OR ".join(f"({p})" for p in kept) if kept else None


def _identifier_predicate(identifiers: Iterable[tuple[str, str]]) -> str | None:
    by_type: dict[str, list[str]] = {}
    for kind, value in identifiers:
        by_type.setdefault(kind, []).append(value)
    return _any(*[f"identifier_type = {_quote(kind)} AND {_in('identifier', values)}" for kind, values in sorted(by_type.items())])


@dataclass
class Resolved:
    """What a request names, as the lakehouse knows it."""
    customer_keys: list[str]
    identifiers: list[tuple[str, str]]        # (type, normalised value): suppressed and searched for
    records: dict[str, list[str]]             # bronze source -> record ids
    needles: list[str] = field(default_factory=list)  # lower-cased strings searched for in quarantined text
    unknown: list[str] = field(default_factory=list)  # subjects the lakehouse holds nothing about


def _needles(identifiers: Iterable[tuple[str, str]], names: Iterable[str], region: str) -> list[str]:
    """The spellings of the customer's identifiers and names a raw line could hold, lower-cased."""
    import phonenumbers

    found: set[str] = set()
    for kind, value in identifiers:
        found.add(value.lower())
        if kind == "handle":
            found.add(value.split(":", 1)[-1].lower())
        if kind == "phone":
            try:
                number = phonenumbers.parse(value, region.upper())
            except phonenumbers.NumberParseException:
                continue
            national = phonenumbers.national_significant_number(number)
            found.update({value.lstrip("+"), national,
                          phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL).lower(),
                          phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL).lower()})
    found.update(n.strip().lower() for n in names if n and len(n.strip()) >= 5)
    return sorted(v for v in found if len(v) >= 5)  # shorter strings would match unrelated text


def resolve(spark: SparkSession, settings: Settings, lake: Lakehouse, subjects: Sequence[Subject]) -> Resolved:
    """The customers, identifiers and bronze records a request names."""
    _dialect(lake)
    normal = _normalised(spark, settings, subjects)
    given_ids = sorted(set(normal.values()))
    keys: set[str] = {s.customer_key for s in subjects if s.customer_key}
    identifiers: set[tuple[str, str]] = set(given_ids)
    seen: set[str] = set()  # keys and "type:identifier" the lakehouse holds
    if lake.exists("silver", "identity_map"):
        ident_map = lake.read("silver", "identity_map")
        by_id = _identifier_predicate(given_ids)
        if by_id:
            for r in ident_map.where(by_id).select("identifier_type", "identifier", "customer_key").collect():
                keys.add(r["customer_key"])
                seen.add(f"{r['identifier_type']}:{r['identifier']}")
        if keys:
            rows = ident_map.where(_in("customer_key", keys) or "FALSE").select("identifier_type", "identifier", "customer_key").collect()
            identifiers.update((r["identifier_type"], r["identifier"]) for r in rows)
            seen.update(r["customer_key"] for r in rows)
    records: dict[str, set[str]] = {}
    if keys and lake.exists("silver", "record_keys"):
        for r in lake.read("silver", "record_keys").where(_in("customer_key", keys) or "FALSE").select(
                "source", "record_id", "customer_key").collect():
            records.setdefault(r["source"], set()).add(r["record_id"])
            seen.add(r["customer_key"])
    # records that carry one of the identifiers though they are keyed to someone else (or to no one)
    bronze = {s: lake.read("bronze", s) for s in schemas.SOURCES if s != "products" and lake.exists("bronze", s)}
    by_value = _identifier_predicate(identifiers)
    if bronze and by_value:
        carrying = carried_identifiers(bronze, settings).where(by_value)
        for r in carrying.select("source", "record_id", "identifier_type", "identifier").distinct().collect():
            records.setdefault(r["source"], set()).add(r["record_id"])
            seen.add(f"{r['identifier_type']}:{r['identifier']}")
    names: list[str] = []
    if keys and lake.exists("silver", "crm"):
        names = [r["full_name"] for r in lake.read("silver", "crm").where(_in("customer_key", keys) or "FALSE")
                 .select("full_name").distinct().collect() if r["full_name"]]
    unknown = [str(s) for s in subjects
               if (s.customer_key and s.customer_key not in seen)
               or (s in normal and "{}:{}".format(*normal[s]) not in seen)]
    return Resolved(sorted(keys), sorted(identifiers), {k: sorted(v) for k, v in sorted(records.items())},
                    _needles(identifiers, names, settings.identity.default_region), unknown)


# ------------------------------------------------------------------ erasure
@dataclass
class ErasureReport:
    erasure_id: str
    customer_keys: int
    identifiers: int
    rows_removed: dict[str, int]
    retention_hours: int
    visible_until: dt.datetime
    files_vacuumed: int
    models_to_retrain: list[str]
    unknown: list[str]


def _table_predicate(layer: str, table: str, columns: set[str], who: Resolved) -> str | None:
    """The rows of a table the erasure removes, as a SQL predicate both engines read; None: none."""
    keys = who.customer_keys
    if layer == "bronze":
        if table in RECORD_ID_COLUMNS and table != "crm":  # a CRM id is personal: bronze/crm is rewritten
            return _in(RECORD_ID_COLUMNS[table], who.records.get(table, []))
        return None  # whatsapp (rewritten, see _rewrite_whatsapp), quarantine (by text), products (no person)
    if layer == "ops":
        return None  # counts, dates and run records: no personal data
    # a DELETE's predicate stays in the table's log (its commit's parameters): no identifier goes into one
    if table == "identity_map":  # every identifier of theirs is a row of their key
        return _in("customer_key", keys)
    if table == "identity_exceptions":
        return None  # held-back identifiers have no key: the table is rewritten without them (_rewrite_table)
    if table == "identity_merges":
        return _any(_in("retired_key", keys), _in("surviving_key", keys))
    if table == "record_keys":
        return _any(_in("customer_key", keys),
                    *[f"source = {_quote(source)} AND {_in('record_id', ids)}" for source, ids in who.records.items()
                      if ids and source != "crm"])
    parts: list[str | None] = [_in("customer_key", keys) if "customer_key" in columns else None]
    if layer == "silver" and table in _SILVER_RECORD_COLUMNS and table != "crm":
        source, column = _SILVER_RECORD_COLUMNS[table]
        parts.append(_in(column, who.records.get(source, [])))
    if layer == "silver" and table == "interactions":  # a conversation or call is its own interaction
        parts.append(_in("interaction_id", [*who.records.get("conversations", []), *who.records.get("calls", [])]))
    return _any(*parts)


def _rewrite_partitions(lake: Lakehouse, layer: str, table: str, hit: Column,
                        transform: Callable[[DataFrame], DataFrame]) -> int:
    """Rewrite the arrival dates of a bronze table that hold rows matching `hit` with `transform` applied;
    returns the rows (WhatsApp: messages) removed."""
    frame = lake.read(layer, table)
    dates = [r["_arrival_date"] for r in frame.where(hit).select("_arrival_date").distinct().collect()]
    if not dates:
        return 0
    listed = ", ".join(f"DATE'{d.isoformat()}'" for d in sorted(dates))
    part = frame.where(F.col("_arrival_date").isin(dates))
    before = _units(table, part)
    rewritten = transform(part).cache()
    try:
        removed = before - _units(table, rewritten)
        lake.write(layer, table, rewritten, mode="overwrite", partition_by=["_arrival_date"],
                   replace_where=f"_arrival_date IN ({listed})")
    finally:
        rewritten.unpersist()
    return removed


def _is_one_of(identifiers: Sequence[tuple[str, str]]) -> Column:
    hit = F.lit(False)
    for kind in sorted({k for k, _ in identifiers}):
        hit = hit | ((F.col("identifier_type") == kind)
                     & F.col("identifier").isin([v for k, v in identifiers if k == kind]))
    return hit


def _rewrite_table(lake: Lakehouse, layer: str, table: str, hit: Column) -> int:
    """Overwrite a small table without the rows matching `hit` (no predicate recorded in its log); returns
    the rows removed."""
    frame = lake.read(layer, table)
    removed = frame.where(hit).count()
    if removed:
        kept = frame.where(~hit).cache()
        try:
            kept.count()
            lake.write(layer, table, kept, mode="overwrite")
        finally:
            kept.unpersist()
    return removed


def _names_message(ids: Sequence[str]) -> Column:
    """A WhatsApp payload row holding one of these messages."""
    return F.exists(F.coalesce("messages", F.array()), lambda m: m["message_id"].isin(list(ids)))


def _without_messages(ids: Sequence[str]) -> Callable[[DataFrame], DataFrame]:
    return lambda frame: drop_records("whatsapp", frame, ids)


def _without(hit: Column) -> Callable[[DataFrame], DataFrame]:
    return lambda frame: frame.where(~hit)


def _units(table: str, frame: DataFrame) -> int:
    if table == "whatsapp":
        return int(scalar(frame.agg(F.coalesce(F.sum(F.coalesce(F.size("messages"), F.lit(0))), F.lit(0)))))
    return frame.count()


def forget(spark: SparkSession, settings: Settings, lake: Lakehouse, subjects: Sequence[Subject],
           retention_hours: int | None = None, progress: Callable[[str], None] | None = None) -> ErasureReport:
    """Erase the subjects from every table, suppress their identifiers, vacuum, and record the request."""
    say = progress or (lambda message: None)
    if not subjects:
        raise PrivacyError("no customer key or identifier given")
    now = utc_now()
    erasure_id = new_run_id(now)
    hours = (settings.privacy.erasure_retention_hours if settings.privacy.erasure_retention_hours is not None
             else settings.storage.vacuum_retention_hours) if retention_hours is None else retention_hours
    who = resolve(spark, settings, lake, subjects)
    say(f"erasure {erasure_id}: {len(who.customer_keys)} customer(s), {len(who.identifiers)} identifier(s), "
        f"{sum(len(v) for v in who.records.values())} bronze record(s)")

    # 1. the suppression list first: from now on no delivery brings them back, even if this crashes
    if who.identifiers:
        salt = _salt(settings, lake, create=True)
        assert salt is not None
        current = suppression_list(spark, settings, lake)  # refuses a list hashed with another salt
        rows = spark.createDataFrame(who.identifiers, "identifier_type string, identifier string").select(
            "identifier_type",
            identifier_hash(salt, F.col("identifier_type"), F.col("identifier")).alias("identifier_hash"),
            F.lit(salt_id(salt)).alias("salt_id"), F.lit(erasure_id).alias("erasure_id"),
            F.lit(now).cast("timestamp").alias("suppressed_at"))
        if current is not None:
            rows = rows.join(current[0], on=["identifier_type", "identifier_hash"], how="left_anti")
        lake.write("ops", "suppressed_identifiers", rows.select(*SUPPRESSED_IDENTIFIERS.fieldNames()), mode="append")

    # 2. the rows: bronze and quarantine, gold, silver records, identity last
    removed: dict[str, int] = {}
    touched: list[tuple[str, str]] = []
    present = lake.tables()
    identity = {"identity_map", "identity_exceptions", "identity_merges", "record_keys"}
    ordered = sorted(present, key=lambda lt: ({"bronze": 0, "gold": 1, "silver": 2, "ops": 3}.get(lt[0], 4),
                                             lt[0] == "silver" and lt[1] in identity, lt[1]))
    for layer, table in ordered:
        name = f"{layer}.{table}"
        n = 0
        if layer == "bronze" and table == "whatsapp":
            messages = who.records.get("whatsapp", [])
            if messages:
                hit = _names_message(messages)
                n = _rewrite_partitions(lake, layer, table, hit, _without_messages(messages))
        elif layer == "bronze" and table == "quarantine":
            if who.needles:
                text = F.lower(F.coalesce("raw", F.lit("")))
                hit = F.lit(False)
                for needle in who.needles:
                    hit = hit | text.contains(needle)
                n = _rewrite_partitions(lake, layer, table, hit, _without(hit))
        elif (layer, table) == ("silver", "identity_exceptions"):
            if who.identifiers:
                n = _rewrite_table(lake, layer, table, _is_one_of(who.identifiers))
        else:
            columns = set(lake.read(layer, table).columns)
            predicate = _table_predicate(layer, table, columns, who)
            if predicate:
                n = abs(lake.delete(layer, table, predicate).rows_written)
        # CRM ids are personal, so rows found by one leave by a rewrite, never by a logged predicate
        crm_ids = who.records.get("crm", [])
        if crm_ids and (layer, table) == ("bronze", "crm"):
            n += _rewrite_partitions(lake, layer, table, F.col("crm_id").isin(crm_ids),
                                     _without(F.col("crm_id").isin(crm_ids)))
        elif crm_ids and (layer, table) == ("silver", "crm"):
            n += _rewrite_table(lake, layer, table, F.col("crm_id").isin(crm_ids))
        elif crm_ids and (layer, table) == ("silver", "record_keys"):
            n += _rewrite_table(lake, layer, table, (F.col("source") == "crm") & F.col("record_id").isin(crm_ids))
        if n:
            removed[name] = n
            touched.append((layer, table))
            say(f"{name}: {n:,} row(s) removed")

    # 3. the rows out of the data files and, after the retention, out of old versions
    say(f"vacuuming {len(touched)} table(s) with a retention of {hours} h")
    for layer, table in touched:
        if _has_deletion_vectors(lake, layer, table):
            lake.purge(layer, table)
    vacuumed = sum(lake.vacuum_many(touched, hours).values())
    visible_until = now + dt.timedelta(hours=hours)

    # 4. the record of the request (no personal data) and the models to retrain
    models = [m for m in MODELS if _registered(settings, lake, m)] if who.customer_keys else []
    record = spark.createDataFrame([(
        erasure_id, now, len(subjects), len(who.customer_keys), len(who.identifiers), removed, hours,
        visible_until, models, None,
    )], ERASURES)
    lake.write("ops", "erasures", record, mode="append")
    return ErasureReport(erasure_id, len(who.customer_keys), len(who.identifiers), removed, hours, visible_until,
                         vacuumed, models, who.unknown)


def _has_deletion_vectors(lake: Lakehouse, layer: str, table: str) -> bool:
    engine = lake.engine
    if not hasattr(engine, "properties"):
        return False  # delta-rs rewrites files on delete: nothing to purge
    props = engine.properties(lake.path(layer, table))
    return str(props.get("delta.enableDeletionVectors", "false")).lower() == "true"


def _registered(settings: Settings, lake: Lakehouse, model: str) -> bool:
    from atende.jobs import tracking

    if not settings.mlflow.tracking_uri and Storage(lake.spark).stat(join(lake.uri, "_mlflow", "mlflow.db")) is None:
        return False  # no model store beside the tables: no model was ever trained on them
    try:
        tracking.configure(settings, lake.uri)
        return tracking.champion_version(model) is not None
    except Exception as exc:  # noqa: BLE001 - no model store yet: nothing was trained on the customer
        log.info("model store not readable (%s): no model flagged", exc)
        return False


def pending_retrains(lake: Lakehouse) -> list[str]:
    """Erasures whose models no run has retrained since (their ids)."""
    if not lake.exists("ops", "erasures"):
        return []
    table = lake.read("ops", "erasures")
    return [r["erasure_id"] for r in table.where(F.col("retrained_by_run").isNull() & (F.size("models_to_retrain") > 0))
            .select("erasure_id").collect()]


def mark_retrained(spark: SparkSession, lake: Lakehouse, erasure_ids: Sequence[str], run_id: str) -> None:
    """The models of these erasures were retrained by `run_id` (ops/erasures rewritten: a handful of rows)."""
    if not erasure_ids:
        return
    table = lake.read("ops", "erasures")
    updated = table.withColumn("retrained_by_run", F.when(
        F.col("erasure_id").isin(list(erasure_ids)) & F.col("retrained_by_run").isNull(), F.lit(run_id)
    ).otherwise(F.col("retrained_by_run"))).select(*ERASURES.fieldNames()).cache()
    try:
        updated.count()
        lake.write("ops", "erasures", updated, mode="overwrite")
    finally:
        updated.unpersist()


# ------------------------------------------------------------------ access
def export_subject(spark: SparkSession, settings: Settings, lake: Lakehouse, subject: Subject) -> dict[str, Any]:
    """Every row held about one customer: each table's rows of their key, their bronze records, as JSON-ready
    data (`{"customer_key", "exported_at", "tables": {"layer.table": [rows]}}`)."""
    who = resolve(spark, settings, lake, [subject])
    if len(who.customer_keys) != 1:
        found = "no customer" if not who.customer_keys else f"{len(who.customer_keys)} customers"
        raise PrivacyError(f"{subject} names {found} in {lake.root}; give one customer key")
    [key] = who.customer_keys
    keyed = Resolved([key], who.identifiers, who.records)
    tables: dict[str, list[Any]] = {}
    for layer, table in lake.tables():
        if layer == "ops" or (layer, table) == ("bronze", "quarantine"):
            continue
        frame = lake.read(layer, table)
        if (layer, table) == ("bronze", "whatsapp"):
            ids = who.records.get("whatsapp", [])
            if not ids:
                continue
            rows = frame.select(F.explode("messages").alias("m"), "_source_file", "_arrival_date").where(
                F.col("m.message_id").isin(ids)).select("m.*", "_source_file", "_arrival_date")
        elif (layer, table) == ("bronze", "crm"):
            rows = frame.where(F.col("crm_id").isin(who.records.get("crm", [])))
        else:
            predicate = _table_predicate(layer, table, set(frame.columns), keyed)
            if not predicate:
                continue
            rows = frame.where(predicate)
        found_rows = [json.loads(r[0]) for r in rows.select(F.to_json(F.struct("*"))).collect()]
        if found_rows:
            tables[f"{layer}.{table}"] = found_rows
    return {"customer_key": key, "exported_at": utc_now().isoformat(), "identifiers": [
        {"identifier_type": t, "identifier": v} for t, v in who.identifiers], "tables": tables}
