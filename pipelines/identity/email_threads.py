"""E-mail threads: messages grouped by their References / In-Reply-To chains, and one row per message."""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from atende.pipelines.dedup import first_delivery
from atende.pipelines.identity.graph import connected_components


# ------------------------------------------------------------------ e-mail threads
def strip_brackets(column: Column) -> Column:
    bare = F.regexp_replace(F.trim(column), r"^<|>$", "")
    return F.when(bare != "", bare)


def assign_email_threads(messages: DataFrame) -> DataFrame:
    """`message_id, thread_id` for e-mail messages (one row per message_id; columns message_id,
    sent_at, in_reply_to, references). A thread is the connected set of messages linked by
    In-Reply-To / References (referenced messages we never received still connect their
    replies); `thread_id` is "email:" + the Message-ID of its earliest message."""
    refs = messages.select(
        "message_id",
        F.explode(
            F.concat(F.coalesce("references", F.array().cast("array<string>")), F.array("in_reply_to"))
        ).alias("ref"),
    ).select("message_id", strip_brackets(F.col("ref")).alias("ref"))
    edges = messages.select(F.col("message_id").alias("src"), F.col("message_id").alias("dst")).unionByName(
        refs.where(F.col("ref").isNotNull()).select(F.col("message_id").alias("src"), F.col("ref").alias("dst"))
    )
    components = connected_components(edges)
    placed = messages.select("message_id", "sent_at").join(
        components, on=F.col("message_id") == F.col("node"), how="inner"
    )
    roots = placed.groupBy("component").agg(F.min(F.struct("sent_at", "message_id")).alias("root"))
    return placed.join(roots, on="component", how="inner").select(
        "message_id", F.concat(F.lit("email:"), F.col("root.message_id")).alias("thread_id")
    )


def distinct_email_messages(email: DataFrame) -> DataFrame:
    """One row per message_id (re-deliveries collapsed: the first delivery wins) of the e-mail a
    person wrote: bounces, reports and automatic replies (bronze `kind` other than "message")
    are never a customer, an interaction or an identifier. A null kind (a frame made before
    the column existed) is a message."""
    people = email.where(F.coalesce(F.col("kind"), F.lit("message")) == "message") if "kind" in email.columns else email
    return first_delivery(people.withColumn("message_id", strip_brackets(F.col("message_id"))), "message_id")


