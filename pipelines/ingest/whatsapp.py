"""WhatsApp Business Cloud API webhook payloads, one JSON object per line (CONTRACTS §2).

One bronze row per payload line. The messages of every ``entry[].changes[].value``
(``messages[]``, received from customers) and the echoes (``message_echoes[]``,
field ``smb_message_echoes``: replies the business sent from the WhatsApp Business
app) are flattened into ``messages``, one struct per message, ``direction``
telling them apart. Every message type is kept; what silver needs is typed
(``text`` holds ``text.body`` only; the caption of a media message or the note of
an order is in ``caption``; the button, list, Flow or template quick-reply tapped in
``reply_kind``/``reply_id``/``reply_title``; location, order items, reaction, reply-to
id, group id). Each message carries its value's business line
(``phone_number_id``, ``display_phone_number``) and its customer: ``wa_id`` (``from``
of a received message, ``to`` of an echo; absent for users who hide their number
behind a username) and ``user_id`` (the business-scoped user id: ``from_user_id`` /
``to_user_id``, else the contact's ``user_id``). A message needs ``from`` or
``from_user_id`` (an echo ``to`` or ``to_user_id``).

Status-only payloads (delivery/read receipts) are accepted with kind "statuses"
and an empty ``messages`` array; downstream ignores them. A change that carries no
messages, statuses nor echoes (``message_template_status_update``,
``account_update``, ``phone_number_quality_update``, ``user_preferences``...) is
accepted with kind "account_update"; ``change_fields`` names the changes, its
content is in ``_extra``. Only a payload whose changes are all ``messages`` /
``smb_message_echoes`` and carry none of the three is quarantined.

``_extra`` keeps what the flattening leaves out: top-level keys other than
``object``/``entry``; entry keys other than ``id``/``changes`` (``entry[<i>].time``, the
instant of an account-level change); value keys other than the ones flattened
(``values[<j>].errors``, the content of account-level changes; ``<j>`` indexes
every ``entry[].changes[].value`` in order); contact keys other than ``wa_id`` and
``profile.name`` (``values[<j>].contacts[<k>].user_id``, ``.profile.username``...);
message fields other than from/id/timestamp/type/text/group_id/from_user_id (an
echo's: to/id/timestamp/type/text/group_id/to_user_id), whole, even when bronze types
part of them (``messages[<i>].image``, ``.context``, ``.errors``,
``message_echoes[<i>].from``...; ``<i>`` indexes the flattened received messages,
respectively echoes); and the status objects as one JSON array under ``statuses``.
The envelope constants (entry id, ``messaging_product``) are not kept.
"""
from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from atende.pipelines.ingest.common import (
    EXTRA_ENTRIES,
    ClassifierPlan,
    FieldRule,
    IngestRules,
    RunLineage,
    apply_plan,
    blank_to_null,
    classifier_plan,
    empty_entries,
    extra_map,
    field_problems,
    joined_reasons,
    json_object_problem,
    nested_map,
    number_from_text,
    parsed_value,
    per_session,
    record_lines,
    shown,
    unknown_entries,
    whole_number_from_text,
)

SOURCE = "whatsapp"
PAYLOAD_OBJECT = "whatsapp_business_account"
TOP_LEVEL_KEYS = ("object", "entry")
ENTRY_KEYS = ("id", "changes")
VALUE_KEYS = ("messaging_product", "metadata", "contacts", "messages", "statuses", "message_echoes")
CONTACT_KEYS = ("profile", "wa_id")
PROFILE_KEYS = ("name",)
MESSAGE_KEYS = ("from", "id", "timestamp", "type", "text", "group_id", "from_user_id")
ECHO_KEYS = ("to", "id", "timestamp", "type", "text", "group_id", "to_user_id")
# changes that exist to carry messages: one of them with nothing in it is a broken payload
MESSAGE_CHANGE_FIELDS = ("messages", "smb_message_echoes")
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")


def _s(name: str, dtype) -> StructField:
    return StructField(name, dtype, True)


