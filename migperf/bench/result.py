"""The result document of one worker run (versioned schema).

The worker writes exactly one :class:`WorkerResult` as JSON on stdout; the
parent fills in :attr:`WorkerResult.process` and, when no document came back
(crash, timeout), builds one itself. Every outcome is a result, never an
exception in the parent: ``ok``, ``oom`` (with the batch size), ``crashed``,
``timeout``, ``invalid`` (the spec cannot run, e.g. an unknown model argument),
``aborted`` (a barrier was abandoned) and ``skipped`` (a sweep skipped this
batch size after a smaller one ran out of memory).
"""

from __future__ import annotations

import signal
from typing import Any, Literal

from pydantic import Field

from migperf.bench.scenario_result import ScenarioResult
from migperf.bench.spec import BenchSpec
from migperf.bench.stats import StabilityResult, Summary
from migperf.errors import UsageError
from migperf.models import FrozenModel
from migperf.telemetry.model import TelemetryResult

__all__ = [
    "RESULT_SCHEMA_VERSION",
    "EnvironmentInfo",
    "ErrorInfo",
    "ProcessInfo",
    "Status",
    "ThroughputResult",
    "TimingInfo",
    "WorkerResult",
    "load_result",
    "unanswered",
]

#: Version of the result document; bumped when a field changes meaning.
RESULT_SCHEMA_VERSION = 1

Status = Literal["ok", "oom", "crashed", "timeout", "invalid", "aborted", "skipped"]
DeviceKind = Literal["cuda", "cpu"]


class EnvironmentInfo(FrozenModel):
    """Where a number was measured, as the worker saw it.

    Attributes:
        device_kind: ``cuda`` or ``cpu``.
        device_name: ``torch.cuda.get_device_name`` (a MIG slice shows its
            profile, e.g. ``NVIDIA A100-SXM4-40GB MIG 1g.5gb``) or the CPU model.
        device_uuid: The CUDA device UUID torch reports, when available.
        cuda_visible_devices: The worker's ``CUDA_VISIBLE_DEVICES`` (``MIG-...``, an index, ``""``).
        sm_count: Streaming multiprocessors visible to torch (CUDA only).
        device_memory_mib: Total memory of the device as torch sees it (CUDA only).
        compute_capability: ``major.minor`` (CUDA only).
        driver_version: NVIDIA kernel driver version, from ``/proc/driver/nvidia/version``.
        cuda_runtime_version: CUDA version torch was built with (``torch.version.cuda``).
        cudnn_version: cuDNN version torch uses, when available.
        torch_version: ``torch.__version__``.
        transformers_version: Installed ``transformers`` version.
        migperf_version: ``migperf.__version__``.
        python_version: Interpreter version.
        platform: ``platform.platform()``.
        host: Host name.
        pid: Worker process id.
        cpu_count: Logical CPUs the worker may run on.
        torch_num_threads: ``torch.get_num_threads()``.
        emulation: On a simulated GPU, what the CPU emulated with how much
            of this host (``emulated MIG 1g.10gb: 14 of 98 SMs -> 0.29 of 2
            CPU cores, 9728 MiB memory limit``); ``None`` elsewhere.
    """

    device_kind: DeviceKind
    device_name: str
    device_uuid: str | None = None
    cuda_visible_devices: str | None = None
    sm_count: int | None = None
    device_memory_mib: float | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    cuda_runtime_version: str | None = None
    cudnn_version: int | None = None
    torch_version: str
    transformers_version: str | None = None
    migperf_version: str
    python_version: str
    platform: str
    host: str
    pid: int
    cpu_count: int | None = None
    torch_num_threads: int | None = None
    emulation: str | None = None


