"""What every bronze ingest transform shares: rules, record checks, typed parsing, reasons.

A classifier (one per source) turns raw records into one *classified* row per
record: the typed BRONZE[source] columns plus ``_reason`` (null when the record
is accepted) and ``_raw`` (the original text, set only when it is not).
``accepted_records`` and ``quarantined_records`` split that frame into the
bronze table and the quarantine table. One row per record in, one row out: that
is what makes the per-file reconciliation (accepted + quarantined = records) hold.

Reasons are written for a person: what is wrong, in which field, with the
offending value quoted (cut to 80 characters). A record-level problem (too large,
binary, invalid JSON, wrong number of CSV columns) is the only reason given;
otherwise every field-level problem is listed, separated by "; ".
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timezone

from pyspark import SparkContext
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from atende.conf.settings import Settings
from atende.pipelines.schemas import BRONZE, LINEAGE_FIELDS, QUARANTINE

REASON = "_reason"
RAW = "_raw"
EXTRA = "_extra"

# A 10 MB garbage line must not bloat the quarantine table: keep its head only.
RAW_TEXT_MAX_CHARS = 65_536
SHOWN_VALUE_MAX_CHARS = 80

# What the reading side (jobs/ingest.py) hands to the text classifiers: one row
# per physical line. ``_position`` is monotonically_increasing_id() taken right
# at the scan, so it grows with the line's position inside one file split;
# ``_split_start`` is the split's byte offset (0 for the split holding the
# file's first line). Together they identify each file's first line without a
# sort; only the CSV header needs that.
RAW_LINES = StructType([
    StructField("_source_file", StringType(), False),
    StructField("_arrival_date", DateType(), False),
    StructField("_split_start", LongType(), False),
    StructField("_position", LongType(), False),
    StructField("value", StringType(), True),
])

# What the reading side hands to the e-mail classifier: one row per file.
RAW_FILES = StructType([
    StructField("_source_file", StringType(), False),
    StructField("_arrival_date", DateType(), False),
    StructField("content", BinaryType(), True),
])

# Per source file: records found, and where each one went.
FILE_COUNTS = StructType([
    StructField("source", StringType(), False),
    StructField("_source_file", StringType(), False),
    StructField("_arrival_date", DateType(), False),
    StructField("records", LongType(), False),
    StructField("accepted", LongType(), False),
    StructField("quarantined", LongType(), False),
])

EXTRA_ENTRIES = ArrayType(StructType([
    StructField("key", StringType(), False),
    StructField("value", StringType(), True),
]))

# Control characters never found in UTF-8 text records (tab, CR, LF, FF excepted).
_CONTROL_CHARS = r"[\x00-\x08\x0B\x0E-\x1F]"
# A time of day followed by a zone: Z, +hh, +hhmm, +hh:mm, or a region id.
_ZONE_SUFFIX = r"\d{2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|z|[+-]\d{2}(:?\d{2})?|UTC|GMT|[A-Za-z]+/[A-Za-z_]+)$"
# Exports from Brazilian systems write sim/não, and often S/N.
TRUE_WORDS = ("true", "1", "yes", "sim", "y", "s")
FALSE_WORDS = ("false", "0", "no", "não", "nao", "n")


@dataclass(frozen=True)
class IngestRules:
    """The settings the classifiers need, in the types they need."""

    max_record_bytes: int
    future_tolerance_hours: int
    earliest_valid_date: date
    business_timezone: str
    raw_max_chars: int = RAW_TEXT_MAX_CHARS

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestRules:
        return cls(
            max_record_bytes=settings.ingest.max_record_bytes,
            future_tolerance_hours=settings.ingest.future_tolerance_hours,
            earliest_valid_date=date.fromisoformat(settings.ingest.earliest_valid_date),
            business_timezone=settings.kpis.business_timezone,
        )

    @property
    def earliest_instant(self) -> datetime:
        return datetime(
            self.earliest_valid_date.year, self.earliest_valid_date.month, self.earliest_valid_date.day,
            tzinfo=timezone.utc,
        )


@dataclass(frozen=True)
class RunLineage:
    """Who wrote the rows and when; the same on accepted and quarantined rows."""

    run_id: str
    ingested_at: datetime

    def __post_init__(self) -> None:
        # A naive datetime would be read in the driver's local zone by Spark; it means UTC here.
        if self.ingested_at.tzinfo is None:
            object.__setattr__(self, "ingested_at", self.ingested_at.replace(tzinfo=timezone.utc))


# ------------------------------------------------------------------ text hygiene

def strip_bom(text: Column) -> Column:
    """Text without a leading U+FEFF: a byte-order mark the line reader left on a file's first line."""
    return F.regexp_replace(text, "^\uFEFF", "")


