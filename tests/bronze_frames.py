"""Hand-made bronze frames for the transform tests (imported by tests, not a test module)."""
from __future__ import annotations

import datetime as dt

from pyspark.sql.types import ArrayType, StructType

from atende.pipelines.schemas import BRONZE

UTC = dt.timezone.utc


def at(day: int, hour: int = 12, minute: int = 0, second: int = 0) -> dt.datetime:
    """An instant in March 2026, UTC."""
    return dt.datetime(2026, 3, day, hour, minute, second, tzinfo=UTC)


def bronze(spark, source: str, rows: list[dict]):
    """A BRONZE[source] frame: the given fields, lineage filled in (overridable), everything else null."""
    lineage = {
        "_source_file": f"{source}/2026-03-01/part-0",
        "_arrival_date": dt.date(2026, 3, 1),
        "_ingested_at": at(1, 23),
        "run_id": "r0",
    }
    schema = BRONZE[source]
    return spark.createDataFrame(
        [tuple(_padded({**lineage, **r}.get(f.name), f.dataType) for f in schema.fields) for r in rows], schema
    )


def _padded(value, dtype):
    """A struct given as a shorter tuple (or a list of them) gets its remaining fields null: tests name
    the leading fields they care about, and keep working when a struct gains fields at its end."""
    if isinstance(dtype, ArrayType) and isinstance(dtype.elementType, StructType) and value is not None:
        return [_padded(v, dtype.elementType) for v in value]
    if isinstance(dtype, StructType) and isinstance(value, tuple):
        return value + (None,) * (len(dtype.fields) - len(value))
    return value
