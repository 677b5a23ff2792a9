"""What one more day changes in gold: per table, how many customers' rows differ, and in which columns (issue 15).

    python bench/bench_scale.py --customers 100000 --no-baseline --keep --work W   # a full run, then one more day
    python bench/bench_day_changes.py W/100000x30/lakehouse

Incremental gold (recomputing only the customers a day touches) must give the rows a full recomputation gives.
This compares each gold table's last two Delta versions (the day's run against the one before it) customer by
customer: rows, customers new in the day, customers with any column changed, and those with a change outside
the columns that move with the data's clock alone (`CLOCK`: days since the last contact, tenure, contacts per week
over the tenure, an open issue ageing out, recent actions). The run's own columns (run id, write time, as-of date,
validity window, the reasons' text) are left out. Prints one JSON document.
"""
from __future__ import annotations

import argparse
import json
from functools import reduce

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import MapType

from atende.conf import load_settings
from atende.lakehouse.spark import build_spark_session

TABLES = ("customer_features", "persona_segments", "customer_profiles", "recommendations")
RUN_COLUMNS = {"run_id", "_written_at", "as_of", "valid_from", "valid_until", "reasons"}
CLOCK = {"recency_days", "tenure_days", "interactions_per_week", "open_issue", "actions_recent"}


def _comparable(frame: DataFrame, column: str) -> Column:
    """The column as a value `<=>` can compare: a map as the JSON of its entries in key order."""
    if isinstance(frame.schema[column].dataType, MapType):
        return F.to_json(F.array_sort(F.map_entries(F.col(column))))
    return F.col(column)


def day_changes(spark, table_path: str) -> dict:
    versions = [r[0] for r in spark.sql(f"DESCRIBE HISTORY delta.`{table_path}`").select("version").collect()]
    if len(versions) < 2:
        return {"error": "fewer than two versions"}
    new_version, old_version = sorted(versions)[-1], sorted(versions)[-2]
    old = spark.read.format("delta").option("versionAsOf", old_version).load(table_path)
    new = spark.read.format("delta").option("versionAsOf", new_version).load(table_path)
    columns = [c for c in new.columns if c not in RUN_COLUMNS | {"customer_key"} and c in old.columns]
    joined = old.select("customer_key", F.lit(True).alias("_old"),
                        *[_comparable(old, c).alias(f"o_{c}") for c in columns]).join(
        new.select("customer_key", F.lit(True).alias("_new"),
                   *[_comparable(new, c).alias(f"n_{c}") for c in columns]),
        "customer_key", "full")
    changed = {c: (~F.col(f"o_{c}").eqNullSafe(F.col(f"n_{c}"))).cast("int") for c in columns}
    not_clock = [v for c, v in changed.items() if c not in CLOCK]
    row = joined.agg(
        F.count("*").alias("rows"),
        F.sum(F.col("_old").isNull().cast("int")).alias("new_customers"),
        F.sum(F.col("_new").isNull().cast("int")).alias("gone_customers"),
        F.sum(reduce(F.greatest, changed.values()) if len(changed) > 1 else next(iter(changed.values()))).alias("_any"),
        F.sum(reduce(F.greatest, not_clock) if len(not_clock) > 1 else (not_clock or [F.lit(0)])[0]).alias("_data"),
        *[F.sum(v).alias(c) for c, v in changed.items()],
    ).first().asDict()
    return {
        "versions": [old_version, new_version],
        "rows": row.pop("rows"),
        "new_customers": row.pop("new_customers"),
        "gone_customers": row.pop("gone_customers"),
        "customers_changed": row.pop("_any"),
        "customers_changed_beyond_the_clock": row.pop("_data"),
        "per_column": {c: n for c, n in sorted(row.items(), key=lambda kv: -(kv[1] or 0)) if n},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lakehouse", help="a lakehouse after at least two runs (bench_scale --keep leaves one)")
    args = parser.parse_args()
    spark = build_spark_session(load_settings("local", environ={}), "atende-bench-day-changes")
    try:
        print(json.dumps({t: day_changes(spark, f"{args.lakehouse}/gold/{t}") for t in TABLES}, indent=2))
    finally:
        spark.stop()


if __name__ == "__main__":
    main()
