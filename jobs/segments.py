"""For marketing: persona segment exports and the personas report.

Exports never contain a customer without marketing consent (null consent counts as no consent),
and carry direct contact data (e-mail, phone, name) only when asked for explicitly.
"""
from __future__ import annotations

import html
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from atende.jobs.gold_query import QueryEngine
from atende.jobs.report import chart_html, plotly_script
from atende.models.personas import COUNTS
from atende.pipelines import consent
from atende.pipelines.rules import NPS_DETRACTOR_MAX, NPS_PROMOTER_MIN
from atende.pipelines.schemas import CHANNEL_LABELS

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

EXPORT_COLUMNS = ("customer_key", "persona_id", "persona_name", "confidence", "age_band", "gender", "city", "state",
                  "income_band", "profession", "preferred_channel", "last_channel", "interactions_total",
                  "orders_count", "total_spend", "csat_avg", "nps_last")
CONTACT_COLUMNS = ("display_name", "primary_email", "primary_phone")


class ExportError(ValueError):
    """An export that cannot be made as asked (unknown persona, missing tables)."""


def export_query(persona: str, with_contacts: bool) -> str:
    """The rows of an export, as SQL over the views persona_segments, customer_profiles and personas:
    consenting customers of `persona` ("all": every persona). One query for both engines (jobs.gold_query)."""
    if persona != "all" and not re.fullmatch(r"[A-Za-z0-9_.-]+", persona):
        raise ExportError(f"a persona id is letters, digits, '.', '_' and '-': {persona!r}")
    columns = {"customer_key": "s", "persona_id": "s", "confidence": "s", "persona_name": "n"}
    chosen = [*EXPORT_COLUMNS, *(CONTACT_COLUMNS if with_contacts else ())]
    select = ", ".join(f"{columns.get(c, 'p')}.{c}" for c in chosen)
    which = "" if persona == "all" else f" AND s.persona_id = '{persona}'"
    return (
        f"SELECT {select} FROM persona_segments AS s "
        "JOIN customer_profiles AS p ON p.customer_key = s.customer_key "
        "LEFT JOIN personas AS n ON n.persona_id = s.persona_id "
        # null consent (never recorded) is no consent
        f"WHERE {consent.allows_sql('marketing', 'p')}{which} "
        "ORDER BY s.persona_id, s.customer_key"
    )