# Values, contacts and messages stay key → JSON text maps so unknown fields can be
# kept; statuses stay JSON text: they are counted and kept, not interpreted.
_MAP = MapType(StringType(), StringType())
_MAPS = ArrayType(_MAP)
_STATUSES = ArrayType(StringType())
_CHANGES = ArrayType(StructType([_s("field", StringType()), _s("value", _MAP)]))
WEBHOOK_PAYLOAD = StructType([_s("object", StringType()), _s("entry", _MAPS)])
_METADATA = "display_phone_number string, phone_number_id string"
# Numbers are read as text (a JSON number or a quoted one) and typed afterwards.
_MEDIA = "id string, mime_type string, caption string, filename string"
_LOCATION = "latitude string, longitude string, name string, address string"
_INTERACTIVE = (
    "type string, button_reply struct<id: string, title: string>, list_reply struct<id: string, title: string>,"
    " nfm_reply struct<name: string, body: string>"
)
_BUTTON = "payload string, text string"
_ORDER = (
    "text string, product_items array<struct<product_retailer_id: string, quantity: string,"
    " item_price: string, currency: string>>"
)
_REACTION = "message_id string, emoji string"
_CONTEXT = "id string"

MESSAGE_ID_RULE = FieldRule("id", StringType(), required=True)
MESSAGE_FROM_RULE = FieldRule("from", StringType(), required=True)
MESSAGE_TIME_RULE = FieldRule("timestamp", TimestampType(), required=True, unix_seconds=True)


def _changes(payload: Column) -> Column:
    """Every ``entry[].changes[]`` of the payload that has a value, in order."""
    # flatten() is null when any part is: absent arrays become empty ones first.
    changes = F.flatten(F.transform(
        F.coalesce(payload["entry"], F.array().cast(_MAPS)),
        lambda e: F.coalesce(F.from_json(e["changes"], _CHANGES), F.array().cast(_CHANGES)),
    ))
    return F.filter(changes, lambda c: c["value"].isNotNull())


def _value(c: Column, j: Column) -> Column:
    """One change's value, its parts parsed once: contacts, messages, echoes, statuses."""
    v = c["value"]
    contacts = F.coalesce(F.from_json(v["contacts"], _MAPS), F.array().cast(_MAPS))
    return F.struct(
        c["field"].alias("field"),
        v.alias("raw"),
        F.concat(F.lit("values["), j.cast("string"), F.lit("]")).alias("prefix"),
        F.from_json(v["metadata"], _METADATA).alias("metadata"),
        F.transform(contacts, lambda k: F.struct(k.alias("raw"), nested_map(k["profile"]).alias("profile")))
        .alias("contacts"),
        F.coalesce(F.from_json(v["messages"], _MAPS), F.array().cast(_MAPS)).alias("messages"),
        F.coalesce(F.from_json(v["message_echoes"], _MAPS), F.array().cast(_MAPS)).alias("echoes"),
        F.coalesce(F.from_json(v["statuses"], _STATUSES), F.array().cast(_STATUSES)).alias("statuses"),
    )


def _flat(values: Column, part: str, echo: bool) -> Column:
    """The messages (or echoes) of all values, each with the contacts and business line of its value."""
    return F.flatten(F.transform(values, lambda v: F.transform(
        v[part],
        lambda m: F.struct(
            m.alias("message"), v["contacts"].alias("contacts"), v["metadata"].alias("metadata"),
            F.lit(echo).alias("echo"),
        ),
    )))


def _indexed(flat: Column, name: str) -> Column:
    """Each flattened message with its label in reasons and ``_extra`` keys: ``<name>[<i>]``."""
    return F.transform(flat, lambda m, i: F.struct(
        m["message"].alias("message"), m["contacts"].alias("contacts"), m["metadata"].alias("metadata"),
        m["echo"].alias("echo"), F.concat(F.lit(f"{name}["), i.cast("string"), F.lit("]")).alias("prefix"),
    ))


def _statuses(values: Column) -> Column:
    return F.flatten(F.transform(values, lambda v: v["statuses"]))


