"""The lakehouse I/O layer: delta-rs engine in full; delta-spark where its classes load."""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from deltalake import DeltaTable
from pyspark.testing import assertDataFrameEqual

from lakehouse.spark import delta_spark_available
from lakehouse.tables import (
    ConcurrentWriteError,
    DeltaRsEngine,
    Lakehouse,
    LakehouseError,
)

SCHEMA = "id long, channel string, at timestamp, day date, score double"
UTC = dt.timezone.utc


def rows(*ids, channel="webchat", day=dt.date(2026, 3, 1)):
    return [(i, channel, dt.datetime(2026, 3, 1, 12, i % 60, tzinfo=UTC), day, i / 2) for i in ids]


@pytest.fixture()
def lake(spark, settings, tmp_path):
    return Lakehouse(spark, tmp_path / "lake", settings.storage, engine=DeltaRsEngine(spark, settings.storage))


def frame(spark, data):
    return spark.createDataFrame(data, SCHEMA)


def ids(lake, version=None):
    return sorted(r["id"] for r in lake.read("bronze", "t", version).collect())


def test_round_trip_keeps_types_and_opens_with_deltalake(spark, lake):
    data = rows(1, 2) + rows(3, channel="email", day=dt.date(2026, 3, 2))
    info = lake.write("bronze", "t", frame(spark, data), partition_by=["channel"])
    assert info.version == 0 and info.rows_written == 3
    back = lake.read("bronze", "t")
    assert [f.name for f in back.schema.fields] == ["id", "channel", "at", "day", "score"]
    assertDataFrameEqual(back, frame(spark, data))
    table = DeltaTable(lake.path("bronze", "t"))
    assert table.metadata().partition_columns == ["channel"]
    arrow = table.to_pyarrow_table()
    assert arrow.num_rows == 3
    assert str(arrow.schema.field("at").type) == "timestamp[us, tz=UTC]"
    # partition folders in Hive layout, no staging leftovers
    assert (Path(lake.path("bronze", "t")) / "channel=email").is_dir()
    assert not any((Path(lake.path("bronze", "t")) / "_staging").iterdir())
    # file stats carry the record counts
    assert sum(table.get_add_actions(flatten=True).column("num_records").to_pylist()) == 3


def test_append_and_time_travel(spark, lake):
    lake.write("bronze", "t", frame(spark, rows(1, 2)))
    lake.write("bronze", "t", frame(spark, rows(3)))
    assert ids(lake) == [1, 2, 3]
    assert ids(lake, version=0) == [1, 2]
    assert lake.version("bronze", "t") == 1
    with pytest.raises(LakehouseError, match="no version 7"):
        lake.read("bronze", "t", version=7).count()


def test_full_overwrite(spark, lake):
    lake.write("bronze", "t", frame(spark, rows(1, 2)))
    info = lake.write("bronze", "t", frame(spark, rows(9)), mode="overwrite")
    assert ids(lake) == [9] and info.files_removed >= 1
    assert ids(lake, version=0) == [1, 2]


def test_partition_overwrite_replaces_only_that_partition(spark, lake):
    lake.write("bronze", "t", frame(spark, rows(1, 2) + rows(3, day=dt.date(2026, 3, 2))), partition_by=["day"])
    lake.write(
        "bronze", "t", frame(spark, rows(10, 11)), mode="overwrite", replace_where="day = DATE'2026-03-01'"
    )
    assert ids(lake) == [3, 10, 11]
    # re-running the same partition overwrite changes nothing: idempotent
    lake.write(
        "bronze", "t", frame(spark, rows(10, 11)), mode="overwrite", replace_where="day = DATE'2026-03-01'"
    )
    assert ids(lake) == [3, 10, 11]


def test_predicate_overwrite_rewrites_files_with_matching_rows(spark, lake):
    lake.write("bronze", "t", frame(spark, rows(1, 2, 3, 4)))
    lake.write("bronze", "t", frame(spark, rows(20, 21)), mode="overwrite", replace_where="id >= 3")
    assert ids(lake) == [1, 2, 20, 21]


def test_bad_predicate_and_schema_mismatch_fail_clearly(spark, lake):
    lake.write("bronze", "t", frame(spark, rows(1)))
    with pytest.raises(LakehouseError, match="bad replace_where"):
        lake.write("bronze", "t", frame(spark, rows(2)), mode="overwrite", replace_where="nope = 1")
    other = spark.createDataFrame([(1, "x")], "id long, other string")
    with pytest.raises(LakehouseError, match="missing channel"):
        lake.write("bronze", "t", other)
    assert ids(lake) == [1]


def test_upsert_updates_and_inserts_by_key(spark, lake):
    lake.write("silver", "t2", spark.createDataFrame([(1, "a"), (2, "b")], "id long, v string"))
    info = lake.upsert("silver", "t2", spark.createDataFrame([(2, "B"), (3, "c")], "id long, v string"), keys=["id"])
    assert info.operation == "upsert"
    got = sorted(tuple(r) for r in lake.read("silver", "t2").collect())
    assert got == [(1, "a"), (2, "B"), (3, "c")]
    with pytest.raises(LakehouseError, match="several rows for key"):
        lake.upsert("silver", "t2", spark.createDataFrame([(5, "x"), (5, "y")], "id long, v string"), keys=["id"])


