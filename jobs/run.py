"""`atende run`: every job in order, landing -> bronze -> silver -> gold.

Each job reads its inputs from the lakehouse, calls the pure transforms of
pipelines/, and writes its outputs in one commit per table. Tables written by
a job that fails keep their last good version (nothing half-written is ever
visible); the arrival dates of a failed run are not marked processed, so the
next run takes them again, and since every write replaces what it covers, a
re-run never duplicates rows.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from atende.conf.settings import Settings
from atende.jobs.bookkeeping import (
    JobRecord,
    error_line,
    mark_processed,
    new_run_id,
    pending_dates,
    processed_at,
    record_jobs,
    silver_state,
    spark_job_ids,
    spark_jobs_between,
    spark_jobs_named,
    threads_in_job_group,
    utc_now,
    write_silver_state,
)
from atende.jobs.ingest import arrival_folders, ingest_source
from atende.jobs.maintain import register_tables
from atende.jobs.modeling import ModelContext, run_personas, run_recommendations, write_features
from atende.jobs.privacy import (
    SUPPRESSED_DELIVERIES,
    PrivacyError,
    drop_records,
    dropped_counts,
    erased_since,
    mark_retrained,
    pending_retrains,
    suppressed_records,
    suppression_list,
    without_suppressed_lines,
)
from atende.jobs.quality import enforce, run_quality_gates
from atende.jobs.tracking import RemoteStoreNeeded, tracking_uri
from atende.lakehouse.storage import Storage, StorageError, join, location
from atende.lakehouse.tables import Lakehouse
from atende.pipelines import schemas
from atende.pipelines.commerce import build_actions, build_orders, build_products
from atende.pipelines.crm import build_crm
from atende.pipelines.customers import build_customers
from atende.pipelines.frames import scalar, sql_dates, union_all
from atende.pipelines.identity import (
    assign_email_threads,
    build_identifier_observations,
    distinct_email_messages,
    resolve_identities_with_report,
)
from atende.pipelines.identity.graph import materialise
from atende.pipelines.increments import (
    INTERACTION_SOURCES,
    affected_units,
    changed_categories,
    delivered_since,
    key_differences,
    only_records,
    whole_rebuild_reason,
)
from atende.pipelines.interactions import build_interactions, whatsapp_sessions
from atende.pipelines.kpis import build_service_kpis
from atende.pipelines.profiles import build_customer_profiles
from atende.pipelines.surveys import build_survey_responses

if TYPE_CHECKING:
    from atende.pipelines.increments import Units

log = logging.getLogger(__name__)


class RunFailed(RuntimeError):
    """A job failed or a check stopped the run; the message is one line for a person."""


class ReconciliationError(RunFailed):
    pass


@dataclass
class RunSummary:
    run_id: str
    arrival_dates: list[dt.date]
    jobs: list[JobRecord] = field(default_factory=list)
    table_rows: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    nothing_to_do: bool = False
    engine: str = ""
    # tables named in the catalog after the run (catalog.register_after_run)
    registered: list[str] = field(default_factory=list)
    # the one job run (`atende run --step`), or None for every job
    step: str | None = None
    # silver's record tables: rows rebuilt from this many records (incremental), or None when rebuilt from
    # the whole of bronze (a first run, a full refresh, `silver.incremental_max_share`), or not run
    silver_records: int | None = None

    @property
    def silver_incremental(self) -> bool:
        return self.silver_records is not None


ProgressFn = Callable[[str], None]


def _by_arrival_date(frame: DataFrame) -> DataFrame:
    """The frame's rows gathered by arrival date: one task (so one file) per date in a partitioned write."""
    return frame.repartition("_arrival_date")


_CODEGEN = "spark.sql.codegen.wholeStage"
# FALLBACK (Spark's default): Janino-compiled projections, filters and orderings, interpreted where compiling
# fails; NO_CODEGEN: always interpreted. Spark marks the key internal; it is read per query, so a run can set it
_CODEGEN_FACTORY = "spark.sql.codegen.factoryMode"


def _landing_bytes(storage: Storage, landing: str, dates: list[dt.date]) -> int:
    """Bytes of the landing files of these arrival dates (every source)."""
    return sum(storage.size(join(landing, source, day.isoformat())) for source in schemas.SOURCES for day in dates)


def _landing_folders(storage: Storage, landing: str) -> dict[dt.date, list[tuple[str, int]]]:
    """Each arrival date of the landing zone with the sources holding it and their folder's time (ms)."""
    found: dict[dt.date, list[tuple[str, int]]] = {}
    present = {e.name for e in storage.listdir(landing) if e.is_dir}
    for source in schemas.SOURCES:
        if source in present:
            for arrival, entry in arrival_folders(landing, source, storage):
                found.setdefault(arrival, []).append((source, entry.mtime_ms))
    return found


# a folder changed this long after its date was processed is a late delivery (clocks of two machines differ)
LATE_TOLERANCE = dt.timedelta(minutes=1)


