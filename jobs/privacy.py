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
from atende.jobs import tracking
from atende.jobs.bookkeeping import new_run_id, utc_now, write_silver_state
from atende.lakehouse.storage import Storage, join
from atende.lakehouse.tables import Lakehouse
from atende.pipelines import schemas
from atende.pipelines.frames import sql_dates
from atende.pipelines.identity.common import IDENTIFIER_TYPES
from atende.pipelines.identity.observations import build_identifier_observations

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

# the id column a bronze source's records are known by in silver/record_keys: the sources' own keys, and a
# CRM row's crm_id (WhatsApp: the messages inside a payload, by message_id)
RECORD_ID_COLUMNS = {**{s: k for s, k in schemas.BRONZE_KEYS.items() if k}, "crm": "crm_id"}
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
    spark = next(iter(bronze.values())).sparkSession
    # e-mail threads are not needed to see an address: no connected-components run here
    no_threads = spark.createDataFrame([], "message_id string, thread_id string")
    observed = build_identifier_observations(bronze, settings, email_threads=no_threads).where(
        F.col("identifier_type").isin(list(IDENTIFIER_TYPES))).select("source", "record_id", "identifier_type", "identifier")
    if "email" in bronze:
        email = bronze["email"]
        # every address of every message, automatic replies and bounces included (identity leaves those out)
        recipients = F.concat(F.array("from_address"), *[F.coalesce(c, F.array().cast("array<string>")) for c in
                                                        ("to_addresses", "recipient_addresses") if c in email.columns])
        observed = observed.unionByName(
            email.select(F.lit("email").alias("source"), F.col("message_id").alias("record_id"),
                         F.explode(recipients).alias("address"))
            .select("source", "record_id", F.lit("email").alias("identifier_type"),
                    normalize_email(F.col("address"), settings.identity.blocklist_emails).alias("identifier"))
            .where(F.col("identifier").isNotNull() & F.col("record_id").isNotNull()))
    return observed


def _record_ids(batch: dict[str, DataFrame]) -> DataFrame | None:
    """`source, record_id, identifier_type, identifier` naming each record by its own id (`record:<source>`),
    and a survey response by the conversation or call it is about: an erased record delivered again, and
    a response about an erased contact, are recognised whatever identifiers they carry."""
    parts = []
    for source, frame in batch.items():
        if source == "whatsapp":
            ids = frame.select(F.explode("messages.message_id").alias("record_id"))
        elif source in RECORD_ID_COLUMNS:
            ids = frame.select(F.col(RECORD_ID_COLUMNS[source]).alias("record_id"))
        else:
            continue
        parts.append(ids.select(F.lit(source).alias("source"), "record_id", F.lit(f"record:{source}").alias("identifier_type"),
                                F.col("record_id").alias("identifier")))
        if source == "surveys":
            for contact in ("conversations", "calls"):
                parts.append(frame.select(F.lit("surveys").alias("source"), F.col("response_id").alias("record_id"),
                                          F.lit(f"record:{contact}").alias("identifier_type"),
                                          normalize_as_given(F.col("contact_id")).alias("identifier")))
    if not parts:
        return None
    found = parts[0]
    for part in parts[1:]:
        found = found.unionByName(part)
    return found.where(F.col("record_id").isNotNull() & F.col("identifier").isNotNull())


def suppressed_records(batch: dict[str, DataFrame], settings: Settings, suppressed: DataFrame, salt: str) -> DataFrame:
    """`source, record_id` of the records of a batch of bronze frames that carry a suppressed identifier or
    are (or answer) an erased record."""
    carried = carried_identifiers(batch, settings)
    by_id = _record_ids(batch)
    if by_id is not None:
        carried = carried.unionByName(by_id)
    return (
        carried
        .withColumn("identifier_hash", identifier_hash(salt, F.col("identifier_type"), F.col("identifier")))
        .join(F.broadcast(suppressed), on=["identifier_type", "identifier_hash"], how="left_semi")
        .select("source", "record_id").distinct()
    )


