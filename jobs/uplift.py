"""`atende report uplift`: does following the recommendations pay? Treated customers against the holdout.

A stable share of customers (the global holdout, models/holdout.py) gets the baseline instead of the
recommendations. Every other difference between the two groups is chance, so what they do after the
recommendations were first made — respond to actions, buy, spend, get their problems resolved, say they are
satisfied — compares what following the recommendations changed.

**Who.** The customers of the current `gold/recommendations`, in their group (`holdout`), who were already
known when the period starts (`gold/customer_profiles.first_seen_at` before it): each of them had a
recommendation, or the baseline, all through the period.

**When.** From the first business day after the data the first recommendations were made from (the newest
arrival date of the first run whose `recommendations` job succeeded, `ops/runs`), or `--since`, to the end of
the data the current recommendations were made from (their `as_of`); `--days` shortens it. Days are
calendar days in `kpis.business_timezone`. A lakehouse with one run has no such period yet.

**What**, per customer over the period (the unit is the customer, so a customer with many contacts does not
weigh more): responded to at least one action; bought at least once; spend (BRL, 0 when nothing was bought);
the share of their contacts resolved (customers with a contact); their mean CSAT score and their NPS
(+100 a promoter answer, −100 a detractor, 0 a passive, averaged; customers who answered). Each outcome is
the mean over the group's customers; the difference, treated minus holdout, has a 95% interval: for the two
shares (responded, bought) Newcombe's hybrid score interval, for the others the normal approximation with
each group's own variance (Welch). No conclusion is drawn from a group of fewer than 30 customers. Everything is aggregated by the query engine
(DuckDB over the Delta files, or Spark for large tables): one row per group reaches Python.
"""
from __future__ import annotations

import datetime as dt
import html
import math
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from atende.conf.settings import Settings
from atende.jobs.gold_query import QueryEngine, _write_atomically
from atende.jobs.report import _STYLE, chart_html, plotly_script
from atende.pipelines.rules import NPS_DETRACTOR_MAX, NPS_PROMOTER_MIN

UPLIFT_TABLES = {
    "recommendations": ("gold", "recommendations"), "profiles": ("gold", "customer_profiles"),
    "interactions": ("silver", "interactions"), "responses": ("silver", "survey_responses"),
    "orders": ("silver", "orders"), "actions": ("silver", "actions"), "runs": ("ops", "runs"),
}
Z95 = 1.959963984540054
SMALL_GROUP = 30  # fewer customers than this in a group: the normal approximation is rough


