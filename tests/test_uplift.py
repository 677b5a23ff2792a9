"""`atende report uplift` (jobs/uplift.py) on hand-made tables: who counts, which days, what each outcome is,
and the intervals, all checked against figures worked out by hand. DuckDB over Arrow tables: no Spark."""
from __future__ import annotations

import datetime as dt
import math
import statistics

import pyarrow as pa
import pytest

from atende.jobs.gold_query import DuckDbEngine
from atende.jobs.uplift import OUTCOMES, Z95, NoUpliftPeriod, compute_uplift, render_uplift_page, sentence

UTC = dt.timezone.utc
TS = pa.timestamp("us", tz="UTC")


def at(day: int, hour: int = 15, minute: int = 0) -> dt.datetime:
    """March 2026, UTC (the business clock, America/Sao_Paulo, is three hours behind)."""
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=UTC)


def _table(columns: dict[str, tuple[pa.DataType, list]]) -> pa.Table:
    return pa.table({name: pa.array(values, type) for name, (type, values) in columns.items()})


def tables(runs=None, holdout_of=None):
    treated, held = ["t1", "t2", "t3", "t4"], ["h1", "h2", "h3"]
    keys = treated + held + ["n1"]
    holdout_of = holdout_of or {k: k.startswith("h") for k in keys}
    first_seen = {k: at(2) for k in keys} | {"n1": at(10)}  # n1 arrived during the period: not counted
    runs = runs or [
        ("recommendations", "succeeded", at(8, 4), [dt.date(2026, 3, d) for d in range(1, 8)]),
        ("recommendations", "failed", at(8, 3), [dt.date(2026, 3, d) for d in range(1, 5)]),
        ("recommendations", "succeeded", at(15, 4), [dt.date(2026, 3, d) for d in range(8, 15)]),
        ("ingest", "succeeded", at(1, 4), [dt.date(2026, 2, 28)]),
    ]
    return {
        "recommendations": _table({
            "customer_key": (pa.string(), keys), "holdout": (pa.bool_(), [holdout_of[k] for k in keys]),
            # the end of 14 March on the business clock
            "as_of": (TS, [dt.datetime(2026, 3, 15, 3, tzinfo=UTC)] * len(keys))}),
        "profiles": _table({"customer_key": (pa.string(), keys), "first_seen_at": (TS, [first_seen[k] for k in keys])}),
        "orders": _table({
            "customer_key": (pa.string(), ["t1", "t1", "t2", "h1", "t3", "h2", "t4", "n1"]),
            # h2's order is 23:59 on 14 March in São Paulo (in); t4's 23:59 on 7 March (out); t3's on 7 March (out)
            "ordered_at": (TS, [at(9), at(10), at(12), at(9), at(7), at(15, 2, 59), at(8, 2, 59), at(11)]),
            "amount": (pa.float64(), [100.0, 50.0, 30.0, 20.0, 999.0, 10.0, 999.0, 999.0])}),
        "actions": _table({
            "customer_key": (pa.string(), ["t1", "t2", "h1", "h3"]),
            "sent_at": (TS, [at(9), at(9), at(9), at(5)]),  # h3's answer came before the period
            "responded": (pa.bool_(), [True, False, True, True])}),
        "interactions": _table({
            "customer_key": (pa.string(), ["t1", "t1", "t2", "h1", "h1", "h2"]),
            "started_at": (TS, [at(9), at(10), at(9), at(9), at(13), at(9)]),
            "resolved": (pa.bool_(), [True, True, False, True, False, None])}),
        "responses": _table({
            "customer_key": (pa.string(), ["t1", "t1", "t2", "h1", "t1", "t2", "h1", "h2"]),
            "submitted_at": (TS, [at(9)] * 8),
            "survey": (pa.string(), ["csat", "csat", "csat", "csat", "nps", "nps", "nps", "nps"]),
            "score": (pa.int32(), [5, 3, 4, 2, 10, 5, 8, 9])}),
        "runs": _table({
            "job": (pa.string(), [r[0] for r in runs]), "status": (pa.string(), [r[1] for r in runs]),
            "started_at": (TS, [r[2] for r in runs]), "arrival_dates": (pa.list_(pa.date32()), [r[3] for r in runs])}),
    }


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    diff = statistics.mean(a) - statistics.mean(b)
    half = Z95 * math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    return diff, diff - half, diff + half


