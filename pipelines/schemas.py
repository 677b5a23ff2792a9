"""Column names and schemas of every table atende writes, declared once.

Bronze tables are one row per accepted source record, typed, plus the lineage
columns; silver and gold follow docs/CONTRACTS.md section 3. Timestamps are
instants (Spark TimestampType, stored as UTC microseconds).
"""
from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

SOURCES = (
    "conversations",
    "whatsapp",
    "email",
    "calls",
    "surveys",
    "crm",
    "orders",
    "products",
    "actions",
)

DIGITAL_CHANNELS = (
    "webchat", "chatbot", "app", "whatsapp", "telegram", "messenger",
    "instagram", "facebook", "twitter", "linkedin", "email",
)
ALL_CHANNELS = DIGITAL_CHANNELS + ("voice",)
# How a person reads a channel's name (persona names and descriptions, recommendation reasons); the
# outbound channels of the action log (sms, push) included
CHANNEL_LABELS = {
    "webchat": "web-chat", "chatbot": "chatbot", "app": "app", "whatsapp": "WhatsApp", "telegram": "Telegram",
    "messenger": "Messenger", "instagram": "Instagram", "facebook": "Facebook", "twitter": "X/Twitter",
    "linkedin": "LinkedIn", "email": "e-mail", "voice": "phone", "sms": "SMS", "push": "app push",
}
AUTHORS = ("customer", "bot", "agent")
DISPOSITIONS = ("answered", "abandoned", "transferred", "voicemail")
CALL_VIA = ("pstn", "whatsapp", "telegram")
SURVEY_SCALES = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7), "sps": (0, 5)}


def _s(name: str, dtype, nullable: bool = True) -> StructField:
    return StructField(name, dtype, nullable)


# Lineage columns every bronze table carries after its typed columns.
LINEAGE_FIELDS = [
    _s("_extra", MapType(StringType(), StringType())),  # fields the contract does not know, kept
    _s("_source_file", StringType(), False),
    _s("_arrival_date", DateType(), False),
    _s("_ingested_at", TimestampType(), False),
    _s("run_id", StringType(), False),
]


def _bronze(*fields: StructField) -> StructType:
    return StructType(list(fields) + LINEAGE_FIELDS)


CUSTOMER_STRUCT = StructType([
    _s("crm_id", StringType()),
    _s("email", StringType()),
    _s("phone", StringType()),
    _s("name", StringType()),
    _s("handle", StringType()),
    _s("device_id", StringType()),
])

MESSAGE_STRUCT = StructType([
    _s("sent_at", TimestampType()),
    _s("author", StringType()),
    _s("agent_id", StringType()),
    _s("text", StringType()),
])

BRONZE_CONVERSATIONS = _bronze(
    _s("conversation_id", StringType(), False),
    _s("channel", StringType(), False),
    _s("started_at", TimestampType(), False),
    _s("ended_at", TimestampType()),
    _s("customer", CUSTOMER_STRUCT),
    _s("messages", ArrayType(MESSAGE_STRUCT)),
    _s("handoff_at", TimestampType()),
    _s("resolved", BooleanType()),
    _s("topic", StringType()),
    _s("language", StringType()),
)

