"""deploy/: the Airflow DAG and the Databricks job are one task per job of `atende run`, in order, and every
command they give is one the CLI accepts (parsed by atende's own argument parser).

Airflow is not a dependency of atende, so the DAG file is loaded against a stand-in `airflow` module that
records the DAGs, tasks and dependencies it declares (the operators' arguments are what Airflow would run).
"""
from __future__ import annotations

import importlib.util
import json
import shlex
import sys
import types
from pathlib import Path

import pytest

from atende.jobs.cli import build_parser
from atende.jobs.run import STEPS

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


class _Task:
    def __init__(self, dag, task_id: str, bash_command: str):
        self.task_id, self.bash_command, self.upstream = task_id, bash_command, []
        dag.tasks.append(self)

    def __rshift__(self, other):
        other.upstream.append(self.task_id)
        return other


class _Dag:
    current = None
    made: dict = {}

    def __init__(self, dag_id: str, **kwargs):
        self.dag_id, self.kwargs, self.tasks = dag_id, kwargs, []
        _Dag.made[dag_id] = self

    def __enter__(self):
        _Dag.current = self
        return self

    def __exit__(self, *exc):
        _Dag.current = None


@pytest.fixture
def airflow_dags(monkeypatch):
    airflow = types.ModuleType("airflow")
    airflow.DAG = _Dag
    bash = types.ModuleType("airflow.operators.bash")
    bash.BashOperator = lambda task_id, bash_command: _Task(_Dag.current, task_id, bash_command)
    monkeypatch.setitem(sys.modules, "airflow", airflow)
    monkeypatch.setitem(sys.modules, "airflow.operators", types.ModuleType("airflow.operators"))
    monkeypatch.setitem(sys.modules, "airflow.operators.bash", bash)
    timetables = types.ModuleType("airflow.timetables.interval")
    timetables.CronDataIntervalTimetable = lambda cron, timezone: ("data-interval", cron, timezone)
    monkeypatch.setitem(sys.modules, "airflow.timetables", types.ModuleType("airflow.timetables"))
    monkeypatch.setitem(sys.modules, "airflow.timetables.interval", timetables)
    monkeypatch.setenv("ATENDE_LAKEHOUSE", "/data/a lake")
    monkeypatch.setenv("ATENDE_CONF", "/etc/atende.yaml")
    _Dag.made = {}
    spec = importlib.util.spec_from_file_location("atende_airflow_dag", DEPLOY / "airflow_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return _Dag.made


def _parsed(argv: list[str]):
    assert argv[0] == "atende", argv
    return build_parser().parse_args(argv[1:])


def test_the_airflow_dag_is_one_task_per_step_in_order_with_commands_the_cli_takes(airflow_dags):
    daily = airflow_dags["atende_daily"]
    assert [t.task_id for t in daily.tasks] == list(STEPS)
    assert [t.upstream for t in daily.tasks] == [[]] + [[s] for s in STEPS[:-1]]
    assert daily.kwargs["max_active_runs"] == 1
    # {{ ds }} is the day that ended only under a data-interval timetable (Airflow 3's cron default differs)
    assert daily.kwargs["schedule"][0] == "data-interval"
    for task in daily.tasks:
        args = _parsed(shlex.split(task.bash_command.replace("{{ ds }}", "2026-03-01")))
        assert (args.command, args.step, args.conf_file) == ("run", task.task_id, "/etc/atende.yaml")
        assert args.lakehouse == "/data/a lake"  # quoted for the shell
        assert (args.landing is not None) == (task.task_id == "ingest")
        assert (str(args.date) if args.date else None) == ("2026-03-01" if task.task_id == "ingest" else None)
    upkeep = airflow_dags["atende_upkeep"]
    assert [(t.task_id, t.upstream) for t in upkeep.tasks] == [("optimize", []), ("vacuum", ["optimize"])]
    assert [_parsed(shlex.split(t.bash_command)).maintain for t in upkeep.tasks] == ["optimize", "vacuum"]


def test_the_databricks_job_is_one_wheel_task_per_step_in_order():
    job = json.loads((DEPLOY / "databricks_job.json").read_text())
    tasks = job["tasks"]
    assert [t["task_key"] for t in tasks] == list(STEPS)
    assert [[d["task_key"] for d in t.get("depends_on", [])] for t in tasks] == [[]] + [[s] for s in STEPS[:-1]]
    assert job["max_concurrent_runs"] == 1
    for task in tasks:
        wheel = task["python_wheel_task"]
        assert (wheel["package_name"], wheel["entry_point"]) == ("atende", "atende")
        params = [p.replace("{{job.parameters.", "").replace("}}", "") for p in wheel["parameters"]]
        args = build_parser().parse_args(params)
        assert (args.command, args.step, args.env) == ("run", task["task_key"], "cluster")
        assert (args.landing is not None) == (task["task_key"] == "ingest")


def test_step_is_one_of_the_jobs():
    [run] = [a for a in build_parser()._subparsers._group_actions[0].choices["run"]._actions if a.dest == "step"]
    assert tuple(run.choices) == STEPS  # the CLI's list is the run's order (written twice: the CLI starts fast)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--lakehouse", "x", "--step", "everything"])
