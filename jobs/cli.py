"""The `atende` command."""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

from atende.conf import ConfigError, Settings, load_settings

DEMO_MARKER = ".atende-demo"


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in YYYY-MM-DD form: {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atende",
        description="Customer-data and personalization pipeline: landing zone -> Delta Lake bronze/silver/gold.",
    )
    parser.add_argument("--env", default=None, help="configuration environment: conf/<env>.yaml (default: local, or $ATENDE_ENV)")
    parser.add_argument("--conf", dest="conf_file", default=None, help="YAML file whose keys override the environment's")
    loudness = parser.add_mutually_exclusive_group()
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="log what each step does, and let Spark's and the JVM's output through to the terminal")
    loudness.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="write a synthetic landing zone with its ground truth in DIR/_truth/")
    gen.add_argument("--out", required=True, type=Path)
    gen.add_argument("--customers", type=_positive, default=1000)
    gen.add_argument("--days", type=_positive, default=30)
    gen.add_argument("--seed", type=int, default=7)
    gen.add_argument("--start", type=_date, default=dt.date(2026, 3, 1), help="first arrival date (default 2026-03-01)")
    gen.add_argument("--workers", type=_positive, default=None, help="processes (default: the machine's cores)")

    run = sub.add_parser("run", help="run every job over a landing zone into a lakehouse")
    run.add_argument("--landing", type=_location, default=None,
                     help="the landing zone (needed unless --step names a job after ingest)")
    run.add_argument("--lakehouse", required=True, type=_location)
    which = run.add_mutually_exclusive_group()
    which.add_argument("--date", type=_date, default=None,
                       help="re-process this arrival date (default: every date not yet processed)")
    run.add_argument("--step", choices=("ingest", "silver", "features", "personas", "gold", "recommendations"),
                     default=None, help="run this job alone (one orchestrator task per job, each retried on its "
                                        "own); ingest takes --date/--full-refresh, the others work on what the "
                                        "last ingest brought, and recommendations marks its dates processed")
    which.add_argument("--full-refresh", action="store_true",
                       help="re-ingest every arrival date of the landing zone and rebuild silver and gold from "
                            "the whole of bronze (after a change of rules or configuration)")

    report = sub.add_parser("report", help="write an HTML report from the lakehouse")
    report_sub = report.add_subparsers(dest="report", required=True)
    kpis = report_sub.add_parser("kpis", help="service KPIs per channel: trend per metric over the last days")
    kpis.add_argument("--lakehouse", required=True, type=_location)
    kpis.add_argument("--out", required=True, type=Path)
    kpis.add_argument("--days", type=_positive, default=30)
    personas = report_sub.add_parser("personas", help="personas for marketing: size, demographics, channel mix, satisfaction")
    personas.add_argument("--lakehouse", required=True, type=_location)
    personas.add_argument("--out", required=True, type=Path)
    uplift = report_sub.add_parser(
        "uplift", help="treated customers against the global holdout: response, purchases, spend, resolution, "
                       "satisfaction, with intervals")
    uplift.add_argument("--lakehouse", required=True, type=_location)
    uplift.add_argument("--out", required=True, type=Path)
    uplift.add_argument("--since", type=_date, default=None,
                        help="first business day of the period (default: the day after the data the first "
                             "recommendations were made from)")
    uplift.add_argument("--days", type=_positive, default=None, help="at most this many days from --since")

    segments = sub.add_parser("segments", help="persona segments for marketing")
    segments_sub = segments.add_subparsers(dest="segments", required=True)
    export = segments_sub.add_parser(
        "export", help="customers of a persona who gave marketing consent (never the others)")
    export.add_argument("--lakehouse", required=True, type=_location)
    export.add_argument("--persona", required=True, help="a persona_id of gold/personas, or 'all'")
    export.add_argument("--format", choices=("csv", "parquet"), default="csv")
    export.add_argument("--out", required=True, type=Path, help="the file to write")
    export.add_argument("--with-contacts", action="store_true",
                        help="include name, e-mail and phone (direct contact data); off by default")

    train = sub.add_parser("train", help="retrain the models now (personas, tone, products, next best action), "
                                         "promote those not worse than their champion beyond the interval, and re-score")
    # accepted so schedules written for earlier versions keep working; retraining reads only the lakehouse
    train.add_argument("--landing", type=_location, help=argparse.SUPPRESS)
    train.add_argument("--lakehouse", required=True, type=_location)

    evaluate = sub.add_parser(
        "evaluate", help="judge the champion models as their users would: persona stability and differences, "
                         "off-policy next best action, products against popularity, uplift against the holdout; "
                         "an HTML page and an MLflow run")
    evaluate.add_argument("--lakehouse", required=True, type=_location)
    evaluate.add_argument("--out", required=True, type=Path)
    evaluate.add_argument("--refits", type=_positive, default=5,
                          help="refits of the persona model on subsamples, for its stability (default 5, at least 2)")

    maintain = sub.add_parser("maintain", help="table upkeep: compact and Z-order, vacuum old files, name tables in the catalog")
    maintain_sub = maintain.add_subparsers(dest="maintain", required=True)
    for action, text in (
        ("optimize", "compact small files and Z-order by storage.zorder_by (customer_key)"),
        ("vacuum", "delete files no version within the retention needs, and leftovers of crashed writes"),
        ("register", "name every table in Spark's catalog: atende_<layer>.<table>"),
    ):
        step = maintain_sub.add_parser(action, help=text)
        step.add_argument("--lakehouse", required=True, type=_location)
        if action != "register":
            step.add_argument("--layer", action="append", default=[], choices=("bronze", "silver", "gold", "ops"),
                              help="only this layer (repeatable; default: every layer)")
            step.add_argument("--table", action="append", default=[],
                              help="only this table, as name or layer.name (repeatable)")
        if action == "vacuum":
            step.add_argument("--retention-hours", type=int, default=None,
                              help="keep files versions this recent need (default: storage.vacuum_retention_hours)")

    forget = sub.add_parser("forget", help="erase customers from every table (LGPD art. 18) and keep them out of later deliveries")
    forget.add_argument("--lakehouse", required=True, type=_location)
    forget.add_argument("--customer-key", action="append", default=[], metavar="KEY", help="a customer key (repeatable)")
    forget.add_argument("--identifier", action="append", default=[], metavar="TYPE:VALUE",
                        help="one of their identifiers, e.g. email:ana@example.com, phone:+55 11 99876-5432, "
                             "handle:instagram:@ana (repeatable)")
    forget.add_argument("--file", type=Path, default=None,
                        help="a request file: one customer_key:KEY or TYPE:VALUE per line (# comments)")
    forget.add_argument("--retention-hours", type=int, default=None,
                        help="old table versions keep the rows this long (default: privacy.erasure_retention_hours, "
                             "else storage.vacuum_retention_hours; 0: removed at once)")

    export_subject = sub.add_parser("export-subject", help="everything held about one customer, as one JSON file "
                                                           "(LGPD art. 18, access)")
    export_subject.add_argument("--lakehouse", required=True, type=_location)
    who = export_subject.add_mutually_exclusive_group(required=True)
    who.add_argument("--customer-key", metavar="KEY")
    who.add_argument("--identifier", metavar="TYPE:VALUE")
    export_subject.add_argument("--out", required=True, type=Path, help="the JSON file to write")

    sql = sub.add_parser("sql", help="run a SQL query over the lakehouse's tables, named atende_<layer>.<table>")
    sql.add_argument("--lakehouse", required=True, type=_location)
    sql.add_argument("query", help='e.g. "SELECT tone, count(*) FROM atende_gold.recommendations GROUP BY tone"')
    sql.add_argument("--limit", type=_positive, default=50, help="rows shown (default 50)")

    demo = sub.add_parser("demo", help="generate a small landing zone, run every job, print a summary")
    demo.add_argument("--dir", type=Path, default=None, help="demo folder (default: conf demo.directory)")
    return parser


