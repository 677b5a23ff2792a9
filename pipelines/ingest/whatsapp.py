"""WhatsApp Business Cloud API webhook payloads, one JSON object per line (CONTRACTS §2).

One bronze row per payload line. The messages of every ``entry[].changes[].value``
are flattened into ``messages`` (all types; ``text`` holds ``text.body`` for
text messages and is null for the others, so silver keeps ``type = 'text'``).
Status-only payloads (delivery/read receipts) are accepted with kind
"statuses" and an empty ``messages`` array; downstream ignores them.

``_extra`` keeps what the flattening leaves out: top-level keys other than
``object``/``entry``, message fields other than from/id/timestamp/type/text
(``messages[<i>].image``, ``.context``, ...; ``<i>`` indexes the flattened
array), and the status objects as one JSON array under ``statuses``. The
envelope constants (entry id, ``messaging_product``, ``display_phone_number``,
``field``) are not kept.
"""
from __future__ import annotations

from typing import Callable

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

from pipelines.ingest.common import (
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
    parsed_value,
    per_session,
    record_lines,
    shown,
    unknown_entries,
)

SOURCE = "whatsapp"
PAYLOAD_OBJECT = "whatsapp_business_account"
TOP_LEVEL_KEYS = ("object", "entry")
MESSAGE_KEYS = ("from", "id", "timestamp", "type", "text")



def _s(name: str, dtype) -> StructField:
    return StructField(name, dtype, True)


# Messages stay key → JSON text maps so unknown message fields can be kept;
# statuses stay JSON text: they are counted and kept, not interpreted.
_MESSAGES = ArrayType(MapType(StringType(), StringType()))
_STATUSES = ArrayType(StringType())
_CHANGE_VALUE = StructType([
    _s("messaging_product", StringType()),
    _s("metadata", StructType([_s("display_phone_number", StringType()), _s("phone_number_id", StringType())])),
    _s("contacts", ArrayType(StructType([
        _s("profile", StructType([_s("name", StringType())])),
        _s("wa_id", StringType()),
    ]))),
    _s("messages", _MESSAGES),
    _s("statuses", _STATUSES),
])
_CHANGES = ArrayType(StructType([_s("field", StringType()), _s("value", _CHANGE_VALUE)]))
_ENTRIES = ArrayType(StructType([_s("id", StringType()), _s("changes", _CHANGES)]))
WEBHOOK_PAYLOAD = StructType([_s("object", StringType()), _s("entry", _ENTRIES)])

MESSAGE_ID_RULE = FieldRule("id", StringType(), required=True)
MESSAGE_FROM_RULE = FieldRule("from", StringType(), required=True)
MESSAGE_TIME_RULE = FieldRule("timestamp", TimestampType(), required=True, unix_seconds=True)


def _values(payload: Column) -> Column:
    """Every ``entry[].changes[].value`` of the payload, in order."""
    # flatten() is null when any part is: absent arrays become empty ones first.
    changes = F.flatten(F.transform(
        F.coalesce(payload["entry"], F.array().cast(_ENTRIES)),
        lambda e: F.coalesce(e["changes"], F.array().cast(_CHANGES)),
    ))
    return F.filter(F.transform(changes, lambda c: c["value"]), lambda v: v.isNotNull())


def _flat_messages(values: Column) -> Column:
    """Messages of all values, each with the contacts and business line of its value."""
    return F.flatten(F.transform(values, lambda v: F.transform(
        F.coalesce(v["messages"], F.array().cast(_MESSAGES)),
        lambda m: F.struct(
            m.alias("message"), v["contacts"].alias("contacts"), v["metadata"]["phone_number_id"].alias("phone_number_id")
        ),
    )))


def _statuses(values: Column) -> Column:
    return F.flatten(F.transform(values, lambda v: F.coalesce(v["statuses"], F.array().cast(_STATUSES))))


def _index_prefix(i: Column) -> Column:
    return F.concat(F.lit("messages["), i.cast("string"), F.lit("]"))


def _message_text(m: Column) -> Column:
    """One flattened message's fields as text (staged before typing)."""
    msg = m["message"]
    return F.struct(
        msg.isNull().alias("not_object"),
        blank_to_null(msg["id"]).alias("id"),
        blank_to_null(msg["from"]).alias("from"),
        blank_to_null(msg["timestamp"]).alias("timestamp"),
        blank_to_null(msg["type"]).alias("type"),
        F.from_json(msg["text"], "body string")["body"].alias("body"),
        m["contacts"].alias("contacts"),
        m["phone_number_id"].alias("phone_number_id"),
    )


