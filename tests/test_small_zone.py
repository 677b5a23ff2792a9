"""End to end on a landing zone too small to train on (issue #13): the models degrade to named
fallbacks, the data lands and the run succeeds; a later run with more data trains and promotes.

The small zone is a handful of records cut from the first two arrival dates of a generated zone; the
second run adds that zone's other dates, so every record of the small zone is one of the big one's
(no two generations share ids)."""
from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from atende.jobs.run import Runner

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CUSTOMERS, DAYS, SEED = 80, 6, 11
SMALL_DATES, RECORDS_PER_FILE = 2, 12


def _cut_file(src: Path, dst: Path, keep: int) -> None:
    """The first `keep` records of a landing file (a CSV's header kept, a .gz read and written plain)."""
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rb") as f:
        data = f.read()
    name = dst.with_suffix("") if src.suffix == ".gz" else dst
    if name.suffix == ".eml":
        shutil.copyfile(src, name)  # one message per file
        return
    if name.suffix == ".mbox":
        messages = data.split(b"\nFrom ")
        name.write_bytes(b"\nFrom ".join(messages[:keep]).rstrip(b"\n") + b"\n")
        return
    lines = data.splitlines(keepends=True)
    head = lines[:1] if name.suffix == ".csv" else []
    body = lines[1:] if name.suffix == ".csv" else lines
    name.write_bytes(b"".join(head + body[:keep]))


def _small_zone(zone: Path, out: Path, date: str) -> int:
    """Copy the first records of every file of `date` into `out`; returns the number of files copied."""
    files = 0
    for folder in sorted(zone.glob(f"*/{date}")):
        target = out / folder.parent.name / date
        target.mkdir(parents=True, exist_ok=True)
        emails = 0
        for path in sorted(folder.iterdir()):
            if path.suffix == ".eml":
                emails += 1
                if emails > 2:
                    continue
            _cut_file(path, target / path.name, RECORDS_PER_FILE)
            files += 1
    return files


@pytest.fixture(scope="module")
def zones(tmp_path_factory):
    from atende.synthetic.generate import generate_landing_zone

    base = tmp_path_factory.mktemp("small")
    full = base / "full"
    generate_landing_zone(full, CUSTOMERS, DAYS, SEED, workers=1)
    dates = sorted({d.name for d in full.glob("*/*") if d.is_dir() and d.parent.name != "_truth"})
    small = base / "small"
    for date in dates[:SMALL_DATES]:
        _small_zone(full, small, date)
    return small, full, dates


@pytest.fixture(scope="module")
def small_run(spark, settings, zones, tmp_path_factory):
    small, _, _ = zones
    lake_dir = tmp_path_factory.mktemp("lake-small") / "lakehouse"
    runner = Runner(spark, settings, small, lake_dir)
    summary = runner.run()
    return runner, summary, lake_dir


def test_small_zone_has_about_fifty_records(small_run):
    runner, _, _ = small_run
    records = runner.lake.read("ops", "file_reconciliation").agg(F.sum("records")).first()[0]
    assert 20 <= records <= 80


def test_models_that_cannot_train_degrade_and_the_run_succeeds(small_run):
    runner, summary, _ = small_run
    status = {j.job: j.status for j in summary.jobs}
    assert status["ingest"] == status["silver"] == status["gold"] == status["features"] == "succeeded"
    assert status["recommendations"] == "degraded"
    # the dates are processed: the next run does not redo them
    assert not summary.nothing_to_do
    runs = runner.lake.read("ops", "runs").where(F.col("run_id") == summary.run_id)
    rows = {r.job: (r.status, r.error) for r in runs.collect()}
    assert rows["run"][0] == "degraded"
    assert "fallback" in rows["recommendations"][1]
    from atende.jobs.bookkeeping import processed_dates

    assert processed_dates(runner.lake) == set(summary.arrival_dates)