def _location(text: str) -> str:
    """A --landing or --lakehouse argument: a local folder (plain path or file:// URI), or a Hadoop
    file-system URI (s3a://, abfss://, gs://, hdfs://) kept as given."""
    from atende.lakehouse.storage import location

    if not text.strip():
        raise argparse.ArgumentTypeError("an empty location")
    return location(text)


def _console(args=None):
    from rich.console import Console

    # piped or redirected output has no terminal width: rich would cut tables at 80 columns
    width = None if sys.stdout.isatty() else max(shutil.get_terminal_size((160, 24)).columns, 160)
    return Console(stderr=False, highlight=False, width=width, quiet=bool(getattr(args, "quiet", False)))


def cmd_generate(args, settings: Settings) -> int:
    from atende.synthetic.generate import generate_landing_zone

    console = _console(args)
    started = time.perf_counter()
    stats = generate_landing_zone(args.out, args.customers, args.days, args.seed, start=args.start, workers=args.workers)
    seconds = time.perf_counter() - started
    from rich.table import Table

    table = Table(title=f"{args.customers:,} customers over {args.days} days (seed {args.seed}) -> {args.out}")
    for col in ("source", "records", "re-delivered", "malformed", "files"):
        table.add_column(col, justify="left" if col == "source" else "right")
    for name, src in sorted(stats.sources.items()):
        table.add_row(name, f"{src.records:,}", f"{src.duplicates:,}", f"{src.malformed:,}", f"{src.files:,}")
    console.print(table)
    console.print(f"{stats.records:,} records in {stats.files:,} files, ground truth in {args.out / '_truth'}; "
                  f"{seconds:.1f} s")
    return 0