def write_export(df: DataFrame, out: Path, fmt: str) -> int:
    """CSV: one file at `out` (header, UTF-8). Parquet: one file at `out`. Returns the row count.
    Written into a temporary sibling first, so a failed export leaves no half file behind."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        single = df.coalesce(1)
        if fmt == "csv":
            single.write.mode("overwrite").option("header", True).option("encoding", "UTF-8").csv(str(staging))
            suffix = ".csv"
        else:
            single.write.mode("overwrite").parquet(str(staging))
            suffix = ".parquet"
        parts = sorted(staging.glob(f"part-*{suffix}"))
        if len(parts) != 1:
            raise ExportError(f"expected one part file in {staging}, found {len(parts)}")
        if out.is_dir():
            raise ExportError(f"{out} is a directory; give a file name")
        shutil.move(str(parts[0]), out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return df.count()


# ---------------------------------------------------------------------- report
_MEMBERS = "FROM persona_segments AS s JOIN customer_profiles AS p ON p.customer_key = s.customer_key"
AGE_ORDER = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"]
INCOME_ORDER = ["A", "B1", "B2", "C1", "C2", "DE", "unknown"]


def persona_report_frames(engine: QueryEngine) -> dict[str, pd.DataFrame]:
    """Small aggregates (persona x category) computed by the engine over the views persona_segments,
    customer_profiles and personas; only these reach pandas."""
    one, zero = "CAST(1 AS DOUBLE)", "CAST(0 AS DOUBLE)"  # not 1.0: a DECIMAL literal on Spark
    nps = (f"CASE WHEN p.nps_last >= {NPS_PROMOTER_MIN} THEN {one} WHEN p.nps_last <= {NPS_DETRACTOR_MAX} "
           f"THEN -{one} WHEN p.nps_last IS NOT NULL THEN {zero} END")
    size = engine.sql(
        # null consent (never recorded) is no consent
        f"SELECT s.persona_id, count(*) AS customers, avg(CASE WHEN p.marketing_consent THEN {one} ELSE {zero} END) "
        "AS consent_share, "
        "avg(p.csat_avg) AS csat_avg, avg(p.ces_avg) AS ces_avg, avg(p.sps_avg) AS sps_avg, "
        f"avg(p.nps_last) AS nps_score_avg, 100 * avg({nps}) AS nps, "
        "avg(CAST(p.interactions_total AS DOUBLE)) AS interactions_avg, avg(p.total_spend) AS spend_avg "
        f"{_MEMBERS} GROUP BY s.persona_id"
    )

    def shares(column: str) -> pd.DataFrame:
        return engine.sql(f"SELECT s.persona_id, coalesce(p.{column}, 'unknown') AS value, count(*) AS count "
                          f"{_MEMBERS} GROUP BY s.persona_id, coalesce(p.{column}, 'unknown')")

    channels = engine.sql(
        "SELECT persona_id, value, sum(n) AS count FROM ("
        f"SELECT s.persona_id, {engine.map_rows('p.interactions_by_channel', 'value', 'n')} {_MEMBERS}) AS t "
        "GROUP BY persona_id, value"
    )
    traits = engine.sql(f"SELECT persona_id, {engine.map_rows('traits', 'trait', 'value')} FROM personas")
    return {
        "personas": engine.sql("SELECT persona_id, persona_name, description, size FROM personas"),
        "size": size, "age": shares("age_band"), "income": shares("income_band"), "gender": shares("gender"),
        "channels": channels, "traits": traits,
    }


_TRAIT_LABELS = {
    "age": "age", "income_level": "income level", "total_spend": "spend", "avg_order_value": "average order value",
    "price_level": "price level of orders", "orders_count": "orders", "interactions_per_week": "contacts per week",
    "interactions_count": "contacts", "satisfaction_index": "satisfaction", "resolved_rate": "contacts resolved",
    "effort_index": "effort reported", "bot_only_rate": "contacts handled by the bot alone",
}


# the share families of the persona model (models.personas.COUNTS), as a person reads one of their columns
_SHARE_LABELS = {"channels": "share of contacts by {}", "hours": "share of contacts in the {}",
                 "topics": "share of contacts about {}", "order_channels": "share of orders via {}"}
_SHARE_PREFIXES = tuple(prefix for _, prefix in COUNTS.values())


def trait_label(trait: str) -> str:
    """How a person reads a persona trait (a column of the customer feature table)."""
    if trait in _TRAIT_LABELS:
        return _TRAIT_LABELS[trait]
    for family, text in _SHARE_LABELS.items():
        prefix = COUNTS[family][1]
        if trait.startswith(prefix):
            value = trait[len(prefix):]
            return text.format(CHANNEL_LABELS.get(value, value.replace("_", " ")))
    return trait.replace("_", " ")


def distinguishing_traits(traits: pd.DataFrame, sizes: pd.Series, top: int = 3,
                          min_share: float = 0.02) -> dict[str, list[tuple[str, float]]]:
    """Per persona, the `top` traits it over-represents most against the whole base: (trait, lift = persona
    mean / base mean, the base being the size-weighted mean over personas), highest lift first; when fewer
    than `top` traits are over-represented, the most under-represented follow (lowest lift first).
    Traits with a base mean of zero or below, with negative values, or — for shares (columns of a share
    family of models.personas.COUNTS) — a base share under `min_share` are left out: a rare channel's lift
    is mostly noise."""
    if traits.empty:
        return {}
    table = traits.pivot_table(index="persona_id", columns="trait", values="value", aggfunc="first")
    weights = sizes.reindex(table.index).fillna(0).astype("float64")
    if weights.sum() <= 0:
        weights = pd.Series(1.0, index=table.index)
    base = table.mul(weights, axis=0).sum() / table.notna().mul(weights, axis=0).sum()

    def usable(trait: str) -> bool:
        share = trait.startswith(_SHARE_PREFIXES)
        return bool(base[trait] > (min_share if share else 0)) and bool((table[trait].dropna() >= 0).all())

    columns = [t for t in table.columns if usable(str(t))]
    out: dict[str, list[tuple[str, float]]] = {}
    for persona, row in table[columns].iterrows():
        lift = (row / base[columns]).dropna()
        over = lift[lift > 1].sort_values(ascending=False)
        under = lift[lift < 1].sort_values()
        chosen = pd.concat([over, under]).head(top)
        out[str(persona)] = [(str(t), float(v)) for t, v in chosen.items()]
    return out


def leading_channel(channels: pd.DataFrame) -> dict[str, tuple[str, float]]:
    """Per persona, its leading channel among its customers' contacts and that channel's share of them."""
    out = {}
    for persona, rows in channels.groupby("persona_id"):
        total = float(rows["count"].sum())
        if total > 0:
            best = rows.sort_values(["count", "value"], ascending=[False, True]).iloc[0]
            out[str(persona)] = (str(best["value"]), float(best["count"]) / total)
    return out


def _layout(height: int, **extra: Any) -> dict:
    return {"height": height, "margin": {"l": 20, "r": 20, "t": 10, "b": 40}, "plot_bgcolor": "white",
            "paper_bgcolor": "white", "legend": {"orientation": "h", "y": -0.15}, **extra}


def _stacked(frame: pd.DataFrame, labels: dict[str, str], what: str, order: list[str] | None = None) -> dict:
    """Horizontal 100% bars: per persona, the share of each category (hover: the share and the count)."""
    table = frame.pivot_table(index="persona_id", columns="value", values="count", aggfunc="sum", fill_value=0)
    if order:
        table = table[[c for c in order if c in table.columns] + [c for c in table.columns if c not in order]]
    table = table.reindex(list(labels)).fillna(0)
    totals = table.sum(axis=1).replace(0, np.nan)
    y = [labels[p] for p in table.index]
    traces = [{
        "type": "bar", "orientation": "h", "name": str(column), "y": y,
        "x": [None if pd.isna(v) else round(float(v), 4) for v in table[column] / totals],
        "customdata": [int(n) for n in table[column]],
        "hovertemplate": f"%{{y}}<br><b>{html.escape(str(column))}</b>: %{{x:.0%}} (%{{customdata:,}} {what})"
                         "<extra></extra>",
    } for column in table.columns]
    return {"data": traces, "layout": _layout(90 + 34 * len(y), barmode="stack",
                                               xaxis={"tickformat": ".0%", "range": [0, 1]},
                                               yaxis={"autorange": "reversed", "automargin": True})}


_PAGE_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1f2933;padding:0 1rem}
h2{border-top:1px solid #d9e2ec;padding-top:1rem;margin-top:2rem}.meta{color:#52606d}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(320px,1fr));gap:.8rem}
.card{border:1px solid #d9e2ec;border-radius:8px;padding:.8rem 1rem;background:#f8fafc}
.card h3{margin:.1rem 0 .3rem;font-size:1.05rem}.card .id{color:#7b8794;font-size:.8rem}
.card .desc{color:#3e4c59;font-size:.9rem}.card .facts{font-size:.85rem;color:#52606d;margin:.4rem 0}
.card ul{margin:.3rem 0 0 1.1rem;padding:0;font-size:.88rem}.up{color:#18794e}.down{color:#c62828}"""


