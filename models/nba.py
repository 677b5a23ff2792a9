"""Next best action (issue 7): eligibility rules, response models, priority ranking with reasons.

The catalogue lives in config (`NbaSettings.actions`): each action has a kind (service, marketing,
none), a value in BRL, a business weight and a channel. Per customer:

* **eligibility** — named rules, each with the text a person reads in `reasons`:
  - "fatigue cap: N actions in D days": a customer who received `fatigue_cap` or more actions in
    the `fatigue_days` before `as_of` (feature `actions_recent`) gets no contact at all, service
    or marketing; only the kind "none" action (no_action) stays eligible;
  - "no marketing without consent": marketing actions need `marketing_consent` true (opt-in: a
    missing consent is no consent);
  - "no WhatsApp contact known": an action whose channel needs a known contact (WhatsApp: the
    `has_whatsapp` feature; see `models.nba.channel_flags`) is out without it;
  - "only while an issue is open": escalation to a person is for a customer with
    an open issue, never a campaign (`models.nba.issue_only_actions`);
  - "no response model for X": a contact action added to the catalogue after the model was trained;
  - kind "none" actions are always eligible; the catalogue must hold at least one.
* **priority** = propensity × value × business_weight, where propensity is the response model's
  probability that the customer *converts* after the action (label `converted`), so the product is
  the expected business value of the action. Values are the configured ones (the action log's
  `revenue` is only recorded for commercial actions, 0 for service ones, so it cannot value a
  follow-up; training reports observed revenue per conversion next to the configured value).
* **ranking** — "open issue: service before offers": while `open_issue` is true, every eligible
  service action ranks before every other action whatever their scores; otherwise by priority.
  Ties break on the action name, so a customer always gets the same answer.
* **reasons** (array<string>, first the rule that decided): the decision rule, the winner's score
  breakdown, the two features pushing its propensity hardest (log-odds contributions of the linear
  model, relative to the average training customer: "interactions_count high (+0.84)"; only those
  moving it by 0.05 log-odds or more — else one line saying no feature does), and every excluded
  action with the rule that excluded it.

Response models: one pooled logistic regression (scikit-learn) over all logged actions, with
standardised numeric features (median-imputed), an indicator per action and every feature × action
interaction, L2-penalised with the strength chosen by cross-validation grouped by customer. Each
action's model is then intercept + its indicator and shared + its own feature weights: an action
with little history borrows the shared weights instead of over-fitting its own (the action log
holds a few hundred rows per action in the demo, and 50+ features). When the sample cannot
support a fit (too few rows, one class), each action gets its smoothed base rate. The fitted
parameters are plain numbers, so scoring runs in Spark (mapInPandas over the broadcast parameters,
numpy only) and the saved model is JSON (no pickle to trust on load).
Evaluation: held-out AUC per action and pooled, and an inverse-propensity-scoring estimate of the
learned policy's value against the logging policy, using the `propensity` the deciding system logged.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from atende.conf.settings import NbaSettings
from atende.models import comparison
from atende.models.offpolicy import off_policy_estimates, paired_snips_difference
from atende.pipelines import consent
from atende.pipelines.frames import seeded_rows, union_all
from atende.pipelines.schemas import CHANNEL_LABELS

log = logging.getLogger(__name__)

# The feature columns the rules read (gold customer_features).
CONSENT_COL = "marketing_consent"
OPEN_ISSUE_COL = "open_issue"
RECENT_ACTIONS_COL = "actions_recent"


LABELS = ("converted", "responded")
ACTION_LOG_COLUMNS = ("action_id", "sent_at", "action", "channel", "customer_key", "propensity",
                      "responded", "converted", "revenue")

MODEL_FILE = "model.json"
METADATA_FILE = "metadata.json"
FORMAT_VERSION = 1

ELIGIBILITY = T.StructType([
    T.StructField("customer_key", T.StringType(), False),
    T.StructField("action", T.StringType(), False),
    T.StructField("kind", T.StringType(), False),
    T.StructField("blocked_by_fatigue", T.BooleanType(), False),
    T.StructField("blocked_by_consent", T.BooleanType(), False),
    T.StructField("blocked_by_contact", T.BooleanType(), False),
    T.StructField("blocked_by_no_issue", T.BooleanType(), False),
    T.StructField("service_first", T.BooleanType(), False),
    T.StructField("eligible", T.BooleanType(), False),
    T.StructField("rule", T.StringType(), True),
])

NEXT_BEST_ACTIONS = T.StructType([
    T.StructField("customer_key", T.StringType(), False),
    T.StructField("next_best_action", T.StringType(), False),
    T.StructField("nba_score", T.DoubleType(), False),
    T.StructField("reasons", T.ArrayType(T.StringType(), False), False),
])


# ---------------------------------------------------------------------------------------- rules
def fatigue_rule(nba: NbaSettings) -> str:
    return f"fatigue cap: {nba.fatigue_cap} actions in {nba.fatigue_days} days"


CONSENT_RULE = "no marketing without consent"
SERVICE_FIRST_RULE = "open issue: service before offers"


def contact_rule(channel: str) -> str:
    return f"no {CHANNEL_LABELS.get(channel, channel)} contact known"


def no_model_rule(action: str) -> str:
    return f"no response model for {action}"


ISSUE_ONLY_RULE = "only while an issue is open"


def _check_catalogue(nba: NbaSettings) -> None:
    if not any(spec.kind == "none" for spec in nba.actions.values()):
        raise ValueError("the action catalogue needs an action of kind 'none' (no_action): "
                         "it is what a customer gets when every other action is excluded")


def _require(df: DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {', '.join(missing)}")


def _customer_rule_flags(df: DataFrame, nba: NbaSettings) -> DataFrame:
    """The per-customer facts the rules read, as named boolean columns (nulls read as false / 0)."""
    channel_flags = nba.channel_flags
    _require(df, [CONSENT_COL, OPEN_ISSUE_COL, RECENT_ACTIONS_COL, *channel_flags.values()], "customer features")
    return df.withColumns({
        "has_consent": consent.allows("marketing", F.col(CONSENT_COL)),
        "issue_open": F.coalesce(F.col(OPEN_ISSUE_COL).cast("boolean"), F.lit(False)),
        "is_fatigued": F.coalesce(F.col(RECENT_ACTIONS_COL), F.lit(0)) >= F.lit(nba.fatigue_cap),
        **{f"reaches_{channel}": F.coalesce(F.col(column).cast("boolean"), F.lit(False))
           for channel, column in channel_flags.items()},
    })


def _candidates(nba: NbaSettings, model: NbaModel | None = None,
                propensities: Column | None = None) -> Column:
    """array<struct> with one candidate per catalogue action, in catalogue order, over the columns of
    `_customer_rule_flags`. Without a model, `propensities` (when given) apply to every action. The first three fields (tier, neg_priority, action) are the ranking
    key, so `sort_array` puts the winner first."""
    structs = []
    for idx, (action, spec) in enumerate(nba.actions.items()):
        contacts = spec.kind != "none"
        blocked_by_fatigue = F.lit(contacts) & F.col("is_fatigued")
        blocked_by_consent = F.lit(spec.kind == "marketing") & ~F.col("has_consent")
        needs_contact = spec.channel in nba.channel_flags
        blocked_by_contact = (~F.col(f"reaches_{spec.channel}")) if needs_contact else F.lit(False)
        blocked_by_no_issue = F.lit(action in nba.issue_only_actions) & ~F.col("issue_open")
        response = model.responses.get(action) if model is not None else None
        blocked_by_no_model = F.lit(model is not None and response is None and contacts)
        eligible = ~(blocked_by_fatigue | blocked_by_consent | blocked_by_contact | blocked_by_no_issue
                     | blocked_by_no_model)
        rule = (
            F.when(blocked_by_fatigue, F.lit(fatigue_rule(nba)))
            .when(blocked_by_consent, F.lit(CONSENT_RULE))
            .when(blocked_by_contact, F.lit(contact_rule(spec.channel or "")))
            .when(blocked_by_no_issue, F.lit(ISSUE_ONLY_RULE))
            .when(blocked_by_no_model, F.lit(no_model_rule(action)))
        )
        service_first = F.col("issue_open") & F.lit(spec.kind == "service")
        if propensities is not None and (response is not None or model is None):
            propensity = propensities[idx]
        else:
            propensity = F.lit(0.0)
        priority = propensity * F.lit(float(spec.value)) * F.lit(float(spec.business_weight))
        structs.append(F.struct(
            F.when(service_first, 0).otherwise(1).alias("tier"),
            (F.lit(0.0) - priority).alias("neg_priority"),
            F.lit(action).alias("action"),
            F.lit(idx).alias("idx"),
            F.lit(spec.kind).alias("kind"),
            propensity.alias("propensity"),
            F.lit(float(spec.value)).alias("value"),
            F.lit(float(spec.business_weight)).alias("weight"),
            priority.alias("priority"),
            blocked_by_fatigue.alias("blocked_by_fatigue"),
            blocked_by_consent.alias("blocked_by_consent"),
            blocked_by_contact.alias("blocked_by_contact"),
            blocked_by_no_issue.alias("blocked_by_no_issue"),
            service_first.alias("service_first"),
            eligible.alias("eligible"),
            rule.alias("rule"),
            F.lit(response.kind if response is not None else "none").alias("model_kind"),
            F.lit(response.rows if response is not None else 0).alias("model_rows"),
        ))
    return F.array(*structs)


def eligible_actions(features: DataFrame, nba_settings: NbaSettings) -> DataFrame:
    """ELIGIBILITY: one row per (customer_key, catalogue action) with each rule as a named boolean,
    `eligible`, and `rule` — the text of the rule that excluded the action (null when eligible).
    `service_first` marks service actions that rank first because an issue is open."""
    _check_catalogue(nba_settings)
    flagged = _customer_rule_flags(features, nba_settings)
    return (
        flagged.select("customer_key", F.inline(_candidates(nba_settings)))
        .select(*[F.col(f.name).alias(f.name) for f in ELIGIBILITY.fields])
    )


# ---------------------------------------------------------------------------------------- model
@dataclass(frozen=True)
class ResponseModel:
    """P(label | features, action) for one action: logistic on standardised features, or a base rate."""
    kind: Literal["logistic", "prior"]
    intercept: float
    coef: tuple[float, ...] | None
    rows: int
    positives: int


@dataclass(frozen=True)
class NbaModel:
    feature_cols: tuple[str, ...]
    fill: tuple[float, ...]     # training medians, for missing values
    center: tuple[float, ...]   # training means
    scale: tuple[float, ...]    # training standard deviations (1 where constant)
    responses: dict[str, ResponseModel]
    label: str
    trained_at: str
    # standardised values are clipped to +-clip: a heavy-tailed feature (handle seconds, spend) must
    # not push a customer's propensity to 0 or 1 far outside what training saw
    clip: float = 3.0
    metadata: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        """Content hash of the parameters: the same fit gives the same version."""
        return hashlib.sha256(json.dumps(_model_params(self), sort_keys=True).encode()).hexdigest()[:12]

    def standardize(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isnan(x), np.asarray(self.fill), x)
        return np.clip((x - np.asarray(self.center)) / np.asarray(self.scale), -self.clip, self.clip)

    def contributions(self, action: str, z: np.ndarray) -> np.ndarray:
        """Per-feature log-odds contributions relative to the average training customer."""
        response = self.responses[action]
        if response.coef is None:
            return np.zeros_like(z)
        return z * np.asarray(response.coef)

    def predict(self, action: str, z: np.ndarray) -> np.ndarray:
        response = self.responses[action]
        logit = response.intercept + (z @ np.asarray(response.coef) if response.coef is not None else 0.0)
        return 1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=float) * np.ones(len(z))))


def _model_params(model: NbaModel) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "label": model.label,
        "feature_cols": list(model.feature_cols),
        "fill": list(model.fill),
        "center": list(model.center),
        "scale": list(model.scale),
        "clip": model.clip,
        "responses": {
            action: {"kind": r.kind, "intercept": r.intercept, "coef": None if r.coef is None else list(r.coef),
                     "rows": r.rows, "positives": r.positives}
            for action, r in sorted(model.responses.items())
        },
    }


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


# ---------------------------------------------------------------------------------------- training
def build_response_training_set(actions: DataFrame, features: DataFrame, start: dt.datetime | dt.date | str,
                                end: dt.datetime | dt.date | str) -> DataFrame:
    """The actions sent in [start, end) to a known customer, each with that customer's features
    (computed as of `start`, so nothing the action caused leaks into its features).

    `actions` is silver ACTIONS; `features` has one row per customer_key. A feature column named
    like an action-log column is an error rather than a silent overwrite."""
    _require(actions, ACTION_LOG_COLUMNS, "actions")
    _require(features, ["customer_key"], "features")
    clash = sorted(set(features.columns) & (set(ACTION_LOG_COLUMNS) - {"customer_key"}))
    if clash:
        raise ValueError(f"feature column(s) {', '.join(clash)} clash with action-log columns")
    sent_at = F.col("sent_at")
    in_window = (sent_at >= F.lit(start).cast("timestamp")) & (sent_at < F.lit(end).cast("timestamp"))
    has_customer = F.col("customer_key").isNotNull()
    logged = actions.where(in_window & has_customer).select(*ACTION_LOG_COLUMNS)
    return logged.join(features, on="customer_key", how="inner").select(
        *ACTION_LOG_COLUMNS, *[c for c in features.columns if c != "customer_key"]
    )


def _bucket(seed: int) -> Column:
    """A customer's place in 10,000 buckets, by a hash of customer_key: stable across runs."""
    return F.pmod(F.xxhash64(F.col("customer_key"), F.lit(seed)), F.lit(10_000))


