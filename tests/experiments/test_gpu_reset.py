"""A GPU reset under a running experiment: the layout vanishes, migperf says so and recovers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from migperf.experiments.config import load_config
from migperf.experiments.planning import plan_experiment
from migperf.experiments.runner import ExperimentRunner
from migperf.mig.manager import apply_layout
from migperf.mig.snapshot import take_snapshot
from migperf.nvml import open_nvml
from migperf.nvml.sim import control
from migperf.results import ResultsStore

SPEC = "a100-80gb"


def test_a_reset_between_runs_fails_the_vanished_slice_and_the_sweep_recovers(
    tiny_config: Callable[..., Path], tmp_path: Path
) -> None:
    """GI/CI configuration does not survive a GPU reset, even with MIG left on.

    Sources: the NVIDIA MIG user guide ("MIG mode and GI/CI are not persistent
    across reboot/reset"; mig-parted re-applies them at boot), as
    docs/reference/mig-facts.md section 9 records it. The reset comes between
    the two runs of the "9,9" layout, as an operator's `nvidia-smi -r` would.
    """
    with open_nvml(SPEC) as nvml:
        apply_layout(nvml, 0, "1g.10gb*2")
        before = take_snapshot(nvml, 0)
    cfg_path = tiny_config(instances="each", layouts='["9,9", "0"]', batch_sizes="[1]")
    events: list[tuple[str, dict[str, Any]]] = []

    def on_event(kind: str, **info: Any) -> None:
        events.append((kind, info))
        if kind == "run_done" and sum(k == "run_done" for k, _ in events) == 1:
            control.reset_gpu(SPEC, 0)  # the first run is done; its worker has exited

    db = tmp_path / "r.db"
    cfg = load_config(cfg_path)
    with open_nvml(SPEC) as nvml:
        plan = plan_experiment(nvml, cfg, str(cfg_path))
        with ResultsStore(db) as store:
            report = ExperimentRunner(nvml, plan, store, on_event=on_event).run()

    con = sqlite3.connect(db)
    rows = con.execute("SELECT layout, profile, status, error FROM runs ORDER BY run_id").fetchall()
    con.close()
    assert [r[:3] for r in rows] == [
        ("9,9", "3g.40gb", "ok"),
        ("9,9", "3g.40gb", "failed"),  # not "ok" on a slice that no longer exists
        ("0", "7g.80gb", "ok"),  # the next layout is applied afresh
    ]
    assert "no longer exists" in rows[1][3] and "the layout vanished (GPU reset?)" in rows[1][3]
    # Reported as it happens, not only in the store.
    failed = [i for k, i in events if k == "run_done" and i.get("status") == "failed"]
    assert len(failed) == 1 and "GPU reset?" in failed[0]["error"]
    assert report.restored and report.failed == 1  # type: ignore[attr-defined]
    with open_nvml(SPEC) as nvml:
        assert take_snapshot(nvml, 0).same_layout(before)  # the original layout is back