class TimingInfo(FrozenModel):
    """How the measurement window was timed and why it stopped.

    Attributes:
        timer: ``cuda_event`` (events per iteration, one synchronize per
            window) or ``perf_counter_ns`` (host clock, CPU).
        warmup_iterations: Iterations run before measuring (kept, not in statistics).
        iterations: Measured iterations.
        windows: Timing windows (one device synchronize each on CUDA).
        stop_reason: ``min_reached`` (both minimums met), ``max_duration`` or
            ``max_iterations``.
        measured_duration_s: Time the measured iterations took (on CUDA the
            sum of the windows' device time; on CPU first start to last end).
        window_start_unix_s: Wall-clock start of the measurement window.
        window_end_unix_s: Wall-clock end of the measurement window.
        ready_unix_s: When the worker reported ready at the barrier.
        go_unix_s: When the worker read ``go``.
        build_duration_s: Time to build the model, inputs and optimizer.
        warmup_duration_s: Wall time of warmup (includes ``torch.compile``).
    """

    timer: Literal["cuda_event", "perf_counter_ns"]
    warmup_iterations: int
    iterations: int
    windows: int
    stop_reason: Literal["min_reached", "max_duration", "max_iterations"]
    measured_duration_s: float
    window_start_unix_s: float
    window_end_unix_s: float
    ready_unix_s: float | None = None
    go_unix_s: float | None = None
    build_duration_s: float | None = None
    warmup_duration_s: float | None = None


class ThroughputResult(FrozenModel):
    """Work done per second over the measurement window.

    Attributes:
        samples_per_s: Samples (images, sequences, matrices, copies) per second.
        tokens_per_s: Tokens per second (language workloads).
        tflop_per_s: Floating-point throughput in TFLOP/s (``gemm``).
        gb_per_s: Bytes read plus written per second in GB/s (10^9, ``memcpy``).
    """

    samples_per_s: float
    tokens_per_s: float | None = None
    tflop_per_s: float | None = None
    gb_per_s: float | None = None


class ErrorInfo(FrozenModel):
    """Why a run did not finish with ``ok``.

    Attributes:
        kind: Exception class or failure kind (``OutOfMemoryError``, ``signal``, ``timeout``).
        message: What failed.
        hint: What to do about it.
        phase: ``spec``, ``device``, ``build``, ``warmup``, ``barrier``, ``measure``
            or ``process``.
        traceback: The Python traceback of an unexpected exception in the worker.
    """

    kind: str
    message: str
    hint: str = ""
    phase: str | None = None
    traceback: str | None = None


class ProcessInfo(FrozenModel):
    """The worker process as the parent saw it.

    Attributes:
        pid: Worker process id.
        returncode: Exit status (negative: killed by that signal), ``None`` if unknown.
        wall_duration_s: Parent-side wall time from start to exit.
        timeout_s: The limit the parent enforced.
        timed_out: Whether the parent killed the worker for exceeding ``timeout_s``.
        stderr_tail: The last lines the worker wrote on stderr.
    """

    pid: int | None
    returncode: int | None
    wall_duration_s: float
    timeout_s: float | None
    timed_out: bool = False
    stderr_tail: list[str] = Field(default_factory=list)


