"""The background NVML sampler against the simulator: series, refusals once, survival of faults."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from migperf.errors import UsageError
from migperf.mig import apply_layout
from migperf.nvml.facade import Nvml
from migperf.nvml.sim.workload import idle_used_mib
from migperf.telemetry.sampler import NvmlSampler


def _run(sampler: NvmlSampler, seconds: float) -> None:
    with sampler:
        time.sleep(seconds)


def test_series_have_monotonic_unix_timestamps_at_the_interval(sim_a100_40gb: Nvml) -> None:
    sampler = NvmlSampler(sim_a100_40gb, [0], interval_s=0.02)
    before = time.time()
    _run(sampler, 0.3)
    after = time.time()
    series = sampler.series()
    gpu = series.gpus[0]
    t = gpu.columns["t_unix_s"]
    mono = gpu.columns["t_mono_s"]
    assert len(t) >= 8  # a first reading, ~15 ticks, a last reading (a busy CI host may lag)
    assert all(b > a for a, b in zip(t, t[1:], strict=False))  # type: ignore[operator]
    assert before - 0.01 <= t[0] and t[-1] <= after + 0.01  # type: ignore[operator]
    # unix stamps are the monotonic ones shifted by one offset
    offsets = {round(float(u) - float(m), 4) for u, m in zip(t, mono, strict=True)}  # type: ignore[arg-type]
    assert len(offsets) == 1
    stats = series.stats
    assert stats is not None and stats.samples == len(t)
    assert stats.read_ms_mean is not None and stats.cpu_s is not None and stats.cpu_s > 0
    assert gpu.gpu_uuid and gpu.mig_enabled is True and gpu.name == "NVIDIA A100-SXM4-40GB"


def test_unsupported_metrics_are_recorded_once_and_have_no_column(sim_a100_40gb: Nvml) -> None:
    calls: list[frozenset[str]] = []
    real = sim_a100_40gb.sample_gpu

    def spy(gpu_index: int, skip: frozenset[str] = frozenset()) -> object:
        calls.append(frozenset(skip))
        return real(gpu_index, skip=skip)

    sim_a100_40gb.sample_gpu = spy  # type: ignore[method-assign]
    sampler = NvmlSampler(sim_a100_40gb, [0], interval_s=0.02)
    _run(sampler, 0.1)
    gpu = sampler.series().gpus[0]
    assert "gpu_util_pct" not in gpu.columns and "mem_util_pct" not in gpu.columns
    assert "MIG-enabled" in gpu.unsupported["gpu_util_pct"]
    assert "Ampere" in gpu.unsupported["gpm_activity"]
    assert all(v is not None for v in gpu.columns["power_w"])
    # Asked once; after that, skipped.
    assert "gpu_util_pct" not in calls[0] and all("gpu_util_pct" in c for c in calls[1:])
    assert sampler.unsupported()[0]["mem_util_pct"] == gpu.unsupported["mem_util_pct"]


def test_mig_memory_and_gpm_activity_series_per_slice(sim_h100: Nvml) -> None:
    apply_layout(sim_h100, 0, "3g.40gb,2g.20gb")
    busy, idle = sim_h100.mig_devices(0)
    sim_h100.attach_simulated_process(0, os.getpid(), mig_uuid=busy.mig_uuid, used_mib=2048)
    sampler = NvmlSampler(sim_h100, [0], interval_s=0.05, gpm_interval_s=0.1)
    assert sampler.gpm_every == 2
    _run(sampler, 0.45)
    series = sampler.series()
    mig = {m.mig_uuid: m for m in series.mig_devices}
    assert mig[busy.mig_uuid].profile == "3g.40gb"
    # Idle slices read what the driver keeps (never 0); the busy one adds its process.
    idle_busy, idle_idle = idle_used_mib(busy.memory_mib), idle_used_mib(idle.memory_mib)
    assert set(mig[busy.mig_uuid].columns["memory_used_mib"]) == {idle_busy + 2048.0}
    assert set(mig[idle.mig_uuid].columns["memory_used_mib"]) == {float(idle_idle)}
    act = {a.gi_id: a for a in series.activity}
    assert set(act) == {busy.gi_id, idle.gi_id}
    assert act[busy.gi_id].scope == "gpu_instance" and act[busy.gi_id].source == "nvml_gpm"
    assert len(act[busy.gi_id].columns["sm_util_pct"]) >= 2
    assert set(act[busy.gi_id].columns["sm_util_pct"]) == {95.0}
    assert set(act[idle.gi_id].columns["sm_util_pct"]) == {0.0}
    for a in act.values():
        for t0, t1 in zip(a.columns["t_start_unix_s"], a.columns["t_end_unix_s"], strict=True):
            assert t1 - t0 >= 0.09  # type: ignore[operator]


def test_only_the_chosen_mig_devices_are_read(sim_h100: Nvml) -> None:
    apply_layout(sim_h100, 0, "3g.40gb,2g.20gb")
    busy, _ = sim_h100.mig_devices(0)
    sampler = NvmlSampler(
        sim_h100, [0], interval_s=0.05, gpm_interval_s=0.1, mig_uuids=[busy.mig_uuid]
    )
    _run(sampler, 0.15)
    series = sampler.series()
    assert [m.mig_uuid for m in series.mig_devices] == [busy.mig_uuid]
    assert [a.gi_id for a in series.activity] == [busy.gi_id]


def test_whole_gpu_gpm_with_mig_off(sim: Callable[..., Nvml]) -> None:
    nvml = sim("h200:1:mig-off")
    sampler = NvmlSampler(nvml, interval_s=0.05, gpm_interval_s=0.1)
    _run(sampler, 0.25)
    series = sampler.series()
    assert [(a.gi_id, a.scope) for a in series.activity] == [(None, "whole_gpu")]
    assert series.gpus[0].columns["gpu_util_pct"][0] == 0


def test_a_driver_error_mid_run_is_counted_and_sampling_goes_on(
    sim_a100_40gb: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From the 4th power reading on, the driver reports the GPU lost.
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", "nvmlDeviceGetPowerUsage@4+=GpuIsLost")
    sampler = NvmlSampler(sim_a100_40gb, [0], interval_s=0.02)
    _run(sampler, 0.2)
    series = sampler.series()
    power = series.gpus[0].columns["power_w"]
    assert power[:3] == [pytest.approx(power[0], rel=0.05)] * 3  # type: ignore[list-item]
    assert all(p is None for p in power[3:]) and len(power) > 5
    assert all(e is not None for e in series.gpus[0].columns["energy_mj"])
    assert "power_w" not in series.gpus[0].unsupported
    (err,) = series.errors
    assert err.what == "gpu0.power_w" and "nvmlDeviceGetPowerUsage" in err.message
    assert err.count == len(power) - 3 and err.first_unix_s <= err.last_unix_s


def test_an_exception_in_a_reading_does_not_stop_the_sampler(sim_a100_40gb: Nvml) -> None:
    real = sim_a100_40gb.sample_gpu
    n = {"calls": 0}

    def flaky(gpu_index: int, skip: frozenset[str] = frozenset()) -> object:
        n["calls"] += 1
        if n["calls"] in (2, 3):
            raise RuntimeError("driver went away")
        return real(gpu_index, skip=skip)

    sim_a100_40gb.sample_gpu = flaky  # type: ignore[method-assign]
    sampler = NvmlSampler(sim_a100_40gb, [0], interval_s=0.02)
    _run(sampler, 0.15)
    series = sampler.series()
    power = series.gpus[0].columns["power_w"]
    assert power[1] is None and power[2] is None and power[-1] is not None
    assert [(e.what, e.message, e.count) for e in series.errors] == [
        ("gpu0.sample", "RuntimeError: driver went away", 2)
    ]


def test_a_window_keeps_one_reading_either_side(sim_a100_40gb: Nvml) -> None:
    sampler = NvmlSampler(sim_a100_40gb, [0], interval_s=0.02)
    _run(sampler, 0.3)
    t = sampler.series().gpus[0].columns["t_unix_s"]
    lo, hi = float(t[3]) + 0.001, float(t[6]) + 0.001  # type: ignore[arg-type]
    window = sampler.series(lo, hi).gpus[0].columns["t_unix_s"]
    assert window == t[3:8]


def test_bad_intervals_are_usage_errors(sim_a100_40gb: Nvml) -> None:
    with pytest.raises(UsageError, match="positive"):
        NvmlSampler(sim_a100_40gb, interval_s=0)
    # GPM samples are never closer than NVML's 100 ms.
    assert NvmlSampler(sim_a100_40gb, interval_s=0.01, gpm_interval_s=0.01).gpm_every == 10
