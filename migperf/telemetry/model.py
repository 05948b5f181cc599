"""The telemetry a result carries: time series and a per-run summary.

These pydantic models are stored inside
:class:`~migperf.bench.result.WorkerResult` (field ``telemetry``), so they
are plain JSON: series are columns (``{"t_unix_s": [...], "power_w": [...]}``)
that load straight into a DataFrame (``pandas.DataFrame(gpu.columns)``).

Scope is explicit everywhere. ``whole_gpu`` values (power, energy, clocks,
temperature, NVML utilization) come from board sensors shared by every MIG
slice and every co-located job; ``gpu_instance`` values (memory of a MIG
device, GPM or DCGM activity of a GPU instance) belong to one slice. A metric
that could not be read is absent or None, with the reason in
``unsupported``; it is never 0.

Time: every row has ``t_unix_s``, the wall-clock time of the reading,
derived from the monotonic clock with one offset taken when the sampler
started (see :mod:`migperf.telemetry.sampler`), so a clock step during a run
does not tear the series. Workers report their measurement windows in the
same unix seconds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from migperf.models import FrozenModel

__all__ = [
    "ActivitySeries",
    "ActivitySummary",
    "Column",
    "DcgmEntitySummary",
    "DcgmSeries",
    "GpuSeries",
    "GpuWindowSummary",
    "InstanceWindowSummary",
    "MigDeviceSeries",
    "SamplerError",
    "SamplerStats",
    "Scope",
    "TelemetryResult",
    "TelemetrySeries",
    "TelemetrySummary",
]

Scope = Literal["whole_gpu", "gpu_instance"]
#: One column of a series: numbers, None where that reading failed.
Column = list[float | int | None]


class GpuSeries(FrozenModel):
    """Board-level readings of one physical GPU (NVML), one row per sample.

    Attributes:
        gpu_index: The GPU (``nvidia-smi -i N``).
        gpu_uuid: Its UUID (``GPU-...``).
        name: Its name.
        mig_enabled: MIG mode when sampling started.
        scope: Always ``whole_gpu``: shared by every slice and job on it.
        columns: ``t_unix_s``, ``t_mono_s`` and one column per metric it
            supports (names as in :data:`migperf.nvml.types.GPU_METRICS`,
            plus ``memory_total_mib``); unsupported metrics have no column.
        unsupported: Metric name to why NVML does not give it here.
    """

    gpu_index: int
    gpu_uuid: str | None = None
    name: str | None = None
    mig_enabled: bool | None = None
    scope: Literal["whole_gpu"] = "whole_gpu"
    columns: dict[str, Column] = Field(default_factory=dict)
    unsupported: dict[str, str] = Field(default_factory=dict)


class MigDeviceSeries(FrozenModel):
    """Memory of one MIG device (its GPU instance), one row per sample.

    Attributes:
        gpu_index: Parent GPU.
        mig_uuid: ``MIG-...``.
        gi_id: GPU instance id.
        ci_id: Compute instance id.
        profile: Profile name (``3g.40gb``, ``1c.3g.40gb``) when known.
        columns: ``t_unix_s``, ``memory_used_mib``, ``memory_total_mib``.
    """

    gpu_index: int
    mig_uuid: str
    gi_id: int
    ci_id: int
    profile: str | None = None
    scope: Literal["gpu_instance"] = "gpu_instance"
    columns: dict[str, Column] = Field(default_factory=dict)


class ActivitySeries(FrozenModel):
    """NVML GPM activity of a GPU instance (or a whole GPU), one row per interval.

    Each row covers ``[t_start_unix_s, t_end_unix_s]``; values are percent
    (names as in :data:`migperf.nvml.types.GPM_METRICS`).

    Attributes:
        gpu_index: Parent GPU.
        gi_id: GPU instance (None: the whole GPU).
        scope: ``gpu_instance`` or ``whole_gpu``.
        columns: ``t_start_unix_s``, ``t_end_unix_s`` and the metric columns.
        unsupported: Metric name to why it is not available.
    """

    source: Literal["nvml_gpm"] = "nvml_gpm"
    gpu_index: int
    gi_id: int | None = None
    scope: Scope = "gpu_instance"
    columns: dict[str, Column] = Field(default_factory=dict)
    unsupported: dict[str, str] = Field(default_factory=dict)


class DcgmSeries(FrozenModel):
    """dcgm-exporter values of one entity, one row per scrape.

    A MIG-enabled GPU gives one ``whole_gpu`` series (power, energy, clocks,
    temperature: fields dcgm-exporter repeats on every GPU-instance row,
    kept once) and one ``gpu_instance`` series per ``GPU_I_ID``.

    Attributes:
        gpu_index: The exporter's ``gpu`` label.
        gpu_uuid: The parent GPU's UUID (``UUID`` / ``uuid`` label).
        gi_id: ``GPU_I_ID`` (the NVML GPU-instance id); None for GPU-level rows.
        profile: ``GPU_I_PROFILE``.
        columns: ``t_unix_s`` and one column per field (see
            :data:`migperf.telemetry.dcgm.FIELDS` for names and units).
    """

    source: Literal["dcgm"] = "dcgm"
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    gi_id: int | None = None
    profile: str | None = None
    scope: Scope = "whole_gpu"
    columns: dict[str, Column] = Field(default_factory=dict)


class SamplerError(FrozenModel):
    """A failure the sampler survived, counted.

    Attributes:
        what: What was being read (``gpu0.power_w``, ``gpu0.sample``, ``dcgm``).
        message: The error.
        count: How many readings failed this way.
        first_unix_s: When it first happened.
        last_unix_s: When it last happened.
    """

    what: str
    message: str
    count: int
    first_unix_s: float
    last_unix_s: float


class SamplerStats(FrozenModel):
    """What sampling cost and how regular it was.

    Attributes:
        interval_s: Requested interval.
        samples: Readings taken.
        missed_ticks: Ticks skipped because a reading overran the interval.
        read_ms_mean: Mean wall time of one reading (every GPU, every MIG device).
        read_ms_max: Longest reading.
        cpu_s: CPU time the sampler thread used.
        wall_s: How long the sampler ran.
    """

    interval_s: float
    samples: int
    missed_ticks: int = 0
    read_ms_mean: float | None = None
    read_ms_max: float | None = None
    cpu_s: float | None = None
    wall_s: float | None = None


class TelemetrySeries(FrozenModel):
    """Every series recorded around one run (or a whole sampling session).

    Attributes:
        interval_s: Sampling interval of the NVML series.
        gpus: Board-level series per physical GPU.
        mig_devices: Memory series per MIG device.
        activity: NVML GPM activity series.
        dcgm: dcgm-exporter series (with ``--dcgm-url``).
        errors: Failures the sampler survived.
        stats: Sampling cost.
    """

    interval_s: float
    gpus: list[GpuSeries] = Field(default_factory=list)
    mig_devices: list[MigDeviceSeries] = Field(default_factory=list)
    activity: list[ActivitySeries] = Field(default_factory=list)
    dcgm: list[DcgmSeries] = Field(default_factory=list)
    errors: list[SamplerError] = Field(default_factory=list)
    stats: SamplerStats | None = None


class GpuWindowSummary(FrozenModel):
    """Whole-GPU values over one measurement window.

    Attributes:
        gpu_index: The GPU.
        gpu_uuid: Its UUID.
        scope: Always ``whole_gpu``.
        shared_by: Labels of the co-located jobs whose windows these whole-GPU
            values also cover (this run included); empty when it ran alone.
        samples: NVML readings inside the window.
        power_mean_w: Mean of ``power_w`` readings in the window.
        power_max_w: Largest power reading (instant power where supported).
        energy_j: Energy counter difference over the window (interpolated at
            both ends, wrap and reset corrected), not integrated power.
        energy_covered_s: Part of the window the counter readings span.
        energy_counter_resets: Counter resets or wraps seen in the window.
        temperature_max_c: Hottest reading.
        sm_clock_mean_mhz: Mean SM clock.
        mem_clock_mean_mhz: Mean memory clock.
        gpu_util_mean_pct: Mean NVML utilization (not on MIG-enabled GPUs).
        memory_used_max_mib: Largest whole-GPU memory reading.
        throttle_reasons: Clock event reasons seen in the window.
    """

    gpu_index: int
    gpu_uuid: str | None = None
    scope: Literal["whole_gpu"] = "whole_gpu"
    shared_by: list[str] = Field(default_factory=list)
    samples: int = 0
    power_mean_w: float | None = None
    power_max_w: float | None = None
    energy_j: float | None = None
    energy_covered_s: float | None = None
    energy_counter_resets: int = 0
    temperature_max_c: float | None = None
    sm_clock_mean_mhz: float | None = None
    mem_clock_mean_mhz: float | None = None
    gpu_util_mean_pct: float | None = None
    memory_used_max_mib: float | None = None
    throttle_reasons: list[str] = Field(default_factory=list)


class InstanceWindowSummary(FrozenModel):
    """The run's own MIG device over its window.

    Attributes:
        mig_uuid: ``MIG-...``.
        gi_id: GPU instance id.
        ci_id: Compute instance id.
        profile: Profile name.
        memory_used_max_mib: Largest memory reading of the device in the window.
        memory_total_mib: The device's memory.
    """

    mig_uuid: str
    gi_id: int
    ci_id: int
    profile: str | None = None
    scope: Literal["gpu_instance"] = "gpu_instance"
    memory_used_max_mib: float | None = None
    memory_total_mib: float | None = None


class ActivitySummary(FrozenModel):
    """Mean activity of the run's slice (or GPU) over its window, in percent.

    Attributes:
        source: ``nvml_gpm`` (Hopper+), ``dcgm`` (dcgm-exporter profiling
            fields) or ``nvml_utilization`` (whole GPU, MIG disabled).
        scope: ``gpu_instance`` or ``whole_gpu``.
        gi_id: The GPU instance, when per instance.
        covered_s: How much of the window the readings cover.
    """

    source: Literal["nvml_gpm", "dcgm", "nvml_utilization"]
    scope: Scope
    gi_id: int | None = None
    graphics_util_pct: float | None = None
    sm_util_pct: float | None = None
    sm_occupancy_pct: float | None = None
    tensor_util_pct: float | None = None
    dram_bw_util_pct: float | None = None
    covered_s: float | None = None


class DcgmEntitySummary(FrozenModel):
    """dcgm-exporter fields of one entity over the window.

    Attributes:
        scope: ``gpu_instance`` (the run's GPU instance) or ``whole_gpu``.
        gi_id: ``GPU_I_ID`` when per instance.
        profile: ``GPU_I_PROFILE``.
        scrapes: Scrapes inside the window.
        mean: Field column name to its mean.
        max: Field column name to its largest value.
    """

    scope: Scope
    gi_id: int | None = None
    profile: str | None = None
    scrapes: int = 0
    mean: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)


class TelemetrySummary(FrozenModel):
    """What the telemetry says about one run's measurement window.

    Attributes:
        simulated: The GPU was simulated: the readings come from migperf's
            NVML simulator, driven by the worker's presence, not from hardware.
        window_start_unix_s: Start of the worker's measurement window.
        window_end_unix_s: End of it.
        duration_s: Its length.
        target: What the run was pinned to (``GPU 0``, ``MIG-...``).
        gpu: Whole-GPU values (shared by co-located jobs).
        instance: The run's MIG device.
        activity: Mean activity of the run's slice or GPU.
        samples_processed: Work items in the window (throughput x duration).
        tokens_processed: Tokens in the window, for language workloads.
        energy_per_sample_j: Whole-GPU energy per work item; only for a run
            alone on its GPU (co-located runs share the energy).
        energy_per_1k_tokens_j: The same per 1,000 tokens.
        dcgm: dcgm-exporter summaries (the run's instance and its GPU).
        unsupported: Metric name to why it is missing (recorded once).
        notes: What a reader of these numbers should know.
    """

    simulated: bool = False
    window_start_unix_s: float
    window_end_unix_s: float
    duration_s: float
    target: str | None = None
    gpu: GpuWindowSummary | None = None
    instance: InstanceWindowSummary | None = None
    activity: ActivitySummary | None = None
    samples_processed: float | None = None
    tokens_processed: float | None = None
    energy_per_sample_j: float | None = None
    energy_per_1k_tokens_j: float | None = None
    dcgm: list[DcgmEntitySummary] = Field(default_factory=list)
    unsupported: dict[str, str] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class TelemetryResult(FrozenModel):
    """Telemetry stored with one result: the summary and the series behind it.

    Attributes:
        summary: Per-window numbers.
        series: The readings around the window (one sample either side, so
            the energy interpolation can be recomputed); None when not kept.
    """

    summary: TelemetrySummary
    series: TelemetrySeries | None = None
