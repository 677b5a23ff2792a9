"""The small landing zone of tests/test_small_zone.py and tests/test_cluster.py, and how two lakehouses are
compared table by table (imported by tests, not a test module).

The small zone is a handful of records cut from the first two arrival dates of a generated zone (about fifty
records: too few to train on); the full zone's other dates are what a later run adds, so every record of the small
zone is one of the big one's (no two generations share ids)."""
from __future__ import annotations

import collections
import contextlib
import gzip
import shutil
import subprocess
from pathlib import Path

CUSTOMERS, DAYS, SEED = 80, 6, 11
SMALL_DATES, RECORDS_PER_FILE = 2, 12


def make_zones(base: Path) -> tuple[Path, Path, list[str]]:
    """(small zone, full zone, the full zone's arrival dates) under `base`."""
    from atende.synthetic.generate import generate_landing_zone

    full = base / "full"
    generate_landing_zone(full, CUSTOMERS, DAYS, SEED, workers=1)
    dates = sorted({d.name for d in full.glob("*/*") if d.is_dir() and d.parent.name != "_truth"})
    small = base / "small"
    for date in dates[:SMALL_DATES]:
        cut_date(full, small, date)
    return small, full, dates


def cut_file(src: Path, dst: Path, keep: int) -> None:
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


def cut_date(zone: Path, out: Path, date: str) -> int:
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
            cut_file(path, target / path.name, RECORDS_PER_FILE)
            files += 1
    return files




# written-by columns: which run, when (a recommendation is valid from the run that made it)
RUN_COLUMNS = {"run_id", "_written_at", "_ingested_at", "valid_from", "valid_until"}


def canonical(value, rename):
    """A value comparable across two readers: maps (lists of pairs) and structs sorted, locations renamed."""
    if isinstance(value, str):
        return rename(value)
    if isinstance(value, dict):
        return tuple(sorted((k, canonical(v, rename)) for k, v in value.items()))
    if isinstance(value, list):
        items = [canonical(v, rename) for v in value]
        return tuple(sorted(items, key=repr)) if items and all(isinstance(v, tuple) for v in value) else tuple(items)
    return value


def table_rows(uri: str, rename, options=None) -> collections.Counter:
    from deltalake import DeltaTable

    rows = DeltaTable(uri, storage_options=options).to_pyarrow_table().to_pylist()
    return collections.Counter(
        tuple(sorted((k, canonical(v, rename)) for k, v in row.items() if k not in RUN_COLUMNS)) for row in rows
    )


def differing_tables(lake, local_root: str, other_root: str, rename=lambda v: v, options=None) -> dict[str, str]:
    """Bronze, silver and gold tables of `lake` (at `local_root`) whose rows differ at `other_root`."""
    tables = [t for t in lake.tables() if t[0] in ("bronze", "silver", "gold")]
    assert ("bronze", "calls") in tables and ("gold", "recommendations") in tables
    differing = {}
    for layer, table in tables:
        here = table_rows(f"{local_root}/{layer}/{table}", lambda v: v)
        there = table_rows(f"{other_root}/{layer}/{table}", rename, options)
        if here != there:
            differing[f"{layer}.{table}"] = (f"{sum(here.values())} vs {sum(there.values())} rows; only here: "
                                            f"{list(here - there)[:1]}; only there: {list(there - here)[:1]}")
    return differing


@contextlib.contextmanager
def standalone_cluster(work: Path, workers: int = 2, cores: int = 1):
    """A Spark standalone master and `workers` workers of `cores` cores each on 127.0.0.1, started from
    pyspark's own distribution (bin/spark-class), each worker with its own work directory; stopped
    whatever happens. Yields the master URL."""
    import json
    import os
    import socket
    import time
    import urllib.request

    import pyspark

    taken: set[int] = set()

    def free_port() -> int:
        # Distinct ports: the kernel may hand the same free port out twice once a probe socket is closed, and
        # a worker UI on the master UI's port sends the poll below to the worker's HTML page.
        while True:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            if port not in taken:
                taken.add(port)
                return port

    home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}
    port, ui = free_port(), free_port()
    master = f"spark://127.0.0.1:{port}"
    processes = []

    def start(name: str, *args: str) -> None:
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
        processes.append((subprocess.Popen([str(home / "bin" / "spark-class"), *args], env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True), log))

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
              "--webui-port", str(ui))
        for i in range(workers):
            (work / f"worker-{i}").mkdir()
            start(f"worker-{i}", "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                  "--memory", "3g", "--work-dir", str(work / f"worker-{i}"), "--webui-port", str(free_port()), master)
        deadline = time.monotonic() + 120
        last = ""
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as response:
                    last = response.read().decode("utf-8", "replace")
                if json.loads(last).get("aliveworkers", 0) == workers:
                    break
            except (OSError, ValueError):  # not listening yet, or a page that is not the master's JSON (yet)
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the standalone cluster did not start; last answer {last[:300]!r}; master log: "
                                     + (work / "master.log").read_text()[-2000:])
            time.sleep(1)
        yield master
    finally:
        for process, log in reversed(processes):
            os.killpg(process.pid, 15)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
            log.close()
        for jar in work.glob("worker-*/app-*/*/*.jar"):  # each executor's copy of --packages (750 MB with S3A's SDK)
            jar.unlink()
