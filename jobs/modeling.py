"""The model jobs: customer features, persona segmentation, recommendations.

Each training run is an MLflow run: parameters, metrics, plots, and the Delta version of every
input table it read; its model is registered, and the `champion` alias moves to the new version
only when it beats the current champion on the held-out metric. Scoring always loads
`models:/NAME@champion`, so a worse retrain never reaches the service apps.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import math
import os
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from atende.conf.settings import Settings
from atende.features.customer import build_customer_features, numeric_feature_columns
from atende.jobs import tracking
from atende.jobs.bookkeeping import error_line, threads_in_job_group
from atende.lakehouse.storage import Storage, join
from atende.lakehouse.tables import STAGING_DIR, Lakehouse
from atende.models.holdout import HOLDOUT_VERSION, holdout_flag, threshold
from atende.models.nba import (
    build_response_training_set,
    load_nba_model,
    rules_only_next_best_action,
    save_nba_model,
    score_next_best_action,
    train_response_models,
)
from atende.models.personas import IncompatibleModel, PersonaModel, fit_personas, sample_for_fit, score_personas
from atende.models.personas import families as trait_families
from atende.models.products import (
    ProductModel,
    build_purchases,
    catalogue_sha256,
    load_product_model,
    product_inputs,
    recommend_by_popularity,
    recommend_products,
    save_product_model,
    train_product_model,
)
from atende.models.tone import (
    ToneModel,
    agent_replies,
    detect_tones,
    fallback_tones,
    load_tone_model,
    save_tone_model,
    score_tone_model,
    tone_detection_changes,
    train_tone_model,
)
from atende.pipelines import consent, schemas
from atende.pipelines.frames import cached, scalar, union_all
from atende.pipelines.schemas_gold import INTERACTION_TONES, PERSONA_SEGMENTS, PERSONAS, PRODUCT_PICKS, RECOMMENDATIONS

log = logging.getLogger(__name__)

PERSONA_MODEL = "atende-personas"
TONE_MODEL = "atende-tone"
PRODUCT_MODEL = "atende-products"
NBA_MODEL = "atende-nba"
# the model_versions value of a recommendation part a named fallback answered
FALLBACK_VERSION = "fallback"

ProgressFn = Callable[[str], None]
M = TypeVar("M")  # a model object

# MLflow prints download bars and pickling warnings meant for notebooks
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def _quiet_mlflow() -> None:
    for name in ("mlflow", "mlflow.pyfunc", "mlflow.models", "mlflow.store", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def executors_read_driver_files(spark: SparkSession) -> bool:
    """Whether the executors see the driver's files: in local mode they run in the driver's JVM."""
    return (spark.sparkContext.master or "").startswith("local")


@dataclass
class ModelContext:
    spark: SparkSession
    settings: Settings
    lake: Lakehouse
    run_id: str
    now: dt.datetime
    progress: ProgressFn
    # quality gate over frames about to be written ("stage", {"layer.table": frame}); raises on a hard failure
    gate: Callable[[str, dict[str, DataFrame]], None] | None = None
    # why the current job answered with less than a freshly trained model (the Runner drains it into
    # the job's ops/runs row, status `degraded`)
    degradations: list[str] = field(default_factory=list)
    # a new version replaces its champion whatever its score (after an erasure: the champion was fitted on
    # data that held the erased customer)
    promote_always: bool = False

    def __post_init__(self) -> None:
        _quiet_mlflow()
        tracking.configure(self.settings, self.lake.root)

    def degrade(self, message: str) -> None:
        self.degradations.append(message)
        self.progress(f"degraded: {message}")

    def take_degradations(self) -> list[str]:
        taken, self.degradations = self.degradations, []
        return taken

    def try_train(self, model_name: str, label: str, train: Callable[[], object], force: bool = False) -> str | None:
        """Train `model_name` when the retrain policy says so. Returns None when it trained (or did not
        need to), else the one-line reason it could not; with `models.on_training_failure: fail` the
        failure is raised instead. A model that cannot train never stops the data."""
        try:
            if self.should_train(model_name, force):
                train()
            return None
        except Exception as exc:
            if self.settings.models.on_training_failure == "fail":
                raise
            log.debug("%s could not be trained", label, exc_info=True)
            return error_line(exc)

    def champion_or_fallback(self, model_name: str, label: str, failure: str | None, fallback: str):
        """(model directory, version) of the champion, or None when there is none and `fallback` answers.
        A training failure is recorded as a degradation either way."""
        if tracking.champion_version(model_name) is None:
            self.degrade(f"{label}: no model ({failure or 'none registered'}); fallback: {fallback}")
            return None
        directory, version = tracking.load_champion_dir(model_name)
        if failure is not None:
            self.kept_champion(label, failure, version)
        return directory, version

    def kept_champion(self, label: str, failure: str, version: str) -> None:
        self.degrade(f"{label}: not retrained ({failure}); champion v{version} kept")

    @contextlib.contextmanager
    def shared_folder(self, purpose: str) -> Iterator[str]:
        """A fresh folder inside the lakehouse (`_staging/models/`), removed on exit. Every executor reaches
        it (they write the tables beside it), unlike the driver's temporary folder on a cluster."""
        folder = join(self.lake.uri, STAGING_DIR, "models", f"{purpose}-{uuid.uuid4().hex}")
        storage = Storage(self.spark)
        try:
            yield folder
        finally:
            try:
                storage.remove(folder)
            except OSError:
                log.warning("could not remove the scratch folder %s; remove it by hand", folder, exc_info=True)

    def save_spark_model(self, save: Callable[[M, str], None]) -> Callable[[M, Path], None]:
        """`save` (a model written by Spark's writers, from the executors) as a saver into a local folder:
        the executors write into a shared folder of the lakehouse, then the driver copies it out for MLflow."""
        def into_local(model: M, local: Path) -> None:
            if executors_read_driver_files(self.spark):
                save(model, str(local))  # local mode: the executors write the driver's folder themselves
                return
            with self.shared_folder("save") as folder:
                save(model, folder)
                Storage(self.spark).copy_folder_out(folder, local)
        return into_local

    def readable_by_executors(self, directory: str, stack: contextlib.ExitStack) -> str:
        """Where executors can read a model MLflow downloaded into the driver's `directory`: the directory
        itself in local mode (the executors run in this process), else a copy in the lakehouse, removed
        when `stack` closes."""
        if executors_read_driver_files(self.spark):
            return directory
        folder = stack.enter_context(self.shared_folder("load"))
        Storage(self.spark).copy_folder_in(directory, folder)
        return folder

    def input_versions(self, *tables: tuple[str, str]) -> dict[str, str]:
        return {f"input.{layer}.{table}.version": str(self.lake.version(layer, table)) for layer, table in tables
                if self.lake.exists(layer, table)}

    def should_train(self, model_name: str, force: bool = False) -> bool:
        policy = self.settings.models.retrain
        if force or policy == "always":
            return True
        has = tracking.champion_version(model_name) is not None
        if not has and policy == "never":
            raise RuntimeError(f"no champion of {model_name} is registered and models.retrain is 'never'")
        return not has


