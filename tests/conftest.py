"""One session-scoped SparkSession for the whole suite."""
from __future__ import annotations

import os
import sys

import pytest

os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


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
    session = build_spark_session(test_settings, app_name="atende-tests")
    # every frame of the suite is tiny: whole-stage code generation off, as `spark.whole_stage_codegen: auto`
    # chooses for a small run (compiling each stage costs more than it saves there)
    session.conf.set("spark.sql.codegen.wholeStage", "false")
    yield session
    session.stop()


@pytest.fixture(autouse=True, scope="module")
def _release_cached_frames(request):
    """Frames a module cached (a run that failed on purpose leaves some) must not squeeze the next
    module's broadcasts out of the driver's memory."""
    yield
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        active.catalog.clearCache()
