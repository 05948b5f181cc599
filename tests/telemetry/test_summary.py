"""Aligning readings to a measurement window, on hand-made series with known answers."""

from __future__ import annotations

import pytest

from migperf.telemetry.model import (
    ActivitySeries,
    DcgmSeries,
    GpuSeries,
    MigDeviceSeries,
    TelemetrySeries,
)
from migperf.telemetry.summary import summarize_window
from migperf.telemetry.target import TelemetryTarget

T0 = 1_800_000_000.0
MIG = "MIG-11111111-2222-3333-4444-555555555555"
GPU = TelemetryTarget(gpu_index=0, gpu_uuid="GPU-a")
SLICE = TelemetryTarget(
    gpu_index=0, gpu_uuid="GPU-a", mig_uuid=MIG, gi_id=2, ci_id=0, profile="3g.40gb"
)


def _series(
    *,
    power: float = 300.0,
    n: int = 31,
    dt: float = 0.1,
    energy_offset_mj: int = 7_000_000,
    mig: bool = False,
    **extra: object,
) -> TelemetrySeries:
    """Readings every ``dt`` s from T0 at constant ``power`` (the counter agrees)."""
    t = [T0 + i * dt for i in range(n)]
    power_col = [power + (50.0 if i == 12 else 0.0) for i in range(n)]  # one spike
    cols: dict[str, list[float | int | None]] = {
        "t_unix_s": list(t),
        "power_w": list(power_col),
        "energy_mj": [energy_offset_mj + round(power * i * dt * 1000) for i in range(n)],
        "temperature_c": [40 + i % 3 for i in range(n)],
        "sm_clock_mhz": [1410] * n,
        "throttle_reasons": [0x4 if i == 15 else 0 for i in range(n)],
    }
    if not mig:
        cols["gpu_util_pct"] = [80] * n
    gpu = GpuSeries(
        gpu_index=0,
        gpu_uuid="GPU-a",
        mig_enabled=mig,
        columns=cols,
        unsupported={"gpu_util_pct": "nvmlDeviceGetUtilizationRates: Not Supported"} if mig else {},
    )
    migs = []
    if mig:
        migs.append(
            MigDeviceSeries(
                gpu_index=0,
                mig_uuid=MIG,
                gi_id=2,
                ci_id=0,
                profile="3g.40gb",
                columns={
                    "t_unix_s": list(t),
                    "memory_used_mib": [100.0 * i for i in range(n)],
                    "memory_total_mib": [40448.0] * n,
                },
            )
        )
    return TelemetrySeries(interval_s=dt, gpus=[gpu], mig_devices=migs, **extra)  # type: ignore[arg-type]


def test_window_means_maxima_and_energy_from_the_counter() -> None:
    s = summarize_window(_series(), T0 + 1.05, T0 + 2.55, target=GPU, samples_processed=3000.0)
    g = s.gpu
    assert g is not None and s.duration_s == pytest.approx(1.5)
    assert g.samples == 15  # readings at 1.1 .. 2.5 s
    assert g.power_max_w == pytest.approx(350.0)  # the spike at 1.2 s is inside
    assert g.power_mean_w == pytest.approx(300.0 + 50.0 / 15)
    # The counter says 300 W exactly, whatever the power readings: 1.5 s -> 450 J.
    assert g.energy_j == pytest.approx(450.0, rel=1e-6)
    assert g.energy_covered_s == pytest.approx(1.5)
    assert g.temperature_max_c == 42 and g.sm_clock_mean_mhz == 1410
    assert g.throttle_reasons == ["sw_power_cap"]
    assert s.energy_per_sample_j == pytest.approx(0.15)
    assert s.activity is not None and s.activity.source == "nvml_utilization"
    assert s.activity.scope == "whole_gpu" and s.activity.graphics_util_pct == 80
    assert g.shared_by == [] and not s.simulated


def test_readings_outside_the_window_do_not_count() -> None:
    s = summarize_window(_series(), T0 + 1.25, T0 + 1.95, target=GPU)
    assert s.gpu is not None and s.gpu.samples == 7
    assert s.gpu.power_max_w == pytest.approx(300.0)  # the spike at 1.2 s is outside


def test_a_wrapped_counter_inside_the_window_still_gives_the_energy() -> None:
    series = _series(energy_offset_mj=2**32 - 500_000)  # wraps at 32 bits about 1.7 s in
    raw = series.gpus[0].columns["energy_mj"]
    wrapped = [v % 2**32 for v in raw]  # type: ignore[operator]
    gpu = series.gpus[0].model_copy(
        update={"columns": {**series.gpus[0].columns, "energy_mj": wrapped}}
    )
    s = summarize_window(series.model_copy(update={"gpus": [gpu]}), T0 + 1.0, T0 + 2.5, target=GPU)
    assert s.gpu is not None and s.gpu.energy_j == pytest.approx(450.0, rel=1e-6)
    assert s.gpu.energy_counter_resets == 1
    assert any("reset or wrapped" in n for n in s.notes)


