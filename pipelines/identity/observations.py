"""Identifier observations: every (record, identifier) a bronze record carries, the edges of the identity graph."""
from __future__ import annotations

from collections.abc import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from atende.conf.settings import IdentitySettings, Settings
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
    parts: list[DataFrame] = []
    if "conversations" in bronze:
        parts += _conversation_observations(bronze["conversations"], cfg)
    if "whatsapp" in bronze:
        parts += _whatsapp_observations(bronze["whatsapp"], cfg)
    if "email" in bronze:
        parts += _email_observations(bronze["email"], cfg, email_threads)
    if "calls" in bronze:
        parts += _call_observations(bronze["calls"], cfg)
    if "surveys" in bronze:
        parts += _survey_observations(bronze["surveys"], cfg)
    if "crm" in bronze:
        parts += _crm_observations(bronze["crm"], cfg)
    if "orders" in bronze:
        parts += _order_observations(bronze["orders"], cfg)
    if "actions" in bronze:
        parts += _action_observations(bronze["actions"], cfg)
    if not parts:
        raise ValueError("build_identifier_observations: no source in bronze carries identifiers")
    return _first_sightings(parts)


# ------------------------------------------------------------------ observations per source
# Each returns the observation frames (`source, record_id, identifier_type, identifier, seen_at`) of one
# bronze source, in the order they are unioned.
def _email(c: Column, cfg: IdentitySettings) -> Column:
    """A normalised e-mail address (`normalize_email`), null when blocklisted."""
    return normalize_email(c, cfg.blocklist_emails)


def _phone(c: Column, cfg: IdentitySettings) -> Column:
    """A normalised phone number (`normalize_phone` in `identity.default_region`), null when blocklisted."""
    return normalize_phone(c, cfg.default_region, cfg.blocklist_phones)


def _conversation_observations(conv: DataFrame, cfg: IdentitySettings) -> list[DataFrame]:
    """Each conversation's interaction row and its customer's identifiers and name."""
    return [
        conv.select(*_observation(
            "conversations", F.col("conversation_id"), INTERACTION, F.col("conversation_id"), F.col("started_at")
        )),
        _unpivot(
            conv, "conversations", F.col("conversation_id"), F.col("started_at"),
            {
                "crm_id": normalize_as_given(F.col("customer.crm_id")),
                "email": _email(F.col("customer.email"), cfg),
                "phone": _phone(F.col("customer.phone"), cfg),
                "handle": normalize_handle(F.col("channel"), F.col("customer.handle")),
                "device_id": normalize_as_given(F.col("customer.device_id")),
                NAME: normalize_person_name(F.col("customer.name")),
            },
        ),
    ]


def _whatsapp_observations(whatsapp: DataFrame, cfg: IdentitySettings) -> list[DataFrame]:
    """Each WhatsApp message's customer (phone, user id, profile name), and the company's business lines."""
    msgs = whatsapp_messages(whatsapp)
    wa_phone = _phone(_international_digits(F.col("wa_id")), cfg)
    # an echo's customer is its recipient (wa_id / user_id are theirs): its record is theirs too
    parts = [_unpivot(
        msgs, "whatsapp", F.col("message_id"), F.coalesce("sent_at", "_ingested_at"),
        {
            "phone": wa_phone,
            WHATSAPP_USER_ID: normalize_as_given(F.col("user_id")),
            PROFILE_NAME: normalize_person_name(F.col("profile_name")),
        },
    )]
    if "display_phone_number" in msgs.columns:
        # the business line each message was received on (metadata.display_phone_number) is the
        # company's own number: typed into a form or dialled, it names no customer
        parts.append(
            msgs.select(
                _phone(_international_digits(F.col("display_phone_number")), cfg).alias("line"),
                F.coalesce("sent_at", "_ingested_at").alias("at"),
            )
            .where(F.col("line").isNotNull())
            .groupBy("line").agg(F.min("at").alias("at"))
            .select(*_observation(COMPANY_SOURCE, F.lit("whatsapp-business-line"), COMPANY_PREFIX + "phone",
                                  F.col("line"), F.col("at")))
        )
    return parts


