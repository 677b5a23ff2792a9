"""The distribution puts one name, `atende`, at the top of site-packages, and folders of a user's own
named like ours (an Airflow DAG folder with models/, a Databricks repo with jobs/) change nothing."""
from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("pipelines", "jobs", "features", "models", "conf", "lakehouse", "synthetic")


def test_a_users_folders_named_like_ours_do_not_shadow_atende(tmp_path):
    for name in OURS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the user\\'s own folder was imported')\n")
    script = tmp_path / "dag.py"
    script.write_text(
        "import atende.jobs.cli, atende.models.tone, atende.pipelines.kpis, atende.conf\n"
        "from atende.conf import load_settings\n"
        "load_settings('local', environ={})\n"
        "print(atende.models.tone.__file__)\n"
    )
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).resolve() == REPO / "models" / "tone.py"


def test_no_module_imports_our_packages_by_their_bare_names():
    offenders = []
    for path in REPO.rglob("*.py"):
        if any(part in (".venv", "build", ".git") for part in path.parts):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("from", "import") and words[1].split(".")[0] in OURS:
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# Modules that import our own modules inside functions on purpose: the CLI imports what a command runs when it
# runs (`atende --help` and `atende report` start without Spark), and the gold reader reaches Spark only when
# DuckDB cannot read a table.
LAZY_BY_DESIGN = {"jobs/cli.py", "jobs/gold_query.py"}


def test_our_own_and_standard_library_imports_sit_at_the_top_of_the_module():
    """Third-party libraries only some commands need (MLflow, scikit-learn, Great Expectations, deltalake) may be
    imported where used; our own modules and the standard library are imported once, at the top."""
    offenders = []
    for path in REPO.rglob("*.py"):
        rel = path.relative_to(REPO).as_posix()
        if rel.split("/")[0] in (".venv", "build", ".git", "tests", "bench", "deploy") or rel in LAZY_BY_DESIGN:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and not inner.level:
                    roots = [(inner.module or "").split(".")[0]]
                elif isinstance(inner, ast.Import):
                    roots = [alias.name.split(".")[0] for alias in inner.names]
                else:
                    continue
                if any(root == "atende" or root in sys.stdlib_module_names for root in roots):
                    offenders.append(f"{rel}:{inner.lineno}: {ast.unparse(inner)}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.slow
def test_the_wheel_holds_only_the_atende_package(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("atende-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"atende", next(t for t in top if t.endswith(".dist-info"))}, sorted(top)
    # every package of ours is in it, with the embedded configuration
    for package in OURS:
        assert f"atende/{package}/__init__.py" in names
    assert "atende/conf/local.yaml" in names
    for package in ("pipelines/ingest", "pipelines/identity"):
        assert f"atende/{package}/__init__.py" in names
    assert not any(name.startswith(("atende/tests/", "atende/bench/", "atende/docs/")) for name in names)


def test_the_generator_imports_nothing_of_the_pipeline():
    """The synthetic generator is a witness the pipeline is judged against: it must not share code with it."""
    offenders = []
    for path in sorted((REPO / "synthetic").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("from", "import") and words[1].startswith("atende.") \
                    and not words[1].startswith("atende.synthetic"):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
