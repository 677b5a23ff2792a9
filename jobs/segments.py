"""For marketing: persona segment exports and the personas report.

Exports never contain a customer without marketing consent (null consent counts as no consent),
and carry direct contact data (e-mail, phone, name) only when asked for explicitly.
"""
from __future__ import annotations

import base64
import html
import io
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

EXPORT_COLUMNS = ("customer_key", "persona_id", "persona_name", "confidence", "age_band", "gender", "city", "state",
                  "income_band", "profession", "preferred_channel", "last_channel", "interactions_total",
                  "orders_count", "total_spend", "csat_avg", "nps_last")
CONTACT_COLUMNS = ("display_name", "primary_email", "primary_phone")


class ExportError(ValueError):
    """An export that cannot be made as asked (unknown persona, missing tables)."""


def build_segment_export(profiles: DataFrame, segments: DataFrame, personas: DataFrame, persona: str,
                         with_contacts: bool) -> DataFrame:
    """The rows of an export: consenting customers of `persona` ("all": every persona)."""
    has_consent = F.col("marketing_consent") == F.lit(True)
    chosen = segments if persona == "all" else segments.where(F.col("persona_id") == persona)
    rows = (
        chosen.select("customer_key", "persona_id", "confidence")
        .join(profiles.drop("persona_id"), on="customer_key", how="inner")
        .where(has_consent)
        .join(personas.select("persona_id", "persona_name"), on="persona_id", how="left")
    )
    columns = list(EXPORT_COLUMNS) + (list(CONTACT_COLUMNS) if with_contacts else [])
    return rows.select(*columns).orderBy("persona_id", "customer_key")


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
def persona_report_frames(profiles: DataFrame, segments: DataFrame, personas: DataFrame) -> dict[str, pd.DataFrame]:
    """Small aggregates (persona × category) computed in Spark; only these reach pandas."""
    joined = segments.select("customer_key", "persona_id").join(profiles.drop("persona_id"), on="customer_key",
                                                                 how="inner")
    size = joined.groupBy("persona_id").agg(
        F.count("*").alias("customers"),
        F.avg(F.col("marketing_consent").cast("double")).alias("consent_share"),
        F.avg("csat_avg").alias("csat_avg"), F.avg("ces_avg").alias("ces_avg"), F.avg("sps_avg").alias("sps_avg"),
        F.avg("nps_last").alias("nps_score_avg"),
        F.avg(F.when(F.col("nps_last") >= 9, 1.0).when(F.col("nps_last") <= 6, -1.0)
              .when(F.col("nps_last").isNotNull(), 0.0)).alias("_nps"),
        F.avg("interactions_total").alias("interactions_avg"), F.avg("total_spend").alias("spend_avg"),
    ).withColumn("nps", F.col("_nps") * 100).drop("_nps")
    age = joined.groupBy("persona_id", F.coalesce("age_band", F.lit("unknown")).alias("value")).count()
    income = joined.groupBy("persona_id", F.coalesce("income_band", F.lit("unknown")).alias("value")).count()
    gender = joined.groupBy("persona_id", F.coalesce("gender", F.lit("unknown")).alias("value")).count()
    channels = joined.select("persona_id", F.explode("interactions_by_channel").alias("value", "n")).groupBy(
        "persona_id", "value").agg(F.sum("n").alias("count"))
    return {
        "personas": personas.select("persona_id", "persona_name", "description", "size").toPandas(),
        "size": size.toPandas(),
        "age": age.toPandas(), "income": income.toPandas(), "gender": gender.toPandas(),
        "channels": channels.toPandas(),
    }


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _stacked(frame: pd.DataFrame, title: str, order: list[str] | None = None) -> str:
    from matplotlib.figure import Figure

    table = frame.pivot_table(index="persona_id", columns="value", values="count", aggfunc="sum", fill_value=0)
    if order:
        table = table[[c for c in order if c in table.columns] + [c for c in table.columns if c not in order]]
    shares = table.div(table.sum(axis=1), axis=0)
    fig = Figure(figsize=(8, 0.5 + 0.45 * len(shares)))
    ax = fig.subplots()
    left = pd.Series(0.0, index=shares.index)
    cmap = __import__("matplotlib").colormaps["tab20"]
    for i, column in enumerate(shares.columns):
        ax.barh(shares.index, shares[column], left=left, label=str(column), color=cmap(i % 20))
        left += shares[column]
    ax.set_xlim(0, 1)
    ax.set_title(title)
    ax.invert_yaxis()
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    ax.xaxis.set_major_formatter(__import__("matplotlib").ticker.PercentFormatter(1.0))
    return _png(fig)


def render_persona_report(frames: dict[str, pd.DataFrame], out: Path) -> Path:
    from matplotlib.figure import Figure

    personas = frames["personas"].merge(frames["size"], on="persona_id", how="left").sort_values("persona_id")
    fig = Figure(figsize=(8, 0.5 + 0.45 * len(personas)))
    ax = fig.subplots()
    ax.barh(personas["persona_id"] + " " + personas["persona_name"], personas["size"], color="#4c72b0")
    ax.invert_yaxis()
    ax.set_title("customers per persona")
    size_png = _png(fig)

    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 4)
    for ax, (column, label) in zip(axes, (("nps", "NPS (last answer)"), ("csat_avg", "CSAT (1–5)"),
                                          ("ces_avg", "CES (1–7, lower better)"), ("sps_avg", "SPS (0–5)"))):
        ax.bar(personas["persona_id"], personas[column].fillna(0), color="#55a868")
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", rotation=60, labelsize=7)
    fig.tight_layout()
    satisfaction_png = _png(fig)

    charts = [
        ("Size", size_png),
        ("Age", _stacked(frames["age"], "age band", ["18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown"])),
        ("Income", _stacked(frames["income"], "income band", ["A", "B1", "B2", "C1", "C2", "DE", "unknown"])),
        ("Gender", _stacked(frames["gender"], "gender")),
        ("Channel mix", _stacked(frames["channels"], "interactions by channel")),
        ("Satisfaction", satisfaction_png),
    ]
    records: Iterable[Any] = personas.itertuples()  # fields named after the columns: pandas-stubs cannot type them
    rows = "".join(
        f"<tr><td>{html.escape(r.persona_id)}</td><td><b>{html.escape(r.persona_name)}</b><br>"
        f"<small>{html.escape(str(r.description or ''))}</small></td><td>{int(r.size or 0):,}</td>"
        f"<td>{(r.consent_share or 0):.0%}</td><td>{(r.interactions_avg or 0):.1f}</td>"
        f"<td>R$ {(r.spend_avg or 0):,.0f}</td></tr>"
        for r in records
    )
    body = "".join(f"<h2>{html.escape(t)}</h2><img src='data:image/png;base64,{png}'>" for t, png in charts)
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>atende — personas</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:top}}
img{{max-width:100%}}</style></head><body>
<h1>Personas</h1>
<p>Customers segmented by gold/persona_segments; traits from gold/customer_profiles. Exports
(<code>atende segments export</code>) contain only customers with marketing consent.</p>
<table><tr><th>id</th><th>persona</th><th>customers</th><th>with consent</th><th>contacts / customer</th>
<th>spend / customer</th></tr>{rows}</table>{body}</body></html>"""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
