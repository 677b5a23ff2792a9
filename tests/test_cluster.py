"""The small zone's first run (tests/small_zones.py) as a deployment runs it: `spark-submit` to a standalone
cluster, the landing zone and the lakehouse on an object store, every table compared with the same run in local
mode over local folders (issues 16 and 20). A module apart from tests/test_small_zone.py, whose first run is the
same, so that the suite's two workers share the two: this one alone is the suite's longest test."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import boto3
import pyspark
import pytest
import yaml
from conftest import S3_BUCKET, S3_KEYS, delta_rs_s3_options, s3a_spark_conf
from small_zones import differing_tables, make_zones, standalone_cluster

from atende.conf import load_settings
from atende.jobs.run import Runner
from atende.lakehouse.spark import delta_package, resolve_packages
from atende.lakehouse.tables import Lakehouse

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class LocalRun:
    landing: Path
    lake: Lakehouse
    lake_dir: Path


@pytest.fixture(scope="module")
def local_run(spark, settings, tmp_path_factory):
    """The small zone's run in local mode over local folders, on the suite's session (tests/test_small_zone.py
    runs it as `atende run` in a process of its own and checks what the terminal shows)."""
    small, _, _ = make_zones(tmp_path_factory.mktemp("small"))
    lake_dir = tmp_path_factory.mktemp("lake-local") / "lakehouse"
    summary = Runner(spark, settings, small, lake_dir).run()
    assert all(j.status in ("succeeded", "degraded") for j in summary.jobs), [(j.job, j.status, j.error) for j in summary.jobs]
    return LocalRun(small, Lakehouse(spark, lake_dir, settings.storage), lake_dir)


def test_spark_submit_to_a_standalone_cluster_on_s3a_writes_what_local_mode_writes(local_run, settings, s3_server,
                                                                                   tmp_path_factory):
    """Issues 16 and 20: the README's cluster commands, run as a deployment on an object store runs them: a wheel is
    built, `spark-submit` sends `atende run` to a standalone cluster (a master and a worker on 127.0.0.1, its executor
    a JVM of its own) with the Delta and S3A connectors as `--packages`, the landing zone and the lakehouse on
    `s3a://` (an S3-compatible server on 127.0.0.1, moto's). The landing files are listed and read through Hadoop's
    S3A file system by the driver and the executor, and every bronze, silver and gold table holds the rows the
    local-mode run over local folders wrote (both read back by another reader, the deltalake package). The reports'
    engine (delta-rs and DuckDB, no Spark) reads the same store. One whole run covers both paths: until session 29
    they were two (a run on s3a in the suite's session, and the cluster's over local folders)."""
    small = local_run.landing
    client = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id=S3_KEYS["access"],
                          aws_secret_access_key=S3_KEYS["secret"], region_name=S3_KEYS["region"])
    for path in sorted(p for p in small.rglob("*") if p.is_file()):
        client.upload_file(str(path), S3_BUCKET, f"small-landing/{path.relative_to(small).as_posix()}")
    landing, lakehouse = f"s3a://{S3_BUCKET}/small-landing", f"s3a://{S3_BUCKET}/small-lakehouse"

    work = tmp_path_factory.mktemp("cluster")
    repo = Path(__file__).resolve().parents[1]
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                            "-w", str(work / "dist"), str(repo)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-2000:]
    [wheel] = (work / "dist").glob("atende-*.whl")
    conf = work / "small-cluster-s3a.yaml"
    conf.write_text(yaml.safe_dump({
        # a 42-record zone: 400 partitions per shuffle is waste
        "spark": {"shuffle_partitions": 4, "conf": s3a_spark_conf(s3_server)},
        # an object-store lakehouse: MLflow's store is named (no SQLite beside the tables)
        "mlflow": {"tracking_uri": f"sqlite:///{work}/mlflow.db", "artifact_location": (work / "artifacts").as_uri()},
    }))
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    # one two-core worker: two one-core workers took 273 s against 240 s here (one more JVM to start and warm) and
    # test nothing more of atende's: each executor is a process apart from the driver, reading the same paths
    with standalone_cluster(work, workers=1, cores=2) as master:
        command = [
            str(submit), "--master", master,
            "--packages", ",".join([delta_package(settings), *resolve_packages(("hadoop-aws",))]),
            *(["--repositories", ",".join(settings.spark.jars_repositories)] if settings.spark.jars_repositories else []),
            "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
            "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "--py-files", str(wheel),
            str(repo / "jobs" / "cli.py"),
            "--env", "cluster", "--conf", str(conf), "run", "--landing", landing, "--lakehouse", lakehouse,
        ]
        env = {**os.environ, "SPARK_HOME": str(submit.parents[1]), "PYSPARK_PYTHON": sys.executable,
               "PYSPARK_DRIVER_PYTHON": sys.executable}
        done = subprocess.run(command, capture_output=True, text=True, timeout=1500, env=env, cwd=work)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "on the delta-spark engine" in done.stdout
    differing = differing_tables(local_run.lake, str(local_run.lake_dir), f"s3://{S3_BUCKET}/small-lakehouse",
                                  lambda v: v.replace(landing, str(small)), delta_rs_s3_options(s3_server))
    assert not differing, "\n".join(f"{name}: {why}" for name, why in differing.items())

    # the reports read the same store without Spark: delta-rs and DuckDB, pointed at it by the S3A settings
    from atende.jobs.gold_query import open_tables

    on_s3a = load_settings("cluster", conf, environ={})
    query = "SELECT channel, sum(interactions) AS interactions FROM kpis GROUP BY channel ORDER BY channel"
    answers = []
    for root in (lakehouse, str(local_run.lake_dir)):
        with open_tables(on_s3a, root, {"kpis": ("gold", "service_kpis")}) as engine:
            assert engine.name == "duckdb"
            answers.append(engine.sql(query).to_dict("records"))
    assert answers[0] == answers[1] and answers[0]