def late_folders(folders: dict[dt.date, list[tuple[str, int]]], processed: dict[dt.date, dt.datetime]) -> list[str]:
    """`source/date` folders of processed dates that changed (a file entered them) after the date was last
    processed: a plain run does not read a processed date again, so their new files wait for `--date`.
    Folders without a time (object stores have no folders) are never late."""
    late = []
    for arrival, at in processed.items():
        moment = at if at.tzinfo else at.replace(tzinfo=dt.timezone.utc)
        limit_ms = (moment + LATE_TOLERANCE).timestamp() * 1000
        late += [f"{source}/{arrival.isoformat()}" for source, mtime in folders.get(arrival, [])
                 if mtime and mtime > limit_ms]
    return sorted(late, key=lambda name: (name.split("/")[1], name))


# silver tables an incremental silver step starts from (else it builds them from the whole of bronze)
_INCREMENTAL_NEEDS = ("interactions", "survey_responses", "orders", "actions", "products", "record_keys")

# the jobs of a run, in order; `atende run --step` runs one of them
STEPS = ("ingest", "silver", "features", "personas", "gold", "recommendations")


class Runner:
    """Runs the jobs of one `atende run` and keeps their records."""

    WRITERS = 4  # tables written at once by _write_all

    def __init__(self, spark: SparkSession, settings: Settings, landing: str | os.PathLike | None,
                 lakehouse: str | os.PathLike, progress: ProgressFn | None = None):
        self.spark = spark
        self.settings = settings
        # a local folder or a Hadoop file-system URI (lakehouse.storage)
        self.landing = location(landing) if landing is not None else None
        self.storage = Storage(spark)
        self.lake = Lakehouse(spark, lakehouse, settings.storage)
        self.progress = progress or (lambda message: None)
        # a progress callback shows the quality warnings; without one they are logged (said once either way)
        self._shows_warnings = progress is not None
        self.now = utc_now()
        self.run_id = new_run_id(self.now)
        self.force_train = False
        self.full_refresh = False  # silver rebuilt from the whole of bronze (`atende run --full-refresh`)
        # while an erasure waits for its retrain, a new version replaces its champion whatever its score
        self.promote_always = False
        self._suppression: tuple[DataFrame, str] | None = None  # ingest: the suppression list and its salt
        self._suppressed_counts: DataFrame | None = None  # ingest: records of erased customers dropped, per file
        self._model_ctx = None
        self._silver_records: int | None = None  # set by the silver job: records its incremental rebuild took

    # ------------------------------------------------------------------ helpers
    def _job(self, summary: RunSummary, name: str, body: Callable[[JobRecord], None]) -> None:
        record = JobRecord(job=name, started_at=utc_now())
        summary.jobs.append(record)
        self.progress(f"{name} ...")
        with spark_jobs_named(self.spark, name):  # the thread's group is the step's until it ends
            self._run_job(record, name, body)

    def _run_job(self, record: JobRecord, name: str, body: Callable[[JobRecord], None]) -> None:
        before = spark_job_ids(self.spark, name)  # a session may have run the step before (tests, notebooks)

        def count_spark_jobs() -> None:
            record.spark_jobs = spark_jobs_between(self.spark, before, spark_job_ids(self.spark, name))

        try:
            body(record)
        except Exception as exc:
            count_spark_jobs()
            record.status = "failed"
            record.ended_at = utc_now()
            first_line = error_line(exc)
            record.error = f"{type(exc).__name__}: {first_line}"[:2000]
            raise RunFailed(f"job {name} failed: {first_line}") from exc
        degradations: list[str] = self._model_ctx.take_degradations() if self._model_ctx is not None else []
        # a model job that answered with a kept champion or a named fallback: the data landed, the
        # reason is kept (ops/runs `error` holds it) and the run goes on
        record.status = "degraded" if degradations else "succeeded"
        record.error = " | ".join(degradations)[:2000] if degradations else None
        record.ended_at = utc_now()
        count_spark_jobs()
        jobs = "" if record.spark_jobs is None else f", {record.spark_jobs:,} Spark jobs"
        self.progress(f"{name} {'degraded' if degradations else 'done'} in {record.seconds:.1f} s "
                      f"({record.rows_written:,} rows written{jobs})")

    def _write(self, record: JobRecord, layer: str, table: str, df: DataFrame, **kwargs) -> None:
        info = self.lake.write(layer, table, df, **kwargs)
        record.rows_written += info.rows_written

    def _write_all(self, record: JobRecord, writes: list[tuple[str, str, DataFrame, dict[str, Any]]]) -> None:
        """Independent tables written concurrently, each its own Delta commit as in `_write`.

        A table's write is mostly driver work (the Delta snapshot, the commit, its history) and a small
        Spark job, so a few at once overlap what one alone leaves idle. Every write runs to its end; the
        first failure is then raised. A table whose write failed stays at its last good version, like a
        table after a failed sequential write; the run is not marked processed either way."""
        def one(layer: str, table: str, df: DataFrame, kwargs: dict[str, Any]) -> int:
            if "keys" in kwargs:  # a MERGE (Lakehouse.upsert)
                return self.lake.upsert(layer, table, df, **kwargs).rows_written
            return self.lake.write(layer, table, df, **kwargs).rows_written

        with threads_in_job_group(self.spark, min(self.WRITERS, len(writes)) or 1, "atende-write") as pool:
            futures = [pool.submit(one, *w) for w in writes]
        errors = [error for f in futures if (error := f.exception()) is not None]
        record.rows_written += sum(f.result() for f in futures if f.exception() is None)
        if errors:
            raise errors[0]

    # ------------------------------------------------------------------ jobs
    def _gate(self, stage: str, tables: dict[str, DataFrame]) -> None:
        """Great Expectations suites over frames about to be written: a hard failure stops the run first."""
        docs = join(self.lake.uri, "_quality", self.run_id, stage)
        if not self.lake.is_uri:
            results = run_quality_gates(self.spark, self.settings, tables, self.run_id, Path(docs))
        else:  # Great Expectations writes its Data Docs to local files: written here, then copied in
            with tempfile.TemporaryDirectory(prefix="atende-docs-") as local:
                results = run_quality_gates(self.spark, self.settings, tables, self.run_id, Path(local))
                self.storage.copy_folder_in(local, docs)
        for result in results:
            for warning in result.warnings:
                self.progress(f"warning: {warning}")
        enforce(results, log_warnings=not self._shows_warnings)

    def ingest(self, record: JobRecord, landing: str, dates: list[dt.date]) -> None:
        listed = sql_dates(dates)
        started = time.perf_counter()
        results = {
            source: ingest_source(self.spark, self.settings, landing, source, dates, self.run_id, self.now)
            for source in schemas.SOURCES
        }
        try:
            counts = union_all([r.file_counts for r in results.values()]).withColumn("run_id", F.lit(self.run_id))
            counts = counts.cache()
            record.rows_read += int(scalar(counts.agg(F.coalesce(F.sum("records"), F.lit(0)))))
            broken = counts.where(F.col("records") != F.col("accepted") + F.col("quarantined")).limit(5).collect()
            if broken:
                detail = "; ".join(
                    f"{r['_source_file']}: {r['records']} records, {r['accepted']} accepted"
                    f" + {r['quarantined']} quarantined"
                    for r in broken
                )
                raise ReconciliationError(f"reconciliation failed: {detail}")
            parsed = time.perf_counter()
            self.progress(f"ingest: {record.rows_read:,} records listed, parsed and reconciled in {parsed - started:.1f} s")
            accepted = self._suppress({source: r.accepted for source, r in results.items()}, record)
            self._gate("bronze", {f"bronze.{source}": frame for source, frame in accepted.items()})
            gated = time.perf_counter()
            self.progress(f"ingest: bronze quality gates in {gated - parsed:.1f} s")
            again = self._ingested_before(dates)
            if again:  # their bronze rows are replaced: records (or deliveries) may be gone, which only a
                # whole silver build sees; said before bronze changes, so a crash cannot lose it
                write_silver_state(self.spark, self.lake, self.run_id, self.now, rebuild_reason=(
                    f"arrival date(s) {', '.join(d.isoformat() for d in again[:3])}{' ...' if len(again) > 3 else ''}"
                    " ingested again"))
            by_date = {"mode": "overwrite", "partition_by": ["_arrival_date"],
                       "replace_where": f"_arrival_date IN ({listed})"}
            quarantined = self._suppress_lines(union_all([r.quarantined for r in results.values()]))
            # The parse's partitions follow the landing files (e-mail: one file per message, so thousands): each
            # would write a small file per arrival date it holds, which every later read of bronze opens again.
            # Gathered by date first, a table gets one file per arrival date.
            self._write_all(record, [("bronze", source, _by_arrival_date(accepted[source]), by_date) for source in results]
                            + [("bronze", "quarantine", _by_arrival_date(quarantined), by_date)])
            self.lake.write("ops", "file_reconciliation", counts, mode="overwrite", partition_by=["_arrival_date"],
                            replace_where=f"_arrival_date IN ({listed})")
            if self._suppressed_counts is not None:  # a re-run of these dates replaces their counts
                self.lake.write("ops", "suppressed_deliveries", self._suppressed_counts, mode="overwrite",
                                partition_by=["_arrival_date"], replace_where=f"_arrival_date IN ({listed})")
            self.progress(f"ingest: bronze tables written in {time.perf_counter() - gated:.1f} s")
            counts.unpersist()
        finally:
            for result in results.values():
                result.release()

    def _ingested_before(self, dates: list[dt.date]) -> list[dt.date]:
        """Those of `dates` bronze already holds (their landing files were reconciled by an earlier ingest)."""
        if not self.lake.exists("ops", "file_reconciliation"):
            return []
        found = (self.lake.read("ops", "file_reconciliation").where(F.col("_arrival_date").isin(dates))
                 .select("_arrival_date").distinct().collect())
        return sorted(r[0] for r in found)

    def _suppress(self, accepted: dict[str, DataFrame], record: JobRecord) -> dict[str, DataFrame]:
        """The batch without the records of erased customers (`atende forget`: their identifiers are on the
        suppression list), counted per file in ops/suppressed_deliveries. Nothing is read when nobody was
        ever erased."""
        try:
            listed = self._suppression = suppression_list(self.spark, self.settings, self.lake)
        except PrivacyError as exc:
            raise RunFailed(str(exc)) from None
        if listed is None:
            return accepted
        suppressed, salt = listed
        batch = {source: frame for source, frame in accepted.items() if source != "products"}
        if not batch:
            return accepted
        found: dict[str, list[str]] = {}
        for row in suppressed_records(batch, self.settings, suppressed, salt).collect():
            found.setdefault(row["source"], []).append(row["record_id"])
        if not found:
            return accepted
        counts = union_all([dropped_counts(source, accepted[source], ids) for source, ids in found.items()])
        self._suppressed_counts = counts.select(*[
            (F.lit(self.run_id) if f.name == "run_id" else F.col(f.name)).cast(f.dataType).alias(f.name)
            for f in SUPPRESSED_DELIVERIES.fields])
        self.progress(f"ingest: {sum(len(v) for v in found.values()):,} record(s) of erased customers dropped "
                      "before bronze (ops/suppressed_deliveries)")
        return {source: drop_records(source, frame, found[source]) if source in found else frame
                for source, frame in accepted.items()}

    def _suppress_lines(self, quarantined: DataFrame) -> DataFrame:
        """The batch's quarantined lines without those naming an erased customer's address or phone number."""
        if self._suppression is None:  # read (and its salt checked) by _suppress
            return quarantined
        return without_suppressed_lines(quarantined, self.settings, *self._suppression)

    def _bronze(self) -> dict[str, DataFrame]:
        return {s: self.lake.read_or_empty("bronze", s, schemas.BRONZE[s]) for s in schemas.SOURCES}

    def identity_and_silver(self, record: JobRecord) -> None:
        """Identity resolution, interactions and survey responses: checked together, then written."""
        if self.lake.exists("silver", "identity_merges") and \
                "kind" not in self.lake.read("silver", "identity_merges").columns:
            # checked before anything is written: the map must not move to the new keys without their merges
            raise RunFailed(f"{self.lake.path('silver', 'identity_merges')} was written before its `kind` column "
                            "(2026-12-02): move that folder aside (its rows are all merges) and run again")
        bronze = self._bronze()
        previous = self.lake.read("silver", "identity_map") if self.lake.exists("silver", "identity_map") else None
        # e-mail threads (a connected-components run) are computed once: identity and interactions use them
        threads = materialise(assign_email_threads(distinct_email_messages(bronze["email"])))
        observations = build_identifier_observations(bronze, self.settings, email_threads=threads).cache()
        record.rows_read += observations.count()
        resolution = resolve_identities_with_report(observations, previous, self.settings, self.run_id, self.now)
        identity_map, merges, record_keys = (
            resolution.identity_map.cache(), resolution.merges.cache(), resolution.record_keys.cache()
        )
        exceptions = resolution.exceptions.select(
            "*", F.lit(self.run_id).alias("run_id"), F.lit(self.now).cast("timestamp").alias("_written_at")
        ).cache()
        products = build_products(bronze["products"], self.run_id, self.now).cache()
        crm = build_crm(bronze["crm"], identity_map, self.run_id, self.now).cache()
        units = self._silver_units(bronze, threads, record_keys, products)
        self._silver_records = None if units is None else units.size
        interactions, responses, orders, actions, every_interaction = self._record_frames(
            bronze, threads, record_keys, products, units)
        customers = build_customers(identity_map, crm, every_interaction, self.settings, self.run_id,
                                    self.now).cache()
        keys_table = record_keys.select(
            "*", F.lit(self.run_id).alias("run_id"), F.lit(self.now).cast("timestamp").alias("_written_at")
        )
        self._gate("silver", {
            "silver.identity_map": identity_map,
            "silver.identity_merges": merges,
            "silver.identity_exceptions": exceptions,
            "silver.interactions": interactions,
            "silver.survey_responses": responses,
            "silver.orders": orders,
            "silver.actions": actions,
            "silver.products": products,
            "silver.crm": crm,
            "silver.customers": customers,
            "silver.record_keys": keys_table,
        })
        whole: dict[str, Any] = {"mode": "overwrite"}
        record_tables = self._record_writes(units, interactions, responses, orders, actions)
        self._write_all(record, [
            ("silver", "identity_map", identity_map, whole),
            ("silver", "identity_merges", merges, {"mode": "append"}),
            ("silver", "identity_exceptions", exceptions, whole),
            ("silver", "crm", crm, whole),
            ("silver", "customers", customers, whole),
            *record_tables,
        ])
        # last: the keys the record tables now hold, and (its write time) the point the next run takes
        # bronze from; a run failing before this line leaves both as they were, and the next run redoes its work
        self._write(record, "silver", "record_keys", keys_table, mode="overwrite", partition_by=["source"])
        # products last but one: the next run finds a category change against the table as it was when
        # record_keys (the watermark) was written, whatever failed in between
        self._write(record, "silver", "products", products, mode="overwrite")
        if units is None:
            write_silver_state(self.spark, self.lake, self.run_id, self.now, settings=self._silver_settings())
        for frame in (observations, identity_map, merges, exceptions, interactions, responses, products, orders,
                      actions, crm, customers):
            frame.unpersist()
        record_keys.unpersist()

    def _record_frames(self, bronze: dict[str, DataFrame], threads: DataFrame, record_keys: DataFrame,
                       products: DataFrame, units: Units | None) -> tuple[DataFrame, ...]:
        """This run's rows of interactions, survey responses, orders and actions (the whole of bronze, or
        the touched units), and the interactions as the table will hold them once these are merged in
        (`customer_key, customer_name, started_at`: what silver/customers reads)."""
        named = ("interaction_id", "customer_key", "customer_name", "started_at")
        if units is None:  # the whole of bronze
            interactions = build_interactions(bronze, record_keys, self.settings, self.run_id, self.now,
                                              email_threads=threads).cache()
            responses = build_survey_responses(bronze["surveys"], interactions, record_keys, self.run_id,
                                               self.now).cache()
            orders = build_orders(bronze["orders"], products, record_keys, self.run_id, self.now).cache()
            actions = build_actions(bronze["actions"], record_keys, self.run_id, self.now).cache()
            return interactions, responses, orders, actions, interactions.select(*named)
        # the units touched since silver was written (pipelines/increments.py)
        interactions = build_interactions(bronze, record_keys, self.settings, self.run_id, self.now,
                                          email_threads=threads, only=units.only(*INTERACTION_SOURCES)).cache()
        # the table as it will be after this run: its rows not rebuilt, and the rebuilt ones
        after = union_all([
            self.lake.read("silver", "interactions")
            .join(units.replaced_interactions, on="interaction_id", how="left_anti")
            .join(interactions.select("interaction_id"), on="interaction_id", how="left_anti")
            .select(*named),
            interactions.select(*named),
        ])
        # a response takes the key of the interaction it names
        responses = materialise(build_survey_responses(
            only_records(bronze["surveys"], units.records["surveys"], "surveys"),
            after.select("interaction_id", "customer_key"), record_keys, self.run_id, self.now))
        orders = build_orders(only_records(bronze["orders"], units.records["orders"], "orders"), products,
                              record_keys, self.run_id, self.now).cache()
        actions = build_actions(only_records(bronze["actions"], units.records["actions"], "actions"),
                                record_keys, self.run_id, self.now).cache()
        return interactions, responses, orders, actions, after

    @staticmethod
    def _record_writes(units: Units | None, interactions: DataFrame, responses: DataFrame, orders: DataFrame,
                       actions: DataFrame) -> list[tuple[str, str, DataFrame, dict[str, Any]]]:
        """How the record tables land: overwritten when rebuilt whole; otherwise a MERGE per table that has
        rows to merge or remove (the frames are cached: checking is cheap)."""
        if units is None:
            whole: dict[str, Any] = {"mode": "overwrite"}
            return [
                ("silver", "interactions", interactions, {**whole, "partition_by": ["channel"]}),
                ("silver", "survey_responses", responses, whole),
                ("silver", "orders", orders, whole),
                ("silver", "actions", actions, whole),
            ]
        return [
            (layer, table, frame, merge) for layer, table, frame, merge, removes in (
                ("silver", "interactions", interactions, {"keys": ["interaction_id"], "partition_by": ["channel"],
                                                          "remove": units.replaced_interactions},
                 units.replaced_interactions),
                ("silver", "survey_responses", responses, {"keys": ["response_id"]}, None),
                ("silver", "orders", orders, {"keys": ["order_id"]}, None),
                ("silver", "actions", actions, {"keys": ["action_id"]}, None),
            ) if not frame.isEmpty() or (removes is not None and not removes.isEmpty())
        ]

    def whole_silver_reason(self) -> str | None:
        """Why this run's silver step rebuilds the record tables from the whole of bronze, or None when it
        can rebuild only what changed (data permitting: see `_silver_units`)."""
        if self.full_refresh:
            return "full refresh"
        missing = [t for t in _INCREMENTAL_NEEDS if not self.lake.exists("silver", t)]
        if missing:
            return f"no silver {', '.join(missing)} yet"
        state = silver_state(self.lake)
        if state is None:
            return "no ops/silver_state: silver was built by an earlier release"
        if state["rebuild_reason"]:
            return state["rebuild_reason"]
        if state["settings"] != self._silver_settings():
            return "identity.company_domains changed since silver was built"
        if self.settings.silver.incremental_max_share == 0:
            return "silver.incremental_max_share is 0: the record tables are rebuilt whole on every run"
        return None

    def _silver_settings(self) -> str:
        """The settings silver's record rows depend on beyond the records and their keys (an e-mail from a
        company domain is the agent's): a change of them needs every row rebuilt."""
        return json.dumps({"company_domains": sorted({d.lower() for d in self.settings.identity.company_domains})})

    def _silver_units(self, bronze: dict[str, DataFrame], threads: DataFrame, record_keys: DataFrame,
                      products: DataFrame) -> Units | None:
        """The units of the record tables this run rebuilds (`pipelines.increments.Units`), or None when they
        are rebuilt from the whole of bronze: a full refresh, a first run, records silver was built from gone
        from bronze, or more records delivered since silver was written than `silver.incremental_max_share`
        allows (at 0, the default, every run)."""
        whole = self.whole_silver_reason()
        if whole is not None:
            self.progress(f"silver: rebuilt from the whole of bronze ({whole})")
            return None
        written = self.lake.read("silver", "record_keys")
        # the watermark as microseconds: no time zone on the way to the driver and back
        since_micros = scalar(written.agg(F.unix_micros(F.max("_written_at"))))
        if since_micros is None:
            self.progress("silver: rebuilt from the whole of bronze (silver/record_keys is empty)")
            return None
        since = F.timestamp_micros(F.lit(since_micros))
        delivered = delivered_since(bronze, since)
        max_share = self.settings.silver.incremental_max_share
        if max_share < 1:
            delivered = materialise(delivered)  # counted here, read again for `changed` below
            reason = whole_rebuild_reason(delivered.count(), record_keys.count(), max_share)
            if reason is not None:
                self.progress(f"silver: rebuilt from the whole of bronze ({reason})")
                return None
        differences = materialise(key_differences(written.select("source", "record_id", "customer_key"),
                                                  record_keys))
        if not differences.where(F.col("vanished")).isEmpty():
            self.progress("silver: records it was built from are no longer in bronze (a date ingested again from "
                          "other files): rebuilt from the whole of bronze")
            return None
        # computed once: the units below read it once per source (0.70x the units' time at 20,000 x 30's day)
        changed = materialise(delivered.unionByName(
            differences.where(~F.col("vanished")).select("source", "record_id")))
        products_changed = changed_categories(self.lake.read("silver", "products"), products)
        units = affected_units(changed, bronze, threads, whatsapp_sessions(bronze["whatsapp"]),
                               products_changed).materialised()
        written_at = dt.datetime.fromtimestamp(since_micros / 1e6, dt.timezone.utc)
        self.progress(f"silver: {units.size:,} records to rebuild rows from (delivered or re-keyed since "
                      f"{written_at:%Y-%m-%d %H:%M:%S} UTC)")
        return units

    def _models(self):
        if self._model_ctx is None:
            self._model_ctx = ModelContext(self.spark, self.settings, self.lake, self.run_id, self.now, self.progress,
                                           gate=self._gate)
            self._model_ctx.promote_always = self.promote_always
        return self._model_ctx

    def features(self, record: JobRecord) -> None:
        record.rows_written += write_features(self._models())

    def personas(self, record: JobRecord) -> None:
        written, _ = run_personas(self._models(), force_train=self.force_train)
        record.rows_written += written

    def recommendations(self, record: JobRecord) -> None:
        record.rows_written += run_recommendations(self._models(), force_train=self.force_train)

    def gold(self, record: JobRecord) -> None:
        """Profiles and KPIs from silver, the same for `atende run` and `atende train`."""
        customers = self._silver_customers()
        interactions = self.lake.read("silver", "interactions")
        responses = self.lake.read("silver", "survey_responses")
        orders = self.lake.read_or_empty("silver", "orders", schemas.ORDERS)
        segments = self.lake.read("gold", "persona_segments") if self.lake.exists("gold", "persona_segments") else None
        profiles = build_customer_profiles(
            customers, interactions, responses, orders, self.settings, self.run_id, self.now, segments=segments,
        )
        kpis = build_service_kpis(interactions, responses, self.settings, self.run_id, self.now)
        profiles, kpis = profiles.cache(), kpis.cache()  # checked, then written
        try:
            self._gate("gold", {"gold.customer_profiles": profiles, "gold.service_kpis": kpis})
            self._write(record, "gold", "customer_profiles", profiles, mode="overwrite")
            self._write(record, "gold", "service_kpis", kpis, mode="overwrite")
        finally:
            profiles.unpersist()
            kpis.unpersist()

    def _silver_customers(self) -> DataFrame:
        """silver/customers; a lakehouse whose silver was written by an earlier release (before the table)
        has it built here from the silver tables it has, the same rows the next silver step writes."""
        if self.lake.exists("silver", "customers"):
            return self.lake.read("silver", "customers")
        return build_customers(self.lake.read("silver", "identity_map"),
                               self.lake.read_or_empty("silver", "crm", schemas.CRM),
                               self.lake.read("silver", "interactions"), self.settings, self.run_id, self.now)

    def _size_codegen(self, landing_bytes: int) -> dict[str, str | None]:
        """Code generation on or off for this run: whole-stage (`spark.whole_stage_codegen`) and per expression
        (`spark.expression_codegen`); "auto": off while this run's landing files plus the bronze tables hold at
        most `spark.small_input_mb`, on above it. Returns the session's previous settings, which
        `_restore_codegen` puts back."""
        cfg = self.settings.spark
        auto = "auto" in (cfg.whole_stage_codegen, cfg.expression_codegen)
        size = landing_bytes + self.lake.stored_bytes("bronze") if auto else 0
        small = size <= cfg.small_input_mb * 2**20

        def enabled(choice: str) -> bool:
            return not small if choice == "auto" else choice == "on"

        wanted = {_CODEGEN: str(enabled(cfg.whole_stage_codegen)).lower(),
                  _CODEGEN_FACTORY: "FALLBACK" if enabled(cfg.expression_codegen) else "NO_CODEGEN"}
        if auto:
            self.progress(f"input {size / 2**20:,.1f} MB: code generation "
                          f"{'off (small input)' if small else 'on'}")
        previous = {key: self.spark.conf.get(key, None) for key in wanted}
        for key, value in wanted.items():
            self.spark.conf.set(key, value)
        return previous

    def _restore_codegen(self, previous: dict[str, str | None]) -> None:
        for key, value in previous.items():
            if value is None:
                self.spark.conf.unset(key)
            else:
                self.spark.conf.set(key, value)

    def _check_model_store(self) -> None:
        """Before anything is read: the MLflow store the model jobs will need is configured."""
        if self.lake.is_uri:
            try:
                tracking_uri(self.settings, self.lake.uri)
            except RemoteStoreNeeded as exc:
                raise RunFailed(str(exc)) from None

    # ------------------------------------------------------------------ the run
    def run(self, date: dt.date | None = None, full_refresh: bool = False, step: str | None = None) -> RunSummary:
        """Ingest the landing zone's arrival dates not yet processed (or `date` alone, or with
        `full_refresh` every date the zone holds, processed or not) and rebuild what depends on them.

        With `step`, that job alone (an orchestrator's task, retried on its own): `ingest` takes the dates
        as above; a later step works when an ingest succeeded after it last did (bookkeeping.pending_dates),
        and the last one, `recommendations`, marks those dates processed."""
        if step is not None and step not in STEPS:
            raise RunFailed(f"unknown step {step!r} (the steps, in order: {', '.join(STEPS)})")
        if step not in (None, "ingest"):
            if date is not None or full_refresh:
                raise RunFailed("--date and --full-refresh choose what the ingest step reads: give them to `--step ingest`")
            self._check_model_store()
            return self._run_steps(pending_dates(self.lake, step, STEPS), step)
        landing = self.landing
        if date is not None and full_refresh:
            raise RunFailed("a full refresh takes every arrival date: give no date with it")
        if landing is None:
            raise RunFailed("no landing zone given")
        self._check_model_store()
        try:
            found = self.storage.stat(landing)
            if found is None or not found.is_dir:
                raise RunFailed(f"landing zone not found: {landing}")
            folders = _landing_folders(self.storage, landing)
            available = set(folders)
        except StorageError as exc:  # a scheme without its connector, a store that refuses the listing
            raise RunFailed(f"landing zone: {exc}") from None
        if date is not None:
            if date not in available:
                raise RunFailed(f"no landing files for arrival date {date.isoformat()} under {landing}")
            dates = [date]
        elif full_refresh:
            dates = sorted(available)
            self.full_refresh = True
        else:
            processed = processed_at(self.lake)
            dates = sorted(available - set(processed))
            late = late_folders(folders, processed)
            if late:
                self.progress(
                    f"warning: {len(late)} landing folder(s) of processed dates changed after they were processed "
                    f"({', '.join(late[:3])}{', ...' if len(late) > 3 else ''}); a run does not read a processed date "
                    f"again: `atende run --date {late[0].split('/')[1]}` takes that date's files")
        return self._run_steps(dates, step, landing, full_refresh)

    def _run_steps(self, dates: list[dt.date], step: str | None, landing: str | None = None,
                   full_refresh: bool = False) -> RunSummary:
        """The jobs of a run (every one, or `step` alone) for these arrival dates, then the bookkeeping."""
        summary = RunSummary(self.run_id, dates, engine=self.lake.engine.name, step=step)
        if not dates:
            summary.nothing_to_do = True
            return summary
        self.progress(
            f"run {self.run_id}: {len(dates)} arrival date(s) {dates[0].isoformat()}..{dates[-1].isoformat()}"
            + (" (full refresh)" if full_refresh else "") + (f", step {step} alone" if step else "")
        )
        bodies: dict[str, Callable[[JobRecord], None]] = {
            "ingest": lambda r: self.ingest(r, landing or "", dates),
            "silver": self.identity_and_silver,
            "features": self.features,
            "personas": self.personas,
            "gold": self.gold,
            "recommendations": self.recommendations,
        }
        failure: RunFailed | None = None
        erasures: list[str] = []
        if step in (None, "personas", "recommendations"):
            erasures = pending_retrains(self.lake)
            if erasures:  # every model was fitted on data that held the erased customers
                self.force_train = self.promote_always = True
                self.progress(f"{len(erasures)} erasure(s) since the models were trained: every model is retrained "
                              "and the new versions replace the champions")
        landing_bytes = _landing_bytes(self.storage, landing, dates) if landing is not None else 0
        codegen = self._size_codegen(landing_bytes)
        try:
            for name in STEPS if step is None else (step,):
                self._job(summary, name, bodies[name])
        except RunFailed as exc:
            failure = exc
        finally:
            self._restore_codegen(codegen)
        if failure is None:
            if erased_since(self.lake, self.now):  # this run may have read the customer before the erasure
                failure = RunFailed("a customer was erased (`atende forget`) while this run was running: run again, "
                                    "and the tables are written without them")
        degraded = [f"{j.job}: {j.error}" for j in summary.jobs if j.status == "degraded"]
        overall = JobRecord(job="run", started_at=self.now, ended_at=utc_now(),
                            status="failed" if failure else "degraded" if degraded else "succeeded",
                            rows_read=sum(j.rows_read for j in summary.jobs),
                            rows_written=sum(j.rows_written for j in summary.jobs),
                            spark_jobs=None if any(j.spark_jobs is None for j in summary.jobs)
                            else sum(j.spark_jobs or 0 for j in summary.jobs),
                            error=str(failure) if failure else " | ".join(degraded)[:2000] if degraded else None)
        record_jobs(self.spark, self.lake, self.run_id, dates, summary.jobs + [overall])
        if failure:
            raise failure
        if step in (None, STEPS[-1]):
            mark_processed(self.spark, self.lake, self.run_id, dates, utc_now())
            if erasures and not degraded and step is None:  # every model retrained and promoted in this run
                mark_retrained(self.spark, self.lake, erasures, self.run_id)
        summary.silver_records = self._silver_records
        summary.table_rows = self.table_rows()
        summary.quarantined = {
            r["source"]: r["n"]
            for r in self.lake.read("bronze", "quarantine").groupBy("source").agg(F.count("*").alias("n")).collect()
        } if self.lake.exists("bronze", "quarantine") else {}
        summary.registered = self._register_in_catalog() if step in (None, STEPS[-1]) else []
        return summary

    def _register_in_catalog(self) -> list[str]:
        """Name the tables in the session's catalog where that catalog outlives the run (or when asked always)."""
        when = self.settings.catalog.register_after_run
        persistent = self.spark.conf.get("spark.sql.catalogImplementation", "in-memory") == "hive"
        if when == "never" or (when == "auto" and not persistent):
            return []
        self.progress("naming the tables in the catalog ...")
        return register_tables(self.spark, self.lake, self.settings.catalog.database_prefix)

    def retrain(self) -> RunSummary:
        """`atende train`: refit every model on the lakehouse as it is, promote what beats its
        champion, and re-score personas, profiles and recommendations with the champions."""
        if not self.lake.exists("silver", "interactions"):
            raise RunFailed(f"no silver tables in {self.lake.root}: run `atende run` first")
        self._check_model_store()
        erasures = pending_retrains(self.lake)  # read first: an erasure made while training waits for the next
        self.force_train = True
        self.promote_always = bool(erasures)
        summary = RunSummary(self.run_id, [])
        failure: RunFailed | None = None
        codegen = self._size_codegen(0)
        try:
            self._job(summary, "features", self.features)
            self._job(summary, "personas", self.personas)
            self._job(summary, "gold", self.gold)
            self._job(summary, "recommendations", self.recommendations)
        except RunFailed as exc:
            failure = exc
        finally:
            self._restore_codegen(codegen)
        record_jobs(self.spark, self.lake, self.run_id, [], summary.jobs)
        if failure:
            raise failure
        if not any(j.status == "degraded" for j in summary.jobs):
            mark_retrained(self.spark, self.lake, erasures, self.run_id)
        return summary

    def table_rows(self) -> dict[str, int]:
        # from the Delta logs where they count exactly (a table's snapshot in Spark costs a second or two)
        return {f"{layer}.{table}": self.lake.row_count(layer, table) for layer, table in self.lake.tables()}