# One row per webhook payload line; the messages it carries (received, and echoes of the replies
# sent from the WhatsApp Business app), flattened.
WHATSAPP_ORDER_ITEM_STRUCT = StructType([
    _s("product_retailer_id", StringType()),
    _s("quantity", IntegerType()),
    _s("item_price", DoubleType()),
    _s("currency", StringType()),
])
WHATSAPP_MESSAGE_STRUCT = StructType([
    _s("message_id", StringType()),        # wamid....
    _s("wa_id", StringType()),             # the customer's WhatsApp number: `from` of a received message, `to` of an echo
    _s("profile_name", StringType()),      # contacts[].profile.name
    _s("sent_at", TimestampType()),        # messages[].timestamp (Unix seconds)
    _s("type", StringType()),
    _s("text", StringType()),              # text.body (type text only)
    _s("phone_number_id", StringType()),   # metadata.phone_number_id (business line)
    _s("display_phone_number", StringType()),  # metadata.display_phone_number: the business line's own number
    _s("direction", StringType()),         # inbound (value.messages[]) | echo (value.message_echoes[], sent by the business)
    _s("user_id", StringType()),           # the customer's business-scoped user id (BSUID): from_user_id / to_user_id / contacts[].user_id
    _s("username", StringType()),          # contacts[].profile.username
    _s("group_id", StringType()),          # set for a message sent or received in a group
    _s("context_message_id", StringType()),  # context.id: the message this one replies to
    _s("caption", StringType()),           # media caption; the note sent with an order
    _s("media_id", StringType()),          # image|video|audio|document|sticker .id
    _s("mime_type", StringType()),
    _s("filename", StringType()),          # document.filename
    _s("latitude", DoubleType()),          # location.*
    _s("longitude", DoubleType()),
    _s("location_name", StringType()),
    _s("location_address", StringType()),
    _s("reply_kind", StringType()),        # button (template quick reply) | button_reply | list_reply | nfm_reply (Flow)
    _s("reply_id", StringType()),          # button.payload | <reply>.id | nfm_reply.name
    _s("reply_title", StringType()),       # button.text | <reply>.title | nfm_reply.body
    _s("order_items", ArrayType(WHATSAPP_ORDER_ITEM_STRUCT)),  # order.product_items
    _s("reaction_message_id", StringType()),  # reaction.message_id: the message reacted to
    _s("reaction_emoji", StringType()),    # empty when a reaction is removed
])
BRONZE_WHATSAPP = _bronze(
    # messages | echoes | statuses | mixed (more than one of those) | account_update (a change without any:
    # template, quality, account or preference updates; change_fields says which)
    _s("payload_kind", StringType(), False),
    _s("messages", ArrayType(WHATSAPP_MESSAGE_STRUCT)),
    _s("status_count", IntegerType()),
    _s("change_fields", ArrayType(StringType())),  # entry[].changes[].field, distinct, in order
)

# One row per RFC 5322 message (an .mbox holds many).
BRONZE_EMAIL = _bronze(
    _s("message_id", StringType(), False),   # without angle brackets
    _s("in_reply_to", StringType()),
    _s("references", ArrayType(StringType())),
    _s("from_address", StringType()),
    _s("from_name", StringType()),
    _s("to_addresses", ArrayType(StringType())),
    _s("subject", StringType()),
    _s("sent_at", TimestampType(), False),
    _s("body_text", StringType()),
    # message | bounce | report | auto_reply | auto_generated (email_messages.message_kind);
    # only "message" (or null, in frames made before the column) is a person's contact
    _s("kind", StringType()),
    _s("message_id_derived", BooleanType()),       # no Message-ID: message_id is derived.<sha256>@atende.invalid
    _s("recipient_addresses", ArrayType(StringType())),  # To, Cc, Delivered-To, X-Original-To
)

BRONZE_CALLS = _bronze(
    _s("call_id", StringType(), False),
    _s("started_at", TimestampType(), False),
    _s("ani", StringType()),
    _s("queue", StringType()),
    _s("wait_seconds", DoubleType()),
    _s("talk_seconds", DoubleType()),
    _s("hold_seconds", DoubleType()),
    _s("agent_id", StringType()),
    _s("disposition", StringType()),
    _s("transfer_count", IntegerType()),
    _s("resolved", BooleanType()),
    _s("topic", StringType()),
    _s("via", StringType()),
)

BRONZE_SURVEYS = _bronze(
    _s("response_id", StringType(), False),
    _s("submitted_at", TimestampType(), False),
    _s("survey", StringType(), False),
    _s("score", IntegerType(), False),
    _s("contact_id", StringType()),
    _s("email", StringType()),
    _s("phone", StringType()),
    _s("crm_id", StringType()),
    _s("comment", StringType()),
)