def wilson(p: float, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion p observed over n."""
    z2 = Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return centre - half, centre + half


class NoUpliftPeriod(RuntimeError):
    """The lakehouse holds no outcomes after the recommendations were first made (or no holdout)."""


@dataclass(frozen=True)
class Outcome:
    column: str
    title: str
    unit: str
    scale: float  # the per-customer value x scale = what the page shows (shares as %)
    population: str  # whose values count
    meaning: str
    binary: bool = False  # a per-customer 0/1: the interval of the difference of two proportions


OUTCOMES = (
    Outcome("responded", "Responded to an action", "% of customers", 100.0, "every customer of the group",
            "the share of customers who responded to at least one action sent to them in the period", binary=True),
    Outcome("converted", "Bought", "% of customers", 100.0, "every customer of the group",
            "the share of customers who placed at least one order in the period", binary=True),
    Outcome("spend", "Spend", "BRL per customer", 1.0, "every customer of the group",
            "the value of the orders placed in the period, per customer (0 for a customer who bought nothing)"),
    Outcome("resolution", "Resolution", "% of contacts resolved", 100.0, "customers with a contact in the period",
            "per customer, the share of their contacts in the period that were resolved, averaged over customers"),
    Outcome("csat", "CSAT", "mean score, 1–5", 1.0, "customers who answered a CSAT survey in the period",
            "per customer, the mean of their CSAT answers in the period, averaged over customers"),
    Outcome("nps", "NPS", "points, −100 to 100", 1.0, "customers who answered an NPS survey in the period",
            f"per customer, +100 for each promoter answer ({NPS_PROMOTER_MIN}–10), −100 for each detractor answer "
            f"(0–{NPS_DETRACTOR_MAX}) and 0 for a passive one, averaged; then averaged over customers"),
)


@dataclass(frozen=True)
class Comparison:
    outcome: Outcome
    treated_n: int
    holdout_n: int
    treated: float | None  # the group's mean, in the outcome's unit (scaled)
    holdout: float | None
    treated_se: float | None
    holdout_se: float | None

    @classmethod
    def from_groups(cls, outcome: Outcome, treated: pd.Series | None, holdout: pd.Series | None) -> Comparison:
        """From two rows of per-group statistics (`<outcome>_n`, `_mean`, `_var`; None: no such group): the means
        and their standard errors, in the outcome's unit (a standard error needs two values)."""
        values = []
        for row in (treated, holdout):
            n = int(_value(row, f"{outcome.column}_n") or 0)
            mean = _value(row, f"{outcome.column}_mean")
            var = _value(row, f"{outcome.column}_var")
            values.append((n, None if mean is None else mean * outcome.scale,
                           None if var is None or n < 2 else math.sqrt(var / n) * outcome.scale))
        (n1, m1, s1), (n2, m2, s2) = values
        return cls(outcome, n1, n2, m1, m2, s1, s2)

    @property
    def difference(self) -> float | None:
        if self.treated is None or self.holdout is None:
            return None
        return self.treated - self.holdout

    @property
    def interval(self) -> tuple[float, float] | None:
        """The 95% interval of the difference: for a share, Newcombe's hybrid score interval (from each group's
        Wilson interval; right near 0 % and 100 %, where the normal one claims certainty it does not have);
        otherwise Welch's normal approximation. None without two customers in each group."""
        diff = self.difference
        if diff is None or self.treated_se is None or self.holdout_se is None:
            return None
        if self.outcome.binary:
            scale = self.outcome.scale
            p1, p2 = self.treated / scale, self.holdout / scale  # type: ignore[operator]
            l1, u1 = wilson(p1, self.treated_n)
            l2, u2 = wilson(p2, self.holdout_n)
            below = math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
            above = math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
            return diff - below * scale, diff + above * scale
        half = Z95 * math.sqrt(self.treated_se ** 2 + self.holdout_se ** 2)
        return diff - half, diff + half

    @property
    def relative(self) -> float | None:
        diff = self.difference
        if diff is None or not self.holdout:
            return None
        return diff / abs(self.holdout)


@dataclass(frozen=True)
class Uplift:
    start: dt.date  # first business day of the period
    end: dt.date  # last business day of the period
    share: float  # the configured holdout share
    treated_customers: int
    holdout_customers: int
    comparisons: tuple[Comparison, ...]

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def _instant(day: dt.date, zone: ZoneInfo) -> dt.datetime:
    """Midnight starting `day` on the business clock, as a UTC instant."""
    return dt.datetime.combine(day, dt.time(0), zone).astimezone(dt.timezone.utc)


def _business_day(instant: dt.datetime, zone: ZoneInfo) -> dt.date:
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=dt.timezone.utc)
    return instant.astimezone(zone).date()


def _timestamp(value) -> dt.datetime | None:
    if value is None or pd.isna(value):
        return None
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def period(engine: QueryEngine, zone: ZoneInfo, since: dt.date | None, days: int | None) -> tuple[dt.date, dt.date]:
    """The period's first and last business day (see the module's "When")."""
    columns = set(engine.sql("SELECT * FROM recommendations LIMIT 0").columns)
    newest = (_timestamp(engine.sql("SELECT max(as_of) AS as_of FROM recommendations")["as_of"].iloc[0])
              if {"holdout", "as_of"} <= columns else None)
    if newest is None:
        raise NoUpliftPeriod("gold/recommendations has no holdout yet (it was written by an earlier version of "
                             "atende): run `atende run` or `atende train` once, then write this report after a "
                             "later run")
    last = _business_day(newest - dt.timedelta(microseconds=1), zone)
    if since is None:
        runs = engine.sql("SELECT started_at, arrival_dates FROM runs WHERE job = 'recommendations' "
                          "AND status IN ('succeeded', 'degraded') ORDER BY started_at")
        firsts = [max(pd.Timestamp(d).date() for d in dates) for dates in runs["arrival_dates"]
                  if dates is not None and len(dates)]
        if not firsts:
            raise NoUpliftPeriod("ops/runs has no run whose recommendations job succeeded: run `atende run` first")
        since = firsts[0] + dt.timedelta(days=1)
        first_data = firsts[0]
    else:
        first_data = since - dt.timedelta(days=1)
    end = last if days is None else min(last, since + dt.timedelta(days=days - 1))
    if end < since:
        raise NoUpliftPeriod(
            f"no outcomes after the first recommendations yet: they were made from the data up to {first_data}, "
            f"and the lakehouse holds data up to {last}. Run `atende run` again when newer arrival dates have "
            "landed, then write this report (or choose the period's start with --since)")
    return since, end