def test_treated_against_holdout_over_the_days_after_the_first_recommendations(settings, tmp_path):
    engine = DuckDbEngine(tables())
    uplift = compute_uplift(engine, settings)
    # the first successful recommendations saw data up to 7 March; the current ones up to 14 March
    assert (uplift.start, uplift.end, uplift.days) == (dt.date(2026, 3, 8), dt.date(2026, 3, 14), 7)
    assert (uplift.treated_customers, uplift.holdout_customers) == (4, 3), "n1 arrived during the period"
    got = {c.outcome.column: c for c in uplift.comparisons}
    assert [o.column for o in OUTCOMES] == list(got)

    spend = got["spend"]
    assert (spend.treated_n, spend.holdout_n, spend.treated, spend.holdout) == (4, 3, 45.0, 10.0)
    diff, low, high = _welch([150, 30, 0, 0], [20, 10, 0])
    assert spend.difference == pytest.approx(diff) and spend.interval == pytest.approx((low, high))
    assert (got["converted"].treated, got["converted"].holdout) == pytest.approx((50.0, 200 / 3))
    assert got["converted"].outcome.binary and got["converted"].interval[0] < -50, "two shares of 4 and 3"
    assert (got["responded"].treated, got["responded"].holdout) == pytest.approx((25.0, 100 / 3))
    # resolution counts customers with a contact whose outcome is known; one held-out customer: no interval
    resolution = got["resolution"]
    assert (resolution.treated_n, resolution.holdout_n, resolution.treated, resolution.holdout) == (2, 1, 50.0, 50.0)
    assert resolution.interval is None and "too few customers for an interval" in sentence(resolution)
    assert (got["csat"].treated, got["csat"].holdout, got["csat"].treated_n) == (4.0, 2.0, 2)
    assert (got["nps"].treated, got["nps"].holdout) == (0.0, 50.0)

    page = render_uplift_page(uplift, tmp_path / "uplift.html").read_text()
    assert "4 treated customers and 3 in the global holdout" in page
    assert page.count("class=\"chart\"") == len(OUTCOMES) and "</html>" in page
    assert "too few to tell whether the difference is real" in page and "excludes zero" not in page


def test_the_period_can_be_chosen_and_needs_outcomes(settings):
    engine = DuckDbEngine(tables())
    chosen = compute_uplift(engine, settings, since=dt.date(2026, 3, 10), days=2)
    assert (chosen.start, chosen.end) == (dt.date(2026, 3, 10), dt.date(2026, 3, 11))
    spend = {c.outcome.column: c for c in chosen.comparisons}["spend"]
    assert (spend.treated, spend.holdout) == (12.5, 0.0), "t1's order of 10 March only"
    # one run: its recommendations saw every day the lakehouse holds
    single = tables(runs=[("recommendations", "succeeded", at(15, 4), [dt.date(2026, 3, d) for d in range(1, 15)])])
    with pytest.raises(NoUpliftPeriod, match="made from the data up to 2026-03-14, and the lakehouse holds data "
                                             "up to 2026-03-14. Run `atende run` again"):
        compute_uplift(DuckDbEngine(single), settings)
    older = tables()
    older["recommendations"] = older["recommendations"].drop_columns(["holdout", "as_of"])
    with pytest.raises(NoUpliftPeriod, match="no holdout yet .it was written by an earlier version"):
        compute_uplift(DuckDbEngine(older), settings)
    nobody = tables(holdout_of={k: False for k in ["t1", "t2", "t3", "t4", "h1", "h2", "h3", "n1"]})
    with pytest.raises(NoUpliftPeriod, match="in the holdout"):
        compute_uplift(DuckDbEngine(nobody), settings)


def test_a_clear_difference_is_called_one_and_a_share_near_zero_keeps_its_uncertainty():
    from atende.jobs.uplift import Comparison, wilson

    spend = OUTCOMES[2]
    clear = Comparison(spend, 5000, 100, 48.0, 30.0, 0.5, 2.0)
    assert clear.interval[0] > 0 and "excludes zero: following the recommendations raised it" in sentence(clear)
    assert clear.relative == pytest.approx(0.6)
    even = Comparison(spend, 5000, 100, 31.0, 30.0, 0.5, 2.0)
    assert "cannot be told from chance" in sentence(even)
    # 3 % of 267 treated customers responded, none of 57 held-out ones: the normal interval of the holdout's
    # 0 % has width 0 and would call +3 points certain; Newcombe's does not (Newcombe 1998, method 10)
    responded = OUTCOMES[0]
    assert responded.binary and not spend.binary
    p1, n1, n2 = 8 / 267, 267, 57
    shares = Comparison(responded, n1, n2, 100 * p1, 0.0, 100 * math.sqrt(p1 * (1 - p1) / n1), 0.0)
    low, high = shares.interval
    assert low < 0 < high, "with 57 held-out customers a 3-point difference is not certain"
    l1, u1 = wilson(p1, n1)
    l2, u2 = wilson(0.0, n2)
    assert low == pytest.approx(100 * (p1 - math.sqrt((p1 - l1) ** 2 + u2 ** 2)))
    assert high == pytest.approx(100 * (p1 + math.sqrt((u1 - p1) ** 2)))
    # the Wilson interval of 0 of 57 reaches 6.3 % (a textbook value: 1.96² / (57 + 1.96²))
    assert wilson(0.0, 57) == pytest.approx((0.0, 1.96 ** 2 / (57 + 1.96 ** 2)), abs=1e-4)