def test_every_customer_gets_a_recommendation_naming_its_fallback(small_run, settings):
    runner, _, _ = small_run
    lake = runner.lake
    customers = lake.read("gold", "customer_features").count()
    recs = lake.read("gold", "recommendations")
    assert customers > 0
    assert recs.count() == recs.select("customer_key").distinct().count() == customers
    fallbacks = recs.where(F.exists("reasons", lambda r: r.contains("fallback"))).count()
    assert fallbacks == customers
    versions = recs.select("model_versions").first()[0]
    fallen = {part for part, version in versions.items() if version == "fallback"}
    assert fallen, versions
    if "tone" in fallen:
        assert recs.where(F.col("tone") != settings.models.tone.fallback_tone).count() == 0
        assert recs.where(F.col("tone_confidence") != 0).count() == 0
    if "next_best_action" in fallen:
        reason = "fallback: eligibility rules and business weight only, because "
        assert recs.where(~F.exists("reasons", lambda r: r.startswith(reason))).count() == 0


def test_a_later_run_with_more_data_trains_and_promotes(spark, settings, small_run, zones):
    from atende.jobs import tracking
    from atende.jobs.modeling import NBA_MODEL, PERSONA_MODEL, PRODUCT_MODEL, TONE_MODEL

    runner, first, lake_dir = small_run
    small, full, dates = zones
    for folder in full.glob("*/*"):
        if folder.is_dir() and folder.parent.name != "_truth" and folder.name not in dates[:SMALL_DATES]:
            shutil.copytree(folder, small / folder.parent.name / folder.name)
    second = Runner(spark, settings, small, lake_dir)
    summary = second.run()
    assert summary.arrival_dates == [dt.date.fromisoformat(d) for d in dates[SMALL_DATES:]]
    assert all(j.status == "succeeded" for j in summary.jobs), [(j.job, j.status, j.error) for j in summary.jobs]
    for name in (PERSONA_MODEL, TONE_MODEL, PRODUCT_MODEL, NBA_MODEL):
        assert tracking.champion_version(name) is not None, name
    recs = second.lake.read("gold", "recommendations")
    assert recs.where(F.exists("reasons", lambda r: r.contains("fallback"))).count() == 0
    versions = recs.select("model_versions").first()[0]
    assert "fallback" not in versions.values()


def test_a_zone_with_only_whatsapp_and_email_runs_end_to_end(spark, settings, zones, tmp_path_factory):
    """No calls, surveys, CRM, orders, products or actions: not an error. Interactions and profiles are
    built, what the missing sources feed is null or empty, and every customer still gets a recommendation."""
    _, full, _ = zones
    landing = tmp_path_factory.mktemp("we") / "landing"
    for source in ("whatsapp", "email"):
        shutil.copytree(full / source, landing / source)
    runner = Runner(spark, settings, landing, tmp_path_factory.mktemp("lake-we") / "lakehouse")
    summary = runner.run()
    assert all(j.status in ("succeeded", "degraded") for j in summary.jobs), [(j.job, j.status) for j in summary.jobs]
    lake = runner.lake
    interactions = lake.read("silver", "interactions")
    assert {r.channel for r in interactions.select("channel").distinct().collect()} == {"whatsapp", "email"}
    profiles = lake.read("gold", "customer_profiles")
    assert profiles.count() > 0
    assert profiles.where(F.col("nps_last").isNotNull() | (F.size("crm_ids") > 0)).count() == 0
    kpis = lake.read("gold", "service_kpis")
    assert kpis.where(F.col("nps").isNotNull()).count() == 0
    recs = lake.read("gold", "recommendations")
    assert recs.count() == lake.read("gold", "customer_features").count() == recs.select("customer_key").distinct().count()
    # no consent is known without a CRM: no marketing action is recommended
    marketing = [a for a, spec in settings.models.nba.actions.items() if spec.kind == "marketing"]
    assert recs.where(F.col("next_best_action").isin(*marketing)).count() == 0
