"""The lakehouse I/O layer, on both engines: delta-spark (the connector inside Spark, fetched from Maven at
session start) and delta-rs (Spark writes Parquet, the driver commits with the deltalake package).

The suite's Spark session has the connector, so a delta-spark test here never skips for want of it; the
delta-rs engine runs on the same session (it needs nothing of the connector)."""
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
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from atende.lakehouse.spark import _classpath_record, _recorded_jars, delta_package, delta_spark_available
from atende.lakehouse.tables import (
    ConcurrentWriteError,
    DeltaRsEngine,
    DeltaSparkEngine,
    Lakehouse,
    LakehouseError,
)

ENGINES = {"delta-spark": DeltaSparkEngine, "delta-rs": DeltaRsEngine}

SCHEMA = "id long, channel string, at timestamp, day date, score double"
UTC = dt.timezone.utc


def rows(*ids, channel="webchat", day=dt.date(2026, 3, 1)):
    return [(i, channel, dt.datetime(2026, 3, 1, 12, i % 60, tzinfo=UTC), day, i / 2) for i in ids]


@pytest.fixture(scope="session", autouse=True)
def _connector_loaded(spark):
    assert delta_spark_available(spark), (
        "the suite's Spark session has no Delta connector: its jars could not be fetched from Maven "
        "(see the warning at session start)"
    )


@pytest.fixture(params=sorted(ENGINES))
def lake(request, spark, settings, tmp_path):
    engine = ENGINES[request.param](spark, settings.storage)
    return Lakehouse(spark, tmp_path / "lake", settings.storage, engine=engine)


def frame(spark, data):
    return spark.createDataFrame(data, SCHEMA)


def ids(lake, version=None):
    return sorted(r["id"] for r in lake.read("bronze", "t", version).collect())


def ids_of(lake, layer, table="t"):
    return sorted(r["id"] for r in lake.read(layer, table).collect())


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
    staging = Path(lake.path("bronze", "t")) / "_staging"
    assert not staging.exists() or not any(staging.iterdir())
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



@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_a_lakehouse_reached_through_a_symlink_of_another_length_is_written_alike(spark, settings, tmp_path, engine):
    """delta-rs lists, and Spark then reports, the resolved paths of a table reached through a symlink
    (a /data link, macOS's /var): a predicate overwrite must still find its files in the log."""
    (tmp_path / "real-disk-folder").mkdir()
    (tmp_path / "ln").symlink_to(tmp_path / "real-disk-folder")
    lake = Lakehouse(spark, tmp_path / "ln" / "lake", settings.storage, engine=ENGINES[engine](spark, settings.storage))
    lake.write("bronze", "t", frame(spark, rows(1, 2, 3, 4) + rows(5, day=dt.date(2026, 3, 2))), partition_by=["day"])
    lake.write("bronze", "t", frame(spark, rows(20)), mode="overwrite", replace_where="id >= 3")
    assert ids(lake) == [1, 2, 20]

def test_bad_predicate_and_schema_mismatch_fail_clearly(spark, lake):
    lake.write("bronze", "t", frame(spark, rows(1)))
    with pytest.raises(LakehouseError, match="bad replace_where"):
        lake.write("bronze", "t", frame(spark, rows(2)), mode="overwrite", replace_where="nope = 1")
    other = spark.createDataFrame([(1, "x")], "id long, other string")
    with pytest.raises(LakehouseError, match="missing channel"):
        lake.write("bronze", "t", other)
    assert ids(lake) == [1]


