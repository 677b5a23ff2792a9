"""Tone: detect the tone of each agent reply, learn which tone works for whom, recommend one per customer.

Three parts, each trained on a bounded sample and scored in Spark:

1. **Detector.** The catalogue's cue phrases weakly label the agent replies where one tone's cues
   clearly dominate; a TF-IDF (word + character n-grams) logistic regression trained on those labels
   then reads every reply, including the ones no cue marks. Labels never come from `_truth/`.
2. **Outcome.** Each agent-handled interaction gets an outcome in [0, 1]: its survey scores put on one
   scale (CES inverted: 1 = least effort = best), else whether it was resolved. A survey comment about
   the agent's manner ("Atendimento frio e burocrático", "Direto ao ponto, do jeito que eu gosto") is
   the most direct evidence about the tone, so it weighs in as a 0 or a 1.
3. **Policy.** A ridge regression on (context one-hot, tone one-hot, context x tone) predicts the
   outcome a tone gets in a customer context. For a customer that prediction is a prior worth
   `prior_strength` pseudo-interactions; the customer's own interactions in each tone update it:
   ``posterior_mean[T] = (k * prior[T] + sum of own outcomes in T) / (k + own interactions in T)``.
   The recommended tone has the highest posterior mean; `tone_confidence` is the posterior
   probability that it is the best tone, under normal posteriors whose spread is the outcome's
   residual deviation over sqrt(k + n) (estimated by Monte Carlo with common random numbers: one seeded,
   antithetic tones x draws matrix shared by every customer, so a figure depends on the customer alone).
   k is `prior_strength` from conf, or (``estimate_prior_strength_from_data``) its empirical-Bayes
   estimate: how much one customer's outcomes in a tone vary beyond the context prediction against
   the noise of a single interaction. Where tone effects are small against that noise, k is large
   (tens of interactions), and a small k lets one lucky interaction outvote a good context prior.

4. **Preference prior.** A reply in which an agent left their habitual tone ("adapted") is, far more
   often than chance, in the tone the customer prefers: agents adapt to customers they know. The
   tones of adapted replies per level of `preference_column` (the persona, by default), smoothed
   towards all adapted replies with `preference_strength` pseudo-replies, estimate each level's
   preferred-tone distribution P(T). The outcome gain of speaking a customer's preferred tone is
   learned as the slope of the outcome on P(interaction's tone) over the training interactions
   (`preference_lift`, >= 0), and the context prior becomes
   ``ridge prior[T] + lift * (P(T) - mean over tones of P)`` — outcome units throughout.

Optionally (`adaptation_weight` > 0) a customer's own adapted replies also count as evidence for the
tone the agent switched to.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.preprocessing import OneHotEncoder

from atende.conf.settings import ToneSettings
from atende.models import comparison
from atende.pipelines.frames import cached, seeded_rows
from atende.pipelines.rules import normalised_score

MODEL_FORMAT = 1
UNKNOWN = "<unknown>"

# What customers write about the agent's manner (not about the service itself): praise or complaint
# of the register. Portuguese, lower case, matched as substrings at a word start. Configured in
# `models.tone.comment_cues`; these are its defaults.
_DEFAULTS = ToneSettings()
DEFAULT_COMMENT_CUES: Mapping[Literal["positive", "negative"], tuple[str, ...]] = _DEFAULTS.comment_cues

DETECTED_TONES = StructType([
    StructField("interaction_id", StringType(), False),
    StructField("tone", StringType(), False),
    StructField("tone_probability", DoubleType(), False),
])
OUTCOMES = StructType([
    StructField("interaction_id", StringType(), False),
    StructField("customer_key", StringType(), True),
    StructField("outcome", DoubleType(), False),
    StructField("outcome_source", StringType(), False),  # survey, survey+comment, comment, resolution
])
RECOMMENDED_TONES = StructType([
    StructField("customer_key", StringType(), False),
    StructField("tone", StringType(), False),
    StructField("tone_confidence", DoubleType(), False),
    StructField("tone_reason", StringType(), False),
])


# --------------------------------------------------------------------------- weak labels
def _phrase_pattern(phrase: str) -> str:
    """Java regex for a cue: literal, starting at a word start when it starts with a letter ("oi," not in "foi,")."""
    quoted = r"\Q" + phrase.lower() + r"\E"  # lower-cased, a cue cannot hold the quote's end "\E"
    return (r"(?<!\p{L})" + quoted) if phrase[:1].isalpha() else quoted


def phrase_hits(text: Column, phrases: Sequence[str]) -> Column:
    """How many times any of `phrases` occurs in `text` (case-insensitive); 0 for a null text."""
    lowered = F.lower(text)
    hits = [F.regexp_count(lowered, F.lit(_phrase_pattern(p))) for p in phrases]
    total = hits[0]
    for h in hits[1:]:
        total = total + h
    return F.coalesce(total, F.lit(0))


def label_tones_by_cues(catalogue: Mapping[str, Sequence[str]], *, min_hits: int = 1, dominance: float = 2.0):
    """Factory for `interactions.transform(...)`: every agent reply with its cue label.

    Output `interaction_id, agent_text, cue_tone`: `cue_tone` is the tone whose cues occur at least
    `min_hits` times and at least `dominance` times as often as any other tone's; null otherwise
    (no cue, or a mix), so the text model, not the cues, decides those replies.
    """
    tones = sorted(catalogue)

    def transform(interactions: DataFrame) -> DataFrame:
        replies = agent_replies(interactions)
        hits = F.array(*[phrase_hits(F.col("agent_text"), catalogue[t]) for t in tones])
        # the runner-up count: second element of the counts sorted high to low (a tie with the top stays in)
        second = F.expr("coalesce(try_element_at(array_sort(_hits, (a, b) -> b - a), 2), 0)")
        winner = F.element_at(F.array(*[F.lit(t) for t in tones]), F.array_position(F.col("_hits"), F.col("_top")).cast("int"))
        dominates = (F.col("_top") >= min_hits) & (F.col("_top") >= F.lit(dominance) * F.col("_second")) & (
            F.col("_top") > F.col("_second"))
        return (
            replies.select("interaction_id", "agent_text", hits.alias("_hits"))
            .withColumn("_top", F.array_max("_hits"))
            .withColumn("_second", second)
            .select("interaction_id", "agent_text", F.when(dominates, winner).alias("cue_tone"))
        )

    return transform


def bounded_sample(df: DataFrame, max_rows: int, seed: int = 7, by: str | None = None) -> pd.DataFrame:
    """At most `max_rows` rows of `df` as pandas, drawn in Spark (the only way to the driver).

    `by`: sample whole groups (every row of a drawn `by` value, by a seeded hash) instead of rows, so
    statistics over a group's rows (a customer's repeated interactions) stay computable.
    """
    with cached(df) as df:  # counted, then sampled: computed once
        total = df.count()
        if total == 0:
            return df.limit(0).toPandas()
        fraction = min(1.0, 1.1 * max_rows / total)  # a little over, then cut: sampling undershoots
        if fraction >= 1.0 or by is None:
            # rows by a seeded hash of their content: the same sample and order however Spark partitioned them
            return seeded_rows(df, seed, max_rows if fraction < 1.0 else None).toPandas()
        buckets = 1_000_000
        sampled = df.where(F.pmod(F.xxhash64(F.col(by), F.lit(seed)), F.lit(buckets)) < F.lit(int(fraction * buckets)))
        return seeded_rows(sampled, seed, max_rows).toPandas()


# --------------------------------------------------------------------------- detector
def build_tone_detector(*, c: float = 10.0, seed: int = 7) -> Pipeline:
    features = FeatureUnion([
        ("words", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True)),
        # character n-grams catch emojis, punctuation and word fragments the word analyser splits off
        ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=1, sublinear_tf=True, lowercase=True)),
    ])
    return Pipeline([
        ("tfidf", features),
        ("classifier", LogisticRegression(C=c, max_iter=2000, random_state=seed)),
    ])


def train_tone_detector(labelled: pd.DataFrame, *, test_size: float = 0.2, seed: int = 7,
                        c: float = 10.0) -> tuple[Pipeline, dict[str, Any]]:
    """Fit the text model on the cue-labelled replies of `labelled` (`agent_text`, `cue_tone`; null = unlabelled).

    Metrics: accuracy and macro F1 on a held-out share of the weak labels (agreement with the cues on
    replies the model did not see), the share of replies the cues could not label, and how the model
    labels those. The returned model is refitted on every labelled reply.
    """
    texts = labelled["agent_text"].fillna("")
    labels = labelled["cue_tone"]
    known = labels.notna() & (texts.str.strip() != "")
    x, y = texts[known].to_numpy(), labels[known].astype(str).to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        seen = ", ".join(f"{c} {int(n)}" for c, n in zip(classes, counts)) or "none"
        raise ValueError(f"the cues labelled fewer than two tones in agent replies ({seen})")
    metrics: dict[str, Any] = {
        "detector_sample_rows": int(len(labelled)),
        "detector_labelled_rows": int(known.sum()),
        "cue_unlabelled_share": float(1.0 - known.mean()) if len(labelled) else 0.0,
        "cue_label_counts": {str(k): int(v) for k, v in zip(classes, counts)},
    }
    stratify = y if counts.min() >= 2 and len(y) * test_size >= len(classes) else None
    if len(y) >= 10:
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, random_state=seed,
                                                            stratify=stratify)
        holdout = build_tone_detector(c=c, seed=seed).fit(x_train, y_train)
        predicted = holdout.predict(x_test)
        metrics["detector_holdout_rows"] = int(len(y_test))
        metrics["detector_holdout_accuracy"] = float(accuracy_score(y_test, predicted))
        metrics["detector_holdout_macro_f1"] = float(f1_score(y_test, predicted, average="macro"))
    detector = build_tone_detector(c=c, seed=seed).fit(x, y)
    unlabelled = texts[~known & (texts.str.strip() != "")]
    if len(unlabelled):
        share = pd.Series(detector.predict(unlabelled.to_numpy())).value_counts(normalize=True)
        metrics["detector_tones_of_unlabelled"] = {str(k): round(float(v), 4) for k, v in share.items()}
    return detector, metrics


def detect_tones(interactions: DataFrame, detector: Pipeline) -> DataFrame:
    """`interaction_id, tone, tone_probability` for every interaction with agent text; scored in Spark."""
    spark = interactions.sparkSession
    shared = spark.sparkContext.broadcast(detector)

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model = shared.value
        classes = np.asarray(model.classes_)
        for batch in batches:
            if batch.empty:
                continue
            proba = model.predict_proba(batch["agent_text"].to_numpy())
            best = proba.argmax(axis=1)
            yield pd.DataFrame({
                "interaction_id": batch["interaction_id"].to_numpy(),
                "tone": classes[best],
                "tone_probability": proba[np.arange(len(best)), best].astype("float64"),
            })

    return agent_replies(interactions).select("interaction_id", "agent_text").mapInPandas(score, DETECTED_TONES)


def agent_replies(interactions: DataFrame) -> DataFrame:
    """The interactions whose tone is detected: those with agent text."""
    return interactions.where(F.col("agent_text").isNotNull() & (F.trim("agent_text") != ""))


def tone_detection_changes(interactions: DataFrame, stored: DataFrame) -> tuple[DataFrame, DataFrame, DataFrame]:
    """What a table of detections (`stored`: interaction_id, customer_key, text_sha256, tone, tone_probability,
    made by one detector) needs to hold the detections of `interactions`' replies by that detector:

    - `detect` (interaction_id, customer_key, agent_text, text_sha256): replies it lacks, or holds for
      another text (a rebuilt e-mail thread gathers more messages);
    - `rekeyed` (stored's columns): replies whose text it holds under another customer key (a merge),
      their tone kept;
    - `gone` (interaction_id): rows of interactions that have no reply any more.

    Every other stored row is already what detecting it again would give."""
    replies = agent_replies(interactions).select(
        "interaction_id", "customer_key", "agent_text", F.sha2(F.col("agent_text"), 256).alias("text_sha256"))
    held = stored.select("interaction_id", F.col("customer_key").alias("_held_key"),
                         F.col("text_sha256").alias("_held_sha"), "tone", "tone_probability")
    paired = replies.join(held, on="interaction_id", how="left")
    same_text = F.col("_held_sha").isNotNull() & (F.col("_held_sha") == F.col("text_sha256"))
    detect = paired.where(~same_text).select("interaction_id", "customer_key", "agent_text", "text_sha256")
    rekeyed = paired.where(same_text & ~F.col("customer_key").eqNullSafe(F.col("_held_key"))).select(
        "interaction_id", "customer_key", "text_sha256", "tone", "tone_probability")
    gone = stored.select("interaction_id").join(replies.select("interaction_id"), on="interaction_id",
                                                how="left_anti")
    return detect, rekeyed, gone


# --------------------------------------------------------------------------- outcomes
def comment_tone_evidence(comment: Column,
                          cues: Mapping[Literal["positive", "negative"], Sequence[str]] = DEFAULT_COMMENT_CUES
                          ) -> Column:
    """1.0 when a comment praises the agent's manner, 0.0 when it complains of it, null otherwise (or both)."""
    positive = phrase_hits(comment, cues["positive"])
    negative = phrase_hits(comment, cues["negative"])
    return F.when((positive > 0) & (negative == 0), F.lit(1.0)).when((negative > 0) & (positive == 0), F.lit(0.0))


def interaction_outcomes(interactions: DataFrame, survey_responses: DataFrame,
                         survey_comments: DataFrame | None = None, *,
                         comment_cues: Mapping[Literal["positive", "negative"], Sequence[str]] = DEFAULT_COMMENT_CUES,
                         comment_weight: float = _DEFAULTS.comment_weight) -> DataFrame:
    """One outcome in [0, 1] per agent-handled interaction (see OUTCOMES).

    The mean of the interaction's normalised survey scores; a comment about the agent's manner counts
    as `comment_weight` more scores of 1 (praise) or 0 (complaint). Without a survey: 1.0 when
    resolved, 0.0 when not; no outcome when even that is unknown. `survey_comments` is the bronze
    surveys frame (`response_id`, `comment`).
    """
    handled = interactions.where(F.col("agent_text").isNotNull() | F.col("agent_id").isNotNull()).select(
        "interaction_id", "customer_key", "resolved")
    responses = survey_responses.where(F.col("interaction_id").isNotNull()).select(
        "response_id", "interaction_id", normalised_score(F.col("survey"), F.col("score")).alias("scaled"))
    if survey_comments is not None:
        # bronze keeps every arrival of a response; one comment per response_id is enough
        comments = survey_comments.where(F.col("comment").isNotNull()).groupBy("response_id").agg(
            F.max(comment_tone_evidence(F.col("comment"), comment_cues)).alias("manner"))
        responses = responses.join(comments, on="response_id", how="left")
    else:
        responses = responses.withColumn("manner", F.lit(None).cast("double"))
    per_interaction = responses.groupBy("interaction_id").agg(
        F.sum("scaled").alias("score_sum"), F.count("scaled").alias("score_n"),
        F.avg("manner").alias("manner"))
    # with comment_weight 0, comments are ignored (never a 0/0 outcome)
    has_manner = F.col("manner").isNotNull() & F.lit(comment_weight > 0)
    weight = F.when(has_manner, F.lit(comment_weight)).otherwise(F.lit(0.0))
    survey_outcome = (F.coalesce(F.col("score_sum"), F.lit(0.0)) + weight * F.coalesce(F.col("manner"), F.lit(0.0))) / (
        F.coalesce(F.col("score_n"), F.lit(0)) + weight)
    has_score = F.coalesce(F.col("score_n"), F.lit(0)) > 0
    outcome = F.when(has_score | has_manner, survey_outcome).otherwise(F.col("resolved").cast("double"))
    source = (F.when(has_score & has_manner, F.lit("survey+comment")).when(has_score, F.lit("survey"))
              .when(has_manner, F.lit("comment")).otherwise(F.lit("resolution")))
    return (
        handled.join(per_interaction, on="interaction_id", how="left")
        .where(has_score | has_manner | F.col("resolved").isNotNull())
        .select("interaction_id", "customer_key", outcome.alias("outcome"), source.alias("outcome_source"))
    )


def agent_adaptations(interactions: DataFrame, tones: DataFrame) -> DataFrame:
    """`interaction_id, adapted`: true when the agent wrote in a tone other than their habitual (modal) one."""
    by_agent = interactions.where(F.col("agent_id").isNotNull()).select("interaction_id", "agent_id").join(
        tones.select("interaction_id", "tone"), on="interaction_id", how="inner")
    counts = by_agent.groupBy("agent_id", "tone").agg(F.count("*").alias("n"))
    # the most frequent tone; ties go to the first name, so the choice is deterministic
    habitual = counts.groupBy("agent_id").agg(
        F.max_by("tone", F.struct("n", F.lit(0) - F.ascii("tone"))).alias("habitual_tone"))
    return by_agent.join(habitual, on="agent_id", how="left").select(
        "interaction_id", (F.col("tone") != F.col("habitual_tone")).alias("adapted"))


def habitual_tone_contacts(interactions: DataFrame, tones: DataFrame) -> DataFrame:
    """`interaction_id, customer_key, started_at, tone, resolved`: the agent contacts written in their agent's
    habitual (modal) tone (`agent_adaptations`). Agents are assigned without regard to tone, so whether that
    tone is the one a recommender would pick for the customer is, for these contacts, a natural experiment."""
    habitual = agent_adaptations(interactions, tones).where(~F.col("adapted")).select("interaction_id")
    return (interactions.select("interaction_id", "customer_key", "started_at", "resolved")
            .join(habitual, on="interaction_id", how="inner")
            .join(tones.select("interaction_id", "tone"), on="interaction_id", how="inner"))


# --------------------------------------------------------------------------- policy
class ContextCrosser(BaseEstimator, TransformerMixin):
    """(context columns, tone) -> categorical columns: each context value, the tone, and each value x tone.

    Numeric context columns are cut into quantile bands learned at fit time; nulls are their own level.
    """

    def __init__(self, context_columns: Sequence[str] = (), numeric_bands: int = 4):
        self.context_columns = context_columns
        self.numeric_bands = numeric_bands

    def fit(self, frame: pd.DataFrame, y=None):
        self.edges_ = {}
        for column in self.context_columns:
            values = frame[column]
            if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                finite = values.dropna().astype(float)
                qs: np.ndarray | list[float] = np.unique(np.quantile(finite, np.linspace(0, 1, self.numeric_bands + 1)[1:-1])) if len(finite) else []
                self.edges_[column] = [float(q) for q in qs]
        return self

    def _levels(self, frame: pd.DataFrame, column: str) -> pd.Series:
        values = frame[column]
        if column in self.edges_:
            numeric = pd.to_numeric(values, errors="coerce")
            band = np.searchsorted(np.asarray(self.edges_[column]), numeric.to_numpy(dtype=float), side="right")
            return pd.Series(np.where(numeric.isna(), UNKNOWN, "band" + pd.Series(band).astype(str)), index=frame.index)
        return values.astype(object).where(values.notna(), UNKNOWN).astype(str)

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        tone = frame["tone"].astype(str)
        out = {"tone": tone}
        for column in self.context_columns:
            level = self._levels(frame, column)
            out[column] = level
            out[f"{column}|tone"] = level + "|" + tone
        return pd.DataFrame(out, index=frame.index)


POLICY_ALPHAS = tuple(float(a) for a in np.logspace(-1, 4, 11))


def build_tone_policy_regressor(context_columns: Sequence[str], *,
                                alphas: Sequence[float] = POLICY_ALPHAS) -> Pipeline:
    """One-hot (context, tone, context x tone) -> ridge, its penalty chosen by leave-one-out error.

    Tone effects are small against the noise of one interaction's outcome; with little data the
    chosen penalty is large and the prediction falls back to the overall mean rather than to noise.
    """
    return Pipeline([
        ("cross", ContextCrosser(tuple(context_columns))),
        # dense: a few hundred indicator columns at most, and RidgeCV's efficient leave-one-out needs it
        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ("ridge", RidgeCV(alphas=tuple(alphas))),
    ])


@dataclass(frozen=True)
class TonePolicy:
    regressor: Pipeline                 # (context columns, tone) -> expected outcome
    tones: tuple[str, ...]
    context_columns: tuple[str, ...]
    prior_strength: float
    outcome_sd: float                   # residual deviation of one interaction's outcome
    adaptation_weight: float = 0.0      # pseudo-interactions of outcome 1 per agent adaptation to a tone
    draws: int = 400                    # Monte Carlo draws for tone_confidence
    seed: int = 7
    preference_column: str | None = None                         # a context column, e.g. persona_id
    preference: dict[str, list[float]] = field(default_factory=dict)  # level -> P(preferred = tone)
    preference_default: list[float] = field(default_factory=list)    # P for an unseen or null level
    preference_lift: float = 0.0        # outcome gain of the preferred tone (0: the prior is the ridge's)

    def preference_of(self, context: pd.DataFrame) -> np.ndarray:
        """(rows, tones) P(preferred tone) of each row's `preference_column` level."""
        default = np.asarray(self.preference_default or [1.0 / len(self.tones)] * len(self.tones))
        if not self.preference_column or self.preference_column not in context:
            return np.tile(default, (len(context), 1))
        return np.vstack([np.asarray(self.preference.get(v, default)) if isinstance(v, str) else default
                          for v in context[self.preference_column]]) if len(context) else \
            np.empty((0, len(self.tones)))

    def context_prior(self, context: pd.DataFrame) -> np.ndarray:
        """(rows, tones) expected outcome of each tone in each row's context."""
        columns = []
        for tone in self.tones:
            frame = context[list(self.context_columns)].copy()
            frame["tone"] = tone
            columns.append(self.regressor.predict(frame))
        if not columns:
            return np.empty((len(context), 0))
        prior = np.column_stack(columns)
        if self.preference_lift > 0:
            p = self.preference_of(context)
            prior = prior + self.preference_lift * (p - p.mean(axis=1, keepdims=True))
        return np.clip(prior, 0.0, 1.0)


@dataclass(frozen=True)
class ToneModel:
    detector: Pipeline
    policy: TonePolicy
    metrics: dict[str, Any] = field(default_factory=dict)
    # the SHA-256 of the saved detector's file and the scikit-learn reading it (set by `load_tone_model`): two
    # models with the same one detect the same tones, so detections stored under it stay valid
    # (`tone_detection_changes`); "" when not saved
    detector_id: str = ""


def customer_tone_evidence(tones: DataFrame, outcomes: DataFrame, adaptations: DataFrame | None = None) -> DataFrame:
    """`customer_key, tone, n, outcome_sum, adapted_n`: each customer's own interactions per detected tone."""
    rows = tones.select("interaction_id", "tone").join(
        outcomes.where(F.col("customer_key").isNotNull()).select("interaction_id", "customer_key", "outcome"),
        on="interaction_id", how="inner")
    if adaptations is not None:
        rows = rows.join(adaptations, on="interaction_id", how="left")
    else:
        rows = rows.withColumn("adapted", F.lit(False))
    return rows.groupBy("customer_key", "tone").agg(
        F.count("*").alias("n"), F.sum("outcome").alias("outcome_sum"),
        F.sum(F.coalesce(F.col("adapted"), F.lit(False)).cast("long")).alias("adapted_n"))


def estimate_prior_strength(residuals: pd.DataFrame, *, cap: float = 100.0) -> dict[str, float]:
    """Empirical-Bayes pseudo-count of the context prior from outcome residuals (`customer_key, tone, residual`).

    Two interactions of one customer in the same tone share that customer's tone-specific deviation
    from the context prediction; two in different tones share only the customer's general mood. So
    tau2 = mean residual product over same-tone pairs - over different-tone pairs is the variance of
    a customer's own tone effect, sigma2 = residual variance - same-tone covariance the noise of one
    interaction, and k = sigma2 / tau2 the number of own interactions worth as much as the prior.
    No detectable customer-level tone effect (tau2 <= 0) gives `cap`.
    """
    r = residuals.assign(r2=residuals["residual"] ** 2)
    per_tone = r.groupby(["customer_key", "tone"]).agg(s=("residual", "sum"), q=("r2", "sum"), n=("residual", "size"))
    per_customer = per_tone.groupby(level=0).agg(s=("s", "sum"), q=("q", "sum"), n=("n", "sum"))
    same_sum, same_pairs = float((per_tone.s ** 2 - per_tone.q).sum()), float((per_tone.n * (per_tone.n - 1)).sum())
    all_sum, all_pairs = float((per_customer.s ** 2 - per_customer.q).sum()), float(
        (per_customer.n * (per_customer.n - 1)).sum())
    diff_pairs = all_pairs - same_pairs
    same = same_sum / same_pairs if same_pairs else 0.0
    diff = (all_sum - same_sum) / diff_pairs if diff_pairs else 0.0
    variance = float(r["r2"].mean()) if len(r) else 0.0
    tau2 = same - diff
    k = cap if tau2 <= 0 or same_pairs == 0 else float(min(cap, max(0.5, (variance - same) / tau2)))
    return {"prior_strength": k, "tau2": tau2, "sigma2": variance - same, "same_tone_pairs": same_pairs,
            "different_tone_pairs": diff_pairs}


def preference_by_level(adapted: pd.DataFrame, tones: Sequence[str], strength: float
                        ) -> tuple[dict[str, list[float]], list[float]]:
    """From adapted replies (`level, tone`): per level, the tone distribution smoothed towards all
    adapted replies with `strength` pseudo-replies; and that overall distribution (add-one smoothed)."""
    tones = list(tones)
    counts = adapted[adapted["tone"].isin(tones)]
    overall = counts["tone"].value_counts().reindex(tones, fill_value=0).to_numpy(float) + 1.0
    overall /= overall.sum()
    by_level = {}
    for level, group in counts.dropna(subset=["level"]).groupby("level"):
        n = group["tone"].value_counts().reindex(tones, fill_value=0).to_numpy(float)
        by_level[str(level)] = ((n + strength * overall) / (n.sum() + strength)).tolist()
    return by_level, overall.tolist()


def preference_lift(p_of_tone: np.ndarray, outcome: np.ndarray) -> float:
    """The least-squares slope of the outcome on P(preferred = the interaction's tone), floored at 0."""
    if len(p_of_tone) < 3 or np.var(p_of_tone) < 1e-12:
        return 0.0
    slope = np.cov(p_of_tone, outcome, bias=True)[0, 1] / np.var(p_of_tone)
    return float(max(0.0, slope))


def train_tone_policy(tones: DataFrame, outcomes: DataFrame, features: DataFrame, settings: ToneSettings,
                      context_columns: Sequence[str], *, max_rows: int = 50_000, seed: int = 7,
                      alphas: Sequence[float] = POLICY_ALPHAS, adaptation_weight: float = 0.0,
                      estimate_prior_strength_from_data: bool = False, min_estimate_pairs: int = 200,
                      test_size: float = 0.2, adaptations: DataFrame | None = None
                      ) -> tuple[TonePolicy, dict[str, Any]]:
    """Fit the context model on a bounded sample of customers' (context, detected tone, outcome) interactions.

    The prior's weight is `settings.prior_strength`; with `estimate_prior_strength_from_data` it is the
    empirical-Bayes estimate of `estimate_prior_strength` (reported in the metrics either way), once
    the sample holds `min_estimate_pairs` same-tone interaction pairs to estimate it from.
    """
    context_columns = tuple(context_columns)
    rows = (
        tones.select("interaction_id", "tone")
        .join(outcomes.where(F.col("customer_key").isNotNull()).select("interaction_id", "customer_key", "outcome"),
              on="interaction_id", how="inner")
        .join(features.select("customer_key", *context_columns), on="customer_key", how="left")
        .select("customer_key", *context_columns, "tone", "outcome")
    )
    sample = bounded_sample(rows, max_rows, seed, by="customer_key")
    tone_names = tuple(sorted(settings.catalogue))
    if len(sample) < 2:
        raise ValueError("fewer than two interactions with a detected tone and an outcome; cannot learn a tone policy")
    y = sample["outcome"].astype(float).to_numpy()
    x = sample[[*context_columns, "tone"]]
    metrics: dict[str, Any] = {"policy_sample_rows": int(len(sample)), "policy_outcome_mean": float(y.mean())}
    if len(sample) >= 20:
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_size, random_state=seed)
        held = build_tone_policy_regressor(context_columns, alphas=alphas).fit(x_train, y_train)
        rmse, low, high = comparison.rmse_interval(y_test - np.clip(held.predict(x_test), 0, 1), seed=seed)
        metrics.update({"policy_holdout_rmse": rmse, "policy_holdout_rmse_low": low, "policy_holdout_rmse_high": high})
        metrics["policy_holdout_rmse_constant"] = float(np.sqrt(np.mean((y_test - y_train.mean()) ** 2)))
    regressor = build_tone_policy_regressor(context_columns, alphas=alphas).fit(x, y)
    metrics["policy_ridge_alpha"] = float(regressor.named_steps["ridge"].alpha_)
    residual = y - np.clip(regressor.predict(x), 0, 1)
    outcome_sd = float(max(np.std(residual), 0.05))
    metrics["policy_outcome_sd"] = outcome_sd
    estimate = estimate_prior_strength(pd.DataFrame(
        {"customer_key": sample["customer_key"].to_numpy(), "tone": sample["tone"].to_numpy(), "residual": residual}))
    metrics.update({f"policy_eb_{k}": v for k, v in estimate.items()})
    use_estimate = estimate_prior_strength_from_data and estimate["same_tone_pairs"] >= min_estimate_pairs
    prior_strength = estimate["prior_strength"] if use_estimate else float(settings.prior_strength)
    metrics["policy_prior_strength_source"] = "estimate" if use_estimate else "config"
    metrics["policy_prior_strength"] = prior_strength
    column = settings.preference_column
    preference: dict[str, list[float]] = {}
    preference_default: list[float] = []
    if column and column not in context_columns:
        metrics["policy_preference"] = f"off: {column} is not a context column ({', '.join(context_columns)})"
        column = None
    learn_preference = bool(column) and adaptations is not None
    if learn_preference:
        assert column is not None and adaptations is not None  # what learn_preference means
        adapted = bounded_sample(
            tones.select("interaction_id", "tone").join(adaptations.where(F.col("adapted")), "interaction_id")
            .join(outcomes.where(F.col("customer_key").isNotNull()).select("interaction_id", "customer_key"),
                  "interaction_id")
            .join(features.select("customer_key", F.col(column).cast("string").alias("level")), "customer_key", "left")
            .select("level", "tone"), max_rows, seed)
        preference, preference_default = preference_by_level(adapted, tone_names, settings.preference_strength)
    policy = TonePolicy(regressor=regressor, tones=tone_names, context_columns=context_columns,
                        prior_strength=prior_strength, outcome_sd=outcome_sd,
                        adaptation_weight=float(adaptation_weight), seed=seed, preference_column=column,
                        preference=preference, preference_default=preference_default)
    if learn_preference:
        p = policy.preference_of(sample)
        p_of_tone = p[np.arange(len(sample)), pd.Index(tone_names).get_indexer(pd.Index(sample["tone"]))]
        # the gain left once the ridge has said what it could: the slope on its residuals
        lift = preference_lift(p_of_tone, residual)
        policy = dataclasses.replace(policy, preference_lift=lift)
        metrics.update({"policy_preference_adapted_replies": int(len(adapted)),
                        "policy_preference_levels": len(preference), "policy_preference_lift": lift,
                        "policy_preference_overall": dict(zip(tone_names, np.round(preference_default, 4)))})
    # how far apart the tones are in the sampled contexts: the prior's own strength of opinion
    prior = policy.context_prior(sample[list(context_columns)].drop_duplicates())
    if prior.size:
        top2 = np.sort(prior, axis=1)[:, -2:]
        metrics["policy_prior_mean_gap"] = float(np.mean(top2[:, 1] - top2[:, 0]))
        best = pd.Series(np.asarray(tone_names)[prior.argmax(axis=1)]).value_counts(normalize=True)
        metrics["policy_context_best_tone_share"] = {str(k): round(float(v), 4) for k, v in best.items()}
    return policy, metrics


