"""Incremental silver: which rows of the record tables a run must rebuild.

Identity resolution stays a global computation (its guards count across the whole graph), so every run
knows each record's customer key (`record_keys`) and each e-mail's thread and WhatsApp message's
conversation. The record tables — interactions, survey responses, orders, actions — are then rebuilt only
for the *units* that can have changed since silver was last written:

- the records delivered since then (bronze `_ingested_at` after the last `record_keys` write): new
  records, re-deliveries (the first delivery wins, and a late file can hold an earlier one), late files;
- the records whose customer key changed, or that are new to `record_keys` (a merge, a split, a backfill);
- a unit is a whole row of its table: a conversation or call; every message of an e-mail thread or a
  WhatsApp conversation one of those records belongs to (a new message can join two threads, or move a
  conversation's first message); the survey responses naming a rebuilt interaction (their key is the
  interaction's); the orders of a product whose category changed.

The rows rebuilt replace those of the same id, and rows whose id the rebuilt units no longer produce (a
thread or conversation now known by an earlier first message) leave the table in the same commit
(`Lakehouse.upsert(remove=...)`). Every transform is the one the full build uses, over fewer records, so
the tables end as a full build over the same bronze would write them (tests/test_e2e.py checks it).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from atende.pipelines.frames import keep_ids, union_all
from atende.pipelines.identity import whatsapp_messages
from atende.pipelines.identity.email_threads import strip_brackets
from atende.pipelines.identity.graph import materialise
from atende.pipelines.schemas import BRONZE_KEYS

# the record id column of each source whose records are one row of a record table (e-mail and WhatsApp
# records are messages of a thread or conversation: see `affected_units`)
RECORD_ID = {source: key for source, key in BRONZE_KEYS.items() if key is not None and source != "email"}
INTERACTION_SOURCES = ("conversations", "calls", "email", "whatsapp")


def _records(source: str, frame: DataFrame, record_id: Column) -> DataFrame:
    return frame.select(F.lit(source).alias("source"), record_id.cast("string").alias("record_id"))


def delivered_since(bronze: Mapping[str, DataFrame], since: datetime | Column) -> DataFrame:
    """`source, record_id` of the bronze records ingested after `since` (re-deliveries and late files
    included: whatever a run brought). Products and CRM rows are dimensions rebuilt whole."""
    after = F.col("_ingested_at") > (since if isinstance(since, Column) else F.lit(since).cast("timestamp"))
    parts = [_records(source, bronze[source].where(after), F.col(column))
             for source, column in RECORD_ID.items() if source in bronze]
    if "email" in bronze:
        parts.append(_records("email", bronze["email"].where(after), strip_brackets(F.col("message_id"))))
    if "whatsapp" in bronze:
        parts.append(_records("whatsapp", whatsapp_messages(bronze["whatsapp"].where(after)), F.col("message_id")))
    return union_all(parts).where(F.col("record_id").isNotNull())


def whole_rebuild_reason(delivered: int, held: int, max_share: float) -> str | None:
    """Why the record tables are rebuilt from the whole of bronze rather than where a run's records touch them,
    by `silver.incremental_max_share`: the bronze rows delivered since silver was written (`delivered_since`,
    re-deliveries included) against the records silver is built from (`held`: every keyed record, the delivered
    ones and the CRM's registrations among them). None while the share is at most `max_share` (1: always;
    the runner does not count at 0, where it rebuilds whole on every run). Identity is resolved over every
    record either way; at the shares measured, finding the touched units (every record's old and new key, whole
    threads and conversations) and merging them cost more than rebuilding the tables (bench/RESULTS.md,
    session 36)."""
    if max_share >= 1:
        return None
    if held <= 0:
        return f"{delivered:,} records delivered since silver was written, and no record keyed"
    share = delivered / held
    if share <= max_share:
        return None
    return (f"{delivered:,} records delivered since silver was written, {share:.2%} of the {held:,} it is built "
            f"from: above silver.incremental_max_share ({max_share:.2%})")


def key_differences(old_keys: DataFrame, new_keys: DataFrame) -> DataFrame:
    """`source, record_id, vanished`: the records whose customer key differs from the one silver was written
    with, or that silver has not seen (`vanished` false), and those silver was written with that bronze no longer
    holds (`vanished` true: a date re-ingested from files that lost records; what they fed cannot be found from
    the records left, so silver is rebuilt whole). One full outer join answers both."""
    old = old_keys.select("source", "record_id", F.col("customer_key").alias("_old_key"), F.lit(True).alias("_was"))
    new = new_keys.select("source", "record_id", "customer_key", F.lit(True).alias("_is"))
    return (
        new.join(old, on=["source", "record_id"], how="full_outer")
        .where(F.col("_was").isNull() | F.col("_is").isNull() | ~F.col("customer_key").eqNullSafe(F.col("_old_key")))
        .select("source", "record_id", F.col("_is").isNull().alias("vanished"))
    )


def changed_categories(old_products: DataFrame, new_products: DataFrame) -> DataFrame:
    """`product_id` of the products new, gone or whose category changed (orders carry their product's
    category)."""
    old = old_products.select("product_id", F.col("category").alias("_old"), F.lit(True).alias("_was"))
    new = new_products.select("product_id", F.col("category").alias("_new"), F.lit(True).alias("_is"))
    return (new.join(old, on="product_id", how="full_outer")
            .where(F.col("_was").isNull() | F.col("_is").isNull() | ~F.col("_new").eqNullSafe(F.col("_old")))
            .select("product_id"))


@dataclass
class Units:
    """What one incremental run rebuilds: per source, the records (`record_id`) to build rows from, and the
    interaction ids whose rows the rebuilt interactions replace (`replaced_interactions`)."""
    records: dict[str, DataFrame]
    replaced_interactions: DataFrame  # interaction_id
    size: int | None = None  # how many records, once materialised

    def only(self, *sources: str) -> dict[str, DataFrame]:
        return {source: self.records[source] for source in sources}

    def materialised(self) -> Units:
        """The same units computed once (one checkpoint): the tables they were derived from may be rewritten
        while the rebuilt rows are written."""
        every = materialise(union_all([frame.select(F.lit(source).alias("source"), "record_id")
                                       for source, frame in self.records.items()]))
        return Units({source: every.where(F.col("source") == source).select("record_id") for source in self.records},
                     materialise(self.replaced_interactions), every.count())


def affected_units(changed: DataFrame, bronze: Mapping[str, DataFrame], email_threads: DataFrame,
                   sessions: DataFrame, changed_products: DataFrame) -> Units:
    """The units of the record tables that `changed` (`source, record_id`: delivered since, re-keyed) touch.

    `email_threads`: `message_id, thread_id` of every e-mail message; `sessions`: `message_id, interaction_id`
    of every counted WhatsApp message (`interactions.whatsapp_sessions`); `changed_products`: `product_id`."""
    def of(source: str) -> DataFrame:
        return changed.where(F.col("source") == source).select("record_id").distinct()

    def whole(groups: DataFrame, member: str, group: str, source: str) -> DataFrame:
        """Every member of the groups one changed record of `source` belongs to (`record_id`)."""
        touched = groups.join(of(source).select(F.col("record_id").alias(member)), on=member, how="left_semi")
        return groups.join(touched.select(group).distinct(), on=group, how="left_semi").select(
            F.col(member).alias("record_id")).distinct()

    records = {
        "conversations": of("conversations"),
        "calls": of("calls"),
        "email": whole(email_threads, "message_id", "thread_id", "email"),
        "whatsapp": whole(sessions, "message_id", "interaction_id", "whatsapp"),
        "actions": of("actions"),
    }
    # a rebuilt unit's row keeps its id, or its id moved to an earlier first message: every id the unit's
    # records could have carried is replaced (the ids the rebuild does not produce are removed)
    replaced = (
        records["conversations"].select(F.col("record_id").alias("interaction_id"))
        .unionByName(records["calls"].select(F.col("record_id").alias("interaction_id")))
        .unionByName(records["email"].select(F.concat(F.lit("email:"), "record_id").alias("interaction_id")))
        .unionByName(records["whatsapp"].select(F.concat(F.lit("wa:"), "record_id").alias("interaction_id")))
        .distinct()
    )
    if "surveys" in bronze:  # a response takes the key of the interaction it names
        naming = bronze["surveys"].select("response_id", F.trim("contact_id").alias("interaction_id")).join(
            replaced, on="interaction_id", how="left_semi").select(F.col("response_id").alias("record_id"))
        records["surveys"] = of("surveys").unionByName(naming).distinct()
    else:
        records["surveys"] = of("surveys")
    if "orders" in bronze:  # an order carries its product's category
        of_changed = bronze["orders"].join(changed_products, on="product_id", how="left_semi").select(
            F.col("order_id").alias("record_id"))
        records["orders"] = of("orders").unionByName(of_changed).distinct()
    else:
        records["orders"] = of("orders")
    return Units(records, replaced)


def only_records(frame: DataFrame, records: DataFrame, source: str) -> DataFrame:
    """The bronze rows of `source` (every delivery) whose record id is among `records` (`record_id`)."""
    return keep_ids(frame, records, RECORD_ID[source])
