"""Digital conversations: JSON Lines, one conversation per line (CONTRACTS §2).

Every line is first read as a map of field → JSON text, so a wrong type shows
up as a named field that does not parse (not as a silently nulled record), and
fields the contract does not know land in ``_extra``: top-level ones under
their own name, unknown customer fields as ``customer.<name>``, unknown message
fields as ``messages[<i>].<name>`` (nested values as JSON text).

Checks: conversation_id, channel and started_at are required; channel and
messages[].author must be known values (kept lower-cased); every timestamp
(started_at, ended_at, handoff_at, messages[].sent_at) must parse and lie
between settings.ingest.earliest_valid_date and the end of the arrival day +
future_tolerance_hours. ISO 8601 with an offset is an instant; without one, a
wall-clock time in the business time zone. Booleans as in the CSV sources.
A message with no ``sent_at`` or ``author`` is kept (the conversation still
counts); one whose time or author is present but wrong quarantines the
conversation.

Limitation: from_json reads the first JSON value of a line; two objects on one
line ("{…} {…}") are taken as the first.
"""
from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StringType, TimestampType

from atende.pipelines.ingest.common import (
    ClassifierPlan,
    FieldRule,
    IngestRules,
    RunLineage,
    apply_plan,
    blank_to_null,
    classifier_plan,
    contract_columns,
    contract_rules,
    duplicate_keys_problem,
    empty_entries,
    extra_map,
    field_problems,
    joined_reasons,
    json_object_problem,
    nested_map,
    parsed_value,
    per_session,
    record_lines,
    typed_field_problems,
    typed_field_stages,
    unknown_entries,
    value_column,
)
from atende.pipelines.schemas import AUTHORS, CUSTOMER_STRUCT, DIGITAL_CHANNELS, MESSAGE_STRUCT

SOURCE = "conversations"
TOP_LEVEL_KEYS = tuple(f.name for f in contract_columns(SOURCE))
CUSTOMER_KEYS = tuple(CUSTOMER_STRUCT.fieldNames())
MESSAGE_KEYS = tuple(MESSAGE_STRUCT.fieldNames())

CONVERSATION_RULES = contract_rules(SOURCE, {"channel": {"allowed": DIGITAL_CHANNELS}})
MESSAGE_RULES = (
    FieldRule("sent_at", TimestampType()),
    FieldRule("author", StringType(), allowed=AUTHORS),
    FieldRule("agent_id", StringType()),
    FieldRule("text", StringType()),
)
_MESSAGE_MAPS = ArrayType(MapType(StringType(), StringType()))


def _index_prefix(i: Column) -> Column:
    return F.concat(F.lit("messages["), i.cast("string"), F.lit("]"))


def _nested_stages(rules: IngestRules) -> list[tuple[Column, ...]]:
    """The customer map, and the messages as maps, as texts, then as typed values."""
    fields = F.col("_fields")
    return [
        (
            nested_map(fields["customer"]).alias("_customer_map"),
            F.from_json(fields["messages"], _MESSAGE_MAPS).alias("_message_maps"),
        ),
        (F.transform(
            F.col("_message_maps"),
            lambda m: F.struct(*[blank_to_null(m[r.name]).alias(r.name) for r in MESSAGE_RULES]),
        ).alias("_message_texts"),),
        (F.transform(
            F.col("_message_texts"),
            lambda t: F.struct(*[parsed_value(t[r.name], r, rules).alias(r.name) for r in MESSAGE_RULES]),
        ).alias("_message_values"),),
    ]


def _customer_problems() -> list[Column]:
    text, as_map = F.col("_fields")["customer"], F.col("_customer_map")
    return [
        F.when(text.isNotNull() & as_map.isNull(), F.lit("customer is not a JSON object")),
        duplicate_keys_problem(as_map, "customer"),
    ]


def _message_problems(arrival: Column, rules: IngestRules) -> list[Column]:
    text, maps = F.col("_fields")["messages"], F.col("_message_maps")
    values = F.col("_message_values")

    def problems_of(t: Column, i: Column) -> Column:
        v = F.get(values, i)
        problems = [F.when(F.get(maps, i).isNull(), F.concat(_index_prefix(i), F.lit(" is not a JSON object")))]
        for rule in MESSAGE_RULES:
            label = F.concat(_index_prefix(i), F.lit(f".{rule.name}"))
            problems += field_problems(t[rule.name], v[rule.name], rule, label, arrival, rules)
        return F.concat_ws("; ", *problems)

    per_message = F.filter(F.transform(F.col("_message_texts"), problems_of), lambda p: p != "")
    repeated_key = F.exists(maps, lambda m: F.size(F.map_keys(m)) != F.size(F.array_distinct(F.map_keys(m))))
    return [
        F.when(text.isNotNull() & maps.isNull(), F.lit("messages is not a JSON array of objects")),
        F.when(F.size(per_message) > 0, F.array_join(per_message, "; ")),
        F.when(repeated_key, F.lit("invalid JSON: duplicate key in a message")),
    ]


@per_session
def conversations_plan(rules: IngestRules) -> ClassifierPlan:
    fields, arrival = F.col("_fields"), F.col("_arrival_date")
    parse = (
        # Lines already known to be unusable are not parsed at all.
        F.when(F.col("_problem").isNull(), nested_map(F.col("_text"))).alias("_fields"),
    )
    texts, typed = typed_field_stages({r.name: fields[r.name] for r in CONVERSATION_RULES}, CONVERSATION_RULES, rules)
    stages = [parse, texts, typed, *_nested_stages(rules)]

    record_problem = F.coalesce(
        F.col("_problem"),
        json_object_problem(F.col("_text"), fields),
        duplicate_keys_problem(fields, "the record"),
    )
    customer_map = F.col("_customer_map")
    extra, extra_problem = extra_map(
        unknown_entries(fields, TOP_LEVEL_KEYS),
        unknown_entries(customer_map, CUSTOMER_KEYS, "customer."),
        F.coalesce(
            F.flatten(F.transform(
                F.col("_message_maps"),
                lambda m, i: unknown_entries(m, MESSAGE_KEYS, F.concat(_index_prefix(i), F.lit("."))),
            )),
            empty_entries(),
        ),
    )
    problems = typed_field_problems(CONVERSATION_RULES, arrival, rules)
    problems += _customer_problems() + _message_problems(arrival, rules) + [extra_problem]
    reason = F.coalesce(record_problem, joined_reasons(problems))

    values = {r.name: F.col(value_column(r.name)) for r in CONVERSATION_RULES}
    values["customer"] = F.when(
        customer_map.isNotNull(),
        F.struct(*[blank_to_null(customer_map[key]).alias(key) for key in CUSTOMER_KEYS]),
    )
    values["messages"] = F.col("_message_values")
    return classifier_plan(SOURCE, stages, values, extra, reason, F.col("_text"), rules)


def classify_conversations(rules: IngestRules, lineage: RunLineage) -> Callable[[DataFrame], DataFrame]:
    """Raw lines (common.RAW_LINES) → one classified row per non-blank line."""

    def transform(lines: DataFrame) -> DataFrame:
        return apply_plan(record_lines(lines, rules), conversations_plan(rules), lineage)

    return transform
