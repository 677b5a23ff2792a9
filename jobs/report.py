"""`atende report kpis`: one self-contained HTML page of the service metrics per channel.

The gold `service_kpis` table is reduced in Spark to its "date,channel" rows of the last `days`
days (at most days x channels rows); only that small frame reaches pandas and matplotlib. Charts
are PNGs embedded as base64, so the page is a single file that opens anywhere.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

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


def daily_channel_kpis(service_kpis: DataFrame, days: int) -> DataFrame:
    """The "date,channel" rows of the `days` days up to the table's last date; one row per
    date and channel (the latest written, should a table hold more than one)."""
    base = service_kpis.where(F.col("grouping_level") == KPI_BASE_LEVEL)
    last = base.agg(F.max("date").alias("last"))
    columns = [*_COUNT_COLUMNS, *_VALUE_COLUMNS]
    return (
        base.join(last, how="cross")
        .where(F.col("date") > F.date_sub(F.col("last"), days))
        .groupBy("date", "channel")
        .agg(F.max_by(F.struct(*columns), F.col("_written_at")).alias("_row"))
        .select("date", "channel", *[F.col(f"_row.{c}").alias(c) for c in columns])
        .orderBy("date", "channel")
    )


def render_kpi_report(
    service_kpis: DataFrame, out: Path, days: int = 30, title: str = "atende — service KPIs"
) -> Path:
    """Write the report to `out` (an .html file) and return its path."""
    if days <= 0:
        raise ValueError(f"days must be positive: {days}")
    frame = daily_channel_kpis(service_kpis, days).toPandas()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page(frame, days, title), encoding="utf-8")
    return out


# --- page ------------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #1f2933; padding: 0 1rem; }
h1 { margin-bottom: .2rem; } h2 { margin: 2.2rem 0 .2rem; border-top: 1px solid #d9e2ec; padding-top: 1.2rem; }
.meta, .meaning { color: #52606d; margin: .2rem 0 .6rem; } .unit { font-weight: normal; color: #7b8794; font-size: .8em; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; }
th, td { border-bottom: 1px solid #e4e7eb; padding: .3rem .8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f5f7fa; }
img { max-width: 100%; } .empty { padding: 2rem; background: #fff8e1; border: 1px solid #f0d58c; }
nav a { margin-right: .8rem; white-space: nowrap; }
"""


def _page(frame: pd.DataFrame, days: int, title: str) -> str:
    head = f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>" \
           f"<style>{_STYLE}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
    if frame.empty:
        return head + (
            "<p class=\"empty\" id=\"no-data\">There is no service KPI data yet: the service_kpis table has no "
            "per-day, per-channel rows. Run the pipeline (<code>atende run</code>) and write this report again.</p>"
            "\n</body></html>\n"
        )
    frame = frame.assign(date=pd.to_datetime(frame["date"]))
    first, last = frame["date"].min().date(), frame["date"].max().date()
    window_start = last - dt.timedelta(days=days - 1)
    channels = sorted(frame["channel"].unique())
    dates = pd.date_range(window_start, last, freq="D")
    parts = [
        head,
        f"<p class=\"meta\">Last {days} days of data: {window_start:%d %b %Y} to {last:%d %b %Y}"
        f" (days in the business time zone; first day with data {first:%d %b %Y}). "
        f"Channels: {', '.join(html.escape(c) for c in channels)}. "
        "Each chart shows one metric per day, one line per channel, with the number of responses or contacts "
        "behind each day's value underneath. A missing point means the day had nothing to measure "
        "(for example no survey answers), not zero.</p>",
        "<nav>" + "".join(f"<a href=\"#{m.column}\">{html.escape(m.title)}</a>" for m in METRICS) + "</nav>",
    ]
    colors = {c: f"C{i % 10}" for i, c in enumerate(channels)}
    for metric in METRICS:
        parts.append(_section(frame, metric, channels, dates, colors, days))
    parts.append("\n</body></html>\n")
    return "\n".join(parts)


