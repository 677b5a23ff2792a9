"""Collapsing re-delivered bronze records: the first delivery of each record wins."""
from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


def first_delivery(df: DataFrame, key: str) -> DataFrame:
    """One row per non-null `key` of a bronze frame: the earliest delivery (arrival date, ingestion
    time, file) of a re-delivered record, so `_arrival_date` is the record's first arrival."""
    order = F.struct("_arrival_date", "_ingested_at", "_source_file")
    rest = [c for c in df.columns if c != key]
    return (
        df.where(F.col(key).isNotNull())
        .groupBy(key)
        .agg(F.min_by(F.struct(*rest), order).alias("_first"))
        .select(key, "_first.*")
    )