def _jvm_log(lakehouse: Path | str, verbose: bool) -> Path | None:
    """Where the JVM's output goes (None: the terminal, with --verbose): <lakehouse>/_logs/spark-<UTC time>.log
    for a local lakehouse; for one on an object store, <temp dir>/atende-logs/ on this machine (a log is
    appended to as it is written, which object stores cannot do)."""
    from atende.lakehouse.storage import is_remote, location

    if verbose:
        return None
    root = location(lakehouse)
    folder = Path(tempfile.gettempdir()) / "atende-logs" if is_remote(root) else Path(root) / "_logs"
    return folder / f"spark-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}Z.log"


def _session(settings: Settings, lakehouse: Path | str, verbose: bool, log: Path | None = None):
    """The command's SparkSession. Unless --verbose, what the JVM prints (Ivy, log4j, the JDK's warnings)
    goes to a log file in <lakehouse>/_logs/ (`log`, or spark-<UTC time>.log), not the terminal."""
    from atende.lakehouse.spark import build_spark_session

    return build_spark_session(settings, jvm_log=log or _jvm_log(lakehouse, verbose))


def _run(settings: Settings, landing: str | None, lakehouse: str, date: dt.date | None, console,
         verbose: bool = False, full_refresh: bool = False, step: str | None = None) -> int:
    """One run. Progress lines and the summary go to the console; the run's whole story — our log at INFO,
    every progress line, and what the JVM printed — to <lakehouse>/_logs/<run_id>.log (named once the run
    has its id; until then the JVM writes into spark-<time>.log, the same file renamed)."""
    from rich.markup import escape

    from atende.jobs.run import Runner

    file_log = logging.getLogger("atende.run")

    def progress(message: str) -> None:
        file_log.info(message)
        style = "yellow" if message.startswith("warning") else "default"
        console.print(f"[dim]{dt.datetime.now():%H:%M:%S}[/dim] [{style}]{escape(message)}[/{style}]")
        status.update(escape(message))

    jvm_log = _jvm_log(lakehouse, verbose)
    handler = None
    atende_level = logging.getLogger("atende").level
    with console.status("starting Spark ...") as status:
        spark = _session(settings, lakehouse, verbose, jvm_log)
        try:
            runner = Runner(spark, settings, landing, lakehouse, progress=progress)
            if jvm_log is not None:
                run_log = jvm_log.with_name(f"{runner.run_id}.log")
                if jvm_log.exists():
                    jvm_log.rename(run_log)  # the JVM keeps writing through its open descriptor
                run_log.parent.mkdir(parents=True, exist_ok=True)  # no JVM log under a cluster master
                handler = logging.FileHandler(run_log, mode="a", encoding="utf-8")
                handler.setLevel(logging.INFO)
                handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
                logging.getLogger().addHandler(handler)
                logging.getLogger("atende").setLevel(logging.INFO)
            summary = runner.run(date, full_refresh=full_refresh, step=step)
            status.stop()
            if summary.nothing_to_do and step not in (None, "ingest"):
                console.print(f"nothing new for {step}: no ingest succeeded in {lakehouse} since it last ran")
            elif summary.nothing_to_do:
                console.print(f"nothing new to process in {landing}: every arrival date is already in {lakehouse}")
            else:
                _print_summary(console, runner, summary)  # reads the tables: before Spark stops
                if handler is not None:
                    console.print(f"[dim]full log: {escape(handler.baseFilename)}[/dim]")
        except BaseException:
            if handler is not None:  # the run's log ends with why (the terminal gets one line from main)
                handler.handle(file_log.makeRecord(file_log.name, logging.ERROR, __file__, 0, "the run failed",
                                                   (), sys.exc_info()))
            raise
        finally:
            spark.stop()
            if handler is not None:
                logging.getLogger().removeHandler(handler)
                logging.getLogger("atende").setLevel(atende_level)
                handler.close()
    return 0


