"""Align telemetry to a run's measurement window and summarise it.

The window is the worker's own: ``timing.window_start_unix_s`` and
``timing.window_end_unix_s``, wall-clock seconds the worker derives from
its high-resolution timer, i.e. the span of the measured iterations only
(warmup, model build and process start are outside). Telemetry readings carry
unix seconds derived from the parent's monotonic clock (see
:mod:`migperf.telemetry.sampler`); on one host both are the same clock to
within microseconds, far below the 100 ms sampling interval.

* Means and maxima use the readings whose timestamps fall inside the window.
* Energy is the energy counter's difference between the window's ends, each
  end linearly interpolated between the readings around it
  (:mod:`migperf.telemetry.energy`), so it covers exactly the window even
  though readings are 100 ms apart.
* Activity rows (GPM, one per interval) are weighted by how much of each
  interval lies inside the window.
* Whole-GPU values of a co-located run are labelled with every job sharing
  the GPU, and no per-job energy per sample is derived from them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from migperf.nvml.types import GPM_METRICS, throttle_reason_names
from migperf.telemetry.energy import energy_between, unwrap_counter
from migperf.telemetry.model import (
    ActivitySeries,
    ActivitySummary,
    Column,
    DcgmEntitySummary,
    DcgmSeries,
    GpuSeries,
    GpuWindowSummary,
    InstanceWindowSummary,
    MigDeviceSeries,
    TelemetrySeries,
    TelemetrySummary,
)
from migperf.telemetry.target import TelemetryTarget

__all__ = ["MIN_ENERGY_COVERAGE", "summarize_window"]

#: Share of the window the energy readings must span for per-sample energy.
MIN_ENERGY_COVERAGE = 0.99


def summarize_window(
    series: TelemetrySeries,
    start_unix_s: float,
    end_unix_s: float,
    *,
    target: TelemetryTarget | None = None,
    samples_processed: float | None = None,
    tokens_processed: float | None = None,
    shared_by: Sequence[str] = (),
    simulated: bool = False,
) -> TelemetrySummary:
    """Summarise the telemetry of one measurement window.

    Args:
        series: Readings covering the window (from :meth:`NvmlSampler.series`).
        start_unix_s: Window start (the worker's ``timing.window_start_unix_s``).
        end_unix_s: Window end.
        target: The run's device; None takes the first GPU in ``series``.
        samples_processed: Work items the run did in the window, for J/sample.
        tokens_processed: Tokens the run did in the window, for J/1k tokens.
        shared_by: Labels of every job co-located on the same GPU in this
            window (this run included); two or more mark the whole-GPU
            values as shared and suppress per-sample energy.
        simulated: The readings come from the NVML simulator.

    Returns:
        The summary; metrics that could not be read are None, with reasons.
    """
    duration = max(end_unix_s - start_unix_s, 0.0)
    notes: list[str] = []
    unsupported: dict[str, str] = {}
    gpu_series = _pick_gpu(series, target)
    gpu_summary = None
    if gpu_series is not None:
        gpu_summary = _gpu_summary(gpu_series, start_unix_s, end_unix_s, shared_by, notes)
        # GPM's reason is reported under "activity" below, once.
        unsupported.update({k: v for k, v in gpu_series.unsupported.items() if k != "gpm_activity"})
    gpu_index = gpu_series.gpu_index if gpu_series is not None else None
    gi_id = target.gi_id if target is not None else None

    instance = None
    if target is not None and target.mig_uuid is not None:
        mig = next((m for m in series.mig_devices if m.mig_uuid == target.mig_uuid), None)
        if mig is not None:
            instance = _instance_summary(mig, start_unix_s, end_unix_s)
        else:
            instance = InstanceWindowSummary(
                mig_uuid=target.mig_uuid,
                gi_id=target.gi_id if target.gi_id is not None else -1,
                ci_id=target.ci_id if target.ci_id is not None else -1,
                profile=target.profile,
            )

    activity = None
    if gpu_index is not None:
        activity = _gpm_activity(series.activity, gpu_index, gi_id, start_unix_s, end_unix_s)
        gpm = next(
            (a for a in series.activity if a.gpu_index == gpu_index and a.gi_id == gi_id), None
        )
        if gpm is not None:
            for metric, why in gpm.unsupported.items():
                unsupported.setdefault(f"activity.{metric}", why)
    dcgm = _dcgm_summaries(series.dcgm, gpu_series, gi_id, start_unix_s, end_unix_s)
    if activity is None:
        activity = _dcgm_activity(dcgm)
    if activity is None and gpu_summary is not None and gpu_summary.gpu_util_mean_pct is not None:
        activity = ActivitySummary(
            source="nvml_utilization",
            scope="whole_gpu",
            graphics_util_pct=gpu_summary.gpu_util_mean_pct,
            covered_s=duration,
        )
    if activity is None and gpu_series is not None:
        no_gpm = gpu_series.unsupported.get("gpm_activity")
        if no_gpm:
            unsupported.setdefault("activity", no_gpm)
        elif gi_id is not None or gpu_series.mig_enabled:
            unsupported.setdefault(
                "activity", "no activity readings in the window (too short for the GPM interval?)"
            )

    per_sample = per_1k_tokens = None
    if gpu_summary is not None and gpu_summary.energy_j is not None:
        covered = gpu_summary.energy_covered_s or 0.0
        if len(shared_by) > 1:
            notes.append(
                f"whole-GPU power and energy are shared by {len(shared_by)} co-located jobs "
                f"({', '.join(shared_by)}); no per-sample energy is attributed to one of them"
            )
        elif duration > 0 and covered < MIN_ENERGY_COVERAGE * duration:
            notes.append(
                f"the energy counter readings cover {covered:.3g} s of the {duration:.3g} s "
                "window; no per-sample energy"
            )
        else:
            if samples_processed:
                per_sample = gpu_summary.energy_j / samples_processed
            if tokens_processed:
                per_1k_tokens = gpu_summary.energy_j / tokens_processed * 1000.0
            if target is not None and target.mig_uuid is not None:
                notes.append(
                    "energy is the whole GPU's (NVML has no per-slice power sensor): it includes "
                    "the idle draw of the other slices and charges it to this run"
                )
    if gpu_summary is not None and gpu_summary.energy_counter_resets:
        notes.append(
            f"the energy counter reset or wrapped {gpu_summary.energy_counter_resets} time(s) "
            "in the window; energy across a reset is partly lost"
        )
    if gpu_summary is not None and gpu_summary.samples < 2 and duration > 0:
        notes.append(
            f"only {gpu_summary.samples} telemetry reading(s) inside the {duration:.3g} s window "
            f"(interval {series.interval_s:g} s): means and maxima are thin"
        )
    if simulated:
        notes.append(
            "simulated GPU: these readings come from migperf's NVML simulator, driven by the "
            "worker's presence on the simulated device, not from hardware"
        )
    return TelemetrySummary(
        simulated=simulated,
        window_start_unix_s=start_unix_s,
        window_end_unix_s=end_unix_s,
        duration_s=duration,
        target=target.label if target is not None else None,
        gpu=gpu_summary,
        instance=instance,
        activity=activity,
        samples_processed=samples_processed,
        tokens_processed=tokens_processed,
        energy_per_sample_j=per_sample,
        energy_per_1k_tokens_j=per_1k_tokens,
        dcgm=dcgm,
        unsupported=unsupported,
        notes=notes,
    )


# ------------------------------------------------------------------ helpers


def _pick_gpu(series: TelemetrySeries, target: TelemetryTarget | None) -> GpuSeries | None:
    if target is None:
        return series.gpus[0] if series.gpus else None
    return next((g for g in series.gpus if g.gpu_index == target.gpu_index), None)


def _inside(t: Column, lo: float, hi: float) -> range:
    times = [float(x) for x in t if x is not None]
    return range(bisect.bisect_left(times, lo), bisect.bisect_right(times, hi))


def _values(col: Column | None, idx: range) -> list[float]:
    if col is None:
        return []
    return [float(col[i]) for i in idx if col[i] is not None]  # type: ignore[arg-type]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _max(xs: list[float]) -> float | None:
    return max(xs) if xs else None


def _gpu_summary(
    gs: GpuSeries, lo: float, hi: float, shared_by: Sequence[str], notes: list[str]
) -> GpuWindowSummary:
    cols = gs.columns
    t = cols.get("t_unix_s", [])
    idx = _inside(t, lo, hi)
    power = _values(cols.get("power_w"), idx)
    instant = _values(cols.get("power_instant_w"), idx)
    energy_j = covered = None
    resets = 0
    if "energy_mj" in cols:
        cum = unwrap_counter([float(x) for x in t], cols["energy_mj"])  # type: ignore[arg-type]
        mj, covered, resets = energy_between(cum, lo, hi)
        energy_j = None if mj is None else mj / 1000.0
    masks = [int(x) for x in _values(cols.get("throttle_reasons"), idx)]
    reasons: list[str] = []
    for m in masks:
        for name in throttle_reason_names(m):
            if name not in reasons:
                reasons.append(name)
    return GpuWindowSummary(
        gpu_index=gs.gpu_index,
        gpu_uuid=gs.gpu_uuid,
        shared_by=list(shared_by) if len(shared_by) > 1 else [],
        samples=len(idx),
        power_mean_w=_mean(power),
        power_max_w=_max(power + instant),
        energy_j=energy_j,
        energy_covered_s=covered,
        energy_counter_resets=resets,
        temperature_max_c=_max(_values(cols.get("temperature_c"), idx)),
        sm_clock_mean_mhz=_mean(_values(cols.get("sm_clock_mhz"), idx)),
        mem_clock_mean_mhz=_mean(_values(cols.get("mem_clock_mhz"), idx)),
        gpu_util_mean_pct=_mean(_values(cols.get("gpu_util_pct"), idx)),
        memory_used_max_mib=_max(_values(cols.get("memory_used_mib"), idx)),
        throttle_reasons=reasons,
    )


def _instance_summary(mig: MigDeviceSeries, lo: float, hi: float) -> InstanceWindowSummary:
    t = mig.columns.get("t_unix_s", [])
    idx = _inside(t, lo, hi)
    if not idx:
        # A window shorter than the interval: the readings around it bound it.
        idx = range(len(t))
    used = _values(mig.columns.get("memory_used_mib"), idx)
    total = _values(mig.columns.get("memory_total_mib"), idx)
    return InstanceWindowSummary(
        mig_uuid=mig.mig_uuid,
        gi_id=mig.gi_id,
        ci_id=mig.ci_id,
        profile=mig.profile,
        memory_used_max_mib=_max(used),
        memory_total_mib=total[-1] if total else None,
    )


def _gpm_activity(
    activity: Sequence[ActivitySeries], gpu_index: int, gi_id: int | None, lo: float, hi: float
) -> ActivitySummary | None:
    a = next((s for s in activity if s.gpu_index == gpu_index and s.gi_id == gi_id), None)
    if a is None:
        return None
    starts = a.columns.get("t_start_unix_s", [])
    ends = a.columns.get("t_end_unix_s", [])
    weights = []
    for t0, t1 in zip(starts, ends, strict=False):
        if t0 is None or t1 is None:
            weights.append(0.0)
            continue
        weights.append(max(0.0, min(float(t1), hi) - max(float(t0), lo)))
    covered = sum(weights)
    if covered <= 0:
        return None
    means: dict[str, float | None] = {}
    for m in GPM_METRICS:
        col = a.columns.get(m)
        pairs = [
            (w, float(v))
            for w, v in zip(weights, col or [], strict=False)
            if w > 0 and v is not None
        ]
        total_w = sum(w for w, _ in pairs)
        means[m] = sum(w * v for w, v in pairs) / total_w if total_w > 0 else None
    return ActivitySummary(
        source="nvml_gpm",
        scope=a.scope,
        gi_id=gi_id,
        covered_s=covered,
        **means,
    )


def _dcgm_summaries(
    dcgm: Sequence[DcgmSeries],
    gpu: GpuSeries | None,
    gi_id: int | None,
    lo: float,
    hi: float,
) -> list[DcgmEntitySummary]:
    if gpu is None or not dcgm:
        return []

    def same_gpu(s: DcgmSeries) -> bool:
        if s.gpu_uuid and gpu.gpu_uuid:
            return s.gpu_uuid == gpu.gpu_uuid
        return s.gpu_index == gpu.gpu_index

    out = []
    wanted: list[int | None] = [None] if gi_id is None else [gi_id, None]
    for gi in wanted:
        for s in dcgm:
            if not same_gpu(s) or s.gi_id != gi:
                continue
            idx = _inside(s.columns.get("t_unix_s", []), lo, hi)
            mean: dict[str, float] = {}
            top: dict[str, float] = {}
            for name, col in s.columns.items():
                if name == "t_unix_s":
                    continue
                xs = _values(col, idx)
                if xs:
                    mean[name] = sum(xs) / len(xs)
                    top[name] = max(xs)
            out.append(
                DcgmEntitySummary(
                    scope=s.scope,
                    gi_id=s.gi_id,
                    profile=s.profile,
                    scrapes=len(idx),
                    mean=mean,
                    max=top,
                )
            )
    return out


def _dcgm_activity(dcgm: Sequence[DcgmEntitySummary]) -> ActivitySummary | None:
    # The first summary is the run's own entity (its GPU instance on MIG).
    if not dcgm:
        return None
    own = dcgm[0]
    values = {m: own.mean.get(m) for m in GPM_METRICS}
    if all(v is None for v in values.values()):
        return None
    return ActivitySummary(source="dcgm", scope=own.scope, gi_id=own.gi_id, **values)
