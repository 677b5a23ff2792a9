"""End to end: a generated landing zone through every job, re-runs, failures and the CLI."""
from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
from deltalake import DeltaTable
from pyspark.sql import functions as F

from atende.jobs.run import RunFailed, Runner, RunSummary
from atende.models.holdout import in_holdout

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CUSTOMERS, DAYS, SEED = 80, 3, 11

# The failure-path runs each rebuild a whole lakehouse (ingest, silver, the models) once more:
# about three minutes apiece on two cores, which would push the default suite past CI's budget.
# Table-level crash safety and the gates' hard failures have their own fast tests
# (test_lakehouse, test_quality); these whole-run versions run with ATENDE_SLOW_TESTS=1.
whole_run_failure_path = pytest.mark.skipif(
    os.environ.get("ATENDE_SLOW_TESTS") != "1",
    reason="whole-run failure path (~3 min on 2 cores); set ATENDE_SLOW_TESTS=1 to run it",
)


def _redeliver_busiest_day(zone):
    """Copy every file of the arrival date with the most bytes into a new date folder after the last
    one, names unchanged: that whole day delivered a second time. Returns (that date, re-delivery date)."""
    from atende.pipelines.schemas import SOURCES

    folders = [d for s in SOURCES if (zone / s).is_dir() for d in (zone / s).iterdir() if d.is_dir()]
    size: dict[str, int] = {}  # bytes of records with ids (CRM and product snapshots are not counted)
    for folder in folders:
        counted = folder.parent.name not in ("crm", "products")
        size[folder.name] = size.get(folder.name, 0) + counted * sum(f.stat().st_size for f in folder.iterdir())
    busiest = max(size, key=size.get)
    again = (dt.date.fromisoformat(max(size)) + dt.timedelta(days=1)).isoformat()
    for folder in folders:
        if folder.name == busiest:
            shutil.copytree(folder, folder.parent / again)
    return dt.date.fromisoformat(busiest), dt.date.fromisoformat(again)