# ---------------------------------------------------------------------- features
def feature_inputs(lake: Lakehouse) -> dict[str, DataFrame]:
    """The silver tables `build_customer_features` reads, by its argument names (empty where not written)."""
    silver = lambda t, schema: lake.read_or_empty("silver", t, schema)  # noqa: E731
    return {
        "identity_map": silver("identity_map", schemas.IDENTITY_MAP),
        "interactions": silver("interactions", schemas.INTERACTIONS),
        "survey_responses": silver("survey_responses", schemas.SURVEY_RESPONSES),
        "crm": silver("crm", schemas.CRM),
        "orders": silver("orders", schemas.ORDERS),
        "products": silver("products", schemas.PRODUCTS),
        "actions": silver("actions", schemas.ACTIONS),
    }


def build_features(ctx: ModelContext, as_of: dt.datetime) -> DataFrame:
    return build_customer_features(**feature_inputs(ctx.lake), settings=ctx.settings, as_of=as_of)


FEATURE_INPUTS = (("silver", "identity_map"), ("silver", "interactions"), ("silver", "survey_responses"),
                  ("silver", "crm"), ("silver", "orders"), ("silver", "products"), ("silver", "actions"))


def data_as_of(ctx: ModelContext) -> dt.datetime:
    """The data's clock: the end of the newest arrival date in silver (midnight after it, in the
    business time zone), never later than now. Features are computed as of this instant, so a
    backfill of old landing files sees recency, open issues and contact fatigue as they were then,
    not against today's wall clock."""
    newest = None
    for table in ("interactions", "orders", "actions", "survey_responses"):
        if ctx.lake.exists("silver", table):
            value = ctx.lake.column_max("silver", table, "_arrival_date")  # from the Delta log's statistics
            newest = value if newest is None or (value is not None and value > newest) else newest
    if newest is None:
        return ctx.now
    tz = ZoneInfo(ctx.settings.kpis.business_timezone)
    end = dt.datetime.combine(newest + dt.timedelta(days=1), dt.time(0), tzinfo=tz).astimezone(dt.timezone.utc)
    return min(end, ctx.now)


def write_features(ctx: ModelContext) -> int:
    features = build_features(ctx, data_as_of(ctx)).withColumn("run_id", F.lit(ctx.run_id)).withColumn(
        "_written_at", F.lit(ctx.now).cast("timestamp")).cache()  # checked, then written
    try:
        if ctx.gate is not None:
            ctx.gate("features", {"gold.customer_features": features})
        return ctx.lake.write("gold", "customer_features", features, mode="overwrite").rows_written
    finally:
        features.unpersist()