# what a raw line can hold of a person: an address, a phone number as people write it
_RAW_EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
_RAW_PHONE = r"\+?[0-9][0-9 ().-]{7,}[0-9]"


def without_suppressed_lines(quarantined: DataFrame, settings: Settings, suppressed: DataFrame, salt: str) -> DataFrame:
    """A batch of quarantined lines without those whose raw text holds a suppressed e-mail address or phone
    number (read from the text, normalised as ingest normalises them, hashed and looked up)."""
    line = ["source", "_source_file", "raw"]
    region = settings.identity.default_region
    tokens = quarantined.select(*line, F.explode(F.array_union(
        F.transform(F.regexp_extract_all(F.coalesce("raw", F.lit("")), F.lit(_RAW_EMAIL), F.lit(0)),
                    lambda t: F.concat(F.lit("email\u001f"), t)),
        F.transform(F.regexp_extract_all(F.coalesce("raw", F.lit("")), F.lit(_RAW_PHONE), F.lit(0)),
                    lambda t: F.concat(F.lit("phone\u001f"), t)),
    )).alias("token")).select(*line, F.split("token", "\u001f").alias("t")).select(
        *line, F.col("t")[0].alias("identifier_type"), F.col("t")[1].alias("value"))
    normal = F.when(F.col("identifier_type") == "email", normalize_email(F.col("value"))).otherwise(
        normalize_phone(F.col("value"), region))
    hits = (tokens.select(*line, "identifier_type", normal.alias("identifier")).where(F.col("identifier").isNotNull())
            .withColumn("identifier_hash", identifier_hash(salt, F.col("identifier_type"), F.col("identifier")))
            .join(F.broadcast(suppressed), on=["identifier_type", "identifier_hash"], how="left_semi")
            .select(*line).distinct())
    return quarantined.join(hits, on=line, how="left_anti").select(*quarantined.columns)


def drop_records(source: str, frame: DataFrame, record_ids: Sequence[str]) -> DataFrame:
    """A bronze frame without these records (WhatsApp: without these messages; a payload left with no
    message of its own is dropped, one that never had any, a status update, stays)."""
    if not record_ids:
        return frame
    if source == "whatsapp":
        kept = F.filter("messages", lambda m: ~m["message_id"].isin(list(record_ids)))
        return (frame.withColumn("_had_messages", F.coalesce(F.size("messages"), F.lit(0)) > 0)
                .withColumn("messages", F.when(F.col("messages").isNotNull(), kept))
                .where(~F.col("_had_messages") | (F.size("messages") > 0)).select(*frame.columns))
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


def _is_one_of(identifiers: Iterable[tuple[str, str]]) -> Column:
    """A row of `identifier_type, identifier` among these (a Spark filter: nothing written to a log)."""
    by_type: dict[str, list[str]] = {}
    for kind, value in identifiers:
        by_type.setdefault(kind, []).append(value)
    hit = F.lit(False)
    for kind, values in sorted(by_type.items()):
        hit = hit | ((F.col("identifier_type") == kind) & F.col("identifier").isin(sorted(set(values))))
    return hit


@dataclass
class Resolved:
    """What a request names, as the lakehouse knows it."""
    customer_keys: list[str]
    identifiers: list[tuple[str, str]]        # (type, normalised value): suppressed and searched for
    records: dict[str, list[str]]             # bronze source -> ids of every record to erase
    keyed_records: dict[str, list[str]] = field(default_factory=dict)  # those keyed to the customers
    needles: list[str] = field(default_factory=list)  # lower-cased strings searched for in raw text
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


def _mentions(text: Column, needles: Sequence[str]) -> Column:
    """The lower-cased text holds one of the needles as a whole word (ana@x.com, not in joana@x.com; a
    phone's digits, not inside a longer number)."""
    alternatives = "|".join("\\Q" + n.replace("\\E", "") + "\\E" for n in needles)
    return F.lower(F.coalesce(text, F.lit(""))).rlike(f"(?<![a-z0-9])(?:{alternatives})(?![a-z0-9])")


