"""Hand-made bronze frames for the transform tests (imported by tests, not a test module)."""
from __future__ import annotations

import datetime as dt

from pipelines.schemas import BRONZE

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
    return spark.createDataFrame([tuple({**lineage, **r}.get(f.name) for f in schema.fields) for r in rows], schema)
