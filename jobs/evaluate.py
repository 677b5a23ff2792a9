"""`atende evaluate`: the champion models judged as their users judge them, on one page and in MLflow.

There is no truth file in production. What a company can see is whether the segments hold still and differ
in what their customers do, what a policy would have earned on the logged actions, how the product lists
rank what customers went on to buy, and what happened to the customers who got the recommendations against
those who did not. This gathers what is measured today:

* **Personas**: stability — the model refitted on random 80 % subsamples of its fit sample
  (`models.personas.persona_stability`): the adjusted Rand index between refits over the same customers and
  how often they choose the same k; per persona, its size and the mean (with a 95% interval) of what its
  customers do — satisfaction, spend, response to actions, resolution, contact rate — and, per outcome, the
  share of its variance between personas (eta², 0: the personas do not differ in it; 1: they explain it all).
* **Next best action**: the off-policy estimates logged by the champion's training run (SNIPS and doubly
  robust conversion against the logging policy's, with bootstrap intervals; `models/offpolicy.py`).
* **Products**: the champion run's time split: NDCG, precision and recall at 10 of the served lists against
  popularity's, over the customers who bought in the held-out days, with bootstrap intervals of both NDCGs
  and of their ratio (`models.products.ndcg_intervals`).
* **Tone, by the natural experiment the data holds**: agents are assigned without regard to tone, and most
  write in one habitual tone, so among contacts written in the agent's habitual tone, whether that tone is the
  one a recommender picks for the customer is as good as random. A tone model is trained without the last
  `models.tone.evaluation_days` days and recommends a tone per customer — for each of
  `models.tone.evaluation_windows` consecutive windows of that length back from the last contact (rolling
  origin: each window's model sees only the contacts before the window), pooled; on those days' habitual-tone
  contacts, resolution and the contact's outcome (survey scores, comments on the agent's manner, else
  resolution: what the tone model learns from) are compared between contacts whose tone matched the
  recommendation and the others, with 95% intervals — for atende's recommendation, for a persona-only one
  (each persona's most frequent atende tone) and for a random one, as references. The champion's held-out
  policy error is shown too.
* **Uplift**: treated against held-out customers (`jobs/uplift.py`), when the lakehouse has a period after
  the first recommendations; otherwise the page says why not.

The figures are logged as one MLflow run (`atende.kind = evaluation`, tagged with each champion's version),
the page is its artefact, and each champion model version is tagged with the run's id.
"""
from __future__ import annotations

import datetime as dt
import html
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from atende.conf.settings import Settings
from atende.jobs import tracking
from atende.jobs.gold_query import SparkEngine, _write_atomically
from atende.jobs.modeling import NBA_MODEL, PERSONA_MODEL, PRODUCT_MODEL, TONE_CONTEXT, TONE_MODEL
from atende.jobs.report import _STYLE, chart_html, plotly_script
from atende.jobs.uplift import (
    UPLIFT_TABLES,
    Z95,
    Comparison,
    NoUpliftPeriod,
    Outcome,
    Uplift,
    compute_uplift,
    figure,
    sentence,
)
from atende.lakehouse.tables import Lakehouse
from atende.models.personas import persona_stability, sample_for_fit
from atende.models.tone import (
    detect_tones,
    habitual_tone_contacts,
    interaction_outcomes,
    score_tone_model,
    train_tone_model,
)
from atende.pipelines.frames import scalar, union_all

log = logging.getLogger(__name__)

MODELS = {"personas": PERSONA_MODEL, "tone": TONE_MODEL, "products": PRODUCT_MODEL, "next_best_action": NBA_MODEL}
# what a persona's customers do (gold/customer_features columns): title, unit, scale for the page
PERSONA_OUTCOMES = {
    "satisfaction_index": ("Satisfaction", "index 0–1", 1.0),
    "total_spend": ("Spend", "BRL per customer", 1.0),
    "action_response_rate": ("Response to actions", "% of actions", 100.0),
    "resolved_rate": ("Resolution", "% of contacts", 100.0),
    "interactions_per_week": ("Contacts", "per week", 1.0),
}
TONE_OUTCOMES = (
    Outcome("resolved", "Resolved", "% of contacts", 100.0, "habitual-tone agent contacts with a known resolution",
            "the share of contacts resolved", binary=True),
    Outcome("outcome", "Contact outcome", "0–1", 1.0, "habitual-tone agent contacts with an outcome",
            "the contact's outcome as the tone model learns it: the mean of its normalised survey scores (a "
            "comment on the agent's manner counting as extra scores), else 1 when resolved and 0 when not"),
)
TONE_RECOMMENDERS = {"atende": "atende's tone model", "persona-only": "each persona's most frequent atende tone",
                     "random": "a tone drawn at random per customer"}