# what stays null or empty while a source has delivered nothing (the run still succeeds)
_WITHOUT_SOURCE = {
    "surveys": "NPS, CSAT, CES and SPS are null",
    "calls": "voice metrics (abandonment, wait, AHT of calls) are null",
    "crm": "profiles carry no CRM name, demographics or consent (no marketing without consent)",
    "orders": "spend and order counts are 0 and product offers have no purchases to learn from",
    "products": "no product can be offered",
    "actions": "the next-best-action model has no responses to learn from",
}


def _print_summary(console, runner, summary) -> None:
    from rich.table import Table

    jobs = Table(title=f"run {summary.run_id} on the {summary.engine} engine", title_justify="left", show_lines=False)
    for col in ("job", "status", "seconds", "rows written", "Spark jobs"):
        jobs.add_column(col, justify="right" if col != "job" else "left")
    for job in summary.jobs:
        jobs.add_row(job.job, job.status, f"{job.seconds:.1f}", f"{job.rows_written:,}",
                     "" if job.spark_jobs is None else f"{job.spark_jobs:,}")
    console.print(jobs)
    if summary.silver_incremental:
        console.print(f"silver: rows rebuilt from {summary.silver_records:,} records delivered or re-keyed since "
                      "the last run (the rest of silver kept)")
    for job in summary.jobs:
        if job.status == "degraded":
            # the data landed; a model could not be (re)trained and a champion or named fallback answered
            for reason in (job.error or "").split(" | "):
                console.print(f"degraded {job.job}: {reason}")
    tables = Table(title="tables")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    for name, count in sorted(summary.table_rows.items()):
        tables.add_row(name, f"{count:,}")
    console.print(tables)
    from atende.pipelines.schemas import SOURCES

    missing = [s for s in SOURCES if not summary.table_rows.get(f"bronze.{s}")]
    if missing:
        # a landing zone with only some sources is not an error: what they feed is null or empty
        console.print(f"sources with no data yet: {', '.join(missing)} — " + "; ".join(
            why for source, why in _WITHOUT_SOURCE.items() if source in missing))
    total_q = sum(summary.quarantined.values())
    detail = ", ".join(f"{k} {v:,}" for k, v in sorted(summary.quarantined.items()))
    console.print(f"quarantined records: {total_q:,}" + (f" ({detail})" if detail else ""))
    if summary.registered:
        console.print(f"{len(summary.registered)} tables named in the catalog, e.g. {summary.registered[-1]}")
    dates = summary.arrival_dates
    done = "processed" if summary.step in (None, "recommendations") else f"through {summary.step}"
    console.print(f"arrival dates {done}: {len(dates)} ({dates[0]} .. {dates[-1]})")
    if runner.lake.exists("gold", "service_kpis"):
        from atende.pipelines.kpis import UNKNOWN_CHANNEL, build_channel_overview

        def show(value, fmt):
            return "-" if value is None else format(value, fmt)

        overview = Table(title="service by channel (gold.service_kpis, whole period)")
        for col in ("channel", "interactions", "NPS", "CSAT %", "FCR", "bot containment"):
            overview.add_column(col, justify="left" if col == "channel" else "right")
        for row in build_channel_overview(runner.lake.read("gold", "service_kpis")).collect():
            # the contract's channel `unknown` holds survey responses that name no interaction
            label = "unknown (surveys naming no interaction)" if row["channel"] == UNKNOWN_CHANNEL else row["channel"]
            overview.add_row(label, f"{row['interactions']:,}", show(row["nps"], ".1f"),
                             show(row["csat_pct"], ".1f"), show(row["fcr_rate"], ".0%"),
                             show(row["bot_containment_rate"], ".0%"))
        console.print(overview)
    if runner.lake.exists("gold", "personas"):
        personas = Table(title="personas (gold.personas)")
        for col in ("persona", "name", "customers"):
            personas.add_column(col, justify="right" if col == "customers" else "left")
        for row in runner.lake.read("gold", "personas").orderBy("persona_id").collect():
            personas.add_row(row["persona_id"], row["persona_name"], f"{row['size']:,}")
        console.print(personas)
    if runner.lake.exists("gold", "recommendations"):
        from pyspark.sql import functions as F

        counted = runner.lake.read("gold", "recommendations").groupBy("holdout", "next_best_action", "tone").count()
        counted = counted.cache()
        counts = counted.select("holdout", "count").collect()
        held = sum(r["count"] for r in counts if r["holdout"])
        everyone = sum(r["count"] for r in counts)
        mix = counted.where(~F.col("holdout")).drop("holdout")
        actions = Table(title="recommendations (gold.recommendations): next best action x tone")
        tones = sorted(r[0] for r in mix.select("tone").distinct().collect() if r[0])
        actions.add_column("next best action")
        for tone in tones:
            actions.add_column(tone, justify="right")
        pivot = mix.groupBy("next_best_action").pivot("tone", tones).agg(F.sum("count")).orderBy("next_best_action")
        for row in pivot.collect():
            actions.add_row(str(row["next_best_action"]), *[f"{row[t] or 0:,}" for t in tones])
        console.print(actions)
        console.print(f"holdout: {held:,} of {everyone:,} customers ({held / max(everyone, 1):.1%}) get the baseline "
                      "(models.holdout), not in the table above; `atende report uplift` compares them after a "
                      "later run")
        counted.unpersist()