def _groups_sql(engine: QueryEngine, start: dt.datetime, end: dt.datetime) -> str:
    """One row per group (`holdout`): customers, and per outcome the customers it counts, its mean and
    its sample variance."""
    lo, hi = engine.instant(start), engine.instant(end)

    def within(column: str) -> str:
        return f"{column} >= {lo} AND {column} < {hi}"

    stats = ",\n".join(
        f"count({o.column}) AS {o.column}_n, avg({o.column}) AS {o.column}_mean, "
        f"var_samp({o.column}) AS {o.column}_var" for o in OUTCOMES)
    return f"""
WITH exposed AS (
  SELECT r.customer_key, r.holdout FROM recommendations r JOIN profiles p ON p.customer_key = r.customer_key
  WHERE p.first_seen_at < {lo}
), acted AS (
  SELECT customer_key, max(CASE WHEN responded THEN 1.0 ELSE 0.0 END) AS responded FROM actions
  WHERE {within('sent_at')} GROUP BY customer_key
), bought AS (
  SELECT customer_key, sum(coalesce(amount, 0.0)) AS spend FROM orders WHERE {within('ordered_at')}
  GROUP BY customer_key
), served AS (
  SELECT customer_key, avg(CASE WHEN resolved THEN 1.0 ELSE 0.0 END) AS resolution FROM interactions
  WHERE {within('started_at')} AND resolved IS NOT NULL GROUP BY customer_key
), answered AS (
  SELECT customer_key,
         avg(CASE WHEN survey = 'csat' THEN CAST(score AS DOUBLE) END) AS csat,
         avg(CASE WHEN survey = 'nps' THEN CASE WHEN score >= {NPS_PROMOTER_MIN} THEN 100.0
                                                WHEN score <= {NPS_DETRACTOR_MAX} THEN -100.0 ELSE 0.0 END END) AS nps
  FROM responses WHERE {within('submitted_at')} GROUP BY customer_key
), outcomes AS (
  SELECT e.holdout, coalesce(a.responded, 0.0) AS responded,
         CASE WHEN b.customer_key IS NULL THEN 0.0 ELSE 1.0 END AS converted, coalesce(b.spend, 0.0) AS spend,
         s.resolution, q.csat, q.nps
  FROM exposed e
  LEFT JOIN acted a ON a.customer_key = e.customer_key
  LEFT JOIN bought b ON b.customer_key = e.customer_key
  LEFT JOIN served s ON s.customer_key = e.customer_key
  LEFT JOIN answered q ON q.customer_key = e.customer_key
)
SELECT holdout, count(*) AS customers,
{stats}
FROM outcomes GROUP BY holdout
"""


def _value(row: pd.Series | None, column: str) -> float | None:
    if row is None or column not in row or pd.isna(row[column]):
        return None
    return float(row[column])


def compute_uplift(engine: QueryEngine, settings: Settings, since: dt.date | None = None,
                   days: int | None = None) -> Uplift:
    """Treated against held-out customers over the period (see the module's docstring)."""
    zone = ZoneInfo(settings.kpis.business_timezone)
    start, end = period(engine, zone, since, days)
    groups = engine.sql(_groups_sql(engine, _instant(start, zone), _instant(end + dt.timedelta(days=1), zone)))
    by_group = {bool(row["holdout"]): row for _, row in groups.iterrows()}
    treated, held = by_group.get(False), by_group.get(True)
    if held is None or not int(held["customers"]):
        raise NoUpliftPeriod(
            f"no customer known before {start} is in the holdout (models.holdout.share is "
            f"{settings.models.holdout.share:.1%}): there is nothing to compare the treated customers with")
    comparisons = tuple(Comparison.from_groups(outcome, treated, held) for outcome in OUTCOMES)
    return Uplift(start, end, settings.models.holdout.share, int(_value(treated, "customers") or 0),
                  int(held["customers"]), comparisons)


# --- page ------------------------------------------------------------------------------------------

def figure(value: float | None, digits: int = 3, signed: bool = False) -> str:
    """A figure for a page: thousands separated, a true minus sign, "–" when there is none."""
    if value is None or not math.isfinite(value):
        return "–"
    text = f"{value:+,.{digits}f}" if signed else f"{value:,.{digits}f}"
    return text.replace("-", "−")


def _number(value: float | None, outcome: Outcome, signed: bool = False) -> str:
    return figure(value, 2 if outcome.column in ("csat", "spend") else 1, signed)