NBA_FIGURES = (
    ("logging_conversion_rate", "Logging policy (what was done)"),
    ("snips_conversion_rate", "Learned policy, self-normalised IPS"),
    ("dr_conversion_rate", "Learned policy, doubly robust"),
    ("snips_lift_conversion_rate", "Lift, SNIPS (learned / logged)"),
    ("dr_lift_conversion_rate", "Lift, doubly robust (learned / logged)"),
    ("snips_lift_policy_value", "Lift in value (BRL, what the policy maximises), SNIPS"),
    ("dr_lift_policy_value", "Lift in value (BRL), doubly robust"),
)


@dataclass
class Evaluation:
    versions: dict[str, str | None]
    stability: dict[str, Any] | None = None
    stability_note: str | None = None
    personas: pd.DataFrame | None = None  # persona_id, persona_name, customers, share, <outcome>_mean/_low/_high
    separation: dict[str, float] = field(default_factory=dict)  # outcome -> eta²
    nba: dict[str, float] = field(default_factory=dict)
    products: dict[str, float] = field(default_factory=dict)
    tone: dict[str, float] = field(default_factory=dict)
    # recommender -> (resolved, outcome) comparisons: matched ("treated") against the other contacts
    tone_experiment: dict[str, tuple[Comparison, ...]] = field(default_factory=dict)
    tone_experiment_note: str | None = None
    tone_windows: list[tuple[dt.datetime, dt.datetime]] = field(default_factory=list)  # [start, end) judged
    uplift: Uplift | None = None
    uplift_note: str | None = None
    promotions: dict[str, str] = field(default_factory=dict)  # part -> why its champion version serves

    @property
    def tone_cutoff(self) -> dt.datetime | None:
        """The first tone window's start: the tone models saw no contact after it."""
        return self.tone_windows[0][0] if self.tone_windows else None

    def metrics(self) -> dict[str, float]:
        """The figures MLflow gets (finite numbers only)."""
        out: dict[str, float] = {}
        if self.stability:
            out.update({"persona_stability_ari_mean": self.stability["ari_mean"],
                        "persona_stability_ari_min": self.stability["ari_min"],
                        "persona_k_agreement": self.stability["k_agreement"],
                        "persona_stability_refits": float(len(self.stability["ks"]))})
        out.update({f"persona_eta2_{k}": v for k, v in self.separation.items()})
        if self.personas is not None and not self.personas.empty:
            out["personas"] = float(len(self.personas))
            out["persona_smallest_share"] = float(self.personas["share"].min())
        out.update({f"nba_{k}": v for k, v in self.nba.items()})
        out.update({f"products_{k}": v for k, v in self.products.items()})
        out.update({f"tone_{k}": v for k, v in self.tone.items()})
        for name, comparisons in self.tone_experiment.items():
            key = name.replace("-", "_")
            for c in comparisons:
                prefix = f"tone_experiment_{key}_{c.outcome.column}"
                out[f"{prefix}_contacts_matched"], out[f"{prefix}_contacts_other"] = c.treated_n, c.holdout_n
                for part, value in (("matched", c.treated), ("other", c.holdout), ("difference", c.difference)):
                    if value is not None:
                        out[f"{prefix}_{part}"] = value
                if c.interval is not None:
                    out[f"{prefix}_low"], out[f"{prefix}_high"] = c.interval
        if self.uplift is not None:
            out["uplift_days"] = float(self.uplift.days)
            out["uplift_treated_customers"] = float(self.uplift.treated_customers)
            out["uplift_holdout_customers"] = float(self.uplift.holdout_customers)
            for c in self.uplift.comparisons:
                name = c.outcome.column
                for key, value in (("treated", c.treated), ("holdout", c.holdout), ("difference", c.difference)):
                    if value is not None:
                        out[f"uplift_{name}_{key}"] = value
                if c.interval is not None:
                    out[f"uplift_{name}_low"], out[f"uplift_{name}_high"] = c.interval
        return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _champion_metrics(name: str) -> tuple[str | None, dict[str, float], str | None]:
    """(champion version, its training run's metrics, the sentence saying why it was promoted)."""
    from mlflow import MlflowClient

    version = tracking.champion_version(name)
    if version is None:
        return None, {}, None
    return (str(version.version), dict(MlflowClient().get_run(version.run_id).data.metrics),
            (version.tags or {}).get("promotion"))