def cmd_run(args, settings: Settings) -> int:
    # checked before Spark starts
    if args.step in (None, "ingest") and args.landing is None:
        raise SystemExit("atende: --landing is needed to ingest (it may be left out with --step after ingest)")
    if args.step not in (None, "ingest") and (args.date is not None or args.full_refresh):
        raise SystemExit(f"atende: --date and --full-refresh choose what the ingest step reads, not {args.step}")
    return _run(settings, args.landing, args.lakehouse, args.date, _console(args), args.verbose,
                full_refresh=args.full_refresh, step=args.step)


_PERSONA_TABLES = {"customer_profiles": ("gold", "customer_profiles"),
                   "persona_segments": ("gold", "persona_segments"), "personas": ("gold", "personas")}


def _gold(args, settings: Settings, tables: dict[str, tuple[str, str]]):
    """The report commands' tables: DuckDB over the Delta files (no Spark) unless one is very large."""
    from atende.jobs.gold_query import open_tables

    return open_tables(settings, args.lakehouse, tables,
                       start_spark=lambda root: _session(settings, root, args.verbose))


def cmd_report(args, settings: Settings) -> int:
    if args.report == "personas":
        from atende.jobs.segments import persona_report_frames, render_persona_report

        with _gold(args, settings, _PERSONA_TABLES) as engine:
            out = render_persona_report(persona_report_frames(engine), args.out)
    elif args.report == "uplift":
        from atende.jobs.uplift import UPLIFT_TABLES, compute_uplift, render_uplift_page

        with _gold(args, settings, UPLIFT_TABLES) as engine:
            out = render_uplift_page(compute_uplift(engine, settings, since=args.since, days=args.days), args.out)
    else:
        from atende.jobs.report import render_kpi_report

        with _gold(args, settings, {"service_kpis": ("gold", "service_kpis")}) as engine:
            out = render_kpi_report(engine, args.out, days=args.days, top_channels=settings.reports.top_channels)
    _console(args).print(f"report written to {out}")
    return 0


