"""Small DataFrame helpers every layer shares."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
from pyspark import SparkContext, StorageLevel
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StructType, VariantType


def one_row(df: DataFrame) -> Row:
    """The frame's first row, for frames that always have one (a global aggregate)."""
    row = df.first()
    if row is None:
        raise ValueError("expected one row (an aggregate), the frame is empty")
    return row


def scalar(df: DataFrame) -> Any:
    """The first value of `one_row(df)`."""
    return one_row(df)[0]


def arrow_up_to(df: DataFrame, max_rows: int) -> pa.Table | None:
    """The frame's rows as an Arrow table when it has at most `max_rows` of them, else None (one collect of at most
    `max_rows + 1` rows, dropped when over; none at all for `max_rows` <= 0): the bounded gather of what a driver
    route computes."""
    if max_rows <= 0:
        return None
    gathered = df.limit(max_rows + 1).toArrow()
    return gathered if gathered.num_rows <= max_rows else None


def executors_in_driver(context: SparkContext) -> bool:
    """Whether the context's executors run in the driver's own JVM: Spark's local mode (`local`, `local[4]`,
    `local[*]`), as the running context says whatever the settings asked for; not `local-cluster`, whose
    executors are JVMs of their own."""
    master = context.master or ""
    return master.startswith("local") and not master.startswith("local-cluster")


def plan_cached(df: DataFrame) -> bool:
    """Whether Spark's cache holds the frame's plan: cached through this frame or any other of the same plan
    (the cache is per plan; `DataFrame.is_cached` only remembers this object's own `cache()`)."""
    return df.storageLevel != StorageLevel.NONE


@contextmanager
def cached(df: DataFrame) -> Iterator[DataFrame]:
    """`df` cached for the block and released after it, unless its plan was cached already (`plan_cached`):
    that cache is someone else's and is left as it is."""
    owned = not plan_cached(df)
    frame = df.cache() if owned else df
    try:
        yield frame
    finally:
        if owned:
            frame.unpersist()


def sql_dates(dates: Sequence[Any]) -> str:
    """Dates as a SQL list of DATE literals, for a Delta `replaceWhere` predicate (`_arrival_date IN (...)`)."""
    return ", ".join(f"DATE'{d.isoformat()}'" for d in dates)


def union_all(frames: Sequence[DataFrame]) -> DataFrame:
    """The frames' rows together, columns matched by name (at least one frame)."""
    result = frames[0]
    for frame in frames[1:]:
        result = result.unionByName(frame)
    return result


def keep_ids(frame: DataFrame, ids: DataFrame, column: str) -> DataFrame:
    """The rows of `frame` whose `column` is among the `record_id` values of `ids` (a semi-join)."""
    return frame.join(ids.select(F.col("record_id").alias(column)), on=column, how="left_semi")


def seeded_rows(df: DataFrame, seed: int, limit: int | None = None, by: Sequence[str] | None = None) -> DataFrame:
    """The rows in the order of a seeded hash of their content (then the content itself), at most `limit`:
    a uniform sample, and an order, that depend on the data alone — not on how Spark partitioned it, so a
    cluster's run and a local one hand a model the same rows in the same order. Map columns cannot be
    hashed or ordered (nor can variants) and are left out of the key, at any depth. `by`: hash and order
    by these columns only (a key such as customer_key)."""
    names = list(by) if by is not None else [f.name for f in df.schema.fields if _orderable(f.dataType)]
    keys = [df[f"`{name.replace('`', '``')}`"] for name in names]
    ordered = df.orderBy(F.xxhash64(*keys, F.lit(seed)), *keys)
    return ordered if limit is None else ordered.limit(limit)


def _orderable(kind: Any) -> bool:
    """Whether a column of this type can be hashed and ordered: no map or variant anywhere inside."""
    if isinstance(kind, (MapType, VariantType)):
        return False
    if isinstance(kind, ArrayType):
        return _orderable(kind.elementType)
    if isinstance(kind, StructType):
        return all(_orderable(f.dataType) for f in kind.fields)
    return True