def _is_holdout(test_fraction: float, seed: int) -> Column:
    """Held-out customers (all their actions), by a hash of customer_key: stable across runs."""
    return _bucket(seed) < F.lit(int(round(test_fraction * 10_000)))


def _fold(folds: int, seed: int) -> Column:
    """The cross-fitting fold of a customer (all their actions), 0 .. folds - 1, from the same hash as
    `_is_holdout`: with folds = 1 / test_fraction, fold 0 is exactly the held-out customers."""
    return F.floor(_bucket(seed) * F.lit(folds) / F.lit(10_000)).cast("int")


def _bounded(df: DataFrame, rows: int, sample_size: int, seed: int) -> pd.DataFrame:
    """At most `sample_size` of the `rows` rows of `df` to the driver, as a uniform sample."""
    return seeded_rows(df, seed, sample_size if rows > sample_size else None).toPandas()


def _design(z: np.ndarray, action_index: np.ndarray, n_actions: int, interaction_scale: float):
    """Sparse [features | action indicators | features x action] for the pooled regression."""
    from scipy import sparse

    n, k = z.shape
    indicators = sparse.csr_matrix((np.ones(n), (np.arange(n), action_index)), shape=(n, n_actions))
    blocks = [sparse.csr_matrix(z), indicators]
    if k:
        columns = (action_index[:, None] * k + np.arange(k)[None, :]).ravel()
        interactions = sparse.csr_matrix(
            (z.ravel() * interaction_scale, columns, np.arange(0, n * k + 1, k)), shape=(n, n_actions * k))
        blocks.append(interactions)
    return sparse.hstack(blocks, format="csr")