def persona_outcomes(features: DataFrame, segments: DataFrame, personas: DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per persona: customers, share, and per outcome of PERSONA_OUTCOMES the mean with a 95% interval
    (normal approximation); and per outcome eta², the share of its variance between personas, from the
    groups' counts, means and variances (one Spark aggregation, one row per persona back)."""
    present = [c for c in PERSONA_OUTCOMES if c in features.columns]
    joined = segments.select("customer_key", "persona_id").join(
        features.select("customer_key", *[F.col(c).cast("double").alias(c) for c in present]), "customer_key")
    stats = joined.groupBy("persona_id").agg(
        F.count("*").alias("customers"),
        *[x for c in present for x in (F.count(c).alias(f"{c}_n"), F.avg(c).alias(f"{c}_mean"),
                                       F.var_samp(c).alias(f"{c}_var"))],
    ).join(personas.select("persona_id", "persona_name"), "persona_id", "left").orderBy("persona_id").toPandas()
    if stats.empty:
        return stats, {}
    stats["share"] = stats["customers"] / stats["customers"].sum()
    separation = {}
    for c in present:
        n, mean, var = stats[f"{c}_n"].astype(float), stats[f"{c}_mean"].astype(float), stats[f"{c}_var"].astype(float)
        se = (var / n).pow(0.5)
        stats[f"{c}_low"], stats[f"{c}_high"] = mean - Z95 * se, mean + Z95 * se
        ok = n > 0
        grand = (n[ok] * mean[ok]).sum() / n[ok].sum() if n[ok].sum() else math.nan
        between = (n[ok] * (mean[ok] - grand) ** 2).sum()
        within = ((n[ok] - 1).clip(lower=0) * var[ok].fillna(0.0)).sum()
        if between + within > 0:
            separation[c] = float(between / (between + within))
    return stats, separation


def tone_experiment(contacts: DataFrame, outcomes: DataFrame,
                    recommenders: dict[str, DataFrame], on: tuple[str, ...] = ("customer_key",)
                    ) -> dict[str, tuple[Comparison, ...]]:
    """Per recommender (`customer_key, tone` frames), TONE_OUTCOMES compared between the `contacts`
    (`interaction_id, customer_key, tone, resolved`) whose tone is the one it recommends for their customer
    (`treated`: matched) and the others (`holdout`); `outcomes`: `interaction_id, outcome`. One Spark
    aggregation; a contact whose customer a recommender has no tone for does not count for it. `on`: the
    columns a contact meets its recommendation by (with a window column, each window's own recommendations)."""
    base = contacts.join(outcomes.select("interaction_id", "outcome"), on="interaction_id", how="left")
    rows = None
    for name, recommended in recommenders.items():
        part = base.join(recommended.select(*on, F.col("tone").alias("_recommended")),
                         on=list(on), how="inner").select(
            F.lit(name).alias("recommender"), (F.col("tone") == F.col("_recommended")).alias("matched"),
            F.col("resolved").cast("double").alias("resolved"), F.col("outcome").cast("double").alias("outcome"))
        rows = part if rows is None else rows.unionByName(part)
    if rows is None:
        return {}
    stats = rows.groupBy("recommender", "matched").agg(*[
        x for o in TONE_OUTCOMES for x in (F.count(o.column).alias(f"{o.column}_n"),
                                           F.avg(o.column).alias(f"{o.column}_mean"),
                                           F.var_samp(o.column).alias(f"{o.column}_var"))]).toPandas()
    result = {}
    for name in recommenders:
        groups = {bool(r["matched"]): r for _, r in stats[stats["recommender"] == name].iterrows()}
        result[name] = tuple(Comparison.from_groups(o, groups.get(True), groups.get(False)) for o in TONE_OUTCOMES)
    return result


def _tone_natural_experiment(lake: Lakehouse, settings: Settings, features: DataFrame, ev: Evaluation,
                             progress) -> None:
    """The tone section's experiment (see the module's docstring); a reason in `ev.tone_experiment_note`
    when it cannot run."""
    cfg = settings.models.tone
    if not lake.exists("silver", "interactions"):
        ev.tone_experiment_note = "the lakehouse has no silver/interactions"
        return
    interactions = lake.read("silver", "interactions")
    responses = (lake.read("silver", "survey_responses") if lake.exists("silver", "survey_responses") else None)
    last = scalar(interactions.agg(F.max("started_at")))
    if last is None or responses is None:
        ev.tone_experiment_note = "no contacts or no survey responses to judge tones by"
        return
    span = dt.timedelta(days=cfg.evaluation_days)
    starts = [last - span * n for n in range(cfg.evaluation_windows, 0, -1)]  # oldest first
    segments = (lake.read("gold", "persona_segments").select("customer_key", "persona_id")
                if lake.exists("gold", "persona_segments") else None)
    context = (features.join(segments, on="customer_key", how="left") if segments is not None
               else features.withColumn("persona_id", F.lit(None).cast("string")))
    comments = responses.select("response_id", "comment")
    progress(f"tone: {len(starts)} window(s) of {cfg.evaluation_days} days from {starts[0]:%Y-%m-%d %H:%M} UTC, "
             "each judged by a model trained on the contacts before it")
    recommended: list[DataFrame] = []
    windows: list[tuple[int, dt.datetime, dt.datetime]] = []
    skipped: list[str] = []
    detector = None
    for window, start in enumerate(starts):
        before = interactions.where(F.col("started_at") < F.lit(start))
        answered_before = responses.where(F.col("submitted_at") < F.lit(start))
        try:
            model, _ = train_tone_model(before, answered_before, context, cfg, TONE_CONTEXT,
                                        survey_comments=comments, seed=settings.models.personas.seed,
                                        estimate_prior_strength_from_data=cfg.estimate_prior_strength)
        except Exception as exc:  # too few labelled replies or outcomes before the window: said below
            log.info("tone experiment: no model before %s", start, exc_info=True)
            skipped.append(f"{start:%Y-%m-%d}: {str(exc).splitlines()[0]}")
            continue
        detector = model.detector
        end = starts[window + 1] if window + 1 < len(starts) else last + dt.timedelta(microseconds=1)
        windows.append((window, start, end))
        recommended.append(score_tone_model(model, before, answered_before, context, survey_comments=comments,
                                            settings=cfg).select("customer_key", "tone",
                                                                 F.lit(window).alias("_window")).cache())
    if not windows or detector is None:
        ev.tone_experiment_note = (f"no tone model could be trained on the contacts before the last "
                                   f"{cfg.evaluation_days * cfg.evaluation_windows} days ({'; '.join(skipped)})")
        return
    if skipped:
        ev.tone_experiment_note = ("windows left out, no model could be trained on the contacts before them: "
                                   + "; ".join(skipped))
    ev.tone_windows = [(start, end) for _, start, end in windows]
    try:
        tones = detect_tones(interactions, detector)  # an agent's habit is read from all their contacts
        habitual = habitual_tone_contacts(interactions, tones)
        contacts = union_all([
            habitual.where((F.col("started_at") >= F.lit(start)) & (F.col("started_at") < F.lit(end)))
            .withColumn("_window", F.lit(window))
            for window, start, end in windows])
        outcomes = interaction_outcomes(interactions, responses, comments, comment_cues=cfg.comment_cues,
                                        comment_weight=cfg.comment_weight)
        catalogue = list(cfg.catalogue)
        atende = union_all(recommended)
        recommenders = {"atende": atende}
        if segments is not None:
            # per window, each persona's most frequent atende tone
            modal = (atende.join(segments, on="customer_key").groupBy("_window", "persona_id", "tone").count()
                     .groupBy("_window", "persona_id")
                     .agg(F.max_by("tone", F.struct("count", "tone")).alias("tone")))
            recommenders["persona-only"] = segments.join(modal, on="persona_id").select("customer_key", "_window",
                                                                                        "tone")
        # a fixed draw per customer: the same reference on every evaluation and in every window
        pick = F.pmod(F.xxhash64(F.lit("atende-random-tone"), F.col("customer_key")), F.lit(len(catalogue)))
        judged = features.select("customer_key").crossJoin(
            features.sparkSession.createDataFrame([(w,) for w, _, _ in windows], "_window int"))
        recommenders["random"] = judged.select(
            "customer_key", "_window",
            F.element_at(F.array(*[F.lit(t) for t in catalogue]), (pick + 1).cast("int")).alias("tone"))
        ev.tone_experiment = tone_experiment(contacts, outcomes, recommenders, on=("customer_key", "_window"))
    finally:
        for frame in recommended:
            frame.unpersist()


def evaluate(lake: Lakehouse, settings: Settings, refits: int = 5, progress=lambda m: None) -> Evaluation:
    """Every measure of the module's docstring over the lakehouse and the registered champions."""
    tracking.configure(settings, lake.root)
    versions: dict[str, str | None] = {}
    champion_metrics: dict[str, dict[str, float]] = {}
    promotions: dict[str, str] = {}
    for part, name in MODELS.items():
        versions[part], champion_metrics[part], why = _champion_metrics(name)
        if why:
            promotions[part] = why
    ev = Evaluation(versions=versions, promotions=promotions)
    if not lake.exists("gold", "customer_features"):
        raise FileNotFoundError(f"no gold/customer_features in {lake.uri}: run `atende run` first")
    features = lake.read("gold", "customer_features").cache()
    try:
        cfg = settings.models.personas
        if versions["personas"] is None:
            ev.stability_note = "no persona model is registered: nothing to refit"
        else:
            progress(f"personas: refitting on {refits} subsamples of the fit sample")
            try:
                ev.stability = persona_stability(sample_for_fit(features, cfg), cfg, refits=refits, seed=cfg.seed)
            except ValueError as exc:  # too few customers to refit
                ev.stability_note = f"the personas could not be refitted: {exc}"
        if lake.exists("gold", "persona_segments") and lake.exists("gold", "personas"):
            ev.personas, ev.separation = persona_outcomes(features, lake.read("gold", "persona_segments"),
                                                          lake.read("gold", "personas"))
        _tone_natural_experiment(lake, settings, features, ev, progress)
    finally:
        features.unpersist()
    ev.nba = {k: v for k, v in champion_metrics["next_best_action"].items()
              if k.startswith(("logging_", "snips_", "dr_", "ips_", "auc_overall", "ope_", "crossfit_"))}
    ev.products = {k: v for k, v in champion_metrics["products"].items()
                   if k.startswith(("als_", "popularity_", "ndcg_ratio", "category_price_", "test_customers",
                                    "warm_test", "served_", "serves_", "persona_popularity_"))}
    ev.tone = {k: v for k, v in champion_metrics["tone"].items() if "holdout" in k or "accuracy" in k}
    missing = [t for t in UPLIFT_TABLES.values() if not lake.exists(*t)]
    if missing:
        ev.uplift_note = "the lakehouse lacks " + ", ".join("/".join(t) for t in missing)
    else:
        try:
            ev.uplift = compute_uplift(SparkEngine(lake, UPLIFT_TABLES), settings)
        except NoUpliftPeriod as exc:
            ev.uplift_note = str(exc)
    return ev


# --- page ------------------------------------------------------------------------------------------

def _fmt(value: float | None, digits: int = 3) -> str:
    return figure(value, digits)


def _stability_section(ev: Evaluation) -> list[str]:
    parts = ["<h2 id=\"personas\">Personas</h2>"]
    s = ev.stability
    if s is None:
        parts.append(f"<p class=\"empty\">Stability not measured: {html.escape(ev.stability_note or '')}.</p>")
    else:
        verdict = ("stable: refits on other samples of customers draw nearly the same segments"
                   if s["ari_mean"] >= 0.8 else
                   "unstable: refits on other samples of customers draw noticeably different segments, so a "
                   "customer's persona depends on which customers the fit happened to see")
        parts.append(
            f"<p class=\"sentence\" id=\"stability\">Refitted on {len(s['ks'])} random 80 % subsamples of the "
            f"{s['customers']:,} customers of the fit sample, the personas agree with each other at an adjusted "
            f"Rand index of {_fmt(s['ari_mean'], 2)} on average (lowest pair {_fmt(s['ari_min'], 2)}; 1 is the "
            f"same segmentation, 0 no more alike than chance): {verdict}. The refits chose k = "
            f"{', '.join(str(k) for k in s['ks'])}; {s['k_agreement']:.0%} chose k = {s['k_mode']}.</p>")
    p = ev.personas
    if p is None or p.empty:
        parts.append("<p class=\"empty\">No persona segments in the lakehouse.</p>")
        return parts
    present = [c for c in PERSONA_OUTCOMES if f"{c}_mean" in p.columns]
    head = "".join(f"<th>{html.escape(PERSONA_OUTCOMES[c][0])} <span class=\"unit\">"
                   f"{html.escape(PERSONA_OUTCOMES[c][1])}</span></th>" for c in present)
    rows = []
    for _, r in p.iterrows():
        cells = "".join(
            f"<td>{_fmt(r[f'{c}_mean'] * PERSONA_OUTCOMES[c][2], 2)} <span class=\"unit\">"
            f"({_fmt(r[f'{c}_low'] * PERSONA_OUTCOMES[c][2], 2)} to {_fmt(r[f'{c}_high'] * PERSONA_OUTCOMES[c][2], 2)})"
            "</span></td>" for c in present)
        rows.append(f"<tr><td>{html.escape(str(r['persona_id']))} {html.escape(str(r['persona_name'] or ''))}</td>"
                    f"<td>{int(r['customers']):,} ({r['share']:.0%})</td>{cells}</tr>")
    parts.append(f"<table id=\"persona-outcomes\"><tr><th>persona</th><th>customers</th>{head}</tr>{''.join(rows)}"
                 "</table>")
    separated = sorted(ev.separation.items(), key=lambda kv: -kv[1])
    if separated:
        described = ", ".join(f"{PERSONA_OUTCOMES[c][0].lower()} {v:.0%}" for c, v in separated)
        strongest = PERSONA_OUTCOMES[separated[0][0]][0].lower()
        parts.append(
            f"<p class=\"sentence\" id=\"separation\">Share of each outcome's variance between the personas "
            f"(eta²): {described}. The personas differ most in {strongest}; an outcome near 0 % is one the "
            "segments do not tell apart, so a campaign aimed at it gains nothing from targeting by persona.</p>")
    figure = {
        "data": [{"type": "bar", "x": [PERSONA_OUTCOMES[c][0] for c, _ in separated],
                  "y": [round(v, 4) for _, v in separated], "marker": {"color": "#3366cc"},
                  "hovertemplate": "%{x}: %{y:.1%} of the variance between personas<extra></extra>"}],
        "layout": {"height": 260, "margin": {"l": 60, "r": 20, "t": 10, "b": 60},
                   "yaxis": {"title": {"text": "eta²"}, "range": [0, 1], "tickformat": ".0%", "gridcolor": "#e4e7eb"},
                   "plot_bgcolor": "white", "paper_bgcolor": "white"},
    }
    parts.append(chart_html(figure, "persona-separation"))
    return parts


def _no_figures(ev: Evaluation, part: str, model: str, figures: str, why: str) -> str:
    """The note of a section without figures: no champion, or `why` the champion's run logged none."""
    reason = f"no {model} model is registered" if ev.versions[part] is None else why
    return f"<p class=\"empty\">No {figures} figures: {html.escape(reason)}.</p>"


def _nba_table(m: dict[str, float], prefix: str, element_id: str) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(label)}</td><td>{_fmt(m.get(prefix + key))}</td>"
        f"<td>{_fmt(m.get(prefix + key + '_low'))} to {_fmt(m.get(prefix + key + '_high'))}</td></tr>"
        for key, label in NBA_FIGURES if prefix + key in m)
    return (f"<table id=\"{element_id}\"><tr><th>conversion per logged action</th><th>estimate</th>"
            f"<th>95% bootstrap interval</th></tr>{rows}</table>")


