"""The whole GPU with MIG off as one layout of a sweep, as the MIGPerf study compares them.

The mode switch is a step of the same transaction as the instances: done under
the GPU lease, recorded, rolled back on failure, and put back after a crash.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.mig.manager import apply_layout
from migperf.mig.snapshot import take_snapshot
from migperf.nvml import open_nvml
from migperf.nvml.sim import control

SPEC = "a100-80gb"
cli = CliRunner()


def state() -> tuple[bool, str]:
    with open_nvml(SPEC) as nvml:
        snap = take_snapshot(nvml, 0)
        return snap.mig_enabled, snap.describe()


def rows(db: Path) -> list[tuple[str, str | None, str, str]]:
    con = sqlite3.connect(db)
    out = con.execute("SELECT layout, profile, device, status FROM runs ORDER BY run_id").fetchall()
    con.close()
    return out


def test_a_sweep_measures_the_whole_gpu_without_mig_and_gives_mig_back(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    with open_nvml(SPEC) as nvml:
        apply_layout(nvml, 0, "1g.10gb*2")
    before = state()
    cfg = tiny_config(layouts='["disabled", "0", "current"]', batch_sizes="[1]")
    db = tmp_path / "r.db"
    r = cli.invoke(app, ["--simulate", SPEC, "run", str(cfg), "--results", str(db)])
    assert r.exit_code == 0, r.stderr
    got = rows(db)
    # MIG-on layouts first, MIG off last: the mode changes once, and once back.
    assert [g[0] for g in got] == ["0", "current", "disabled"]
    assert got[2][1] is None and got[2][2] == "0"  # the whole GPU, no MIG profile
    assert {g[3] for g in got} == {"ok"}
    assert state() == before == (True, before[1])


def test_a_gpu_that_would_need_a_reset_fails_that_layout_only_and_keeps_mig(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    before = state()
    control.hold_mode_changes(SPEC, 0)  # the driver keeps mode changes pending
    cfg = tiny_config(layouts='["0", "disabled"]', batch_sizes="[1]")
    db = tmp_path / "r.db"
    r = cli.invoke(app, ["--simulate", SPEC, "run", str(cfg), "--results", str(db)])
    assert r.exit_code == 1
    assert [g[3] for g in rows(db)] == ["ok", "layout_failed"]
    err = sqlite3.connect(db).execute("SELECT error FROM runs WHERE status != 'ok'").fetchone()[0]
    assert "sudo nvidia-smi --gpu-reset -i 0" in err and "never resets" in err
    with open_nvml(SPEC) as nvml:
        mode = nvml.mig_mode(0)
        assert mode is not None and mode.current and mode.pending  # nothing left pending off
    assert state() == before


KILL_WHEN_MIG_IS_OFF = """
import os, signal, sys
from pathlib import Path
from migperf.experiments.config import load_config
from migperf.experiments.planning import plan_experiment
from migperf.experiments.runner import ExperimentRunner
from migperf.nvml import open_nvml
from migperf.results import ResultsStore

def on_event(kind, **info):
    if kind == "run_start" and info["run"].layout == "disabled":
        os.kill(os.getpid(), signal.SIGKILL)  # MIG is off, nothing measured yet

cfg = load_config(Path(sys.argv[1]))
with open_nvml("a100-80gb") as nvml, ResultsStore(sys.argv[2]) as store:
    plan = plan_experiment(nvml, cfg, "c.yaml", dry_run=False)
    ExperimentRunner(nvml, plan, store, on_event=on_event).run()
"""


def test_a_crash_with_mig_off_is_put_back_by_the_next_command(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    with open_nvml(SPEC) as nvml:
        apply_layout(nvml, 0, "3g.40gb,1g.10gb")
    before = state()
    cfg = tiny_config(layouts='["disabled"]', batch_sizes="[1]")
    proc = subprocess.run(
        [sys.executable, "-c", KILL_WHEN_MIG_IS_OFF, str(cfg), str(tmp_path / "r.db")],
        env=os.environ.copy(),
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL
    assert state()[0] is False  # left without MIG
    r = cli.invoke(app, ["--simulate", SPEC, "mig", "restore"])
    assert r.exit_code == 0, r.stderr
    assert state() == before


def test_disabled_is_a_layout_that_changes_the_gpu(tiny_config: Callable[..., Path]) -> None:
    cfg = tiny_config(layouts='["disabled"]', batch_sizes="[1]")
    r = cli.invoke(app, ["--simulate", SPEC, "--read-only", "run", str(cfg)])
    assert r.exit_code != 0 and "read-only" in r.stderr
    r = cli.invoke(app, ["--simulate", SPEC, "run", str(cfg), "--dry-run"])
    assert r.exit_code == 0 and "disabled on GPU 0: (MIG disabled)" in r.stdout


@pytest.mark.parametrize("layouts", ['["disabled"]', '["current"]'])
def test_on_a_gpu_without_mig_disabled_is_the_gpu_as_it_is(
    layouts: str, tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    cfg = tiny_config(layouts=layouts, batch_sizes="[1]")
    db = tmp_path / "r.db"
    r = cli.invoke(app, ["--simulate", "l4", "run", str(cfg), "--results", str(db)])
    assert r.exit_code == 0, r.stderr
    assert [g[3] for g in rows(db)] == ["ok"]
