"""Silver `interactions`: one row per conversation, WhatsApp conversation, e-mail thread or call.

Re-delivered records are collapsed on their source id first (the first delivery wins;
`_arrival_date` is the earliest arrival of the interaction's records). Times are UTC
instants; durations are seconds (double).
"""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from atende.conf.settings import Settings
from atende.features.identifiers import email_domain, normalize_email
from atende.pipelines.dedup import first_delivery
from atende.pipelines.frames import keep_ids, union_all
from atende.pipelines.identity import assign_email_threads, distinct_email_messages, whatsapp_messages
from atende.pipelines.schemas import INTERACTIONS

# A WhatsApp message with none in its thread (the customer's one-to-one chat, or a group) in the previous
# 24 h opens a new conversation.
WHATSAPP_SESSION_GAP_SECONDS = 24 * 3600
# Not messages of a conversation: a reaction, the deletion or edit of an earlier message, a system notice
# (the user changed number or identity), and what WhatsApp could not show (unsupported, unknown).
WHATSAPP_NOT_COUNTED = ("reaction", "revoke", "edit", "system", "unsupported", "unknown")


def _seconds_between(start: Column, end: Column) -> Column:
    return (F.unix_micros(end) - F.unix_micros(start)) / F.lit(1_000_000.0)


def _join_texts(messages: Column) -> Column:
    texts = F.filter(F.transform(messages, lambda m: m["text"]), lambda t: t.isNotNull())
    return F.when(F.size(texts) > 0, F.array_join(texts, "\n"))


def _conversation_interactions(conversations: DataFrame) -> DataFrame:
    no_messages = F.array().cast("array<struct<sent_at:timestamp,author:string,agent_id:string,text:string>>")
    # messages in time order (sent_at is the struct's first field)
    conv = first_delivery(conversations, "conversation_id").withColumn(
        "_msgs", F.sort_array(F.coalesce(F.col("messages"), no_messages))
    )
    msgs = F.col("_msgs")
    by_customer = F.filter(msgs, lambda m: m["author"] == "customer")
    by_agent = F.filter(msgs, lambda m: m["author"] == "agent")
    by_bot = F.filter(msgs, lambda m: m["author"] == "bot")
    first_customer = F.array_min(F.transform(by_customer, lambda m: m["sent_at"]))
    first_reply = F.array_min(
        F.transform(
            F.filter(msgs, lambda m: m["author"].isin("bot", "agent") & (m["sent_at"] >= first_customer)),
            lambda m: m["sent_at"],
        )
    )
    first_agent_after_handoff = F.array_min(
        F.transform(F.filter(by_agent, lambda m: m["sent_at"] >= F.col("handoff_at")), lambda m: m["sent_at"])
    )
    has_agent = F.size(by_agent) > 0
    has_bot_message = F.size(by_bot) > 0
    handed_off = F.col("handoff_at").isNotNull()
    agent_ids = F.filter(F.transform(by_agent, lambda m: m["agent_id"]), lambda a: a.isNotNull())
    return conv.select(
        F.col("conversation_id").alias("interaction_id"),
        F.lower(F.col("channel")).alias("channel"),
        "started_at",
        "ended_at",
        F.col("conversation_id").alias("_record_id"),
        F.lit("conversations").alias("_record_source"),
        "topic",
        "language",
        "resolved",
        handed_off.alias("handed_off"),
        (has_bot_message & ~has_agent).alias("bot_only"),
        _seconds_between(first_customer, first_reply).alias("first_response_seconds"),
        F.when(handed_off, _seconds_between(F.col("handoff_at"), first_agent_after_handoff)).alias("wait_seconds"),
        # agent-handled: from hand-off (or start, when an agent took it directly) to the end
        F.when(has_agent, _seconds_between(F.coalesce("handoff_at", "started_at"), F.col("ended_at"))).alias("handle_seconds"),
        F.try_element_at(agent_ids, F.lit(1)).alias("agent_id"),
        F.size(msgs).alias("message_count"),
        _join_texts(by_customer).alias("customer_text"),
        _join_texts(by_agent).alias("agent_text"),
        "handoff_at",
        ((F.lower(F.col("channel")) == "chatbot") | has_bot_message).alias("has_bot"),
        F.lit(None).cast("string").alias("disposition"),
        F.lit(None).cast("double").alias("talk_seconds"),
        F.lit(None).cast("double").alias("hold_seconds"),
        F.lit(None).cast("string").alias("queue"),
        F.col("customer.name").alias("customer_name"),
        "_arrival_date",
    )


