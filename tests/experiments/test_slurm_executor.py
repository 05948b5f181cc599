"""The Slurm executor: options and plans without Slurm; sweeps, a scancel and a restart with one.

The tests that need Slurm use whatever ``sinfo`` answers for (``.ci/run``
starts a one-node Slurm with ``scripts/slurm-local``); without one they are
skipped with the reason. Every job runs ``migperf`` on a simulated GPU
(``--simulate``), each job its own simulated machine.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.errors import ConfigError, UsageError
from migperf.experiments.cluster.slurm import SlurmExecutor
from migperf.experiments.cluster.slurm_cli import JobState, parse_options, slurm_problem
from migperf.experiments.cluster.slurm_driver import chunk, job_script
from migperf.experiments.config import parse_config
from migperf.experiments.executor import open_executor
from migperf.experiments.executor_spec import parse_executor
from migperf.results import ResultsStore

SIM = "a100-80gb:mig-off"

CONFIG = """
name: {name}
layouts: [current]
stop: {{warmup_iterations: 1, min_iterations: 3, min_duration_s: {duration}, max_duration_s: 5}}
timeout_s: 60
telemetry: {{enabled: false}}
jobs:
  - workload: gemm
    model_args: {{n: 32}}
    sweep: {{batch_size: {batch_sizes}}}
