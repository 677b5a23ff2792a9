"""Identifier observations: every (record, identifier) a bronze record carries, the edges of the identity graph."""
from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from atende.conf.settings import Settings
from atende.features.identifiers import (
    email_domain,
    normalize_as_given,
    normalize_email,
    normalize_handle,
    normalize_phone,
)
from atende.pipelines.dedup import first_delivery
from atende.pipelines.identity.common import (
    BIRTH_DATE,
    COMPANY_PREFIX,
    COMPANY_SOURCE,
    EMAIL_THREAD,
    INTERACTION,
    NAME,
    PROFILE_NAME,
    WHATSAPP_USER_ID,
    normalize_person_name,
)
from atende.pipelines.identity.email_threads import assign_email_threads, distinct_email_messages
from atende.pipelines.schemas import IDENTIFIER_OBSERVATIONS


# ------------------------------------------------------------------ observations
def _observation(source: str, record_id: Column, identifier_type: str, identifier: Column, seen_at: Column) -> list[Column]:
    return [
        F.lit(source).alias("source"),
        record_id.alias("record_id"),
        F.lit(identifier_type).alias("identifier_type"),
        identifier.alias("identifier"),
        seen_at.alias("seen_at"),
    ]


def _unpivot(df: DataFrame, source: str, record_id: Column, seen_at: Column, identifiers: Mapping[str, Column]) -> DataFrame:
    entries = F.array(*[
        F.struct(F.lit(t).alias("identifier_type"), value.cast(StringType()).alias("identifier"))
        for t, value in identifiers.items()
    ])
    return df.select(
        F.lit(source).alias("source"),
        record_id.alias("record_id"),
        seen_at.alias("seen_at"),
        F.explode(entries).alias("e"),
    ).select("source", "record_id", "e.identifier_type", "e.identifier", "seen_at")


def whatsapp_messages(whatsapp: DataFrame) -> DataFrame:
    """One row per WhatsApp message, received or echoed (payloads flattened, re-deliveries collapsed by
    message id), with the payload's lineage columns. Its customer is `wa_id` / `user_id` (the sender of
    a received message, the recipient of an echo)."""
    flat = whatsapp.select(
        F.explode("messages").alias("m"), "_arrival_date", "_ingested_at", "_source_file"
    ).select("m.*", "_arrival_date", "_ingested_at", "_source_file")
    return first_delivery(flat, "message_id")


def _international_digits(number: Column) -> Column:
    """A WhatsApp number (a wa_id, a business line's display_phone_number) is international, written
    without its "+" ("5511998765432"); a "+" given anyway (after blanks) is not doubled."""
    return F.concat(F.lit("+"), F.regexp_replace(number, r"^\s*\+", ""))


def company_address(address: Column, company_domains) -> Column:
    """A normalised e-mail address in one of the company's domains (or a subdomain): an agent's or
    a mailbox of the company's own, never a customer's."""
    domain = email_domain(address)
    is_company = F.lit(False)
    for d in (d.lower() for d in company_domains):
        is_company = is_company | (domain == d) | domain.endswith("." + d)
    return F.coalesce(is_company, F.lit(False))


def company_mailboxes(messages: DataFrame, sender: Column, sender_is_company: Column, email, min_senders: int) -> DataFrame:
    """The company's own mailboxes as inbound mail shows them: addresses customers' messages were sent to
    (To, Cc, Delivered-To) by at least `min_senders` distinct customers — a support inbox, not a spouse
    one customer copied. Observations of type company_email (see COMPANY_SOURCE)."""
    inbound = messages.where(~sender_is_company & sender.isNotNull()).select(
        sender.alias("sender"), F.explode("recipient_addresses").alias("recipient"), "sent_at"
    ).select("sender", email(F.col("recipient")).alias("recipient"), "sent_at")
    return (
        inbound.where(F.col("recipient").isNotNull() & (F.col("recipient") != F.col("sender")))
        .groupBy("recipient")
        .agg(F.countDistinct("sender").alias("senders"), F.min("sent_at").alias("seen_at"))
        .where(F.col("senders") >= min_senders)
        .select(*_observation(COMPANY_SOURCE, F.lit("email-recipients"), COMPANY_PREFIX + "email",
                              F.col("recipient"), F.col("seen_at")))
    )


