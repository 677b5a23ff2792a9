"""The one module that touches the landing zone's and the lakehouse's files directly (issue 16).

A location is a plain local path, a ``file://`` URI (both mean a folder of this machine) or a Hadoop
file-system URI (``s3a://bucket/x``, ``abfss://…``, ``gs://…``, ``hdfs://…``). Local folders are
handled with the standard library (fast, and usable before Spark starts); every other scheme through
Hadoop's ``FileSystem`` in the running Spark JVM, so listing and reading see exactly what Spark's
readers see, with the same credentials and settings (``spark.hadoop.fs.*``).

Locations keep the spelling Spark reports for a file it read (``_metadata.file_path`` without its
``file:`` scheme, percent-decoded): a local file is its absolute path, a remote file its URI.
"""
from __future__ import annotations

import gzip
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atende.lakehouse.locations import is_storage_uri

# what a Spark without the file system's classes needs, per scheme (named in the start-up error)
_CONNECTORS = {
    "s3a": "the S3A connector: spark.packages: [hadoop-aws] (org.apache.hadoop:hadoop-aws matching Spark's Hadoop)",
    "abfss": "the Azure connector: org.apache.hadoop:hadoop-azure in spark.packages",
    "abfs": "the Azure connector: org.apache.hadoop:hadoop-azure in spark.packages",
    "gs": "the Google Cloud Storage connector: com.google.cloud.bigdataoss:gcs-connector in spark.packages",
}


# bytes per py4j call when a file's content crosses between Python and the JVM
_CHUNK = 8 << 20


class StorageError(OSError):
    """A location that cannot be used as asked; the message names it and says why."""


class LocationNotFound(StorageError, FileNotFoundError):
    pass


class PermissionDenied(StorageError, PermissionError):
    pass


class NotAFolder(StorageError, NotADirectoryError):
    pass


def location(text: str | os.PathLike) -> str:
    """A location in its one spelling: an absolute local path, or a remote URI without a trailing slash."""
    raw = os.fspath(text)
    if raw.startswith("file://"):
        raw = raw[len("file://"):]
    elif raw.startswith("file:"):
        raw = raw[len("file:"):]
    if is_storage_uri(raw):
        stripped = raw.rstrip("/")
        return stripped if not stripped.endswith(":") else raw  # hdfs:/// stays a root
    # absolute, not resolved: a landing zone reached through a symlink keeps the spelling it was given,
    # which is also the one Spark reports for its files
    return os.path.abspath(os.path.expanduser(raw))


def is_remote(loc: str) -> bool:
    return is_storage_uri(loc)


def join(loc: str, *parts: str) -> str:
    """`loc/part/...` (local paths and URIs alike)."""
    if not is_remote(loc):
        return str(Path(loc, *parts))
    return "/".join([loc.rstrip("/"), *(p.strip("/") for p in parts)])


def name_of(loc: str) -> str:
    return loc.rstrip("/").rsplit("/", 1)[-1]


class NoArrowRoute(StorageError):
    """A remote scheme the deltalake package and Arrow are not pointed at here (only s3a is); read it with Spark."""


@dataclass(frozen=True)
class ArrowAccess:
    """A location as the deltalake package and Arrow address it: for s3a://, the s3:// URI, delta-rs
    storage options and an Arrow S3 file system built from the same spark.hadoop.fs.s3a.* settings Spark
    reads the store with (without keys, both fall back to the AWS default chain, as S3A does)."""
    uri: str
    storage_options: dict[str, str]
    filesystem: Any  # pyarrow.fs.FileSystem, or None for a local folder

    def arrow_path(self, uri: str) -> str:
        """A file URI the deltalake package listed, as `filesystem` names it."""
        return uri.removeprefix("s3://") if self.filesystem is not None else uri


