"""Silver `crm`: the CRM's history, one row per registration and update, tied to its customer."""
from __future__ import annotations

from datetime import datetime

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from atende.features.identifiers import normalize_as_given
from atende.pipelines.schemas import CRM


def build_crm(crm: DataFrame, identity_map: DataFrame, run_id: str, now: datetime) -> DataFrame:
    """CRM from bronze CRM rows: one row per (crm_id, updated_at); a row delivered again keeps its
    latest delivery (the CRM exports whole rows, so a re-delivery with the same `updated_at` is the same
    state), `_arrival_date` its first arrival. `customer_key`: the key the crm_id resolves to in
    `identity_map` (null for a crm_id identity resolution did not keep)."""
    normalised = crm.withColumn("crm_id", normalize_as_given(F.col("crm_id"))).where(F.col("crm_id").isNotNull())
    values = [f.name for f in CRM.fields if f.name not in ("crm_id", "updated_at", "customer_key", "_arrival_date",
                                                           "run_id", "_written_at")]
    latest = (
        normalised.groupBy("crm_id", "updated_at")
        .agg(
            F.max_by(F.struct(*values), F.struct("_arrival_date", "_ingested_at", "_source_file")).alias("_v"),
            F.min("_arrival_date").alias("_arrival_date"),
        )
        .select("crm_id", "updated_at", "_v.*", "_arrival_date")
    )
    keys = identity_map.where(F.col("identifier_type") == "crm_id").select(
        F.col("identifier").alias("crm_id"), "customer_key"
    )
    return (
        latest.join(keys, on="crm_id", how="left")
        .select("*", F.lit(run_id).alias("run_id"), F.lit(now).cast("timestamp").alias("_written_at"))
        .select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in CRM.fields])
    )
