"""Which classifier reads which source, and what counts as one of its records."""
from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from atende.pipelines.ingest.common import IngestRules, RunLineage, is_blank
from atende.pipelines.ingest.conversations import classify_conversations
from atende.pipelines.ingest.csv_sources import CSV_SOURCES, classify_csv, with_file_header
from atende.pipelines.ingest.email_messages import classify_email
from atende.pipelines.ingest.whatsapp import classify_whatsapp
from atende.pipelines.schemas import SOURCES

# Sources read as text lines (common.RAW_LINES) and as whole files (common.RAW_FILES).
LINE_SOURCES = ("conversations", "whatsapp") + CSV_SOURCES
FILE_SOURCES = ("email",)
assert set(LINE_SOURCES + FILE_SOURCES) == set(SOURCES)


def classify(source: str, rules: IngestRules, lineage: RunLineage) -> Callable[[DataFrame], DataFrame]:
    """The classifier of a source: raw records → one classified row per record."""
    if source == "conversations":
        return classify_conversations(rules, lineage)
    if source == "whatsapp":
        return classify_whatsapp(rules, lineage)
    if source == "email":
        return classify_email(rules, lineage)
    return classify_csv(source, rules, lineage)


def records_per_file(source: str, raw: DataFrame, classified: DataFrame) -> DataFrame:
    """(_source_file, _arrival_date, records): how many records each file holds.

    Line sources are counted from the raw lines, independently of the parse:
    non-blank lines, minus each CSV file's header line. E-mail records exist
    only once the Python splitter has found them: one classified row per message.
    """
    if source in FILE_SOURCES:
        counted = classified
    else:
        counted = raw.filter(~is_blank(F.col("value"))).withColumn("_text", F.col("value"))
        if source in CSV_SOURCES:
            counted = with_file_header(counted)
    return counted.groupBy("_source_file", "_arrival_date").agg(F.count(F.lit(1)).alias("records"))