def _craft_identity_changes(zone, days: list[str]) -> None:
    """Survey responses written by hand into the generated zone, so the runs meet what a customer base
    does over days (the daily runs take the third day before the second, see `daily_runs`):
    - first day: a respondent known by e-mail and another known by phone; and a phone seen with two
      e-mail addresses (two partners: within `identity.max_partners_per_identifier`, it links them);
    - third day: one response carrying both the e-mail and the phone: the two respondents are one
      customer (a merge of two existing keys); three more addresses on the shared phone: it is a hub
      (five partners), and what it linked on the first day is split;
    - second day, run late: a response with the respondent's phone and an older address, submitted
      before anything else: the merged customer's earliest identifier is now that address (a backfill)."""
    first, second, third = days[0], days[1], days[2]
    before = (dt.date.fromisoformat(first) - dt.timedelta(days=1)).isoformat()
    header = "response_id,submitted_at,survey,score,contact_id,email,phone,crm_id,comment\n"
    rows = {
        first: [f"R_X1,{first}T10:00:00Z,nps,9,,ana.merge@example.com,,,",
                f"R_X2,{first}T11:00:00Z,nps,8,,,+5511988880001,,",
                f"R_H1,{first}T12:00:00Z,nps,4,,hub.one@example.com,+5511977770000,,",
                f"R_H2,{first}T12:30:00Z,nps,5,,hub.two@example.com,+5511977770000,,"],
        third: [f"R_X3,{third}T09:00:00Z,nps,7,,ana.merge@example.com,+5511988880001,,"]
        + [f"R_H{i},{third}T1{i}:00:00Z,nps,6,,hub.{name}@example.com,+5511977770000,,"
           for i, name in ((3, "three"), (4, "four"), (5, "five"))],
        second: [f"R_X4,{before}T08:00:00Z,nps,10,,ana.old@example.com,+5511988880001,,"],
    }
    for day, lines in rows.items():
        folder = zone / "surveys" / day
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "part-crafted.csv").write_text(header + "\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """The generated landing zone, the hand-written identity changes, and its busiest day delivered
    again after the last one."""
    from atende.synthetic.generate import generate_landing_zone

    out = tmp_path_factory.mktemp("landing") / "zone"
    generate_landing_zone(out, CUSTOMERS, DAYS, SEED, workers=1)
    days = sorted({d.name for s in out.iterdir() if not s.name.startswith("_") for d in s.iterdir() if d.is_dir()})
    _craft_identity_changes(out, days)
    return out, _redeliver_busiest_day(out)


@pytest.fixture(scope="module")
def landing(generated):
    return generated[0]


@pytest.fixture(scope="module")
def redelivery(generated):
    """(the re-delivered arrival date, the date it was delivered again)."""
    return generated[1]


def _engine(settings, engine: str):
    return settings.model_copy(update={"storage": settings.storage.model_copy(update={"engine": engine})})


@dataclass
class Lake:
    """A lakehouse the module's runs built, and how."""
    settings: Any
    runner: Runner  # the last run's
    summaries: list[RunSummary]
    lake_dir: Any
    counts_before_rerun: dict[str, int] = field(default_factory=dict)
    # (layer, table) -> the table's version after the last incremental run, before the rerun of the first date
    versions_before_rerun: dict[tuple[str, str], int] = field(default_factory=dict)

    @property
    def arrival_dates(self) -> list[dt.date]:
        return sorted({d for s in self.summaries for d in s.arrival_dates})


@pytest.fixture(scope="module")
def full_run(spark, settings, landing, tmp_path_factory) -> Lake:
    """One run over every arrival date (`atende run --full-refresh`), delta-spark engine; it trains the models."""
    lake_dir = tmp_path_factory.mktemp("full") / "lakehouse"
    engine_settings = _engine(settings, "delta-spark")
    runner = Runner(spark, engine_settings, landing, lake_dir)
    summary = runner.run(full_refresh=True)
    assert summary.engine == "delta-spark"
    return Lake(engine_settings, runner, [summary], lake_dir)


@pytest.fixture(scope="module")
def daily_runs(spark, settings, landing, full_run, tmp_path_factory) -> Lake:
    """The same zone as files really arrive, delta-rs engine: the first day; the third; then the second
    (late: older than the newest processed date) with everything else in one run, the re-delivered
    day among it; then the first day run again. It scores with the full run's registered models
    (`models.retrain: never` on the same MLflow store): models trained on other data would score
    differently, which is not what the comparison is about."""
    from atende.jobs.tracking import tracking_uri

    lake_dir = tmp_path_factory.mktemp("daily") / "lakehouse"
    engine_settings = _engine(settings, "delta-rs").model_copy(update={
        "mlflow": settings.mlflow.model_copy(update={"tracking_uri": tracking_uri(settings, full_run.lake_dir)}),
        "models": settings.models.model_copy(update={"retrain": "never"}),
        # the comparison is of the incremental path, which the default (0) never takes: allowed up to 99 %, so the
        # share is counted as a user's setting has it (the two incremental runs deliver about 17 % and 39 % of the
        # records silver is built from, the re-delivered day counted again)
        "silver": settings.silver.model_copy(update={"incremental_max_share": 0.99}),
    })
    first, _, third = full_run.summaries[0].arrival_dates[:3]
    summaries = []
    for day in (first, third, None):  # None: the second day (late) and the rest, the re-delivery among them
        runner = Runner(spark, engine_settings, landing, lake_dir)
        summaries.append(runner.run(date=day))
        assert summaries[-1].engine == "delta-rs"
    counts = runner.table_rows()
    versions = {(layer, table): runner.lake.version(layer, table) for layer, table in runner.lake.tables()
                if layer == "silver"}
    runner = Runner(spark, engine_settings, landing, lake_dir)
    summaries.append(runner.run(date=first))
    return Lake(engine_settings, runner, summaries, lake_dir, counts, versions)


@pytest.fixture(params=["full", "daily"])
def lake(request) -> Lake:
    """Every test taking this fixture runs on both lakehouses (built once each: module-scoped fixtures; this one is
    per test, so that no module-scoped parametrised fixture is torn down and rebuilt as tests are ordered)."""
    return request.getfixturevalue({"full": "full_run", "daily": "daily_runs"}[request.param])


def counts(runner):
    return runner.table_rows()


# written-by columns: which run, when (a recommendation is valid from the run that made it)
RUN_COLUMNS = ("run_id", "_written_at", "_ingested_at", "valid_from", "valid_until")


def _rows(df):
    """The rows without their written-by columns; maps as sorted entries (set operations refuse maps)."""
    from pyspark.sql.types import MapType

    kept = [f for f in df.schema.fields if f.name not in RUN_COLUMNS]
    return df.select(*[
        F.array_sort(F.map_entries(f.name)).alias(f.name) if isinstance(f.dataType, MapType) else F.col(f.name)
        for f in kept
    ])


def _differences(a, b, limit: int = 3) -> str | None:
    a, b = _rows(a), _rows(b)
    if sorted(a.columns) != sorted(b.columns):
        return f"columns differ: {a.columns} vs {b.columns}"
    b = b.select(*a.columns)
    only_a, only_b = a.exceptAll(b), b.exceptAll(a)
    n_a, n_b = only_a.count(), only_b.count()
    if n_a == n_b == 0:
        return None
    return (f"{a.count()} vs {b.count()} rows; {n_a} only in the full run, e.g. "
            f"{[r.asDict() for r in only_a.limit(limit).collect()]}; {n_b} only in the daily runs, e.g. "
            f"{[r.asDict() for r in only_b.limit(limit).collect()]}")


def _differing_tables(full, daily, tables, versions=None) -> str:
    """The tables (`layer, table`) whose rows differ between the full run's lakehouse and the daily runs'
    (read at `versions[(layer, table)]` when given), each with what differs; empty when none does."""
    differing = {}
    for layer, table in tables:
        version = None if versions is None else versions[(layer, table)]
        found = _differences(full.read(layer, table), daily.read(layer, table, version=version))
        if found:
            differing[f"{layer}.{table}"] = found
    return "\n".join(f"{name}: {why}" for name, why in differing.items())


def test_daily_runs_write_the_same_tables_as_one_full_run(full_run, daily_runs):
    """Issue 15, item 3: run by run (a late date, a re-delivered day, a date run twice, keys merged and
    split across days) the lakehouse ends where one run over the same days ends: every bronze, silver
    and gold table holds the same rows, apart from the columns saying which run wrote them. On two
    storage engines, so a table's contents never depend on the engine either. `silver.identity_merges`
    records what the daily runs changed on the way, so it differs by design (see its own test)."""
    assert daily_runs.arrival_dates == full_run.arrival_dates
    # the first daily run builds silver; the next two rebuild only what their records touch; the first day
    # ingested again replaces bronze rows, which sends silver back to a whole build
    assert [s.silver_incremental for s in daily_runs.summaries] == [False, True, True, False]
    assert not full_run.summaries[0].silver_incremental
    full, daily = full_run.runner.lake, daily_runs.runner.lake
    tables = [t for t in full.tables() if t[0] in ("bronze", "silver", "gold") and t != ("silver", "identity_merges")]
    assert set(tables) <= set(daily.tables())
    assert ("silver", "interactions") in tables and ("gold", "recommendations") in tables
    differing = _differing_tables(full, daily, tables)
    assert not differing, differing


def test_incremental_silver_ends_where_one_full_run_ends(full_run, daily_runs):
    """The comparison above ends on a whole rebuild (the first date ingested again sends silver back to one),
    so it alone would not see an incremental step go wrong on the way. Here silver as the last incremental
    run left it (the late second day, the re-delivery and the rest merged into the rows of the first and
    third days) holds the same rows as the full run's: bronze is the same by then."""
    assert daily_runs.summaries[2].silver_incremental
    versions = daily_runs.versions_before_rerun
    assert ("silver", "interactions") in versions
    # identity_merges: what the daily runs changed on the way, differs by design
    tables = sorted(t for t in versions if t != ("silver", "identity_merges"))
    differing = _differing_tables(full_run.runner.lake, daily_runs.runner.lake, tables, versions)
    assert not differing, differing


# The Spark jobs each step of the module's runs may submit, like the small zone's budgets
# (tests/test_small_zone.py): the full run (delta-spark, every model trained) and each of the four daily runs
# (delta-rs, scoring with the full run's models), run by run in the fixture's order. A run's time on this zone is
# mostly its jobs' fixed cost. Measured on 2026-12-07 (tree after e913722), silver again on 2026-12-08 (identity
# resolved on the driver, after d743536); each budget is that count and a tenth more (at least 5). Lower them when a
# change removes jobs.
E2E_SPARK_JOBS_MEASURED: dict[str, list[dict[str, int]]] = {
    "full": [{"ingest": 115, "silver": 140, "features": 51, "personas": 14, "gold": 44, "recommendations": 302}],
    "daily": [  # the first day (silver whole), the third, the late second day and the rest (both incremental),
                # the first day again (bronze rows replaced: silver whole)
        {"ingest": 76, "silver": 84, "features": 29, "personas": 5, "gold": 22, "recommendations": 90},
        {"ingest": 87, "silver": 175, "features": 30, "personas": 5, "gold": 22, "recommendations": 114},
        {"ingest": 97, "silver": 182, "features": 30, "personas": 5, "gold": 22, "recommendations": 111},
        {"ingest": 90, "silver": 86, "features": 30, "personas": 5, "gold": 22, "recommendations": 68},
    ],
}


def _budget(measured: dict[str, int]) -> dict[str, int]:
    return {step: n + max(5, n // 10) for step, n in measured.items()}


def test_each_runs_steps_stay_within_their_spark_job_budgets(full_run, daily_runs):
    """Issue 15, item 3: a change that adds Spark jobs to a step of the full run or of a daily run (an
    incremental one among them) fails here, naming the run, the step and by how many."""
    counted = {
        "full": [{j.job: j.spark_jobs for j in s.jobs} for s in full_run.summaries],
        "daily": [{j.job: j.spark_jobs for j in s.jobs} for s in daily_runs.summaries],
    }
    over = {}
    for kind, runs in counted.items():
        measured = E2E_SPARK_JOBS_MEASURED[kind]
        assert len(runs) == len(measured), counted
        for i, (steps, base) in enumerate(zip(runs, measured, strict=True)):
            assert set(steps) == set(base) and all(n and n > 0 for n in steps.values()), (kind, i, steps)
            budget = _budget(base)
            over.update({f"{kind} run {i + 1} {step}": f"{n} > {budget[step]}"
                         for step, n in steps.items() if n > budget[step]})
    assert not over, f"Spark jobs over budget: {over} (bench/bench_jobs.py names the call sites)"


def test_run_writes_every_contract_table(lake):
    summary = lake.summaries[-1]
    assert len(lake.arrival_dates) >= DAYS
    for run in lake.summaries:
        assert [j.job for j in run.jobs] == ["ingest", "silver", "features", "personas", "gold", "recommendations"]
        assert all(j.status == "succeeded" for j in run.jobs), [(j.job, j.status, j.error) for j in run.jobs]
    for name in ("conversations", "whatsapp", "email", "calls", "surveys", "crm", "orders", "products", "actions",
                 "quarantine"):
        assert f"bronze.{name}" in summary.table_rows
    for name in ("silver.interactions", "silver.survey_responses", "silver.identity_map", "silver.crm",
                 "silver.record_keys", "silver.orders", "gold.customer_profiles", "gold.service_kpis", "ops.runs"):
        assert summary.table_rows.get(name, 0) > 0, name
    # each table opens with the deltalake package, as any Delta reader would
    table = DeltaTable(str(lake.lake_dir / "gold" / "customer_profiles"))
    assert table.to_pyarrow_table().num_rows == summary.table_rows["gold.customer_profiles"]


def test_train_computes_the_profiles_run_wrote(spark, landing, full_run):
    """`atende train` re-scores gold through the same job as `atende run`, from silver alone: on the same
    lakehouse it writes the same profiles (orders and spend included), row for row."""
    from pyspark.testing import assertDataFrameEqual

    from atende.jobs.bookkeeping import JobRecord, utc_now

    written = full_run.runner.lake.read("gold", "customer_profiles").drop("run_id", "_written_at").cache()
    assert written.where(F.col("orders_count") > 0).count() > 0
    trainer = Runner(spark, full_run.settings, landing, full_run.lake_dir)
    trainer.gold(JobRecord(job="gold", started_at=utc_now()))
    again = trainer.lake.read("gold", "customer_profiles").drop("run_id", "_written_at")
    assertDataFrameEqual(again, written, checkRowOrder=False)
    written.unpersist()


def test_evaluate_judges_the_champions_and_logs_the_figures(daily_runs, tmp_path):
    """`atende evaluate` over the daily lakehouse (several runs: the holdout has days after the first
    recommendations): every champion found, the personas refitted and compared, the page written, and one
    MLflow run holding the figures, its id on each champion version."""
    from mlflow import MlflowClient

    from atende.jobs.evaluate import evaluate, log_evaluation, render_evaluation_page

    store = daily_runs.runner.lake
    ev = evaluate(store, daily_runs.settings, refits=2)
    assert all(ev.versions[part] for part in ("personas", "tone", "products", "next_best_action")), ev.versions
    assert ev.stability is not None or "could not be refitted" in (ev.stability_note or "")
    assert ev.personas is not None and int(ev.personas["customers"].sum()) == store.read("gold", "persona_segments").count()
    assert "total_spend" in ev.separation and 0.0 <= ev.separation["total_spend"] <= 1.0
    if ev.uplift is not None:  # held-out customers among the 80: the days after the first day processed
        first = min(daily_runs.summaries[0].arrival_dates)
        assert ev.uplift.start == first + dt.timedelta(days=1) and ev.uplift.treated_customers > 0
    else:
        assert "in the holdout" in (ev.uplift_note or ""), ev.uplift_note
    if ev.tone_experiment:  # rolling origin: consecutive windows, each after its model's training contacts
        span = dt.timedelta(days=daily_runs.settings.models.tone.evaluation_days)  # the last one ends past the last contact
        assert ev.tone_windows and all(end - start in (span, span + dt.timedelta(microseconds=1))
                                       for start, end in ev.tone_windows), ev.tone_windows
        assert all(a[1] == b[0] for a, b in zip(ev.tone_windows, ev.tone_windows[1:])), ev.tone_windows
    else:
        assert ev.tone_experiment_note, "no experiment and no reason"
    page = render_evaluation_page(ev, tmp_path / "evaluation.html")
    assert "id=\"personas\"" in page.read_text() and "id=\"uplift\"" in page.read_text()
    run_id = log_evaluation(ev, page)
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags["atende.kind"] == "evaluation"
    assert run.data.metrics == pytest.approx(ev.metrics()) and ev.metrics()
    assert client.get_model_version("atende-personas", ev.versions["personas"]).tags["atende.evaluation_run"] == run_id


def test_personas_and_recommendations_match_the_contract(lake, settings):
    from atende.pipelines.schemas_gold import PERSONA_SEGMENTS, PERSONAS, RECOMMENDATIONS

    store = lake.runner.lake
    profiles = store.read("gold", "customer_profiles")
    customers = profiles.count()
    segments = store.read("gold", "persona_segments")
    assert [f.name for f in segments.schema.fields] == [f.name for f in PERSONA_SEGMENTS.fields]
    assert segments.count() == segments.select("customer_key").distinct().count()
    personas = store.read("gold", "personas")
    assert [f.name for f in personas.schema.fields] == [f.name for f in PERSONAS.fields]
    assert personas.count() >= settings.models.personas.k_min
    assert profiles.where(F.col("persona_id").isNull()).count() == 0, "every profile carries its persona"

    recs = store.read("gold", "recommendations")
    assert [(f.name, f.dataType) for f in recs.schema.fields] == [(f.name, f.dataType) for f in RECOMMENDATIONS.fields]
    assert recs.count() == recs.select("customer_key").distinct().count() == customers
    assert recs.where(F.col("tone").isNull() | F.col("next_best_action").isNull()).count() == 0
    assert recs.where(F.size("reasons") == 0).count() == 0
    versions = recs.select("model_versions").first()[0]
    assert set(versions) == {"personas", "tone", "products", "next_best_action"}
    # the global holdout: exactly the customers the documented rule picks, each with the baseline
    hold = settings.models.holdout
    flags = {r["customer_key"]: r["holdout"] for r in recs.select("customer_key", "holdout").collect()}
    assert flags == {k: in_holdout(k, hold.share, hold.salt) for k in flags}
    baseline = recs.where("holdout").where(
        (F.col("next_best_action") != hold.baseline_action) | (F.col("model_versions")["tone"] != "holdout"))
    assert baseline.count() == 0
    assert recs.where(~F.col("holdout") & (F.col("model_versions")["tone"] == "holdout")).count() == 0
    marketing = [a for a, spec in settings.models.nba.actions.items() if spec.kind == "marketing"]
    offers_without_consent = recs.join(profiles.select("customer_key", "marketing_consent"), "customer_key").where(
        F.col("next_best_action").isin(*marketing) & ~F.coalesce(F.col("marketing_consent"), F.lit(False)))
    assert offers_without_consent.count() == 0
    # nor products (pipelines/consent.py: product offers are marketing)
    products_without_consent = recs.join(profiles.select("customer_key", "marketing_consent"), "customer_key").where(
        (F.size("products") > 0) & ~F.coalesce(F.col("marketing_consent"), F.lit(False)))
    assert products_without_consent.count() == 0
    assert recs.where(F.size("products") > 0).count() > 0


def test_nothing_lost_per_file(lake):
    store = lake.runner.lake
    recon = store.read("ops", "file_reconciliation")
    assert recon.count() > 0
    assert recon.where(F.col("records") != F.col("accepted") + F.col("quarantined")).count() == 0
    totals = recon.agg(F.sum("accepted").alias("a"), F.sum("quarantined").alias("q")).first()
    bronze_rows = sum(
        store.read("bronze", s).count()
        for s in ("conversations", "whatsapp", "email", "calls", "surveys", "crm", "orders", "products", "actions")
    )
    assert bronze_rows == totals["a"]
    assert store.read("bronze", "quarantine").count() == totals["q"]
    assert totals["q"] > 0, "the generator plants malformed records; some must be quarantined"


def test_a_redelivered_day_adds_bronze_rows_but_no_silver_rows(lake, redelivery):
    """A day's files arrive again later: bronze keeps both deliveries (records as they arrived),
    silver keeps one row per record, dated by its first delivery."""
    day, again = redelivery
    store = lake.runner.lake
    assert day < again and again in lake.arrival_dates
    delivered_twice = 0
    for source in ("conversations", "whatsapp", "email", "calls", "surveys", "orders", "actions"):
        bronze = store.read("bronze", source)
        on_that_day = bronze.where(F.col("_arrival_date") == day).count()
        assert bronze.where(F.col("_arrival_date") == again).count() == on_that_day, source
        delivered_twice += on_that_day
    assert delivered_twice >= 20, "the re-delivered day must carry records for the test to mean anything"
    quarantine = store.read("bronze", "quarantine")
    assert quarantine.where(F.col("_arrival_date") == again).count() == \
        quarantine.where(F.col("_arrival_date") == day).count()
    for table in ("interactions", "survey_responses", "orders", "actions"):
        silver = store.read("silver", table)
        assert silver.where(F.col("_arrival_date") == again).count() == 0, table
    assert store.read("silver", "interactions").where(F.col("_arrival_date") == day).count() > 0
    # every WhatsApp message is counted once in its conversation, however often it was delivered
    messages = store.read("bronze", "whatsapp").select(F.explode("messages").alias("m")).where(
        F.col("m.sent_at").isNotNull() & F.col("m.wa_id").isNotNull()
        & (F.coalesce(F.col("m.type"), F.lit("text")) == "text")
    ).select("m.message_id")
    in_silver = store.read("silver", "interactions").where(F.col("channel") == "whatsapp").agg(
        F.sum("message_count")).first()[0]
    assert in_silver == messages.distinct().count()


def test_run_again_processes_nothing_new(spark, landing, lake):
    again = Runner(spark, lake.settings, landing, lake.lake_dir).run()
    assert again.nothing_to_do


def test_a_file_landing_in_a_processed_date_is_named_not_silently_skipped(spark, landing, full_run, tmp_path):
    """A plain run reads only dates not processed yet; a file that lands in a processed date's folder later
    (a catalogue re-sent, a late export) waits for `--date`, and the run says so instead of skipping it."""
    late_landing = tmp_path / "landing"
    shutil.copytree(landing, late_landing)  # folder times kept (copystat)
    first = full_run.arrival_dates[0].isoformat()
    folder = late_landing / "products" / first
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "late.csv").write_text("product_id,name,category,price,active\nSKU-LATE,Late item,misc,1.0,true\n")
    lines: list[str] = []
    summary = Runner(spark, full_run.settings, late_landing, full_run.lake_dir, progress=lines.append).run()
    assert summary.nothing_to_do
    [warning] = [line for line in lines if line.startswith("warning:")]
    assert f"products/{first}" in warning and f"atende run --date {first}" in warning
    assert not [line for line in lines if "calls/" in line or "orders/" in line], "the untouched folders are not late"


def test_a_full_refresh_takes_every_date_processed_or_not(spark, settings, landing, full_run, tmp_path, monkeypatch):
    """`--full-refresh` re-ingests every arrival date of the zone, those already processed included, and
    runs every job; it takes no --date."""
    ran = []
    monkeypatch.setattr(Runner, "_job", lambda self, summary, name, body: ran.append(name))
    refresh = Runner(spark, full_run.settings, landing, full_run.lake_dir)
    assert refresh.run().nothing_to_do
    summary = refresh.run(full_refresh=True)
    assert summary.arrival_dates == full_run.arrival_dates and not summary.nothing_to_do
    assert ran == ["ingest", "silver", "features", "personas", "gold", "recommendations"]
    with pytest.raises(RunFailed, match="full refresh takes every arrival date"):
        refresh.run(date=full_run.arrival_dates[0], full_refresh=True)
    both = _atende("run", "--landing", str(landing), "--lakehouse", str(tmp_path), "--full-refresh",
                   "--date", "2026-03-01")
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_rerunning_a_date_changes_no_counts(daily_runs):
    """The daily runs end by running their first date again: no table gains or loses a row, and every
    identifier keeps its key."""
    store = daily_runs.runner.lake
    after = counts(daily_runs.runner)
    for name, n in daily_runs.counts_before_rerun.items():
        if name.startswith(("bronze.", "silver.", "gold.")) and name != "silver.identity_merges":
            assert after[name] == n, name
    version = store.version("silver", "identity_map")
    keys_before = {(r["identifier_type"], r["identifier"]): r["customer_key"]
                   for r in store.read("silver", "identity_map", version=version - 1).collect()}
    keys_after = {(r["identifier_type"], r["identifier"]): r["customer_key"]
                  for r in store.read("silver", "identity_map").collect()}
    assert keys_before == keys_after


def test_keys_merge_split_and_follow_the_earliest_identifier_across_days(full_run, daily_runs):
    """The hand-written responses (`_craft_identity_changes`): in both lakehouses the e-mail and both phones
    of the merged respondent and the address of the late response share one key, derived from the
    identifier seen first (that address); the hub phone links nobody, so its first-day partners hold keys of their own.
    The daily runs record each change of key in silver.identity_merges."""
    from atende.pipelines.identity import derived_key

    def key_of(store, identifier_type, identifier):
        rows = store.read("silver", "identity_map").where(
            (F.col("identifier_type") == identifier_type) & (F.col("identifier") == identifier)
        ).collect()
        assert len(rows) == 1, (identifier_type, identifier, rows)
        return rows[0]["customer_key"]

    spark = full_run.runner.spark
    expected = spark.range(1).select(derived_key(F.lit("email"), F.lit("ana.old@example.com"))).first()[0]
    for store in (full_run.runner.lake, daily_runs.runner.lake):
        merged = {key_of(store, "email", "ana.merge@example.com"), key_of(store, "phone", "+5511988880001"),
                  key_of(store, "email", "ana.old@example.com")}
        assert merged == {expected}
        one, two = key_of(store, "email", "hub.one@example.com"), key_of(store, "email", "hub.two@example.com")
        assert one != two
    def derived(identifier_type, identifier):
        return spark.range(1).select(derived_key(F.lit(identifier_type), F.lit(identifier))).first()[0]

    changes = {(r["retired_key"], r["surviving_key"], r["kind"])
               for r in daily_runs.runner.lake.read("silver", "identity_merges").collect()}
    ana, ana_phone = derived("email", "ana.merge@example.com"), derived("phone", "+5511988880001")
    hub_one = derived("email", "hub.one@example.com")
    assert (ana_phone, ana, "merge") in changes, "day 3 joins the two first-day respondents"
    assert (ana, expected, "merge") in changes, "day 2, late, moves them to its older address"
    assert (hub_one, derived("email", "hub.two@example.com"), "split") in changes, "the hub parts its partners"
    assert (hub_one, derived("phone", "+5511977770000"), "split") in changes
    assert not full_run.runner.lake.read("silver", "identity_merges").count(), "one run changes no key"


@whole_run_failure_path
def test_failed_job_leaves_tables_at_last_version_and_rerun_completes(spark, settings, landing, tmp_path, monkeypatch):
    lake_dir = tmp_path / "lakehouse"
    import atende.pipelines.kpis as kpis

    original = kpis.build_service_kpis

    def broken(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(kpis, "build_service_kpis", broken)
    failing = Runner(spark, settings, landing, lake_dir)
    with pytest.raises(RunFailed, match="job gold failed: disk full"):
        failing.run()
    runs = failing.lake.read("ops", "runs")
    assert runs.where("job = 'gold' AND status = 'failed'").count() == 1
    assert runs.where("job = 'run'").first()["status"] == "failed"
    assert not failing.lake.exists("ops", "processed_dates")
    assert not failing.lake.exists("gold", "service_kpis")
    monkeypatch.setattr(kpis, "build_service_kpis", original)
    rerun = Runner(spark, settings, landing, lake_dir)
    completed = rerun.run()
    assert not completed.nothing_to_do and completed.table_rows["gold.service_kpis"] > 0
    assert completed.arrival_dates == sorted(completed.arrival_dates) and len(completed.arrival_dates) >= DAYS
    statuses = [r["status"] for r in rerun.lake.read("ops", "runs").where("job = 'run'").orderBy("started_at").collect()]
    assert statuses == ["failed", "succeeded"]


def _atende(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "atende.jobs.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_cli_fails_fast_with_one_line_reasons(tmp_path):
    missing = _atende("run", "--landing", str(tmp_path / "nowhere"), "--lakehouse", str(tmp_path / "lake"))
    assert missing.returncode == 1
    assert "landing zone not found" in missing.stderr.strip().splitlines()[-1]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kpis:\n  fcr_window_dayz: 3\n")
    conf = _atende("--conf", str(bad), "run", "--landing", str(tmp_path), "--lakehouse", str(tmp_path / "lake"))
    assert conf.returncode == 2 and "unknown key 'kpis.fcr_window_dayz'" in conf.stderr
    date = _atende("run", "--landing", str(tmp_path), "--lakehouse", str(tmp_path / "l"), "--date", "2026-13-01")
    assert date.returncode == 2 and "not a date" in date.stderr
    # --step: what a step cannot take is refused before Spark starts
    no_landing = _atende("run", "--lakehouse", str(tmp_path / "l"))
    assert no_landing.returncode == 1 and "--landing is needed to ingest" in no_landing.stderr
    misplaced = _atende("run", "--lakehouse", str(tmp_path / "l"), "--step", "silver", "--date", "2026-03-01")
    assert misplaced.returncode == 1 and "choose what the ingest step reads" in misplaced.stderr


@whole_run_failure_path
def test_hard_quality_gate_stops_the_run_before_silver_is_written(spark, settings, landing, tmp_path, monkeypatch):
    import atende.pipelines.interactions as interactions

    original = interactions.build_interactions

    def doubled(*args, **kwargs):
        frame = original(*args, **kwargs)
        return frame.unionByName(frame)  # every interaction_id twice: a hard failure

    monkeypatch.setattr(interactions, "build_interactions", doubled)
    runner = Runner(spark, settings, landing, tmp_path / "lakehouse")
    with pytest.raises(RunFailed, match=r"job silver failed: quality gate failed.*silver\.interactions"):
        runner.run()
    assert runner.lake.exists("bronze", "calls"), "ingest had passed its gates and committed"
    assert not runner.lake.exists("silver", "interactions")
    assert not runner.lake.exists("ops", "processed_dates")
    docs = list((tmp_path / "lakehouse" / "_quality" / runner.run_id).rglob("index.html"))
    assert docs, "validation results are kept as Data Docs"


def test_small_inputs_run_without_code_generation_and_the_session_gets_its_settings_back(spark, settings, tmp_path):
    """`spark.whole_stage_codegen` and `spark.expression_codegen` at `auto` turn code generation off (whole-stage,
    and per expression: interpreted projections and filters) while the landing files of the run plus the bronze
    tables hold at most `spark.small_input_mb`, on above it; `on`/`off` force each; the session's own settings
    come back."""
    stage, factory = "spark.sql.codegen.wholeStage", "spark.sql.codegen.factoryMode"
    saved = {key: spark.conf.get(key, None) for key in (stage, factory)}
    spark.conf.set(stage, "true")
    spark.conf.unset(factory)
    lake = tmp_path / "lakehouse"
    (lake / "bronze" / "calls").mkdir(parents=True)
    (lake / "bronze" / "calls" / "part-0.parquet").write_bytes(b"x" * 600_000)
    runner = Runner(spark, settings, tmp_path, lake)
    assert runner.lake.stored_bytes("bronze") == 600_000 and runner.lake.stored_bytes("gold") == 0
    previous = runner._size_codegen(400_000)
    assert (spark.conf.get(stage), spark.conf.get(factory)) == ("false", "NO_CODEGEN")
    # interpreted expressions give the same rows
    frame = spark.createDataFrame([("Ana", 3), ("BIA", None)], "name string, n int")
    assert frame.select(F.lower("name").alias("l"), F.coalesce("n", F.lit(0)).alias("n")).filter("n >= 0") \
        .orderBy("l").collect() == [("ana", 3), ("bia", 0)]
    runner._restore_codegen(previous)
    assert spark.conf.get(stage) == "true" and spark.conf.get(factory, None) is None
    one_mb = settings.model_copy(update={"spark": settings.spark.model_copy(update={"small_input_mb": 1})})
    over = Runner(spark, one_mb, tmp_path, lake)  # 600,000 + 500,000 bytes > 1 MiB
    spark.conf.set(stage, "false")
    assert over._size_codegen(500_000) == {stage: "false", factory: None}
    assert (spark.conf.get(stage), spark.conf.get(factory)) == ("true", "FALLBACK")
    forced = Runner(spark, settings.model_copy(update={"spark": settings.spark.model_copy(
        update={"whole_stage_codegen": "on", "expression_codegen": "off"})}), tmp_path, lake)
    forced._size_codegen(0)
    assert (spark.conf.get(stage), spark.conf.get(factory)) == ("true", "NO_CODEGEN")
    runner._restore_codegen(saved)  # the session's own settings, for the tests after this one


def test_the_jvm_speaks_to_a_log_file_not_the_terminal(spark, settings, tmp_path):
    """Ivy's resolution, log4j's banner and the JDK's warnings go to the run's log,
    <lakehouse>/_logs/<run_id>.log (issue #19); so does what Delta prints on the JVM's stdout (VACUUM's
    "Deleted N files and directories")."""
    from atende.lakehouse.tables import DeltaSparkEngine, Lakehouse

    landing = tmp_path / "landing"
    (landing / "calls").mkdir(parents=True)
    done = _atende("run", "--landing", str(landing), "--lakehouse", str(tmp_path / "lake"))
    assert done.returncode == 0, done.stderr
    assert "nothing new to process" in done.stdout
    for jvm_line in ("log4j", "incubator", ":: resolving dependencies", "Ivy"):
        assert jvm_line not in done.stderr + done.stdout, jvm_line
    [log] = (tmp_path / "lake" / "_logs").glob("*.log")
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}\.log", log.name), log.name
    assert "log4j" in log.read_text()
    lake = Lakehouse(spark, tmp_path / "vac", settings.storage, engine=DeltaSparkEngine(spark, settings.storage))
    lake.write("gold", "t", spark.createDataFrame([(1,)], "a int"))
    vacuum = _atende("maintain", "vacuum", "--lakehouse", str(tmp_path / "vac"))
    assert vacuum.returncode == 0, vacuum.stderr
    assert "gold.t" in vacuum.stdout and "Deleted" not in vacuum.stdout + vacuum.stderr, vacuum.stdout
    assert any("Deleted" in f.read_text() for f in (tmp_path / "vac" / "_logs").glob("*.log"))


def test_tables_written_together_commit_alone_and_the_first_failure_is_raised(spark, settings, tmp_path):
    """Runner._write_all: every write runs to its end; a failed one leaves its table at its last version."""
    from atende.jobs.bookkeeping import JobRecord, utc_now
    from atende.lakehouse.tables import LakehouseError

    runner = Runner(spark, settings, None, tmp_path / "lakehouse")
    runner.lake.write("silver", "kept", spark.createDataFrame([(1,)], "a int"), mode="overwrite")
    record = JobRecord(job="silver", started_at=utc_now())
    with pytest.raises(LakehouseError, match="schema of the data does not match"):
        runner._write_all(record, [
            ("silver", "kept", spark.createDataFrame([("x",)], "b string"), {"mode": "overwrite"}),
            ("silver", "fresh", spark.createDataFrame([(1,), (2,)], "a int"), {"mode": "overwrite"}),
        ])
    assert runner.lake.version("silver", "kept") == 0
    assert runner.lake.read("silver", "fresh").count() == 2 and record.rows_written == 2