def _message_text(m: Column) -> Column:
    """One flattened message's fields as text (staged before typing)."""
    msg, echo = m["message"], m["echo"]
    kind = blank_to_null(msg["type"])
    # the customer: the sender of a received message, the recipient of an echo
    party = blank_to_null(F.when(echo, msg["to"]).otherwise(msg["from"]))
    party_user = blank_to_null(F.when(echo, msg["to_user_id"]).otherwise(msg["from_user_id"]))
    return F.struct(
        msg.isNull().alias("not_object"),
        m["prefix"].alias("prefix"),
        echo.alias("echo"),
        blank_to_null(msg["id"]).alias("id"),
        party.alias("party"),
        party_user.alias("party_user"),
        F.coalesce(party, party_user).alias("from"),  # who the message is about, whichever id is given
        blank_to_null(msg["timestamp"]).alias("timestamp"),
        kind.alias("type"),
        F.from_json(msg["text"], "body string")["body"].alias("body"),
        blank_to_null(msg["group_id"]).alias("group_id"),
        m["contacts"].alias("contacts"),
        m["metadata"].alias("metadata"),
        F.from_json(F.when(kind.isin(*MEDIA_TYPES), F.try_element_at(msg, kind)), _MEDIA).alias("media"),
        F.from_json(msg["location"], _LOCATION).alias("location"),
        F.from_json(msg["interactive"], _INTERACTIVE).alias("interactive"),
        F.from_json(msg["button"], _BUTTON).alias("button"),
        F.from_json(msg["order"], _ORDER).alias("order"),
        F.from_json(msg["reaction"], _REACTION).alias("reaction"),
        F.from_json(msg["context"], _CONTEXT).alias("context"),
    )


def _message_value(t: Column, rules: IngestRules) -> Column:
    """WHATSAPP_MESSAGE_STRUCT of one staged message text."""
    contacts = F.filter(t["contacts"], lambda c: c["raw"].isNotNull())
    named = F.filter(
        contacts, lambda c: (c["raw"]["wa_id"] == t["party"]) | (c["raw"]["user_id"] == t["party_user"])
    )
    # Meta names the customer in contacts[]; when its wa_id is written differently
    # from `from` (old numbers without the ninth digit), the single contact is still them.
    contact = F.coalesce(F.get(named, 0), F.when(F.size(contacts) == 1, F.get(contacts, 0)))
    interactive, button, order, media = t["interactive"], t["button"], t["order"], t["media"]
    location = t["location"]
    inbound = ~t["echo"]
    # an echo's interactive object is the message the business sent, not a reply
    reply_kind = F.when(inbound, F.when(button.isNotNull(), F.lit("button")).otherwise(blank_to_null(interactive["type"])))
    reply_id = F.coalesce(
        button["payload"], interactive["button_reply"]["id"], interactive["list_reply"]["id"], interactive["nfm_reply"]["name"]
    )
    reply_title = F.coalesce(
        button["text"], interactive["button_reply"]["title"], interactive["list_reply"]["title"],
        interactive["nfm_reply"]["body"],
    )
    items = F.transform(order["product_items"], lambda i: F.struct(
        i["product_retailer_id"].alias("product_retailer_id"),
        whole_number_from_text(i["quantity"]).alias("quantity"),
        number_from_text(i["item_price"]).alias("item_price"),
        i["currency"].alias("currency"),
    ))
    return F.struct(
        t["id"].alias("message_id"),
        t["party"].alias("wa_id"),
        contact["profile"]["name"].alias("profile_name"),
        parsed_value(t["timestamp"], MESSAGE_TIME_RULE, rules).alias("sent_at"),
        t["type"].alias("type"),
        t["body"].alias("text"),
        t["metadata"]["phone_number_id"].alias("phone_number_id"),
        t["metadata"]["display_phone_number"].alias("display_phone_number"),
        F.when(t["echo"], F.lit("echo")).otherwise(F.lit("inbound")).alias("direction"),
        F.coalesce(t["party_user"], blank_to_null(contact["raw"]["user_id"])).alias("user_id"),
        blank_to_null(contact["profile"]["username"]).alias("username"),
        t["group_id"].alias("group_id"),
        blank_to_null(t["context"]["id"]).alias("context_message_id"),
        F.coalesce(blank_to_null(media["caption"]), blank_to_null(order["text"])).alias("caption"),
        media["id"].alias("media_id"),
        media["mime_type"].alias("mime_type"),
        media["filename"].alias("filename"),
        number_from_text(location["latitude"]).alias("latitude"),
        number_from_text(location["longitude"]).alias("longitude"),
        blank_to_null(location["name"]).alias("location_name"),
        blank_to_null(location["address"]).alias("location_address"),
        reply_kind.alias("reply_kind"),
        F.when(inbound, reply_id).alias("reply_id"),
        F.when(inbound, blank_to_null(reply_title)).alias("reply_title"),
        items.alias("order_items"),
        t["reaction"]["message_id"].alias("reaction_message_id"),
        t["reaction"]["emoji"].alias("reaction_emoji"),
    )