def cmd_segments(args, settings: Settings) -> int:
    from atende.jobs.segments import ExportError, export_query

    with _gold(args, settings, _PERSONA_TABLES) as engine:
        known = sorted(engine.sql("SELECT persona_id FROM personas")["persona_id"].astype(str))
        if args.persona != "all" and args.persona not in known:
            raise ExportError(f"unknown persona {args.persona!r}; known: {', '.join(known)} or all")
        count = engine.export(export_query(args.persona, args.with_contacts), args.out, args.format)
    who = "every persona" if args.persona == "all" else f"persona {args.persona}"
    _console(args).print(f"{count:,} customers with marketing consent, of {who}, written to {args.out}"
                     + (" (with contact data)" if args.with_contacts else ""))
    return 0


def cmd_train(args, settings: Settings) -> int:
    from atende.jobs.run import Runner

    console = _console(args)
    spark = _session(settings, args.lakehouse, args.verbose)
    try:
        runner = Runner(spark, settings, None, args.lakehouse,
                        progress=lambda m: console.print(f"{dt.datetime.now():%H:%M:%S} {m}"))
        runner.retrain()
        console.print("models retrained; tables re-scored with the champions")
        return 0
    finally:
        spark.stop()


def cmd_evaluate(args, settings: Settings) -> int:
    from atende.jobs.evaluate import evaluate, log_evaluation, render_evaluation_page

    if args.refits < 2:
        raise SystemExit("atende: --refits must be at least 2 (stability compares refits with each other)")
    console = _console(args)
    spark, lake = _open_lakehouse(settings, args.lakehouse, args.verbose)
    try:
        ev = evaluate(lake, settings, refits=args.refits,
                      progress=lambda m: console.print(f"{dt.datetime.now():%H:%M:%S} {m}"))
        page = render_evaluation_page(ev, args.out)
        run_id = log_evaluation(ev, page)
    finally:
        spark.stop()
    if ev.stability:
        console.print(f"personas: stability ARI {ev.stability['ari_mean']:.2f} (lowest {ev.stability['ari_min']:.2f}), "
                      f"the same k in {ev.stability['k_agreement']:.0%} of {len(ev.stability['ks'])} refits")
    elif ev.stability_note:
        console.print(f"personas: {ev.stability_note}")
    # over every logged action, cross-fitted, when the champion's run logged it; else its held-out customers'
    judged = "crossfit_" if "crossfit_snips_lift_conversion_rate" in ev.nba else ""
    if f"{judged}snips_lift_conversion_rate" in ev.nba:
        m = {k.removeprefix(judged): v for k, v in ev.nba.items() if k.startswith(judged)}
        console.print(f"next best action: {m['snips_lift_conversion_rate']:.2f}x the logging policy's conversion "
                      f"(SNIPS, 95% {m.get('snips_lift_conversion_rate_low', math.nan):.2f}-"
                      f"{m.get('snips_lift_conversion_rate_high', math.nan):.2f}; {int(m.get('ips_rows', 0)):,} "
                      f"logged actions, {'cross-fitted' if judged else 'held out'})")
    # the lists served: the category x price-ladder recommender's when training chose it, else ALS's (a champion
    # trained before the choice existed logged ALS's ratio only)
    served = "served_" if "served_ndcg_ratio" in ev.products else ""
    if math.isfinite(ev.products.get(f"{served}ndcg_ratio", math.nan)):
        which = "category x price ladder" if ev.products.get("serves_category_price") else "ALS"
        low, high = (ev.products.get(f"{served}ndcg_ratio_{end}", math.nan) for end in ("low", "high"))
        console.print(f"products: the served lists ({which}) NDCG@10 {ev.products[f'{served}ndcg_ratio']:.2f}x "
                      f"popularity (95% {low:.2f}-{high:.2f}; {int(ev.products.get('test_customers', 0)):,} "
                      "test customers)")
    console.print("uplift: " + (f"{ev.uplift.days} days, {ev.uplift.treated_customers:,} treated and "
                                f"{ev.uplift.holdout_customers:,} held-out customers" if ev.uplift else
                                f"not measured yet ({ev.uplift_note})"))
    console.print(f"page written to {page}; MLflow run {run_id}")
    return 0