def _whatsapp_text() -> Column:
    """What the customer wrote or chose: the text; a media caption or an order's note; the title of the
    button, list row or template quick reply tapped (a Flow's reply body is Meta's label, not theirs)."""
    return F.coalesce(
        F.col("text"),
        F.col("caption"),
        F.when(F.coalesce(F.col("reply_kind"), F.lit("")) != "nfm_reply", F.col("reply_title")),
    )


def _whatsapp_session_messages(whatsapp: DataFrame, keep: DataFrame | None = None) -> DataFrame:
    """The WhatsApp messages that make conversations, each with its chat (`_thread`) and its conversation's
    number within the chat (`session`). `keep`: only these messages (`record_id`); given whole
    conversations, their sessions are those of all messages (a gap is a gap within a conversation too)."""
    msgs = whatsapp_messages(whatsapp)
    if keep is not None:
        msgs = keep_ids(msgs, keep, "message_id")
    # the customer's one-to-one chat is keyed by their number, else (a username) by their user id; a group
    # is a conversation of its own, never merged into a participant's chat
    customer = F.coalesce(F.concat(F.lit("wa:"), F.col("wa_id")), F.concat(F.lit("uid:"), F.col("user_id")))
    thread = F.when(F.col("group_id").isNotNull(), F.concat(F.lit("group:"), F.col("group_id"))).otherwise(customer)
    # an echo is a reply the business sent from the WhatsApp Business app: an agent's message
    author = F.when(F.col("direction") == "echo", F.lit("agent")).otherwise(F.lit("customer"))
    msgs = msgs.select(
        "*", thread.alias("_thread"), author.alias("author"), _whatsapp_text().alias("_text")
    ).where(
        F.col("sent_at").isNotNull() & F.col("_thread").isNotNull()
        & ~F.coalesce(F.col("type"), F.lit("text")).isin(*WHATSAPP_NOT_COUNTED)
    )
    by_thread = Window.partitionBy("_thread").orderBy("sent_at", "message_id")
    previous = F.lag("sent_at").over(by_thread.rowsBetween(-1, -1))
    opens = previous.isNull() | (_seconds_between(previous, F.col("sent_at")) > WHATSAPP_SESSION_GAP_SECONDS)
    return msgs.withColumn("_opens", opens.cast("int")).withColumn(
        "session",
        F.sum("_opens").over(by_thread.rowsBetween(Window.unboundedPreceding, Window.currentRow)),
    )


def whatsapp_sessions(whatsapp: DataFrame) -> DataFrame:
    """`message_id, interaction_id`: the WhatsApp conversation (silver interaction) each counted message belongs
    to; its id is "wa:" + the conversation's first message id (by sent_at, then message id)."""
    sessions = _whatsapp_session_messages(whatsapp)
    first = sessions.groupBy("_thread", "session").agg(F.min(F.struct("sent_at", "message_id")).alias("_first"))
    return sessions.join(first, on=["_thread", "session"], how="inner").select(
        "message_id", F.concat(F.lit("wa:"), F.col("_first.message_id")).alias("interaction_id"))


