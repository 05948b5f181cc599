"""The experiment runner on the simulator: results stored, faults survived, GPU given back."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from migperf.errors import ConfigError
from migperf.experiments.config import load_config
from migperf.experiments.planning import plan_experiment
from migperf.experiments.runner import ExperimentRunner
from migperf.mig.manager import apply_layout
from migperf.mig.snapshot import take_snapshot
from migperf.nvml import open_nvml
from migperf.results import ResultsStore, load

SPEC = "a100-80gb"


def run(cfg_path: Path, db: Path, resume: bool = False) -> object:
    cfg = load_config(cfg_path)
    with open_nvml(SPEC) as nvml:
        plan = plan_experiment(nvml, cfg, str(cfg_path))
        with ResultsStore(db) as store:
            return ExperimentRunner(nvml, plan, store, resume=resume).run()


def statuses(db: Path) -> list[tuple[str, str, int, str]]:
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT layout, profile, batch_size, status FROM runs ORDER BY run_id"
    ).fetchall()
    con.close()
    return rows


def test_a_sweep_stores_every_run_and_restores_the_layout(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    with open_nvml(SPEC) as nvml:
        apply_layout(nvml, 0, "1g.10gb*2")
        before = take_snapshot(nvml, 0)
    db = tmp_path / "r.db"
    report = run(
        tiny_config(instances="each", layouts='["0", "9,9", "current"]', batch_sizes="[1]"), db
    )
    assert statuses(db) == [
        ("0", "7g.80gb", 1, "ok"),
        ("9,9", "3g.40gb", 1, "ok"),
        ("9,9", "3g.40gb", 1, "ok"),
        ("current", "1g.10gb", 1, "ok"),
        ("current", "1g.10gb", 1, "ok"),
    ]
    assert report.restored and not report.interrupted  # type: ignore[attr-defined]
    frame = load(db, wide=True)
    assert frame["simulated"].all() and (frame["samples_per_s"] > 0).all()
    assert set(frame["mig_uuid"].str[:4]) == {"MIG-"}
    with open_nvml(SPEC) as nvml:
        assert take_snapshot(nvml, 0).same_layout(before)


def test_worker_failures_are_recorded_and_the_sweep_goes_on(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    extra = (
        "  - workload: gemm\n    inject: crash\n    model_args: {n: 32}\n"
        "  - workload: gemm\n    inject: oom\n    model_args: {n: 32}\n    sweep: {batch_size: [1, 2]}\n"
        "  - workload: gemm\n    inject: hang\n    model_args: {n: 32}\n"
    )
    db = tmp_path / "r.db"
    run(tiny_config(layouts='["0"]', batch_sizes="[1]", timeout=6, extra=extra), db)
    got = [(r[2], r[3]) for r in statuses(db)]
    assert got == [(1, "ok"), (1, "crashed"), (1, "oom"), (2, "skipped"), (1, "timeout")]


def test_an_nvml_error_while_applying_fails_that_layout_only(
    tiny_config: Callable[..., Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "r.db"
    # Layout "0" creates GIs with calls 1; layout "9,9" needs calls 2 and 3: fail 3.
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", "nvmlDeviceCreateGpuInstanceWithPlacement@3=Unknown")
    run(tiny_config(layouts='["0", "9,9", "14"]', batch_sizes="[1]"), db)
    rows = statuses(db)
    assert [(r[0], r[3]) for r in rows] == [("0", "ok"), ("9,9", "layout_failed"), ("14", "ok")]
    err = (
        sqlite3.connect(db)
        .execute("SELECT error FROM runs WHERE status='layout_failed'")
        .fetchone()[0]
    )
    assert "rolled back" in err
    with open_nvml(SPEC) as nvml:
        assert nvml.gpu_instances(0) == []


def test_invalid_configs_are_refused_before_anything_changes(
    tiny_config: Callable[..., Path],
) -> None:
    cfg = load_config(tiny_config(layouts='["7g.80gb,1g.10gb", "3g.20gb", "0"]'))
    with open_nvml(SPEC) as nvml, pytest.raises(ConfigError) as info:
        plan_experiment(nvml, cfg, "tiny.yaml")
    assert "2 problem(s) in tiny.yaml" in info.value.message
    assert "layouts[0]" in info.value.message and "layouts[1]" in info.value.message
    with open_nvml(SPEC) as nvml:
        assert nvml.gpu_instances(0) == []


def test_mig_disabled_gpu_with_layouts_is_refused(tiny_config: Callable[..., Path]) -> None:
    cfg = load_config(tiny_config(layouts='["0"]'))
    with (
        open_nvml("a100-80gb:1:mig-off") as nvml,
        pytest.raises(ConfigError, match="MIG mode is disabled"),
    ):
        plan_experiment(nvml, cfg)


def test_resume_skips_stored_runs(tiny_config: Callable[..., Path], tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    path = tiny_config(layouts='["0"]')
    run(path, db)
    report = run(path, db, resume=True)
    assert report.skipped_existing == 2 and report.stored == 0  # type: ignore[attr-defined]
    assert len(statuses(db)) == 2


RUNNER = """
import sys
from pathlib import Path
from tests.experiments.test_runner import run
run(Path(sys.argv[1]), Path(sys.argv[2]), resume=len(sys.argv) > 3)
"""


def _start(cfg: Path, db: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(cfg), str(db), *extra],
        cwd=Path(__file__).parents[2],
        env=os.environ.copy(),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _slow(cfg: Path) -> Path:
    """The config with half-second windows: a warm worker's runs otherwise end within a poll."""
    text = cfg.read_text()
    assert "min_duration_s: 0.0" in text
    cfg.write_text(text.replace("min_duration_s: 0.0", "min_duration_s: 0.5"))
    return cfg


