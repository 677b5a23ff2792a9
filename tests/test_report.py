"""`atende report kpis`: a headline against the period before, a chart per metric (busiest channels and
"others"), the counts behind every value; read without Spark, and the same through Spark."""
from __future__ import annotations

import datetime as dt
import json
import re

import pyarrow as pa
import pytest

from atende.jobs.gold_query import DuckDbEngine, open_tables
from atende.jobs.report import METRICS, OTHERS, render_kpi_report
from atende.lakehouse.tables import Lakehouse, spark_to_arrow_schema
from atende.pipelines.schemas_gold import SERVICE_KPIS

NOW = dt.datetime(2026, 3, 31, 6, 0, tzinfo=dt.timezone.utc)
LAST = dt.date(2026, 3, 30)


def kpi_row(day: dt.date, channel: str, level: str = "date,channel", value: str | None = None, **metrics) -> tuple:
    counts = {f.name: 0 for f in SERVICE_KPIS.fields if f.dataType.typeName() == "long"}
    fields = {**counts, "date": day, "channel": channel, "grouping_level": level, "dimension_value": value,
              "run_id": "r", "_written_at": NOW, **metrics}
    return tuple(fields.get(f.name) for f in SERVICE_KPIS.fields)


def every_metric(**overrides) -> dict:
    return {
        "interactions": 10, "nps": 50.0, "nps_responses": 2, "csat_pct": 75.0, "csat_avg": 4.25, "csat_responses": 4,
        "ces_avg": 2.0, "ces_responses": 3, "sps_avg": 4.0, "sps_responses": 1, "fcr_rate": 0.8, "fcr_eligible": 10,
        "first_response_seconds_p50": 30.0, "first_response_seconds_p90": 90.0, "first_response_count": 10,
        "bot_containment_rate": 0.5, "handoff_rate": 0.5, "bot_handled": 4, "abandonment_rate": None, "calls": 0,
        "answered_calls": 0, "aht_seconds": 240.0, "aht_count": 6, **overrides,
    }


def table(page: str, metric: str) -> dict[str, list[str]]:
    body = re.search(rf'<table class="summary" data-metric="{metric}">(.*?)</table>', page, re.S).group(1)
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
    return {cells[0]: cells[1:] for cells in rows if cells}


def arrow(rows: list[tuple]) -> pa.Table:
    names = [f.name for f in SERVICE_KPIS.fields]
    return pa.Table.from_pylist([dict(zip(names, row)) for row in rows], schema=spark_to_arrow_schema(SERVICE_KPIS))


ROWS = [
    kpi_row(LAST, "webchat", **every_metric()),
    # the day before: nps 0 over 2 responses, so 25.0 over the 4 responses of both days
    kpi_row(LAST - dt.timedelta(days=1), "webchat", **every_metric(nps=0.0, first_response_seconds_p50=60.0)),
    kpi_row(LAST, "voice", interactions=5, calls=5, answered_calls=4, abandonment_rate=0.2, aht_seconds=300.0,
            aht_count=4, first_response_seconds_p50=20.0, first_response_seconds_p90=50.0, first_response_count=4),
    # no survey answers that day: nulls, which the page must show as missing, not zero
    kpi_row(LAST - dt.timedelta(days=2), "voice", interactions=3, calls=3, abandonment_rate=0.0, answered_calls=3),
    kpi_row(LAST, "unknown", nps=100.0, nps_responses=1),
    # older than the 30 days, and a dimension row: neither belongs on the page
    kpi_row(LAST - dt.timedelta(days=30), "fax", **every_metric()),
    kpi_row(LAST, "webchat", "date,channel,agent_id", "ag-1", **every_metric(nps=-100.0)),
]


def render(tmp_path, rows, **kwargs) -> str:
    out = render_kpi_report(DuckDbEngine({"service_kpis": arrow(rows)}), tmp_path / "kpis.html", **kwargs)
    return out.read_text(encoding="utf-8")


def figures(page: str) -> dict[str, dict]:
    """metric -> the plotly figure the page draws for it."""
    found = re.findall(r'id="chart-(\w+)".*?var f = (\{.*?\}); Plotly\.newPlot', page, re.S)
    return {metric: json.loads(figure) for metric, figure in found}


def headline(page: str) -> dict[str, str]:
    cards = re.findall(r'<div class="card" data-metric="(\w+)">.*?<div class="value">(.*?)</div>'
                       r'<div class="change">(.*?)</div>', page, re.S)
    return {metric: re.sub(r"<[^>]+>", "", f"{value} | {change}") for metric, value, change in cards}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    return render(tmp_path_factory.mktemp("report"), ROWS, days=30)