def _whatsapp_interactions(whatsapp: DataFrame, record_keys: DataFrame, keep: DataFrame | None = None) -> DataFrame:
    sessions = _whatsapp_session_messages(whatsapp, keep)
    keyed = sessions.join(
        record_keys.where(F.col("source") == "whatsapp").select(F.col("record_id").alias("message_id"), "customer_key"),
        on="message_id",
        how="left",
    )
    ordered = F.array_sort(F.collect_list(F.struct(
        "sent_at", "message_id", "author", F.col("_text").alias("text"), "profile_name", "customer_key"
    )))
    grouped = keyed.groupBy("_thread", "session").agg(
        ordered.alias("msgs"), F.min("_arrival_date").alias("_arrival_date")
    )
    by_customer = F.filter(F.col("msgs"), lambda m: m["author"] == "customer")
    by_agent = F.filter(F.col("msgs"), lambda m: m["author"] == "agent")
    first_customer = F.array_min(F.transform(by_customer, lambda m: m["sent_at"]))
    first_reply = F.array_min(
        F.transform(F.filter(by_agent, lambda m: m["sent_at"] >= first_customer), lambda m: m["sent_at"])
    )
    # the conversation's customer: its earliest keyed customer message, else an echo's (sent to them)
    keys = F.filter(
        F.transform(F.concat(by_customer, by_agent), lambda m: m["customer_key"]), lambda k: k.isNotNull()
    )
    names = F.filter(F.transform(by_customer, lambda m: m["profile_name"]), lambda n: n.isNotNull())
    # bot replies sent through the API are not echoed: only the customer's messages and the app's replies are seen
    return grouped.select(
        F.concat(F.lit("wa:"), F.try_element_at("msgs", F.lit(1))["message_id"]).alias("interaction_id"),
        F.lit("whatsapp").alias("channel"),
        F.try_element_at("msgs", F.lit(1))["sent_at"].alias("started_at"),
        F.try_element_at("msgs", F.lit(-1))["sent_at"].alias("ended_at"),
        F.try_element_at(keys, F.lit(1)).alias("customer_key"),
        F.lit(None).cast("string").alias("topic"),
        F.lit(None).cast("string").alias("language"),
        F.lit(None).cast("boolean").alias("resolved"),
        F.lit(False).alias("handed_off"),
        F.lit(False).alias("bot_only"),
        _seconds_between(first_customer, first_reply).alias("first_response_seconds"),
        F.lit(None).cast("double").alias("wait_seconds"),
        F.lit(None).cast("double").alias("handle_seconds"),
        F.lit(None).cast("string").alias("agent_id"),
        F.size("msgs").alias("message_count"),
        _join_texts(by_customer).alias("customer_text"),
        _join_texts(by_agent).alias("agent_text"),
        F.lit(None).cast("timestamp").alias("handoff_at"),
        F.lit(False).alias("has_bot"),
        F.lit(None).cast("string").alias("disposition"),
        F.lit(None).cast("double").alias("talk_seconds"),
        F.lit(None).cast("double").alias("hold_seconds"),
        F.lit(None).cast("string").alias("queue"),
        F.try_element_at(names, F.lit(-1)).alias("customer_name"),
        "_arrival_date",
    )


def _email_interactions(email: DataFrame, record_keys: DataFrame, settings: Settings,
                        threads: DataFrame | None = None, keep: DataFrame | None = None) -> DataFrame:
    msgs = distinct_email_messages(email)
    if keep is not None:  # whole threads: the thread ids come from all messages (`threads`)
        msgs = keep_ids(msgs, keep, "message_id")
    threads = assign_email_threads(msgs) if threads is None else threads
    sender = normalize_email(F.col("from_address"))
    is_agent = F.lit(False)
    for domain in (d.lower() for d in settings.identity.company_domains):
        is_agent = is_agent | (email_domain(sender) == domain) | email_domain(sender).endswith("." + domain)
    keyed = (
        msgs.join(threads, on="message_id", how="inner")
        .join(
            record_keys.where(F.col("source") == "email").select(F.col("record_id").alias("message_id"), "customer_key"),
            on="message_id",
            how="left",
        )
        .withColumn("is_agent", F.coalesce(is_agent, F.lit(False)))
        .withColumnRenamed("body_text", "text")
    )
    grouped = keyed.groupBy("thread_id").agg(
        F.array_sort(
            F.collect_list(F.struct("sent_at", "message_id", "is_agent", "text", "from_name", "customer_key"))
        ).alias("msgs"),
        F.min("_arrival_date").alias("_arrival_date"),
    )
    by_customer = F.filter(F.col("msgs"), lambda m: ~m["is_agent"])
    by_agent = F.filter(F.col("msgs"), lambda m: m["is_agent"])
    first_customer = F.array_min(F.transform(by_customer, lambda m: m["sent_at"]))
    first_reply = F.array_min(F.transform(F.filter(by_agent, lambda m: m["sent_at"] >= first_customer), lambda m: m["sent_at"]))
    # the thread's customer: its earliest keyed customer message, else any keyed message (inherited)
    keys = F.filter(
        F.transform(F.concat(by_customer, by_agent), lambda m: m["customer_key"]), lambda k: k.isNotNull()
    )
    names = F.filter(F.transform(by_customer, lambda m: m["from_name"]), lambda n: n.isNotNull())
    return grouped.select(
        F.col("thread_id").alias("interaction_id"),
        F.lit("email").alias("channel"),
        F.try_element_at("msgs", F.lit(1))["sent_at"].alias("started_at"),
        F.try_element_at("msgs", F.lit(-1))["sent_at"].alias("ended_at"),
        F.try_element_at(keys, F.lit(1)).alias("customer_key"),
        F.lit(None).cast("string").alias("topic"),
        F.lit(None).cast("string").alias("language"),
        F.lit(None).cast("boolean").alias("resolved"),
        F.lit(False).alias("handed_off"),
        F.lit(False).alias("bot_only"),
        _seconds_between(first_customer, first_reply).alias("first_response_seconds"),
        F.lit(None).cast("double").alias("wait_seconds"),
        F.lit(None).cast("double").alias("handle_seconds"),
        F.lit(None).cast("string").alias("agent_id"),
        F.size("msgs").alias("message_count"),
        _join_texts(by_customer).alias("customer_text"),
        _join_texts(by_agent).alias("agent_text"),
        F.lit(None).cast("timestamp").alias("handoff_at"),
        F.lit(False).alias("has_bot"),
        F.lit(None).cast("string").alias("disposition"),
        F.lit(None).cast("double").alias("talk_seconds"),
        F.lit(None).cast("double").alias("hold_seconds"),
        F.lit(None).cast("string").alias("queue"),
        F.try_element_at(names, F.lit(1)).alias("customer_name"),
        "_arrival_date",
    )