def _email_observations(email: DataFrame, cfg: IdentitySettings, email_threads: DataFrame | None) -> list[DataFrame]:
    """Each e-mail message's sender (unless the company's), its thread, and the company's mailboxes."""
    msgs = distinct_email_messages(email)
    address = _email(F.col("from_address"), cfg)
    is_company = company_address(address, cfg.company_domains)
    # company addresses are agents: their message's customer is the other party, found via the thread
    parts = [_unpivot(
        msgs, "email", F.col("message_id"), F.col("sent_at"),
        {"email": F.when(~is_company, address), NAME: F.when(~is_company, normalize_person_name(F.col("from_name")))},
    )]
    threads = (assign_email_threads(msgs) if email_threads is None else email_threads).join(
        msgs.select("message_id", "sent_at"), on="message_id", how="inner")
    parts.append(threads.select(*_observation("email", F.col("message_id"), EMAIL_THREAD, F.col("thread_id"), F.col("sent_at"))))
    if "recipient_addresses" in msgs.columns and cfg.company_mailbox_min_senders > 0:
        parts.append(company_mailboxes(msgs, address, is_company, lambda c: _email(c, cfg), cfg.company_mailbox_min_senders))
    return parts


def _call_observations(calls: DataFrame, cfg: IdentitySettings) -> list[DataFrame]:
    """Each call's caller number and its interaction row."""
    return [
        _unpivot(calls, "calls", F.col("call_id"), F.col("started_at"), {"phone": _phone(F.col("ani"), cfg)}),
        calls.select(*_observation("calls", F.col("call_id"), INTERACTION, F.col("call_id"), F.col("started_at"))),
    ]


def _survey_observations(s: DataFrame, cfg: IdentitySettings) -> list[DataFrame]:
    """Each survey response's interaction row (the contact it is about) and its respondent's identifiers."""
    return [
        # the conversation or call the response is about
        s.select(*_observation(
            "surveys", F.col("response_id"), INTERACTION, normalize_as_given(F.col("contact_id")), F.col("submitted_at")
        )),
        _unpivot(
            s, "surveys", F.col("response_id"), F.col("submitted_at"),
            {"crm_id": normalize_as_given(F.col("crm_id")), "email": _email(F.col("email"), cfg), "phone": _phone(F.col("phone"), cfg)},
        ),
    ]


def _crm_observations(crm: DataFrame, cfg: IdentitySettings) -> list[DataFrame]:
    """Each CRM registration's identifiers, name and birth date."""
    return [_unpivot(
        crm, "crm", F.col("crm_id"), F.col("updated_at"),
        {
            "crm_id": normalize_as_given(F.col("crm_id")), "email": _email(F.col("email"), cfg), "phone": _phone(F.col("phone"), cfg),
            NAME: normalize_person_name(F.col("full_name")), BIRTH_DATE: F.col("birth_date").cast(StringType()),
        },
    )]


def _order_observations(o: DataFrame, cfg: IdentitySettings) -> list[DataFrame]:
    """Each order's crm_id and e-mail."""
    return [_unpivot(
        o, "orders", F.col("order_id"), F.col("ordered_at"),
        {"crm_id": normalize_as_given(F.col("crm_id")), "email": _email(F.col("email"), cfg)},
    )]


def _action_observations(a: DataFrame, cfg: IdentitySettings) -> list[DataFrame]:
    """Each action's crm_id, e-mail and phone."""
    return [_unpivot(
        a, "actions", F.col("action_id"), F.col("sent_at"),
        {"crm_id": normalize_as_given(F.col("crm_id")), "email": _email(F.col("email"), cfg), "phone": _phone(F.col("phone"), cfg)},
    )]


def _first_sightings(parts: list[DataFrame]) -> DataFrame:
    """IDENTIFIER_OBSERVATIONS from the sources' observation frames: complete rows only, one per
    (record, identifier) at its first sighting."""
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