def _wait_for_runs(db: Path, n: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            try:
                if len(statuses(db)) >= n:
                    return
            except sqlite3.OperationalError:
                pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("runs did not appear")


def test_sigint_restores_the_gpu_and_keeps_finished_runs(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    proc = _start(_slow(tiny_config(layouts='["0", "9,9", "14"]', batch_sizes="[1, 2]")), db)
    _wait_for_runs(db, 1, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    stored = statuses(db)
    assert 1 <= len(stored) < 6
    assert {s[3] for s in stored} == {"ok"}
    with open_nvml(SPEC) as nvml:
        assert nvml.gpu_instances(0) == []


def test_sigkill_then_resume_restores_and_finishes_only_the_missing_runs(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    cfg = _slow(tiny_config(layouts='["0", "9,9"]', batch_sizes="[1, 2]"))
    proc = _start(cfg, db)
    _wait_for_runs(db, 3, proc)
    proc.kill()
    proc.wait()
    with open_nvml(SPEC) as nvml:
        assert nvml.gpu_instances(0) != []  # left partitioned by the killed runner
    done = len(statuses(db))
    report = run(cfg, db, resume=True)
    rows = statuses(db)
    assert len(rows) == 4 and len({(r[0], r[2]) for r in rows}) == 4  # nothing stored twice
    assert report.skipped_existing == done  # type: ignore[attr-defined]
    with open_nvml(SPEC) as nvml:
        assert nvml.gpu_instances(0) == []  # the original (empty) layout is back


def test_all_instances_run_co_located_with_overlapping_windows(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    import json

    db = tmp_path / "r.db"
    cfg = tiny_config(layouts='["9,9"]', instances="all", batch_sizes="[1]")
    # Half-second windows, so that they overlap even on a loaded host.
    cfg.write_text(cfg.read_text().replace("min_duration_s: 0.0", "min_duration_s: 0.5"))
    run(cfg, db)
    con = sqlite3.connect(db)
    rows = con.execute("SELECT params, result FROM runs ORDER BY run_id").fetchall()
    assert len(rows) == 2
    groups = {json.loads(p)["group_id"] for p, _ in rows}
    assert len(groups) == 1 and None not in groups
    windows = [json.loads(r)["timing"] for _, r in rows]
    assert max(w["window_start_unix_s"] for w in windows) < min(
        w["window_end_unix_s"] for w in windows
    )


def test_estimates_are_learned_from_the_runs_this_machine_did(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    path = tiny_config(layouts='["0", "9,9"]', batch_sizes="[1, 2]")
    cfg = load_config(path)
    with open_nvml(SPEC) as nvml:
        first = plan_experiment(nvml, cfg, "tiny.yaml")
    assert not first.learned() and "a first guess" in first.headline()
    report = run(path, tmp_path / "r.db")
    with open_nvml(SPEC) as nvml:
        again = plan_experiment(nvml, cfg, "tiny.yaml")
    assert again.learned() and "first guess" not in again.headline()
    wall = report.wall_s  # type: ignore[attr-defined]
    # Learned from this very run: close to what it took (loose: a loaded 2-core box).
    assert 0.5 * wall <= again.estimated_duration_s() <= 2.0 * wall + 8.0


def workers_of(db: Path) -> list[tuple[str, dict[str, object], int]]:
    con = sqlite3.connect(db)
    rows = con.execute("SELECT layout, params, result FROM runs ORDER BY run_id").fetchall()
    con.close()
    out = []
    for layout, params, result in rows:
        import json

        out.append((layout, json.loads(params)["worker"], json.loads(result)["process"]["pid"]))
    return out


def test_warm_workers_serve_a_layouts_runs_and_leave_before_it_changes(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    report = run(tiny_config(batch_sizes="[1, 2, 4]"), db)
    assert report.stored == 6  # type: ignore[attr-defined]
    rows = workers_of(db)
    # One worker per device and layout: its runs count up, the next layout starts a new one.
    assert [(layout, w["mode"], w["run_in_process"]) for layout, w, _ in rows] == [
        ("0", "warm", 1),
        ("0", "warm", 2),
        ("0", "warm", 3),
        ("9,9", "warm", 1),
        ("9,9", "warm", 2),
        ("9,9", "warm", 3),
    ]
    pids = [pid for _, _, pid in rows]
    assert len(set(pids[:3])) == 1 and len(set(pids[3:])) == 1 and pids[0] != pids[3]
    for pid in set(pids):  # every worker has exited by the time the runner returns
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_fresh_workers_start_a_process_per_run(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    db = tmp_path / "r.db"
    cfg = tiny_config(layouts='["0"]', extra="workers: fresh")
    run(cfg, db)
    rows = workers_of(db)
    assert [(w["mode"], w["run_in_process"]) for _, w, _ in rows] == [("fresh", 1), ("fresh", 1)]
    assert len({pid for _, _, pid in rows}) == 2
