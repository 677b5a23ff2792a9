"""Quality gates: Great Expectations suites over bronze, silver, identity health and the recommendations.

Each table handed in is narrowed to the columns its suite reads (plus a few
derived ones, such as "the first identifier a bronze record carries"), then
validated with one GE context per call. Expectations of severity *critical*
are hard: a failure stops the run (`enforce`). Expectations of severity
*warning* are soft: they are reported and logged, never fatal. Every
validation result of the call is rendered as Data Docs HTML under `docs_dir`,
so each run keeps its own report next to the lakehouse.

Uniqueness is checked on silver only: bronze keeps re-delivered records as
they arrived (they collapse on the source key in silver), so a repeated
conversation_id in bronze is normal, not a defect.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from atende.conf.settings import Settings
from atende.pipelines import schemas

if TYPE_CHECKING:  # GE takes ~1.5 s to import: only when a gate actually runs
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

DOCS_SITE = "atende_quality"

# The instant column of each bronze source that must lie in the sane range.
BRONZE_TIMESTAMPS = {
    "conversations": "started_at",
    "email": "sent_at",
    "calls": "started_at",
    "surveys": "submitted_at",
    "crm": "updated_at",
    "orders": "ordered_at",
    "actions": "sent_at",
}


def _first_whatsapp_sender() -> Column:
    # a user who hides their number behind a username is identified by their user id (BSUID)
    senders = F.filter(
        F.transform(F.col("messages"), lambda m: F.coalesce(m["wa_id"], m["user_id"])), lambda s: s.isNotNull()
    )
    return F.try_element_at(senders, F.lit(1))


# The first identifier a bronze record carries (null: the record cannot reach a customer).
# crm and products are left out: a CRM row is its own identifier, a product none.
BRONZE_IDENTIFIERS: dict[str, Callable[[], Column]] = {
    "conversations": lambda: F.coalesce(*(F.col(f"customer.{f}") for f in schemas.CUSTOMER_STRUCT.fieldNames()
                                          if f != "name")),
    "whatsapp": _first_whatsapp_sender,
    "email": lambda: F.col("from_address"),
    "calls": lambda: F.col("ani"),
    "surveys": lambda: F.coalesce(F.col("contact_id"), F.col("email"), F.col("phone"), F.col("crm_id")),
    "orders": lambda: F.coalesce(F.col("crm_id"), F.col("email")),
    "actions": lambda: F.coalesce(F.col("crm_id"), F.col("email"), F.col("phone")),
}


@dataclass(frozen=True)
class GateResult:
    table: str
    passed: bool
    hard_failures: list[str]  # one line each, naming the table and the expectation
    warnings: list[str]


class QualityGateFailed(RuntimeError):
    """One or more hard expectations failed; the message is one line naming tables and expectations."""


def enforce(results: list[GateResult], log_warnings: bool = True) -> None:
    """Log every warning (unless the caller shows them itself: `log_warnings=False`); raise
    QualityGateFailed when any hard expectation failed."""
    for result in results:
        for warning in result.warnings if log_warnings else ():
            log.warning("quality warning: %s", warning)
    failures = [message for result in results for message in result.hard_failures]
    if failures:
        tables = sorted({r.table for r in results if r.hard_failures})
        raise QualityGateFailed(
            f"quality gate failed for {', '.join(tables)}: " + "; ".join(failures)
        )


# --------------------------------------------------------------------------- suites
@dataclass(frozen=True)
class _Suite:
    """What one GE validation reads (a narrowed frame) and expects of it."""

    name: str             # table key, or table key + ".health"
    table: str            # the table a person knows (what GateResult names)
    frame: DataFrame
    expectations: list[Expectation]


def _bounds(settings: Settings, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    earliest = dt.date.fromisoformat(settings.ingest.earliest_valid_date)
    low = dt.datetime(earliest.year, earliest.month, earliest.day, tzinfo=dt.timezone.utc)
    high = now + dt.timedelta(hours=settings.ingest.future_tolerance_hours)
    return low, high


def _sane_instant(gxe, column: str, low: dt.datetime, high: dt.datetime) -> Expectation:
    # Spark hands instants back as naive datetimes in the session time zone (UTC here,
    # set by lakehouse.spark); naive UTC bounds compare with them without surprises.
    low_n, high_n = (b.astimezone(dt.timezone.utc).replace(tzinfo=None) for b in (low, high))
    return gxe.ExpectColumnValuesToBeBetween(
        column=column, min_value=low_n, max_value=high_n,
        description=f"{column} between {low_n:%Y-%m-%d} and {high_n:%Y-%m-%d %H:%M} UTC",
    )


def _not_null(gxe, column: str) -> Expectation:
    return gxe.ExpectColumnValuesToNotBeNull(column=column, description=f"{column} is never null")


def _mostly_present(gxe, column: str, mostly: float, what: str) -> Expectation:
    return gxe.ExpectColumnValuesToNotBeNull(
        column=column, mostly=mostly, severity="warning",
        description=f"at least {mostly:.0%} of rows {what}",
    )


def _score_scales(gxe) -> list[Expectation]:
    from great_expectations.expectations.row_conditions import Column as Where

    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="score", min_value=low, max_value=high, row_condition=Where("survey") == survey,
            description=f"{survey} score between {low} and {high}",
        )
        for survey, (low, high) in schemas.SURVEY_SCALES.items()
    ]


def _bronze_suite(gxe, source: str, df: DataFrame, settings: Settings, low, high) -> _Suite | None:
    if source not in schemas.BRONZE:
        return None
    key = schemas.BRONZE_KEYS.get(source)
    ts = BRONZE_TIMESTAMPS.get(source)
    identifier = BRONZE_IDENTIFIERS.get(source)
    columns: list[Column] = []
    expectations: list[Expectation] = []
    if key:
        columns.append(F.col(key))
        expectations.append(_not_null(gxe, key))
    if ts:
        columns.append(F.col(ts))
        expectations += [_not_null(gxe, ts), _sane_instant(gxe, ts, low, high)]
    if source == "conversations":
        columns.append(F.col("channel"))
        expectations.append(gxe.ExpectColumnValuesToBeInSet(
            column="channel", value_set=list(schemas.DIGITAL_CHANNELS),
            description="channel is a known digital channel"))
    if source == "surveys":
        columns += [F.col("survey"), F.col("score")]
        expectations += [
            gxe.ExpectColumnValuesToBeInSet(column="survey", value_set=list(schemas.SURVEY_SCALES),
                                            description="survey is one of " + ", ".join(schemas.SURVEY_SCALES)),
            *_score_scales(gxe),
        ]
    if source == "whatsapp":
        # status-only payloads (delivery receipts) and account-level changes (template, quality,
        # account updates) carry no sender by design
        df = df.where(~F.col("payload_kind").isin("statuses", "account_update"))
    if identifier is not None:
        columns.append(identifier().alias("first_identifier"))
        expectations.append(_mostly_present(
            gxe, "first_identifier", settings.quality.min_bronze_identified_share,
            "carry an identifier (crm_id, e-mail, phone, handle or device)"))
    if not expectations:
        return None
    return _Suite(f"bronze.{source}", f"bronze.{source}", df.select(*columns), expectations)


def _interactions_suite(gxe, df: DataFrame, settings: Settings, low, high) -> _Suite:
    columns = ["interaction_id", "channel", "started_at", "customer_key"]
    expectations = [
        _not_null(gxe, "interaction_id"),
        gxe.ExpectColumnValuesToBeUnique(column="interaction_id", description="interaction_id is unique"),
        _not_null(gxe, "channel"),
        gxe.ExpectColumnValuesToBeInSet(column="channel", value_set=list(schemas.ALL_CHANNELS),
                                        description="channel is a known channel"),
        _not_null(gxe, "started_at"),
        _sane_instant(gxe, "started_at", low, high),
        _mostly_present(gxe, "customer_key", settings.quality.min_interactions_with_customer_share,
                        "have a customer_key"),
    ]
    return _Suite("silver.interactions", "silver.interactions", df.select(*columns), expectations)


def _responses_suite(gxe, df: DataFrame, settings: Settings, low, high) -> _Suite:
    columns = ["response_id", "submitted_at", "survey", "score", "customer_key"]
    expectations = [
        _not_null(gxe, "response_id"),
        gxe.ExpectColumnValuesToBeUnique(column="response_id", description="response_id is unique"),
        _not_null(gxe, "submitted_at"),
        _sane_instant(gxe, "submitted_at", low, high),
        _not_null(gxe, "survey"),
        gxe.ExpectColumnValuesToBeInSet(column="survey", value_set=list(schemas.SURVEY_SCALES),
                                        description="survey is one of " + ", ".join(schemas.SURVEY_SCALES)),
        _not_null(gxe, "score"),
        *_score_scales(gxe),
        _mostly_present(gxe, "customer_key", settings.quality.min_survey_responses_with_customer_share,
                        "have a customer_key"),
    ]
    return _Suite("silver.survey_responses", "silver.survey_responses", df.select(*columns), expectations)


def _identity_map_suite(gxe, df: DataFrame, low, high) -> _Suite:
    columns = ["identifier_type", "identifier", "customer_key", "first_seen_at", "last_seen_at"]
    expectations = [
        _not_null(gxe, "identifier_type"),
        _not_null(gxe, "identifier"),
        _not_null(gxe, "customer_key"),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["identifier_type", "identifier"],
            description="one row (one customer_key) per identifier_type + identifier"),
        _sane_instant(gxe, "first_seen_at", low, high),
        _sane_instant(gxe, "last_seen_at", low, high),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="last_seen_at", column_B="first_seen_at", or_equal=True,
            description="last_seen_at is not before first_seen_at"),
    ]
    return _Suite("silver.identity_map", "silver.identity_map", df.select(*columns), expectations)


def _recommendations_suite(gxe, df: DataFrame, settings: Settings, low, high) -> _Suite:
    """gold.recommendations as the contract and the config say, checked before the one commit that
    service apps read: a model that went wrong stops the run instead of reaching them."""
    models = settings.models
    top_n = models.products.top_n
    ranks = F.transform("products", lambda p: p["rank"])
    frame = df.select(
        "customer_key", "tone", "tone_confidence", "next_best_action", "nba_score", "holdout", "valid_from",
        "valid_until", F.size("products").alias("products_count"),
        # ranks 1..n in some order and no product twice
        ((F.size("products") == 0)
         | ((F.array_sort(ranks) == F.sequence(F.lit(1), F.size("products")))
            & (F.size(F.array_distinct(F.transform("products", lambda p: p["product_id"])))
               == F.size("products")))).alias("products_ranked_once"),
        F.size("reasons").alias("reasons_count"),
    )
    expectations = [
        _not_null(gxe, "customer_key"),
        gxe.ExpectColumnValuesToBeUnique(column="customer_key", description="one row per customer_key"),
        gxe.ExpectColumnValuesToNotBeNull(column="tone", mostly=0.99, severity="warning",
                                          description="at least 99% of customers get a tone"),
        gxe.ExpectColumnValuesToBeInSet(column="tone", value_set=sorted(models.tone.catalogue),
                                        description="tone is one of the catalogue's tones"),
        gxe.ExpectColumnValuesToBeBetween(column="tone_confidence", min_value=0.0, max_value=1.0,
                                          description="tone_confidence is a probability"),
        _not_null(gxe, "next_best_action"),
        gxe.ExpectColumnValuesToBeInSet(column="next_best_action", value_set=sorted(models.nba.actions),
                                        description="next_best_action is in the action catalogue"),
        _not_null(gxe, "nba_score"),
        _not_null(gxe, "holdout"),
        gxe.ExpectColumnValuesToBeBetween(column="products_count", min_value=0, max_value=top_n,
                                          description=f"at most {top_n} products (models.products.top_n)"),
        gxe.ExpectColumnValuesToBeInSet(column="products_ranked_once", value_set=[True],
                                        description="products are ranked 1..n, each product once"),
        gxe.ExpectColumnValuesToBeBetween(column="reasons_count", min_value=1,
                                          description="every row carries its reasons"),
        _sane_instant(gxe, "valid_from", low, high),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="valid_until", column_B="valid_from",
                                                    description="valid_until is after valid_from"),
    ]
    return _Suite("gold.recommendations", "gold.recommendations", frame, expectations)


def identity_health(identity_map: DataFrame, merges: DataFrame | None, run_id: str,
                    exceptions: DataFrame | None = None) -> DataFrame:
    """One row: customers, identifiers, the largest and mean identifiers per customer, merges of the run,
    and the identifiers the over-merge guards held out of linking (silver/identity_exceptions).

    merged_share is the keys retired by this run's merges over the customers there were
    before them (customers + retired); null when no merges table was handed in. held_out_share is
    the held-out identifiers over the identifiers of the map; null without an exceptions table.
    """
    per_customer = identity_map.groupBy("customer_key").agg(F.count("*").alias("identifiers"))
    health = per_customer.agg(
        F.count("*").alias("customers"),
        F.coalesce(F.sum("identifiers"), F.lit(0)).cast("long").alias("identifiers"),
        F.max("identifiers").cast("long").alias("max_identifiers_per_customer"),
        F.avg("identifiers").alias("mean_identifiers_per_customer"),
    )
    if merges is None:
        merged = health.sparkSession.createDataFrame([(None,)], "merged_customers long")
    else:
        merged = (merges.where((F.col("run_id") == run_id) & (F.col("kind") == "merge"))
                  .agg(F.countDistinct("retired_key").cast("long").alias("merged_customers")))
    if exceptions is None:
        held = health.sparkSession.createDataFrame([(None,)], "held_out_identifiers long")
    else:
        held = (exceptions.where(F.col("kind") != "oversized_component")
                .agg(F.count("*").cast("long").alias("held_out_identifiers")))
    return health.crossJoin(merged).crossJoin(held).select(
        "customers", "identifiers", "max_identifiers_per_customer", "mean_identifiers_per_customer",
        "merged_customers",
        # try_divide: no customers and no merges is 0/0, an error under ANSI mode
        F.try_divide(F.col("merged_customers"), F.col("customers") + F.col("merged_customers")).alias("merged_share"),
        "held_out_identifiers",
        F.try_divide(F.col("held_out_identifiers"), F.col("identifiers")).alias("held_out_share"),
    )


def _identity_health_suite(gxe, identity_map: DataFrame, merges: DataFrame | None, settings: Settings,
                           run_id: str, exceptions: DataFrame | None = None) -> _Suite:
    q = settings.quality
    limit = settings.identity.max_component_size
    expectations = [
        gxe.ExpectColumnValuesToBeBetween(
            column="max_identifiers_per_customer", max_value=limit,
            description=f"no customer holds more than {limit} identifiers (identity.max_component_size)"),
        gxe.ExpectColumnValuesToBeBetween(
            column="mean_identifiers_per_customer", max_value=q.max_mean_identifiers_per_customer,
            severity="warning",
            description=f"customers hold at most {q.max_mean_identifiers_per_customer:g} identifiers on average"),
        gxe.ExpectColumnValuesToBeBetween(
            column="merged_share", max_value=q.max_merged_customer_share, severity="warning",
            description=f"at most {q.max_merged_customer_share:.0%} of customers merged in this run"),
        gxe.ExpectColumnValuesToBeBetween(
            column="held_out_share", max_value=q.max_held_out_identifier_share, severity="warning",
            description=f"at most {q.max_held_out_identifier_share:.0%} of identifiers held out of linking "
                        "(shared, hubs, the company's own; see silver/identity_exceptions)"),
    ]
    return _Suite("silver.identity_map.health", "silver.identity_map",
                  identity_health(identity_map, merges, run_id, exceptions), expectations)


# Tables checked for their key alone (the tables with suites of their own above are not listed):
# table -> (key columns never null, key columns that may be null). The key is unique (hard); a null in a
# nullable key column (the KPIs' base level has no dimension_value) counts as one value of its own.
KEYED_TABLES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "silver.orders": (("order_id",), ()),
    "silver.actions": (("action_id",), ()),
    "silver.products": (("product_id",), ()),
    "silver.crm": (("crm_id", "updated_at"), ()),
    "silver.record_keys": (("source", "record_id"), ()),
    "silver.customers": (("customer_key",), ()),
    "gold.customer_profiles": (("customer_key",), ()),
    "gold.customer_features": (("customer_key",), ()),
    "gold.service_kpis": (("date", "channel", "grouping_level"), ("dimension_value",)),
}


def _keyed_suite(gxe, key: str, df: DataFrame) -> _Suite:
    required, nullable = KEYED_TABLES[key]
    columns = (*required, *nullable)
    frame = df.select(*required, *[F.coalesce(F.col(c).cast("string"), F.lit("")).alias(c) for c in nullable])
    expectations: list[Expectation] = [_not_null(gxe, c) for c in required]
    if len(columns) == 1:
        expectations.append(gxe.ExpectColumnValuesToBeUnique(column=columns[0], description=f"{columns[0]} is unique"))
    else:
        expectations.append(gxe.ExpectCompoundColumnsToBeUnique(
            column_list=list(columns), description="one row per " + " + ".join(columns)))
    return _Suite(key, key, frame, expectations)


def _build_suites(gxe, settings: Settings, tables: Mapping[str, DataFrame], run_id: str,
                  now: dt.datetime) -> list[_Suite]:
    low, high = _bounds(settings, now)
    suites: list[_Suite] = []
    for key, df in tables.items():
        layer, _, name = key.partition(".")
        suite: _Suite | None = None
        if layer == "bronze":
            suite = _bronze_suite(gxe, name, df, settings, low, high)
        elif key == "silver.interactions":
            suite = _interactions_suite(gxe, df, settings, low, high)
        elif key == "silver.survey_responses":
            suite = _responses_suite(gxe, df, settings, low, high)
        elif key == "silver.identity_map":
            suites.append(_identity_map_suite(gxe, df, low, high))
            suite = _identity_health_suite(gxe, df, tables.get("silver.identity_merges"), settings, run_id,
                                           tables.get("silver.identity_exceptions"))
        elif key == "gold.recommendations":
            suite = _recommendations_suite(gxe, df, settings, low, high)
        elif key in KEYED_TABLES:
            suite = _keyed_suite(gxe, key, df)
        if suite is not None:
            suites.append(suite)
    return suites


# --------------------------------------------------------------------------- GE plumbing
def _context(docs_dir: Path):
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={
            DOCS_SITE: {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder", "show_cta_footer": False},
            }
        },
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _show(value: Any) -> str:
    import numpy as np

    if isinstance(value, np.datetime64):  # pandas batches hand back numpy scalars
        value = dt.datetime.fromisoformat(str(value.astype("datetime64[us]")))
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, dict):  # compound-uniqueness samples are {column: value}
        return "(" + ", ".join(_show(v) for v in value.values()) + ")"
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return repr(value)


def _describe(table: str, result: Any) -> str:
    config = result.expectation_config
    description = config.description or config.type
    detail = result.result or {}
    if result.exception_info and result.exception_info.get("raised_exception"):
        message = (result.exception_info.get("exception_message") or "").strip().splitlines()
        outcome = "could not be checked: " + (message[0] if message else "error")
    elif "unexpected_count" in detail and detail.get("element_count") is not None:
        outcome = f"{detail['unexpected_count']} of {detail['element_count']} rows fail"
        sample = [v for v in detail.get("partial_unexpected_list") or [] if v is not None]
        if sample:
            outcome += " (e.g. " + ", ".join(_show(v) for v in sample[:3]) + ")"
    elif "observed_value" in detail:
        outcome = f"observed {detail['observed_value']!r}"
    else:
        outcome = "failed"
    return f"{table}: expected {description} [{config.type}]: {outcome}"


def _in_memory(suite: _Suite, max_rows: int):
    """The suite's narrowed frame as a pandas frame when it has at most `max_rows` rows, else None.

    Great Expectations computes each metric of a Spark batch as Spark jobs of its own (about a second
    apiece on a small frame, most of a small run's gate time); a table that fits in memory is collected
    once, through Arrow, and validated by GE's pandas engine with the same expectations. A frame holding
    values pandas cannot (a timestamp past the year 2262) stays on Spark.
    """
    if max_rows <= 0:
        return None
    try:
        with warnings.catch_warnings():  # pyspark warns before raising on a failed Arrow conversion
            warnings.simplefilter("ignore", UserWarning)
            rows = suite.frame.limit(max_rows + 1).toPandas()
    except Exception as exc:  # noqa: BLE001 - any conversion problem: Spark validates it instead
        log.debug("%s validated on Spark: %s", suite.name, str(exc).splitlines()[0] if str(exc) else exc)
        return None
    return rows if len(rows) <= max_rows else None


def run_quality_gates(spark: SparkSession, settings: Settings, tables: Mapping[str, DataFrame], run_id: str,
                      docs_dir: Path) -> list[GateResult]:
    """Validate the tables handed in (unknown keys ignored); one GateResult per known table.

    Keys: "bronze.<source>", "silver.interactions", "silver.survey_responses",
    "silver.identity_map" (plus "silver.identity_merges", read for the share of customers
    merged in this run, and "silver.identity_exceptions", for the share of identifiers held out), "gold.recommendations",
    and the tables of KEYED_TABLES (their keys). Data Docs of every validation land under docs_dir (index.html).
    """
    now = dt.datetime.now(dt.timezone.utc)
    context = _context(Path(docs_dir))
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.core.run_identifier import RunIdentifier

    suites = _build_suites(gxe, settings, tables, run_id, now)
    if not suites:
        return []
    sources: dict[str, Any] = {}
    gx_run = RunIdentifier(run_name=run_id, run_time=now)
    failures: dict[str, list[str]] = {}
    warnings: dict[str, list[str]] = {}
    for suite in suites:
        failures.setdefault(suite.table, [])
        warnings.setdefault(suite.table, [])
        in_memory = _in_memory(suite, settings.quality.in_memory_max_rows)
        engine = "pandas" if in_memory is not None else "spark"
        if engine not in sources:
            add = context.data_sources.add_pandas if engine == "pandas" else context.data_sources.add_spark
            sources[engine] = add(name=f"atende_{engine}")
        gx_suite = context.suites.add(gx.ExpectationSuite(name=suite.name, expectations=suite.expectations))
        batch_definition = (sources[engine].add_dataframe_asset(name=suite.name)
                            .add_batch_definition_whole_dataframe("all"))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=gx_suite))
        try:
            outcome = validation.run(
                batch_parameters={"dataframe": in_memory if in_memory is not None else suite.frame},
                run_id=gx_run, result_format="SUMMARY")
        finally:
            if in_memory is None:
                suite.frame.unpersist()  # GE persists the batch it validates
        for result in outcome.results:
            if result.success:
                continue
            severity = result.expectation_config.severity
            soft = getattr(severity, "value", severity) in ("warning", "info")
            (warnings if soft else failures)[suite.table].append(_describe(suite.table, result))
    context.build_data_docs(site_names=[DOCS_SITE])
    return [GateResult(table=t, passed=not failures[t], hard_failures=failures[t], warnings=warnings[t])
            for t in failures]