def _open_lakehouse(settings: Settings, path: str, verbose: bool = False):
    from atende.lakehouse.locations import is_storage_uri
    from atende.lakehouse.storage import Storage, location
    from atende.lakehouse.tables import Lakehouse

    if not is_storage_uri(path):
        found = Storage().stat(location(path))
        if found is None or not found.is_dir:
            raise FileNotFoundError(f"lakehouse not found: {path}")
    spark = _session(settings, path, verbose)
    return spark, Lakehouse(spark, path, settings.storage)


def cmd_maintain(args, settings: Settings) -> int:
    from rich.table import Table

    from atende.jobs.maintain import optimize_tables, register_tables, time_travel_horizon, vacuum_tables

    console = _console(args)
    spark, lake = _open_lakehouse(settings, args.lakehouse, args.verbose)
    try:
        if args.maintain == "register":
            names = register_tables(spark, lake, settings.catalog.database_prefix)
            console.print(f"{len(names)} tables named in the catalog ({spark.conf.get('spark.sql.catalogImplementation')}"
                          f" catalog): " + ", ".join(names))
            return 0
        layers, tables = tuple(args.layer), tuple(args.table)
        if args.maintain == "optimize":
            done = optimize_tables(lake, layers, tables)
        else:
            done = vacuum_tables(lake, args.retention_hours, layers, tables)
        out = Table(title=f"{args.maintain} on the {lake.engine.name} engine: {lake.root}")
        for col in ("table", "files added", "files removed", "seconds"):
            out.add_column(col, justify="left" if col == "table" else "right")
        for item in done:
            out.add_row(item.table, f"{item.files_added:,}", f"{item.files_removed:,}", f"{item.seconds:.1f}")
        console.print(out)
        if args.maintain == "vacuum":
            horizon = time_travel_horizon(lake, args.retention_hours)
            console.print(f"time travel now reaches back to {horizon:%Y-%m-%d %H:%M} UTC; older versions are gone")
        return 0
    finally:
        spark.stop()


def cmd_forget(args, settings: Settings) -> int:
    from atende.jobs.privacy import PrivacyError, forget, parse_subject, read_subjects

    console = _console(args)
    try:
        subjects = [parse_subject(f"customer_key:{k}") for k in args.customer_key]
        subjects += [parse_subject(i) for i in args.identifier]
        if args.file is not None:
            subjects += read_subjects(args.file.read_text(encoding="utf-8").splitlines())
    except (PrivacyError, OSError) as exc:
        raise SystemExit(f"atende: {exc}") from None
    if not subjects:
        raise SystemExit("atende: forget needs --customer-key, --identifier or --file")
    spark, lake = _open_lakehouse(settings, args.lakehouse, args.verbose)
    try:
        report = forget(spark, settings, lake, subjects, args.retention_hours,
                        progress=lambda m: console.print(f"{dt.datetime.now():%H:%M:%S} {m}"))
        for subject in report.unknown:
            console.print(f"nothing held about {subject}" + ("" if subject.startswith("c-") else
                          " (put on the suppression list all the same)"))
        console.print(f"erasure {report.erasure_id}: {report.customer_keys} customer(s), {report.identifiers} "
                      f"identifier(s) suppressed, {sum(report.rows_removed.values()):,} row(s) removed from "
                      f"{len(report.rows_removed)} table(s), {report.files_vacuumed:,} file(s) vacuumed")
        if report.retention_hours:
            console.print(f"old table versions hold the rows until {report.visible_until:%Y-%m-%d %H:%M} UTC: "
                          "a vacuum after that removes them (`atende maintain vacuum`, or the scheduled one)")
        else:
            console.print("no table version holds the rows any more (vacuumed with no retention)")
        if report.models_to_retrain:
            console.print("the next run retrains " + ", ".join(report.models_to_retrain) + " (ops/erasures)")
        return 0
    finally:
        spark.stop()