# What a regular expression's \\s matches (Java, without UNICODE_CHARACTER_CLASS): ASCII whitespace.
WHITESPACE = " \t\n\x0b\f\r"


def trimmed(text: Column) -> Column:
    """The text without leading and trailing whitespace (``WHITESPACE``); no regular expression per row."""
    return F.btrim(text, F.lit(WHITESPACE))


def is_blank(text: Column) -> Column:
    return F.coalesce(trimmed(text) == "", F.lit(True))


def blank_to_null(text: Column) -> Column:
    """Trimmed text; empty or whitespace-only becomes null (never '' for a missing value)."""
    return F.nullif(trimmed(text), F.lit(""))


def shown(text: Column) -> Column:
    """A value as quoted in a reason: in single quotes, cut to 80 characters."""
    cut = F.when(
        F.char_length(text) > SHOWN_VALUE_MAX_CHARS,
        F.concat(F.substring(text, 1, SHOWN_VALUE_MAX_CHARS), F.lit("…")),
    ).otherwise(text)
    return F.concat(F.lit("'"), F.coalesce(cut, F.lit("")), F.lit("'"))


def line_problem(value: Column, rules: IngestRules) -> Column:
    """Why a raw text line cannot even be parsed (null when it can).

    Checked on the bytes as read, before any string function replaces invalid
    UTF-8 sequences; the size check comes first so a huge line is never scanned.
    """
    return (
        F.when(
            F.octet_length(value) > rules.max_record_bytes,
            F.lit(f"record larger than {rules.max_record_bytes} bytes"),
        )
        .when(~F.is_valid_utf8(value) | value.rlike(_CONTROL_CHARS), F.lit("not valid UTF-8 / binary content"))
    )


def quarantine_raw(text: Column, rules: IngestRules) -> Column:
    return F.substring(F.make_valid_utf8(text), 1, rules.raw_max_chars)


def truncation_note(length: Column, rules: IngestRules) -> Column:
    return F.when(
        length > rules.raw_max_chars,
        F.lit(f" (raw truncated to its first {rules.raw_max_chars} characters)"),
    ).otherwise(F.lit(""))


# ------------------------------------------------------------------ typed values

def instant_from_text(text: Column, business_timezone: str) -> Column:
    """An ISO 8601 text as a UTC instant; null when it does not parse.

    With a zone or offset ("2026-03-01T12:00:05-03:00", "…Z") the text names its
    instant. Without one ("2026-03-01 12:00:05") it is a wall-clock time in the
    business time zone: the zone id is appended, so the session zone plays no part.
    """
    padded = F.regexp_replace(
        F.regexp_replace(text, r"^(\d{4}-\d{1,2}-\d{1,2})$", "$1 00:00:00"),
        r"([T ]\d{1,2}:\d{2})$", "$1:00",
    )
    return F.when(text.rlike(_ZONE_SUFFIX), F.try_to_timestamp(text)).otherwise(
        F.try_to_timestamp(F.concat(padded, F.lit(f" {business_timezone}")))
    )


