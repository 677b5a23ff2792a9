"""How the recommenders train together (jobs.modeling.train_side_by_side): side by side, their Spark jobs in
the step's job group, and a model that ran out of memory beside the others trained again alone."""
from __future__ import annotations

import datetime as dt
import threading

from atende.jobs import modeling
from atende.jobs.bookkeeping import name_spark_jobs, spark_job_ids
from atende.lakehouse.tables import Lakehouse

OOM = ("org.apache.spark.memory.SparkOutOfMemoryError: [UNABLE_TO_ACQUIRE_MEMORY] Unable to acquire 262144 bytes "
       "of memory, got 0. SQLSTATE: 53200")


def test_a_model_out_of_memory_beside_the_others_trains_again_alone(spark, settings, tmp_path):
    said: list[str] = []
    ctx = modeling.ModelContext(spark, settings, Lakehouse(spark, tmp_path / "lake", settings.storage), "run-1",
                                dt.datetime(2026, 3, 15, 12), progress=said.append)
    calls: dict[str, list[str]] = {"tone": [], "products": [], "next_best_action": []}

    def trainer(name: str, failures: list[str | None]):
        def train() -> str | None:
            calls[name].append(threading.current_thread().name)
            spark.range(3).count()  # a Spark job, counted as the step's
            return failures[min(len(calls[name]), len(failures)) - 1]
        return train

    heap = "java.lang.OutOfMemoryError: Java heap space"
    name_spark_jobs(spark, "recommendations-test")
    try:
        before = spark_job_ids(spark, "recommendations-test")
        failures = modeling.train_side_by_side(ctx, {
            "tone": trainer("tone", ["ValueError: too few replies to train on"]),  # not memory: not tried again
            "products": trainer("products", [OOM, None]),  # out of memory beside the others, fine alone
            "next_best_action": trainer("next_best_action", ["MemoryError", heap]),  # out of memory even alone
        })
        jobs = spark_job_ids(spark, "recommendations-test") - before
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # the session's next tests in no group

    assert failures == {"tone": "ValueError: too few replies to train on", "products": None,
                        "next_best_action": f"MemoryError; trained again alone: {heap}"}  # both attempts told
    assert {name: len(threads) for name, threads in calls.items()} == {"tone": 1, "products": 2, "next_best_action": 2}
    # side by side in the pool's threads; the second tries alone, after them, in the caller's
    assert all(threads[0].startswith("atende-train") for threads in calls.values())
    assert calls["products"][1] == calls["next_best_action"][1] == threading.current_thread().name
    assert [m for m in said if "training it again alone" in m] == [
        f"products: ran out of memory training beside the other models ({OOM}); training it again alone",
        "next_best_action: ran out of memory training beside the other models (MemoryError); training it again alone"]
    # every trainer's Spark job, the pool's threads included, belongs to the step that started them
    assert len(jobs) >= 5