def _nba_sentence(m: dict[str, float], prefix: str, judged_on: str, element_id: str, how: str = "") -> str | None:
    lift, low = m.get(prefix + "snips_lift_conversion_rate"), m.get(prefix + "snips_lift_conversion_rate_low")
    if lift is None or low is None:
        return None
    verdict = ("its interval's lower end is above 1, so it would convert better than what was done"
               if low > 1 else "its interval reaches 1 or below, so it is not shown to beat what was done")
    value, value_low = m.get(prefix + "snips_lift_policy_value"), m.get(prefix + "snips_lift_policy_value_low")
    in_value = "" if value is None or value_low is None else (
        f" In value (the BRL the policy maximises) the ratio is {value:.2f}× (interval from {value_low:.2f}×).")
    return (f"<p class=\"sentence\" id=\"{element_id}\">Judged on {int(m.get(prefix + 'ips_rows', 0)):,} "
            f"{judged_on} ({how}it agrees with the logged action on {m.get(prefix + 'ips_match_rate', 0):.0%} of them), "
            f"the learned policy would convert {lift:.2f}× as often as the logging policy (self-normalised IPS): "
            f"{verdict}.{in_value}</p>")


def _nba_section(ev: Evaluation) -> list[str]:
    parts = ["<h2 id=\"next-best-action\">Next best action, off-policy</h2>"]
    m = ev.nba
    if "logging_conversion_rate" not in m:
        return parts + [_no_figures(ev, "next_best_action", "next-best-action", "off-policy",
                                    "the champion's held-out logged actions carry no propensity")]
    if "crossfit_logging_conversion_rate" in m:
        folds = int(m.get("crossfit_folds", 0))
        parts.append(f"<h3>Every logged action of the training window, cross-fitted ({folds} folds)</h3>")
        parts.append(_nba_table(m, "crossfit_", "off-policy-crossfit"))
        sentence = _nba_sentence(
            m, "crossfit_", "logged actions, each by a model of the same training that did not see its customer",
            "nba-crossfit-sentence", how=f"{folds} folds of customers; ")
        if sentence:
            parts.append(sentence)
        parts.append("<h3>The registered model on its held-out customers</h3>")
    parts.append(_nba_table(m, "", "off-policy"))
    sentence = _nba_sentence(m, "", "held-out logged actions", "nba-sentence")
    if sentence:
        parts.append(sentence)
    return parts