def _call_interactions(calls: DataFrame) -> DataFrame:
    c = first_delivery(calls, "call_id")
    disposition = F.lower(F.col("disposition"))
    # an abandoned call or a voicemail never got a response: its wait is not a response time
    responded = disposition.isNull() | disposition.isin("answered", "transferred")
    duration = F.coalesce("wait_seconds", F.lit(0.0)) + F.coalesce("talk_seconds", F.lit(0.0)) + F.coalesce("hold_seconds", F.lit(0.0))
    return c.select(
        F.col("call_id").alias("interaction_id"),
        F.lit("voice").alias("channel"),
        "started_at",
        F.timestamp_micros(F.unix_micros("started_at") + (duration * 1_000_000).cast("long")).alias("ended_at"),
        F.col("call_id").alias("_record_id"),
        F.lit("calls").alias("_record_source"),
        "topic",
        F.lit(None).cast("string").alias("language"),
        "resolved",
        F.lit(False).alias("handed_off"),
        F.lit(False).alias("bot_only"),
        F.when(responded, F.col("wait_seconds")).alias("first_response_seconds"),
        "wait_seconds",
        (F.col("talk_seconds") + F.coalesce("hold_seconds", F.lit(0.0))).alias("handle_seconds"),
        "agent_id",
        F.lit(None).cast("int").alias("message_count"),
        F.lit(None).cast("string").alias("customer_text"),
        F.lit(None).cast("string").alias("agent_text"),
        F.lit(None).cast("timestamp").alias("handoff_at"),
        F.lit(False).alias("has_bot"),
        disposition.alias("disposition"),
        "talk_seconds",
        "hold_seconds",
        "queue",
        F.lit(None).cast("string").alias("customer_name"),
        "_arrival_date",
    )


def build_interactions(
    bronze: Mapping[str, DataFrame],
    record_keys: DataFrame,
    settings: Settings,
    run_id: str,
    now: datetime,
    email_threads: DataFrame | None = None,
    only: Mapping[str, DataFrame] | None = None,
) -> DataFrame:
    """INTERACTIONS from the conversations, whatsapp, email and calls bronze frames present in `bronze`.
    `email_threads`: `assign_email_threads` of bronze e-mail, when the caller has it already.
    `only`: per source, the records (`record_id`: conversation_id, call_id, message ids) to build from —
    whole e-mail threads and WhatsApp conversations (incremental silver, `pipelines/increments.py`)."""
    def kept(source: str, frame: DataFrame, id_column: str) -> DataFrame:
        return frame if only is None else keep_ids(frame, only[source], id_column)

    keyed_by_record: list[DataFrame] = []
    if "conversations" in bronze:
        keyed_by_record.append(_conversation_interactions(kept("conversations", bronze["conversations"],
                                                               "conversation_id")))
    if "calls" in bronze:
        keyed_by_record.append(_call_interactions(kept("calls", bronze["calls"], "call_id")))
    parts: list[DataFrame] = []
    if keyed_by_record:
        one_record = union_all(keyed_by_record)
        keys = record_keys.select(
            F.col("source").alias("_record_source"), F.col("record_id").alias("_record_id"), "customer_key"
        )
        parts.append(
            one_record.join(keys, on=["_record_source", "_record_id"], how="left").drop("_record_source", "_record_id")
        )
    if "whatsapp" in bronze:
        parts.append(_whatsapp_interactions(bronze["whatsapp"], record_keys, None if only is None else only["whatsapp"]))
    if "email" in bronze:
        parts.append(_email_interactions(bronze["email"], record_keys, settings, email_threads,
                                         None if only is None else only["email"]))
    if not parts:
        raise ValueError("build_interactions: bronze holds none of conversations, whatsapp, email, calls")
    every = union_all(parts).withColumn("run_id", F.lit(run_id)).withColumn("_written_at", F.lit(now).cast("timestamp"))
    return every.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in INTERACTIONS.fields])
