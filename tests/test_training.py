"""How the recommenders train together (jobs.modeling.train_side_by_side): side by side in threads of their
own, their Spark jobs in the step's job group, each one's failure told apart from the others'."""
from __future__ import annotations

import datetime as dt
import threading

from atende.jobs import modeling
from atende.jobs.bookkeeping import name_spark_jobs, spark_job_ids
from atende.lakehouse.tables import Lakehouse


def test_models_train_side_by_side_in_the_steps_job_group(spark, settings, tmp_path):
    ctx = modeling.ModelContext(spark, settings, Lakehouse(spark, tmp_path / "lake", settings.storage), "run-1",
                                dt.datetime(2026, 3, 15, 12), progress=lambda message: None)
    threads: dict[str, str] = {}
    started = threading.Barrier(3, timeout=60)  # passes only if the three run at the same time

    def trainer(name: str, failure: str | None):
        def train() -> str | None:
            threads[name] = threading.current_thread().name
            started.wait()
            spark.range(3).count()  # a Spark job, counted as the step's
            return failure
        return train

    name_spark_jobs(spark, "recommendations-test")
    try:
        before = spark_job_ids(spark, "recommendations-test")
        failures = modeling.train_side_by_side(ctx, {
            "tone": trainer("tone", "ValueError: too few replies to train on"),
            "products": trainer("products", None),
            "next_best_action": trainer("next_best_action", "MemoryError"),
        })
        jobs = spark_job_ids(spark, "recommendations-test") - before
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # the session's next tests in no group

    # each trainer's own answer, once: a failure is told, not retried
    assert failures == {"tone": "ValueError: too few replies to train on", "products": None,
                        "next_best_action": "MemoryError"}
    assert len(set(threads.values())) == 3 and all(t.startswith("atende-train") for t in threads.values())
    # every trainer's Spark job, in the pool's threads, belongs to the step that started them
    assert len(jobs) >= 3
