"""Silver `survey_responses`: one row per response, tied to the interaction it was about."""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from atende.pipelines.dedup import first_delivery
from atende.pipelines.schemas import SURVEY_RESPONSES


def build_survey_responses(
    surveys: DataFrame,
    interactions: DataFrame,
    record_keys: DataFrame,
    run_id: str,
    now: datetime,
) -> DataFrame:
    """SURVEY_RESPONSES. `interaction_id` is the response's contact_id when that names a known
    interaction (a conversation_id or call_id), else null; `customer_key` is the interaction's,
    else the one the response's own identifiers resolved to."""
    responses = first_delivery(surveys, "response_id").withColumn(
        "_contact", F.when(F.trim("contact_id") != "", F.trim("contact_id"))
    )
    known = interactions.select(
        F.col("interaction_id").alias("_contact"), F.col("customer_key").alias("_interaction_key")
    )
    own = record_keys.where(F.col("source") == "surveys").select(
        F.col("record_id").alias("response_id"), F.col("customer_key").alias("_own_key")
    )
    matched = (
        responses.join(known.withColumn("_known", F.lit(True)), on="_contact", how="left")
        .join(own, on="response_id", how="left")
    )
    return matched.select(
        "response_id",
        "submitted_at",
        F.lower(F.trim("survey")).alias("survey"),
        "score",
        F.when(F.col("_known"), F.col("_contact")).alias("interaction_id"),
        F.coalesce("_interaction_key", "_own_key").alias("customer_key"),
        "comment",
        "_arrival_date",
        F.lit(run_id).alias("run_id"),
        F.lit(now).cast("timestamp").alias("_written_at"),
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SURVEY_RESPONSES.fields])