def test_a_table_written_by_an_earlier_version_takes_new_columns(spark, lake):
    """A newer atende writes a column the table lacks (gold/recommendations' holdout, say): the column is
    added to the table (older rows read null), on append, overwrite and upsert alike; a missing or retyped
    column still fails."""
    lake.write("gold", "t", frame(spark, rows(1, 2)))
    newer = spark.createDataFrame([(3, "webchat", dt.datetime(2026, 3, 1, tzinfo=UTC), dt.date(2026, 3, 1), 1.5,
                                    True, [1, 2])],
                                  SCHEMA + ", holdout boolean, tags array<int>")
    lake.write("gold", "t", newer)
    back = {r["id"]: (r["holdout"], r["tags"]) for r in lake.read("gold", "t").collect()}
    assert back == {1: (None, None), 2: (None, None), 3: (True, [1, 2])}
    assert lake.read("gold", "t").columns[-2:] == ["holdout", "tags"]
    # the other engine reads what this one evolved
    other = [e for name, e in ENGINES.items() if name != lake.engine.name][0](spark, lake.settings)
    assert other.spark_schema(lake.path("gold", "t")).fieldNames()[-2:] == ["holdout", "tags"]
    lake.write("gold", "t", newer.withColumn("holdout", F.lit(False)), mode="overwrite")
    assert [r["holdout"] for r in lake.read("gold", "t").collect()] == [False]
    lake.write("silver", "u", spark.createDataFrame([(1, "a")], "id long, v string"))
    lake.upsert("silver", "u", spark.createDataFrame([(1, "A", 7)], "id long, v string, n int"), keys=["id"])
    assert [tuple(r) for r in lake.read("silver", "u").collect()] == [(1, "A", 7)]
    with pytest.raises(LakehouseError, match="missing score"):
        lake.write("gold", "t", newer.drop("score"))
    with pytest.raises(LakehouseError, match="changed holdout"):
        lake.write("gold", "t", newer.withColumn("holdout", F.lit("yes")))


def test_upsert_updates_and_inserts_by_key(spark, lake):
    lake.write("silver", "t2", spark.createDataFrame([(1, "a"), (2, "b")], "id long, v string"))
    info = lake.upsert("silver", "t2", spark.createDataFrame([(2, "B"), (3, "c")], "id long, v string"), keys=["id"])
    assert info.operation == "upsert"
    got = sorted(tuple(r) for r in lake.read("silver", "t2").collect())
    assert got == [(1, "a"), (2, "B"), (3, "c")]
    with pytest.raises(LakehouseError, match="several rows for key"):
        lake.upsert("silver", "t2", spark.createDataFrame([(5, "x"), (5, "y")], "id long, v string"), keys=["id"])



def test_upsert_removes_keys_in_the_same_commit(spark, lake):
    """Incremental silver replaces a unit's rows: keys given to `remove` leave the table unless the written
    rows hold them too (then they are updated), all in one commit; a removed key the table lacks is ignored."""
    schema = "id long, part string, v string"
    lake.write("silver", "t3", spark.createDataFrame([(1, "a", "x"), (2, "a", "y"), (3, "b", "z")], schema),
               partition_by=["part"])
    before = lake.version("silver", "t3")
    lake.upsert("silver", "t3", spark.createDataFrame([(2, "a", "Y"), (4, "b", "w")], schema), keys=["id"],
                partition_by=["part"], remove=spark.createDataFrame([(1,), (2,), (9,)], "id long"))
    assert sorted(tuple(r) for r in lake.read("silver", "t3").collect()) == [(2, "a", "Y"), (3, "b", "z"), (4, "b", "w")]
    assert lake.version("silver", "t3") == before + 1
    # only removals: nothing written, the row leaves
    lake.upsert("silver", "t3", spark.createDataFrame([], schema), keys=["id"], partition_by=["part"],
                remove=spark.createDataFrame([(3,)], "id long"))
    assert sorted(r["id"] for r in lake.read("silver", "t3").collect()) == [2, 4]