def _number(value: Any) -> float:
    """A figure for the page: 0 where the aggregate is null (a persona with no members in the profiles)."""
    return float(value) if value is not None and pd.notna(value) else 0.0


def _card(row: Any, lead: tuple[str, float] | None, traits: list[tuple[str, float]]) -> str:
    lead_text = (f"leading channel: <b>{html.escape(CHANNEL_LABELS.get(lead[0], lead[0]))}</b> "
                 f"({lead[1]:.0%} of their contacts)") if lead else "no contacts yet"
    items = "".join(
        f"<li>{html.escape(trait_label(t))}: <span class=\"{'up' if lift >= 1 else 'down'}\">"
        f"{lift:.1f}× the base</span></li>" for t, lift in traits)
    return (f"<div class=\"card\" data-persona=\"{html.escape(row.persona_id)}\"><span class=\"id\">"
            f"{html.escape(row.persona_id)}</span><h3>{html.escape(row.persona_name)}</h3>"
            f"<div class=\"desc\">{html.escape(str(row.description or ''))}</div>"
            f"<div class=\"facts\">{int(_number(row.customers)):,} customers · {_number(row.consent_share):.0%} "
            f"with marketing consent · {_number(row.interactions_avg):.1f} contacts and "
            f"R$ {_number(row.spend_avg):,.0f} spent per customer · {lead_text}</div>"
            f"<b style=\"font-size:.85rem\">Most distinguishing traits</b><ul class=\"traits\">{items}</ul></div>")