def resolve(spark: SparkSession, settings: Settings, lake: Lakehouse, subjects: Sequence[Subject]) -> Resolved:
    """The customers, identifiers and bronze records a request names."""
    normal = _normalised(spark, settings, subjects)
    given_ids = sorted(set(normal.values()))
    keys: set[str] = {s.customer_key for s in subjects if s.customer_key}
    identifiers: set[tuple[str, str]] = set(given_ids)
    seen: set[str] = set()  # keys and "type:identifier" the lakehouse holds
    if lake.exists("silver", "identity_map"):
        ident_map = lake.read("silver", "identity_map")
        if given_ids:
            for r in ident_map.where(_is_one_of(given_ids)).select("identifier_type", "identifier", "customer_key").collect():
                keys.add(r["customer_key"])
                seen.add(f"{r['identifier_type']}:{r['identifier']}")
        if keys:
            rows = ident_map.where(F.col("customer_key").isin(sorted(keys))).select(
                "identifier_type", "identifier", "customer_key").collect()
            identifiers.update((r["identifier_type"], r["identifier"]) for r in rows)
            seen.update(r["customer_key"] for r in rows)
    keyed: dict[str, set[str]] = {}
    if keys and lake.exists("silver", "record_keys"):
        for r in lake.read("silver", "record_keys").where(F.col("customer_key").isin(sorted(keys))).select(
                "source", "record_id", "customer_key").collect():
            keyed.setdefault(r["source"], set()).add(r["record_id"])
            seen.add(r["customer_key"])
    records: dict[str, set[str]] = {source: set(ids) for source, ids in keyed.items()}
    # records that carry one of the identifiers though they are keyed to someone else (or to no one)
    bronze = {s: lake.read("bronze", s) for s in schemas.SOURCES if s != "products" and lake.exists("bronze", s)}
    if bronze and identifiers:
        carrying = carried_identifiers(bronze, settings).where(_is_one_of(identifiers))
        for r in carrying.select("source", "record_id", "identifier_type", "identifier").distinct().collect():
            records.setdefault(r["source"], set()).add(r["record_id"])
            seen.add(f"{r['identifier_type']}:{r['identifier']}")
    names: list[str] = []
    if keys and lake.exists("silver", "crm"):
        names = [r["full_name"] for r in lake.read("silver", "crm").where(F.col("customer_key").isin(sorted(keys)))
                 .select("full_name").distinct().collect() if r["full_name"]]
    unknown = [str(s) for s in subjects
               if (s.customer_key and s.customer_key not in seen)
               or (s in normal and "{}:{}".format(*normal[s]) not in seen)]
    return Resolved(sorted(keys), sorted(identifiers), {k: sorted(v) for k, v in sorted(records.items())},
                    {k: sorted(v) for k, v in sorted(keyed.items())},
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


Match = tuple[tuple[str, ...], list[tuple[str, ...]]]  # columns, and the values of the rows to match


def _matches(layer: str, table: str, columns: set[str], keys: Sequence[str], records: dict[str, list[str]],
             identifiers: Sequence[tuple[str, str]]) -> list[Match]:
    """The rows of a table the erasure removes, as (columns, values) to match: each becomes a MERGE ...
    WHEN MATCHED THEN DELETE whose logged condition names columns only (a DELETE's predicate, values
    included, would stay in the table's log)."""
    wanted: list[Match] = []

    def one(column: str, values: Iterable[str]) -> None:
        wanted.append(((column,), [(v,) for v in values]))

    if layer == "bronze":
        if table in RECORD_ID_COLUMNS:
            one(RECORD_ID_COLUMNS[table], records.get(table, []))
    elif layer == "ops":
        pass  # counts, dates, run records and hashes: no personal data
    elif table == "identity_exceptions":  # held-back identifiers have no key
        wanted.append((("identifier_type", "identifier"), [tuple(i) for i in identifiers]))
    elif table == "identity_merges":
        one("retired_key", keys)
        one("surviving_key", keys)
    elif table == "record_keys":
        one("customer_key", keys)
        wanted.append((("source", "record_id"), [(s, r) for s, ids in records.items() for r in ids]))
    else:
        one("customer_key", keys)
        if layer == "silver" and table in _SILVER_RECORD_COLUMNS:
            source, column = _SILVER_RECORD_COLUMNS[table]
            one(column, records.get(source, []))
        if (layer, table) in (("silver", "interactions"), ("gold", "interaction_tones")):
            # a conversation or call is its own interaction (its row may hold no key, or another customer's)
            one("interaction_id", records.get("conversations", []) + records.get("calls", []))
    return [(cols, sorted(set(rows))) for cols, rows in wanted if rows and set(cols) <= columns]


def _match_frame(spark: SparkSession, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> DataFrame:
    return spark.createDataFrame(rows, ", ".join(f"`{c}` string" for c in columns))


def _rewrite_partitions(lake: Lakehouse, layer: str, table: str, hit: Column,
                        transform: Callable[[DataFrame], DataFrame]) -> int:
    """Rewrite the arrival dates of a bronze table that hold rows matching `hit` with `transform` applied
    (the commit names the dates only); returns the rows matching `hit`."""
    frame = lake.read(layer, table)
    counts = {r["_arrival_date"]: r["n"] for r in frame.where(hit).groupBy("_arrival_date").count()
              .withColumnRenamed("count", "n").collect()}
    if not counts:
        return 0
    listed = sql_dates(sorted(counts))
    rewritten = transform(frame.where(F.col("_arrival_date").isin(list(counts)))).cache()
    try:
        rewritten.count()
        lake.write(layer, table, rewritten, mode="overwrite", partition_by=["_arrival_date"],
                   replace_where=f"_arrival_date IN ({listed})")
    finally:
        rewritten.unpersist()
    return sum(counts.values())


def _names_message(ids: Sequence[str]) -> Column:
    """A WhatsApp payload row holding one of these messages."""
    return F.exists(F.coalesce("messages", F.array()), lambda m: m["message_id"].isin(list(ids)))


def _without_messages(ids: Sequence[str]) -> Callable[[DataFrame], DataFrame]:
    return lambda frame: drop_records("whatsapp", frame, ids)


def _without(hit: Column) -> Callable[[DataFrame], DataFrame]:
    return lambda frame: frame.where(~hit)


def _extra_mentions(needles: Sequence[str]) -> Column:
    return F.exists(F.map_values(F.coalesce("_extra", F.create_map().cast("map<string,string>"))),
                    lambda v: _mentions(v, needles))


def _scrubbed_extra(needles: Sequence[str]) -> Callable[[DataFrame], DataFrame]:
    """Fields kept as given (`_extra`: a WhatsApp status's recipient, a contact's username...) that name
    the customer leave the row; the rest of the row stays."""
    return lambda frame: frame.withColumn("_extra", F.map_filter("_extra", lambda k, v: ~_mentions(v, needles)))


# identity last, the map the very last: until then a repeated request still finds the customer's key
_IDENTITY_ORDER = {"identity_exceptions": 1, "identity_merges": 2, "record_keys": 3, "identity_map": 4}


def _erasure_order(layer_table: tuple[str, str]) -> tuple[int, int, str]:
    layer, table = layer_table
    rank = {"bronze": 0, "gold": 1, "silver": 2, "ops": 3}.get(layer, 4)
    return rank, _IDENTITY_ORDER.get(table, 0) if layer == "silver" else 0, table


def _suppression_rows(spark: SparkSession, salt: str, who: Resolved, erasure_id: str, now: dt.datetime) -> DataFrame:
    """Hashes of the identifiers and of every erased record's id (`record:<source>`: a copy of the record
    delivered again is dropped by its id, even one naming the customer only through its thread)."""
    pairs = list(who.identifiers) + [(f"record:{source}", r) for source, ids in who.records.items() for r in ids]
    return spark.createDataFrame(pairs, "identifier_type string, identifier string").select(
        "identifier_type",
        identifier_hash(salt, F.col("identifier_type"), F.col("identifier")).alias("identifier_hash"),
        F.lit(salt_id(salt)).alias("salt_id"), F.lit(erasure_id).alias("erasure_id"),
        F.lit(now).cast("timestamp").alias("suppressed_at"))


def forget(spark: SparkSession, settings: Settings, lake: Lakehouse, subjects: Sequence[Subject],
           retention_hours: int | None = None, progress: Callable[[str], None] | None = None) -> ErasureReport:
    """Erase the subjects from every table, suppress their identifiers, vacuum, and record the request.
    Not to be run while `atende run` writes the same lakehouse: a run that started before the erasure
    stops at its end (`Runner`), and its re-run writes the tables without the customer."""
    say = progress or (lambda message: None)
    if not subjects:
        raise PrivacyError("no customer key or identifier given")
    now = utc_now()
    erasure_id = new_run_id(now)
    hours = (settings.privacy.erasure_retention_hours if settings.privacy.erasure_retention_hours is not None
             else settings.storage.vacuum_retention_hours) if retention_hours is None else retention_hours
    if hours < 0:
        raise PrivacyError(f"a retention is zero hours or more, not {hours}")
    who = resolve(spark, settings, lake, subjects)
    say(f"erasure {erasure_id}: {len(who.customer_keys)} customer(s), {len(who.identifiers)} identifier(s), "
        f"{sum(len(v) for v in who.records.values())} bronze record(s)")
    visible_until = now + dt.timedelta(hours=hours)
    models = [m for m in MODELS if _registered(settings, lake, m)] if who.customer_keys else []

    # 1. the suppression list and the request's record first: from now on no delivery brings them back and
    # the models are flagged, even if what follows crashes
    if who.identifiers or who.records:
        salt = _salt(settings, lake, create=True)
        assert salt is not None
        current = suppression_list(spark, settings, lake)  # refuses a list hashed with another salt
        rows = _suppression_rows(spark, salt, who, erasure_id, now)
        if current is not None:
            rows = rows.join(current[0], on=["identifier_type", "identifier_hash"], how="left_anti")
        lake.write("ops", "suppressed_identifiers", rows.select(*SUPPRESSED_IDENTIFIERS.fieldNames()), mode="append")

    def record(removed: dict[str, int]) -> None:
        row = (erasure_id, now, len(subjects), len(who.customer_keys), len(who.identifiers), removed, hours,
               visible_until, models, None)
        lake.upsert("ops", "erasures", spark.createDataFrame([row], ERASURES), keys=["erasure_id"])

    record({})
    if lake.exists("silver", "record_keys"):
        # rows of other customers can hold the erased one's messages (a shared thread or group): the next
        # run rebuilds silver's record tables from the whole of bronze, which no longer holds them
        write_silver_state(spark, lake, erasure_id, now,
                           rebuild_reason=f"a customer was erased since silver was built (erasure {erasure_id})")

    # 2. the rows: bronze and quarantine, gold, silver records, identity last
    removed: dict[str, int] = {}
    touched: list[tuple[str, str]] = []
    for layer, table in sorted(lake.tables(), key=_erasure_order):
        name = f"{layer}.{table}"
        n = 0
        columns = set(lake.read(layer, table).columns)
        if (layer, table) == ("bronze", "whatsapp"):
            messages = who.records.get("whatsapp", [])
            if messages:
                n = _rewrite_partitions(lake, layer, table, _names_message(messages), _without_messages(messages))
        elif (layer, table) == ("bronze", "quarantine"):
            if who.needles:
                hit = _mentions(F.col("raw"), who.needles)
                n = _rewrite_partitions(lake, layer, table, hit, _without(hit))
        else:
            for cols, values in _matches(layer, table, columns, who.customer_keys, who.records, who.identifiers):
                n += abs(lake.delete_matching(layer, table, _match_frame(spark, cols, values), cols).rows_written)
        if layer == "bronze" and "_extra" in columns and who.needles:
            n += _rewrite_partitions(lake, layer, table, _extra_mentions(who.needles), _scrubbed_extra(who.needles))
        if n:
            removed[name] = n
            touched.append((layer, table))
            say(f"{name}: {n:,} row(s) removed or scrubbed")

    # 3. the rows out of the data files and, after the retention, out of old versions
    say(f"vacuuming {len(touched)} table(s) with a retention of {hours} h")
    for layer, table in touched:
        if _has_deletion_vectors(lake, layer, table):
            lake.purge(layer, table)
    vacuumed = sum(lake.vacuum_many(touched, hours).values())
    record(removed)
    return ErasureReport(erasure_id, len(who.customer_keys), len(who.identifiers), removed, hours, visible_until,
                         vacuumed, models, who.unknown)


def _has_deletion_vectors(lake: Lakehouse, layer: str, table: str) -> bool:
    engine = lake.engine
    if not hasattr(engine, "properties"):
        return False  # delta-rs rewrites files on delete: nothing to purge
    props = engine.properties(lake.path(layer, table))
    return str(props.get("delta.enableDeletionVectors", "false")).lower() == "true"


def _registered(settings: Settings, lake: Lakehouse, model: str) -> bool:
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
    """The models of these erasures were retrained by `run_id`: their rows updated by a MERGE, so an erasure
    recorded meanwhile is kept."""
    if not erasure_ids:
        return
    rows = lake.read("ops", "erasures").where(F.col("erasure_id").isin(list(erasure_ids)) & F.col("retrained_by_run").isNull())
    updated = rows.withColumn("retrained_by_run", F.lit(run_id)).select(*ERASURES.fieldNames())
    lake.upsert("ops", "erasures", updated, keys=["erasure_id"])


def erased_since(lake: Lakehouse, moment: dt.datetime) -> int:
    """Erasures requested at or after `moment` (a run that started before one may have written the customer)."""
    if not lake.exists("ops", "erasures"):
        return 0
    return lake.read("ops", "erasures").where(F.col("requested_at") >= F.lit(moment).cast("timestamp")).count()


# ------------------------------------------------------------------ access
def export_subject(spark: SparkSession, settings: Settings, lake: Lakehouse, subject: Subject) -> dict[str, Any]:
    """Every row held about one customer: each table's rows of their key, their bronze records, as JSON-ready
    data (`{"customer_key", "exported_at", "tables": {"layer.table": [rows]}}`)."""
    who = resolve(spark, settings, lake, [subject])
    if len(who.customer_keys) != 1:
        found = "no customer" if not who.customer_keys else f"{len(who.customer_keys)} customers"
        raise PrivacyError(f"{subject} names {found} in {lake.root}; give one customer key")
    [key] = who.customer_keys
    # their own records only: a record of someone else that merely names them is that person's data
    own = who.keyed_records
    tables: dict[str, list[Any]] = {}
    for layer, table in lake.tables():
        if layer == "ops" or (layer, table) == ("bronze", "quarantine"):
            continue
        frame = lake.read(layer, table)
        if (layer, table) == ("bronze", "whatsapp"):
            ids = own.get("whatsapp", [])
            if not ids:
                continue
            rows = frame.select(F.explode("messages").alias("m"), "_source_file", "_arrival_date").where(
                F.col("m.message_id").isin(ids)).select("m.*", "_source_file", "_arrival_date")
        else:
            wanted = _matches(layer, table, set(frame.columns), [key], own, [])
            if not wanted:
                continue
            parts = [frame.join(F.broadcast(_match_frame(spark, cols, values)), on=list(cols), how="left_semi")
                     for cols, values in wanted]
            rows = parts[0]
            for part in parts[1:]:
                rows = rows.unionByName(part)
            rows = rows.distinct() if len(parts) > 1 else rows
        found_rows = [json.loads(r[0]) for r in rows.select(F.to_json(F.struct("*"))).collect()]
        if found_rows:
            tables[f"{layer}.{table}"] = found_rows
    return {"customer_key": key, "exported_at": utc_now().isoformat(), "identifiers": [
        {"identifier_type": t, "identifier": v} for t, v in who.identifiers], "tables": tables}