def _message_value(t: Column, rules: IngestRules) -> Column:
    """WHATSAPP_MESSAGE_STRUCT of one staged message text."""
    named = F.filter(t["contacts"], lambda c: c["wa_id"] == t["from"])
    # Meta names the sender in contacts[]; when its wa_id is written differently
    # from `from` (old numbers without the ninth digit), the single contact is still the sender.
    contact = F.coalesce(F.get(named, 0), F.when(F.size(t["contacts"]) == 1, F.get(t["contacts"], 0)))
    return F.struct(
        t["id"].alias("message_id"),
        t["from"].alias("wa_id"),
        contact["profile"]["name"].alias("profile_name"),
        parsed_value(t["timestamp"], MESSAGE_TIME_RULE, rules).alias("sent_at"),
        t["type"].alias("type"),
        t["body"].alias("text"),
        t["phone_number_id"].alias("phone_number_id"),
    )


@per_session
def whatsapp_plan(rules: IngestRules) -> ClassifierPlan:
    gated = F.when(F.col("_problem").isNull(), F.col("_text"))  # unusable lines are not parsed
    stages = [
        (nested_map(gated).alias("_fields"), F.from_json(gated, WEBHOOK_PAYLOAD).alias("_payload")),
        (_values(F.col("_payload")).alias("_values"),),
        (_flat_messages(F.col("_values")).alias("_flat"), _statuses(F.col("_values")).alias("_statuses")),
        (F.transform(F.col("_flat"), _message_text).alias("_message_texts"),),
        (F.transform(F.col("_message_texts"), lambda t: _message_value(t, rules)).alias("_message_values"),),
    ]
    fields, arrival = F.col("_fields"), F.col("_arrival_date")
    statuses, values = F.col("_statuses"), F.col("_message_values")
    has_messages, has_statuses = F.size(F.col("_flat")) > 0, F.size(statuses) > 0
    object_name = fields["object"]
    record_problem = F.coalesce(
        F.col("_problem"),
        json_object_problem(F.col("_text"), fields),
        F.when(
            F.coalesce(object_name, F.lit("")) != PAYLOAD_OBJECT,
            F.concat(F.lit("not a WhatsApp Business webhook payload: object is "), shown(object_name)),
        ),
        F.when(F.size(F.col("_values")) == 0, F.lit("WhatsApp payload has no entry[].changes[].value")),
        F.when(~has_messages & ~has_statuses, F.lit("WhatsApp payload carries neither messages nor statuses")),
    )

    def problems_of(t: Column, i: Column) -> Column:
        v = F.get(values, i)
        problems = [F.when(t["not_object"], F.concat(_index_prefix(i), F.lit(" is not a JSON object")))]
        for rule, value in ((MESSAGE_ID_RULE, v["message_id"]), (MESSAGE_FROM_RULE, v["wa_id"]),
                            (MESSAGE_TIME_RULE, v["sent_at"])):
            label = F.concat(_index_prefix(i), F.lit(f".{rule.name}"))
            problems += field_problems(t[rule.name], value, rule, label, arrival, rules)
        return F.concat_ws("; ", *problems)

    per_message = F.filter(F.transform(F.col("_message_texts"), problems_of), lambda p: p != "")
    message_extra = F.flatten(F.transform(
        F.col("_flat"),
        lambda m, i: unknown_entries(m["message"], MESSAGE_KEYS, F.concat(_index_prefix(i), F.lit("."))),
    ))
    status_extra = F.when(
        has_statuses,
        F.array(F.struct(
            F.lit("statuses").alias("key"),
            F.concat(F.lit("["), F.array_join(statuses, ","), F.lit("]")).alias("value"),
        )),
    ).otherwise(empty_entries())
    extra, extra_problem = extra_map(
        unknown_entries(fields, TOP_LEVEL_KEYS),
        F.coalesce(message_extra, empty_entries()),
        status_extra.cast(EXTRA_ENTRIES),
    )
    problems = [F.when(F.size(per_message) > 0, F.array_join(per_message, "; ")), extra_problem]
    reason = F.coalesce(record_problem, joined_reasons(problems))
    out = {
        "payload_kind": F.when(has_messages & has_statuses, F.lit("mixed"))
        .when(has_messages, F.lit("messages"))
        .when(has_statuses, F.lit("statuses")),
        "messages": values,
        "status_count": F.size(statuses),
    }
    return classifier_plan(SOURCE, stages, out, extra, reason, F.col("_text"), rules)


def classify_whatsapp(rules: IngestRules, lineage: RunLineage) -> Callable[[DataFrame], DataFrame]:
    """Raw lines (common.RAW_LINES) → one classified row per non-blank payload line."""

    def transform(lines: DataFrame) -> DataFrame:
        return apply_plan(record_lines(lines, rules), whatsapp_plan(rules), lineage)

    return transform