def _message_problems(messages: Column, arrival: Column, rules: IngestRules) -> Column:
    """Per flattened message, what makes it unusable (empty string when nothing): not an object, no sender
    (`from`, or `from_user_id` for a username; an echo: its recipient), a bad id or timestamp."""
    def problems_of(t: Column, i: Column) -> Column:
        v = F.get(messages, i)
        problems = [F.when(t["not_object"], F.concat(t["prefix"], F.lit(" is not a JSON object")))]
        # a received message needs a sender (`from`, or `from_user_id` for a username), an echo a recipient
        sender_label = F.concat(t["prefix"], F.when(t["echo"], F.lit(".to")).otherwise(F.lit(".from")))
        problems += field_problems(t["from"], t["from"], MESSAGE_FROM_RULE, sender_label, arrival, rules)
        for rule, value in ((MESSAGE_ID_RULE, v["message_id"]), (MESSAGE_TIME_RULE, v["sent_at"])):
            label = F.concat(t["prefix"], F.lit(f".{rule.name}"))
            problems += field_problems(t[rule.name], value, rule, label, arrival, rules)
        return F.concat_ws("; ", *problems)

    return F.filter(F.transform(F.col("_message_texts"), problems_of), lambda p: p != "")


def _payload_extra(fields: Column, values: Column, statuses: Column, has_statuses: Column) -> tuple[Column, Column]:
    """(`_extra`, its problem): every key of the payload, its entries, change values, contacts and messages
    that the contract does not name, kept as given; statuses, which bronze does not model, whole."""
    message_extra = F.flatten(F.transform(
        F.col("_flat"),
        lambda m: F.when(m["echo"], unknown_entries(m["message"], ECHO_KEYS, F.concat(m["prefix"], F.lit("."))))
        .otherwise(unknown_entries(m["message"], MESSAGE_KEYS, F.concat(m["prefix"], F.lit(".")))),
    ))
    value_extra = F.flatten(F.transform(
        values, lambda v: unknown_entries(v["raw"], VALUE_KEYS, F.concat(v["prefix"], F.lit(".")))
    ))
    contact_extra = F.flatten(F.flatten(F.transform(values, lambda v: F.transform(
        v["contacts"],
        lambda c, k: F.concat(
            unknown_entries(c["raw"], CONTACT_KEYS, F.concat(v["prefix"], F.lit(".contacts["), k.cast("string"), F.lit("]."))),
            unknown_entries(
                c["profile"], PROFILE_KEYS, F.concat(v["prefix"], F.lit(".contacts["), k.cast("string"), F.lit("].profile."))
            ),
        ),
    ))))
    status_extra = F.when(
        has_statuses,
        F.array(F.struct(
            F.lit("statuses").alias("key"),
            F.concat(F.lit("["), F.array_join(statuses, ","), F.lit("]")).alias("value"),
        )),
    ).otherwise(empty_entries())
    entry_extra = F.flatten(F.transform(
        F.coalesce(F.col("_payload")["entry"], F.array().cast(_MAPS)),
        lambda e, i: unknown_entries(e, ENTRY_KEYS, F.concat(F.lit("entry["), i.cast("string"), F.lit("]."))),
    ))
    return extra_map(
        unknown_entries(fields, TOP_LEVEL_KEYS),
        F.coalesce(entry_extra, empty_entries()),
        F.coalesce(value_extra, empty_entries()),
        F.coalesce(contact_extra, empty_entries()),
        F.coalesce(message_extra, empty_entries()),
        status_extra.cast(EXTRA_ENTRIES),
    )