def test_history_and_vacuum(spark, lake, tmp_path):
    lake.write("bronze", "t", frame(spark, rows(1)))
    lake.write("bronze", "t", frame(spark, rows(2)), mode="overwrite")
    history = lake.history("bronze", "t")
    assert [h["version"] for h in history] == [1, 0]
    removed = lake.vacuum("bronze", "t", retention_hours=0)
    assert removed >= 1, "the overwritten file should be vacuumed"
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
    import datetime as dt, os, signal, sys, time
    from pathlib import Path
    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse
    root, how, engine = sys.argv[1], sys.argv[2], sys.argv[3]
    settings = load_settings("local", environ={})
    settings = settings.model_copy(update={
        # a checkpoint directory of the test's own: the session factory's temporary one is removed at exit,
        # which a killed process never reaches
        "spark": settings.spark.model_copy(update={"master": "local[2]", "shuffle_partitions": 1, "driver_memory": "1g",
                                                   "conf": {"spark.checkpoint.dir": str(Path(root).parent / "checkpoints")}}),
        "storage": settings.storage.model_copy(update={"engine": engine}),
    })
    spark = build_spark_session(settings)
    lake = Lakehouse(spark, root, settings.storage)
    assert lake.engine.name == engine, lake.engine.name
    data = [(i, "webchat", dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc), dt.date(2026, 3, 1), 1.0) for i in (100, 101)]
    frame = spark.createDataFrame(data, "id long, channel string, at timestamp, day date, score double").repartition(2, "id")
    if how == "kill" and engine == "delta-rs":
        # the files are in the table's folder, the commit not yet made
        lake.engine.before_commit = lambda path: os.kill(os.getpid(), signal.SIGKILL)
    elif how == "kill":
        # delta-spark writes each task's file straight into the table, then commits on the driver: one task
        # waits until the other task's file is there and kills the driver (and with it the JVM) mid-job
        driver, table = os.getpid(), Path(lake.path("bronze", "t"))
        before = {p.name for p in table.glob("*.parquet")}
        from pyspark.sql.functions import pandas_udf

        @pandas_udf("long")
        def killer(ids):
            if 101 in set(ids):
                for _ in range(600):
                    if {p.name for p in table.glob("*.parquet")} - before:
                        # the driver, its JVM and the Python workers at once, as a lost machine would
                        os.killpg(os.getpgid(driver), signal.SIGKILL)
                    time.sleep(0.05)
            return ids

        frame = frame.withColumn("id", killer("id"))
    lake.write("bronze", "t", frame, mode="overwrite")
    print("committed")
    """
)


@pytest.mark.slow
def test_writer_killed_mid_write_leaves_previous_version_and_rerun_completes(spark, lake, tmp_path):
    lake.write("bronze", "t", frame(spark, rows(1, 2)))
    script = tmp_path / "writer.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    run = [sys.executable, str(script), str(lake.root)]
    killed = subprocess.run([*run, "kill", lake.engine.name], env=env, capture_output=True, timeout=300,
                            start_new_session=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    # the killed writer's files are on disk but in no commit
    assert DeltaTable(lake.path("bronze", "t")).version() == 0
    assert ids(lake) == [1, 2]
    orphans = [p for p in Path(lake.path("bronze", "t")).glob("*.parquet")]
    assert len(orphans) > len(DeltaTable(lake.path("bronze", "t")).file_uris())
    rerun = subprocess.run([*run, "ok", lake.engine.name], env=env, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert ids(lake) == [100, 101]
    lake.vacuum("bronze", "t", retention_hours=0)
    assert len(list(Path(lake.path("bronze", "t")).glob("*.parquet"))) == len(DeltaTable(lake.path("bronze", "t")).file_uris())


def test_engine_choice_is_automatic(spark, settings, tmp_path):
    assert Lakehouse(spark, tmp_path / "lake", settings.storage).engine.name == "delta-spark"
    rs = settings.storage.model_copy(update={"engine": "delta-rs"})
    assert Lakehouse(spark, tmp_path / "lake", rs).engine.name == "delta-rs"


@pytest.mark.parametrize("writer,reader", [("delta-spark", "delta-rs"), ("delta-rs", "delta-spark")])
def test_a_table_written_by_one_engine_is_read_and_extended_by_the_other(spark, settings, tmp_path, writer, reader):
    first = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=ENGINES[writer](spark, settings.storage))
    second = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=ENGINES[reader](spark, settings.storage))
    data = rows(1, 2) + rows(3, day=dt.date(2026, 3, 2))
    first.write("silver", "t", frame(spark, data), partition_by=["day"])
    assertDataFrameEqual(second.read("silver", "t"), frame(spark, data))
    second.write("silver", "t", frame(spark, rows(7)), mode="overwrite", replace_where="day = DATE'2026-03-01'")
    assert sorted(r["id"] for r in first.read("silver", "t").collect()) == [3, 7]
    assert first.version("silver", "t") == second.version("silver", "t") == 1


def test_table_properties_come_from_config_per_layer(spark, settings, tmp_path):
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=DeltaSparkEngine(spark, settings.storage))
    lake.write("silver", "s", frame(spark, rows(1)))
    lake.write("bronze", "b", frame(spark, rows(1)))
    silver = lake.engine.properties(lake.path("silver", "s"))
    assert silver["delta.enableChangeDataFeed"] == "true"
    assert silver["delta.checkpointInterval"] == "10"
    assert "delta.enableChangeDataFeed" not in lake.engine.properties(lake.path("bronze", "b"))
    # the change feed of a silver table says what a later write changed
    lake.write("silver", "s", frame(spark, rows(2)))
    changes = (spark.read.format("delta").option("readChangeFeed", "true").option("startingVersion", 1)
               .load(lake.path("silver", "s")).collect())
    assert [(r["id"], r["_change_type"]) for r in changes] == [(2, "insert")]
    # delta-rs leaves out what it cannot write (deletion vectors) and keeps the rest
    asked = settings.storage.model_copy(update={"table_properties": {
        "silver": {"delta.enableChangeDataFeed": "true", "delta.enableDeletionVectors": "true"}}})
    rs = Lakehouse(spark, tmp_path / "lake", asked, engine=DeltaRsEngine(spark, asked))
    rs.write("silver", "r", frame(spark, rows(1)))
    config = DeltaTable(rs.path("silver", "r")).metadata().configuration
    assert config.get("delta.enableChangeDataFeed") == "true" and "delta.enableDeletionVectors" not in config


def test_change_feed_of_a_silver_table_says_what_each_write_changed(spark, lake):
    lake.write("silver", "t", frame(spark, rows(1, 2) + rows(3, day=dt.date(2026, 3, 2))), partition_by=["day"])
    lake.write("silver", "t", frame(spark, rows(4, day=dt.date(2026, 3, 2))))
    lake.write("silver", "t", frame(spark, rows(5)), mode="overwrite", replace_where="day = DATE'2026-03-01'")
    changes = lake.changes("silver", "t", since_version=1)
    got = sorted((r["_commit_version"], r["_change_type"], r["id"]) for r in changes.collect())
    assert got == [(1, "insert", 4), (2, "delete", 1), (2, "delete", 2), (2, "insert", 5)]
    assert {"_change_type", "_commit_version", "_commit_timestamp", "id", "day"} <= set(changes.columns)


def test_delete_purge_and_vacuum_erase_rows_from_every_file(spark, lake):
    lake.write("silver", "t", frame(spark, rows(1, 2, 3)))
    info = lake.delete("silver", "t", "id = 2")
    assert info.operation == "delete"
    assert ids_of(lake, "silver") == [1, 3]
    assert sorted(r["id"] for r in lake.read("silver", "t", version=0).collect()) == [1, 2, 3]  # time travel keeps it
    lake.purge("silver", "t")
    lake.vacuum("silver", "t", retention_hours=0)
    # no Parquet file left in the table's folder holds the erased row
    import pyarrow.parquet as pq

    left = [pq.read_table(p).column("id").to_pylist() for p in Path(lake.path("silver", "t")).rglob("*.parquet")]
    assert 2 not in [i for file_ids in left for i in file_ids]
    assert ids_of(lake, "silver") == [1, 3]
    with pytest.raises(LakehouseError, match="bad delete predicate"):
        lake.delete("silver", "t", "nope = 1")


def test_deletion_vectors_on_request_delete_purge_and_lock_out_delta_rs(spark, settings, tmp_path):
    import pyarrow.parquet as pq

    dv = settings.storage.model_copy(update={"table_properties": {"gold": {"delta.enableDeletionVectors": "true"}}})
    lake = Lakehouse(spark, tmp_path / "lake", dv, engine=DeltaSparkEngine(spark, dv))
    lake.write("gold", "t", frame(spark, rows(1, 2, 3)).coalesce(1))
    lake.delete("gold", "t", "id = 2")
    assert ids_of(lake, "gold") == [1, 3]
    # the deletion vector hides the row; the data file still holds it until a purge rewrites it
    def files():
        return [i for p in Path(lake.path("gold", "t")).rglob("*.parquet") for i in pq.read_table(p).column("id").to_pylist()]

    assert 2 in files()
    lake.purge("gold", "t")
    lake.vacuum("gold", "t", retention_hours=0)
    assert 2 not in files() and ids_of(lake, "gold") == [1, 3]
    # the delta-rs engine cannot apply deletion vectors: it refuses the table instead of showing deleted rows
    rs = Lakehouse(spark, tmp_path / "lake", dv, engine=DeltaRsEngine(spark, dv))
    with pytest.raises(LakehouseError, match="deletionVectors"):
        rs.read("gold", "t")


def test_row_counts_and_date_maxima_from_the_log_match_a_scan(spark, lake, monkeypatch):
    """`row_count` and `column_max` read the Delta log (no Spark job) and agree with Spark's own count and
    max; where the log's statistics are not exact (a string, a timestamp, a partition column) they scan."""
    import atende.lakehouse.tables as tables

    lake.write("silver", "t", frame(spark, rows(1, 2) + rows(3, channel="email", day=dt.date(2026, 3, 4))),
               partition_by=["channel"])
    lake.write("silver", "t", frame(spark, [(4, "email", None, None, None)]), mode="append")
    lake.write("silver", "empty", frame(spark, []))
    path = lake.path("silver", "t")
    assert tables.log_row_count(path) == 4 == lake.read("silver", "t").count()
    assert tables.log_column_max(path, "day") == (True, dt.date(2026, 3, 4))
    assert tables.log_column_max(path, "id") == (True, 4)
    for inexact in ("at", "channel", "score"):  # timestamp (stats kept to the ms), partition column, double
        assert tables.log_column_max(path, inexact) == (False, None)
    assert tables.log_row_count(lake.path("silver", "empty")) == 0
    assert tables.log_column_max(lake.path("silver", "empty"), "day") == (True, None)
    assert lake.row_count("silver", "t") == 4 and lake.column_max("silver", "t", "day") == dt.date(2026, 3, 4)
    expected_at = lake.read("silver", "t").agg({"at": "max"}).first()[0]
    assert lake.column_max("silver", "t", "at") == expected_at  # the scan answers
    # when the log cannot answer (here: pretend the package failed), Spark does, with the same figures
    monkeypatch.setattr(tables, "_log_files", lambda path, storage_options=None: None)
    assert lake.row_count("silver", "t") == 4 and lake.column_max("silver", "t", "day") == dt.date(2026, 3, 4)
    assert lake.row_count("silver", "empty") == 0 and lake.column_max("silver", "empty", "day") is None


