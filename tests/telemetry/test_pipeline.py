"""End to end: real worker processes on simulated MIG slots, telemetry sampled in the parent."""

from __future__ import annotations

import pytest

from migperf.bench.device import resolve_device
from migperf.bench.monitor import RunMonitor
from migperf.bench.result import WorkerResult, load_result
from migperf.bench.spec import BenchSpec, parse_spec
from migperf.mig import apply_layout
from migperf.nvml.catalog import get_model
from migperf.nvml.facade import Nvml
from migperf.nvml.sim.workload import idle_used_mib
from migperf.telemetry.target import resolve_target

H100 = get_model("h100-80gb")


def _spec(**extra: object) -> BenchSpec:
    return parse_spec(
        {
            "workload": "gemm",
            "task": "infer",
            "model_args": {"n": 32},
            "warmup_iterations": 1,
            "min_iterations": 3,
            "min_duration_s": 0.5,
            "max_duration_s": 5.0,
            "expect_device": "cpu",
            "simulated": True,
            **extra,
        }
    )


@pytest.fixture
def h100_slices(sim_h100: Nvml) -> Nvml:
    apply_layout(sim_h100, 0, "3g.40gb,2g.20gb")
    return sim_h100


def _run(nvml: Nvml, mig_uuid: str, **spec: object) -> WorkerResult:
    target = resolve_target(nvml, mig_uuid)
    assert target is not None
    env = resolve_device(mig_uuid, simulated=True).env()
    with RunMonitor(nvml, [target], interval_s=0.05, gpm_interval_s=0.15) as monitor:
        return monitor.run_worker(_spec(**spec), env, 120.0)


def test_a_run_on_a_simulated_slice_carries_its_windows_telemetry(h100_slices: Nvml) -> None:
    slice3g = h100_slices.mig_devices(0)[0]
    r = _run(h100_slices, slice3g.mig_uuid)
    assert r.status == "ok" and r.simulated is True
    assert r.telemetry is not None and r.telemetry.series is not None
    s = r.telemetry.summary
    assert s.simulated and s.target is not None and slice3g.mig_uuid in s.target
    assert r.timing is not None
    assert (s.window_start_unix_s, s.window_end_unix_s) == (
        r.timing.window_start_unix_s,
        r.timing.window_end_unix_s,
    )
    g = s.gpu
    assert g is not None and g.scope == "whole_gpu" and g.samples >= 8
    # The worker was registered on the 3g slice: power rose from idle by 3/7 of the dynamic range.
    busy_w = H100.idle_power_w + 0.85 * (H100.power_limit_w - H100.idle_power_w) * 3 / 7
    assert g.power_mean_w == pytest.approx(busy_w, rel=0.03)
    assert g.energy_j == pytest.approx(busy_w * s.duration_s, rel=0.03)
    assert s.energy_per_sample_j is not None and s.samples_processed
    assert s.energy_per_sample_j == pytest.approx(g.energy_j / s.samples_processed)
    # The worker's resident memory (a gemm worker holds torch: 100s of MiB) on top
    # of what the idle slice reads (never 0); emulated, not a constant.
    idle_mib = idle_used_mib(slice3g.memory_mib)
    assert s.instance is not None and s.instance.memory_used_max_mib is not None
    assert idle_mib + 50 < s.instance.memory_used_max_mib < idle_mib + 4096
    assert s.instance.memory_used_max_mib != idle_mib + 1024.0
    assert s.instance.profile == "3g.40gb" and s.instance.memory_total_mib == slice3g.memory_mib
    assert s.activity is not None and s.activity.source == "nvml_gpm"
    assert s.activity.gi_id == slice3g.gi_id and s.activity.sm_util_pct == pytest.approx(95.0)
    assert "gpu_util_pct" in s.unsupported  # MIG-enabled: never 0, always a reason
    # By default only the run's own slice is read per tick (one NVML call, not one per slice).
    series = r.telemetry.series
    assert [m.mig_uuid for m in series.mig_devices] == [slice3g.mig_uuid]
    assert [a.gi_id for a in series.activity] == [slice3g.gi_id]
    # The worker is gone from the simulated GPU once it exits.
    assert h100_slices.processes(0) == []
    # The stored document round-trips.
    again = load_result(r.to_json())
    assert again.telemetry is not None and again.telemetry.summary == s


def test_a_driver_error_mid_run_does_not_end_the_benchmark(
    h100_slices: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", "nvmlDeviceGetTotalEnergyConsumption@4+=Unknown")
    r = _run(h100_slices, h100_slices.mig_devices(0)[1].mig_uuid, min_duration_s=0.3)
    assert r.status == "ok" and r.telemetry is not None
    s = r.telemetry.summary
    assert s.gpu is not None and s.gpu.power_mean_w is not None
    assert s.gpu.energy_j is None and s.energy_per_sample_j is None  # not 0
    assert r.telemetry.series is not None
    assert any(e.what == "gpu0.energy_mj" for e in r.telemetry.series.errors)


def test_a_crashed_run_has_no_window_and_no_telemetry(h100_slices: Nvml) -> None:
    r = _run(h100_slices, h100_slices.mig_devices(0)[0].mig_uuid, inject_crash=True)
    assert r.status == "crashed" and r.telemetry is None
    assert h100_slices.processes(0) == []


def test_co_located_jobs_share_whole_gpu_values(h100_slices: Nvml) -> None:
    devices = h100_slices.mig_devices(0)
    jobs = []
    for d in devices:
        target = resolve_target(h100_slices, d.mig_uuid)
        assert target is not None
        jobs.append(
            (_spec(min_duration_s=0.4), resolve_device(d.mig_uuid, simulated=True).env(), target)
        )
    targets = [t for _, _, t in jobs]
    with RunMonitor(h100_slices, targets, interval_s=0.05, gpm_interval_s=0.15) as monitor:
        group = monitor.run_group(jobs, timeout_s=120.0)
    assert group.released and [r.status for r in group.results] == ["ok", "ok"]
    first = group.results[0].telemetry
    assert first is not None and first.series is not None
    assert {m.mig_uuid for m in first.series.mig_devices} == {d.mig_uuid for d in devices}
    for r, d in zip(group.results, devices, strict=True):
        assert r.telemetry is not None
        s = r.telemetry.summary
        assert s.gpu is not None and len(s.gpu.shared_by) == 2
        assert s.energy_per_sample_j is None and any("shared by 2" in n for n in s.notes)
        assert s.instance is not None and s.instance.mig_uuid == d.mig_uuid
    # Both slices busy: 5 of 7 compute slices' worth of dynamic power (where the windows overlap).
    both_w = H100.idle_power_w + 0.85 * (H100.power_limit_w - H100.idle_power_w) * 5 / 7
    maxima = [
        r.telemetry.summary.gpu.power_max_w
        for r in group.results
        if r.telemetry and r.telemetry.summary.gpu
    ]
    assert max(m for m in maxima if m is not None) == pytest.approx(both_w, rel=0.03)