def _products_section(ev: Evaluation) -> list[str]:
    parts = ["<h2 id=\"products\">Products, time split</h2>"]
    m = ev.products
    if "als_ndcg_at_10" not in m:
        return parts + [_no_figures(ev, "products", "product", "time-split",
                                    "the champion's training data was too short to hold days out")]
    def interval(name: str) -> str:
        low, high = m.get(f"{name}_low"), m.get(f"{name}_high")
        return "" if low is None or high is None else f" <span class=\"unit\">({_fmt(low)} to {_fmt(high)})</span>"

    # a champion trained before the choice existed served ALS
    serves_category = m.get("serves_category_price", 0.0) == 1.0
    served, other = ("category_price", "als") if serves_category else ("als", "category_price")
    labels = {"als": "ALS (then persona, popularity)", "category_price": "category × price ladder (then persona, popularity)"}
    rows = "".join(
        f"<tr><td>{name}</td><td>{_fmt(m.get(f'{prefix}_ndcg_at_10'))}{interval(f'{prefix}_ndcg_at_10')}</td>"
        + "".join(f"<td>{_fmt(m.get(f'{prefix}_{metric}_at_10'))}</td>" for metric in ("precision", "recall"))
        + "</tr>"
        for prefix, name in ((served, f"served: {labels[served]}"), (other, f"not served: {labels[other]}"),
                             ("persona_popularity", "the persona's best sellers (then everyone's)"),
                             ("popularity", "popularity (everyone's best sellers)"))
        if f"{prefix}_ndcg_at_10" in m)
    parts.append(f"<table id=\"products-table\"><tr><th>recommender</th><th>NDCG@10 (95% bootstrap interval)</th>"
                 f"<th>precision@10</th><th>recall@10</th></tr>{rows}</table>")
    ratio_name = {"als": "ndcg_ratio", "category_price": "category_price_ratio"}[served]
    ratio = m.get(ratio_name)
    customers = f"Over {int(m.get('test_customers', 0)):,} customers who bought in the held-out days"
    if ratio is None or not math.isfinite(ratio):
        verdict = (f"{customers}, popularity's lists hold none of what they bought in their top 10, so there is no "
                   f"ratio; the served lists' NDCG@10 is {_fmt(m.get(f'{served}_ndcg_at_10'))}.")
    else:
        low, high = m.get(f"{ratio_name}_low"), m.get(f"{ratio_name}_high")
        verdict = f"{customers}, the served lists rank what they bought at {_fmt(ratio, 2)}× popularity's NDCG@10"
        if low is None or high is None:
            verdict += " (no interval: the champion's run predates them)."
        elif low > 1:
            verdict += (f" (95% interval {_fmt(low, 2)}× to {_fmt(high, 2)}×): better than showing everyone the "
                        "best sellers.")
        else:
            verdict += (f" (95% interval {_fmt(low, 2)}× to {_fmt(high, 2)}×): not shown to beat showing everyone "
                        "the best sellers.")
    parts.append(f"<p class=\"sentence\">{verdict}</p>")
    over_persona = m.get(f"{served}_over_persona_popularity")
    if over_persona is not None and math.isfinite(over_persona):
        low, high = m.get(f"{served}_over_persona_popularity_low"), m.get(f"{served}_over_persona_popularity_high")
        span = "" if low is None or high is None else f" (95% interval {_fmt(low, 2)}× to {_fmt(high, 2)}×)"
        parts.append(f"<p class=\"sentence\" id=\"persona-baseline-sentence\">Against each customer's persona's "
                     f"best sellers, the served lists reach {_fmt(over_persona, 2)}× their NDCG@10{span}.</p>")
    versus = m.get("category_price_vs_als")
    if versus is not None and math.isfinite(versus):
        low, high = m.get("category_price_vs_als_low"), m.get("category_price_vs_als_high")
        span = "" if low is None or high is None else f" (95% interval {_fmt(low, 2)}× to {_fmt(high, 2)}×)"
        beats = low is not None and low > 1
        if "serves_category_price" not in m:
            why = "this champion was trained before the choice existed and serves ALS"
        elif serves_category:
            why = ("it beats ALS beyond the interval, so training chose it" if beats else
                   "it is served as configured (models.products.recommender), not shown to beat ALS")
        else:
            why = ("ALS is served as configured (models.products.recommender), though this one beats it"
                   if beats else "it does not beat ALS beyond the interval, so ALS is served")
        parts.append(f"<p class=\"sentence\" id=\"category-price-sentence\">The recommender of each customer's "
                     f"categories and their persona's price band ranks what they bought at {_fmt(versus, 2)}× "
                     f"ALS's NDCG@10{span}: {why}.</p>")
    return parts