@per_session
def whatsapp_plan(rules: IngestRules) -> ClassifierPlan:
    gated = F.when(F.col("_problem").isNull(), F.col("_text"))  # unusable lines are not parsed
    stages = [
        (nested_map(gated).alias("_fields"), F.from_json(gated, WEBHOOK_PAYLOAD).alias("_payload")),
        (_changes(F.col("_payload")).alias("_changes"),),
        (F.transform(F.col("_changes"), _value).alias("_values"),),
        (
            _flat(F.col("_values"), "messages", echo=False).alias("_received"),
            _flat(F.col("_values"), "echoes", echo=True).alias("_echoes"),
            _statuses(F.col("_values")).alias("_statuses"),
        ),
        (F.concat(_indexed(F.col("_received"), "messages"), _indexed(F.col("_echoes"), "message_echoes")).alias("_flat"),),
        (F.transform(F.col("_flat"), _message_text).alias("_message_texts"),),
        (F.transform(F.col("_message_texts"), lambda t: _message_value(t, rules)).alias("_message_values"),),
    ]
    fields, arrival, values = F.col("_fields"), F.col("_arrival_date"), F.col("_values")
    statuses, messages = F.col("_statuses"), F.col("_message_values")
    has_messages, has_echoes = F.size(F.col("_received")) > 0, F.size(F.col("_echoes")) > 0
    has_statuses = F.size(statuses) > 0
    kinds = has_messages.cast("int") + has_echoes.cast("int") + has_statuses.cast("int")
    # an account-level change (template, quality, account...) carries none of the three by design
    only_message_changes = F.forall(
        values, lambda v: F.coalesce(v["field"], F.lit("messages")).isin(*MESSAGE_CHANGE_FIELDS)
    )
    object_name = fields["object"]
    record_problem = F.coalesce(
        F.col("_problem"),
        json_object_problem(F.col("_text"), fields),
        F.when(
            F.coalesce(object_name, F.lit("")) != PAYLOAD_OBJECT,
            F.concat(F.lit("not a WhatsApp Business webhook payload: object is "), shown(object_name)),
        ),
        F.when(F.size(values) == 0, F.lit("WhatsApp payload has no entry[].changes[].value")),
        F.when((kinds == 0) & only_message_changes, F.lit("WhatsApp payload carries neither messages nor statuses")),
    )
    per_message = _message_problems(messages, arrival, rules)
    extra, extra_problem = _payload_extra(fields, values, statuses, has_statuses)
    problems = [F.when(F.size(per_message) > 0, F.array_join(per_message, "; ")), extra_problem]
    reason = F.coalesce(record_problem, joined_reasons(problems))
    out = {
        "payload_kind": F.when(kinds > 1, F.lit("mixed"))
        .when(has_messages, F.lit("messages"))
        .when(has_echoes, F.lit("echoes"))
        .when(has_statuses, F.lit("statuses"))
        .otherwise(F.lit("account_update")),
        "messages": messages,
        "status_count": F.size(statuses),
        "change_fields": F.array_distinct(
            F.filter(F.transform(F.col("_changes"), lambda c: c["field"]), lambda f: f.isNotNull())
        ),
    }
    return classifier_plan(SOURCE, stages, out, extra, reason, F.col("_text"), rules)


def classify_whatsapp(rules: IngestRules, lineage: RunLineage) -> Callable[[DataFrame], DataFrame]:
    """Raw lines (common.RAW_LINES) → one classified row per non-blank payload line."""

    def transform(lines: DataFrame) -> DataFrame:
        return apply_plan(record_lines(lines, rules), whatsapp_plan(rules), lineage)

    return transform