def posterior_tone_choice(prior: np.ndarray, n: np.ndarray, outcome_sum: np.ndarray, adapted: np.ndarray,
                          policy: TonePolicy) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(best tone index, its probability of being best, posterior means) for rows of (tones,) arrays."""
    k = policy.prior_strength
    w = policy.adaptation_weight
    weight = k + n + w * adapted
    mean = (k * prior + outcome_sum + w * adapted) / np.maximum(weight, 1e-9)
    best = mean.argmax(axis=1)
    sd = policy.outcome_sd / np.sqrt(np.maximum(weight, 1e-9))
    # common random numbers: one (tones x draws) matrix of standard normal draws from the seed, the same for
    # every row, so a customer's confidence is a function of their own posterior alone. A stream drawn row
    # after row made it depend on the row's place in its Arrow batch: a day's new customers, or another
    # partitioning (a cluster), moved other customers' figures (95 % of them from one day to the next at
    # 100,000 customers). Antithetic (each draw and its negative): every tone's noise has mean 0 exactly, so the
    # shared draws do not tilt close calls towards one tone for every customer alike
    half = np.random.default_rng(policy.seed).standard_normal((mean.shape[1], (policy.draws + 1) // 2))
    noise = np.concatenate([half, -half], axis=1)[:, :policy.draws]
    wins = np.zeros(mean.shape, dtype=float)
    chunk = 512
    for start in range(0, len(mean), chunk):
        m, s = mean[start:start + chunk], sd[start:start + chunk]
        draws = m[:, :, None] + s[:, :, None] * noise[None, :, :]
        winner = draws.argmax(axis=1)
        for t in range(m.shape[1]):
            wins[start:start + chunk, t] = (winner == t).mean(axis=1)
    confidence = wins[np.arange(len(best)), best]
    return best, confidence, mean



def _stack_tones(batch, column: str, tones) -> np.ndarray:
    """One matrix, a row per customer and a column per tone, of `<column>__<tone>` (missing: 0)."""
    return np.column_stack([batch[f"{column}__{t}"].fillna(0.0).to_numpy(float) for t in tones])


def recommend_tone(features: DataFrame, tones: DataFrame, outcomes: DataFrame, policy: TonePolicy, *,
                   adaptations: DataFrame | None = None) -> DataFrame:
    """`customer_key, tone, tone_confidence, tone_reason` for every customer in `features`; scored in Spark.

    `tone_confidence` is the posterior probability that the recommended tone gets the best outcome for
    this customer (context prior worth `prior_strength` interactions + the customer's own evidence).
    """
    spark = features.sparkSession
    shared = spark.sparkContext.broadcast(policy)
    tone_names = list(policy.tones)
    evidence = customer_tone_evidence(tones, outcomes, adaptations if policy.adaptation_weight > 0 else None).where(
        F.col("tone").isin(*tone_names))
    per_customer = evidence.groupBy("customer_key").agg(
        *[F.sum(F.when(F.col("tone") == t, F.col(c)).otherwise(F.lit(0))).cast("double").alias(f"{c}__{t}")
          for t in tone_names for c in ("n", "outcome_sum", "adapted_n")])
    context = features.select("customer_key", *policy.context_columns)
    joined = context.join(per_customer, on="customer_key", how="left")

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        model: TonePolicy = shared.value
        names = np.asarray(model.tones)
        for batch in batches:
            if batch.empty:
                continue
            n, total, adapted = (_stack_tones(batch, column, model.tones) for column in ("n", "outcome_sum", "adapted_n"))
            prior = model.context_prior(batch)
            best, confidence, mean = posterior_tone_choice(prior, n, total, adapted, model)
            rows = np.arange(len(batch))
            own = n.sum(axis=1)
            prior_best = prior.argmax(axis=1)
            reasons = []
            for i in rows:
                b = best[i]
                if own[i] == 0 and adapted[i].sum() == 0:
                    reasons.append(f"no own history: best tone for this customer's context "
                                   f"(expected outcome {prior[i, b]:.2f})")
                else:
                    seen = ", ".join(f"{names[t]} {int(n[i, t])}x mean {total[i, t] / n[i, t]:.2f}"
                                     for t in range(len(names)) if n[i, t] > 0)
                    lead = "own history confirms the context's tone" if b == prior_best[i] else \
                        f"own history overrides the context's {names[prior_best[i]]}"
                    reasons.append(f"{lead}: {seen}; posterior outcome {mean[i, b]:.2f}")
            yield pd.DataFrame({
                "customer_key": batch["customer_key"].to_numpy(),
                "tone": names[best],
                "tone_confidence": np.clip(confidence, 0.0, 1.0).astype("float64"),
                "tone_reason": reasons,
            })

    return joined.mapInPandas(score, RECOMMENDED_TONES)


def fallback_tones(customers: DataFrame, tone: str, because: str) -> DataFrame:
    """RECOMMENDED_TONES when no tone model exists: every customer gets the named default tone with
    confidence 0, and the reason says it is a fallback and why."""
    return customers.select(
        "customer_key", F.lit(tone).alias("tone"), F.lit(0.0).alias("tone_confidence"),
        F.lit(f"fallback: default tone {tone}, because {because}").alias("tone_reason"),
    )


# --------------------------------------------------------------------------- end to end
def _settings_outcomes(interactions: DataFrame, survey_responses: DataFrame, survey_comments: DataFrame | None,
                       settings: ToneSettings) -> DataFrame:
    """`interaction_outcomes` with the comment cues and weight of `settings` (training and scoring alike)."""
    return interaction_outcomes(interactions, survey_responses, survey_comments,
                                comment_cues=settings.comment_cues, comment_weight=settings.comment_weight)


def train_tone_model(interactions: DataFrame, survey_responses: DataFrame, features: DataFrame,
                     settings: ToneSettings, context_columns: Sequence[str], *,
                     survey_comments: DataFrame | None = None, max_rows: int = 50_000, seed: int = 7,
                     adaptation_weight: float | None = None,
                     estimate_prior_strength_from_data: bool = False) -> tuple[ToneModel, dict[str, Any]]:
    """Weak labels -> detector -> detected tones + outcomes -> policy. Returns the model and all metrics."""
    labelled = interactions.transform(label_tones_by_cues(settings.catalogue))
    if adaptation_weight is None:
        adaptation_weight = settings.adaptation_weight
    sample = bounded_sample(labelled.select("agent_text", "cue_tone"), max_rows, seed)
    detector, metrics = train_tone_detector(sample, seed=seed)
    tones = detect_tones(interactions, detector).cache()
    try:
        outcomes = _settings_outcomes(interactions, survey_responses, survey_comments, settings)
        policy, policy_metrics = train_tone_policy(tones, outcomes, features, settings, context_columns,
                                                   max_rows=max_rows, seed=seed,
                                                   adaptation_weight=adaptation_weight,
                                                   estimate_prior_strength_from_data=estimate_prior_strength_from_data,
                                                   adaptations=agent_adaptations(interactions, tones))
    finally:
        tones.unpersist()
    metrics.update(policy_metrics)
    return ToneModel(detector=detector, policy=policy, metrics=metrics), metrics


def score_tone_model(model: ToneModel, interactions: DataFrame, survey_responses: DataFrame, features: DataFrame,
                     *, survey_comments: DataFrame | None = None,
                     settings: ToneSettings | None = None, tones: DataFrame | None = None) -> DataFrame:
    """The recommendations of a trained model over current data (detect, outcome, recommend).
    `settings` gives the comment cues and weight of the outcomes (default: the defaults); `tones`
    (DETECTED_TONES of every reply in `interactions`, by this model's detector) saves detecting them again."""
    if tones is None:
        tones = detect_tones(interactions, model.detector)
    outcomes = _settings_outcomes(interactions, survey_responses, survey_comments, settings or _DEFAULTS)
    adaptations = agent_adaptations(interactions, tones) if model.policy.adaptation_weight > 0 else None
    return recommend_tone(features, tones, outcomes, model.policy, adaptations=adaptations)


# --------------------------------------------------------------------------- persistence
def save_tone_model(model: ToneModel, path: str | Path) -> Path:
    """Write `detector.joblib`, `policy.joblib` and `tone_model.json` into directory `path` (relative names only)."""
    target = Path(path)
    target.mkdir(parents=True, exist_ok=True)
    joblib.dump(model.detector, target / "detector.joblib")
    joblib.dump(model.policy.regressor, target / "policy.joblib")
    import sklearn

    p = model.policy
    manifest = {
        "format": MODEL_FORMAT,
        "kind": "atende.tone",
        "sklearn_version": sklearn.__version__,
        "files": {"detector": "detector.joblib", "policy_regressor": "policy.joblib"},
        "tones": list(p.tones),
        "context_columns": list(p.context_columns),
        "prior_strength": p.prior_strength,
        "outcome_sd": p.outcome_sd,
        "adaptation_weight": p.adaptation_weight,
        "preference_column": p.preference_column,
        "preference": p.preference,
        "preference_default": list(p.preference_default),
        "preference_lift": p.preference_lift,
        "draws": p.draws,
        "seed": p.seed,
        "metrics": _jsonable(model.metrics),
    }
    (target / "tone_model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    return target


def load_tone_model(path: str | Path) -> ToneModel:
    source = Path(path)
    manifest = json.loads((source / "tone_model.json").read_text(encoding="utf-8"))
    if manifest.get("kind") != "atende.tone" or manifest.get("format") != MODEL_FORMAT:
        raise ValueError(f"{source} does not hold a tone model of format {MODEL_FORMAT}")
    files = manifest["files"]
    policy = TonePolicy(
        regressor=joblib.load(source / files["policy_regressor"]), tones=tuple(manifest["tones"]),
        context_columns=tuple(manifest["context_columns"]), prior_strength=float(manifest["prior_strength"]),
        outcome_sd=float(manifest["outcome_sd"]), adaptation_weight=float(manifest["adaptation_weight"]),
        draws=int(manifest["draws"]), seed=int(manifest["seed"]),
        preference_column=manifest.get("preference_column"), preference=manifest.get("preference", {}),
        preference_default=list(manifest.get("preference_default", [])),
        preference_lift=float(manifest.get("preference_lift", 0.0)),
    )
    detector_file = source / files["detector"]
    import sklearn  # the same file read by another scikit-learn may score otherwise

    identity = detector_file.read_bytes() + f"\0scikit-learn {sklearn.__version__}".encode()
    return ToneModel(detector=joblib.load(detector_file), policy=policy, metrics=manifest["metrics"],
                     detector_id=hashlib.sha256(identity).hexdigest())


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value