def test_page_is_one_file_that_needs_no_network(page):
    # nothing fetched: no script, style sheet or image from elsewhere (plotly.js's own text names URLs)
    assert not re.search(r'<(script|link|img|iframe)[^>]*(src|href)="(https?:)?//', page)
    assert page.count("<script") == 1 + len(figures(page))  # plotly.js itself, inline, then one per chart
    assert "Plotly.newPlot" in page and len(page) > 1_000_000, "plotly.js is carried by the page"


def test_page_shows_each_metric_with_title_unit_and_meaning(page):
    for metric in METRICS:
        assert f'<h2 id="{metric.column}">' in page, metric.column
        section = page.split(f'<h2 id="{metric.column}">')[1].split("<h2")[0]
        assert metric.unit.replace("&", "&amp;") in section and metric.meaning.split(";")[0][:40] in section
        assert f'data-metric="{metric.column}"' in section


def test_every_point_carries_its_value_and_the_count_behind_it(page):
    nps = figures(page)["nps"]
    webchat = next(t for t in nps["data"] if t["name"] == "webchat")
    last, before = webchat["x"].index(LAST.isoformat()), webchat["x"].index((LAST - dt.timedelta(days=1)).isoformat())
    assert webchat["y"][last] == 50.0 and webchat["customdata"][last] == 2
    assert webchat["y"][before] == 0.0
    assert "NPS responses" in webchat["hovertemplate"] and "%{customdata" in webchat["hovertemplate"]
    voice_calls = next(t for t in figures(page)["abandonment_rate"]["data"] if t["name"] == "voice")
    assert voice_calls["y"][voice_calls["x"].index(LAST.isoformat())] == 20.0  # a fraction shown as %
    # a day with nothing to measure is a gap, not zero
    assert all(t["name"] != "voice" for t in nps["data"]), "voice had no NPS answers: no line"
    fcr = figures(page)["fcr_rate"]
    assert fcr["layout"]["xaxis"]["range"] == [(LAST - dt.timedelta(days=29)).isoformat(), LAST.isoformat()]


def test_window_is_fitted_to_the_data(tmp_path):
    """Two days of data and --days 30: the page covers the two days, not thirty."""
    page = render(tmp_path, [kpi_row(LAST, "webchat", **every_metric()),
                             kpi_row(LAST - dt.timedelta(days=1), "webchat", **every_metric())], days=30)
    assert "2 days of data" in page
    xaxis = figures(page)["interactions"]["layout"]["xaxis"]
    assert xaxis["range"] == [(LAST - dt.timedelta(days=1)).isoformat(), LAST.isoformat()]
    assert "no previous period to compare" in headline(page)["nps"]


def test_headline_compares_the_period_with_the_one_before(tmp_path):
    """days=2: the last two days against the two before, across channels, weighted by the counts."""
    rows = [
        kpi_row(LAST, "webchat", **every_metric(nps=50.0, nps_responses=2, interactions=10)),
        kpi_row(LAST, "whatsapp", **every_metric(nps=-50.0, nps_responses=2, interactions=30)),
        kpi_row(LAST - dt.timedelta(days=1), "webchat", **every_metric(nps=100.0, nps_responses=4, interactions=20)),
        kpi_row(LAST - dt.timedelta(days=2), "webchat", **every_metric(nps=0.0, nps_responses=8, interactions=25)),
        kpi_row(LAST - dt.timedelta(days=3), "webchat", **every_metric(nps=-100.0, nps_responses=2, interactions=15)),
        kpi_row(LAST - dt.timedelta(days=4), "webchat", **every_metric(nps=-100.0, nps_responses=99)),  # too old
    ]
    cards = headline(render(tmp_path, rows, days=2))
    # now: (50x2 - 50x2 + 100x4) / 8 = 50.0; before: (0x8 - 100x2) / 10 = -20.0
    assert cards["nps"] == "50.0 | +70.0 vs previous 2 days"
    assert cards["interactions"] == "60 | +20 (+50%) vs previous 2 days"
    assert "better" in render(tmp_path, rows, days=2).split('data-metric="nps"')[1].split("</div></div>")[0]


def test_no_comparison_with_a_period_the_data_does_not_cover(tmp_path):
    """days=3 and data from 4 days back: one day of "previous period" is not three."""
    rows = [kpi_row(LAST - dt.timedelta(days=d), "webchat", **every_metric()) for d in range(4)]
    assert "no previous period to compare" in headline(render(tmp_path, rows, days=3))["interactions"]
    rows.append(kpi_row(LAST - dt.timedelta(days=5), "webchat", **every_metric()))
    assert "vs previous 3 days" in headline(render(tmp_path, rows, days=3))["interactions"]