def _section(frame: pd.DataFrame, metric: Metric, channels: list[str], dates: pd.DatetimeIndex,
             colors: dict[str, str], days: int) -> str:
    values = frame.pivot(index="date", columns="channel", values=metric.column).reindex(dates).astype("float64")
    counts = frame.pivot(index="date", columns="channel", values=metric.count).reindex(dates).fillna(0).astype("int64")
    measured = [c for c in channels if c in values.columns and values[c].notna().any()]
    header = (
        f"<h2 id=\"{metric.column}\">{html.escape(metric.title)} <span class=\"unit\">({html.escape(metric.unit)})"
        f"</span></h2>\n<p class=\"meaning\">{html.escape(metric.meaning)}</p>"
    )
    if not measured:
        return header + f"\n<p class=\"empty\">No channel had any {html.escape(metric.count_label)} in these {days} days.</p>"
    chart = _chart(values[measured] * metric.scale, counts[measured], metric, colors)
    return "\n".join([
        header,
        f"<img alt=\"{html.escape(metric.title)} per day and channel\" src=\"data:image/png;base64,{chart}\">",
        _summary_table(values, counts, metric, channels, days),
    ])


def _chart(values: pd.DataFrame, counts: pd.DataFrame, metric: Metric, colors: dict[str, str]) -> str:
    fig = Figure(figsize=(10, 4.6), dpi=96, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    for channel in values.columns:
        top.plot(values.index, values[channel], marker="o", markersize=3.5, linewidth=1.6,
                 color=colors[channel], label=channel)
        bottom.plot(counts.index, counts[channel], linewidth=1.2, color=colors[channel])
    top.set_title(f"{metric.title} per day", loc="left", fontsize=12)
    top.set_ylabel(metric.unit)
    top.grid(alpha=0.3)
    if metric.column == "nps":
        top.axhline(0, color="#9aa5b1", linewidth=0.8)
    if metric.unit.startswith("%"):
        top.set_ylim(-2, 102)
    top.legend(title="channel", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    bottom.set_ylabel(metric.count_label if len(metric.count_label) <= 16 else "count", fontsize=9)
    bottom.set_title(f"behind each value: {metric.count_label} per day", loc="left", fontsize=9, color="#52606d")
    bottom.set_ylim(bottom=0)
    bottom.grid(alpha=0.3)
    locator = AutoDateLocator()
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _format(value: float | None, metric: Metric) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    shown = value * metric.scale
    if metric.column == "interactions":
        return f"{shown:,.0f}"
    if metric.unit.startswith("%") or metric.column == "nps":
        return f"{shown:.1f}"
    return f"{shown:.2f}" if abs(shown) < 100 else f"{shown:,.0f}"


def _summary_table(values: pd.DataFrame, counts: pd.DataFrame, metric: Metric, channels: list[str], days: int) -> str:
    period_header = f"last {days} days" if metric.combinable else "last day's value"
    if metric.column == "interactions":
        rows_header = ["channel", f"total, last {days} days", "daily average", "days with contacts"]
    else:
        rows_header = ["channel", f"{metric.title}: {period_header}", f"{metric.count_label} ({days} days)",
                       "days with a value"]
    rows = []
    for channel in channels:
        v = values[channel] if channel in values.columns else pd.Series(dtype="float64")
        n = counts[channel] if channel in counts.columns else pd.Series(dtype="int64")
        total = int(n.sum())
        days_with = int(v.notna().sum()) if metric.column != "interactions" else int((n > 0).sum())
        if metric.column == "interactions":
            cells = [f"{total:,}", f"{total / len(counts):,.1f}", str(days_with)]
        else:
            if metric.combinable:
                # each day's value is a mean over its count, so the count-weighted mean is the period's exact value
                weight = n.where(v.notna(), 0)
                period = float((v.fillna(0) * weight).sum() / weight.sum()) if weight.sum() > 0 else None
            else:
                known = v.dropna()
                period = float(known.iloc[-1]) if len(known) else None
            cells = [_format(period, metric), f"{total:,}", str(days_with)]
        rows.append("<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in [channel, *cells]) + "</tr>")
    head = "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in rows_header) + "</tr>"
    return f"<table class=\"summary\" data-metric=\"{metric.column}\">\n{head}\n" + "\n".join(rows) + "\n</table>"