# ---------------------------------------------------------------------- personas
def _persona_plot(model, path: Path) -> None:
    """Persona profile plot: each persona's trait means in standard deviations from all customers of the
    fit sample, one panel per trait family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np


    scale = model.trait_scale
    by_family = trait_families(scale)
    families = list(by_family)
    fig, axes = plt.subplots(1, max(len(families), 1), figsize=(3.2 * max(len(families), 1), 4.5), sharey=True)
    for ax, family in zip(np.atleast_1d(axes), families):
        cols = by_family[family]
        for k, pid in enumerate(model.persona_ids):
            z = [(model.traits[k].get(c, np.nan) - scale[c][0]) / (scale[c][1] or 1.0) for c in cols]
            ax.plot(range(len(cols)), z, marker="o", label=f"{pid}: {model.names[k]}")
        ax.set_xticks(range(len(cols)), [c.split("_", 1)[-1] for c in cols], rotation=70, fontsize=7)
        ax.set_title(family)
        ax.axhline(0, color="grey", lw=0.5)
    np.atleast_1d(axes)[0].set_ylabel("mean (standard deviations from all customers)")
    fig.legend(*np.atleast_1d(axes)[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=7)
    fig.tight_layout(rect=(0, 0.18, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _champion_personas(ctx: ModelContext):
    """The champion persona model, or None when there is none or it is of an older format."""
    if tracking.champion_version(PERSONA_MODEL) is None:
        return None
    directory, version = tracking.load_champion_dir(PERSONA_MODEL)
    try:
        return PersonaModel.load(directory)
    except IncompatibleModel as exc:
        ctx.progress(f"personas: champion v{version} cannot be read ({exc}); a new model replaces it")
        return None


def train_personas(ctx: ModelContext, features: DataFrame, previous=None):
    """Fit on a bounded sample, log and register; returns tracking.Registered. `previous`: the champion
    PersonaModel whose ids carry over and which the new fit must beat (None: there is none to read)."""
    import mlflow

    cfg = ctx.settings.models.personas
    sample = sample_for_fit(features, cfg)
    model, metrics = fit_personas(sample, cfg, previous)
    with mlflow.start_run(run_name=f"personas {ctx.run_id}"), tempfile.TemporaryDirectory() as tmp:
        tracking.log_params({**cfg.model_dump(), **ctx.input_versions(("gold", "customer_features"), *FEATURE_INPUTS),
                             "features": ",".join(model.features)})
        tracking.log_metrics(metrics)
        plot = Path(tmp) / "persona_profiles.png"
        _persona_plot(model, plot)
        model_dir = Path(tmp) / "personas"
        model.save(model_dir)
        mlflow.log_dict({pid: {"name": n, "description": d, "sample_size": s} for pid, n, d, s in
                         zip(model.persona_ids, model.names, model.descriptions, model.sizes)}, "personas.json")
        # the champion competes on the same held-out customers (its value is NaN when it cannot be
        # read, and then any valid fit replaces it)
        registered = tracking.log_and_register(
            PERSONA_MODEL, model_dir, metric="holdout_loglik", extra_artifacts={"plots": plot},
            champion_value=metrics.get("champion_holdout_loglik", math.nan), force_promote=ctx.promote_always,
            gate={"holdout_loglik": True})
    ctx.progress(f"personas: k={int(metrics['k'])} held-out log-likelihood {metrics['holdout_loglik']:.3f}/customer "
                 f"-> {PERSONA_MODEL} v{registered.version}"
                 + (" (champion)" if registered.promoted else f" ({registered.reason})"))
    return registered


def score_personas_job(ctx: ModelContext, features: DataFrame) -> tuple[DataFrame, DataFrame]:
    """(gold personas, gold persona_segments) from the champion model."""
    directory, version = tracking.load_champion_dir(PERSONA_MODEL)
    model = PersonaModel.load(directory)
    now = F.lit(ctx.now).cast("timestamp")
    segments = score_personas(features, model).select(
        "customer_key", "persona_id", "confidence", F.lit(version).alias("model_version"),
        F.lit(ctx.run_id).alias("run_id"), now.alias("_written_at"),
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in PERSONA_SEGMENTS.fields])
    segments = segments.cache()
    sizes = {r["persona_id"]: r["n"] for r in segments.groupBy("persona_id").agg(F.count("*").alias("n")).collect()}
    rows = [
        (pid, name, description, int(sizes.get(pid, 0)), {k: float(v) for k, v in traits.items()}, version,
         ctx.run_id, ctx.now)
        for pid, name, description, traits in zip(model.persona_ids, model.names, model.descriptions, model.traits)
    ]
    personas = ctx.spark.createDataFrame(rows, PERSONAS)
    return personas, segments


def run_personas(ctx: ModelContext, force_train: bool = False) -> tuple[int, DataFrame]:
    """Train when the policy says so, score everyone, write personas and persona_segments."""
    features = ctx.lake.read("gold", "customer_features").cache()
    champion = _champion_personas(ctx)
    failure = ctx.try_train(PERSONA_MODEL, "personas", lambda: train_personas(ctx, features, champion),
                            force=force_train or champion is None)
    if failure is not None and champion is None:
        # no persona model to score with: customers carry no persona until one can be fitted
        ctx.degrade(f"personas: no model ({failure}); fallback: no persona segments")
        personas = ctx.spark.createDataFrame([], PERSONAS)
        segments = ctx.spark.createDataFrame([], PERSONA_SEGMENTS)
    else:
        if failure is not None:
            ctx.kept_champion("personas", failure, tracking.champion_version(PERSONA_MODEL).version)
        personas, segments = score_personas_job(ctx, features)
    written = ctx.lake.write("gold", "personas", personas, mode="overwrite").rows_written
    written += ctx.lake.write("gold", "persona_segments", segments, mode="overwrite").rows_written
    segments.unpersist()
    features.unpersist()
    return written, ctx.lake.read("gold", "persona_segments")


# ---------------------------------------------------------------------- recommendations
TONE_CONTEXT = ("age_band", "income_band", "persona_id", "preferred_channel")


def _survey_comments(lake: Lakehouse) -> DataFrame | None:
    if not lake.exists("silver", "survey_responses"):
        return None
    return lake.read("silver", "survey_responses").select("response_id", "comment")


def _train(ctx: ModelContext, name: str, run_name: str, fit, save, metric: str, higher_is_better: bool,
           params: dict, inputs: tuple[tuple[str, str], ...], gate: dict[str, bool]):
    """One tracked training run: fit, log params/metrics/input versions, save, register, and promote unless
    worse than the champion beyond the interval on a `gate` measure (tracking.log_and_register)."""
    import mlflow


    with mlflow.start_run(run_name=f"{run_name} {ctx.run_id}"), tempfile.TemporaryDirectory() as tmp:
        tracking.log_params({**params, **ctx.input_versions(*inputs)})
        model, metrics = fit()
        tracking.log_metrics(metrics)
        flat = {k: v for k, v in metrics.items() if isinstance(v, dict)}
        if flat:
            mlflow.log_dict(flat, "metrics_detail.json")
        model_dir = Path(tmp) / "model"
        save(model, model_dir)
        registered = tracking.log_and_register(name, model_dir, metric=metric, higher_is_better=higher_is_better,
                                               force_promote=ctx.promote_always, gate=gate)
    ctx.progress(f"{run_name}: {metric}={registered.value:.4f} -> {name} v{registered.version}"
                 + (" (champion)" if registered.promoted else f" ({registered.reason})"))
    return registered


def run_recommendations(ctx: ModelContext, force_train: bool = False) -> int:
    """Train what the policy says, score every customer with the champions, and write
    gold/recommendations in one commit."""
    # a Spark model is read by the executors while the recommendations are computed and written: its
    # executor-readable copy (on a cluster) lives until then
    with contextlib.ExitStack() as model_folders:
        return _train_and_score(ctx, force_train, model_folders)


@dataclass(frozen=True)
class _Inputs:
    """What the recommendation models train and score on (features and segments cached by the caller)."""
    features: DataFrame
    segments: DataFrame
    context: DataFrame  # features with the persona: the tone model's context
    interactions: DataFrame
    responses: DataFrame
    orders: DataFrame
    products: DataFrame
    actions: DataFrame
    comments: DataFrame | None
    feature_cols: list[str]
    as_of: dt.datetime


def _train_and_score(ctx: ModelContext, force_train: bool, model_folders: contextlib.ExitStack) -> int:
    lake = ctx.lake
    features = lake.read("gold", "customer_features").cache()
    segments = lake.read("gold", "persona_segments").select("customer_key", "persona_id").cache()
    inputs = _Inputs(
        features=features, segments=segments, context=features.join(segments, on="customer_key", how="left"),
        interactions=lake.read_or_empty("silver", "interactions", schemas.INTERACTIONS),
        responses=lake.read_or_empty("silver", "survey_responses", schemas.SURVEY_RESPONSES),
        orders=lake.read_or_empty("silver", "orders", schemas.ORDERS),
        products=lake.read_or_empty("silver", "products", schemas.PRODUCTS),
        actions=lake.read_or_empty("silver", "actions", schemas.ACTIONS),
        comments=_survey_comments(lake), feature_cols=list(numeric_feature_columns(ctx.settings)),
        as_of=scalar(features.select(F.max("as_of"))) or ctx.now,
    )
    failures = _train_recommenders(ctx, inputs, force_train)
    recommendations = _recommendations(ctx, inputs, failures, model_folders).cache()  # validated, then written
    try:
        if ctx.gate is not None:
            ctx.gate("recommendations", {"gold.recommendations": recommendations})
        written = lake.write("gold", "recommendations", recommendations, mode="overwrite").rows_written
    finally:
        recommendations.unpersist()
        features.unpersist()
        segments.unpersist()
    return written


def _champion_nba(ctx: ModelContext):
    """The next best action's champion model, to be judged beside the new one; None when there is none or
    it cannot be read (then the new one is judged against what the champion's run logged)."""
    if tracking.champion_version(NBA_MODEL) is None:
        return None
    directory, version = tracking.load_champion_dir(NBA_MODEL)
    try:
        return load_nba_model(directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        ctx.progress(f"next best action: champion v{version} cannot be read ({exc}); judged on its logged figures")
        return None


def _train_recommenders(ctx: ModelContext, inputs: _Inputs, force_train: bool) -> dict[str, str | None]:
    """Train the tone, product and next-best-action models where `ctx.try_train` says so; per model, why it
    could not train (None when it trained or did not need to)."""
    cfg = ctx.settings.models
    i = inputs

    def fit_tone():
        return train_tone_model(i.interactions, i.responses, i.context, cfg.tone, TONE_CONTEXT,
                                survey_comments=i.comments, seed=cfg.personas.seed,
                                estimate_prior_strength_from_data=cfg.tone.estimate_prior_strength)

    def train_tone():
        return ctx.try_train(TONE_MODEL, "tone", lambda: _train(
            ctx, TONE_MODEL, "tone", fit_tone, save_tone_model, "policy_holdout_rmse", False,
            {"catalogue": ",".join(cfg.tone.catalogue), "prior_strength": cfg.tone.prior_strength,
             "adaptation_weight": cfg.tone.adaptation_weight, "comment_weight": cfg.tone.comment_weight,
             "context": ",".join(TONE_CONTEXT)},
            (("silver", "interactions"), ("silver", "survey_responses"),
             ("gold", "customer_features"), ("gold", "persona_segments")),
            {"policy_holdout_rmse": False}), force_train)

    def train_products():
        return ctx.try_train(PRODUCT_MODEL, "products", lambda: _train(
            ctx, PRODUCT_MODEL, "products",
            lambda: train_product_model(i.orders, i.interactions, i.products, i.segments, cfg.products),
            ctx.save_spark_model(save_product_model), "served_ndcg_at_10", True, cfg.products.model_dump(),
            (("silver", "orders"), ("silver", "interactions"), ("silver", "products"), ("gold", "persona_segments")),
            # the ratio over popularity: the champion's own test window had other orders, and the ratio
            # takes out how hard a window is (the champion cannot be re-judged: it was fitted on this one)
            {"served_ndcg_ratio": True}),
            force_train)

    start = i.as_of - dt.timedelta(days=cfg.nba.training_horizon_days)

    def fit_nba():
        # features as of the window's start, responses to the actions sent inside it
        rule_cols = ["marketing_consent", "open_issue", *cfg.nba.channel_flags.values()]
        past = build_features(ctx, start).select("customer_key", *dict.fromkeys([*i.feature_cols, *rule_cols]))
        training = build_response_training_set(i.actions, past, start, i.as_of)
        return train_response_models(training, cfg.nba, i.feature_cols, seed=cfg.personas.seed,
                                     champion=_champion_nba(ctx))

    def train_nba():
        return ctx.try_train(NBA_MODEL, "next best action", lambda: _train(
            ctx, NBA_MODEL, "next best action", fit_nba, save_nba_model, "auc_overall", True,
            {"window_start": start.isoformat(), "window_end": i.as_of.isoformat(),
             "fatigue_cap": cfg.nba.fatigue_cap, "fatigue_days": cfg.nba.fatigue_days,
             "actions": ",".join(cfg.nba.actions)},
            (("silver", "actions"), *FEATURE_INPUTS),
            # judged paired with the champion on the same held-out logged actions (models.nba)
            {"snips_policy_value": True, "snips_conversion_rate": True}), force_train)

    # The three are independent (each reads the inputs, fits, logs its own MLflow run: MLflow's active run
    # is per thread) and each alternates Spark jobs with driver work (scikit-learn, numpy, MLflow): side
    # by side, one's driver work overlaps another's Spark jobs. Each is seeded: the same models either way.
    return train_side_by_side(ctx, {"tone": train_tone, "products": train_products, "next_best_action": train_nba})


def train_side_by_side(ctx: ModelContext, trainers: dict[str, Callable[[], str | None]]) -> dict[str, str | None]:
    """Run the trainers (each returns why it could not train, or None) in threads of their own, their Spark
    jobs in the step's job group; per trainer, why it could not train.

    Side by side they do not take memory from each other's tasks: a task's share of execution memory is a
    share of the executor's task slots, whoever submits the jobs, and what they cache is small (under 120 MB
    of storage at 100,000 customers). A product model that ran out of memory at 100,000 customers did so
    alone too, in its evaluation's plan (now models.products._ranked_figures): a retry alone, tried for a
    session, saved nothing and was removed (bench/RESULTS.md, session 34)."""
    with threads_in_job_group(ctx.spark, len(trainers), "atende-train") as pool:
        running = {name: pool.submit(trainer) for name, trainer in trainers.items()}
        return {name: future.result() for name, future in running.items()}


def _recommendations(ctx: ModelContext, inputs: _Inputs, failures: dict[str, str | None],
                     model_folders: contextlib.ExitStack) -> DataFrame:
    """RECOMMENDATIONS for every customer of the features: each part from its champion, or from its named
    fallback (and every row says which, and why)."""
    cfg = ctx.settings.models
    i = inputs
    customers = i.features.select("customer_key")
    persona_version = tracking.champion_version(PERSONA_MODEL)
    versions = {"personas": str(persona_version.version) if persona_version else None}
    notes: list[str] = []  # reasons every row carries: which fallback answered, and why

    fallback_tone = cfg.tone.fallback_tone
    champion = ctx.champion_or_fallback(TONE_MODEL, "tone", failures["tone"], f"default tone {fallback_tone}")
    if champion is None:
        tones = fallback_tones(customers, fallback_tone, failures["tone"] or "no tone model is registered")
        versions["tone"] = FALLBACK_VERSION
    else:
        model = load_tone_model(champion[0])
        tones = score_tone_model(model, i.interactions, i.responses, i.context, survey_comments=i.comments,
                                 settings=cfg.tone, tones=interaction_tones(ctx, i.interactions, model))
        versions["tone"] = champion[1]

    champion = ctx.champion_or_fallback(PRODUCT_MODEL, "products", failures["products"],
                                        "popularity (the persona's best sellers, then everyone's)")
    if champion is None:
        recommended = recommend_by_popularity(i.orders, i.products, customers, i.segments, cfg.products.top_n)
        notes.append("products: fallback: popularity (the persona's best sellers, then everyone's), because "
                     + (failures["products"] or "no product model is registered"))
        versions["products"] = FALLBACK_VERSION
    else:
        model_folder = ctx.readable_by_executors(champion[0], model_folders)
        recommended = product_picks(ctx, load_product_model(ctx.spark, model_folder), folder_sha256(champion[0]), i)
        versions["products"] = champion[1]

    champion = ctx.champion_or_fallback(NBA_MODEL, "next best action", failures["next_best_action"],
                                        "eligibility rules and business weight only")
    if champion is None:
        actions_next = rules_only_next_best_action(
            i.features, cfg.nba, failures["next_best_action"] or "no response model is registered")
        versions["next_best_action"] = FALLBACK_VERSION
    else:
        actions_next = score_next_best_action(i.features, load_nba_model(champion[0]), cfg.nba, i.feature_cols)
        versions["next_best_action"] = champion[1]
    parts = customers.join(tones, on="customer_key", how="left").join(
        offers_with_consent(recommended, i.features), on="customer_key", how="left"
    ).join(actions_next, on="customer_key", how="left")
    in_holdout = holdout_flag("customer_key", cfg.holdout.share, cfg.holdout.salt)
    parts = parts.withColumn("holdout", in_holdout)
    if threshold(cfg.holdout.share) > 0:
        # the global control group's products: everyone's best sellers (no persona, no model), consent applied
        held = customers.where(in_holdout)
        baseline = offers_with_consent(
            recommend_by_popularity(i.orders, i.products, held, None, cfg.products.top_n), i.features)
        parts = parts.join(baseline.select("customer_key", F.col("products").alias("_baseline_products"),
                                           F.col("offer_reason").alias("_baseline_offer_reason")),
                           on="customer_key", how="left")
    return _recommendation_rows(ctx, parts, versions, notes, i.as_of)


@dataclass(frozen=True)
class _Changes:
    """What a kept table needs to hold what computing it again would give (`_kept`)."""
    todo: DataFrame  # the inputs whose rows are computed again (new, or changed since their row was kept)
    carried: DataFrame | None  # stored rows carried over as they are but for a new key (the table's columns
    # but the stamp)
    gone: DataFrame  # the keys of rows whose input is no longer there


def _kept(ctx: ModelContext, table: str, schema: StructType, identity: tuple[str, str], keys: list[str],
          everything: DataFrame, changes: Callable[[DataFrame], _Changes],
          compute: Callable[[DataFrame], DataFrame], what: str) -> DataFrame:
    """gold/`table` brought up to date in one commit, then read back: rows `compute`d from inputs (`everything`
    or a part of it; the table's columns but the stamp) and kept under `identity` (column, value: a digest of
    what made them beyond each row's own input). Written whole when the table is missing or holds another
    identity's rows; else `changes(stored)` says what to compute again, carry over and remove, and nothing is
    computed (none of `compute`'s jobs run) or committed when nothing changed."""
    lake = ctx.lake
    column, value = identity
    stamp = [F.lit(value).alias(column), F.lit(ctx.run_id).alias("run_id"),
             F.lit(ctx.now).cast("timestamp").alias("_written_at")]
    columns = schema.fieldNames()
    stored = lake.read("gold", table) if lake.exists("gold", table) else None
    held = None if stored is None else stored.agg(F.min(column), F.max(column)).first()
    other = held is not None and held[0] is not None and tuple(held) != (value, value)
    if stored is None or other:
        ctx.progress(f"{what}: computing every one" + (f" (the table holds another {column})" if other else ""))
        lake.write("gold", table, compute(everything).select("*", *stamp).select(*columns), mode="overwrite")
        return lake.read("gold", table)
    change = changes(stored)
    with contextlib.ExitStack() as frames:  # each read several times: the emptiness test, the key check, the MERGE
        todo = frames.enter_context(cached(change.todo))
        parts = [] if todo.isEmpty() else [compute(todo)]
        parts += [] if change.carried is None else [change.carried]
        rows = frames.enter_context(cached(
            union_all(parts).select("*", *stamp).select(*columns) if parts else ctx.spark.createDataFrame([], schema)))
        gone = frames.enter_context(cached(change.gone))
        if rows.isEmpty() and gone.isEmpty():
            ctx.progress(f"{what}: nothing new")
        else:
            lake.upsert("gold", table, rows, keys=keys, remove=gone)
    return lake.read("gold", table)


def interaction_tones(ctx: ModelContext, interactions: DataFrame, model: ToneModel) -> DataFrame:
    """DETECTED_TONES of every reply in `interactions` by `model`'s detector, through gold/interaction_tones
    (`_kept`): a reply is detected once per text and detector, so a day's run reads the text of the day's
    replies (and of the threads they grew), not of all history: the replies the table lacks or holds for another
    text are detected, re-keyed replies given their new key, and the rows of replies no longer in `interactions`
    removed. Its rows are then what detecting every reply again gives."""
    if not model.detector_id:  # a model not loaded from its files: nothing to name its detections by
        return detect_tones(interactions, model.detector)

    def changes(stored: DataFrame) -> _Changes:  # to detect, re-keyed, gone
        return _Changes(*tone_detection_changes(interactions, stored))

    def detected(replies: DataFrame) -> DataFrame:
        return replies.join(detect_tones(replies, model.detector), on="interaction_id").drop("agent_text")

    replies = agent_replies(interactions).select("interaction_id", "customer_key", "agent_text",
                                                 F.sha2(F.col("agent_text"), 256).alias("text_sha256"))
    kept = _kept(ctx, "interaction_tones", INTERACTION_TONES, ("detector", model.detector_id), ["interaction_id"],
                 replies, changes, detected, "tone detections")
    return kept.select("interaction_id", "tone", "tone_probability")


def product_picks(ctx: ModelContext, model: ProductModel, model_sha256: str, i: _Inputs) -> DataFrame:
    """RECOMMENDED_PRODUCTS of every customer of the features by the product champion `model` (saved as the
    files `model_sha256` digests), through gold/product_picks (`_kept`): a customer's list is scored again only
    when what it is made from changed — their persona or order lines (`product_inputs`), or the model, the
    catalogue (`catalogue_sha256`) or `top_n`, which score everyone again. A day's run scores the customers who
    bought, changed persona, merged or are new, not everyone; lists of customers no longer in the features are
    removed. Consent is applied by the caller."""
    top_n = ctx.settings.models.products.top_n
    # the Spark that scores too: another may rank ALS's ties otherwise
    version = hashlib.sha256(f"{model_sha256} {catalogue_sha256(i.products)} {top_n} "
                             f"spark {ctx.spark.version}".encode()).hexdigest()
    current = product_inputs(i.features, i.segments, i.orders)
    purchases = build_purchases(i.orders)  # what customers have bought as of today is left out (the champion's
    # own list stops at its training)

    def scored(who: DataFrame) -> DataFrame:
        picks = recommend_products(model, who.select("customer_key"), i.segments, top_n, products=i.products,
                                   orders=i.orders, purchases=purchases)
        return picks.join(current, on="customer_key")

    def changes(stored: DataFrame) -> _Changes:
        changed = current.join(stored.select("customer_key", "inputs_sha256"), on=["customer_key", "inputs_sha256"],
                               how="left_anti")
        gone = stored.select("customer_key").join(current.select("customer_key"), on="customer_key", how="left_anti")
        return _Changes(changed.select("customer_key"), None, gone)

    kept = _kept(ctx, "product_picks", PRODUCT_PICKS, ("picked_by", version), ["customer_key"],
                 i.features.select("customer_key"), changes, scored, "product lists")
    return kept.select("customer_key", "products")


def folder_sha256(directory: str) -> str:
    """A digest of every file under a local folder (names and bytes): a saved model's identity."""
    digest = hashlib.sha256()
    root = Path(directory)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"{directory}: no model files to identify the model by")
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _recommendation_rows(ctx: ModelContext, parts: DataFrame, versions: dict[str, str | None],
                         notes: list[str], as_of: dt.datetime) -> DataFrame:
    """The recommendation table's columns from the joined parts: the reasons of every part in one list,
    the model versions that answered, the validity window. A held-out customer (`holdout`, models/holdout.py)
    gets the baseline instead: the default tone, the baseline action, everyone's best sellers
    (`_baseline_products`, with `_baseline_offer_reason`), and reasons and model versions that say so."""
    cfg = ctx.settings.models
    now = F.lit(ctx.now).cast("timestamp")
    valid_until = F.lit(ctx.now + dt.timedelta(days=cfg.nba.valid_days)).cast("timestamp")
    empty = F.array().cast("array<string>")
    answered = {k: v for k, v in versions.items() if v is not None}
    held_versions = {**answered, **{part: HOLDOUT_VERSION for part in ("tone", "products", "next_best_action")}}
    tone, action = cfg.tone.fallback_tone, cfg.holdout.baseline_action
    spec = cfg.nba.actions.get(action)
    held = F.col("holdout")
    model_reasons = F.concat(
        F.when(F.col("tone_reason").isNotNull(), F.array(F.concat(F.lit("tone: "), "tone_reason"))).otherwise(empty),
        F.coalesce("reasons", empty), F.coalesce("offer_reason", empty),
        F.array(*[F.lit(n) for n in notes]) if notes else empty,
    )
    held_reasons = F.concat(
        F.array(
            F.lit(f"tone: holdout: default tone {tone} (the global control group gets the baseline)"),
            F.lit(f"holdout: {action}: this customer is in the global control group ({cfg.holdout.share:.1%} "
                  "of customers, models.holdout), which gets the baseline instead of the recommendations"),
        ),
        F.coalesce("_baseline_offer_reason", empty),
        F.array(F.lit("products: holdout: everyone's best sellers")),
    )

    def chosen(baseline: Column, recommended: str) -> Column:
        return F.when(held, baseline).otherwise(F.col(recommended)).alias(recommended)

    if "_baseline_products" not in parts.columns:  # no holdout configured: no row takes the baseline
        parts = parts.withColumns({"_baseline_products": F.lit(None).cast(RECOMMENDATIONS["products"].dataType),
                                   "_baseline_offer_reason": F.lit(None).cast("array<string>")})
    return parts.select(
        "customer_key", chosen(F.lit(tone), "tone"), chosen(F.lit(0.0), "tone_confidence"),
        F.coalesce(chosen(F.col("_baseline_products"), "products"),
                   F.array().cast(RECOMMENDATIONS["products"].dataType)).alias("products"),
        chosen(F.lit(action), "next_best_action"),
        chosen(F.lit(spec.value * spec.business_weight if spec else 0.0), "nba_score"),
        F.when(held, held_reasons).otherwise(model_reasons).alias("reasons"),
        F.when(held, _literal_map(held_versions)).otherwise(_literal_map(answered)).alias("model_versions"),
        "holdout", F.lit(as_of).cast("timestamp").alias("as_of"),
        now.alias("valid_from"), valid_until.alias("valid_until"),
        F.lit(ctx.run_id).alias("run_id"), now.alias("_written_at"),
    ).select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in RECOMMENDATIONS.fields])


def _literal_map(values: dict[str, str]) -> Column:
    return F.create_map(*[x for k, v in values.items() for x in (F.lit(k), F.lit(v))])


def offers_with_consent(recommended: DataFrame, consents: DataFrame) -> DataFrame:
    """Product lists (`customer_key, products`) kept for customers whose consent allows marketing
    (pipelines.consent), emptied for the others, with `offer_reason` saying why (an array, null when kept).
    A customer absent from `consents` (`customer_key, marketing_consent`) has no recorded consent."""
    allowed = consents.select("customer_key", consent.allows("marketing").alias("_allowed"))
    joined = recommended.join(allowed, on="customer_key", how="left")
    ok = F.coalesce(F.col("_allowed"), F.lit(False))
    return joined.select(
        *[c for c in recommended.columns if c != "products"],
        F.when(ok, F.col("products")).otherwise(F.array().cast(RECOMMENDATIONS["products"].dataType)).alias("products"),
        F.when(~ok, F.array(F.lit(f"products: none offered: {consent.NO_MARKETING_CONSENT}"))).alias("offer_reason"),
    )
