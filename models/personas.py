"""Persona segmentation: k-means over scaled customer features, k chosen by a stated criterion.

The fit runs with scikit-learn on a bounded uniform sample of customers (`sample_size`); scoring
runs in Spark over every customer with the fitted model broadcast to the executors
(`mapInPandas`), so the job scales with customers while the fit stays bounded.

Preprocessing: heavy-tailed counts and amounts go through log1p; missing values (no CRM record,
no survey) are imputed with the sample median; every feature is standardised and then weighted
so that each trait *family* (demographics, activity, channel mix, hours, topics, satisfaction…)
weighs the same in the distance, whatever its number of columns — otherwise the twelve channel
shares would outvote age and income.

Persona ids stay stable across retrains: the new centres are matched to the previous model's
centres (Hungarian assignment on their distance in the new scaled space); a matched cluster keeps
the old id, an unmatched one gets a new id.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from conf.settings import PersonaSettings

LOG_FEATURES = frozenset({
    "interactions_count", "interactions_per_week", "orders_count", "total_spend", "avg_order_value",
    "avg_wait_seconds", "avg_handle_seconds", "avg_messages", "tenure_days", "recency_days", "survey_count",
})

# trait families: each weighs the same in the clustering distance
FAMILIES: dict[str, tuple[str, ...]] = {
    "age": ("age",),
    "income": ("income_level",),
    # a profession as the typical age and income of the customers who hold it (learned at fit time)
    "profession": ("profession_age", "profession_income"),
    "spending": ("total_spend", "avg_order_value", "price_level", "orders_count"),
    "activity": ("interactions_per_week",),
    "channels": ("ch_webchat", "ch_chatbot", "ch_app", "ch_whatsapp", "ch_telegram", "ch_messenger",
                 "ch_instagram", "ch_facebook", "ch_twitter", "ch_linkedin", "ch_email", "ch_voice"),
    "hours": ("hour_night", "hour_morning", "hour_afternoon", "hour_evening"),
    "topics": ("topic_billing", "topic_delivery", "topic_technical", "topic_cancellation", "topic_product_info",
               "topic_account", "topic_complaint", "topic_returns"),
    "order_channels": ("ochan_app", "ochan_web", "ochan_marketplace", "ochan_store", "ochan_phone"),
    "satisfaction": ("satisfaction_index", "resolved_rate"),
    "effort": ("effort_index", "bot_only_rate"),
}

CHANNEL_NAMES = {
    "webchat": "web-chat", "chatbot": "chatbot", "app": "app", "whatsapp": "WhatsApp", "telegram": "Telegram",
    "messenger": "Messenger", "instagram": "Instagram", "facebook": "Facebook", "twitter": "X/Twitter",
    "linkedin": "LinkedIn", "email": "e-mail", "voice": "phone",
}

SCORES_SCHEMA = StructType([
    StructField("customer_key", StringType(), False),
    StructField("persona_id", StringType(), False),
    StructField("confidence", DoubleType(), False),
])


PROFESSION_MIN_HOLDERS = 3


def persona_feature_columns(available: Sequence[str]) -> list[str]:
    present = set(available)
    if "profession" in present:
        present |= {"profession_age", "profession_income"}
    return [c for cols in FAMILIES.values() for c in cols if c in present]


def profession_traits(sample: pd.DataFrame) -> dict[str, list[float]]:
    """profession -> [mean age, mean income level] of its holders in the sample (professions held
    by fewer than PROFESSION_MIN_HOLDERS customers are left out: too few to say anything)."""
    if "profession" not in sample or "age" not in sample or "income_level" not in sample:
        return {}
    known = sample[sample["profession"].notna()]
    grouped = known.groupby("profession").agg(n=("profession", "size"), age=("age", "mean"),
                                              income=("income_level", "mean"))
    grouped = grouped[grouped["n"] >= PROFESSION_MIN_HOLDERS]
    return {str(p): [float(r.age), float(r.income)] for p, r in grouped.iterrows()}


def with_profession_traits(frame: pd.DataFrame, lookup: dict[str, list[float]]) -> pd.DataFrame:
    if "profession" not in frame or "profession_age" in frame:
        return frame
    traits = frame["profession"].map(lambda p: lookup.get(p, (np.nan, np.nan)) if isinstance(p, str) else
                                     (np.nan, np.nan))
    return frame.assign(profession_age=[t[0] for t in traits], profession_income=[t[1] for t in traits])


@dataclass
class PersonaModel:
    features: list[str]
    medians: list[float]
    means: list[float]
    scales: list[float]
    weights: list[float]
    centres: list[list[float]]              # in the weighted, scaled space
    centres_original: list[list[float]]     # in original units (after log1p/imputation undone)
    persona_ids: list[str]                  # per cluster index
    names: list[str]
    descriptions: list[str]
    traits: list[dict[str, float]]
    sizes: list[int]                        # customers of the fit sample per cluster
    selection: dict[str, float] = field(default_factory=dict)  # k -> criterion value
    profession_lookup: dict[str, list[float]] = field(default_factory=dict)  # profession -> [age, income]

    # ------------------------------------------------------------------ transform
    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        frame = with_profession_traits(frame, self.profession_lookup)
        x = frame[self.features].astype("float64").to_numpy(copy=True)
        for j, name in enumerate(self.features):
            if name in LOG_FEATURES:
                x[:, j] = np.log1p(np.clip(x[:, j], 0, None))
        medians = np.asarray(self.medians)
        missing = np.isnan(x)
        x[missing] = np.take(medians, np.nonzero(missing)[1])
        return (x - np.asarray(self.means)) / np.asarray(self.scales) * np.asarray(self.weights)

    def transform_original(self, original: np.ndarray) -> np.ndarray:
        """Centres given in original units -> the weighted, scaled space."""
        x = np.array(original, dtype="float64")
        for j, name in enumerate(self.features):
            if name in LOG_FEATURES:
                x[:, j] = np.log1p(np.clip(x[:, j], 0, None))
        return (x - np.asarray(self.means)) / np.asarray(self.scales) * np.asarray(self.weights)

    def assign(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(cluster index, confidence) per row. Confidence is the soft-assignment posterior under
        equal spherical Gaussians around the centres (unit variance in the scaled space)."""
        x = self.transform(frame)
        centres = np.asarray(self.centres)
        d2 = ((x[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        best = d2.argmin(axis=1)
        logits = -0.5 * (d2 - d2.min(axis=1, keepdims=True))
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return best, p[np.arange(len(best)), best]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "persona_model.json").write_text(json.dumps(self.__dict__, ensure_ascii=False, indent=1),
                                                  encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "PersonaModel":
        data = json.loads((Path(path) / "persona_model.json").read_text(encoding="utf-8"))
        return cls(**data)


# ---------------------------------------------------------------------- fitting
def _preprocess(sample: pd.DataFrame, features: list[str]) -> tuple[np.ndarray, dict[str, list[float]]]:
    x = sample[features].astype("float64").to_numpy(copy=True)
    for j, name in enumerate(features):
        if name in LOG_FEATURES:
            x[:, j] = np.log1p(np.clip(x[:, j], 0, None))
    medians = np.nanmedian(np.where(np.isnan(x).all(axis=0), 0.0, x), axis=0)
    medians = np.where(np.isnan(medians), 0.0, medians)
    missing = np.isnan(x)
    x[missing] = np.take(medians, np.nonzero(missing)[1])
    means = x.mean(axis=0)
    scales = x.std(axis=0)
    scales = np.where(scales < 1e-9, 1.0, scales)
    family_of = {c: fam for fam, cols in FAMILIES.items() for c in cols}
    family_size = {fam: sum(1 for c in features if family_of.get(c) == fam) for fam in FAMILIES}
    weights = np.array([1.0 / math.sqrt(family_size[family_of[c]]) for c in features])
    z = (x - means) / scales * weights
    return z, {"medians": medians.tolist(), "means": means.tolist(), "scales": scales.tolist(),
               "weights": weights.tolist()}


def _select_k(z: np.ndarray, settings: PersonaSettings) -> tuple[int, dict[str, float], object]:
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(settings.seed)
    eval_rows = z if len(z) <= 10_000 else z[rng.choice(len(z), 10_000, replace=False)]
    best: tuple[float, int, object] | None = None
    scores: dict[str, float] = {}
    k_max = min(settings.k_max, max(settings.k_min, len(z) - 1))
    for k in range(settings.k_min, k_max + 1):
        km = KMeans(n_clusters=k, n_init=10, random_state=settings.seed).fit(z)
        if settings.selection == "silhouette":
            labels = km.predict(eval_rows)
            value = float(silhouette_score(eval_rows, labels)) if len(set(labels)) > 1 else -1.0
            key = value
        else:  # BIC of a spherical Gaussian mixture with shared variance, from the k-means fit
            n, d = z.shape
            variance = max(km.inertia_ / (n * d), 1e-12)
            log_likelihood = -0.5 * n * d * (math.log(2 * math.pi * variance) + 1)
            value = float(-2 * log_likelihood + (k * d + 1) * math.log(n))
            key = -value
        scores[str(k)] = value
        if best is None or key > best[0]:
            best = (key, k, km)
    assert best is not None
    return best[1], scores, best[2]


def _match_ids(new_centres: np.ndarray, previous: PersonaModel | None, model: PersonaModel,
               max_distance: float) -> list[str]:
    """Persona ids for the new clusters: the previous model's id of the matched centre, else a new one."""
    k = len(new_centres)
    if previous is None:
        return [f"persona-{i + 1:02d}" for i in range(k)]
    from scipy.optimize import linear_sum_assignment

    # centres of a model over other features cannot be compared: every cluster gets a new id
    old = model.transform_original(np.asarray(previous.centres_original)) if previous.features == model.features \
        else None
    ids: list[str | None] = [None] * k
    if old is not None:
        cost = ((new_centres[:, None, :] - old[None, :, :]) ** 2).sum(axis=2) ** 0.5
        rows, cols = linear_sum_assignment(cost)
        for r, c in zip(rows, cols):
            if cost[r, c] <= max_distance:
                ids[r] = previous.persona_ids[c]
    used = {int(p.split("-")[1]) for p in previous.persona_ids}
    next_number = max(used, default=0) + 1
    for i in range(k):
        if ids[i] is None:
            ids[i] = f"persona-{next_number:02d}"
            next_number += 1
    return [str(i) for i in ids]


def _describe(means: pd.DataFrame, overall: pd.Series, spread: pd.Series) -> tuple[list[str], list[str]]:
    """A readable name and a description per cluster, from its distinguishing traits."""
    names, descriptions = [], []
    channel_cols = [c for c in means.columns if c.startswith("ch_")]
    topic_cols = [c for c in means.columns if c.startswith("topic_")]
    hour_cols = [c for c in means.columns if c.startswith("hour_")]
    for _, row in means.iterrows():
        z = (row - overall) / spread.replace(0, np.nan)
        parts = []
        # channel: the one most over-represented against the population
        if channel_cols:
            lift = (row[channel_cols] + 0.01) / (overall[channel_cols] + 0.01)
            top = lift.idxmax()
            channel = CHANNEL_NAMES.get(top[3:], top[3:])
            parts.append(f"{channel}-first")
        age = row.get("age", np.nan)
        if not np.isnan(age):
            group = ("young adults" if age < 30 else "adults in their thirties" if age < 40 else
                     "middle-aged adults" if age < 55 else "seniors")
            parts.append(group)
        income = row.get("income_level", np.nan)
        income_txt = None
        if not np.isnan(income):
            income_txt = "high income" if income >= 0.7 else "middle income" if income >= 0.4 else "budget-conscious"
        sat = z.get("satisfaction_index", 0.0)
        sat_txt = ("very satisfied" if sat > 0.6 else "dissatisfied, at risk" if sat < -0.6 else None)
        effort = z.get("effort_index", 0.0)
        effort_txt = "low tolerance for effort" if effort > 0.5 else None
        freq = z.get("interactions_per_week", 0.0)
        freq_txt = "frequent contacts" if freq > 0.6 else "rarely contact us" if freq < -0.6 else None
        spend = z.get("total_spend", 0.0)
        spend_txt = "big spenders" if spend > 0.6 else None
        name = " ".join(parts[:1] + parts[1:2]).strip() or "customers"
        qualifiers = [t for t in (income_txt, spend_txt, sat_txt, effort_txt) if t]
        if qualifiers:
            name += ", " + ", ".join(qualifiers[:2])
        names.append(name[0].upper() + name[1:])

        detail = []
        if not np.isnan(age):
            detail.append(f"average age {age:.0f}")
        if income_txt:
            detail.append(income_txt)
        if channel_cols:
            top_channels = row[channel_cols].sort_values(ascending=False).head(2)
            detail.append("mostly " + " and ".join(
                f"{CHANNEL_NAMES.get(c[3:], c[3:])} ({v:.0%})" for c, v in top_channels.items() if v > 0))
        if hour_cols:
            detail.append(f"reaches out mostly in the {row[hour_cols].idxmax()[5:]}")
        if topic_cols:
            lift = (row[topic_cols] + 0.01) / (overall[topic_cols] + 0.01)
            detail.append(f"talks about {lift.idxmax()[6:].replace('_', ' ')} more than others")
        for text in (freq_txt, spend_txt, sat_txt, effort_txt):
            if text:
                detail.append(text)
        descriptions.append("; ".join(d for d in detail if d) + ".")
    # two clusters may read alike: number the repeats so names stay unique
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n} ({seen[n]})"
    return names, descriptions


def fit_personas(sample: pd.DataFrame, settings: PersonaSettings,
                 previous: PersonaModel | None = None) -> tuple[PersonaModel, dict[str, float]]:
    """Fit on a pandas sample of the customer feature table. Returns (model, metrics)."""
    from sklearn.metrics import silhouette_score

    if len(sample) < settings.k_min + 1:
        raise ValueError(f"persona fit needs at least {settings.k_min + 1} customers, got {len(sample)}")
    lookup = profession_traits(sample)
    sample = with_profession_traits(sample, lookup)
    features = persona_feature_columns(sample.columns)
    z, prep = _preprocess(sample, features)
    k, scores, km = _select_k(z, settings)
    labels = km.labels_
    centres = km.cluster_centers_
    # cluster profiles in original units (for names, traits and id matching)
    original = sample[features].astype("float64").copy()
    original = original.fillna(pd.Series(dict(zip(features, [
        float(np.expm1(m)) if f in LOG_FEATURES else m for f, m in zip(features, prep["medians"])
    ]))))
    original["_cluster"] = labels
    means = original.groupby("_cluster")[features].mean().reindex(range(k))
    overall = original[features].mean()
    spread = original[features].std()
    model = PersonaModel(
        features=features, **prep, centres=centres.tolist(), centres_original=means.to_numpy().tolist(),
        persona_ids=[], names=[], descriptions=[], traits=[], sizes=np.bincount(labels, minlength=k).tolist(),
        selection=scores, profession_lookup=lookup,
    )
    # centres_original must map back onto the fitted centres: use the inverse of the scaling
    model.centres_original = _inverse(model, centres).tolist()
    model.persona_ids = _match_ids(centres, previous, model, settings_max_distance(settings))
    model.names, model.descriptions = _describe(means, overall, spread)
    model.traits = [{f: round(float(v), 4) for f, v in means.loc[i].items() if not np.isnan(v)} for i in range(k)]
    rng = np.random.default_rng(settings.seed)
    rows = z if len(z) <= 10_000 else z[rng.choice(len(z), 10_000, replace=False)]
    metrics = {
        "k": float(k),
        "silhouette": float(silhouette_score(rows, km.predict(rows))),
        "inertia": float(km.inertia_),
        "fit_rows": float(len(sample)),
        "smallest_share": float(min(model.sizes) / len(sample)),
        **{f"criterion_k{key}": value for key, value in scores.items()},
    }
    return model, metrics


def settings_max_distance(settings: PersonaSettings) -> float:
    return settings.match_max_distance


def _inverse(model: PersonaModel, centres: np.ndarray) -> np.ndarray:
    x = centres / np.asarray(model.weights) * np.asarray(model.scales) + np.asarray(model.means)
    for j, name in enumerate(model.features):
        if name in LOG_FEATURES:
            x[:, j] = np.expm1(x[:, j])
    return x


# ---------------------------------------------------------------------- scoring in Spark
def score_personas(features: DataFrame, model: PersonaModel) -> DataFrame:
    """`customer_key, persona_id, confidence` for every customer of the feature table."""
    spark = features.sparkSession
    shared = spark.sparkContext.broadcast(model)
    derived = {"profession_age", "profession_income"}
    columns = ["customer_key", *[c for c in model.features if c not in derived]]
    if derived & set(model.features):
        columns.append("profession")

    def assign(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        m = shared.value
        ids = np.asarray(m.persona_ids)
        for batch in batches:
            if batch.empty:
                continue
            best, confidence = m.assign(batch)
            yield pd.DataFrame({"customer_key": batch["customer_key"], "persona_id": ids[best],
                                "confidence": confidence})

    selected = features.select(*[F.col(c) if c in ("customer_key", "profession") else F.col(c).cast("double")
                                 for c in columns])
    return selected.mapInPandas(assign, SCORES_SCHEMA)


def sample_for_fit(features: DataFrame, settings: PersonaSettings) -> pd.DataFrame:
    """A uniform sample of at most `sample_size` active customers, as pandas (the fit's input)."""
    cols = [c for c in persona_feature_columns(features.columns) if c not in ("profession_age", "profession_income")]
    extra = ["profession"] if "profession" in features.columns else []
    active = features.where(
        (F.col("interactions_count") + F.col("orders_count")) >= settings.min_activity
    ).select("customer_key", *extra, *[F.col(c).cast("double") for c in cols])
    total = active.count()
    fraction = min(1.0, settings.sample_size / max(total, 1))
    sampled = active if fraction >= 1.0 else active.sample(fraction=fraction, seed=settings.seed)
    return sampled.limit(settings.sample_size).toPandas()