def arrow_access(loc: str, spark_conf: dict[str, str] | None = None) -> ArrowAccess:
    """How the deltalake package and Arrow reach the location: a local folder as it is, s3a:// through
    the S3 settings Spark was given (`spark.conf` keys spark.hadoop.fs.s3a.*); NoArrowRoute otherwise."""
    if not is_remote(loc):
        return ArrowAccess(loc, {}, None)
    scheme, _, rest = loc.partition("://")
    if scheme.lower() != "s3a":
        raise NoArrowRoute(f"{loc}: the deltalake package is not pointed at {scheme}:// here; Spark reads it")
    from pyarrow import fs as pafs

    conf = {k.removeprefix("spark.hadoop.fs.s3a."): v for k, v in (spark_conf or {}).items()
            if k.startswith("spark.hadoop.fs.s3a.")}
    secure = conf.get("connection.ssl.enabled", "true").lower() != "false"
    endpoint = conf.get("endpoint")
    if endpoint and "://" not in endpoint:
        endpoint = ("https://" if secure else "http://") + endpoint
    region = conf.get("endpoint.region") or conf.get("region")
    options: dict[str, str] = {}
    arrow: dict[str, Any] = {}
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        arrow["endpoint_override"] = endpoint
    if conf.get("access.key") and conf.get("secret.key"):
        options["AWS_ACCESS_KEY_ID"], options["AWS_SECRET_ACCESS_KEY"] = conf["access.key"], conf["secret.key"]
        arrow["access_key"], arrow["secret_key"] = conf["access.key"], conf["secret.key"]
        if conf.get("session.token"):
            options["AWS_SESSION_TOKEN"] = arrow["session_token"] = conf["session.token"]
    if region:
        options["AWS_REGION"] = arrow["region"] = region
    if endpoint and endpoint.startswith("http://"):
        options["AWS_ALLOW_HTTP"] = "true"
        arrow["scheme"] = "http"
    # S3A addresses buckets as virtual hosts unless told path style; object_store and Arrow default to the
    # path style with a custom endpoint, so say it either way
    virtual = conf.get("path.style.access", "false").lower() != "true"
    options["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = "true" if virtual else "false"
    arrow["force_virtual_addressing"] = virtual
    return ArrowAccess(f"s3://{rest}", options, pafs.S3FileSystem(**arrow))


@dataclass(frozen=True)
class Entry:
    path: str      # the location, spelt as `location` does
    name: str
    is_dir: bool
    size: int      # bytes (0 for anything but a regular file)
    is_file: bool = True  # a regular file (False: a folder, a broken link, a pipe, a socket)
    mtime_ms: int = 0  # last modification, milliseconds since the epoch


class Storage:
    """Listing, checking and small reads and copies for local folders and Hadoop file systems.

    ``spark`` is needed for remote locations only (their file system lives in its JVM).
    """

    def __init__(self, spark: Any = None):
        self.spark = spark

    # ------------------------------------------------------------------ Hadoop side
    def _jvm(self) -> Any:
        if self.spark is None:
            raise StorageError("a remote location needs a running Spark session to reach its file system")
        return self.spark._jvm

    def _fs(self, loc: str) -> tuple[Any, Any]:
        jvm = self._jvm()
        conf = self.spark._jsc.hadoopConfiguration()
        jpath = jvm.org.apache.hadoop.fs.Path(loc)
        try:
            return jpath.getFileSystem(conf), jpath
        except Exception as exc:  # py4j's Py4JJavaError: the scheme has no file system class on the classpath
            scheme = loc.split("://", 1)[0].lower()
            message = str(exc)
            # no class for the scheme at all, or one Hadoop's defaults name (fs.s3a.impl) that is not on the classpath
            if any(m in message for m in ("UnsupportedFileSystemException", "No FileSystem for scheme",
                                          "ClassNotFoundException")):
                needs = _CONNECTORS.get(scheme, f"a Hadoop file system for {scheme}:// on Spark's classpath")
                raise StorageError(f"{loc}: this Spark has no file system for {scheme}:// — it needs {needs}") from None
            raise StorageError(f"{loc}: {_java_message(exc)}") from None

    def _remote_entry(self, status: Any) -> Entry:
        path = status.getPath()
        is_file = bool(status.isFile())
        return Entry(path.toString(), path.getName(), bool(status.isDirectory()),
                     int(status.getLen()) if is_file else 0, is_file, int(status.getModificationTime()))

    # ------------------------------------------------------------------ the verbs
    def check(self, loc: str) -> None:
        """Fail now, in one line, when the location's file system is not available (a remote scheme
        whose connector this Spark lacks); a local folder needs nothing."""
        if is_remote(loc):
            self._fs(loc)

    def stat(self, loc: str) -> Entry | None:
        """What is at the location, or None when nothing is."""
        if not is_remote(loc):
            path = Path(loc)
            if not path.exists():
                return None
            is_dir, is_file = path.is_dir(), path.is_file()
            info = path.stat()
            return Entry(loc, path.name, is_dir, info.st_size if is_file else 0, is_file, int(info.st_mtime * 1000))
        fs, jpath = self._fs(loc)
        try:
            if not fs.exists(jpath):
                return None
            return self._remote_entry(fs.getFileStatus(jpath))
        except Exception as exc:
            raise _classified(loc, exc) from None

    def listdir(self, loc: str) -> list[Entry]:
        """The folder's entries, sorted by name. Raises LocationNotFound, PermissionDenied or StorageError
        or NotAFolder."""
        if not is_remote(loc):
            path = Path(loc)
            if not path.exists():
                raise LocationNotFound(f"not found: {loc}")
            if not path.is_dir():
                raise NotAFolder(f"not a folder: {loc}")
            if not os.access(path, os.R_OK | os.X_OK):
                raise PermissionDenied(f"cannot be read (permission denied): {loc}")
            entries = []
            for child in path.iterdir():
                is_dir, is_file = child.is_dir(), child.is_file()
                info = child.stat() if is_dir or is_file else None
                entries.append(Entry(os.path.abspath(child), child.name, is_dir,
                                     info.st_size if info and is_file else 0, is_file,
                                     int(info.st_mtime * 1000) if info else 0))
            return sorted(entries, key=lambda e: e.name)
        fs, jpath = self._fs(loc)
        try:
            status = fs.getFileStatus(jpath)
            if not status.isDirectory():
                raise NotAFolder(f"not a folder: {loc}")
            return sorted((self._remote_entry(s) for s in fs.listStatus(jpath)), key=lambda e: e.name)
        except StorageError:
            raise
        except Exception as exc:
            raise _classified(loc, exc) from None

    def readable(self, entry: Entry) -> bool:
        """Whether this process may read the file (or list the folder)."""
        if not is_remote(entry.path):
            return os.access(entry.path, os.R_OK | (os.X_OK if entry.is_dir else 0))
        # an object store answers for its credentials when the object is read; the listing already worked
        return True

    def size(self, loc: str) -> int:
        """Bytes under the location (a file's size, or every file below a folder)."""
        if not is_remote(loc):
            path = Path(loc)
            if path.is_file():
                return path.stat().st_size
            return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
        fs, jpath = self._fs(loc)
        try:
            return int(fs.getContentSummary(jpath).getLength()) if fs.exists(jpath) else 0
        except Exception as exc:
            raise _classified(loc, exc) from None

    def gzip_problem(self, loc: str) -> str | None:
        """Why a .gz file does not decompress to its end (None: it does). Streamed, never held in memory;
        a remote file is read inside the JVM (one call), with the JDK's own gzip reader."""
        if not is_remote(loc):
            try:
                with gzip.open(loc, "rb") as stream:
                    while stream.read(1 << 20):
                        pass
            except (OSError, EOFError, zlib.error) as exc:
                return f"unreadable gzip file: {exc}"
            return None
        fs, jpath = self._fs(loc)
        jvm = self._jvm()
        try:
            raw = fs.open(jpath)
        except Exception as exc:
            raise _classified(loc, exc) from None
        try:
            stream = jvm.java.util.zip.GZIPInputStream(raw, 1 << 20)
            stream.transferTo(jvm.java.io.OutputStream.nullOutputStream())
            stream.close()
        except Exception as exc:
            message = _java_message(exc)
            # what the JDK's gzip reader says of a bad stream; anything else (a timeout, a reset
            # connection) is the store's fault, not the file's, and must not quarantine it
            if message.startswith(("ZipException", "EOFException")):
                return f"unreadable gzip file: {message}"
            raise _classified(loc, exc) from None
        finally:
            raw.close()
        return None

    def copy_folder_in(self, local: str | os.PathLike, loc: str) -> None:
        """Copy a local folder's files to the location (replacing what is there): documents written by
        libraries that only know local files (Great Expectations' data docs) end up beside the tables."""
        if not is_remote(loc):
            if Path(local).resolve() != Path(loc):
                shutil.copytree(local, loc, dirs_exist_ok=True)
            return
        fs, _ = self._fs(loc)
        jvm = self._jvm()
        base = Path(local)
        # file by file, one PUT each on an object store (S3A's copyFromLocalFile stalled against an
        # S3-compatible test server; create + write is the plainest request there is)
        for file in sorted(p for p in base.rglob("*") if p.is_file()):
            target = join(loc, *file.relative_to(base).parts)
            try:
                out = fs.create(jvm.org.apache.hadoop.fs.Path(target), True)
                try:
                    with file.open("rb") as source:
                        while chunk := source.read(_CHUNK):
                            out.write(chunk)
                finally:
                    out.close()
            except Exception as exc:
                raise _classified(target, exc) from None


    def files(self, loc: str) -> list[Entry]:
        """Every regular file below the folder (at any depth), sorted by path; none when nothing is there."""
        if not is_remote(loc):
            base = Path(loc)
            found = []
            for file in base.rglob("*"):
                if file.is_file():
                    info = file.stat()
                    found.append(Entry(os.path.abspath(file), file.name, False, info.st_size, True,
                                       int(info.st_mtime * 1000)))
            return sorted(found, key=lambda e: e.path)
        fs, jpath = self._fs(loc)
        try:
            if not fs.exists(jpath):
                return []
            listing = fs.listFiles(jpath, True)
            found = []
            while listing.hasNext():
                found.append(self._remote_entry(listing.next()))
            return sorted(found, key=lambda e: e.path)
        except Exception as exc:
            raise _classified(loc, exc) from None

    def makedirs(self, loc: str) -> None:
        """Create the folder and its parents (an object store has no folders: nothing to do there but ask)."""
        if not is_remote(loc):
            Path(loc).mkdir(parents=True, exist_ok=True)
            return
        fs, jpath = self._fs(loc)
        try:
            fs.mkdirs(jpath)
        except Exception as exc:
            raise _classified(loc, exc) from None

    def move(self, source: str, target: str) -> None:
        """Move a file, creating the target's folder and replacing a file there (a rename on a local disk
        and HDFS; a copy and a delete on an object store)."""
        if not is_remote(source):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
            return
        fs, jsource = self._fs(source)
        jvm = self._jvm()
        jtarget = jvm.org.apache.hadoop.fs.Path(target)
        try:
            fs.mkdirs(jtarget.getParent())
            fs.delete(jtarget, False)
            if not fs.rename(jsource, jtarget):
                raise StorageError(f"could not move {source} to {target}")
        except StorageError:
            raise
        except Exception as exc:
            raise _classified(source, exc) from None

    def relative(self, loc: str, base: str) -> str:
        """The path of `loc` below the folder `base`, '/'-separated, whatever spelling each has: a local file
        reached through a symlink (delta-rs and Spark report resolved paths), a Hadoop URI qualified by its
        file system (hdfs:///x listed as hdfs://namenode:8020/x)."""
        if not is_remote(base):
            return Path(location(loc)).resolve().relative_to(Path(base).resolve()).as_posix()
        fs, jbase = self._fs(base)
        jvm = self._jvm()
        qualified = fs.makeQualified(jbase).toUri().getPath().rstrip("/")
        child = fs.makeQualified(jvm.org.apache.hadoop.fs.Path(loc)).toUri().getPath()
        if not child.startswith(qualified + "/"):
            raise StorageError(f"{loc} is not below {base}")
        return child[len(qualified) + 1:]

    def copy_folder_out(self, loc: str, local: str | os.PathLike) -> None:
        """Copy the location's files into a local folder (created; files there are replaced): what Spark
        wrote where every executor reaches it, handed to a library that only knows local files (MLflow)."""
        target = Path(local)
        if not is_remote(loc):
            if Path(loc).resolve() != target.resolve():
                shutil.copytree(loc, target, dirs_exist_ok=True)
            return
        fs, jpath = self._fs(loc)
        jvm = self._jvm()
        try:
            base = fs.makeQualified(jpath).toString().rstrip("/")
            files = fs.listFiles(jpath, True)
            while files.hasNext():
                status = files.next()
                rel = status.getPath().toString()[len(base):].lstrip("/")
                out = target / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                stream = fs.open(status.getPath())
                try:
                    with out.open("wb") as sink:
                        # in chunks: a model's files can be larger than one py4j message should be
                        remaining = int(status.getLen())
                        while remaining > 0:
                            chunk = bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream, min(_CHUNK, remaining)))
                            sink.write(chunk)
                            remaining -= len(chunk)
                finally:
                    stream.close()
        except StorageError:
            raise
        except Exception as exc:
            raise _classified(loc, exc) from None

    def remove(self, loc: str) -> None:
        """Delete the file or folder at the location (nothing there: nothing to do)."""
        if not is_remote(loc):
            path = Path(loc)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink()
            return
        fs, jpath = self._fs(loc)
        try:
            fs.delete(jpath, True)
        except Exception as exc:
            raise _classified(loc, exc) from None

    def write_text(self, loc: str, text: str) -> None:
        """Write a small text file at the location (replacing it), creating its folder."""
        if not is_remote(loc):
            Path(loc).parent.mkdir(parents=True, exist_ok=True)
            Path(loc).write_text(text, encoding="utf-8")
            return
        fs, jpath = self._fs(loc)
        try:
            out = fs.create(jpath, True)
            try:
                out.write(text.encode("utf-8"))
            finally:
                out.close()
        except Exception as exc:
            raise _classified(loc, exc) from None

    def read_text(self, loc: str) -> str:
        """A small text file's content (UTF-8)."""
        if not is_remote(loc):
            try:
                return Path(loc).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise LocationNotFound(f"not found: {loc}") from None
        fs, jpath = self._fs(loc)
        jvm = self._jvm()
        try:
            stream = fs.open(jpath)
            try:
                return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream)).decode("utf-8")
            finally:
                stream.close()
        except Exception as exc:
            raise _classified(loc, exc) from None


def _java_message(exc: Exception) -> str:
    java = getattr(exc, "java_exception", None)
    if java is not None:
        return f"{java.getClass().getSimpleName()}: {java.getMessage()}"
    return str(exc).splitlines()[0][:200]


def _classified(loc: str, exc: Exception) -> StorageError:
    message = _java_message(exc)
    if "FileNotFoundException" in message:
        return LocationNotFound(f"not found: {loc}")
    if message.startswith(("AccessDeniedException", "AccessControlException")) or "403 Forbidden" in message:
        return PermissionDenied(f"cannot be read (permission denied): {loc} ({message})")
    return StorageError(f"{loc}: {message}")
