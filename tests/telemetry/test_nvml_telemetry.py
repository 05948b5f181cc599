"""The facade's telemetry reads against the simulated NVML: values, refusals and their reasons."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import pytest

from migperf.errors import UsageError
from migperf.mig import apply_layout
from migperf.nvml.facade import Nvml
from migperf.nvml.sim.lib import SimNvmlLib
from migperf.nvml.sim.workload import idle_used_mib
from migperf.nvml.types import GPU_METRICS, throttle_reason_names


def test_mig_enabled_a100_gives_board_values_and_says_why_utilization_is_missing(
    sim_a100_40gb: Nvml,
) -> None:
    s = sim_a100_40gb.sample_gpu(0)
    assert s.power_w is not None and 50 < s.power_w < 60  # idle A100
    assert s.power_instant_w is not None and s.energy_mj is not None and s.energy_mj >= 0
    assert s.sm_clock_mhz == 210 and s.mem_clock_mhz == 1215 and s.temperature_c == 31
    assert throttle_reason_names(s.throttle_reasons) == ["gpu_idle"]
    # Not 0: None, with NVML's answer and what to use instead.
    assert s.gpu_util_pct is None and s.mem_util_pct is None
    assert "Not Supported" in s.unsupported["gpu_util_pct"]
    assert "MIG-enabled" in s.unsupported["gpu_util_pct"] and "GPM" in s.unsupported["gpu_util_pct"]
    assert s.errors == {}
    assert set(s.unsupported) == {"gpu_util_pct", "mem_util_pct"}


def test_utilization_is_read_with_mig_off_and_rises_with_load(sim: Callable[..., Nvml]) -> None:
    nvml = sim("h100-80gb:1:mig-off")
    idle = nvml.sample_gpu(0)
    assert idle.gpu_util_pct == 0 and "gpu_util_pct" not in idle.unsupported
    nvml.attach_simulated_process(0, os.getpid())
    busy = nvml.sample_gpu(0)
    assert busy.gpu_util_pct == 100
    assert busy.power_w is not None and idle.power_w is not None and busy.power_w > 5 * idle.power_w
    # Idle GPUs never read 0 used (11-249 MiB observed); the process adds what it
    # holds: this test process's resident memory (emulated, not a constant).
    assert idle.memory_used_mib == idle_used_mib(81559)
    with open(f"/proc/{os.getpid()}/statm") as f:
        rss_mib = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    assert busy.memory_used_mib is not None
    assert busy.memory_used_mib - idle.memory_used_mib == pytest.approx(rss_mib, rel=0.2)
    nvml.detach_simulated_process(0, os.getpid())
    assert nvml.sample_gpu(0).gpu_util_pct == 0


def test_skipped_metrics_are_not_read(sim_a100_40gb: Nvml) -> None:
    s = sim_a100_40gb.sample_gpu(0, skip=set(GPU_METRICS) - {"power_w"})
    assert s.power_w is not None and s.energy_mj is None and s.unsupported == {}


def test_mig_memory_is_per_slice(sim_h100: Nvml) -> None:
    apply_layout(sim_h100, 0, "3g.40gb,2g.20gb")
    devices = sim_h100.mig_devices(0)
    sim_h100.attach_simulated_process(0, os.getpid(), mig_uuid=devices[1].mig_uuid, used_mib=512)
    readings = sim_h100.mig_memory(0, devices)
    assert [r.memory_total_mib for r in readings] == [d.memory_mib for d in devices]
    # Idle MIG devices read what the driver keeps (never 0), plus their processes' memory.
    idle = [idle_used_mib(d.memory_mib) for d in devices]
    assert [r.memory_used_mib for r in readings] == [idle[0], idle[1] + 512.0]
    assert all(r.error is None for r in readings)
    assert [r.gi_id for r in readings] == [d.gi_id for d in devices]


def test_gpm_is_hopper_only_and_explains_itself(sim_a100_40gb: Nvml, sim_h100: Nvml) -> None:
    why = sim_a100_40gb.gpm_support(0)
    assert why is not None and "Ampere" in why and "DCGM" in why
    assert sim_h100.gpm_support(0) is None
    refused = sim_a100_40gb.gpm_activity(0, None)
    assert refused.interval_s is None and "Not Supported" in refused.unsupported["sm_util_pct"]


def test_gpm_activity_per_gpu_instance_follows_its_load(sim_h100: Nvml) -> None:
    apply_layout(sim_h100, 0, "3g.40gb,2g.20gb")
    busy, idle = sim_h100.mig_devices(0)
    sim_h100.attach_simulated_process(0, os.getpid(), mig_uuid=busy.mig_uuid)
    first = sim_h100.gpm_activity(0, busy.gi_id)
    assert first.interval_s is None and first.sm_util_pct is None  # only starts the interval
    sim_h100.gpm_activity(0, idle.gi_id)
    time.sleep(0.12)
    a = sim_h100.gpm_activity(0, busy.gi_id)
    b = sim_h100.gpm_activity(0, idle.gi_id)
    assert a.interval_s is not None and a.interval_s >= 0.1
    assert (a.graphics_util_pct, a.sm_util_pct, a.dram_bw_util_pct) == (100.0, 95.0, 55.0)
    assert b.sm_util_pct == 0.0 and b.unsupported == {} and b.errors == {}
    missing = sim_h100.gpm_activity(0, 99)
    assert "Not Found" in missing.errors["sm_util_pct"]


def test_an_older_driver_without_gpm_symbols_is_function_not_found(
    sim_h100: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(SimNvmlLib, "nvmlGpmQueryDeviceSupport")
    sim_h100.nvml._nvmlGetFunctionPointer_cache.clear()
    why = sim_h100.gpm_support(0)
    assert why is not None and "Function Not Found" in why


def test_a_driver_error_is_an_error_of_that_reading_not_unsupported(
    sim_a100_40gb: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", "nvmlDeviceGetPowerUsage@2=Unknown")
    assert sim_a100_40gb.sample_gpu(0).power_w is not None
    s = sim_a100_40gb.sample_gpu(0)
    assert s.power_w is None and "power_w" not in s.unsupported
    assert "nvmlDeviceGetPowerUsage" in s.errors["power_w"]
    assert s.energy_mj is not None  # the other metrics are still read
    assert sim_a100_40gb.sample_gpu(0).power_w is not None


def test_fake_processes_need_a_simulated_gpu() -> None:
    import pynvml

    real = Nvml(pynvml, simulated=False)
    with pytest.raises(UsageError, match="real GPU"):
        real.attach_simulated_process(0, os.getpid())
