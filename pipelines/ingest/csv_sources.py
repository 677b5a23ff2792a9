"""CSV sources with a header: calls, surveys, crm, orders, products, actions (CONTRACTS §2).

Files are read line by line and each line parsed with ``from_csv``, so every
record keeps its own raw text and is counted exactly once:

* the header is each file's first non-blank line; columns are matched by
  (trimmed, lower-cased) name, so order may differ between files; columns the
  contract does not know go to ``_extra``;
* records = the other non-blank lines; a line whose number of fields differs
  from the header's is quarantined ("wrong number of columns: expected 13, got 9");
* a header that lacks a *required* column (not nullable in BRONZE[source])
  quarantines every row of the file ("header lacks required column call_id");
  a missing optional column is read as null;
* a header that repeats a column name, or has more than 64 columns, quarantines
  every row of the file (which value would be the record's?).

Limitations: a quoted field may hold commas and doubled quotes ("" is one
quote, RFC 4180), not newlines. A record split over lines by such a field is
quarantined piecewise (unclosed quote / wrong number of columns): every piece
is counted as a record, so accepted + quarantined = records still holds. The
delimiter is a comma: a ";"-separated export has one unknown column and is
quarantined whole ("header lacks required columns …"). A file without a header
line has its first data line taken as the header, with the same result.

Typing: values are trimmed, and empty ones are null. Timestamps are ISO 8601;
with an offset or Z they are instants, without one ("2026-03-01 12:00:05")
wall-clock times in the business time zone (settings.kpis.business_timezone).
Booleans: true/false, 1/0, yes/no, sim/não, s/n, y/n (any case). Numbers use a
decimal point ("12,50" is not a number). Enumerated values (disposition, via,
survey) are lower-cased. Beyond the types: durations, counts, quantities and
prices are not negative, a propensity is within 0–1, a survey score within its
survey's scale.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from atende.pipelines.ingest.common import (
    ClassifierPlan,
    FieldRule,
    IngestRules,
    RunLineage,
    apply_plan,
    blank_to_null,
    classifier_plan,
    contract_rules,
    extra_map,
    joined_reasons,
    per_session,
    record_lines,
    repeated_values,
    typed_field_problems,
    typed_field_stages,
    value_column,
)
from atende.pipelines.schemas import CALL_VIA, DISPOSITIONS, SURVEY_SCALES

CSV_SOURCES = ("calls", "surveys", "crm", "orders", "products", "actions")
MAX_CSV_COLUMNS = 64

# Checks beyond the types of BRONZE[source]; the survey score range depends on the survey.
SOURCE_RULES: Mapping[str, tuple[FieldRule, ...]] = {
    "calls": contract_rules("calls", {
        "disposition": {"allowed": DISPOSITIONS},
        "via": {"allowed": CALL_VIA},
        "wait_seconds": {"minimum": 0},
        "talk_seconds": {"minimum": 0},
        "hold_seconds": {"minimum": 0},
        "transfer_count": {"minimum": 0},
    }),
    "surveys": contract_rules("surveys", {"survey": {"allowed": tuple(SURVEY_SCALES)}}),
    "crm": contract_rules("crm"),
    "orders": contract_rules("orders", {"quantity": {"minimum": 0}, "unit_price": {"minimum": 0}}),
    "products": contract_rules("products", {"price": {"minimum": 0}}),
    "actions": contract_rules("actions", {"propensity": {"minimum": 0, "maximum": 1}}),
}

_WIDE_ROW = ", ".join(f"c{i} string" for i in range(MAX_CSV_COLUMNS))
# A field that starts with a quote runs to the matching quote ("" is an escaped quote).
_QUOTED_FIELD = r'(^|,)"[^"]*(?:""[^"]*)*"(?=,|$)'


# RFC 4180 escapes a quote by doubling it; Spark's default escape is a backslash.
CSV_OPTIONS = {"mode": "PERMISSIVE", "escape": '"'}


def without_quoted_fields(line: Column) -> Column:
    """The line with every quoted field emptied: what is left of it are separators (linear time)."""
    return F.regexp_replace(line, _QUOTED_FIELD, "$1")


def field_count(unquoted: Column) -> Column:
    """How many fields a line holds, from ``without_quoted_fields``: its commas, plus one."""
    return F.length(unquoted) - F.length(F.replace(unquoted, F.lit(","), F.lit(""))) + 1


def has_unclosed_quote(unquoted: Column) -> Column:
    """A field still starting with a quote never found its closing quote."""
    return unquoted.rlike(r'(^|,)"')


def with_file_header(records: DataFrame, source: str | None = None) -> DataFrame:
    """Records with their file's header (``_names``, ``_header_width``), the header line removed.

    The header is the first non-blank line: the one with the smallest
    ``_position`` in the split that starts at byte 0 (positions grow along a
    split, and only a file's first split holds its first line). An aggregate, a
    parse of one header per file, and a broadcast join: no sort.

    With a ``source``, what depends on the header alone is worked out once per file
    too (``header_facts``): what is wrong with it, where each contract column
    sits, which columns the contract does not know. Per row, those were array
    searches and higher-order functions Spark evaluates without generated code.
    """
    first = (
        records.filter(F.col("_split_start") == 0)
        .groupBy("_source_file")
        .agg(F.min_by(F.struct("_position", "_text"), F.col("_position")).alias("_first"))
        .select(
            "_source_file",
            F.col("_first._position").alias("_header_position"),
            F.col("_first._text").alias("_header"),
        )
    )
    parsed = first.select(
        "*",
        F.from_csv(F.col("_header"), _WIDE_ROW, CSV_OPTIONS).alias("_header_row"),
        field_count(without_quoted_fields(F.col("_header"))).alias("_header_width"),
    )
    headers = parsed.select(
        "_source_file",
        "_header_position",
        "_header_width",
        F.transform(
            F.slice(
                F.array(*[F.col("_header_row")[f"c{i}"] for i in range(MAX_CSV_COLUMNS)]),
                1,
                F.least(F.col("_header_width"), F.lit(MAX_CSV_COLUMNS)),
            ),
            lambda n, i: F.coalesce(blank_to_null(F.lower(n)), F.concat(F.lit("_c"), i.cast("string"))),
        ).alias("_names"),
    )
    if source is not None:
        headers = headers.select("*", *header_facts(source))
    return (
        records.join(F.broadcast(headers), on="_source_file", how="left")
        # A file with no header found keeps all its lines (their reason will say so).
        .filter(~F.coalesce(
            (F.col("_split_start") == 0) & (F.col("_position") == F.col("_header_position")), F.lit(False)
        ))
        .drop("_header_position")
    )


def position_column(name: str) -> str:
    return f"_at_{name}"


def header_facts(source: str) -> list[Column]:
    """Per file, from its header (``_names``, ``_header_width``): ``_header_problem`` (null when the header
    is usable), ``_at_<column>`` (the contract column's 1-based position, 0 when the header lacks it) and
    ``_unknown_at`` (the 0-based positions of the columns the contract does not know)."""
    field_rules = SOURCE_RULES[source]
    known = tuple(rule.name for rule in field_rules)
    required = tuple(rule.name for rule in field_rules if rule.required)
    names = F.col("_names")
    every_position = F.sequence(F.lit(0), F.size(names) - 1)
    return [
        _header_problem(F.col("_header_width"), names, required).alias("_header_problem"),
        *[F.array_position(names, name).cast("int").alias(position_column(name)) for name in known],
        F.when(
            F.size(names) > 0, F.filter(every_position, lambda i: ~F.get(names, i).isin(*known))
        ).otherwise(F.array().cast("array<int>")).alias("_unknown_at"),
    ]


def _header_problem(width: Column, names: Column, required: tuple[str, ...]) -> Column:
    missing = F.filter(F.array(*[F.lit(r) for r in required]), lambda r: ~F.array_contains(names, r))
    repeated = repeated_values(names)
    return (
        F.when(names.isNull(), F.lit("no header line found"))
        .when(
            width > MAX_CSV_COLUMNS,
            F.lit(f"header has more than {MAX_CSV_COLUMNS} columns"),
        )
        .when(
            F.size(missing) == 1,
            F.concat(F.lit("header lacks required column "), F.get(missing, 0)),
        )
        .when(
            F.size(missing) > 1,
            F.concat(F.lit("header lacks required columns "), F.array_join(missing, ", ")),
        )
        .when(F.size(repeated) > 0, F.concat(F.lit("header repeats column "), F.array_join(repeated, ", ")))
    )


def _survey_score_reason(survey: Column, score: Column) -> Column:
    """"score 15 outside csat scale 1–5": the range depends on the survey."""
    reason = None
    for name, (lo, hi) in SURVEY_SCALES.items():
        outside = (survey == name) & ((score < lo) | (score > hi))
        message = F.concat(F.lit("score "), score.cast("string"), F.lit(f" outside {name} scale {lo}–{hi}"))
        reason = F.when(outside, message) if reason is None else reason.when(outside, message)
    assert reason is not None  # SURVEY_SCALES is not empty
    return reason


@per_session
def csv_plan(source: str, rules: IngestRules) -> ClassifierPlan:
    field_rules = SOURCE_RULES[source]
    names, values, arrival = F.col("_names"), F.col("_fields"), F.col("_arrival_date")
    gated = F.when(F.col("_problem").isNull(), F.col("_text"))  # unusable lines are not parsed

    def text_of(name: str) -> Column:
        position = F.col(position_column(name))
        return F.when(position > 0, F.get(values, position - 1))

    texts, typed = typed_field_stages({r.name: text_of(r.name) for r in field_rules}, field_rules, rules)
    # A line without a quote is its fields joined by commas: split, no CSV parser (most lines are).
    quoted = F.col("_quoted")
    stages = [
        (gated.contains('"').alias("_quoted"),),
        (
            F.when(quoted, F.from_csv(gated, _WIDE_ROW, CSV_OPTIONS)).alias("_row"),
            F.when(quoted, without_quoted_fields(gated)).otherwise(gated).alias("_unquoted"),
        ),
        (
            F.when(quoted, F.array(*[F.col("_row")[f"c{i}"] for i in range(MAX_CSV_COLUMNS)]))
            .otherwise(F.split(gated, ",", -1)).alias("_fields"),
            field_count(F.col("_unquoted")).alias("_field_count"),
            (quoted & has_unclosed_quote(F.col("_unquoted"))).alias("_unclosed"),
        ),
        texts,
        typed,
    ]
    expected = F.size(names)
    record_problem = F.coalesce(
        F.col("_problem"),
        F.col("_header_problem"),
        F.when(F.col("_unclosed"), F.lit("malformed CSV row: unclosed quote (a quoted field cannot span lines)")),
        F.when(
            F.col("_field_count") != expected,
            F.concat(
                F.lit("wrong number of columns: expected "), expected.cast("string"),
                F.lit(", got "), F.col("_field_count").cast("string"),
            ),
        ),
    )
    problems = typed_field_problems(field_rules, arrival, rules)
    if source == "surveys":
        problems.append(_survey_score_reason(F.col(value_column("survey")), F.col(value_column("score"))))

    # The columns the contract does not know, with a value: most files have none, and skip the work.
    unknown_at = F.col("_unknown_at")
    unknown = F.filter(
        F.transform(unknown_at, lambda i: F.struct(
            F.get(names, i).alias("key"), blank_to_null(F.get(values, i)).alias("value")
        )),
        lambda entry: entry["value"].isNotNull(),
    )
    none_unknown = F.size(unknown_at) == 0
    extra_found, extra_problem = extra_map(unknown)
    extra = F.when(none_unknown, F.create_map().cast("map<string,string>")).otherwise(extra_found)
    problems.append(F.when(~none_unknown, extra_problem))
    reason = F.coalesce(record_problem, joined_reasons(problems))
    values_out = {r.name: F.col(value_column(r.name)) for r in field_rules}
    return classifier_plan(source, stages, values_out, extra, reason, F.col("_text"), rules)


def classify_csv(source: str, rules: IngestRules, lineage: RunLineage) -> Callable[[DataFrame], DataFrame]:
    """Raw lines (common.RAW_LINES) of one CSV source → one classified row per data line."""
    if source not in SOURCE_RULES:
        raise ValueError(f"{source!r} is not a CSV source; CSV sources: {', '.join(CSV_SOURCES)}")

    def transform(lines: DataFrame) -> DataFrame:
        return apply_plan(with_file_header(record_lines(lines, rules), source), csv_plan(source, rules), lineage)

    return transform