def sentence(c: Comparison) -> str:
    """What the figure means, in one sentence."""
    o = c.outcome
    if c.treated is None or c.holdout is None:
        return (f"Not measurable: {'no treated' if c.treated is None else 'no held-out'} customer counts here "
                f"({o.population}).")
    text = (f"Treated customers: {_number(c.treated, o)} ({o.unit}) against {_number(c.holdout, o)} in the holdout, "
            f"a difference of {_number(c.difference, o, signed=True)}")
    interval = c.interval
    if interval is None:
        return text + "; too few customers for an interval."
    text += f" (95% interval {_number(interval[0], o, signed=True)} to {_number(interval[1], o, signed=True)})."
    if min(c.treated_n, c.holdout_n) < SMALL_GROUP:
        return text + (f" Fewer than {SMALL_GROUP} customers in a group: too few to tell whether the difference "
                       "is real.")
    if interval[0] > 0 or interval[1] < 0:
        return text + (f" The interval excludes zero: following the recommendations "
                       f"{'raised' if interval[0] > 0 else 'lowered'} it.")
    return text + " The interval includes zero: at this size the difference cannot be told from chance."


def _figure(c: Comparison) -> dict:
    names = ["treated", "holdout"]
    means = [c.treated, c.holdout]
    errors = [None if se is None else Z95 * se for se in (c.treated_se, c.holdout_se)]
    return {
        "data": [{
            "type": "bar", "x": names, "y": [None if m is None else round(m, 4) for m in means],
            "marker": {"color": ["#3366cc", "#9aa5b1"]},
            "error_y": {"type": "data", "array": [0 if e is None else round(e, 4) for e in errors], "visible": True},
            "customdata": [c.treated_n, c.holdout_n],
            "hovertemplate": "%{x}: %{y:.2f}<br>%{customdata:,} customers<extra></extra>",
        }],
        "layout": {"height": 240, "width": 360, "margin": {"l": 60, "r": 20, "t": 10, "b": 30},
                   "yaxis": {"title": {"text": c.outcome.unit}, "gridcolor": "#e4e7eb", "zeroline": True},
                   "plot_bgcolor": "white", "paper_bgcolor": "white"},
    }


def render_uplift_page(uplift: Uplift, out: Path, title: str = "atende — uplift against the holdout") -> Path:
    """The page: the period and the groups, then per outcome both groups' means with their 95% intervals
    (a chart), the difference and a sentence saying what it means."""
    u = uplift
    parts = [
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style>", plotly_script() + "</head><body>", f"<h1>{html.escape(title)}</h1>",
        f"<p class=\"meta\" id=\"period\">{u.days} days, {u.start:%d %b %Y} to {u.end:%d %b %Y} (business days). "
        f"{u.treated_customers:,} treated customers and {u.holdout_customers:,} in the global holdout "
        f"(models.holdout.share {u.share:.1%}), every one of them known before the period began. The holdout got "
        "the baseline — the default tone, no next best action, everyone's best sellers — and was picked by a "
        "salted hash of the customer key, so the groups differ only by chance and by the recommendations.</p>",
        "<table id=\"summary\"><tr><th>outcome</th><th>treated</th><th>holdout</th><th>difference</th>"
        "<th>95% interval</th><th>customers (treated / holdout)</th></tr>",
    ]
    for c in u.comparisons:
        interval = c.interval
        parts.append(
            f"<tr data-outcome=\"{c.outcome.column}\"><td>{html.escape(c.outcome.title)} "
            f"<span class=\"unit\">{html.escape(c.outcome.unit)}</span></td><td>{_number(c.treated, c.outcome)}</td>"
            f"<td>{_number(c.holdout, c.outcome)}</td><td>{_number(c.difference, c.outcome, signed=True)}</td>"
            f"<td>{'–' if interval is None else _number(interval[0], c.outcome, True) + ' to ' + _number(interval[1], c.outcome, True)}</td>"
            f"<td>{c.treated_n:,} / {c.holdout_n:,}</td></tr>")
    parts.append("</table>")
    for c in u.comparisons:
        parts += [
            f"<h2 id=\"{c.outcome.column}\">{html.escape(c.outcome.title)} <span class=\"unit\">"
            f"{html.escape(c.outcome.unit)}</span></h2>",
            f"<p class=\"meaning\">{html.escape(c.outcome.meaning[0].upper() + c.outcome.meaning[1:])}; "
            f"counted over {html.escape(c.outcome.population)}.</p>",
            f"<p class=\"sentence\" data-outcome=\"{c.outcome.column}\">{html.escape(sentence(c))}</p>",
            chart_html(_figure(c), c.outcome.column),
        ]
    parts.append("<p class=\"meta\">Intervals: each group's mean ± 1.96 standard errors on the charts; the "
                 "difference's 95% interval from both groups' variances (Welch's normal approximation), for a share "
                 "of customers from both groups' Wilson intervals (Newcombe's hybrid score interval). No conclusion "
                 f"is drawn from a group of fewer than {SMALL_GROUP} customers.</p>")
    parts.append("\n</body></html>\n")
    text = "\n".join(parts)
    _write_atomically(out, lambda staging: staging.write_text(text, encoding="utf-8"))
    return Path(out).resolve()