def boolean_from_text(text: Column) -> Column:
    word = F.lower(text)
    return F.when(word.isin(*TRUE_WORDS), F.lit(True)).when(word.isin(*FALSE_WORDS), F.lit(False))


def number_from_text(text: Column) -> Column:
    """A finite double; NaN and infinities are not measurements."""
    number = text.try_cast("double")
    return F.when(~F.isnan(number) & (F.abs(number) < float("inf")), number)


def whole_number_from_text(text: Column) -> Column:
    """An int; "3" and "3.0" both are 3, "3.5" is not a whole number."""
    number = text.try_cast("decimal(20,6)")
    return F.when(number == F.floor(number), number.try_cast("int"))


def unix_seconds_from_text(text: Column) -> Column:
    seconds = text.try_cast("decimal(20,6)")
    # Beyond 1e11 s (year 5138) the value is garbage, and would overflow the microseconds.
    return F.when(F.abs(seconds) < 1e11, F.timestamp_seconds(seconds.cast("long")))


def date_from_text(text: Column) -> Column:
    return F.try_to_date(text, "yyyy-MM-dd")


def arrival_limit(arrival_date: Column, rules: IngestRules) -> Column:
    """The latest plausible instant of a record that arrived on this date.

    The end of the arrival day in the business time zone plus the tolerance: a
    file dropped at 23:59 holds that day's records, and clocks drift.
    """
    midnight = F.try_to_timestamp(
        F.concat(F.date_add(arrival_date, 1).cast("string"), F.lit(f" 00:00:00 {rules.business_timezone}"))
    )
    return F.timestamp_add("HOUR", F.lit(rules.future_tolerance_hours), midnight)


def event_time_reasons(
    value: Column, text: Column, label: Column, arrival_date: Column, rules: IngestRules
) -> list[Column]:
    """An instant later than the arrival allows, or earlier than the earliest valid date."""
    return [
        F.when(
            value > arrival_limit(arrival_date, rules),
            F.concat(
                F.lit("timestamp in the future: "), label, F.lit(" "), shown(text),
                F.lit(" is later than arrival date "), arrival_date.cast("string"),
                F.lit(f" + {rules.future_tolerance_hours} h"),
            ),
        ),
        F.when(
            value < F.lit(rules.earliest_instant),
            F.concat(
                F.lit(f"timestamp before earliest valid date {rules.earliest_valid_date}: "),
                label, F.lit(" "), shown(text),
            ),
        ),
    ]


@dataclass(frozen=True)
class FieldRule:
    """How one contract field is typed and checked.

    ``allowed`` values are compared (and kept) lower-cased; ``minimum``/``maximum``
    bound numbers; ``unix_seconds`` timestamps are epoch seconds, not ISO text.
    """

    name: str
    dtype: DataType
    required: bool = False
    allowed: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    unix_seconds: bool = False


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def parsed_value(text: Column, rule: FieldRule, rules: IngestRules) -> Column:
    """The typed value of a field given as text (trimmed, null when blank); null when it does not parse."""
    dtype = rule.dtype
    if isinstance(dtype, StringType):
        return F.lower(text) if rule.allowed else text
    if isinstance(dtype, TimestampType):
        if rule.unix_seconds:
            return unix_seconds_from_text(text)
        return instant_from_text(text, rules.business_timezone)
    if isinstance(dtype, BooleanType):
        return boolean_from_text(text)
    if isinstance(dtype, DoubleType):
        return number_from_text(text)
    if isinstance(dtype, IntegerType):
        return whole_number_from_text(text)
    if isinstance(dtype, DateType):
        return date_from_text(text)
    raise TypeError(f"no text parser for {dtype.simpleString()} ({rule.name})")


_WHAT: dict[type[DataType], str] = {
    TimestampType: "timestamp", BooleanType: "boolean", DoubleType: "number",
    IntegerType: "whole number", DateType: "date (yyyy-MM-dd)",
}