def test_a_row_hidden_by_a_deletion_vector_is_not_counted(spark, settings, tmp_path):
    """The log's per-file row counts include rows a deletion vector hides: such a table is counted by Spark."""
    import atende.lakehouse.tables as tables

    dv = settings.storage.model_copy(update={"table_properties": {"gold": {"delta.enableDeletionVectors": "true"}}})
    lake = Lakehouse(spark, tmp_path / "lake", dv, engine=DeltaSparkEngine(spark, dv))
    lake.write("gold", "t", frame(spark, rows(1, 2, 3)).coalesce(1))
    assert tables.log_row_count(lake.path("gold", "t")) == 3  # no deletion vector yet: the log answers
    lake.delete("gold", "t", "id = 3")
    assert tables.log_row_count(lake.path("gold", "t")) is None
    assert tables.log_column_max(lake.path("gold", "t"), "id") == (False, None)
    assert lake.row_count("gold", "t") == 2 and lake.column_max("gold", "t", "id") == 2


def test_optimize_compacts_and_zorders_by_customer_key(spark, lake):
    schema = "customer_key string, day date, v long"
    for i in range(4):
        lake.write("gold", "g", spark.createDataFrame([(f"c{i}", dt.date(2026, 3, 1), i)], schema))
    before = len(DeltaTable(lake.path("gold", "g")).file_uris())
    result = lake.optimize("gold", "g")
    assert before >= 4 and result["files_removed"] == before and result["files_added"] == 1
    assert len(DeltaTable(lake.path("gold", "g")).file_uris()) == 1
    assert sorted(r["v"] for r in lake.read("gold", "g").collect()) == [0, 1, 2, 3]