BRONZE_CRM = _bronze(
    _s("crm_id", StringType(), False),
    _s("full_name", StringType()),
    _s("email", StringType()),
    _s("phone", StringType()),
    _s("birth_date", DateType()),
    _s("gender", StringType()),
    _s("city", StringType()),
    _s("state", StringType()),
    _s("country", StringType()),
    _s("income_band", StringType()),
    _s("profession", StringType()),
    _s("marketing_consent", BooleanType()),
    _s("consent_updated_at", TimestampType()),
    _s("updated_at", TimestampType(), False),
)

BRONZE_ORDERS = _bronze(
    _s("order_id", StringType(), False),
    _s("ordered_at", TimestampType(), False),
    _s("crm_id", StringType()),
    _s("email", StringType()),
    _s("product_id", StringType(), False),
    _s("quantity", IntegerType()),
    _s("unit_price", DoubleType()),
    _s("channel", StringType()),
)

BRONZE_PRODUCTS = _bronze(
    _s("product_id", StringType(), False),
    _s("name", StringType()),
    _s("category", StringType()),
    _s("price", DoubleType()),
    _s("active", BooleanType()),
)

BRONZE_ACTIONS = _bronze(
    _s("action_id", StringType(), False),
    _s("sent_at", TimestampType(), False),
    _s("action", StringType(), False),
    _s("channel", StringType()),
    _s("crm_id", StringType()),
    _s("email", StringType()),
    _s("phone", StringType()),
    _s("propensity", DoubleType()),
    _s("responded", BooleanType()),
    _s("converted", BooleanType()),
    _s("revenue", DoubleType()),
)

BRONZE = {
    "conversations": BRONZE_CONVERSATIONS,
    "whatsapp": BRONZE_WHATSAPP,
    "email": BRONZE_EMAIL,
    "calls": BRONZE_CALLS,
    "surveys": BRONZE_SURVEYS,
    "crm": BRONZE_CRM,
    "orders": BRONZE_ORDERS,
    "products": BRONZE_PRODUCTS,
    "actions": BRONZE_ACTIONS,
}

# The id column of each bronze source: re-delivered records collapse on it.
BRONZE_KEYS = {
    "conversations": "conversation_id",
    "whatsapp": None,  # payload lines have no id; messages collapse on message_id in silver
    "email": "message_id",
    "calls": "call_id",
    "surveys": "response_id",
    "crm": None,       # history kept: later rows supersede earlier ones (latest updated_at)
    "orders": "order_id",
    "products": None,  # snapshot files: latest arrival wins
    "actions": "action_id",
}

QUARANTINE = StructType([
    _s("source", StringType(), False),
    _s("_source_file", StringType(), False),
    _s("raw", StringType()),
    _s("reason", StringType(), False),
    _s("_arrival_date", DateType(), False),
    _s("_ingested_at", TimestampType(), False),
    _s("run_id", StringType(), False),
])

# ---------------------------------------------------------------- personal data
# Columns holding what a person can be found by (contact points, names, birth dates, the ids other systems
# know them by), free text they wrote, or raw lines: "layer.table" -> columns. Tables keep no statistics
# of these in their Delta log (delta.dataSkippingStatsColumns, set when the table is created), since a
# minimum or maximum there would outlive an erasure (`atende forget`). Extra fields (`_extra`) are kept as
# given, so they count as personal too.
PERSONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "bronze.conversations": ("customer", "messages", "_extra"),
    "bronze.whatsapp": ("messages", "_extra"),
    "bronze.calls": ("ani", "_extra"),
    "bronze.surveys": ("email", "phone", "crm_id", "comment", "_extra"),
    "bronze.crm": ("crm_id", "full_name", "email", "phone", "birth_date", "_extra"),
    "bronze.orders": ("crm_id", "email", "_extra"),
    "bronze.actions": ("crm_id", "email", "phone", "_extra"),
    "bronze.email": ("message_id", "in_reply_to", "references", "from_address", "from_name", "to_addresses",
                     "subject", "body_text", "recipient_addresses", "_extra"),
    "bronze.quarantine": ("raw", "reason"),  # a reason quotes the value it refused
    "silver.identity_map": ("identifier",),
    "silver.identity_exceptions": ("identifier",),
    "silver.record_keys": ("record_id",),  # a CRM record's id is the customer's CRM id
    "silver.crm": ("crm_id", "full_name", "email", "phone", "birth_date"),
    "silver.customers": ("crm_ids", "emails", "phones", "display_name", "email", "phone", "birth_date"),
    # a WhatsApp interaction's id holds its message id, which holds the customer's number
    "silver.interactions": ("interaction_id", "customer_text", "agent_text", "customer_name"),
    "silver.survey_responses": ("interaction_id", "comment"),
    "gold.customer_profiles": ("crm_ids", "display_name", "primary_email", "primary_phone", "birth_date"),
    "gold.interaction_tones": ("interaction_id", "text_sha256"),  # a digest of the text, which may name them
}


