"""`atende report kpis`: one self-contained HTML page of the service metrics, read at a glance.

The page opens with a headline (the period's figures against the period before), then one interactive
chart per metric — the busiest channels one line each, the rest as "others", the number of responses or
contacts behind every point on hover — and a table per metric with every channel. The window is fitted to
the data (at most `days` days, never before the first day with data). Charts are drawn by plotly.js, which
the page carries inline: one file that works offline.

The gold `service_kpis` table is read through `jobs.gold_query` (DuckDB over the Delta files, or Spark for a
very large table); only the "date,channel" rows of the window and the period before reach pandas.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from atende.jobs.gold_query import QueryEngine
from atende.pipelines.schemas import SURVEY_SCALES
from atende.pipelines.schemas_gold import KPI_BASE_LEVEL


@dataclass(frozen=True)
class Metric:
    column: str
    title: str
    unit: str
    meaning: str
    count: str  # the column holding how many rows the day's value rests on
    count_label: str
    scale: float = 1.0  # table value x scale = what the page shows (fractions as %, seconds as minutes)
    combinable: bool = True  # a count-weighted mean of the daily values is the period's value
    higher_is_better: bool | None = True


def _scale(survey: str) -> str:
    lo, hi = SURVEY_SCALES[survey]
    return f"{lo}–{hi}"


METRICS: tuple[Metric, ...] = (
    Metric("interactions", "Interactions", "contacts per day",
           "Conversations, WhatsApp conversations, e-mail threads and calls that started that day.",
           "interactions", "interactions", higher_is_better=None),
    Metric("nps", "NPS (Net Promoter Score)", "score from −100 to 100",
           "Percentage of promoters (9–10) minus percentage of detractors (0–6) among NPS answers.",
           "nps_responses", "NPS responses"),
    Metric("csat_pct", "CSAT — satisfied customers", "% of CSAT responses",
           f"Share of CSAT answers (scale {_scale('csat')}) that score 4 or 5.", "csat_responses", "CSAT responses"),
    Metric("csat_avg", "CSAT — average score", f"mean score ({_scale('csat')})",
           f"Mean CSAT answer on the {_scale('csat')} scale; higher is better.", "csat_responses", "CSAT responses"),
    Metric("ces_avg", "CES — customer effort", f"mean score ({_scale('ces')})",
           f"Mean Customer Effort Score on the {_scale('ces')} scale; 1 is very low effort, so lower is better.",
           "ces_responses", "CES responses", higher_is_better=False),
    Metric("sps_avg", "SPS — average score", f"mean score ({_scale('sps')})",
           f"Mean SPS survey answer on the {_scale('sps')} scale; higher is better.", "sps_responses", "SPS responses"),
    Metric("fcr_rate", "First-contact resolution (FCR)", "% of interactions",
           "Share of interactions resolved with no further contact by the same customer on the same topic, "
           "on any channel, within 7 days.", "fcr_eligible", "interactions with a known outcome", scale=100.0),
    Metric("first_response_seconds_p50", "First response time — median", "seconds",
           "Half of the customers got a first reply (bot or agent; calls: time in queue) within this time.",
           "first_response_count", "replied conversations and calls", combinable=False, higher_is_better=False),
    Metric("first_response_seconds_p90", "First response time — 90th percentile", "seconds",
           "Nine in ten customers got a first reply (bot or agent; calls: time in queue) within this time.",
           "first_response_count", "replied conversations and calls", combinable=False, higher_is_better=False),
    Metric("bot_containment_rate", "Bot containment", "% of bot-handled conversations",
           "Share of conversations the bot took part in that were resolved without a hand-off to an agent.",
           "bot_handled", "bot-handled conversations", scale=100.0),
    Metric("handoff_rate", "Bot hand-off", "% of bot-handled conversations",
           "Share of conversations the bot took part in that were handed off to an agent.",
           "bot_handled", "bot-handled conversations", scale=100.0, higher_is_better=None),
    Metric("abandonment_rate", "Call abandonment", "% of calls",
           "Share of calls the caller hung up before being answered.", "calls", "calls", scale=100.0,
           higher_is_better=False),
    Metric("aht_seconds", "Average handling time (AHT)", "minutes",
           "Mean talk + hold time of answered calls, and time from hand-off (or start) to end of "
           "agent-handled conversations.", "aht_count", "handled calls and conversations", scale=1 / 60,
           higher_is_better=None),
)

_COUNT_COLUMNS = tuple(dict.fromkeys(m.count for m in METRICS))
_VALUE_COLUMNS = tuple(m.column for m in METRICS if m.column not in _COUNT_COLUMNS)
# the headline: the period's figure of each, against the period before
HEADLINE = ("interactions", "nps", "csat_pct", "fcr_rate", "first_response_seconds_p50", "bot_containment_rate")
OTHERS = "others"


@dataclass(frozen=True)
class KpiWindow:
    rows: pd.DataFrame  # "date,channel" rows of the window and of the period before it
    first: dt.date      # first day with data in the table
    start: dt.date      # the window: start..last (at most `days` days, never before `first`)
    last: dt.date

    @property
    def days(self) -> int:
        return (self.last - self.start).days + 1

    @property
    def current(self) -> pd.DataFrame:
        return self.rows[self.rows["date"] >= pd.Timestamp(self.start)]

    @property
    def previous(self) -> pd.DataFrame:
        """The `days` days before the window; empty unless the data covers all of them (a total over
        three days against one over thirty is no comparison)."""
        begin = self.start - dt.timedelta(days=self.days)
        if self.first > begin:
            return self.rows.iloc[0:0]
        return self.rows[(self.rows["date"] < pd.Timestamp(self.start)) & (self.rows["date"] >= pd.Timestamp(begin))]


def load_kpis(engine: QueryEngine, days: int) -> KpiWindow | None:
    """The window's rows (one per date and channel: the latest written, should a table hold more than one)
    and the period before it; None when the table has no "date,channel" row."""
    if days <= 0:
        raise ValueError(f"days must be positive: {days}")
    level = f"grouping_level = '{KPI_BASE_LEVEL}'"
    bounds = engine.sql(f"SELECT min(date) AS first, max(date) AS last FROM service_kpis WHERE {level}")
    if bounds.empty or pd.isna(bounds.loc[0, "last"]):
        return None
    first, last = (pd.Timestamp(str(bounds.loc[0, c])).date() for c in ("first", "last"))
    start = max(first, last - dt.timedelta(days=days - 1))
    since = start - dt.timedelta(days=(last - start).days + 1)
    columns = ", ".join([*_COUNT_COLUMNS, *_VALUE_COLUMNS])
    rows = engine.sql(
        f"SELECT date, channel, {columns} FROM ("
        f"SELECT date, channel, {columns}, row_number() OVER "
        f"(PARTITION BY date, channel ORDER BY _written_at DESC) AS _latest "
        f"FROM service_kpis WHERE {level} AND date >= DATE '{since.isoformat()}') AS t "
        f"WHERE _latest = 1 ORDER BY date, channel"
    )
    rows = rows.assign(date=pd.to_datetime(rows["date"]))
    return KpiWindow(rows=rows, first=first, start=start, last=last)


def render_kpi_report(engine: QueryEngine, out: Path, days: int = 30, title: str = "atende — service KPIs",
                      top_channels: int = 5) -> Path:
    """Write the report to `out` (an .html file) and return its path."""
    window = load_kpis(engine, days)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(window, title, top_channels), encoding="utf-8")
    return out


# --- figures ---------------------------------------------------------------------------------------

def period_value(rows: pd.DataFrame, metric: Metric) -> tuple[float | None, int]:
    """The metric over `rows` (any days and channels) and the count it rests on. Combinable metrics: the
    count-weighted mean of the daily values, which is the period's exact value (each daily value is a mean
    over its count); percentiles: the count-weighted mean of the daily values, an approximation."""
    if metric.column == "interactions":
        total = int(rows["interactions"].sum()) if len(rows) else 0
        return (float(total) if len(rows) else None), total
    values = rows[metric.column].astype("float64")
    weights = rows[metric.count].where(values.notna(), 0).astype("float64")
    total = int(rows[metric.count].sum()) if len(rows) else 0
    if weights.sum() <= 0:
        return None, total
    return float((values.fillna(0) * weights).sum() / weights.sum()), total


def busiest_channels(rows: pd.DataFrame, top: int) -> list[str]:
    by_volume = rows.groupby("channel")["interactions"].sum().sort_values(ascending=False, kind="stable")
    return [str(c) for c in by_volume.index[:top]]


def chart_series(rows: pd.DataFrame, metric: Metric, channels: list[str], dates: pd.DatetimeIndex
                 ) -> list[tuple[str, pd.Series, pd.Series]]:
    """(name, daily value on the page's scale, daily count) per line: each of `channels`, then "others" —
    the remaining channels combined (count-weighted; not drawn for percentiles, which do not combine)."""
    lines = []
    for channel in channels:
        own = rows[rows["channel"] == channel].set_index("date").reindex(dates)
        lines.append((channel, own[metric.column].astype("float64") * metric.scale,
                      own[metric.count].fillna(0).astype("int64")))
    rest = rows[~rows["channel"].isin(channels)]
    if len(rest) and (metric.combinable or metric.column == "interactions"):
        value = {}
        count = {}
        for date, day in rest.groupby("date"):
            v, n = period_value(day, metric)
            value[date], count[date] = v, n
        lines.append((OTHERS, pd.Series(value, dtype="float64").reindex(dates) * metric.scale,
                      pd.Series(count, dtype="int64").reindex(dates).fillna(0).astype("int64")))
    return [line for line in lines if line[1].notna().any()]


_PALETTE = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00")


def script_json(value: Any) -> str:
    """JSON to put inside a <script> element: no "</script>" or "<!--" a data value could carry ends it."""
    return (json.dumps(value, allow_nan=False)
            .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def chart_html(figure: dict, name: str, metric: str | None = None) -> str:
    """A plotly chart of the page: its div and the script that draws it (plotly.js is in the page's head,
    `plotly_script`). Both report pages draw their charts through this."""
    tag = f" data-metric=\"{metric}\"" if metric else ""
    return (f"<div class=\"chart\" id=\"chart-{name}\"{tag}></div>\n<script type=\"text/javascript\">"
            f"(function () {{ var f = {script_json(figure)}; Plotly.newPlot('chart-{name}', f.data, f.layout, "
            "{displaylogo: false, responsive: true}); })();</script>")


def plotly_script() -> str:
    """plotly.js inline, once per page: the page needs no network."""
    import plotly.offline

    return f"<script type=\"text/javascript\">{plotly.offline.get_plotlyjs()}</script>"


def _figure(metric: Metric, lines: list[tuple[str, pd.Series, pd.Series]], start: dt.date, last: dt.date,
            colors: dict[str, str]) -> dict:
    traces = []
    for name, values, counts in lines:
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": name,
            "x": [d.date().isoformat() for d in values.index],
            "y": [None if pd.isna(v) else round(float(v), 4) for v in values],
            "customdata": [int(n) for n in counts],
            "connectgaps": False,
            "line": {"color": colors.get(name, "#9aa5b1"), "width": 2,
                     "dash": "dot" if name == OTHERS else "solid"},
            "marker": {"size": 5},
            "hovertemplate": f"<b>{html.escape(name)}</b> %{{x|%d %b}}<br>%{{y:.2f}} {html.escape(metric.unit)}"
                             f"<br>%{{customdata:,}} {html.escape(metric.count_label)}<extra></extra>",
        })
    y_axis: dict = {"title": {"text": metric.unit}, "zeroline": metric.column == "nps", "gridcolor": "#e4e7eb"}
    if metric.unit.startswith("%"):
        y_axis["range"] = [-2, 102]
    return {
        "data": traces,
        "layout": {
            "height": 300, "margin": {"l": 60, "r": 20, "t": 10, "b": 40}, "hovermode": "closest",
            "xaxis": {"type": "date", "range": [start.isoformat(), last.isoformat()], "gridcolor": "#e4e7eb",
                      "tickformat": "%d %b"},
            "yaxis": y_axis, "legend": {"orientation": "h", "y": -0.18},
            "plot_bgcolor": "white", "paper_bgcolor": "white",
        },
    }


# --- page ------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1f2933; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { margin: 2.2rem 0 .2rem; border-top: 1px solid #d9e2ec; padding-top: 1.2rem; }
.meta, .meaning { color: #52606d; margin: .2rem 0 .6rem; } .unit { font-weight: normal; color: #7b8794; font-size: .8em; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
th, td { border-bottom: 1px solid #e4e7eb; padding: .3rem .8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f5f7fa; }
.empty { padding: 2rem; background: #fff8e1; border: 1px solid #f0d58c; }
nav a { margin-right: .8rem; white-space: nowrap; }
.headline { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: .7rem; margin: 1rem 0; }
.card { border: 1px solid #d9e2ec; border-radius: 8px; padding: .7rem .9rem; background: #f8fafc; }
.card .label { font-size: .85rem; color: #52606d; } .card .value { font-size: 1.7rem; font-weight: 600; }
.card .change { font-size: .85rem; } .better { color: #18794e; } .worse { color: #c62828; } .same { color: #52606d; }
.card .n { font-size: .78rem; color: #7b8794; }
"""


def _format(value: float | None, metric: Metric) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    shown = value * metric.scale
    if metric.column == "interactions":
        return f"{shown:,.0f}"
    if metric.unit.startswith("%") or metric.column == "nps":
        return f"{shown:.1f}"
    return f"{shown:.2f}" if abs(shown) < 100 else f"{shown:,.0f}"


def _duration(seconds: float) -> str:
    """A time a person reads: 45 s, 3 min 05 s, 2 h 10 min."""
    total = int(round(abs(seconds)))
    sign = "-" if seconds < 0 else ""
    if total < 60:
        return f"{sign}{total} s"
    if total < 3600:
        return f"{sign}{total // 60} min {total % 60:02d} s"
    return f"{sign}{total // 3600} h {total % 3600 // 60:02d} min"


def _card(metric: Metric, window: KpiWindow) -> str:
    now, n = period_value(window.current, metric)
    before, _ = period_value(window.previous, metric)
    unit = "" if metric.column in ("interactions", "nps") else (" %" if metric.unit.startswith("%") else
                                                               " s" if metric.unit == "seconds" else "")
    if now is None or before is None:
        change = "<span class=\"same\">no previous period to compare</span>" if before is None and now is not None \
            else "<span class=\"same\">—</span>"
    else:
        delta = (now - before) * metric.scale
        if metric.column == "interactions":
            text = f"{delta:+,.0f} ({(now - before) / before:+.0%})" if before else f"{delta:+,.0f}"
        elif metric.unit == "seconds":
            text = ("+" if delta >= 0 else "") + _duration(delta)
        else:
            # a change of a percentage is in percentage points
            step = " pts" if unit == " %" else unit
            text = f"{delta:+.1f}{step}" if abs(delta) < 100 else f"{delta:+,.0f}{step}"
        good = metric.higher_is_better
        if abs(delta) < 1e-9 or good is None:
            kind = "same"
        else:
            kind = "better" if (delta > 0) == good else "worse"
        change = f"<span class=\"{kind}\">{html.escape(text)} vs previous {window.days} days</span>"
    shown = "—" if now is None else _duration(now) if metric.unit == "seconds" else _format(now, metric) + unit
    label = "First response, median" if metric.column == "first_response_seconds_p50" else metric.title
    basis = f"{n:,} {metric.count_label}" if metric.column != "interactions" else f"{window.days} days"
    if not metric.combinable:
        basis += " · count-weighted mean of daily medians"
    return (f"<div class=\"card\" data-metric=\"{metric.column}\"><div class=\"label\">{html.escape(label)}</div>"
            f"<div class=\"value\">{html.escape(shown)}</div>"
            f"<div class=\"change\">{change}</div><div class=\"n\">{html.escape(basis)}</div></div>")


def _page(window: KpiWindow | None, title: str, top_channels: int) -> str:
    head = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style>")
    if window is None or window.current.empty:
        return head + f"</head><body>\n<h1>{html.escape(title)}</h1>\n" + (
            "<p class=\"empty\" id=\"no-data\">There is no service KPI data yet: the service_kpis table has no "
            "per-day, per-channel rows. Run the pipeline (<code>atende run</code>) and write this report again.</p>"
            "\n</body></html>\n"
        )
    current = window.current
    channels = sorted(str(c) for c in current["channel"].unique())
    shown = busiest_channels(current, top_channels)
    dates = pd.date_range(window.start, window.last, freq="D")
    by_name = {m.column: m for m in METRICS}
    previous = (f"against the {window.days} days before" if not window.previous.empty
                else "no earlier data to compare against")
    parts = [
        head,
        plotly_script() + "</head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class=\"meta\">{window.days} days of data, {window.start:%d %b %Y} to {window.last:%d %b %Y} "
        f"(days in the business time zone), {previous}. Channels: {', '.join(html.escape(c) for c in channels)}. "
        f"Charts draw the {len(shown)} busiest channels of the period"
        + (f" and the other {len(channels) - len(shown)} as one “others” line" if len(channels) > len(shown) else "")
        + "; hover a point for its value and the number of responses or contacts behind it. A missing point means "
          "the day had nothing to measure (for example no survey answers), not zero.</p>",
        "<div class=\"headline\" id=\"headline\">" + "".join(_card(by_name[c], window) for c in HEADLINE) + "</div>",
        "<nav>" + "".join(f"<a href=\"#{m.column}\">{html.escape(m.title)}</a>" for m in METRICS) + "</nav>",
    ]
    for metric in METRICS:
        parts.append(_section(current, metric, channels, shown, dates, window))
    parts.append("\n</body></html>\n")
    return "\n".join(parts)


def _section(rows: pd.DataFrame, metric: Metric, channels: list[str], shown: list[str], dates: pd.DatetimeIndex,
             window: KpiWindow) -> str:
    header = (
        f"<h2 id=\"{metric.column}\">{html.escape(metric.title)} <span class=\"unit\">({html.escape(metric.unit)})"
        f"</span></h2>\n<p class=\"meaning\">{html.escape(metric.meaning)}</p>"
    )
    lines = chart_series(rows, metric, shown, dates)
    if not lines:
        return header + (f"\n<p class=\"empty\">No channel had any {html.escape(metric.count_label)} "
                         f"in these {window.days} days.</p>")
    # a channel keeps its colour from chart to chart, whichever lines a chart lacks
    colors = {channel: _PALETTE[i % len(_PALETTE)] for i, channel in enumerate(shown)}
    figure = _figure(metric, lines, window.start, window.last, colors)
    chart = chart_html(figure, metric.column, metric.column)
    return "\n".join([header, chart, _summary_table(rows, metric, channels, dates, window.days)])


def _summary_table(rows: pd.DataFrame, metric: Metric, channels: list[str], dates: pd.DatetimeIndex,
                   days: int) -> str:
    period_header = f"last {days} days" if metric.combinable else "last day's value"
    if metric.column == "interactions":
        rows_header = ["channel", f"total, last {days} days", "daily average", "days with contacts"]
    else:
        rows_header = ["channel", f"{metric.title}: {period_header}", f"{metric.count_label} ({days} days)",
                       "days with a value"]
    body = []
    for channel in channels:
        own = rows[rows["channel"] == channel].set_index("date").reindex(dates)
        v, n = own[metric.column].astype("float64"), own[metric.count].fillna(0).astype("int64")
        total = int(n.sum())
        if metric.column == "interactions":
            cells = [f"{total:,}", f"{total / len(dates):,.1f}", str(int((n > 0).sum()))]
        else:
            if metric.combinable:
                period, _ = period_value(own.dropna(subset=[metric.count]), metric)
            else:
                known = v.dropna()
                period = float(known.iloc[-1]) if len(known) else None
            cells = [_format(period, metric), f"{total:,}", str(int(v.notna().sum()))]
        body.append("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in [channel, *cells]) + "</tr>")
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in rows_header) + "</tr>"
    return f"<table class=\"summary\" data-metric=\"{metric.column}\">\n{head}\n" + "\n".join(body) + "\n</table>"