def _fit_pooled(z, action_index, y, n_actions, c, interaction_scale):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=5000).fit(_design(z, action_index, n_actions, interaction_scale), y)


def _choose_regularization(z, action_index, y, groups, n_actions, grid, interaction_scale, folds, seed):
    """The C of `grid` with the lowest log loss over folds of whole customers, and that loss per C."""
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    if len(grid) == 1 or len(np.unique(groups)) < folds:
        return float(grid[0]), {}
    losses = {}
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = [(tr, te) for tr, te in splitter.split(z, y, groups) if len(np.unique(y[tr])) == 2]
    for c in grid:
        total, rows = 0.0, 0
        for tr, te in splits:
            fit = _fit_pooled(z[tr], action_index[tr], y[tr], n_actions, c, interaction_scale)
            p = fit.predict_proba(_design(z[te], action_index[te], n_actions, interaction_scale))[:, 1]
            total += log_loss(y[te], p, labels=[0, 1]) * len(te)
            rows += len(te)
        losses[float(c)] = total / rows if rows else float("inf")
    return min(losses, key=lambda c: (losses[c], c)), losses


def _standardised(sample: pd.DataFrame, feature_cols: Sequence[str], clip: float):
    """(fill, center, scale, z): missing values filled with each feature's median (0 for a feature missing
    everywhere: it then carries no weight), then standardised and clipped to +-`clip`."""
    x = sample[list(feature_cols)].to_numpy(dtype=float, na_value=np.nan)
    fill = sample[list(feature_cols)].median().fillna(0.0).to_numpy(dtype=float) if feature_cols else np.zeros(0)
    filled = np.where(np.isnan(x), fill, x)
    center = filled.mean(axis=0)
    scale = filled.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    return fill, center, scale, np.clip((filled - center) / scale, -clip, clip)


def _base_rates(logged: list[str], action_index: np.ndarray, y: np.ndarray) -> dict[str, ResponseModel]:
    """Every logged action at its base rate (positives + 1) / (rows + 2): too few rows or one class."""
    responses = {}
    for i, action in enumerate(logged):
        mask = action_index == i
        rows, positives = int(mask.sum()), int(y[mask].sum())
        responses[action] = ResponseModel("prior", _logit((positives + 1.0) / (rows + 2.0)), None, rows, positives)
    return responses