def test_history_and_vacuum(spark, lake, tmp_path):
    lake.write("bronze", "t", frame(spark, rows(1)))
    lake.write("bronze", "t", frame(spark, rows(2)), mode="overwrite")
    ops = [h["operation"] for h in lake.history("bronze", "t")]
    assert ops[-1] == "CREATE TABLE" and len(ops) == 2
    removed = lake.vacuum("bronze", "t", retention_hours=0)
    assert removed, "the overwritten file should be vacuumed"
    assert ids(lake) == [2]


def test_concurrent_overwrite_loser_retries_and_table_stays_whole(spark, settings, tmp_path):
    engine = DeltaRsEngine(spark, settings.storage)
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=engine)
    lake.write("bronze", "t", frame(spark, rows(1, 2)))
    other = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=DeltaRsEngine(spark, settings.storage))
    fired = []

    def rival_commits_first(path):
        # the other writer wins the race between our snapshot and our commit
        if not fired:
            fired.append(True)
            other.write("bronze", "t", frame(spark, rows(50)), mode="overwrite")

    engine.before_commit = rival_commits_first
    lake.write("bronze", "t", frame(spark, rows(60)), mode="overwrite")
    assert fired
    assert ids(lake) == [60]  # loser retried on the new snapshot: no leftovers of either older version
    assert [h["version"] for h in lake.history("bronze", "t")] == [2, 1, 0]
    assert ids(lake, version=1) == [50]


def test_concurrent_writer_fails_cleanly_without_retries(spark, settings, tmp_path):
    no_retry = settings.storage.model_copy(update={"commit_retries": 0})
    engine = DeltaRsEngine(spark, no_retry)
    lake = Lakehouse(spark, tmp_path / "lake", no_retry, engine=engine)
    lake.write("bronze", "t", frame(spark, rows(1)))
    other = Lakehouse(spark, tmp_path / "lake", no_retry, engine=DeltaRsEngine(spark, no_retry))

    def rival(path):
        engine.before_commit = None
        other.write("bronze", "t", frame(spark, rows(7)), mode="overwrite")

    engine.before_commit = rival
    with pytest.raises(ConcurrentWriteError, match="another writer"):
        lake.write("bronze", "t", frame(spark, rows(8)), mode="overwrite")
    assert ids(lake) == [7]
    assert DeltaTable(lake.path("bronze", "t")).version() == 1


def test_concurrent_appends_both_land(spark, settings, tmp_path):
    engine = DeltaRsEngine(spark, settings.storage)
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=engine)
    lake.write("bronze", "t", frame(spark, rows(1)))
    other = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=DeltaRsEngine(spark, settings.storage))

    def rival(path):
        engine.before_commit = None
        other.write("bronze", "t", frame(spark, rows(2)))

    engine.before_commit = rival
    lake.write("bronze", "t", frame(spark, rows(3)))
    assert ids(lake) == [1, 2, 3]


KILL_SCRIPT = textwrap.dedent(
    """
    import datetime as dt, os, signal, sys
    from conf import load_settings
    from lakehouse.spark import build_spark_session
    from lakehouse.tables import Lakehouse
    settings = load_settings("local", environ={})
    settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"master": "local[1]", "shuffle_partitions": 1, "driver_memory": "1g"})})
    spark = build_spark_session(settings)
    lake = Lakehouse(spark, sys.argv[1], settings.storage)
    if sys.argv[2] == "kill":
        lake.engine.before_commit = lambda path: os.kill(os.getpid(), signal.SIGKILL)
    data = [(i, "webchat", dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc), dt.date(2026, 3, 1), 1.0) for i in (100, 101)]
    lake.write("bronze", "t", spark.createDataFrame(data, "id long, channel string, at timestamp, day date, score double"), mode="overwrite")
    print("committed")
    """
)


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_previous_version_and_rerun_completes(spark, lake, tmp_path):
    lake.write("bronze", "t", frame(spark, rows(1, 2)))
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    killed = subprocess.run([sys.executable, str(script), str(lake.root), "kill"], env=env, capture_output=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    # the killed writer's files are on disk but in no commit
    assert DeltaTable(lake.path("bronze", "t")).version() == 0
    assert ids(lake) == [1, 2]
    orphans = [p for p in Path(lake.path("bronze", "t")).glob("*.parquet")]
    assert len(orphans) > len(DeltaTable(lake.path("bronze", "t")).file_uris())
    rerun = subprocess.run([sys.executable, str(script), str(lake.root), "ok"], env=env, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert ids(lake) == [100, 101]
    lake.vacuum("bronze", "t", retention_hours=0)
    assert len(list(Path(lake.path("bronze", "t")).glob("*.parquet"))) == len(DeltaTable(lake.path("bronze", "t")).file_uris())


def test_engine_choice_is_automatic(spark, settings, tmp_path):
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage)
    expected = "delta-spark" if delta_spark_available(spark) else "delta-rs"
    assert lake.engine.name == expected



def _delta_spark_loaded(spark) -> bool:
    return delta_spark_available(spark)


def test_delta_spark_engine_round_trip(spark, settings, tmp_path):
    if not _delta_spark_loaded(spark):
        pytest.skip("delta-spark classes are not on this Spark's classpath (the Maven repository is unreachable here)")
    from lakehouse.tables import DeltaSparkEngine

    lake = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=DeltaSparkEngine(spark, settings.storage))
    lake.write("bronze", "t", frame(spark, rows(1, 2)), partition_by=["day"])
    lake.write("bronze", "t", frame(spark, rows(3)), mode="overwrite", replace_where="day = DATE'2026-03-01'")
    assert ids(lake) == [3]
    assert DeltaTable(lake.path("bronze", "t")).to_pyarrow_table().num_rows == 1
