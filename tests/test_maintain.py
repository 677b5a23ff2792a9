"""`atende maintain` (optimize, vacuum, register) and `atende sql`, on both engines."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from deltalake import DeltaTable

from atende.jobs import cli
from atende.jobs.maintain import optimize_tables, register_tables, vacuum_tables
from atende.lakehouse.tables import DeltaRsEngine, DeltaSparkEngine, Lakehouse

ENGINES = {"delta-spark": DeltaSparkEngine, "delta-rs": DeltaRsEngine}
SCHEMA = "customer_key string, day date, v long"


@pytest.fixture(params=sorted(ENGINES))
def lake(request, spark, settings, tmp_path):
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage, engine=ENGINES[request.param](spark, settings.storage))
    # a gold table grown by three small appends, a silver table overwritten once
    for i in range(3):
        lake.write("gold", "g", spark.createDataFrame([(f"c{i}", dt.date(2026, 3, 1), i)], SCHEMA))
    lake.write("silver", "s", spark.createDataFrame([("c1", dt.date(2026, 3, 1), 1)], SCHEMA))
    lake.write("silver", "s", spark.createDataFrame([("c2", dt.date(2026, 3, 1), 2)], SCHEMA), mode="overwrite")
    return lake


def live_files(lake, layer, table):
    return len(DeltaTable(lake.path(layer, table)).file_uris())


def on_disk(lake, layer, table):
    return len(list(Path(lake.path(layer, table)).rglob("*.parquet")))


def test_optimize_compacts_only_the_chosen_tables(lake):
    before = live_files(lake, "gold", "g")
    done = optimize_tables(lake, tables=("gold.g",))
    assert [d.table for d in done] == ["gold.g"]
    assert done[0].files_removed == before and live_files(lake, "gold", "g") == 1
    assert sorted(r["v"] for r in lake.read("gold", "g").collect()) == [0, 1, 2]
    with pytest.raises(ValueError, match="no such table"):
        optimize_tables(lake, tables=("gold.nope",))


def test_vacuum_keeps_what_the_retention_needs_and_drops_the_rest(lake):
    # the default retention (a week) keeps the overwritten file: time travel still reads version 0
    vacuum_tables(lake, layers=("silver",))
    assert [r["customer_key"] for r in lake.read("silver", "s", version=0).collect()] == ["c1"]
    done = vacuum_tables(lake, retention_hours=0, layers=("silver",))
    assert [d.table for d in done] == ["silver.s"] and done[0].files_removed >= 1
    assert on_disk(lake, "silver", "s") == live_files(lake, "silver", "s")
    assert [r["customer_key"] for r in lake.read("silver", "s").collect()] == ["c2"]



def test_vacuuming_the_whole_lakehouse_clears_model_scratch_a_crashed_run_left(lake, settings):
    """A run killed while saving or scoring a Spark model leaves its `_staging/models/` folder behind."""
    import os
    import time

    scratch = Path(lake.uri) / "_staging" / "models"
    old, fresh = scratch / "save-old", scratch / "load-fresh"
    for folder in (old, fresh):
        (folder / "als" / "data").mkdir(parents=True)
        (folder / "als" / "data" / "part-0.parquet").write_bytes(b"x")
    two_days_ago = time.time() - 48 * 3600
    os.utime(old / "als" / "data" / "part-0.parquet", (two_days_ago, two_days_ago))

    done = vacuum_tables(lake, retention_hours=24, layers=("silver",))  # a chosen layer: scratch untouched
    assert old.exists() and "_staging/models" not in [d.table for d in done]
    done = vacuum_tables(lake, retention_hours=24)
    assert [d.files_removed for d in done if d.table == "_staging/models"] == [1]
    assert not old.exists() and fresh.exists()

def test_registered_tables_answer_sql_by_name(spark, lake, settings):
    names = register_tables(spark, lake, "atende_")
    assert names == ["atende_silver.s", "atende_gold.g"]
    rows = spark.sql("SELECT count(*) AS n FROM atende_gold.g").collect()
    assert rows[0]["n"] == 3
    # registering again is a no-op; another lakehouse takes the names over
    assert register_tables(spark, lake, "atende_") == names


def test_cli_maintain_and_sql(spark, lake, settings, monkeypatch, capsys):
    class KeepOpen:
        """The CLI stops its session at the end; the suite's session must survive."""
        def __getattr__(self, name):
            return getattr(spark, name)

        def stop(self):
            pass

    monkeypatch.setattr(cli, "_open_lakehouse", lambda s, path, verbose=False: (KeepOpen(), lake))
    wide = settings.model_copy()
    assert cli.cmd_maintain(cli.build_parser().parse_args(
        ["maintain", "optimize", "--lakehouse", str(lake.root), "--layer", "gold"]), wide) == 0
    out = capsys.readouterr().out
    assert "gold.g" in out and lake.engine.name in out
    assert cli.cmd_maintain(cli.build_parser().parse_args(
        ["maintain", "vacuum", "--lakehouse", str(lake.root), "--retention-hours", "0"]), wide) == 0
    assert "time travel now reaches back to" in capsys.readouterr().out
    assert cli.cmd_sql(cli.build_parser().parse_args(
        ["sql", "--lakehouse", str(lake.root), "SELECT customer_key FROM atende_silver.s"]), wide) == 0
    assert "c2" in capsys.readouterr().out


def test_a_local_metastore_folder_makes_a_hive_catalog(tmp_path):
    from atende.lakehouse.spark import metastore_options

    assert metastore_options(None) == {}
    options = metastore_options(str(tmp_path / "cat"))
    assert options["spark.sql.catalogImplementation"] == "hive"
    assert options["spark.hadoop.javax.jdo.option.ConnectionURL"].endswith(f"databaseName={tmp_path}/cat/metastore_db;create=true")