def _pooled_responses(z, action_index, y, groups, logged: list[str], k: int, grid: list[float],
                      interaction_scale: float, cv_folds: int, seed: int):
    """(responses, chosen C, cross-validated log loss per C): one pooled logistic model, shared feature
    weights plus per-action indicators and weights, unpacked into a ResponseModel per action."""
    chosen_c, cv_losses = _choose_regularization(z, action_index, y, groups, len(logged), grid,
                                                 interaction_scale, cv_folds, seed)
    fit = _fit_pooled(z, action_index, y, len(logged), chosen_c, interaction_scale)
    n_actions = len(logged)
    coef = fit.coef_[0]
    shared, indicator = coef[:k], coef[k:k + n_actions]
    own = coef[k + n_actions:].reshape(n_actions, k) * interaction_scale if k else np.zeros((n_actions, 0))
    responses = {}
    for i, action in enumerate(logged):
        mask = action_index == i
        responses[action] = ResponseModel(
            "logistic", float(fit.intercept_[0] + indicator[i]), tuple(float(v) for v in shared + own[i]),
            int(mask.sum()), int(y[mask].sum()))
    return responses, chosen_c, cv_losses


def _training_metrics(sample: pd.DataFrame, y: np.ndarray, responses: dict[str, ResponseModel],
                      chosen_c: float | None, cv_losses: dict) -> dict[str, float]:
    """Rows and positive rates per action, the chosen C and its cross-validation, and the revenue the log
    says a conversion brought."""
    metrics: dict[str, float] = {"rows_train": float(len(sample)), "positives_train": float(y.sum())}
    if chosen_c is not None:
        metrics["regularization_c"] = float(chosen_c)
    for c, loss in cv_losses.items():
        metrics[f"cv_log_loss_c{c:g}"] = loss
    for action, r in responses.items():
        metrics[f"rows_train_{action}"] = float(r.rows)
        metrics[f"positive_rate_train_{action}"] = r.positives / r.rows
    # what the log says a conversion brought, next to the configured value (for the analyst: the
    # log records revenue only for commercial actions)
    paid = sample[sample["_converted"] & sample["_revenue"].notna()]
    for paid_action, revenue in paid.groupby("action", sort=True)["_revenue"].mean().items():
        metrics[f"observed_revenue_per_conversion_{paid_action}"] = float(revenue)
    return metrics


