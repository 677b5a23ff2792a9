"""One session-scoped SparkSession for the whole suite."""
from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

if os.environ.get("PYTEST_XDIST_WORKER"):
    # A pytest-xdist worker runs as `python -c`: its __main__ has neither __spec__ nor __file__, which pyspark's
    # sql/connect/utils.check_dependencies takes for a doctest run and answers with sys.exit(0) when Great Expectations
    # imports pyspark's Spark Connect modules. A spec named __main__ says what the worker is; multiprocessing's spawn
    # (the generator's worker processes) skips re-importing a main module of that name, as it does for `python -c`.
    import importlib.machinery

    _main = sys.modules["__main__"]
    if getattr(_main, "__spec__", None) is None and not hasattr(_main, "__file__"):
        _main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)


# The modules that take longest, longest first (seconds of their tests and fixtures in one suite run, 2026-12-06):
# pytest-xdist hands whole modules (--dist loadfile) to the two workers in collection order (pyproject turns off
# its reordering by test count), so the longest start first and the short ones fill the gaps at the end; in the
# default order the small zone (967 s) started last and one worker ran alone for about its last eight minutes. Only the
# order depends on this list: a module missing from it runs after these, in its usual place.
LONGEST_MODULES = (
    "test_small_zone.py",  # 967 (1,570 on 2026-12-06 session 29, with the cluster run on s3a)
    "test_e2e.py",  # 549
    "test_lakehouse.py",  # 373
    "test_products.py",  # 197
    "test_privacy.py",  # 195
    "test_identity.py",  # 136
    "test_s3a.py",  # 84
    "test_ingest_hostile.py",  # 83
    "test_maintain.py",  # 45
    "test_features.py",  # 39
    "test_nba.py",  # 32
)


def pytest_collection_modifyitems(items):
    """Modules in LONGEST_MODULES order first (a stable sort: tests keep their order inside a module)."""
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def settings():
    from atende.conf import load_settings

    return load_settings("local", environ={})


@pytest.fixture(scope="session")
def spark(settings):
    from atende.lakehouse.spark import build_spark_session

    test_settings = settings.model_copy(
        update={
            "spark": settings.spark.model_copy(
                update={"master": "local[2]", "shuffle_partitions": 1, "driver_memory": "4g"}
            )
        }
    )
    # the suite's workers (pytest-xdist) start their sessions one at a time: the first resolves the Maven
    # packages into the shared Ivy cache and records the classpath, the next reads that record
    import fcntl
    import tempfile
    from pathlib import Path

    with open(Path(tempfile.gettempdir()) / "atende-tests-spark-start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            session = build_spark_session(test_settings, app_name="atende-tests")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    # every frame of the suite is tiny: code generation off, whole-stage and per expression, as
    # `spark.whole_stage_codegen` and `spark.expression_codegen` at auto choose for a small run (generating and
    # compiling the code costs more than it saves there; 0.90x on the identity, features and NBA modules)
    session.conf.set("spark.sql.codegen.wholeStage", "false")
    session.conf.set("spark.sql.codegen.factoryMode", "NO_CODEGEN")
    yield session
    session.stop()


@pytest.fixture(autouse=True, scope="session")
def _spark_first_on_each_worker(request):
    """Under pytest-xdist, a worker starts its session before its first test: a test that runs `atende` in a
    process of its own then finds the classpath the first start recorded instead of resolving the Maven packages
    at the same time as another worker's start."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        request.getfixturevalue("spark")


@pytest.fixture(autouse=True, scope="module")
def _release_cached_frames(request):
    """Frames a module cached (a run that failed on purpose leaves some) must not squeeze the next
    module's broadcasts out of the driver's memory."""
    yield
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.catalog.clearCache()


S3_BUCKET = "atende-lake"
# what a Spark with the S3A connector needs to reach the server below (spark.hadoop.* settings)
S3_KEYS = {"access": "testing", "secret": "testing", "region": "us-east-1"}


def s3a_spark_conf(endpoint: str) -> dict[str, str]:
    return {
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.access.key": S3_KEYS["access"],
        "spark.hadoop.fs.s3a.secret.key": S3_KEYS["secret"],
        "spark.hadoop.fs.s3a.endpoint.region": S3_KEYS["region"],
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
    }


def delta_rs_s3_options(endpoint: str) -> dict[str, str]:
    """The same server as the deltalake package addresses it (s3:// URIs)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": S3_KEYS["access"],
            "AWS_SECRET_ACCESS_KEY": S3_KEYS["secret"], "AWS_REGION": S3_KEYS["region"], "AWS_ALLOW_HTTP": "true"}


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto's) on 127.0.0.1 with one bucket, S3_BUCKET; yields its endpoint."""
    import socket

    import boto3
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEYS["access"],
                 aws_secret_access_key=S3_KEYS["secret"], region_name=S3_KEYS["region"]).create_bucket(Bucket=S3_BUCKET)
    yield endpoint
    server.stop()
