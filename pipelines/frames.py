"""Small DataFrame helpers every layer shares."""
from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame, Row


def one_row(df: DataFrame) -> Row:
    """The frame's first row, for frames that always have one (a global aggregate)."""
    row = df.first()
    if row is None:
        raise ValueError("expected one row (an aggregate), the frame is empty")
    return row


def scalar(df: DataFrame) -> Any:
    """The first value of `one_row(df)`."""
    return one_row(df)[0]