def render_persona_report(frames: dict[str, pd.DataFrame], out: Path) -> Path:
    """One self-contained HTML page (plotly.js inline, works offline): a card per persona, then charts."""

    personas = frames["personas"].merge(frames["size"], on="persona_id", how="left").sort_values("persona_id")
    personas["customers"] = personas["customers"].fillna(0)
    labels = {str(r.persona_id): f"{r.persona_id} {r.persona_name}" for r in personas.itertuples()}
    leads = leading_channel(frames["channels"])
    traits = distinguishing_traits(frames["traits"], personas.set_index("persona_id")["customers"])
    records: Iterable[Any] = personas.itertuples()  # fields named after the columns: pandas-stubs cannot type them
    cards = "".join(_card(r, leads.get(str(r.persona_id)), traits.get(str(r.persona_id), [])) for r in records)
    y = [labels[p] for p in personas["persona_id"]]
    size = {"data": [{"type": "bar", "orientation": "h", "y": y, "x": [int(n) for n in personas["customers"]],
                      "marker": {"color": "#3366cc"}, "hovertemplate": "%{y}<br>%{x:,} customers<extra></extra>"}],
            "layout": _layout(90 + 34 * len(y), yaxis={"autorange": "reversed", "automargin": True})}
    satisfaction = {"data": [
        {"type": "bar", "name": name, "x": personas["persona_id"].tolist(),
         "y": [None if pd.isna(v) else round(float(v), 3) for v in personas[column]],
         "hovertemplate": f"%{{x}}<br>{html.escape(name)}: %{{y:.2f}}<extra></extra>"}
        for column, name in (("nps", "NPS (last answer, −100..100)"), ("csat_avg", "CSAT (1–5)"),
                             ("ces_avg", "CES (1–7, lower is better)"), ("sps_avg", "SPS (0–5)"))
    ], "layout": {**_layout(340), "margin": {"l": 50, "r": 20, "t": 10, "b": 60}, "barmode": "group"}}
    charts = [
        ("Size", "size", size),
        ("Age", "age", _stacked(frames["age"], labels, "customers", AGE_ORDER)),
        ("Income", "income", _stacked(frames["income"], labels, "customers", INCOME_ORDER)),
        ("Gender", "gender", _stacked(frames["gender"], labels, "customers")),
        ("Channel mix (shares of contacts)", "channels", _stacked(frames["channels"], labels, "contacts")),
        ("Satisfaction", "satisfaction", satisfaction),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{chart_html(figure, name)}" for title, name, figure in charts)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>atende — personas</title>
<style>{_PAGE_STYLE}</style>{plotly_script()}</head><body>
<h1>Personas</h1>
<p class="meta">Customers segmented by gold/persona_segments; traits from gold/customer_profiles and the persona
model. A lift compares a persona's mean with the whole base's. Exports (<code>atende segments export</code>)
contain only customers with marketing consent.</p>
<div class="cards" id="cards">{cards}</div>{body}</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
