"""Persona segmentation: a latent class model fitted by EM, the number of personas chosen over a range.

Why a latent class model (a mixture of naive-Bayes components) rather than k-means over scaled
features: most customers show a handful of traits — a CRM record (age, income band, profession)
and one or two contacts — and the rest is *missing*, not zero. Each trait is read on its own terms:

- categorical traits (profession, income band): one distribution over the levels per persona;
  a profession held by fewer than `PROFESSION_MIN_HOLDERS` customers of the fit sample counts as
  "other";
- count traits (contacts by channel, by hour of day, by topic; orders by channel): a multinomial
  per persona, so nine contacts say more than one and none say nothing;
- numeric traits (age, satisfaction index, log average order value): a Gaussian per persona.

A trait a customer does not have contributes nothing to the likelihood: nothing is imputed.

Fit (scikit-learn-style, numpy/scipy): EM with `n_init` random starts per k on a bounded uniform
sample (`sample_size`); k over `[k_min, k_max]` by the mean log-likelihood per customer of a held-out
share of the sample (`selection: heldout`), the smallest k within one standard error of that best
(`selection: heldout_1se`), or by BIC on the fitted part (`selection: bic`). The
held-out log-likelihood is also the metric the champion is compared on, measured for both models
on the same held-out customers.

Scoring runs in Spark with built-in expressions only: per persona, the log prior plus the trait
log-likelihoods is a linear expression of the feature columns plus one map lookup per categorical
trait (written as SQL text: one parse instead of thousands of calls into the JVM); the persona is the
arg-max and the confidence its posterior probability.

Persona ids stay stable across retrains: the new personas are matched to the previous model's by
the customers of the fit sample they hold (Hungarian assignment on the Jaccard overlap); a pair at
least `match_min_overlap` alike keeps the old id, any other persona gets a new one.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from atende.conf.settings import PersonaSettings
from atende.models import comparison
from atende.pipelines.frames import seeded_rows
from atende.pipelines.schemas import CHANNEL_LABELS

FORMAT = "latent-class/1"
HOLDOUT_SALT = "atende-personas1"  # 16 bytes: pandas' hash key
PROFESSION_MIN_HOLDERS = 3
OTHER = "(other)"
_LOG_2PI_HALF = 0.5 * math.log(2 * math.pi)
_SMOOTHING = 0.5          # Dirichlet pseudo-count on every categorical level / count column
_VARIANCE_FLOOR = 0.01    # share of a numeric trait's overall variance every persona keeps at least

# the model's traits
CATEGORICAL: tuple[str, ...] = ("profession", "income_band")
NUMERIC: dict[str, bool] = {"age": False, "satisfaction_index": False, "avg_order_value": True}  # name -> log1p
# family -> (the count the shares are of, the prefix of the share columns). The share columns are
# whatever the feature table has under that prefix (features.customer: every channel, the hour bands,
# the configured `models.features.topics` and order channels), so the model follows the configuration.
COUNTS: dict[str, tuple[str, str]] = {
    "channels": ("interactions_count", "ch_"),
    "hours": ("interactions_count", "hour_"),
    "topics": ("interactions_count", "topic_"),
    "order_channels": ("orders_count", "ochan_"),
}


def share_columns(available: Iterable[str], prefix: str) -> list[str]:
    """The feature columns of one share family, in the feature table's order."""
    return [c for c in available if c.startswith(prefix)]


# trait families described per persona (names, descriptions, the profile plot, gold personas.traits);
# the share families take their columns from COUNTS
_DESCRIBED: dict[str, tuple[str, ...]] = {
    "age": ("age",),
    "income": ("income_level",),
    "spending": ("total_spend", "avg_order_value", "price_level", "orders_count"),
    "activity": ("interactions_per_week",),
    "channels": (),
    "hours": (),
    "topics": (),
    "order_channels": (),
    "satisfaction": ("satisfaction_index", "resolved_rate"),
    "effort": ("effort_index", "bot_only_rate"),
}


def families(available: Iterable[str]) -> dict[str, list[str]]:
    """Family -> its columns among `available` (families with none are left out)."""
    columns = list(available)
    present = set(columns)
    found = {
        family: share_columns(columns, COUNTS[family][1]) if family in COUNTS else [c for c in fixed if c in present]
        for family, fixed in _DESCRIBED.items()
    }
    return {family: cols for family, cols in found.items() if cols}



class IncompatibleModel(ValueError):
    """A saved persona model of another format (e.g. the k-means model of earlier versions)."""


def described_columns(available: Iterable[str]) -> list[str]:
    return [c for cols in families(available).values() for c in cols]


def model_columns(available: Sequence[str]) -> list[str]:
    """The feature-table columns the latent class model reads, of those available."""
    present = set(available)
    wanted = [*CATEGORICAL, *NUMERIC]
    for total, prefix in COUNTS.values():
        if total in present:
            wanted += [total, *share_columns(available, prefix)]
    return list(dict.fromkeys(c for c in wanted if c in present))