executor: {{slurm: {{jobs: 2, workdir: {workdir}, poll_s: 0.3}}}}
"""


def write_config(
    tmp_path: Path, name: str, duration: float = 0.1, sizes: str = "[1, 2, 4, 8]"
) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        CONFIG.format(name=name, duration=duration, batch_sizes=sizes, workdir=tmp_path / "work")
    )
    return path


def runs(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [
            dict(r) for r in con.execute("SELECT run_key, attempt, status, error, params FROM runs")
        ]
    finally:
        con.close()


# ------------------------------------------------------------------ without Slurm


def test_the_slurm_executor_is_registered_with_a_partition_and_options() -> None:
    spec = parse_executor("slurm:gpu")
    assert (spec.kind, spec.address) == ("slurm", "gpu")
    spec = parse_executor({"slurm": {"jobs": 4, "gres": "gpu:1g.10gb:1"}})
    assert spec.kind == "slurm" and spec.options == {"jobs": 4, "gres": "gpu:1g.10gb:1"}
    with pytest.raises(UsageError, match="one executor with its options"):
        parse_executor({"slurm": {}, "ray": {}})
    opts = parse_options({"gres": "gpu:1g.10gb:1", "time": "00:10:00", "exclusive": True}, "gpu")
    assert opts.sbatch_options() == [
        "--nodes=1",
        "--ntasks=1",
        "--no-requeue",
        "--partition=gpu",
        "--time=00:10:00",
        "--gres=gpu:1g.10gb:1",
        "--exclusive",
    ]
    assert parse_options({"nodelist": ["a", "b", "c"]}, None).jobs == 3
    with pytest.raises(UsageError, match="executor slurm: jobz") as info:
        parse_options({"jobz": 3}, None)
    assert "partition" in info.value.hint


def test_the_executor_mapping_is_kept_out_of_the_config_hash(tmp_path: Path) -> None:
    cfg = parse_config(write_config(tmp_path, "x").read_text())
    assert cfg.executor == {"slurm": {"jobs": 2, "workdir": str(tmp_path / "work"), "poll_s": 0.3}}
    plain = parse_config(write_config(tmp_path, "x").read_text().replace("executor:", "#"))
    assert cfg.config_hash() == plain.config_hash()
    with pytest.raises(Exception, match="unknown executor 'dask'"):
        parse_config(plain.model_dump_json().replace('"local"', '"dask"'), "c.yaml")


def test_runs_are_chunked_in_plan_order_and_the_job_script_quotes_its_arguments() -> None:
    assert chunk(list("abcde"), 2) == [["a", "b", "c"], ["d", "e"]]
    assert chunk(list("ab"), 5) == [["a"], ["b"]]
    assert chunk([], 3) == []
    script = job_script(
        "/opt/py thon/bin/python", "run", Path("/w/a b.json"), Path("/w/s;rm.jsonl")
    )
    assert script.splitlines()[-1] == (
        "exec '/opt/py thon/bin/python' -m migperf.experiments.cluster.slurm_job run "
        "'/w/a b.json' '/w/s;rm.jsonl'"
    )
    assert JobState("12", "TIMEOUT", "TimeLimit", exit_code="0:15").describe() == (
        "slurm job 12 TIMEOUT (reason TimeLimit, exit code 0:15)"
    )


def test_a_layout_sweep_needs_whole_nodes(tmp_path: Path) -> None:
    cfg = parse_config(write_config(tmp_path, "x").read_text().replace("[current]", '["0", "9,9"]'))
    ex = SlurmExecutor(parse_options({"workdir": str(tmp_path)}, None))
    with pytest.raises(ConfigError, match="only on a whole node") as info:
        ex.plan(cfg, "x.yaml")
    assert "exclusive: true" in info.value.hint


def test_without_slurm_commands_the_option_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match="needs Slurm's client commands") as info:
        open_executor("slurm")
    assert "scripts/slurm-local" in info.value.hint


# ------------------------------------------------------------------ with Slurm

_problem = slurm_problem()
_skip_without_slurm = pytest.mark.skipif(
    _problem is not None,
    reason=f"no Slurm running here ({_problem}); start one with "
    '`eval "$(scripts/slurm-local start)"` (as root, needs slurm-wlm and munge)',
)


def needs_slurm(test: Any) -> Any:
    """A test against a running Slurm: skipped without one, and ``slow`` (run by ``pytest -m slow``)."""
    return pytest.mark.slow(_skip_without_slurm(test))


@needs_slurm
def test_a_sweep_runs_as_slurm_jobs_and_each_run_is_stored_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, "e2e")
    db = tmp_path / "r.db"
    result = CliRunner().invoke(
        app, ["--simulate", SIM, "run", str(path), "--results", str(db), "--executor", "slurm"]
    )
    assert result.exit_code == 0, result.output
    assert "mode: current layouts" in result.output
    assert "4/4 run(s) done" in result.output
    rows = runs(db)
    assert sorted(r["status"] for r in rows) == ["ok"] * 4
    assert len({r["run_key"] for r in rows}) == 4
    jobs = {json.loads(r["params"])["node"]["job_id"] for r in rows}
    assert len(jobs) == 2  # two jobs, two runs each
    for jid in jobs:
        assert f"slurm job {jid}" in result.output


@needs_slurm
def test_a_job_cancelled_mid_run_fails_that_run_and_requeues_the_rest(tmp_path: Path) -> None:
    cfg = parse_config(write_config(tmp_path, "cancel", duration=1.5).read_text())
    events: list[tuple[str, dict[str, Any]]] = []
    cancelled: list[str] = []

    def on_event(kind: str, **info: Any) -> None:
        events.append((kind, info))
        if kind == "run_start" and not cancelled:
            cancelled.append(info["node"].job_id)
            cancelled.append(info["key"])
            subprocess.run(["scancel", info["node"].job_id], check=True)

    with open_executor(cfg.executor, simulate=SIM) as ex, ResultsStore(tmp_path / "r.db") as store:
        plan = ex.plan(cfg, "cancel.yaml", dry_run=False)
        report = ex.run(plan, store, on_event=on_event)
    job_id, key = cancelled
    rows = {r["run_key"]: r for r in runs(tmp_path / "r.db")}
    assert len(rows) == 4
    assert rows[key]["status"] != "ok"
    assert f"slurm job {job_id} CANCELLED" in rows[key]["error"]
    others = [r for k, r in rows.items() if k != key]
    assert [r["status"] for r in others] == ["ok"] * 3
    requeued = [i for k, i in events if k == "requeued"]
    assert requeued and requeued[0]["source"].job_id == job_id
    assert report.failed == 1 and report.stored == 3


@needs_slurm
def test_a_restarted_driver_resumes_from_the_jobs_and_their_shards(tmp_path: Path) -> None:
    path = write_config(tmp_path, "restart", duration=0.8)
    db = tmp_path / "r.db"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "migperf", "--simulate", SIM, "run", str(path)]
    driver = subprocess.Popen(
        [*cmd, "--results", str(db)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60

    def stored() -> int:
        try:
            return len(runs(db)) if db.exists() else 0
        except sqlite3.Error:  # the driver is still creating the store
            return 0

    while time.monotonic() < deadline and not stored():
        time.sleep(0.2)
    driver.send_signal(signal.SIGKILL)  # the driver dies; its jobs go on
    driver.wait()
    assert 1 <= len(runs(db)) < 4
    again = subprocess.run(
        [*cmd, "--results", str(db)], env=env, capture_output=True, text=True, timeout=120
    )
    # Without --resume: refused (the old jobs still run, or they stored runs already).
    assert again.returncode == 2
    assert "still queued or running" in again.stderr or "already holds" in again.stderr
    resumed = subprocess.run(
        [*cmd, "--results", str(db), "--resume"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    rows = runs(db)
    assert sorted(r["status"] for r in rows) == ["ok"] * 4
    assert len({r["run_key"] for r in rows}) == 4 and all(r["attempt"] == 1 for r in rows)
    state = json.loads(next((tmp_path / "work").glob("restart-*/state.json")).read_text())
    assert len(state["jobs"]) == 2  # the old jobs finished every run: none submitted again