# the column types Delta keeps statistics of (it refuses others in delta.dataSkippingStatsColumns)
_STATS_TYPES = ("byte", "short", "integer", "long", "float", "double", "decimal", "date", "timestamp", "timestamp_ntz", "string")


def stats_properties(layer: str, table: str, schema: StructType, partition_by: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The Delta properties that keep a table's personal columns out of its log's file statistics."""
    personal = set(PERSONAL_COLUMNS.get(f"{layer}.{table}", ()))
    if not personal & set(schema.fieldNames()):
        return {}
    kept = [f.name for f in schema.fields if f.name not in personal and f.name not in partition_by
            and f.dataType.typeName() in _STATS_TYPES]
    if not kept:
        return {"delta.dataSkippingNumIndexedCols": "0"}
    return {"delta.dataSkippingStatsColumns": ",".join(kept)}


# ---------------------------------------------------------------- silver
INTERACTIONS = StructType([
    _s("interaction_id", StringType(), False),
    _s("channel", StringType(), False),
    _s("started_at", TimestampType(), False),
    _s("ended_at", TimestampType()),
    _s("customer_key", StringType()),
    _s("topic", StringType()),
    _s("language", StringType()),
    _s("resolved", BooleanType()),
    _s("handed_off", BooleanType()),
    _s("bot_only", BooleanType()),
    _s("first_response_seconds", DoubleType()),
    _s("wait_seconds", DoubleType()),
    _s("handle_seconds", DoubleType()),
    _s("agent_id", StringType()),
    _s("message_count", IntegerType()),
    _s("customer_text", StringType()),
    _s("agent_text", StringType()),
    # beyond the contract, needed by the KPIs
    _s("handoff_at", TimestampType()),
    _s("has_bot", BooleanType()),
    _s("disposition", StringType()),
    _s("talk_seconds", DoubleType()),
    _s("hold_seconds", DoubleType()),
    _s("queue", StringType()),
    _s("customer_name", StringType()),  # the name the customer gave on that channel (profiles' display_name)
    _s("_arrival_date", DateType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

SURVEY_RESPONSES = StructType([
    _s("response_id", StringType(), False),
    _s("submitted_at", TimestampType(), False),
    _s("survey", StringType(), False),
    _s("score", IntegerType(), False),
    _s("interaction_id", StringType()),
    _s("customer_key", StringType()),
    _s("comment", StringType()),  # the respondent's free text, as given
    _s("_arrival_date", DateType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

# The CRM's history: one row per crm_id and updated_at (a re-delivered row once: the latest delivery),
# crm_id normalised as the identity map holds it; customer_key is the key the crm_id resolves to now.
CRM = StructType([
    _s("crm_id", StringType(), False),
    _s("updated_at", TimestampType(), False),
    *[f for f in BRONZE_CRM.fields if f.name not in {"crm_id", "updated_at", *(lineage.name for lineage in LINEAGE_FIELDS)}],
    _s("customer_key", StringType()),
    _s("_arrival_date", DateType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

# One row per customer key: its contact points and the values that survive from its sources
# (pipelines/customers.py, conf `survivorship`); gold profiles take their CRM fields and contact points here.
CUSTOMERS = StructType([
    _s("customer_key", StringType(), False),
    _s("crm_ids", ArrayType(StringType(), False), False),
    _s("emails", ArrayType(StringType(), False), False),
    _s("phones", ArrayType(StringType(), False), False),
    _s("display_name", StringType()),
    _s("email", StringType()),
    _s("phone", StringType()),
    _s("birth_date", DateType()),
    _s("gender", StringType()),
    _s("city", StringType()),
    _s("state", StringType()),
    _s("country", StringType()),
    _s("income_band", StringType()),
    _s("profession", StringType()),
    _s("marketing_consent", BooleanType()),
    _s("consent_updated_at", TimestampType()),
    _s("first_seen_at", TimestampType(), False),
    _s("last_seen_at", TimestampType(), False),
    _s("value_sources", MapType(StringType(), StringType()), False),  # field -> source of its value
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

# Which customer each source record resolved to (identity resolution's record_keys, as a table).
RECORD_KEYS = StructType([
    _s("source", StringType(), False),
    _s("record_id", StringType(), False),
    _s("customer_key", StringType()),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

# ops/silver_state, one row: the settings silver's record tables were last built whole with
# (jobs/run.py `_silver_settings`), or why the next silver step must rebuild them whole (`rebuild_reason`:
# an arrival date ingested again, an erasure) — jobs/bookkeeping.py
SILVER_STATE = StructType([
    _s("settings", StringType()),
    _s("rebuild_reason", StringType()),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

# One row per (record, identifier) seen: the edges of the identity graph.
IDENTIFIER_OBSERVATIONS = StructType([
    _s("source", StringType(), False),
    _s("record_id", StringType(), False),
    _s("identifier_type", StringType(), False),  # crm_id, email, phone, handle, whatsapp_user_id, device_id; email_thread and interaction group records, never link
    _s("identifier", StringType(), False),       # normalised
    _s("seen_at", TimestampType(), False),
])

IDENTITY_MAP = StructType([
    _s("identifier_type", StringType(), False),
    _s("identifier", StringType(), False),
    _s("customer_key", StringType(), False),
    _s("first_seen_at", TimestampType(), False),
    _s("last_seen_at", TimestampType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

IDENTITY_MERGES = StructType([
    _s("retired_key", StringType(), False),
    _s("surviving_key", StringType(), False),
    _s("kind", StringType(), False),  # merge | split (pipelines.identity.resolution.key_changes)
    _s("merged_at", TimestampType(), False),
    _s("run_id", StringType(), False),
])

# Orders and outbound actions tied to their customer: what the models train on.
ORDERS = StructType([
    _s("order_id", StringType(), False),
    _s("ordered_at", TimestampType(), False),
    _s("customer_key", StringType()),
    _s("product_id", StringType(), False),
    _s("category", StringType()),  # from the latest products snapshot; null for an unknown product
    _s("quantity", IntegerType()),
    _s("unit_price", DoubleType()),
    _s("amount", DoubleType()),
    _s("channel", StringType()),
    _s("_arrival_date", DateType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

ACTIONS = StructType([
    _s("action_id", StringType(), False),
    _s("sent_at", TimestampType(), False),
    _s("action", StringType(), False),
    _s("channel", StringType()),
    _s("customer_key", StringType()),
    _s("propensity", DoubleType()),
    _s("responded", BooleanType()),
    _s("converted", BooleanType()),
    _s("revenue", DoubleType()),
    _s("_arrival_date", DateType(), False),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])

PRODUCTS = StructType([
    _s("product_id", StringType(), False),
    _s("name", StringType()),
    _s("category", StringType()),
    _s("price", DoubleType()),
    _s("active", BooleanType()),
    _s("run_id", StringType(), False),
    _s("_written_at", TimestampType(), False),
])