def field_problems(
    text: Column, value: Column, rule: FieldRule, label: str | Column, arrival_date: Column, rules: IngestRules
) -> list[Column]:
    """What is wrong with one field (each null when fine), given its text and parsed value.

    Pass column references (staged columns, struct fields), not expressions: each
    is used several times. ``label`` names the field in reasons; a Column when it
    depends on the row (``messages[3].sent_at``).
    """
    dtype = rule.dtype
    name = F.lit(label) if isinstance(label, str) else label
    problems: list[Column] = []
    if rule.required:
        problems.append(F.when(text.isNull(), F.concat(F.lit("missing required field "), name)))
    if isinstance(dtype, StringType):
        if rule.allowed:
            problems.append(F.when(
                value.isNotNull() & ~value.isin(*rule.allowed),
                F.concat(F.lit("unknown "), name, F.lit(" "), shown(text)),
            ))
    else:
        problems.append(F.when(
            text.isNotNull() & value.isNull(),
            F.concat(F.lit(f"unparseable {_WHAT[type(dtype)]} in "), name, F.lit(": "), shown(text)),
        ))
    if isinstance(dtype, TimestampType):
        problems += event_time_reasons(value, text, name, arrival_date, rules)
    if isinstance(dtype, DateType):
        # The contract's only date is a birth date: one after the file arrived is a typo.
        problems.append(F.when(value > arrival_date, F.concat(name, F.lit(" in the future: "), shown(text))))
    if rule.minimum is not None or rule.maximum is not None:
        lo, hi = rule.minimum, rule.maximum
        below = value < F.lit(lo) if lo is not None else F.lit(False)
        above = value > F.lit(hi) if hi is not None else F.lit(False)
        if lo == 0 and hi is None:
            message = F.concat(name, F.lit(" "), shown(text), F.lit(" is negative"))
        else:
            bounds = f"{_fmt(lo) if lo is not None else '-∞'}–{_fmt(hi) if hi is not None else '∞'}"
            message = F.concat(name, F.lit(" "), shown(text), F.lit(f" outside {bounds}"))
        problems.append(F.when(below | above, message))
    return problems


def text_column(name: str) -> str:
    return f"_t_{name}"


def value_column(name: str) -> str:
    return f"_v_{name}"


def typed_field_stages(
    texts: dict[str, Column], field_rules: Sequence[FieldRule], rules: IngestRules
) -> tuple[tuple[Column, ...], tuple[Column, ...]]:
    """Two stages: ``_t_<name>`` (the text, trimmed, null when blank), then ``_v_<name>`` (the parsed value).

    Staged, so every later use refers to a column instead of repeating the
    parse: Spark does not collapse a projection that would duplicate it.
    """
    return (
        tuple(blank_to_null(texts[r.name]).alias(text_column(r.name)) for r in field_rules),
        tuple(parsed_value(F.col(text_column(r.name)), r, rules).alias(value_column(r.name)) for r in field_rules),
    )


def typed_field_problems(field_rules: Sequence[FieldRule], arrival_date: Column, rules: IngestRules) -> list[Column]:
    """The problems of every field staged by ``typed_field_stages``."""
    return [
        problem
        for r in field_rules
        for problem in field_problems(
            F.col(text_column(r.name)), F.col(value_column(r.name)), r, r.name, arrival_date, rules
        )
    ]


def contract_rules(source: str, overrides: dict[str, dict] | None = None) -> tuple[FieldRule, ...]:
    """One FieldRule per scalar contract column of BRONZE[source]; required = not nullable there."""
    overrides = overrides or {}
    return tuple(
        FieldRule(name=f.name, dtype=f.dataType, required=not f.nullable, **overrides.get(f.name, {}))
        for f in contract_columns(source)
        if not isinstance(f.dataType, (StructType, ArrayType, MapType))
    )