def test_co_located_runs_share_whole_gpu_values_and_get_no_per_sample_energy() -> None:
    jobs = ["job 0 (GPU 0 MIG 3g.40gb)", "job 1 (GPU 0 MIG 4g.40gb)"]
    s = summarize_window(
        _series(mig=True), T0 + 1.0, T0 + 2.0, target=SLICE, samples_processed=500.0, shared_by=jobs
    )
    assert s.gpu is not None and s.gpu.shared_by == jobs and s.gpu.scope == "whole_gpu"
    assert s.gpu.energy_j == pytest.approx(300.0, rel=1e-6)
    assert s.energy_per_sample_j is None
    assert any("shared by 2 co-located jobs" in n for n in s.notes)


def test_a_slice_run_reports_its_own_memory_and_says_energy_is_whole_gpu() -> None:
    s = summarize_window(
        _series(mig=True), T0 + 1.0, T0 + 2.0, target=SLICE, samples_processed=100.0
    )
    assert s.instance is not None and s.instance.mig_uuid == MIG
    assert s.instance.memory_used_max_mib == pytest.approx(2000.0)
    assert s.instance.memory_total_mib == 40448.0
    assert s.energy_per_sample_j == pytest.approx(3.0, rel=1e-6)
    assert any("whole GPU's" in n for n in s.notes)
    # No GPM, no DCGM: activity is missing with a reason, never 0.
    assert s.activity is None
    assert "gpu_util_pct" in s.unsupported and "activity" in s.unsupported


def test_short_coverage_gives_no_per_sample_energy() -> None:
    s = summarize_window(_series(n=11), T0 + 0.5, T0 + 2.0, target=GPU, samples_processed=10.0)
    assert s.gpu is not None and s.gpu.energy_covered_s == pytest.approx(0.5)
    assert s.energy_per_sample_j is None
    assert any("cover" in n for n in s.notes)


def test_gpm_rows_are_weighted_by_their_overlap_with_the_window() -> None:
    act = ActivitySeries(
        gpu_index=0,
        gi_id=2,
        columns={
            "t_start_unix_s": [T0, T0 + 1.0, T0 + 2.0],
            "t_end_unix_s": [T0 + 1.0, T0 + 2.0, T0 + 3.0],
            "sm_util_pct": [0.0, 90.0, 30.0],
            "tensor_util_pct": [None, 50.0, None],
        },
    )
    s = summarize_window(_series(mig=True, activity=[act]), T0 + 1.5, T0 + 2.5, target=SLICE)
    a = s.activity
    assert a is not None and a.source == "nvml_gpm" and a.scope == "gpu_instance" and a.gi_id == 2
    assert a.sm_util_pct == pytest.approx(60.0)  # half of 90, half of 30
    assert a.tensor_util_pct == pytest.approx(50.0)
    assert a.graphics_util_pct is None and a.covered_s == pytest.approx(1.0)


def test_dcgm_instance_values_give_activity_when_nvml_has_none() -> None:
    rows = [T0 + 0.5 * i for i in range(7)]
    dcgm = [
        DcgmSeries(
            gpu_index=0,
            gpu_uuid="GPU-a",
            gi_id=2,
            profile="3g.40gb",
            scope="gpu_instance",
            columns={"t_unix_s": list(rows), "graphics_util_pct": [10.0, 20, 30, 40, 50, 60, 70]},
        ),
        DcgmSeries(
            gpu_index=0,
            gpu_uuid="GPU-a",
            scope="whole_gpu",
            columns={"t_unix_s": list(rows), "power_w": [200.0] * 7},
        ),
        DcgmSeries(  # another GPU's instance 2: not ours
            gpu_uuid="GPU-b",
            gi_id=2,
            scope="gpu_instance",
            columns={"t_unix_s": list(rows), "graphics_util_pct": [99.0] * 7},
        ),
    ]
    s = summarize_window(_series(mig=True, dcgm=dcgm), T0 + 1.0, T0 + 2.0, target=SLICE)
    assert [d.scope for d in s.dcgm] == ["gpu_instance", "whole_gpu"]
    own = s.dcgm[0]
    assert (
        own.gi_id == 2 and own.scrapes == 3 and own.mean["graphics_util_pct"] == pytest.approx(40.0)
    )
    assert own.max["graphics_util_pct"] == 50.0
    assert s.dcgm[1].mean["power_w"] == 200.0
    assert s.activity is not None and s.activity.source == "dcgm"
    assert s.activity.graphics_util_pct == pytest.approx(40.0)


def test_a_window_shorter_than_the_interval_is_flagged() -> None:
    s = summarize_window(_series(), T0 + 1.01, T0 + 1.05, target=GPU, samples_processed=1.0)
    assert s.gpu is not None and s.gpu.samples == 0 and s.gpu.power_mean_w is None
    assert s.gpu.energy_j == pytest.approx(12.0, rel=1e-6)  # still interpolated from the counter
    assert any("only 0 telemetry reading" in n for n in s.notes)