def train_response_models(
    training_set: DataFrame,
    nba_settings: NbaSettings,
    feature_cols: Sequence[str],
    *,
    label: Literal["converted", "responded"] = "converted",
    test_fraction: float = 0.25,
    sample_size: int = 100_000,
    min_rows: int = 50,
    regularization: Sequence[float] | None = None,
    interaction_scale: float = 1.0,
    clip: float = 3.0,
    cv_folds: int = 3,
    propensity_floor: float = 0.01,
    seed: int = 7,
    crossfit_folds: int | None = None,
    champion: NbaModel | None = None,
) -> tuple[NbaModel, dict[str, float]]:
    """The pooled response model on the customers outside the hold-out (a hash of customer_key),
    then `evaluate_response_models` on the held-out ones. Returns (model, metrics).

    The L2 strength C is chosen from `regularization` (default: the settings' grid) by `cv_folds`-fold cross-validation grouped by
    customer (log loss). `interaction_scale` < 1 penalises the per-action feature weights more than
    the shared ones. With fewer than `min_rows` sampled rows, or a single class, every logged action
    gets its base rate (positives + 1) / (rows + 2) instead. Standardised features are clipped to
    +-`clip` in training and scoring alike.

    With `crossfit_folds` k ≥ 2 (default: the settings' `crossfit_folds`), the off-policy estimates are also
    computed over every logged action, cross-fitted: the customers fall into k folds by the same hash, a model
    is trained the same way on the customers outside each fold and judged on the fold's, and the estimates
    pool the k folds (metrics `crossfit_*`). That judges k policies of the same procedure (one of them the
    model returned, when k = 1 / test_fraction) on k times as many rows as the hold-out alone, none of them on
    its own training customers.

    With a `champion` (the model serving now), it is judged on the same held-out actions as the new model,
    paired (`evaluate_response_models`): `challenge_snips_*` say whether the new one is worse."""
    _check_catalogue(nba_settings)
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, not {label!r}")
    feature_cols = tuple(feature_cols)
    _require(training_set, ["customer_key", "action", label, *feature_cols], "training set")
    folds = nba_settings.crossfit_folds if crossfit_folds is None else crossfit_folds
    folds = folds if folds >= 2 else 0
    known_action = F.col("action").isin(list(nba_settings.actions))
    split = training_set.where(known_action).withColumn("_holdout", _is_holdout(test_fraction, seed))
    if folds:
        split = split.withColumn("_fold", _fold(folds, seed))
    split = split.cache()  # counted, sampled for the fits and scored for the estimates
    try:
        groups = split.groupBy("_holdout", *(["_fold"] if folds else [])).count().collect()
        counts: dict[bool, int] = {}
        fold_rows: dict[int, int] = {}
        for r in groups:
            counts[r["_holdout"]] = counts.get(r["_holdout"], 0) + int(r["count"])
            if folds:
                fold_rows[r["_fold"]] = fold_rows.get(r["_fold"], 0) + int(r["count"])

        def fit(rows: DataFrame, n: int) -> tuple[NbaModel, dict[str, float]]:
            """The model on `rows` (n of them), and its training metrics."""
            train_rows = rows.select(
                "customer_key", "action", F.coalesce(F.col(label).cast("int"), F.lit(0)).alias("_y"),
                F.coalesce(F.col("converted"), F.lit(False)).alias("_converted"),
                F.col("revenue").cast("double").alias("_revenue"),
                *[F.col(c).cast("double").alias(c) for c in feature_cols],
            )
            sample = _bounded(train_rows, n, sample_size, seed)
            if sample.empty:
                raise ValueError("no training rows: no logged action of a catalogue action reached a customer "
                                 "with features")
            fill, center, scale, z = _standardised(sample, feature_cols, clip)
            y = sample["_y"].to_numpy(dtype=int)
            logged = [a for a in nba_settings.actions if (sample["action"] == a).any()]
            action_index = sample["action"].map({a: i for i, a in enumerate(logged)}).to_numpy(dtype=int)
            if len(sample) < min_rows or len(np.unique(y)) < 2:
                responses, chosen_c, cv_losses = _base_rates(logged, action_index, y), None, {}
            else:
                grid = list(nba_settings.regularization if regularization is None else regularization)
                responses, chosen_c, cv_losses = _pooled_responses(
                    z, action_index, y, sample["customer_key"].to_numpy(), logged, len(feature_cols), grid,
                    interaction_scale, cv_folds, seed)
            model = NbaModel(
                feature_cols=feature_cols,
                fill=tuple(float(v) for v in fill),
                center=tuple(float(v) for v in center),
                scale=tuple(float(v) for v in scale),
                responses=responses,
                label=label,
                trained_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                clip=clip,
                metadata={"value_source": "configured ActionSpec.value", "rows_sampled": int(len(sample)),
                          "test_fraction": test_fraction, "seed": seed, "regularization_c": chosen_c,
                          "interaction_scale": interaction_scale},
            )
            return model, _training_metrics(sample, y, responses, chosen_c, cv_losses)

        model, metrics = fit(split.where(~F.col("_holdout")), counts.get(False, 0))
        metrics.update(evaluate_response_models(
            model, split.where(F.col("_holdout")).drop("_holdout", "_fold"), nba_settings, label=label,
            sample_size=sample_size, propensity_floor=propensity_floor, seed=seed,
            rows=counts.get(True, 0), champion=champion,
        ))
        if folds:
            # the model above was trained outside fold 0 exactly when fold 0 is the hold-out
            reuse = int(round(test_fraction * 10_000)) * folds == 10_000
            scored = []
            for k in range(folds):
                if not fold_rows.get(k):
                    continue
                outside = split.where(F.col("_fold") != k)
                try:
                    fold_model = model if reuse and k == 0 else fit(outside, sum(
                        n for j, n in fold_rows.items() if j != k))[0]
                except ValueError:  # no rows outside the fold: nothing to judge it with
                    continue
                held = split.where(F.col("_fold") == k).drop("_holdout", "_fold")
                if fold_rows[k] > sample_size // folds:
                    held = seeded_rows(held, seed, sample_size // folds)
                scored.append(_scored_actions(held, fold_model, nba_settings, label))
            if scored:
                pooled = _in_log_order(union_all(scored).toPandas())
                metrics["crossfit_folds"] = float(folds)
                metrics["crossfit_rows"] = float(len(pooled))
                metrics.update({f"crossfit_{k}": v for k, v in _logged_propensity_metrics(
                    pooled, nba_settings, propensity_floor, seed).items()})
    finally:
        split.unpersist()
    return model, metrics


# ---------------------------------------------------------------------------------------- scoring
def _propensity_frame(df: DataFrame, model: NbaModel, nba: NbaSettings, pass_cols: Sequence[str],
                      top_features: int) -> DataFrame:
    """`pass_cols` + `_p` (propensity per catalogue action, catalogue order; 0 where no model) and,
    per action, the indices / contributions / high-or-low of its `top_features` strongest features,
    flattened into `_top_idx`, `_top_contrib`, `_top_high` (action j at [j*top, (j+1)*top))."""
    feature_cols = list(model.feature_cols)
    actions = list(nba.actions)
    top = max(0, min(top_features, len(feature_cols)))
    narrow = df.select(*pass_cols, *[F.col(c).cast("double").alias(f"_f{i}") for i, c in enumerate(feature_cols)])
    schema = T.StructType([
        *[narrow.schema[c] for c in pass_cols],
        T.StructField("_p", T.ArrayType(T.DoubleType(), False), False),
        T.StructField("_top_idx", T.ArrayType(T.IntegerType(), False), False),
        T.StructField("_top_contrib", T.ArrayType(T.DoubleType(), False), False),
        T.StructField("_top_high", T.ArrayType(T.BooleanType(), False), False),
    ])
    try:
        shared = df.sparkSession.sparkContext.broadcast(model)
    except Exception:  # Spark Connect has no SparkContext: the closure carries the (small) model
        shared = None
    inputs = [f"_f{i}" for i in range(len(feature_cols))]

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        m = shared.value if shared is not None else model
        for pdf in batches:
            n = len(pdf)
            z = m.standardize(pdf[inputs].to_numpy(dtype=float, na_value=np.nan)) if inputs else np.zeros((n, 0))
            p = np.zeros((n, len(actions)))
            idx = np.full((n, len(actions) * top), -1, dtype=np.int32)
            contrib = np.zeros((n, len(actions) * top))
            high = np.zeros((n, len(actions) * top), dtype=bool)
            for j, action in enumerate(actions):
                if action not in m.responses:
                    continue
                p[:, j] = m.predict(action, z)
                if top and m.responses[action].kind == "logistic":
                    c = m.contributions(action, z)
                    order = np.argsort(-np.abs(c), axis=1, kind="stable")[:, :top]
                    idx[:, j * top:(j + 1) * top] = order
                    contrib[:, j * top:(j + 1) * top] = np.take_along_axis(c, order, axis=1)
                    high[:, j * top:(j + 1) * top] = np.take_along_axis(z, order, axis=1) > 0
            out = pdf[list(pass_cols)].copy()
            # one array per cell (an array column); pandas-stubs take a list of scalars only
            out["_p"] = list(p)  # type: ignore[assignment]
            out["_top_idx"] = list(idx)  # type: ignore[assignment]
            out["_top_contrib"] = list(contrib)  # type: ignore[assignment]
            out["_top_high"] = list(high)  # type: ignore[assignment]
            yield out

    return narrow.mapInPandas(score, schema)


def _decide(df: DataFrame, model: NbaModel, nba: NbaSettings, pass_cols: Sequence[str],
            top_features: int, min_contribution: float = 0.05) -> DataFrame:
    """`pass_cols` + `_candidates` (every action, scored and checked) + `_winner` + `reasons`.
    A feature is named in the reasons when it moves the winner's log-odds by `min_contribution`."""
    rule_cols = ["has_consent", "issue_open", "is_fatigued", *[f"reaches_{c}" for c in nba.channel_flags]]
    flagged = _customer_rule_flags(df, nba)
    scored = _propensity_frame(flagged, model, nba, [*pass_cols, *rule_cols], top_features)
    top = max(0, min(top_features, len(model.feature_cols)))
    candidates = _candidates(nba, model, F.col("_p"))
    ranked = F.sort_array(F.filter(F.col("_candidates"), lambda c: c["eligible"]))
    decided = scored.withColumn("_candidates", candidates).withColumn("_ranked", ranked).withColumn(
        "_winner", F.col("_ranked")[0]
    )
    w = F.col("_winner")
    excluded = F.filter(F.col("_candidates"), lambda c: ~c["eligible"])
    outranked_offer = F.filter(
        F.col("_ranked"), lambda c: (c["kind"] != F.lit("service")) & (c["priority"] > w["priority"])
    )
    # the decision: the rule that settled it comes first in `reasons`
    only_default = (w["kind"] == F.lit("none")) & (F.size("_ranked") == 1)
    service_first_decided = w["service_first"]
    service_first_overrode = service_first_decided & (F.size(outranked_offer) > 0)
    excluded_rules = F.array_join(F.array_distinct(F.transform(excluded, lambda c: c["rule"])), "; ")
    decision = (
        F.when(only_default, F.concat(F.lit("only "), w["action"], F.lit(" eligible: "), excluded_rules))
        .when(service_first_overrode, F.format_string(
            SERVICE_FIRST_RULE + " (%s ranks first although %s scores %.2f)",
            w["action"], outranked_offer[0]["action"], outranked_offer[0]["priority"]))
        .when(service_first_decided, F.lit(SERVICE_FIRST_RULE))
        .otherwise(F.format_string("highest priority among %d eligible actions", F.size("_ranked")))
    )
    breakdown = F.format_string("%s: propensity %.3f × value %.2f × weight %.2f = %.2f", w["action"],
                                w["propensity"], w["value"], w["weight"], w["priority"])
    names = F.array(*[F.lit(c) for c in model.feature_cols]) if model.feature_cols else F.array().cast("array<string>")
    start = w["idx"] * F.lit(top) + F.lit(1)
    drivers = F.arrays_zip(
        F.slice("_top_idx", start, F.lit(max(top, 1))).alias("i"),
        F.slice("_top_contrib", start, F.lit(max(top, 1))).alias("c"),
        F.slice("_top_high", start, F.lit(max(top, 1))).alias("h"),
    ) if top else F.array()
    feature_reasons = F.transform(
        F.filter(drivers, lambda d: (d["i"] >= 0) & (F.abs(d["c"]) >= F.lit(min_contribution))),
        lambda d: F.format_string("%s %s (%+.2f)", F.element_at(names, d["i"] + 1),
                                  F.when(d["h"], F.lit("high")).otherwise(F.lit("low")), d["c"]),
    ) if top else F.array().cast("array<string>")
    base_rate = (
        F.when(w["model_kind"] == F.lit("prior"), F.array(F.format_string(
            "%s propensity is its base rate (%d logged actions)", w["action"], w["model_rows"])))
        .when((w["model_kind"] == F.lit("logistic")) & (F.size(feature_reasons) == 0) & F.lit(top > 0),
              F.array(F.format_string("%s propensity is close to the average customer's: no feature moves it "
                                      "by %.2f log-odds or more", w["action"], F.lit(min_contribution))))
        .otherwise(F.array().cast("array<string>"))
    )
    exclusions = F.transform(excluded, lambda c: F.concat(c["action"], F.lit(" excluded: "), c["rule"]))
    reasons = F.concat(F.array(decision, breakdown), feature_reasons, base_rate, exclusions)
    return decided.withColumn("reasons", reasons)


def score_next_best_action(features: DataFrame, model: NbaModel, nba_settings: NbaSettings,
                           feature_cols: Sequence[str], *, top_features: int | None = None,
                           min_contribution: float = 0.05) -> DataFrame:
    """NEXT_BEST_ACTIONS: one row per customer_key of `features` (one row per customer as of the
    scoring date): the highest-ranked eligible action, its priority and the reasons."""
    _check_catalogue(nba_settings)
    if tuple(feature_cols) != tuple(model.feature_cols):
        raise ValueError(f"feature_cols {list(feature_cols)} differ from the model's {list(model.feature_cols)}")
    _require(features, ["customer_key", *feature_cols], "customer features")
    if top_features is None:
        top_features = nba_settings.top_features
    decided = _decide(features, model, nba_settings, ["customer_key"], top_features, min_contribution)
    return decided.select(
        "customer_key",
        F.col("_winner.action").alias("next_best_action"),
        F.col("_winner.priority").alias("nba_score"),
        "reasons",
    ).select(*[F.col(f.name).alias(f.name) for f in NEXT_BEST_ACTIONS.fields])


def rules_only_next_best_action(features: DataFrame, nba_settings: NbaSettings, because: str) -> DataFrame:
    """NEXT_BEST_ACTIONS without a response model (the fallback): the eligibility rules decide what may
    be offered and, among the eligible actions, value × business weight ranks them (every propensity
    counts as 1; service first while an issue is open). The first reason names the fallback and why."""
    _check_catalogue(nba_settings)
    flagged = _customer_rule_flags(features, nba_settings)
    same = F.array(*[F.lit(1.0) for _ in nba_settings.actions])
    decided = flagged.withColumn("_candidates", _candidates(nba_settings, None, same)).withColumn(
        "_winner", F.sort_array(F.filter(F.col("_candidates"), lambda c: c["eligible"]))[0])
    w = F.col("_winner")
    excluded = F.filter(F.col("_candidates"), lambda c: ~c["eligible"])
    reasons = F.concat(
        F.array(
            F.lit(f"fallback: eligibility rules and business weight only, because {because}"),
            F.when(w["service_first"], F.lit(SERVICE_FIRST_RULE)).otherwise(F.lit("highest value × weight")),
            F.format_string("%s: value %.2f × weight %.2f = %.2f", w["action"], w["value"], w["weight"], w["priority"]),
        ),
        F.transform(excluded, lambda c: F.concat(c["action"], F.lit(" excluded: "), c["rule"])),
    )
    return decided.select(
        "customer_key", w["action"].alias("next_best_action"), w["priority"].alias("nba_score"), reasons.alias("reasons"),
    ).select(*[F.col(f.name).alias(f.name) for f in NEXT_BEST_ACTIONS.fields])


# ---------------------------------------------------------------------------------------- evaluation
def evaluate_response_models(
    model: NbaModel,
    holdout: DataFrame,
    nba_settings: NbaSettings,
    *,
    label: str | None = None,
    sample_size: int = 100_000,
    propensity_floor: float = 0.01,
    seed: int = 7,
    rows: int | None = None,
    champion: NbaModel | None = None,
) -> dict[str, float]:
    """Metrics on held-out logged actions (a training-set frame; `rows` its row count when known):

    * `auc_<action>` / `auc_overall`: ROC AUC of the propensity of the logged action against the
      label (per action where both classes occur; pooled over all actions);
    * policy value per logged action, reward = label × configured value of the logged action (BRL):
      `logging_policy_value` is the mean observed reward; `ips_policy_value` the inverse-propensity
      estimate of the learned policy (eligibility + ranking, deterministic) — mean of
      1[policy picks the logged action] × reward / max(logged propensity, floor) over rows whose
      propensity was logged — with `ips_policy_value_se`, the self-normalised `snips_policy_value`,
      `ips_match_rate` and `ips_rows`. The same three for the conversion rate (`*_conversion_rate`).
      Sound when the logging policy gave every action the learned policy picks a positive
      probability; a low match rate means a noisy estimate (`ips_effective_rows` says how noisy);
    * doubly robust estimates (`dr_policy_value`, `dr_conversion_rate`: the response model's
      expectation for the learned policy's action, corrected by the weighted residual of the logged
      one), and for SNIPS, DR, the logged rate and the lifts (`snips_lift_*`, `dr_lift_*`: learned over
      logged) percentile bootstrap intervals, `_low`/`_high` (95%; models.offpolicy). Rows without a
      logged propensity are left out (`ope_rows_without_propensity`), not given a modelled one;
    * with a `champion`, the action it picks on the same rows, and the paired SNIPS comparison
      (`challenge_snips_conversion_rate_*`, `challenge_snips_policy_value_*`: `_challenger`, `_champion`,
      `_improvement` with `_low`/`_high`; models.comparison). `challenge_unscored` = 1 when the champion cannot
      score these rows (its features are no longer built), and the comparison is left out."""
    label = label or model.label
    frame = holdout.where(F.col("action").isin(list(nba_settings.actions)))
    if rows is None:
        rows = frame.count()
    if rows > sample_size:  # sample before scoring: only the sample is scored
        frame = seeded_rows(frame, seed, sample_size)
    scored_frame = _scored_actions(frame, model, nba_settings, label)
    metrics: dict[str, float] = {}
    if champion is not None:
        missing = sorted(set(champion.feature_cols) - set(frame.columns))
        if missing:  # a champion of features no longer built cannot be judged on today's rows
            metrics["challenge_unscored"] = 1.0
            log.info("next best action: the champion cannot score the held-out actions (no %s)", ", ".join(missing))
        else:  # one collect: the champion's pick joined to each row the new model scored
            theirs = _scored_actions(frame, champion, nba_settings, label).select(
                "action_id", F.col("_chosen").alias("_champion_chosen"))
            scored_frame = scored_frame.join(theirs, on="action_id", how="left")
    scored = _in_log_order(scored_frame.toPandas())
    metrics["rows_holdout"] = float(len(scored))
    if scored.empty:
        return metrics
    metrics.update(_auc_metrics(scored))
    metrics.update(_logged_propensity_metrics(scored, nba_settings, propensity_floor, seed))
    if "_champion_chosen" in scored.columns:
        metrics.update(_challenge_metrics(scored, nba_settings, propensity_floor, seed))
    return metrics


def _challenge_metrics(scored: pd.DataFrame, nba_settings: NbaSettings, propensity_floor: float,
                       seed: int) -> dict[str, float]:
    """The new policy against the champion's on the same held-out rows with a logged propensity: paired SNIPS
    estimates of the conversion rate and of the policy value, and their differences' intervals."""
    with_p = _with_logged_propensity(scored)
    if with_p.empty:
        return {}
    values = _action_values(nba_settings)
    y = with_p["_y"].to_numpy(dtype=float)
    logged = with_p["_action"]
    ours = (with_p["_chosen"] == logged).to_numpy()
    theirs = (with_p["_champion_chosen"] == logged).to_numpy()
    p = with_p["_logged_p"].to_numpy(dtype=float)
    metrics = {"challenge_rows": float(len(with_p)), "challenge_agreement": float(
        (with_p["_chosen"] == with_p["_champion_chosen"]).mean())}
    for name, reward in (("conversion_rate", y), ("policy_value", y * logged.map(values).to_numpy(dtype=float))):
        paired = paired_snips_difference(reward, p, ours, theirs, propensity_floor=propensity_floor, seed=seed)
        for key in ("challenger", "champion"):
            if key in paired:
                metrics[f"challenge_snips_{name}_{key}"] = paired[key]
        if "improvement" in paired:
            metrics.update(comparison.paired_metrics(f"snips_{name}", paired["improvement"],
                                                     paired["improvement_low"], paired["improvement_high"]))
    return metrics


def _logged_propensity_metrics(scored: pd.DataFrame, nba_settings: NbaSettings, propensity_floor: float,
                               seed: int) -> dict[str, float]:
    """`ope_rows_without_propensity` and the `_off_policy_metrics` of the scored rows whose logging propensity
    was recorded. The others are left out rather than given a modelled one: the logging policy chose by
    context, and a context-free stand-in would bias every estimate."""
    with_p = _with_logged_propensity(scored)
    metrics = {"ope_rows_without_propensity": float(len(scored) - len(with_p))}
    if len(with_p):
        metrics.update(_off_policy_metrics(with_p, nba_settings, propensity_floor, seed))
    return metrics


def _with_logged_propensity(scored: pd.DataFrame) -> pd.DataFrame:
    """The scored actions whose logging propensity was recorded (and is positive): the rows off-policy
    estimates can weigh."""
    return scored[scored["_logged_p"].notna() & (scored["_logged_p"] > 0)]


def _action_values(nba_settings: NbaSettings) -> dict[str, float]:
    """Each catalogue action's configured value (BRL): the reward of a conversion."""
    return {a: float(s.value) for a, s in nba_settings.actions.items()}


def _in_log_order(scored: pd.DataFrame) -> pd.DataFrame:
    """The scored actions ordered by action_id: the bootstrap draws one weight per row in order, so its
    intervals must not depend on how Spark partitioned the rows."""
    return scored.sort_values("action_id", kind="stable").reset_index(drop=True)


def _scored_actions(logged_rows: DataFrame, model: NbaModel, nba_settings: NbaSettings, label: str) -> DataFrame:
    """Per logged action (`action_id`): the action (`_action`), its label (`_y`), the logging propensity (`_logged_p`), the
    model's propensity of that action (`_p_hat`), and the action the learned policy picks (`_chosen`) with its
    propensity (`_p_chosen`)."""
    frame = logged_rows.where(F.col("action").isin(list(nba_settings.actions))).withColumns({
        "_action": F.col("action"),
        "_y": F.coalesce(F.col(label).cast("int"), F.lit(0)),
        "_logged_p": F.col("propensity").cast("double"),
    })
    decided = _decide(frame, model, nba_settings, ["action_id", "_action", "_y", "_logged_p"], top_features=0)
    logged = F.filter(F.col("_candidates"), lambda c: c["action"] == F.col("_action"))[0]
    return decided.select(
        "action_id", "_action", "_y", "_logged_p", logged["propensity"].alias("_p_hat"),
        F.col("_winner.action").alias("_chosen"), F.col("_winner.propensity").alias("_p_chosen"),
    )


def _auc_metrics(scored: pd.DataFrame) -> dict[str, float]:
    """Held-out rows per action, and the ROC AUC of the logged action's propensity against the label per
    action and pooled (where both classes occur)."""
    from sklearn.metrics import roc_auc_score

    def auc(part: pd.DataFrame) -> float | None:
        return float(roc_auc_score(part["_y"], part["_p_hat"])) if part["_y"].nunique() == 2 else None

    metrics: dict[str, float] = {}
    for action, part in scored.groupby("_action", sort=True):
        metrics[f"rows_holdout_{action}"] = float(len(part))
        value = auc(part)
        if value is not None:
            metrics[f"auc_{action}"] = value
    overall = auc(scored)
    if overall is not None:
        metrics["auc_overall"] = overall
    return metrics


def _off_policy_metrics(with_p: pd.DataFrame, nba_settings: NbaSettings, propensity_floor: float,
                        seed: int) -> dict[str, float]:
    """The policy-value and conversion-rate estimates of `evaluate_response_models` over the held-out rows
    whose logging propensity was recorded."""
    values = _action_values(nba_settings)
    y = with_p["_y"].to_numpy(dtype=float)
    value_logged = with_p["_action"].map(values).to_numpy(dtype=float)
    value_chosen = with_p["_chosen"].map(values).fillna(0.0).to_numpy(dtype=float)
    q_logged = with_p["_p_hat"].fillna(0.0).to_numpy(dtype=float)
    q_chosen = with_p["_p_chosen"].fillna(0.0).to_numpy(dtype=float)
    match = (with_p["_chosen"] == with_p["_action"]).to_numpy()
    logged_p = with_p["_logged_p"].to_numpy(dtype=float)
    # reward = the label (a conversion rate), and label × the action's configured value (BRL)
    by_rate = off_policy_estimates(y, logged_p, match, q_logged, q_chosen,
                                   propensity_floor=propensity_floor, seed=seed)
    by_value = off_policy_estimates(y * value_logged, logged_p, match, q_logged * value_logged,
                                    q_chosen * value_chosen, propensity_floor=propensity_floor, seed=seed)
    weight = match / np.maximum(logged_p, propensity_floor)
    reward = y * value_logged
    n = len(with_p)
    metrics = {
        "ips_rows": float(n),
        "ips_match_rate": float(match.mean()),
        "ips_effective_rows": by_rate["effective_rows"],
        "logging_policy_value": by_value["logged"],
        "ips_policy_value": by_value["ips"],
        "ips_policy_value_se": float((weight * reward).std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "logging_conversion_rate": by_rate["logged"],
        "ips_conversion_rate": by_rate["ips"],
    }
    for name, estimates in (("conversion_rate", by_rate), ("policy_value", by_value)):
        for key in ("snips", "dr", "logged", "snips_lift", "dr_lift"):
            for suffix in ("", "_low", "_high"):
                if f"{key}{suffix}" in estimates:
                    target = f"logging_{name}{suffix}" if key == "logged" else f"{key}_{name}{suffix}"
                    metrics[target] = estimates[f"{key}{suffix}"]
    return metrics


def save_nba_model(model: NbaModel, path: str | os.PathLike) -> Path:
    """Write `model.json` (every parameter scoring needs) and `metadata.json` (version, training
    time, label, value source, …) into the directory `path`. Plain JSON: no pickle, no paths."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MODEL_FILE).write_text(json.dumps(_model_params(model), indent=2, sort_keys=True), encoding="utf-8")
    metadata = {"version": model.version, "trained_at": model.trained_at, "label": model.label,
                "actions": sorted(model.responses), **model.metadata}
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str), encoding="utf-8")
    return directory


def load_nba_model(path: str | os.PathLike) -> NbaModel:
    directory = Path(path)
    params = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
    if params.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{directory / MODEL_FILE}: unknown format_version {params.get('format_version')!r}")
    metadata_path = directory / METADATA_FILE
    metadata = json.loads(metadata_path.read_text(encoding="utf-8")) if metadata_path.is_file() else {}
    trained_at = metadata.pop("trained_at", "")
    for derived in ("version", "label", "actions"):
        metadata.pop(derived, None)
    return NbaModel(
        feature_cols=tuple(params["feature_cols"]),
        fill=tuple(params["fill"]),
        center=tuple(params["center"]),
        scale=tuple(params["scale"]),
        responses={
            action: ResponseModel(r["kind"], float(r["intercept"]), None if r["coef"] is None else tuple(r["coef"]),
                                  int(r["rows"]), int(r["positives"]))
            for action, r in params["responses"].items()
        },
        label=params["label"],
        trained_at=trained_at,
        clip=float(params["clip"]),
        metadata=metadata,
    )