def test_a_channel_keeps_its_colour_and_data_cannot_end_the_script(tmp_path):
    hostile = "</script><script>alert(1)</script>"
    rows = [kpi_row(LAST, "whatsapp", **every_metric(interactions=50)),
            kpi_row(LAST, "voice", **every_metric(interactions=40, nps=None, nps_responses=0)),
            kpi_row(LAST, hostile, **every_metric(interactions=30))]
    page = render(tmp_path, rows)
    colours = [{t["name"]: t["line"]["color"] for t in figures(page)[m]["data"]} for m in ("interactions", "nps")]
    assert "voice" not in colours[1] and colours[0]["whatsapp"] == colours[1]["whatsapp"]
    assert colours[0][hostile] == colours[1][hostile]
    assert hostile not in page and "alert(1)" in page  # escaped: in the tables as text, in the JSON as \u003c


def test_busiest_channels_are_drawn_and_the_rest_is_one_others_line(tmp_path):
    rows = [kpi_row(LAST, channel, **every_metric(interactions=n, nps=float(v), nps_responses=r))
            for channel, n, v, r in (("whatsapp", 50, 10, 1), ("voice", 40, 20, 1), ("email", 3, 100, 1),
                                     ("telegram", 1, -100, 3))]
    page = render(tmp_path, rows, days=30, top_channels=2)
    nps = {t["name"]: t for t in figures(page)["nps"]["data"]}
    assert list(nps) == ["whatsapp", "voice", OTHERS]
    others = nps[OTHERS]
    assert others["y"][-1] == -50.0 and others["customdata"][-1] == 4  # (100x1 - 100x3) / 4 responses
    # percentiles do not combine: no "others" line for them
    assert OTHERS not in {t["name"] for t in figures(page)["first_response_seconds_p50"]["data"]}
    # the tables keep every channel
    assert set(table(page, "nps")) == {"whatsapp", "voice", "email", "telegram"}


def test_spark_reads_the_same_table_into_the_same_page(spark, settings, tmp_path):
    """Past reports.spark_above_rows the same SQL runs on Spark; the page is the same."""
    lake = Lakehouse(spark, tmp_path / "lake", settings.storage)
    lake.write("gold", "service_kpis", spark.createDataFrame(ROWS, SERVICE_KPIS), mode="overwrite")
    on_spark = settings.model_copy(update={"reports": settings.reports.model_copy(update={"spark_above_rows": 0})})
    pages = {}
    for name, chosen in (("duckdb", settings), ("spark", on_spark)):
        with open_tables(chosen, tmp_path / "lake", {"service_kpis": ("gold", "service_kpis")}, spark=spark) as engine:
            assert engine.name == name
            pages[name] = render_kpi_report(engine, tmp_path / f"{name}.html").read_text(encoding="utf-8")
    assert pages["duckdb"] == pages["spark"]


def test_tables_show_the_period_value_and_the_counts_behind_it(page):
    nps = table(page, "nps")
    assert set(nps) == {"unknown", "voice", "webchat"}  # neither the old "fax" day nor the dimension row
    assert nps["webchat"] == ["25.0", "4", "2"]  # (50 x 2 + 0 x 2) / 4 responses, on 2 days
    assert nps["unknown"] == ["100.0", "1", "1"]
    assert nps["voice"] == ["—", "0", "0"]  # no answers: no value, not zero
    assert table(page, "abandonment_rate")["voice"] == ["12.5", "8", "2"]  # (0.2 x 5 + 0 x 3) / 8 calls
    assert table(page, "fcr_rate")["webchat"] == ["80.0", "20", "2"]
    assert table(page, "aht_seconds")["voice"] == ["5.00", "4", "1"]  # 300 s in minutes
    # percentiles do not combine across days: the last day's value
    assert table(page, "first_response_seconds_p50")["webchat"] == ["30.00", "20", "2"]
    assert table(page, "interactions")["voice"] == ["8", "0.3", "2"]  # 8 contacts / 30 days
    assert "fax" not in page


def test_empty_table_gives_a_page_that_says_so(tmp_path):
    page = render(tmp_path, [])
    assert 'id="no-data"' in page and "no service KPI data" in page and "Plotly" not in page


def test_missing_table_is_a_clear_error(settings, tmp_path):
    (tmp_path / "lake").mkdir()
    with pytest.raises(FileNotFoundError, match="no gold/service_kpis table .* run `atende run` first"):
        with open_tables(settings, tmp_path / "lake", {"service_kpis": ("gold", "service_kpis")}):
            pass
    with pytest.raises(FileNotFoundError, match="lakehouse not found"):
        with open_tables(settings, tmp_path / "nowhere", {"service_kpis": ("gold", "service_kpis")}):
            pass
