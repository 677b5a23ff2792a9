"""`atende report kpis`: the page shows each metric per channel over the last days, with the counts behind."""
from __future__ import annotations

import base64
import datetime as dt
import re

import pytest

from atende.jobs.report import METRICS, render_kpi_report
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


@pytest.fixture(scope="module")
def page(spark, tmp_path_factory):
    frame = spark.createDataFrame([
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
    ], SERVICE_KPIS)
    out = render_kpi_report(frame, tmp_path_factory.mktemp("report") / "kpis.html", days=30)
    return out.read_text(encoding="utf-8")


def test_page_is_one_file_with_a_chart_per_metric(page):
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(METRICS)
    assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
    assert "<script" not in page and 'src="http' not in page


def test_page_shows_each_metric_with_title_unit_and_meaning(page):
    for metric in METRICS:
        assert f'<h2 id="{metric.column}">' in page, metric.column
        section = page.split(f'<h2 id="{metric.column}">')[1].split("<h2")[0]
        assert metric.unit.replace("&", "&amp;") in section and metric.meaning.split(";")[0][:40] in section
        assert f'data-metric="{metric.column}"' in section


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


def test_empty_table_gives_a_page_that_says_so(spark, tmp_path):
    out = render_kpi_report(spark.createDataFrame([], SERVICE_KPIS), tmp_path / "empty.html")
    page = out.read_text(encoding="utf-8")
    assert 'id="no-data"' in page and "no service KPI data" in page and "<img" not in page