def build_identifier_observations(bronze: Mapping[str, DataFrame], settings: Settings,
                                  email_threads: DataFrame | None = None) -> DataFrame:
    """IDENTIFIER_OBSERVATIONS: one row per (source, record_id, identifier) — normalised, blocklisted
    values dropped — plus the grouping rows: `email_thread` for each e-mail message (never links: records
    without a customer identifier inherit their thread's customer), `interaction` for each conversation
    and call and for each survey response naming one (its contact_id: the response and the contact are
    one customer's); and the attribute rows that never link by themselves (`name`, `profile_name`,
    `birth_date`, see ATTRIBUTE_TYPES). `email_threads`: `assign_email_threads` of bronze e-mail, when
    the caller has it already (silver interactions need it too)."""
    cfg = settings.identity
    region = cfg.default_region

    def email(c: Column) -> Column:
        return normalize_email(c, cfg.blocklist_emails)

    def phone(c: Column) -> Column:
        return normalize_phone(c, region, cfg.blocklist_phones)

    parts: list[DataFrame] = []

    if "conversations" in bronze:
        conv = bronze["conversations"]
        parts.append(conv.select(*_observation(
            "conversations", F.col("conversation_id"), INTERACTION, F.col("conversation_id"), F.col("started_at")
        )))
        parts.append(_unpivot(
            conv, "conversations", F.col("conversation_id"), F.col("started_at"),
            {
                "crm_id": normalize_as_given(F.col("customer.crm_id")),
                "email": email(F.col("customer.email")),
                "phone": phone(F.col("customer.phone")),
                "handle": normalize_handle(F.col("channel"), F.col("customer.handle")),
                "device_id": normalize_as_given(F.col("customer.device_id")),
                NAME: normalize_person_name(F.col("customer.name")),
            },
        ))

    if "whatsapp" in bronze:
        msgs = whatsapp_messages(bronze["whatsapp"])
        wa_phone = phone(_international_digits(F.col("wa_id")))
        # an echo's customer is its recipient (wa_id / user_id are theirs): its record is theirs too
        parts.append(_unpivot(
            msgs, "whatsapp", F.col("message_id"), F.coalesce("sent_at", "_ingested_at"),
            {
                "phone": wa_phone,
                WHATSAPP_USER_ID: normalize_as_given(F.col("user_id")),
                PROFILE_NAME: normalize_person_name(F.col("profile_name")),
            },
        ))
        if "display_phone_number" in msgs.columns:
            # the business line each message was received on (metadata.display_phone_number) is the
            # company's own number: typed into a form or dialled, it names no customer
            parts.append(
                msgs.select(
                    phone(_international_digits(F.col("display_phone_number"))).alias("line"),
                    F.coalesce("sent_at", "_ingested_at").alias("at"),
                )
                .where(F.col("line").isNotNull())
                .groupBy("line").agg(F.min("at").alias("at"))
                .select(*_observation(COMPANY_SOURCE, F.lit("whatsapp-business-line"), COMPANY_PREFIX + "phone",
                                      F.col("line"), F.col("at")))
            )

    if "email" in bronze:
        msgs = distinct_email_messages(bronze["email"])
        address = email(F.col("from_address"))
        is_company = company_address(address, cfg.company_domains)
        # company addresses are agents: their message's customer is the other party, found via the thread
        parts.append(_unpivot(
            msgs, "email", F.col("message_id"), F.col("sent_at"),
            {"email": F.when(~is_company, address), NAME: F.when(~is_company, normalize_person_name(F.col("from_name")))},
        ))
        threads = (assign_email_threads(msgs) if email_threads is None else email_threads).join(
            msgs.select("message_id", "sent_at"), on="message_id", how="inner")
        parts.append(threads.select(*_observation("email", F.col("message_id"), EMAIL_THREAD, F.col("thread_id"), F.col("sent_at"))))
        if "recipient_addresses" in msgs.columns and cfg.company_mailbox_min_senders > 0:
            parts.append(company_mailboxes(msgs, address, is_company, email, cfg.company_mailbox_min_senders))

    if "calls" in bronze:
        calls = bronze["calls"]
        parts.append(_unpivot(calls, "calls", F.col("call_id"), F.col("started_at"), {"phone": phone(F.col("ani"))}))
        parts.append(calls.select(*_observation("calls", F.col("call_id"), INTERACTION, F.col("call_id"), F.col("started_at"))))

    if "surveys" in bronze:
        s = bronze["surveys"]
        # the conversation or call the response is about
        parts.append(s.select(*_observation(
            "surveys", F.col("response_id"), INTERACTION, normalize_as_given(F.col("contact_id")), F.col("submitted_at")
        )))
        parts.append(_unpivot(
            s, "surveys", F.col("response_id"), F.col("submitted_at"),
            {"crm_id": normalize_as_given(F.col("crm_id")), "email": email(F.col("email")), "phone": phone(F.col("phone"))},
        ))

    if "crm" in bronze:
        crm = bronze["crm"]
        parts.append(_unpivot(
            crm, "crm", F.col("crm_id"), F.col("updated_at"),
            {
                "crm_id": normalize_as_given(F.col("crm_id")), "email": email(F.col("email")), "phone": phone(F.col("phone")),
                NAME: normalize_person_name(F.col("full_name")), BIRTH_DATE: F.col("birth_date").cast(StringType()),
            },
        ))

    if "orders" in bronze:
        o = bronze["orders"]
        parts.append(_unpivot(
            o, "orders", F.col("order_id"), F.col("ordered_at"),
            {"crm_id": normalize_as_given(F.col("crm_id")), "email": email(F.col("email"))},
        ))

    if "actions" in bronze:
        a = bronze["actions"]
        parts.append(_unpivot(
            a, "actions", F.col("action_id"), F.col("sent_at"),
            {"crm_id": normalize_as_given(F.col("crm_id")), "email": email(F.col("email")), "phone": phone(F.col("phone"))},
        ))

    if not parts:
        raise ValueError("build_identifier_observations: no source in bronze carries identifiers")
    observed = parts[0]
    for part in parts[1:]:
        observed = observed.unionByName(part)
    return (
        observed.where(F.col("identifier").isNotNull() & F.col("record_id").isNotNull() & F.col("seen_at").isNotNull())
        # re-delivered records: one row per (record, identifier), first sighting
        .groupBy("source", "record_id", "identifier_type", "identifier")
        .agg(F.min("seen_at").alias("seen_at"))
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in IDENTIFIER_OBSERVATIONS.fields])
    )