def _tone_sentence(c: Comparison) -> str:
    o = c.outcome
    if c.treated is None or c.holdout is None:
        return f"{o.title}: not measurable ({c.treated_n:,} matched and {c.holdout_n:,} other contacts)."
    text = (f"{o.title}: {_fmt(c.treated, 1 if o.binary else 3)} when the agent's habitual tone was the recommended "
            f"one ({c.treated_n:,} contacts) against {_fmt(c.holdout, 1 if o.binary else 3)} when it was not "
            f"({c.holdout_n:,}), a difference of {_fmt(c.difference, 1 if o.binary else 3)}")
    interval = c.interval
    if interval is None:
        return text + "; too few contacts for an interval."
    text += f" (95% interval {_fmt(interval[0], 1 if o.binary else 3)} to {_fmt(interval[1], 1 if o.binary else 3)})."
    if min(c.treated_n, c.holdout_n) < 30:
        return text + " Too few contacts on one side to tell."
    if interval[0] > 0:
        return text + " Contacts in the recommended tone went better."
    if interval[1] < 0:
        return text + " Contacts in the recommended tone went worse."
    return text + " The interval includes zero: no difference can be told at this size."


def _tone_section(ev: Evaluation) -> list[str]:
    parts = ["<h2 id=\"tone\">Tone</h2>"]
    if ev.tone_experiment:
        if len(ev.tone_windows) > 1:
            spans = ", ".join(f"{start:%d %b %H:%M}–{end:%d %b %H:%M}" for start, end in ev.tone_windows)
            judged = (f"Tone models trained on the contacts before each of {len(ev.tone_windows)} windows "
                      f"({spans} UTC), each judged on the agent contacts of its own window")
        else:
            cutoff = f"{ev.tone_cutoff:%d %b %Y %H:%M} UTC" if ev.tone_cutoff else "the cutoff"
            judged = f"A tone model trained on the contacts before {cutoff}, judged on the agent contacts after it"
        parts.append(f"<p class=\"meta\">{judged} that were written in the agent's habitual tone (agents are not "
                     "assigned by tone, so whether that tone is the recommended one is as good as chance).</p>")
        if ev.tone_experiment_note:
            parts.append(f"<p class=\"meta\" id=\"tone-note\">{html.escape(ev.tone_experiment_note)}.</p>")
        rows = []
        for name, comparisons in ev.tone_experiment.items():
            for c in comparisons:
                interval = c.interval
                rows.append(
                    f"<tr data-recommender=\"{name}\"><td>{html.escape(TONE_RECOMMENDERS.get(name, name))}</td>"
                    f"<td>{html.escape(c.outcome.title)} <span class=\"unit\">{html.escape(c.outcome.unit)}</span></td>"
                    f"<td>{_fmt(c.treated, 2)} ({c.treated_n:,})</td><td>{_fmt(c.holdout, 2)} ({c.holdout_n:,})</td>"
                    f"<td>{_fmt(c.difference, 2)}</td><td>"
                    + ("–" if interval is None else f"{_fmt(interval[0], 2)} to {_fmt(interval[1], 2)}") + "</td></tr>")
        parts.append("<table id=\"tone-experiment\"><tr><th>recommender</th><th>outcome</th><th>tone matched "
                     "(contacts)</th><th>not matched (contacts)</th><th>difference</th><th>95% interval</th></tr>"
                     + "".join(rows) + "</table>")
        for c in ev.tone_experiment.get("atende", ()):
            parts.append(f"<p class=\"sentence\" data-outcome=\"{c.outcome.column}\">{html.escape(_tone_sentence(c))}</p>")
        parts.append("<p class=\"meaning\">The persona-only and random rows are references: atende's recommendation "
                     "is worth its per-customer evidence when its difference is larger than theirs.</p>")
    else:
        parts.append(f"<p class=\"empty\" id=\"tone-note\">No natural experiment: "
                     f"{html.escape(ev.tone_experiment_note or 'not run')}.</p>")
    if "policy_holdout_rmse" in ev.tone:
        parts.append(f"<p class=\"sentence\">The champion's policy error on held-out contacts (RMSE of the outcome it "
                     f"predicts for the tone used): {_fmt(ev.tone.get('policy_holdout_rmse'))}.</p>")
    return parts