# ---------------------------------------------------------------------- encoded traits
@dataclass
class _Encoded:
    n: int
    categorical: dict[str, np.ndarray]   # level index per row, -1 = missing (last index = other)
    counts: dict[str, np.ndarray]        # rows x columns of counts
    numeric: dict[str, np.ndarray]       # values, NaN = missing

    # what EM's steps derive from the data alone, made once per data (an EM run takes hundreds of steps)
    _derived: dict[tuple, Any] = field(default_factory=dict, repr=False, compare=False)

    def take(self, rows: np.ndarray) -> _Encoded:
        return _Encoded(int(len(rows)), {c: v[rows] for c, v in self.categorical.items()},
                        {f: m[rows] for f, m in self.counts.items()}, {c: v[rows] for c, v in self.numeric.items()})

    def onehot(self, column: str, width: int):
        """rows x `width` sparse indicator of the categorical `column`'s level (missing rows all zero)."""
        key = ("onehot", column, width)
        if key not in self._derived:
            from scipy import sparse

            codes = self.categorical[column]
            seen = np.nonzero(codes >= 0)[0]
            self._derived[key] = sparse.csr_matrix((np.ones(len(seen)), (seen, codes[seen])), shape=(self.n, width))
        return self._derived[key]

    def observed(self, column: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(the numeric `column`'s observed values, the mask of the rows holding them: None when every row does)."""
        key = ("observed", column)
        if key not in self._derived:
            x = self.numeric[column]
            seen = ~np.isnan(x)
            self._derived[key] = (x, None) if seen.all() else (x[seen], seen)
        return self._derived[key]


def _as_float(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").astype("float64").to_numpy()


@dataclass
class PersonaModel:
    persona_ids: list[str]
    names: list[str]
    descriptions: list[str]
    traits: list[dict[str, float]]          # per persona: mean of each described feature over its customers
    sizes: list[int]                        # customers of the fit sample per persona
    log_weights: list[float]                # log prior per persona
    categorical: dict[str, dict]            # column -> {"levels": [...], "log_prob": K x (levels + other)}
    counts: dict[str, dict]                 # family -> {"total": col, "columns": [...], "log_prob": K x columns}
    numeric: dict[str, dict]                # column -> {"log": bool, "mean": [K], "sd": [K]}
    selection: dict[str, float] = field(default_factory=dict)      # k -> criterion value
    trait_scale: dict[str, list[float]] = field(default_factory=dict)  # feature -> [mean, std] of the sample
    format: str = FORMAT

    @property
    def k(self) -> int:
        return len(self.log_weights)

    @property
    def features(self) -> list[str]:
        cols = [*self.categorical, *self.numeric]
        for spec in self.counts.values():
            cols += [spec["total"], *spec["columns"]]
        return list(dict.fromkeys(cols))

    # ------------------------------------------------------------------ pandas side (fit, tests)
    def encode(self, frame: pd.DataFrame) -> _Encoded:
        categorical = {}
        for column, spec in self.categorical.items():
            index = {level: i for i, level in enumerate(spec["levels"])}
            values = frame[column]

            def code(v: object, index: dict[str, int] = index) -> int:
                return index.get(v, len(index)) if isinstance(v, str) else -1
            codes = values.map(code)
            categorical[column] = codes.to_numpy(dtype="int64")
        counts = {}
        for family, spec in self.counts.items():
            total = np.nan_to_num(_as_float(frame, spec["total"]))
            shares = np.nan_to_num(np.column_stack([_as_float(frame, c) for c in spec["columns"]]))
            counts[family] = shares * total[:, None]
        numeric = {}
        for column, spec in self.numeric.items():
            x = _as_float(frame, column)
            numeric[column] = np.log1p(np.clip(x, 0, None)) if spec["log"] else x
        return _Encoded(len(frame), categorical, counts, numeric)

    def log_likelihoods(self, encoded: _Encoded) -> np.ndarray:
        """rows x personas: log prior + log-likelihood of each row's observed traits."""
        out = np.tile(np.asarray(self.log_weights, dtype="float64"), (encoded.n, 1))
        for column, spec in self.categorical.items():
            # a row of zeros after the levels' rows: a missing value (code -1) picks it and adds nothing
            table = np.asarray(spec["log_prob"], dtype="float64").T
            out += np.vstack([table, np.zeros((1, table.shape[1]))])[encoded.categorical[column]]
        for family, spec in self.counts.items():
            out += encoded.counts[family] @ np.asarray(spec["log_prob"]).T
        for column, spec in self.numeric.items():
            x, seen = encoded.observed(column)
            mean, sd = np.asarray(spec["mean"]), np.asarray(spec["sd"])
            term = -0.5 * ((x[:, None] - mean) / sd) ** 2 - np.log(sd) - _LOG_2PI_HALF
            if seen is None:
                out += term
            else:
                out[seen] += term
        return out

    def posterior(self, frame: pd.DataFrame) -> np.ndarray:
        return _normalise(self.log_likelihoods(self.encode(frame)))[0]

    def assign(self, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(persona index, confidence = its posterior probability) per row."""
        p = self.posterior(frame)
        best = p.argmax(axis=1)
        return best, p[np.arange(len(best)), best]

    def row_log_likelihoods(self, frame: pd.DataFrame) -> np.ndarray:
        """Each customer's log-likelihood under the model (the mixture's, over its personas)."""
        if len(frame) == 0:
            return np.zeros(0)
        return _normalise(self.log_likelihoods(self.encode(frame)))[1]

    def mean_log_likelihood(self, frame: pd.DataFrame) -> float:
        """Mean log-likelihood per customer (the held-out metric)."""
        return float(self.row_log_likelihoods(frame).mean()) if len(frame) else math.nan

    # ------------------------------------------------------------------ Spark side (scoring)
    def spark_categorical_rows(self) -> list[tuple[str, Column]]:
        """(name, expression) per categorical trait: the K log-probabilities of the row's level (the "other"
        level's when the model does not know it, zeros when the trait is missing), which
        `spark_log_likelihoods` reads by these names. Computed once per row rather than once per persona (a
        profession lookup holds a few hundred levels)."""
        k = self.k
        rows = []
        for n, (column, spec) in enumerate(self.categorical.items()):
            log_prob = np.asarray(spec["log_prob"])
            lookup = "map(" + ", ".join(f"{_sql_string(level)}, {_sql_doubles(log_prob[:, i])}"
                                        for i, level in enumerate(spec["levels"])) + ")"
            value = f"CAST({_sql_column(column)} AS STRING)"
            rows.append((_categorical_row(n), F.expr(
                f"CASE WHEN ({value} IS NULL) THEN {_sql_doubles([0.0] * k)} "
                f"ELSE coalesce(try_element_at({lookup}, {value}), {_sql_doubles(log_prob[:, -1])}) END")))
        return rows

    def spark_log_likelihoods(self) -> list[Column]:
        """Per persona, the same log-likelihood as `log_likelihoods`, as built-in Spark expressions over the
        feature columns and `spark_categorical_rows`.

        Each is written as SQL text and parsed once in the JVM: the expression the Column API would build call
        by call (every literal the same double, every sum in the same order), without the thousands of
        Python-to-JVM calls that took about 5 s of every run's driver time."""
        k = self.k
        terms: list[list[str]] = [[_sql_double(w)] for w in self.log_weights]
        for n in range(len(self.categorical)):
            for j in range(k):
                terms[j].append(f"element_at({_sql_column(_categorical_row(n))}, {j + 1})")
        for spec in self.counts.values():
            total = _sql_zero_if_missing(spec["total"])
            log_prob = np.asarray(spec["log_prob"])
            for j in range(k):
                dot = _sql_double(0.0)
                for i, c in enumerate(spec["columns"]):
                    dot = f"({dot} + ({_sql_zero_if_missing(c)} * {_sql_double(log_prob[j, i])}))"
                terms[j].append(f"({total} * {dot})")
        for column, spec in self.numeric.items():
            x = f"CAST({_sql_column(column)} AS DOUBLE)"
            observed = f"(({x} IS NOT NULL) AND (NOT isnan({x})))"
            if spec["log"]:
                x = f"log1p(greatest({x}, {_sql_double(0.0)}))"
            for j in range(k):
                mean, sd = float(spec["mean"][j]), float(spec["sd"][j])
                z = f"(({x} - {_sql_double(mean)}) / {_sql_double(sd)})"
                terms[j].append(f"CASE WHEN {observed} THEN ((({_sql_double(-0.5)} * {z}) * {z}) - "
                                f"{_sql_double(math.log(sd) + _LOG_2PI_HALF)}) ELSE {_sql_double(0.0)} END")
        sums = []
        for parts in terms:  # left to right, as Python's sum() adds Columns
            text = parts[0]
            for part in parts[1:]:
                text = f"({text} + {part})"
            sums.append(F.expr(text))
        return sums

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "persona_model.json").write_text(json.dumps(self.__dict__, ensure_ascii=False, indent=1),
                                                  encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> PersonaModel:
        data = json.loads((Path(path) / "persona_model.json").read_text(encoding="utf-8"))
        if data.get("format") != FORMAT:
            raise IncompatibleModel(
                f"the persona model in {path} is of format {data.get('format', 'k-means (before latent-class/1)')!r}, "
                f"this version reads {FORMAT!r}: retrain it (atende train)")
        return cls(**data)


# ------------------------------------------------------------------ SQL text of the scoring expressions
def _sql_double(value: float) -> str:
    """A double literal: Python's shortest repr reads back as the same double (Spark parses it with Java's
    Double.parseDouble); NaN and the infinities have no literal syntax."""
    value = float(value)
    if math.isnan(value):
        return "CAST('NaN' AS DOUBLE)"
    if math.isinf(value):
        return f"CAST('{'' if value > 0 else '-'}Infinity' AS DOUBLE)"
    return f"({value!r}D)"


def _sql_doubles(values: Iterable[float]) -> str:
    return "array(" + ", ".join(_sql_double(v) for v in values) + ")"


def _sql_string(text: str) -> str:
    """A string literal. `$` is written as its unicode escape: Spark substitutes `${...}` in SQL text before
    parsing it (`spark.sql.variable.substitute`), which would change a level such as "Eng ${x}"."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("$", "\\u0024") + "'"


def _categorical_row(n: int) -> str:
    """The name of the n-th categorical trait's row of log-probabilities (`spark_categorical_rows`)."""
    return f"_persona_row_{n}"


def _sql_column(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _sql_zero_if_missing(column: str) -> str:
    """The column as a double, 0 where it is null or NaN."""
    return f"coalesce(nanvl(CAST({_sql_column(column)} AS DOUBLE), {_sql_double(0.0)}), {_sql_double(0.0)})"


def _normalise(log_lik: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(posterior rows x personas, log-likelihood per row)."""
    top = log_lik.max(axis=1, keepdims=True)
    p = np.exp(log_lik - top)
    total = p.sum(axis=1, keepdims=True)
    return p / total, (np.log(total) + top)[:, 0]


# ---------------------------------------------------------------------- fitting
def _vocabulary(sample: pd.DataFrame) -> dict[str, list[str]]:
    """Levels per categorical trait: those held by at least PROFESSION_MIN_HOLDERS customers (the rest is
    'other'), in a stable order."""
    levels = {}
    for column in CATEGORICAL:
        if column not in sample:
            continue
        held = sample[column][sample[column].map(lambda v: isinstance(v, str))].value_counts()
        levels[column] = sorted(str(v) for v, n in held.items() if n >= PROFESSION_MIN_HOLDERS)
    return levels


def _skeleton(sample: pd.DataFrame, k: int) -> PersonaModel:
    """A model of k personas over the traits the sample has, parameters still empty (used to encode)."""
    vocabulary = _vocabulary(sample)
    counts = {f: {"total": total, "columns": share_columns(sample.columns, prefix), "log_prob": []}
              for f, (total, prefix) in COUNTS.items() if total in sample and share_columns(sample.columns, prefix)}
    numeric = {c: {"log": log, "mean": [], "sd": []} for c, log in NUMERIC.items() if c in sample}
    return PersonaModel(persona_ids=[], names=[], descriptions=[], traits=[], sizes=[], log_weights=[0.0] * k,
                        categorical={c: {"levels": v, "log_prob": []} for c, v in vocabulary.items()},
                        counts=counts, numeric=numeric)


def _resized(template: PersonaModel, k: int) -> PersonaModel:
    """A copy of `template` (its traits and vocabulary) for k personas, parameters still empty."""
    model = copy.deepcopy(template)
    model.log_weights = [0.0] * k
    return model


def numeric_variances(encoded: _Encoded) -> dict[str, float]:
    """Overall variance of each numeric trait (1.0 when never observed): the base of the variance floor."""
    return {c: float(np.nanvar(v)) if (~np.isnan(v)).any() else 1.0 for c, v in encoded.numeric.items()}


def _m_step(model: PersonaModel, data: _Encoded, resp: np.ndarray, variance: dict[str, float]) -> None:
    k = resp.shape[1]
    mass = resp.sum(axis=0)
    model.log_weights = np.log((mass + 1e-3) / (mass.sum() + 1e-3 * k)).tolist()
    for column, spec in model.categorical.items():
        onehot = data.onehot(column, len(spec["levels"]) + 1)
        tally = np.asarray((onehot.T @ resp).T) + _SMOOTHING
        spec["log_prob"] = np.log(tally / tally.sum(axis=1, keepdims=True)).tolist()
    for family, spec in model.counts.items():
        tally = resp.T @ data.counts[family] + _SMOOTHING
        spec["log_prob"] = np.log(tally / tally.sum(axis=1, keepdims=True)).tolist()
    for column, spec in model.numeric.items():
        x, seen = data.observed(column)
        weight = resp if seen is None else resp[seen]
        total = weight.sum(axis=0)
        overall = float(np.mean(x)) if len(x) else 0.0
        # a persona holding no observed value of the trait falls back on the overall mean
        mean = np.where(total > 1e-9, (weight * x[:, None]).sum(axis=0) / np.maximum(total, 1e-9), overall)
        var = (weight * (x[:, None] - mean) ** 2).sum(axis=0) / np.maximum(total, 1e-9)
        floor = _VARIANCE_FLOOR * variance[column] + 1e-6
        spec["mean"] = mean.tolist()
        spec["sd"] = np.sqrt(np.where(total > 1e-9, var, variance[column]) + floor).tolist()


def _em(model: PersonaModel, data: _Encoded, settings: PersonaSettings, rng: np.random.Generator,
        variance: dict[str, float]) -> tuple[PersonaModel, float]:
    """Best of `n_init` EM runs from random responsibilities; (model, total log-likelihood)."""
    best: tuple[float, tuple] | None = None
    for _ in range(settings.n_init):
        resp = rng.dirichlet(np.ones(model.k), size=data.n)
        previous = -math.inf
        for _ in range(settings.max_iter):
            _m_step(model, data, resp, variance)
            resp, row_ll = _normalise(model.log_likelihoods(data))
            total = float(row_ll.sum())
            if total - previous <= 1e-6 * max(1.0, abs(total)):
                break
            previous = total
        _m_step(model, data, resp, variance)
        total = float(_normalise(model.log_likelihoods(data))[1].sum())
        if best is None or total > best[0]:
            best = (total, copy.deepcopy((model.log_weights, model.categorical, model.counts, model.numeric)))
    assert best is not None
    model.log_weights, model.categorical, model.counts, model.numeric = best[1]
    return model, best[0]


def _parameter_count(model: PersonaModel) -> int:
    per_persona = sum(len(s["levels"]) for s in model.categorical.values())          # levels + other - 1
    per_persona += sum(len(s["columns"]) - 1 for s in model.counts.values()) + 2 * len(model.numeric)
    return model.k * per_persona + model.k - 1


def _match_ids(labels: np.ndarray, k: int, previous_labels: np.ndarray | None, previous: PersonaModel | None,
               min_overlap: float) -> list[str]:
    """Persona ids for the new personas: the previous model's id of the persona holding the same customers."""
    sizes = np.bincount(labels, minlength=k)
    if previous is None or previous_labels is None:
        order = np.argsort(-sizes, kind="stable")            # persona-01 is the largest
        ranked = [""] * k
        for rank, i in enumerate(order):
            ranked[i] = f"persona-{rank + 1:02d}"
        return ranked
    from scipy.optimize import linear_sum_assignment

    old_k = previous.k
    overlap = np.zeros((k, old_k))
    np.add.at(overlap, (labels, previous_labels), 1.0)
    old_sizes = np.bincount(previous_labels, minlength=old_k)
    jaccard = overlap / np.maximum(sizes[:, None] + old_sizes[None, :] - overlap, 1.0)
    rows, cols = linear_sum_assignment(-jaccard)
    ids: list[str | None] = [None] * k
    for r, c in zip(rows, cols):
        if jaccard[r, c] >= min_overlap:
            ids[r] = previous.persona_ids[c]
    next_number = max((int(p.split("-")[1]) for p in previous.persona_ids), default=0) + 1
    for i in np.argsort(-sizes, kind="stable"):
        if ids[i] is None:
            ids[i] = f"persona-{next_number:02d}"
            next_number += 1
    return [str(i) for i in ids]


def _describe(model: PersonaModel, means: pd.DataFrame, overall: pd.Series,
              spread: pd.Series) -> tuple[list[str], list[str]]:
    """A readable name and a description per persona, from its distinguishing traits."""
    names, descriptions = [], []
    topic_cols = [c for c in means.columns if c.startswith("topic_")]
    hour_cols = [c for c in means.columns if c.startswith("hour_")]
    professions = _typical_professions(model)
    leading = _leading_channels(model)
    for i, (_, row) in enumerate(means.iterrows()):
        z = (row - overall) / spread.replace(0, np.nan)
        parts = []
        # a persona whose customers made no contact has only the smoothed, even channel mix: no leading channel
        contacts = row.get("interactions_count", row.get("interactions_per_week", np.nan))
        if not np.isnan(contacts) and contacts <= 0:
            leading[i] = []
        lead = leading[i][0][0] if leading[i] else None
        if lead:
            parts.append(f"{CHANNEL_LABELS.get(lead, lead)}-first")
        age = row.get("age", np.nan)
        if not np.isnan(age):
            parts.append("young adults" if age < 30 else "adults in their thirties" if age < 40 else
                         "middle-aged adults" if age < 55 else "seniors")
        income = row.get("income_level", np.nan)
        income_txt = None
        if not np.isnan(income):
            income_txt = "high income" if income >= 0.7 else "middle income" if income >= 0.4 else "budget-conscious"
        sat = z.get("satisfaction_index", np.nan)
        sat_txt = "very satisfied" if sat > 0.6 else "dissatisfied, at risk" if sat < -0.6 else None
        effort_txt = "low tolerance for effort" if z.get("effort_index", np.nan) > 0.5 else None
        freq = z.get("interactions_per_week", np.nan)
        freq_txt = "frequent contacts" if freq > 0.6 else "rarely contact us" if freq < -0.6 else None
        spend_txt = "big spenders" if z.get("total_spend", np.nan) > 0.6 else None
        name = " ".join(parts[:2]).strip() or "customers"
        qualifiers = [t for t in (income_txt, spend_txt, sat_txt, effort_txt) if t]
        if qualifiers:
            name += ", " + ", ".join(qualifiers[:2])
        names.append(name[0].upper() + name[1:])

        detail = []
        if not np.isnan(age):
            detail.append(f"average age {age:.0f}")
        if income_txt:
            detail.append(income_txt)
        if professions[i]:
            detail.append("often " + ", ".join(professions[i]))
        if leading[i]:
            # the same shares the name's leading channel comes from: of the persona's contacts
            used = [f"{CHANNEL_LABELS.get(c, c)} ({share:.0%})" for c, share in leading[i] if share > 0]
            detail.append("contacts mostly by " + " and ".join(used))
        if hour_cols and row[hour_cols].fillna(0).sum() > 0:
            detail.append(f"reaches out mostly in the {str(row[hour_cols].fillna(0).idxmax())[5:]}")
        if topic_cols and row[topic_cols].fillna(0).sum() > 0:
            lift = (row[topic_cols].fillna(0) + 0.01) / (overall[topic_cols].fillna(0) + 0.01)
            detail.append(f"talks about {str(lift.idxmax())[6:].replace('_', ' ')} more than others")
        detail += [t for t in (freq_txt, spend_txt, sat_txt, effort_txt) if t]
        descriptions.append("; ".join(d for d in detail if d) + ".")
    # two personas may read alike: number the repeats so names stay unique
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n} ({seen[n]})"
    return names, descriptions


def _leading_channels(model: PersonaModel, top: int = 2) -> list[list[tuple[str, float]]]:
    """Per persona, its `top` channels by share of its customers' contacts, largest first: the persona's
    channel distribution in the model (customers without contacts do not dilute it). The name's leading
    channel is the first of these, so name and description cannot disagree."""
    spec = model.counts.get("channels")
    if not spec or not spec["columns"]:
        return [[] for _ in range(model.k)]
    p = np.exp(np.asarray(spec["log_prob"]))
    columns = [str(c)[3:] for c in spec["columns"]]
    out = []
    for j in range(model.k):
        order = sorted(range(len(columns)), key=lambda c: (-p[j, c], columns[c]))[:top]
        out.append([(columns[c], float(p[j, c])) for c in order])
    return out


def _typical_professions(model: PersonaModel, top: int = 2, min_lift: float = 1.5) -> list[list[str]]:
    """Per persona, the professions most over-represented in it (lift over the population)."""
    spec = model.categorical.get("profession")
    if not spec or not spec["levels"]:
        return [[] for _ in range(model.k)]
    p = np.exp(np.asarray(spec["log_prob"]))[:, :-1]                 # persona x level (without other)
    weights = np.exp(np.asarray(model.log_weights))
    population = weights @ p
    lift = p / np.maximum(population, 1e-12)
    out = []
    for j in range(model.k):
        order = [i for i in np.argsort(-p[j]) if lift[j, i] >= min_lift][:top]
        out.append([spec["levels"][i] for i in order])
    return out


def _held_out(sample: pd.DataFrame, settings: PersonaSettings) -> np.ndarray:
    """Which customers of the sample are held out: those whose salted hash of `customer_key` falls in the
    first `holdout_share` of the range, so a customer held out once is held out at every retrain, and the
    champion (fitted without them) can be judged on them beside the new fit. Without a key, a seeded draw
    of round(share × n) rows."""
    n = len(sample)
    if "customer_key" in sample.columns and n:
        # a fixed salt, not the seed: a retrain with other EM starts holds out the same customers
        digest = pd.util.hash_pandas_object(sample["customer_key"].astype(str), index=False,
                                            hash_key=HOLDOUT_SALT).to_numpy()
        return (digest % np.uint64(10_000)) < np.uint64(round(settings.holdout_share * 10_000))
    held = np.zeros(n, dtype=bool)
    held[np.random.default_rng(settings.seed).choice(n, int(round(settings.holdout_share * n)), replace=False)] = True
    return held


def fit_personas(sample: pd.DataFrame, settings: PersonaSettings,
                 previous: PersonaModel | None = None) -> tuple[PersonaModel, dict[str, float]]:
    """Fit on a pandas sample of the customer feature table. Returns (model, metrics).

    With a previous model, its ids carry over to the matching personas and its held-out
    log-likelihood on the same customers is reported as `champion_holdout_loglik`, and the paired difference
    (new − champion, per customer) as `challenge_holdout_loglik_improvement` with its interval."""
    n = len(sample)
    sample = sample.reset_index(drop=True)
    held = _held_out(sample, settings)
    holdout_n = int(held.sum())
    if n - holdout_n < settings.k_min + 1 or holdout_n < 1:
        raise ValueError(f"persona fit needs at least {settings.k_min + 1} customers to fit and one to hold out, "
                         f"got {n} (holdout_share {settings.holdout_share})")
    fit_rows, hold_rows = np.nonzero(~held)[0], np.nonzero(held)[0]

    template = _skeleton(sample.iloc[fit_rows], settings.k_min)
    if not (template.categorical or template.counts or template.numeric):
        raise ValueError("persona fit: the sample has none of the model's traits "
                         f"({', '.join([*CATEGORICAL, *NUMERIC, *(t for t, _ in COUNTS.values())])})")
    encoded = template.encode(sample)
    variance = numeric_variances(encoded)
    fit_data, hold_data = encoded.take(fit_rows), encoded.take(hold_rows)

    held_rows_ll: dict[str, np.ndarray] = {}  # k -> each held-out customer's log-likelihood

    def candidate(k: int) -> tuple[int, PersonaModel, float, float, float]:
        # each k draws its starts from its own stream: the result does not depend on the order the
        # candidates run in, so they can run side by side (numpy and scipy release the GIL)
        model, total = _em(_resized(template, k), fit_data, settings, np.random.default_rng([settings.seed, k]),
                           variance)
        rows_ll = _normalise(model.log_likelihoods(hold_data))[1]
        held_rows_ll[str(k)] = rows_ll
        held_ll = float(rows_ll.mean())
        bic = -2.0 * total + _parameter_count(model) * math.log(len(fit_rows))
        smallest = float(np.bincount(model.log_likelihoods(fit_data).argmax(axis=1), minlength=k).min()
                         / len(fit_rows))
        return k, model, held_ll, bic, smallest

    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits

    k_max = min(settings.k_max, max(settings.k_min, len(fit_rows) - 1))
    workers = max(1, min(os.cpu_count() or 1, k_max - settings.k_min + 1))
    # the candidates already keep every core busy: BLAS's own threads on top of them (OpenBLAS spins waiting for
    # work between these small products) made the fit 1.5x slower on 2 cores; one BLAS thread per candidate
    with threadpool_limits(limits=1, user_api="blas") if workers > 1 else contextlib.nullcontext():
        results = Parallel(n_jobs=workers, prefer="threads")(
            delayed(candidate)(k) for k in range(settings.k_min, k_max + 1))
    scores = {str(k): (bic if settings.selection == "bic" else held_ll) for k, _, held_ll, bic, _ in results}
    shares = {str(k): smallest for k, *_, smallest in results}
    candidates = {k: (model, held_ll) for k, model, held_ll, _, _ in results}
    # a persona smaller than min_share of the customers is not a segment marketing can use
    eligible = [key for key in scores if shares[key] >= settings.min_share] or [str(settings.k_min)]
    pick = min if settings.selection == "bic" else max
    k = int(pick(eligible, key=lambda key: scores[key]))
    if settings.selection == "heldout_1se":
        k = one_standard_error_k(held_rows_ll, eligible, k)
    model, held_ll = candidates[k]
    model.selection = scores

    posterior = _normalise(model.log_likelihoods(encoded))[0]
    labels = posterior.argmax(axis=1)
    previous_labels = previous.assign(sample)[0] if previous is not None else None
    model.persona_ids = _match_ids(labels, k, previous_labels, previous, settings.match_min_overlap)
    model.sizes = np.bincount(labels, minlength=k).tolist()

    described = described_columns(sample.columns)
    values = sample[described].apply(pd.to_numeric, errors="coerce").astype("float64")
    means = values.groupby(labels).mean().reindex(range(k))
    overall, spread = values.mean(), values.std()
    model.trait_scale = {c: [float(overall[c]), float(spread[c])] for c in described
                         if not (np.isnan(overall[c]) or np.isnan(spread[c]))}
    model.traits = [{f: round(float(v), 4) for f, v in means.loc[i].items() if not np.isnan(v)} for i in range(k)]
    model.names, model.descriptions = _describe(model, means, overall, spread)

    metrics = {
        "k": float(k),
        "holdout_loglik": held_ll,
        "fit_loglik": float(_normalise(model.log_likelihoods(fit_data))[1].mean()),
        "mean_confidence": float(posterior.max(axis=1).mean()),
        "fit_rows": float(len(fit_rows)),
        "holdout_rows": float(len(hold_rows)),
        "smallest_share": float(min(model.sizes) / n),
        **{f"criterion_k{key}": value for key, value in scores.items()},
        **{f"smallest_share_k{key}": value for key, value in shares.items()},
    }
    if previous is not None:
        # the champion on the same held-out customers, paired: their log-likelihoods differ by customer far
        # more than between two fits, and the pairing takes that out of the interval
        theirs = previous.row_log_likelihoods(sample.iloc[hold_rows])
        metrics["champion_holdout_loglik"] = float(theirs.mean())
        metrics.update(comparison.paired_metrics("holdout_loglik", *comparison.paired_mean_difference(
            held_rows_ll[str(k)], theirs, seed=settings.seed)))
    return model, metrics


def one_standard_error_k(held_rows_ll: dict[str, np.ndarray], eligible: Sequence[str], best: int) -> int:
    """The smallest eligible k whose held-out log-likelihood is within one standard error of the best k's
    (the one-standard-error rule: Breiman et al., "Classification and Regression Trees", 1984; Hastie,
    Tibshirani & Friedman, "The Elements of Statistical Learning", 7.10). The standard error is that of the
    mean of the per-customer differences to the best k on the same held-out customers. Near the top the
    held-out curve is flat, and which k tops it depends on which customers the fit saw; the smallest k the
    data cannot tell from the best does not."""
    top = held_rows_ll[str(best)]
    for key in sorted(eligible, key=int):
        if int(key) >= best:
            break
        diff = top - held_rows_ll[key]
        se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0
        if float(diff.mean()) <= se:
            return int(key)
    return best


# ---------------------------------------------------------------------- scoring in Spark
def score_personas(features: DataFrame, model: PersonaModel) -> DataFrame:
    """`customer_key, persona_id, confidence` for every customer of the feature table (built-in expressions)."""
    missing = [c for c in model.features if c not in features.columns]
    if missing:
        raise ValueError(f"the persona model reads columns the feature table lacks: {', '.join(missing)}")
    ll = F.col("_ll")
    top = F.array_max(ll)
    total = F.aggregate(ll, F.lit(0.0), lambda acc, x: acc + F.exp(x - top))
    ids = F.array(*[F.lit(p) for p in model.persona_ids])
    rows = [expression.alias(name) for name, expression in model.spark_categorical_rows()]
    return (features.select("*", *rows).select("customer_key", F.array(*model.spark_log_likelihoods()).alias("_ll"))
            .select("customer_key",
                    F.element_at(ids, F.array_position(ll, top).cast("int")).alias("persona_id"),
                    (F.lit(1.0) / total).alias("confidence")))


def sample_for_fit(features: DataFrame, settings: PersonaSettings) -> pd.DataFrame:
    """A uniform sample of at most `sample_size` customers with at least `min_activity` interactions +
    orders, as pandas (the fit's input): the model's traits and the described features."""
    columns = list(dict.fromkeys([*model_columns(features.columns), *described_columns(features.columns)]))
    strings = set(CATEGORICAL)
    active = features
    if settings.min_activity > 0:
        active = features.where((F.col("interactions_count") + F.col("orders_count")) >= settings.min_activity)
    active = active.select("customer_key", *[F.col(c) if c in strings else F.col(c).cast("double") for c in columns])
    # The customers whose seeded hash of the key is smallest: a uniform sample that, unlike Spark's
    # sample() + limit(), depends on the data alone, not on how it is partitioned (a cluster's run and a
    # local one fit the same model). Rows in key order, so the fit never sees the partitions' order either.
    sampled = seeded_rows(active, settings.seed, settings.sample_size, by=["customer_key"]).toPandas()
    return sampled.sort_values("customer_key", ignore_index=True)


# ---------------------------------------------------------------------- stability (issue #17)
def persona_stability(sample: pd.DataFrame, settings: PersonaSettings, refits: int = 5, seed: int = 7,
                      fraction: float = 0.8) -> dict[str, Any]:
    """How much the personas depend on which customers the fit happened to see.

    The model is refitted `refits` times, each on a random `fraction` of the customers of `sample` (drawn
    without replacement), with the same settings; every refit then labels every customer of `sample` with
    their most likely persona. Returns `ari` (the adjusted Rand index of every pair of refits over those
    customers: 1 = the same partition, 0 = no more alike than chance), `ari_mean`, `ari_min`, `ks` (each
    refit's k), `k_mode` and `k_agreement` (the share of refits that chose the most common k).

    Subsamples, not bootstrap samples: a bootstrap sample repeats customers, and a repeated customer on both
    sides of the fit's held-out split rewards a larger k (the held-out log-likelihood sees rows the fit saw),
    so bootstrap refits disagree on k for that reason alone (Ben-Hur, Elisseeff & Guyon, "A stability based
    method for discovering structure in clustered data", 2002, subsample for the same purpose)."""
    from sklearn.metrics import adjusted_rand_score

    if refits < 2:
        raise ValueError(f"stability needs at least two refits, got {refits}")
    sample = sample.reset_index(drop=True)
    size = max(settings.k_min + 2, int(round(fraction * len(sample))))
    rng = np.random.default_rng(seed)
    labels, ks = [], []
    for _ in range(refits):
        part = sample.iloc[np.sort(rng.choice(len(sample), min(size, len(sample)), replace=False))]
        model, _ = fit_personas(part.reset_index(drop=True), settings)
        labels.append(model.assign(sample)[0])
        ks.append(model.k)
    pairs = [float(adjusted_rand_score(labels[i], labels[j]))
             for i in range(refits) for j in range(i + 1, refits)]
    k_mode = max(set(ks), key=lambda k: (ks.count(k), -k))
    return {"ari": pairs, "ari_mean": float(np.mean(pairs)), "ari_min": float(np.min(pairs)), "ks": ks,
            "k_mode": k_mode, "k_agreement": ks.count(k_mode) / refits, "customers": len(sample)}