def cmd_export_subject(args, settings: Settings) -> int:
    import json

    from atende.jobs.privacy import export_subject, parse_subject

    subject = parse_subject(f"customer_key:{args.customer_key}" if args.customer_key else args.identifier)
    spark, lake = _open_lakehouse(settings, args.lakehouse, args.verbose)
    try:
        document = export_subject(spark, settings, lake, subject)
    finally:
        spark.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, ensure_ascii=False, indent=1, default=str) + "\n", encoding="utf-8")
    rows = sum(len(v) for v in document["tables"].values())
    _console(args).print(f"{rows:,} row(s) from {len(document['tables'])} table(s) about {document['customer_key']} "
                         f"written to {args.out}")
    return 0


def cmd_sql(args, settings: Settings) -> int:
    from rich.table import Table

    from atende.jobs.maintain import register_tables

    spark, lake = _open_lakehouse(settings, args.lakehouse, args.verbose)
    try:
        register_tables(spark, lake, settings.catalog.database_prefix)
        rows = spark.sql(args.query).limit(args.limit + 1).collect()
        if not rows:
            _console(args).print("no rows")
            return 0
        out = Table()
        for col in rows[0].__fields__:
            out.add_column(col)
        for row in rows[: args.limit]:
            out.add_row(*["" if v is None else str(v) for v in row])
        _console(args).print(out)
        if len(rows) > args.limit:
            _console(args).print(f"(first {args.limit} rows; --limit shows more)")
        return 0
    finally:
        spark.stop()


def cmd_demo(args, settings: Settings) -> int:
    from atende.synthetic.generate import generate_landing_zone

    console = _console(args)
    base = (args.dir or Path(settings.demo.directory)).resolve()
    if base.exists():
        if not (base / DEMO_MARKER).exists():
            raise SystemExit(f"atende: {base} exists and is not a demo folder; choose another with --dir")
        shutil.rmtree(base)
    base.mkdir(parents=True)
    (base / DEMO_MARKER).write_text("made by `atende demo`; safe to delete\n")
    landing, lakehouse = base / "landing", base / "lakehouse"
    d = settings.demo
    console.print(f"generating {d.customers:,} customers over {d.days} days (seed {d.seed}) into {landing}")
    started = time.perf_counter()
    generate_landing_zone(landing, d.customers, d.days, d.seed)
    console.print(f"generated in {time.perf_counter() - started:.1f} s")
    code = _run(settings, str(landing), str(lakehouse), None, console, args.verbose)
    if code == 0:
        console.print(f"\nlakehouse: {lakehouse}\nopen a table: python -c \"from deltalake import DeltaTable; "
                      f"print(DeltaTable('{lakehouse}/gold/customer_profiles').to_pandas().head())\"")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the terminal: warnings (errors only with --quiet, everything with --verbose); a run's log file
    # (jobs.cli._run) takes INFO whatever the terminal shows
    shown = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    before = list(logging.getLogger().handlers)
    logging.basicConfig(level=shown, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        if handler not in before:  # ours only: a program embedding atende keeps its own handlers' levels
            handler.setLevel(shown)
    try:
        settings = load_settings(args.env, args.conf_file)
    except ConfigError as exc:
        print(f"atende: {exc}", file=sys.stderr)
        return 2
    handlers = {"generate": cmd_generate, "run": cmd_run, "demo": cmd_demo, "report": cmd_report, "evaluate": cmd_evaluate,
                "segments": cmd_segments, "train": cmd_train, "maintain": cmd_maintain, "sql": cmd_sql,
                "forget": cmd_forget, "export-subject": cmd_export_subject}
    try:
        return handlers[args.command](args, settings)
    except KeyboardInterrupt:
        print("atende: interrupted; every table stays at its last committed version", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for a person; details with --verbose
        from atende.jobs.run import RunFailed

        if args.verbose:
            logging.exception("atende %s failed", args.command)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not isinstance(exc, RunFailed):
            message = f"{type(exc).__name__}: {message}"
        print(f"atende: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