class WorkerResult(FrozenModel):
    """Everything one worker run produced.

    Attributes:
        schema_version: Result format version.
        status: Outcome (see module docstring).
        spec: The spec that was run (``None`` if it could not be parsed).
        workload: Workload name (copied from the spec for tables).
        task: ``train`` or ``infer``.
        batch_size: Samples per iteration (also the batch size that ran out of memory).
        config_hash: Stable hash of what was measured (see :meth:`BenchSpec.config_hash`).
        device_kind: ``cuda`` or ``cpu`` as the worker ran, ``None`` if unknown.
        simulated: The slot was a simulated GPU and the numbers come from a CPU.
        environment: Device, driver and library versions.
        timing: Timer, iteration counts, stop reason and window timestamps.
        latency_ms: Per-iteration latency statistics.
        phase_ms: Per-phase statistics (``forward``, ``backward``, ``optimizer`` for training).
        throughput: Samples, tokens, FLOP or bytes per second.
        stability: Whether consecutive windows agreed.
        peak_memory_mib: Peak memory allocated by torch on the CUDA device.
        peak_reserved_mib: Peak memory reserved by torch's caching allocator (CUDA).
        host_peak_rss_mib: Peak resident set size of the worker process (host memory).
        parameter_count: Parameters of the model.
        executed_precision: The precision it ran in, when not the spec's (fp16
            asked on a CPU runs in bf16).
        workload_config: The effective model configuration (label maps omitted)
            or the microbenchmark's arguments.
        warmup_samples_ms: Warmup iteration latencies (not in statistics).
        latency_samples_ms: Raw per-iteration latencies of the measured window.
        phase_samples_ms: Raw per-iteration phase latencies.
        warnings: Things a reader of the numbers should know.
        scenario: An inference-scenario run's verdict, QPS, latency
            percentiles, LoadGen log location and capacity search
            (``latency_ms`` and the raw samples are then only filled for
            closed-loop runs, whose every request migperf times itself).
        telemetry: GPU telemetry of the measurement window, sampled by the parent
            (power, energy, clocks, per-slice memory and activity; see
            :mod:`migperf.telemetry`); ``None`` when telemetry was off.
        error: Why the status is not ``ok``.
        process: Parent-side process facts (filled in by the parent).
    """

    schema_version: int = RESULT_SCHEMA_VERSION
    status: Status
    spec: BenchSpec | None = None
    workload: str | None = None
    task: str | None = None
    batch_size: int | None = None
    config_hash: str | None = None
    device_kind: DeviceKind | None = None
    simulated: bool = False
    environment: EnvironmentInfo | None = None
    timing: TimingInfo | None = None
    latency_ms: Summary | None = None
    phase_ms: dict[str, Summary] = Field(default_factory=dict)
    throughput: ThroughputResult | None = None
    stability: StabilityResult | None = None
    peak_memory_mib: float | None = None
    peak_reserved_mib: float | None = None
    host_peak_rss_mib: float | None = None
    parameter_count: int | None = None
    executed_precision: str | None = None
    workload_config: dict[str, Any] = Field(default_factory=dict)
    warmup_samples_ms: list[float] = Field(default_factory=list)
    latency_samples_ms: list[float] = Field(default_factory=list)
    phase_samples_ms: dict[str, list[float]] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    scenario: ScenarioResult | None = None
    telemetry: TelemetryResult | None = None
    error: ErrorInfo | None = None
    process: ProcessInfo | None = None

    @classmethod
    def for_spec(cls, spec: BenchSpec | None, status: Status, **fields: Any) -> WorkerResult:
        """A result for ``spec`` with the identifying fields copied from it."""
        base: dict[str, Any] = {"status": status}
        if spec is not None:
            base.update(
                spec=spec,
                workload=spec.workload,
                task=spec.task,
                batch_size=spec.batch_size,
                config_hash=spec.config_hash(),
                simulated=spec.simulated,
            )
        base.update(fields)
        return cls(**base)

    def to_json(self) -> str:
        """The document as one line of JSON."""
        return self.model_dump_json()

    def to_dict(self) -> dict[str, Any]:
        """The document as JSON-ready Python data."""
        return self.model_dump(mode="json")


def load_result(data: str | bytes | dict[str, Any]) -> WorkerResult:
    """Load a result document, checking its schema version.

    Raises:
        UsageError: When the document is from a newer migperf or malformed.
    """
    import json

    try:
        doc = data if isinstance(data, dict) else json.loads(data)
    except ValueError as exc:
        raise UsageError(f"malformed result document: {exc}") from None
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if not isinstance(version, int) or version > RESULT_SCHEMA_VERSION:
        raise UsageError(
            f"result schema_version {version!r} is not one this migperf reads "
            f"(1 to {RESULT_SCHEMA_VERSION})",
            hint="upgrade migperf to read results written by a newer version",
        )
    try:
        return WorkerResult.model_validate(doc)
    except ValueError as exc:
        raise UsageError(f"malformed result document: {exc}") from None


def unanswered(spec: BenchSpec, info: ProcessInfo) -> WorkerResult:
    """The result of a worker that wrote none: ``timeout`` when the parent killed it, else ``crashed``.

    The error names the limit or the exit status or signal, and the worker's
    last stderr line (all of its tail is in ``process.stderr_tail``).
    """
    last = next((line for line in reversed(info.stderr_tail) if line.strip()), "")
    said = f"; last stderr line: {last}" if last else ""
    if info.timed_out:
        return WorkerResult.for_spec(
            spec,
            "timeout",
            error=ErrorInfo(
                kind="timeout",
                message=f"the worker ran past its {info.timeout_s:g} s timeout and was killed{said}",
                hint="raise --timeout, or lower --max-duration / --warmup",
                phase="process",
            ),
            process=info,
        )
    rc = info.returncode
    if rc is not None and rc < 0:
        try:
            how = f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            how = f"was killed by signal {-rc}"
    else:
        how = f"exited with status {rc}"
    return WorkerResult.for_spec(
        spec,
        "crashed",
        error=ErrorInfo(
            kind="signal" if rc is not None and rc < 0 else "exit",
            message=f"the worker {how} without a result{said}",
            hint="the last lines of its stderr are in process.stderr_tail",
            phase="process",
        ),
        process=info,
    )
