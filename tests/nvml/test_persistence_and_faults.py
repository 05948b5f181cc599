"""One simulated machine across processes, and injected faults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from migperf import errors
from migperf.nvml import open_nvml
from migperf.nvml.sim import control
from migperf.nvml.sim.faults import parse_faults

CREATE_IN_CHILD = """
from migperf.nvml import open_nvml
with open_nvml("a100-80gb:2") as n:
    for _ in range({count}):
        try:
            n.create_gpu_instance(1, 19)
        except Exception as e:
            print(type(e).__name__)
"""


def _run(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_a_change_in_one_process_is_seen_by_another() -> None:
    proc = _run(CREATE_IN_CHILD.format(count=2))
    assert proc.returncode == 0, proc.stderr
    with open_nvml("a100-80gb:2") as n:
        assert [gi.profile for gi in n.gpu_instances(1)] == ["1g.10gb", "1g.10gb"]
        assert n.gpu_instances(0) == []


def test_concurrent_processes_never_double_book_a_slice() -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CREATE_IN_CHILD.format(count=4)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    failures = sum(p.communicate(timeout=60)[0].count("InsufficientResourcesError") for p in procs)
    with open_nvml("a100-80gb:2") as n:
        gis = n.gpu_instances(1)
    starts = [gi.placement.start for gi in gis if gi.placement]
    assert sorted(starts) == list(range(7))  # 12 attempts, 7 slots, no overlap
    assert failures == 5


def test_nth_call_fault_fires_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "MIGPERF_SIM_FAULTS", "nvmlDeviceCreateGpuInstanceWithPlacement@2=InsufficientResources"
    )
    with open_nvml("h100-80gb") as n:
        n.create_gpu_instance(0, 19, 0)
        with pytest.raises(errors.InsufficientResourcesError):
            n.create_gpu_instance(0, 19, 1)
        n.create_gpu_instance(0, 19, 1)  # the third call succeeds again
        assert len(n.gpu_instances(0)) == 2


def test_every_call_fault_and_custom_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", "nvmlGpuInstanceDestroy=InUse")
    with open_nvml("h100-80gb") as n:
        gi = n.create_gpu_instance(0, 0)
        for _ in range(2):
            with pytest.raises(errors.GpuInUseError):
                n.destroy_gpu_instance(0, gi)
        monkeypatch.delenv("MIGPERF_SIM_FAULTS")
        n.destroy_gpu_instance(0, gi)


def test_fault_counters_persist_across_processes_and_can_be_cleared() -> None:
    env = {"MIGPERF_SIM_FAULTS": "nvmlDeviceCreateGpuInstance@3+=Unknown"}
    assert "NvmlCallError" not in _run(CREATE_IN_CHILD.format(count=2), **env).stdout
    assert _run(CREATE_IN_CHILD.format(count=1), **env).stdout.strip() == "NvmlCallError"
    control.clear_fault_counters("a100-80gb:2")
    assert _run(CREATE_IN_CHILD.format(count=1), **env).stdout.strip() == ""


def test_crash_fault_kills_the_process_and_saves_nothing_of_that_call() -> None:
    proc = _run(
        CREATE_IN_CHILD.format(count=3), MIGPERF_SIM_FAULTS="nvmlDeviceCreateGpuInstance@2=crash"
    )
    assert proc.returncode == -9
    with open_nvml("a100-80gb:2") as n:
        assert len(n.gpu_instances(1)) == 1


def test_bad_fault_specs_are_usage_errors() -> None:
    with pytest.raises(errors.UsageError, match="cannot parse"):
        parse_faults("create=boom")
    with pytest.raises(errors.UsageError, match="unknown action"):
        parse_faults("nvmlDeviceCreateGpuInstance=Explode")


def test_torn_state_file_boots_a_fresh_machine(state_dir: Path) -> None:
    with open_nvml("a30") as n:
        n.create_gpu_instance(0, 0)
    path = state_dir / "sim" / "a30-x1.json"
    path.write_text("{ not json")
    with open_nvml("a30") as n:
        assert n.gpu_instances(0) == []
