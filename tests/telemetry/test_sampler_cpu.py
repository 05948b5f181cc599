"""What the sampler costs the workload: one state load per reading, a reniced thread only."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from migperf.mig import apply_layout
from migperf.nvml.facade import Nvml
from migperf.nvml.sim.workload import idle_used_mib
from migperf.telemetry.sampler import NvmlSampler

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="per-thread nice values are a Linux feature"
)


def _count_state_reads(nvml: Nvml, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    machine = nvml.nvml.sim_lib.machine
    reads: list[int] = []
    real = machine._read

    def spy() -> Any:
        reads.append(1)
        return real()

    monkeypatch.setattr(machine, "_read", spy)
    return reads


def test_one_reading_reads_the_simulated_state_once(
    sim_h100: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_layout(sim_h100, 0, "3g.40gb,2g.20gb,2g.20gb")
    sampler = NvmlSampler(sim_h100, [0], interval_s=0.1, gpm_interval_s=0.1)
    sampler.start()
    sampler.stop()
    reads = _count_state_reads(sim_h100, monkeypatch)
    time.sleep(0.11)  # GPM wants samples > 100 ms apart
    sampler.sample_now(gpm=True)  # board metrics, three MIG devices, GPM of three instances
    assert len(reads) == 1
    series = sampler.series()
    assert len(series.gpus[0].columns["power_w"]) == 3
    assert all(len(m.columns["memory_used_mib"]) == 3 for m in series.mig_devices)


def test_a_batched_reading_sees_what_another_process_changed(
    sim_h100: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply_layout(sim_h100, 0, "3g.40gb,2g.20gb")
    dev = sim_h100.mig_devices(0)[0]
    sampler = NvmlSampler(sim_h100, [0], mig_uuids=[dev.mig_uuid])
    sampler.start()
    # Another process registers a CUDA context on the slice: the next reading shows it.
    code = (
        "from migperf.nvml.sim import control; import os, sys; "
        f"control.attach_process('h100-80gb', 0, mig_uuid={dev.mig_uuid!r}, "
        "pid=os.getppid(), used_mib=3072)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
    sampler.sample_now()
    sampler.stop()
    mem = sampler.series().mig_devices[0].columns["memory_used_mib"]
    idle = idle_used_mib(dev.memory_mib)  # an idle slice never reads 0 used
    assert mem[0] == idle and mem[-2:] == [idle + 3072.0, idle + 3072.0]
    power = sampler.series().gpus[0].columns["power_w"]
    assert power[-1] > power[0] + 100  # type: ignore[operator]


@linux_only
def test_only_the_sampler_thread_is_reniced(sim_a100_40gb: Nvml) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)  # on Linux: this thread's nice
    with NvmlSampler(sim_a100_40gb, [0], interval_s=0.02) as sampler:
        time.sleep(0.1)
        assert sampler._thread is not None
        tid = sampler._thread.native_id
        assert tid is not None and tid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, tid) == max(base, 19)
        # The process, this thread and what it starts keep their priority.
        assert os.getpriority(os.PRIO_PROCESS, 0) == base
        with open(f"/proc/{os.getpid()}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[16]) == base  # the main thread
        child = subprocess.run(
            [sys.executable, "-c", "import os; print(os.nice(0))"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(child.stdout) == base
    assert sampler.stats.samples >= 3  # a reniced sampler still samples


@linux_only
def test_nice_none_keeps_the_callers_priority(sim_a100_40gb: Nvml) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)
    with NvmlSampler(sim_a100_40gb, [0], interval_s=0.02, nice=None) as sampler:
        time.sleep(0.05)
        assert sampler._thread is not None and sampler._thread.native_id is not None
        assert os.getpriority(os.PRIO_PROCESS, sampler._thread.native_id) == base


def test_a_refused_renice_is_ignored(sim_a100_40gb: Nvml, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise PermissionError("not allowed")

    monkeypatch.setattr(os, "setpriority", refuse)
    with NvmlSampler(sim_a100_40gb, [0], interval_s=0.02) as sampler:
        time.sleep(0.1)
    assert sampler.stats.samples >= 3 and not sampler.series().errors


def test_a_batch_that_fails_to_save_is_counted_and_sampling_goes_on(
    sim_a100_40gb: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    @contextlib.contextmanager
    def full_disk() -> Iterator[None]:
        yield
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sim_a100_40gb, "batch", full_disk)
    with NvmlSampler(sim_a100_40gb, [0], interval_s=0.02) as sampler:
        time.sleep(0.1)
    assert sampler.stats.samples >= 3
    (error,) = sampler.series().errors
    assert error.what == "nvml.batch" and "No space left" in error.message
    assert error.count == sampler.stats.samples
