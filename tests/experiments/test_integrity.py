"""`migperf run` as two operators on one GPU node use it: reruns, two shells, kills, signals.

Each test is a case that lost a layout or a measurement before GPU leases,
per-GPU journals and attempts existed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.mig.manager import apply_layout
from migperf.mig.snapshot import take_snapshot
from migperf.nvml import open_nvml

SPEC = "a100-80gb"
cli = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    r = cli.invoke(app, ["--simulate", SPEC, *args])
    return r.exit_code, r.stdout, r.stderr


def layout() -> str:
    with open_nvml(SPEC) as nvml:
        return take_snapshot(nvml, 0).describe()


def rows(db: Path, all_attempts: bool = True) -> list[tuple[str, int, str]]:
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    table = "runs" if all_attempts else "latest_runs"
    out = con.execute(
        f"SELECT run_key, attempt, status FROM {table} ORDER BY run_id"  # noqa: S608
    ).fetchall()
    con.close()
    return out


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "migperf", "--simulate", SPEC, *args],
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
    )


def wait_rows(db: Path, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(rows(db)) >= n:
                return
        except sqlite3.OperationalError:
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError(f"{n} run(s) did not appear in {db}")


def test_a_rerun_is_refused_up_front_instead_of_measuring_and_dropping(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg, db = tiny_config(layouts='["0"]', batch_sizes="[1, 2]"), tmp_path / "r.db"
    code, _, err = run("run", str(cfg), "--results", str(db))
    assert code == 0, err
    first = rows(db)
    assert [r[1:] for r in first] == [(1, "ok"), (1, "ok")]
    code, _, err = run("run", str(cfg), "--results", str(db))
    assert code == 2
    assert "already holds 2 run(s) of experiment 'tiny'" in err
    assert "--resume" in err and "--rerun" in err
    assert "run 1/" not in err  # nothing was measured
    assert rows(db) == first
    # --rerun measures everything again and keeps both attempts.
    code, _, err = run("run", str(cfg), "--results", str(db), "--rerun")
    assert code == 0, err
    assert sorted(r[1] for r in rows(db)) == [1, 1, 2, 2]
    assert {r[1] for r in rows(db, all_attempts=False)} == {2}
    shown = cli.invoke(app, ["results", "show", "--results", str(db), "--json"])
    assert shown.exit_code == 0 and len(json.loads(shown.stdout)) == 2  # the latest attempts
    every = cli.invoke(app, ["results", "show", "--results", str(db), "--json", "--all-attempts"])
    assert len(json.loads(every.stdout)) == 4


def test_resume_retries_failed_runs_as_new_attempts_and_the_exit_code_says_failed(
    tiny_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, db = tiny_config(layouts='["0"]', batch_sizes="[1]"), tmp_path / "r.db"
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", "nvmlDeviceCreateGpuInstanceWithPlacement=Unknown")
    code, _, err = run("run", str(cfg), "--results", str(db))
    assert code == 1, err  # a run that did not end ok fails the command (CI can trust it)
    assert [r[1:] for r in rows(db)] == [(1, "layout_failed")]
    monkeypatch.delenv("MIGPERF_SIM_FAULTS")
    code, _, err = run("run", str(cfg), "--results", str(db), "--resume")
    assert code == 0, err
    assert [r[1:] for r in rows(db)] == [(1, "layout_failed"), (2, "ok")]
    # Done now: a second --resume measures nothing.
    code, _, err = run("run", str(cfg), "--results", str(db), "--resume")
    assert code == 0 and "1 already stored" in err
    assert len(rows(db)) == 2


def test_two_runs_on_one_gpu_the_second_is_refused_and_the_gpu_ends_as_it_began(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    with open_nvml(SPEC) as nvml:
        apply_layout(nvml, 0, "1g.10gb*2")
    before = layout()
    slow = tiny_config(name="a", layouts='["0", "9,9"]', batch_sizes="[1, 2]")
    slow.write_text(slow.read_text().replace("min_duration_s: 0.0", "min_duration_s: 0.5"))
    other = tiny_config(name="b", layouts='["14"]', batch_sizes="[1]")
    db_a, db_b = tmp_path / "a.db", tmp_path / "b.db"
    first = start("run", str(slow), "--results", str(db_a))
    try:
        wait_rows(db_a, 1, first)
        second = subprocess.run(
            [sys.executable, "-m", "migperf", "--simulate", SPEC, "run", str(other)]
            + ["--results", str(db_b)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert f"GPU 0 is leased by PID {first.pid}" in second.stderr
        assert "experiment a" in second.stderr
        applied = subprocess.run(
            [sys.executable, "-m", "migperf", "--simulate", SPEC, "mig", "apply", "7g.80gb"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert applied.returncode == 1 and "is leased by" in applied.stderr
        out, err = first.communicate(timeout=180)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert [r[2] for r in rows(db_a)] == ["ok"] * 4  # every run of the first, on its slices
    assert rows(db_b) == []
    assert layout() == before


def test_sigkill_then_an_edited_config_still_puts_the_original_layout_back(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    with open_nvml(SPEC) as nvml:
        apply_layout(nvml, 0, "2g.20gb*3")
    before = layout()
    cfg, db = tiny_config(layouts='["0", "9,9"]', batch_sizes="[1, 2]"), tmp_path / "r.db"
    proc = start("run", str(cfg), "--results", str(db))
    wait_rows(db, 1, proc)
    proc.kill()
    proc.wait()
    assert layout() != before
    # The operator edits the config (a new config hash) and runs it.
    cfg.write_text(cfg.read_text().replace("[1, 2]", "[1]"))
    code, _, err = run("run", str(cfg), "--results", str(db), "--resume")
    assert code == 0, err
    assert "put back" in err and "the layout an interrupted migperf run tiny recorded" in err
    assert "Layouts restored" in err
    assert layout() == before


def test_sigterm_stops_with_143_after_restoring_and_keeps_what_was_measured(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    before = layout()
    cfg = tiny_config(layouts='["0", "9,9"]', batch_sizes="[1, 2, 4, 8]")
    db = tmp_path / "r.db"
    proc = start("run", str(cfg), "--results", str(db))
    wait_rows(db, 1, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "INTERRUPTED" in err and "Layouts restored" in err
    assert 1 <= len(rows(db)) < 8 and all(r[2] == "ok" for r in rows(db))
    assert layout() == before


def test_a_second_ctrl_c_during_the_restore_does_not_cut_it_short(
    tiny_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import migperf.experiments.runner as runner_module
    from migperf.experiments.config import load_config
    from migperf.experiments.planning import plan_experiment
    from migperf.experiments.runner import ExperimentRunner
    from migperf.results import ResultsStore

    with open_nvml(SPEC) as nvml:
        apply_layout(nvml, 0, "1g.10gb*3")
    before = layout()
    real = runner_module.converge

    def impatient(nvml, gpu, target, **kw):  # type: ignore[no-untyped-def]
        if kw.get("command", "").endswith("(restore)"):
            signal.raise_signal(signal.SIGINT)  # the operator presses Ctrl-C again
        return real(nvml, gpu, target, **kw)

    monkeypatch.setattr(runner_module, "converge", impatient)
    events: list[str] = []

    def first_ctrl_c(kind: str, **info: object) -> None:
        events.append(kind)
        if kind == "run_done":
            raise KeyboardInterrupt  # the first Ctrl-C, after one run

    cfg = load_config(tiny_config(layouts='["0", "9,9"]', batch_sizes="[1, 2]"))
    with open_nvml(SPEC) as nvml, ResultsStore(tmp_path / "r.db") as store:
        plan = plan_experiment(nvml, cfg, "c.yaml", dry_run=False)
        report = ExperimentRunner(nvml, plan, store, on_event=first_ctrl_c).run()
    assert report.interrupted and report.restored
    assert "restoring" in events  # it said it was finishing the restore
    assert layout() == before
