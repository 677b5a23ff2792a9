"""lakehouse.storage: locations, and the same verbs on local folders (standard library) and through
Hadoop's FileSystem in the Spark JVM (the route s3a://, abfss://, gs:// and hdfs:// take).

The Hadoop route is exercised here on `file:` URIs: `is_remote` is widened so that a `file:///…` location
goes through the JVM exactly as an `s3a://…` one would (same calls, another FileSystem class).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from atende.lakehouse import storage as st


def test_locations_have_one_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert st.location("lake") == str(tmp_path / "lake")
    assert st.location(f"file://{tmp_path}/lake/") == str(tmp_path / "lake")
    assert st.location(f"file:{tmp_path}/lake") == str(tmp_path / "lake")
    assert st.location("s3a://bucket/lake/") == "s3a://bucket/lake"
    assert st.location(Path("lake")) == str(tmp_path / "lake")
    assert st.join("s3a://bucket/lake", "gold", "t") == "s3a://bucket/lake/gold/t"
    assert st.join(str(tmp_path), "gold", "t") == str(tmp_path / "gold" / "t")
    assert st.name_of("s3a://bucket/lake/x.csv") == "x.csv"


def _tree(root: Path) -> None:
    (root / "calls" / "2026-03-01").mkdir(parents=True)
    (root / "calls" / "2026-03-01" / "a b.csv").write_text("id\n1\n")
    (root / "calls" / "2026-03-01" / "ok.csv.gz").write_bytes(gzip.compress(b"id\n1\n" * 1000))
    whole = gzip.compress(b"id\n1\n" * 1000)
    (root / "calls" / "2026-03-01" / "cut.csv.gz").write_bytes(whole[: len(whole) // 2])
    (root / "notes.txt").write_text("x")


@pytest.fixture(params=["local", "hadoop"])
def route(request, spark, monkeypatch, tmp_path):
    """(storage, location of tmp_path) on one route."""
    _tree(tmp_path)
    if request.param == "local":
        return st.Storage(), str(tmp_path)
    monkeypatch.setattr(st, "is_remote", lambda loc: loc.startswith("file:"))
    return st.Storage(spark), f"file://{tmp_path}"


def test_listing_stat_and_size_agree_on_both_routes(route):
    storage, root = route
    entries = storage.listdir(root)
    assert [(e.name, e.is_dir) for e in entries] == [("calls", True), ("notes.txt", False)]
    day = st.join(root, "calls", "2026-03-01")
    files = storage.listdir(day)
    assert [e.name for e in files] == ["a b.csv", "cut.csv.gz", "ok.csv.gz"]
    assert files[0].size == 5 and files[0].path.endswith("/calls/2026-03-01/a b.csv")
    assert storage.stat(st.join(root, "nothing")) is None
    assert storage.stat(day).is_dir
    assert storage.size(day) == sum(e.size for e in files)
    assert storage.size(st.join(root, "nothing")) == 0


def test_errors_name_the_location_on_both_routes(route):
    storage, root = route
    with pytest.raises(st.LocationNotFound, match="not found: .*nothing"):
        storage.listdir(st.join(root, "nothing"))
    with pytest.raises(st.StorageError, match="not a folder: .*notes.txt"):
        storage.listdir(st.join(root, "notes.txt"))


def test_a_truncated_gzip_is_found_by_streaming_it_on_both_routes(route):
    storage, root = route
    day = st.join(root, "calls", "2026-03-01")
    assert storage.gzip_problem(st.join(day, "ok.csv.gz")) is None
    problem = storage.gzip_problem(st.join(day, "cut.csv.gz"))
    assert problem is not None and problem.startswith("unreadable gzip file")


def test_a_local_folder_is_copied_in_on_both_routes(route, tmp_path_factory):
    storage, root = route
    docs = tmp_path_factory.mktemp("docs")
    (docs / "sub").mkdir()
    (docs / "sub" / "index.html").write_text("<html/>")
    storage.copy_folder_in(str(docs), st.join(root, "_quality", "run-1"))
    local_root = Path(root.removeprefix("file://"))
    assert (local_root / "_quality" / "run-1" / "sub" / "index.html").read_text() == "<html/>"



def test_a_folder_is_copied_out_text_written_read_and_removed_on_both_routes(route, tmp_path_factory):
    storage, root = route
    model = st.join(root, "_staging", "models", "save-1")
    storage.write_text(st.join(model, "model.json"), '{"k": "ação"}')
    storage.write_text(st.join(model, "als", "metadata", "part-0"), "x" * 70_000)
    assert storage.read_text(st.join(model, "model.json")) == '{"k": "ação"}'
    with pytest.raises(st.LocationNotFound, match="not found: .*missing.json"):
        storage.read_text(st.join(model, "missing.json"))

    out = tmp_path_factory.mktemp("out") / "model"
    storage.copy_folder_out(model, out)
    assert (out / "model.json").read_text(encoding="utf-8") == '{"k": "ação"}'
    assert (out / "als" / "metadata" / "part-0").read_text() == "x" * 70_000

    storage.remove(model)
    assert storage.stat(model) is None
    storage.remove(model)  # nothing there: nothing to do
    assert storage.stat(st.join(root, "calls")) is not None  # its neighbours are left alone


def test_files_are_listed_at_any_depth_moved_and_folders_made_on_both_routes(route):
    storage, root = route
    files = storage.files(st.join(root, "calls"))
    # (Hadoop spells a file: URI file:/x, so compare what follows the root)
    assert [f.path.split("/calls/", 1)[1] for f in files] == [
        "2026-03-01/a b.csv", "2026-03-01/cut.csv.gz", "2026-03-01/ok.csv.gz"]
    assert files[0].size == 5 and files[0].mtime_ms > 1_700_000_000_000
    assert storage.files(st.join(root, "nothing")) == []

    storage.makedirs(st.join(root, "t", "empty"))
    assert storage.stat(st.join(root, "t", "empty")).is_dir
    target = st.join(root, "t", "date=2026-03-01", "a b.csv")
    storage.move(files[0].path, target)
    assert storage.stat(files[0].path) is None
    assert storage.stat(target).size == 5


def test_a_files_path_below_a_folder_whatever_its_spelling_on_both_routes(route, tmp_path):
    storage, root = route
    day = st.join(root, "calls", "2026-03-01")
    for entry in storage.files(day):  # Hadoop lists file:/x for file:///x; the relative path is the same
        assert storage.relative(entry.path, root) == f"calls/2026-03-01/{entry.name}"
    with pytest.raises((ValueError, st.StorageError)):
        storage.relative(st.join(root, "notes.txt"), day)
    (tmp_path.parent / f"{tmp_path.name}-link").symlink_to(tmp_path)
    linked = str(tmp_path.parent / f"{tmp_path.name}-link")
    assert st.Storage().relative(str(tmp_path / "calls" / "2026-03-01" / "ok.csv.gz"), linked) == "calls/2026-03-01/ok.csv.gz"

def test_a_scheme_spark_has_no_file_system_for_fails_naming_the_connector(spark):
    # the suite's session carries neither the Google Cloud Storage connector nor the S3A one (conftest); a run on
    # s3a:// with the connector is tests/test_small_zone.py's cluster run and tests/test_s3a.py
    with pytest.raises(st.StorageError, match=r"no file system for gs://.*gcs-connector"):
        st.Storage(spark).check("gs://bucket/lake")
    with pytest.raises(st.StorageError, match=r"no file system for s3a://.*spark\.packages: \[hadoop-aws\]"):
        st.Storage(spark).check("s3a://bucket/lake")
    with pytest.raises(st.StorageError, match="needs a running Spark session"):
        st.Storage().listdir("s3a://bucket/lake")


def test_a_lakehouse_on_such_a_scheme_fails_at_start(spark, settings):
    from atende.lakehouse.tables import Lakehouse, LakehouseError

    with pytest.raises(LakehouseError, match="gcs-connector"):
        Lakehouse(spark, "gs://bucket/lake", settings.storage.model_copy(update={"engine": "delta-spark"}))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file whatever its mode")
def test_an_unreadable_local_folder_is_said_so(tmp_path):
    folder = tmp_path / "closed"
    folder.mkdir()
    folder.chmod(0)
    try:
        with pytest.raises(st.PermissionDenied, match="permission denied"):
            st.Storage().listdir(str(folder))
    finally:
        folder.chmod(0o755)


def test_delta_rs_and_arrow_reach_s3a_with_the_settings_spark_was_given():
    conf = {"spark.hadoop.fs.s3a.endpoint": "127.0.0.1:9000", "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
            "spark.hadoop.fs.s3a.path.style.access": "true", "spark.hadoop.fs.s3a.access.key": "AK",
            "spark.hadoop.fs.s3a.secret.key": "SK", "spark.hadoop.fs.s3a.endpoint.region": "sa-east-1",
            "spark.sql.shuffle.partitions": "4"}
    access = st.arrow_access("s3a://bucket/lake", conf)
    assert access.uri == "s3://bucket/lake"
    assert access.storage_options == {
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK",
        "AWS_REGION": "sa-east-1", "AWS_ALLOW_HTTP": "true", "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "false"}
    assert access.filesystem.region == "sa-east-1"
    assert access.arrow_path("s3://bucket/lake/gold/t/part-0.parquet") == "bucket/lake/gold/t/part-0.parquet"
    # no settings: the AWS default chain and virtual-host addressing, as S3A's own defaults
    default = st.arrow_access("s3a://bucket/lake")
    assert default.storage_options == {"AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "true"}
    assert default.filesystem is not None
    assert st.arrow_access("/data/lake").filesystem is None
    with pytest.raises(st.NoArrowRoute, match="Spark reads it"):
        st.arrow_access("abfss://c@account.dfs.core.windows.net/lake")