def joined_reasons(reasons: Sequence[Column]) -> Column:
    """All non-null reasons, "; "-separated; null when there are none."""
    if not reasons:
        return F.lit(None).cast("string")
    return F.nullif(F.concat_ws("; ", *reasons), F.lit(""))


# ------------------------------------------------------------------ JSON helpers

def json_object_problem(text: Column, fields: Column) -> Column:
    """Why a line is not one JSON object (null when it is).

    from_json stops after the first complete value, so trailing text is caught
    by requiring the line to end with the object's closing brace.
    """
    is_object_text = text.rlike(r"^\s*\{") & text.rlike(r"\}\s*$")
    return (
        F.when(fields.isNotNull() & is_object_text, F.lit(None).cast("string"))
        .when(F.try_parse_json(text).isNotNull() & ~text.rlike(r"^\s*\{"), F.lit("invalid JSON: not an object"))
        .otherwise(F.lit("invalid JSON"))
    )


def repeated_values(values: Column) -> Column:
    """The values an array holds more than once, each once, in order of first appearance."""
    return F.filter(F.array_distinct(values), lambda v: F.size(F.filter(values, lambda w: w == v)) > 1)


def duplicate_keys_problem(fields: Column, where: str) -> Column:
    """A JSON object that names a key twice is ambiguous: which value is the record's?"""
    keys = F.map_keys(fields)
    # which keys repeat is a search per key; only a map with a repeated key needs it
    return F.when(
        F.size(keys) != F.size(F.array_distinct(keys)),
        F.concat(F.lit(f"invalid JSON: duplicate key in {where}: "), F.array_join(repeated_values(keys), ", ")),
    )


def unknown_entries(fields: Column, known: Sequence[str], prefix: Column | str = "") -> Column:
    """The entries of a key→text map whose key the contract does not know, keys prefixed."""
    prefix_col = F.lit(prefix) if isinstance(prefix, str) else prefix
    unknown = F.map_filter(fields, lambda k, v: ~k.isin(*known))
    entries = F.map_entries(F.transform_keys(unknown, lambda k, v: F.concat(prefix_col, k)))
    # Most maps hold only known keys: a set difference of the keys (no lambda) finds them, and the
    # higher-order functions above, which Spark evaluates without generated code, are skipped.
    any_unknown = F.size(F.array_except(F.map_keys(fields), F.array(*[F.lit(k) for k in known]).cast("array<string>"))) > 0
    return F.when(any_unknown, F.coalesce(entries, empty_entries())).otherwise(empty_entries())


def empty_entries() -> Column:
    return F.array().cast(EXTRA_ENTRIES)


def extra_map(*entries: Column) -> tuple[Column, Column]:
    """The ``_extra`` map from entry arrays, and a reason if two entries share a key.

    map_from_entries fails the whole job on a duplicate key, so it is only
    evaluated for rows whose keys are known to be distinct.
    """
    combined = F.concat(*entries) if len(entries) > 1 else entries[0]
    keys = F.transform(combined, lambda e: e["key"])
    distinct = F.size(keys) == F.size(F.array_distinct(keys))
    value = F.when(distinct, F.map_from_entries(combined))
    reason = F.when(~distinct, F.lit("duplicate field name in record"))
    return value, reason


def nested_map(text: Column) -> Column:
    # from_json takes a MapType schema too; pyspark's annotation lists ArrayType and StructType only
    return F.from_json(text, MapType(StringType(), StringType()))  # type: ignore[arg-type]


# ------------------------------------------------------------------ output

def contract_columns(source: str) -> list[StructField]:
    lineage = {f.name for f in LINEAGE_FIELDS}
    return [f for f in BRONZE[source].fields if f.name not in lineage]


@dataclass(frozen=True)
class ClassifierPlan:
    """The expressions of one classifier: columns added stage by stage, the reason, the output.

    They only name columns, so one plan serves any frame of the right shape;
    building one takes thousands of calls into the JVM, so it is built once per
    Spark session and rules (``per_session``).
    """

    stages: tuple[tuple[Column, ...], ...]
    reason: Column
    output: tuple[Column, ...]


