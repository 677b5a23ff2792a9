"""A lakehouse on s3a:// against an S3-compatible server on 127.0.0.1 (moto's), through the delta-spark engine.

The Spark session here is a second one, in a subprocess: the S3A connector (`hadoop-aws` matching the Hadoop
pyspark bundles, with the AWS SDK it needs) is fetched at session start like the Delta connector, and jars
can only join a JVM when it starts. The tables written there are read back here by the deltalake package,
as another reader on another machine would.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import S3_BUCKET, delta_rs_s3_options, s3a_spark_conf

pytestmark = [pytest.mark.slow]

BUCKET = S3_BUCKET

SCRIPT = textwrap.dedent(
    """
    import datetime as dt, json, sys
    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse
    from atende.jobs.maintain import optimize_tables, vacuum_tables
    endpoint, root = sys.argv[1], sys.argv[2]
    settings = load_settings("local", environ={})
    s3a = json.loads(sys.argv[3])
    settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={
        "master": "local[2]", "shuffle_partitions": 2, "driver_memory": "1g",
        "packages": ("hadoop-aws",), "conf": s3a})})
    spark = build_spark_session(settings)
    lake = Lakehouse(spark, root, settings.storage)
    out = {"engine": lake.engine.name}
    day1, day2 = dt.date(2026, 3, 1), dt.date(2026, 3, 2)
    schema = "customer_key string, _arrival_date date, v long"
    rows = [("c1", day1, 1), ("c2", day1, 2), ("c3", day2, 3)]
    lake.write("bronze", "events", spark.createDataFrame(rows, schema), mode="overwrite", partition_by=["_arrival_date"])
    # a re-delivered day replaces its rows, the other day stays
    lake.write("bronze", "events", spark.createDataFrame([("c1", day1, 10)], schema), mode="overwrite",
               replace_where="_arrival_date = DATE'2026-03-01'")
    lake.upsert("silver", "customers", spark.createDataFrame([("c1", "a"), ("c2", "b")], "customer_key string, v string"), ["customer_key"])
    lake.upsert("silver", "customers", spark.createDataFrame([("c2", "B"), ("c3", "c")], "customer_key string, v string"), ["customer_key"])
    for i in range(3):
        lake.write("gold", "scores", spark.createDataFrame([(f"c{i}", float(i))], "customer_key string, score double"))
    out["optimized"] = [(m.table, m.files_removed, m.files_added) for m in optimize_tables(lake, tables=("gold.scores",))]
    out["vacuumed"] = [(m.table, m.files_removed) for m in vacuum_tables(lake, retention_hours=0, tables=("gold.scores",))]
    out["tables"] = lake.tables()
    out["events"] = sorted(tuple(r) for r in lake.read("bronze", "events").select("customer_key", "v").collect())
    out["events_v0"] = sorted(r["v"] for r in lake.read("bronze", "events", version=0).collect())
    out["customers"] = sorted(tuple(r) for r in lake.read("silver", "customers").collect())
    # counts and maxima from the Delta logs through the deltalake package, with the S3A settings: no Spark read
    lake.read = None
    out["from_logs"] = [lake.row_count("silver", "customers"), lake.row_count("bronze", "events"),
                        lake.column_max("bronze", "events", "v")]
    print("RESULT " + json.dumps(out))
    """
)


def test_a_lakehouse_on_s3a_writes_merges_compacts_vacuums_and_reads_back(s3_server, tmp_path):
    from deltalake import DeltaTable

    script = tmp_path / "on_s3a.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    root = f"s3a://{BUCKET}/lakehouse"
    done = subprocess.run([sys.executable, str(script), s3_server, root, json.dumps(s3a_spark_conf(s3_server))], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["engine"] == "delta-spark"
    assert result["events"] == [["c1", 10], ["c3", 3]]
    assert result["events_v0"] == [1, 2, 3]
    assert result["customers"] == [["c1", "a"], ["c2", "B"], ["c3", "c"]]
    assert result["from_logs"] == [3, 2, 10]  # the Delta logs read over S3, Spark never asked
    assert result["optimized"] == [["gold.scores", 3, 1]]
    assert result["vacuumed"][0][1] >= 3
    assert result["tables"] == [["bronze", "events"], ["silver", "customers"], ["gold", "scores"]]

    # another reader, the deltalake package, reads the same tables from the object store
    options = delta_rs_s3_options(s3_server)
    events = DeltaTable(f"s3://{BUCKET}/lakehouse/bronze/events", storage_options=options).to_pyarrow_table()
    assert sorted(zip(events.column("customer_key").to_pylist(), events.column("v").to_pylist())) == [("c1", 10), ("c3", 3)]
    scores = DeltaTable(f"s3://{BUCKET}/lakehouse/gold/scores", storage_options=options)
    assert len(scores.file_uris()) == 1 and scores.to_pyarrow_table().num_rows == 3


def test_the_delta_rs_engine_refuses_an_object_store_lakehouse_in_one_line(spark, settings):
    from atende.lakehouse.tables import Lakehouse, LakehouseError

    rs = settings.storage.model_copy(update={"engine": "delta-rs"})
    with pytest.raises(LakehouseError, match="needs the delta-spark engine"):
        Lakehouse(spark, f"s3a://{BUCKET}/lakehouse", rs)