def test_concurrent_appends_from_two_threads_both_land_on_delta_spark(spark, settings, tmp_path):
    import threading

    lake = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=DeltaSparkEngine(spark, settings.storage))
    lake.write("bronze", "t", frame(spark, rows(1)))
    errors = []

    def append(i):
        try:
            lake.write("bronze", "t", frame(spark, rows(i)))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(i,)) for i in (2, 3, 4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ids(lake) == [1, 2, 3, 4]


FETCH_SCRIPT = textwrap.dedent(
    """
    import sys
    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session
    from atende.lakehouse.tables import Lakehouse
    settings = load_settings("local", environ={})
    settings = settings.model_copy(update={
        "spark": settings.spark.model_copy(update={
            "master": "local[1]", "driver_memory": "1g",
            # a version Maven Central does not have, in an Ivy cache of its own
            "delta_package": "io.delta:delta-spark_4.2_2.13:0.0.404", "jars_ivy": sys.argv[2]}),
        "storage": settings.storage.model_copy(update={"engine": sys.argv[1]}),
    })
    spark = build_spark_session(settings)
    print("engine:", Lakehouse(spark, sys.argv[3], settings.storage).engine.name)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["auto", "delta-spark"])
def test_connector_that_cannot_be_fetched_falls_back_or_fails_in_one_line(tmp_path, engine):
    script = tmp_path / "fetch.py"
    script.write_text(FETCH_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script), engine, str(tmp_path / "ivy"), str(tmp_path / "lake")],
                          env=env, capture_output=True, text=True, timeout=300)
    if engine == "auto":
        assert done.returncode == 0, done.stderr[-2000:]
        assert "engine: delta-rs" in done.stdout
        warning = [line for line in done.stderr.splitlines() if line.startswith("warning: could not fetch")]
        assert len(warning) == 1 and "io.delta:delta-spark_4.2_2.13:0.0.404" in warning[0]
        assert "delta-rs engine" in warning[0]
    else:
        assert done.returncode != 0
        last = done.stderr.strip().splitlines()[-1]
        assert "SparkStartError: could not fetch io.delta:delta-spark_4.2_2.13:0.0.404" in last
        assert "storage.engine: delta-rs" in last


JARS_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from atende.conf import load_settings
    from atende.lakehouse.spark import build_spark_session, delta_spark_available
    settings = load_settings("local", environ={})
    settings = settings.model_copy(update={
        "spark": settings.spark.model_copy(update={"master": "local[1]", "driver_memory": "1g"})})
    spark = build_spark_session(settings, jvm_log=Path(sys.argv[1]))
    print("packages:", spark.sparkContext.getConf().get("spark.jars.packages", "none"))
    print("delta:", delta_spark_available(spark))
    """
)


@pytest.mark.slow
def test_a_later_start_takes_the_jars_ivy_resolved_before_without_resolving_again(spark, settings, tmp_path):
    """Ivy resolves the connector at every start (seconds, though every jar is cached): the jars a start resolved
    are listed beside Ivy's cache, and the next start hands them to Spark directly, Delta classes and all."""
    record = _classpath_record(settings, [delta_package(settings)])
    jars = _recorded_jars(record)  # the suite's own session resolved (or read) them
    assert jars and any("delta-spark" in j for j in jars), record
    script = tmp_path / "start.py"
    script.write_text(JARS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "jvm.log")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "packages: none" in done.stdout and "delta: True" in done.stdout, done.stdout
    assert "resolution report" not in (tmp_path / "jvm.log").read_text()  # Ivy did not run
    # a list naming a jar that is gone is not used (Ivy resolves, and lists them again)
    stale = tmp_path / "stale.txt"
    stale.write_text(jars[0] + "\n" + str(tmp_path / "gone.jar") + "\n")
    assert _recorded_jars(stale) is None and _recorded_jars(tmp_path / "absent.txt") is None
    other = settings.model_copy(update={"spark": settings.spark.model_copy(update={"jars_repositories": ("https://m",)})})
    assert _classpath_record(other, [delta_package(settings)]) != record


def test_writing_with_other_partition_columns_fails_clearly(spark, lake):
    lake.write("bronze", "t", frame(spark, rows(1)), partition_by=["day"])
    with pytest.raises(LakehouseError, match="partitioned"):
        lake.write("bronze", "t", frame(spark, rows(2)), partition_by=["channel"])
    assert ids(lake) == [1]