def classifier_plan(
    source: str,
    stages: Sequence[Sequence[Column]],
    values: dict[str, Column],
    extra: Column,
    reason: Column,
    raw_text: Column,
    rules: IngestRules,
    raw_length: Column | None = None,
) -> ClassifierPlan:
    """A plan whose output is BRONZE[source]'s columns, then ``_reason`` and ``_raw``.

    ``values``, ``extra``, ``reason`` and ``raw_text`` are expressions over the
    staged columns. The reason gets its own stage because three outputs use it.
    ``raw_length`` is the original text's length when ``raw_text`` was already cut.
    """
    found = F.col("_reason_found")
    length = F.char_length(raw_text) if raw_length is None else raw_length
    output = [values[f.name].cast(f.dataType).alias(f.name) for f in contract_columns(source)]
    output += [
        F.when(found.isNull(), extra).cast(MapType(StringType(), StringType())).alias(EXTRA),
        F.col("_source_file"),
        F.col("_arrival_date"),
        F.col("_ingested_at"),
        F.col("run_id"),
        F.when(found.isNotNull(), F.concat(found, truncation_note(length, rules))).alias(REASON),
        F.when(found.isNotNull(), quarantine_raw(raw_text, rules)).alias(RAW),
    ]
    return ClassifierPlan(tuple(tuple(stage) for stage in stages), reason, tuple(output))


def apply_plan(records: DataFrame, plan: ClassifierPlan, lineage: RunLineage) -> DataFrame:
    """The classified frame: the plan's stages over ``records``, then its output."""
    staged = records
    for stage in plan.stages:
        staged = staged.select("*", *stage)
    return staged.select(
        "*",
        plan.reason.alias("_reason_found"),
        F.lit(lineage.ingested_at).cast(TimestampType()).alias("_ingested_at"),
        F.lit(lineage.run_id).alias("run_id"),
    ).select(*plan.output)


def per_session(builder: Callable[..., ClassifierPlan]) -> Callable[..., ClassifierPlan]:
    """Caches a plan builder per Spark application and (hashable) arguments.

    A plan's columns live in the JVM of the application that built them.
    """
    cache: dict[tuple, ClassifierPlan] = {}

    @functools.wraps(builder)
    def cached(*args):
        context = SparkContext._active_spark_context
        key = (context.applicationId if context is not None else None, args)
        if key not in cache:
            cache[key] = builder(*args)
        return cache[key]

    return cached


def accepted_records(classified: DataFrame, source: str) -> DataFrame:
    """The bronze rows of a classified frame: schema BRONZE[source] (names, types, order)."""
    schema = BRONZE[source]
    return classified.filter(F.col(REASON).isNull()).select(
        *[F.col(f.name).cast(f.dataType).alias(f.name) for f in schema.fields]
    )


def quarantined_records(classified: DataFrame, source: str) -> DataFrame:
    """The quarantine rows of a classified frame: schema QUARANTINE."""
    return classified.filter(F.col(REASON).isNotNull()).select(
        F.lit(source).alias("source"),
        F.col("_source_file"),
        F.col(RAW).alias("raw"),
        F.col(REASON).alias("reason"),
        F.col("_arrival_date"),
        F.col("_ingested_at"),
        F.col("run_id"),
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in QUARANTINE.fields])


def record_lines(lines: DataFrame, rules: IngestRules) -> DataFrame:
    """The non-blank lines of text files, each with ``_text`` (BOM stripped) and ``_problem``.

    A blank line is not a record: it is neither accepted nor quarantined nor counted.
    """
    return lines.filter(~is_blank(F.col("value"))).select(
        "_source_file",
        "_arrival_date",
        "_split_start",
        "_position",
        "value",
        strip_bom(F.col("value")).alias("_text"),
        line_problem(F.col("value"), rules).alias("_problem"),
    )