def _uplift_section(ev: Evaluation) -> list[str]:
    parts = ["<h2 id=\"uplift\">Uplift against the holdout</h2>"]
    u = ev.uplift
    if u is None:
        parts.append(f"<p class=\"empty\" id=\"uplift-note\">Not measured yet: {html.escape(ev.uplift_note or '')}</p>")
        return parts
    parts.append(f"<p class=\"meta\">{u.days} days, {u.start:%d %b %Y} to {u.end:%d %b %Y}; {u.treated_customers:,} "
                 f"treated and {u.holdout_customers:,} held-out customers (`atende report uplift` for the charts).</p>")
    parts += [f"<p class=\"sentence\"><b>{html.escape(c.outcome.title)}.</b> {html.escape(sentence(c))}</p>"
              for c in u.comparisons]
    return parts


def _promotion_section(ev: Evaluation) -> list[str]:
    """Why each champion serves: the sentence its promotion left on the version (tracking.log_and_register)."""
    parts = ["<h2 id=\"promotion\">Why these versions serve</h2>",
             "<p class=\"meta\">A retrained model replaces its champion unless it is worse beyond the interval on "
             "the measures below (paired: both judged on the same held-out rows).</p>"]
    for part, version in ev.versions.items():
        if version is None:
            continue
        why = ev.promotions.get(part) or "promoted before promotion reasons were recorded"
        parts.append(f"<p class=\"sentence\"><b>{html.escape(part.replace('_', ' '))} v{version}.</b> "
                     f"{html.escape(why)}</p>")
    return parts


