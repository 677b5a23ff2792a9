"""Both reports open in a real browser (Debian's Chromium, headless; `.ci/run` installs it when missing):
every chart is drawn, the page logs nothing to the console (no script error), and the screenshots it takes
are the README's (`ATENDE_SCREENSHOTS=docs/img pytest tests/test_report_browser.py` refreshes them)."""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from atende.jobs.gold_query import DuckDbEngine
from atende.jobs.report import METRICS, render_kpi_report
from atende.jobs.segments import render_persona_report
from atende.lakehouse.tables import spark_to_arrow_schema
from atende.pipelines.schemas_gold import KPI_BASE_LEVEL, SERVICE_KPIS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs Debian's)")

LAST = dt.date(2026, 3, 28)
CHANNELS = {"whatsapp": 40, "voice": 30, "webchat": 18, "app": 14, "email": 9, "instagram": 5, "telegram": 2}


def kpi_table(days: int = 28, seed: int = 3) -> pa.Table:
    """Four weeks of plausible daily KPIs per channel (seeded), the shape gold/service_kpis has."""
    rng = np.random.default_rng(seed)
    rows = []
    for offset in range(days):
        day = LAST - dt.timedelta(days=days - 1 - offset)
        for channel, volume in CHANNELS.items():
            n = int(rng.poisson(volume))
            responses = int(rng.binomial(n, 0.3))
            calls = n if channel == "voice" else 0
            bot = int(rng.binomial(n, 0.5)) if channel in ("whatsapp", "webchat", "app") else 0
            rows.append({
                "date": day, "channel": channel, "grouping_level": KPI_BASE_LEVEL, "dimension_value": None,
                "interactions": n, "nps": float(rng.normal(30, 25)) if responses else None, "nps_responses": responses,
                "csat_pct": float(rng.uniform(55, 90)) if responses else None,
                "csat_avg": float(rng.uniform(3.2, 4.6)) if responses else None, "csat_responses": responses,
                "ces_avg": float(rng.uniform(1.5, 3.5)) if responses else None, "ces_responses": responses,
                "sps_avg": float(rng.uniform(3, 4.5)) if responses else None, "sps_responses": responses,
                "fcr_rate": float(rng.uniform(0.55, 0.85)) if n else None, "fcr_eligible": n,
                "first_response_seconds_p50": float(rng.uniform(20, 400)) if n else None,
                "first_response_seconds_p90": float(rng.uniform(400, 1800)) if n else None, "first_response_count": n,
                "bot_containment_rate": float(rng.uniform(0.2, 0.6)) if bot else None,
                "handoff_rate": float(rng.uniform(0.3, 0.7)) if bot else None, "bot_handled": bot,
                "abandonment_rate": float(rng.uniform(0.02, 0.15)) if calls else None, "calls": calls,
                "answered_calls": calls, "aht_seconds": float(rng.uniform(180, 420)) if n else None, "aht_count": n,
                "run_id": "r", "_written_at": dt.datetime(2026, 3, 29, tzinfo=dt.timezone.utc),
            })
    schema = spark_to_arrow_schema(SERVICE_KPIS)
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def persona_frames() -> dict[str, pd.DataFrame]:
    personas = pd.DataFrame({
        "persona_id": ["persona-01", "persona-02", "persona-03"],
        "persona_name": ["WhatsApp-first young adults, budget-conscious", "Phone-first seniors, middle income",
                         "App-first adults in their thirties, high income"],
        "description": ["average age 24; contacts mostly by WhatsApp (58%) and app (20%).",
                        "average age 68; contacts mostly by phone (61%) and WhatsApp (22%).",
                        "average age 36; contacts mostly by app (47%) and e-mail (25%)."],
        "size": [420, 310, 270],
    })
    size = pd.DataFrame({"persona_id": personas["persona_id"], "customers": [420, 310, 270],
                         "consent_share": [0.55, 0.62, 0.58], "csat_avg": [4.1, 3.6, 4.4], "ces_avg": [2.2, 3.1, 1.9],
                         "sps_avg": [3.9, 3.5, 4.2], "nps_score_avg": [7.8, 6.9, 8.4], "nps": [22.0, -8.0, 41.0],
                         "interactions_avg": [2.4, 1.8, 1.1], "spend_avg": [180.0, 240.0, 1450.0]})

    def shares(values: dict[str, list[int]]) -> pd.DataFrame:
        return pd.DataFrame([(p, v, n) for v, counts in values.items() for p, n in zip(personas["persona_id"], counts)],
                            columns=["persona_id", "value", "count"])

    traits = pd.DataFrame([(p, t, v) for p, values in (
        ("persona-01", {"age": 24.0, "ch_whatsapp": 0.58, "ch_app": 0.2, "ch_voice": 0.05, "total_spend": 180.0}),
        ("persona-02", {"age": 68.0, "ch_whatsapp": 0.22, "ch_app": 0.03, "ch_voice": 0.61, "total_spend": 240.0}),
        ("persona-03", {"age": 36.0, "ch_whatsapp": 0.12, "ch_app": 0.47, "ch_voice": 0.04, "total_spend": 1450.0}),
    ) for t, v in values.items()], columns=["persona_id", "trait", "value"])
    return {
        "personas": personas, "size": size,
        "age": shares({"18-24": [210, 0, 10], "25-34": [180, 5, 90], "35-44": [20, 15, 150], "65+": [0, 260, 5],
                       "unknown": [10, 30, 15]}),
        "income": shares({"A": [5, 20, 120], "B2": [60, 150, 100], "C2": [300, 120, 40], "unknown": [55, 20, 10]}),
        "gender": shares({"F": [230, 160, 120], "M": [180, 140, 140], "unknown": [10, 10, 10]}),
        "channels": shares({"whatsapp": [580, 120, 35], "app": [200, 15, 140], "voice": [50, 340, 12],
                            "email": [40, 70, 75], "webchat": [130, 10, 35]}),
        "traits": traits,
    }


def chromium(page: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=8000", *flags, page.as_uri()],
        capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("browser")
    return {
        "kpis": render_kpi_report(DuckDbEngine({"service_kpis": kpi_table()}), folder / "kpis.html", days=14),
        "personas": render_persona_report(persona_frames(), folder / "personas.html"),
    }


@pytest.mark.parametrize("report, charts", [("kpis", len(METRICS)), ("personas", 6)])
def test_every_chart_is_drawn_and_nothing_is_logged(pages, report, charts):
    done = chromium(pages[report], "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console[:5]  # a script error would be here ("Uncaught ...")
    drawn = re.findall(r'<div class="chart[^"]*js-plotly-plot[^"]*"', done.stdout)
    assert len(drawn) == charts, f"{len(drawn)} of {charts} charts drawn"
    assert done.stdout.count('class="main-svg"') >= charts


@pytest.mark.parametrize("report", ["kpis", "personas"])
def test_screenshot(pages, report, tmp_path):
    shot = tmp_path / f"{report}-report.png"
    done = chromium(pages[report], f"--screenshot={shot}", "--window-size=1200,1500")
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000  # a page, not a blank
    target = os.environ.get("ATENDE_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, Path(target) / shot.name)