def render_evaluation_page(ev: Evaluation, out: Path, title: str = "atende — model evaluation") -> Path:
    versions = ", ".join(f"{part} v{v}" if v else f"{part}: none" for part, v in ev.versions.items())
    parts = [
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style>", plotly_script() + "</head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p class=\"meta\" id=\"versions\">Champions: {html.escape(versions)}. Written "
        f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC.</p>",
        "<nav><a href=\"#personas\">Personas</a><a href=\"#next-best-action\">Next best action</a>"
        "<a href=\"#products\">Products</a><a href=\"#tone\">Tone</a><a href=\"#uplift\">Uplift</a>"
        "<a href=\"#promotion\">Promotion</a></nav>",
        *_stability_section(ev), *_nba_section(ev), *_products_section(ev),
        *_tone_section(ev),
        *_uplift_section(ev),
        *_promotion_section(ev),
        "\n</body></html>\n",
    ]
    text = "\n".join(parts)
    _write_atomically(out, lambda staging: staging.write_text(text, encoding="utf-8"))
    return Path(out).resolve()


def log_evaluation(ev: Evaluation, page: Path) -> str:
    """One MLflow run with the figures and the page; each champion version tagged with the run's id."""
    import mlflow
    from mlflow import MlflowClient

    with mlflow.start_run(run_name=f"evaluation {dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}") as run:
        mlflow.set_tags({"atende.kind": "evaluation",
                         **{f"champion.{part}": v for part, v in ev.versions.items() if v is not None}})
        tracking.log_metrics(ev.metrics())
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "evaluation.html"
            copy.write_bytes(Path(page).read_bytes())
            mlflow.log_artifact(str(copy))
    client = MlflowClient()
    for part, version in ev.versions.items():
        if version is not None:
            client.set_model_version_tag(MODELS[part], version, "atende.evaluation_run", run.info.run_id)
    return run.info.run_id
