"""The worker's body for a spec with a scenario: build, warm up, serve, and assemble the result."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any

from migperf.bench.result import ThroughputResult, TimingInfo, WorkerResult
from migperf.bench.scenario_result import ScenarioResult
from migperf.bench.scenarios.runner import ScenarioRunner, run_log_dir
from migperf.bench.spec import BenchSpec
from migperf.bench.worker_kit import (
    Barrier,
    EventChannel,
    device_kind,
    failure_result,
    memory_readings,
    select_device,
    simulated_warning,
)

if TYPE_CHECKING:
    from migperf.bench.workloads.base import PreparedWorkload

__all__ = ["run_scenario"]


def run_scenario(
    spec: BenchSpec,
    *,
    stdin: IO[str] | None = None,
    ready_fd: int | None = None,
    log: Callable[[str], None] | None = None,
    events: EventChannel | None = None,
) -> WorkerResult:
    """Run the spec's scenario in this process and return its result (the worker's body).

    Builds the workload with ``qsl_size`` samples on the worker's device,
    warms it up (full and single-sample batches), waits at the barrier if
    the spec has one, then runs LoadGen (or the closed loop, or the capacity
    search). Every outcome is a result, as in :func:`migperf.bench.worker.run_spec`.
    """
    say = log or (lambda _msg: None)
    channel = events or EventChannel(None)
    sc = spec.scenario
    assert sc is not None
    phase = "device"
    device = None
    warnings: list[str] = []
    build_s = warmup_s = None
    barrier = Barrier(stdin, ready_fd) if spec.barrier else None
    try:
        from migperf.bench.model_cache import keep_only
        from migperf.bench.workloads import build_workload

        device = select_device(spec)
        if spec.expect_device == "auto" and device.type == "cpu" and not spec.simulated:
            warnings.append("no CUDA device is visible to torch in the worker: measured on the CPU")
        if spec.simulated:
            warnings.append(simulated_warning())
        phase = "build"
        channel.phase("building", workload=spec.workload)
        qsl_size = sc.effective_qsl_size(spec.batch_size)
        say(
            f"building {spec.workload} for the {sc.name} scenario (max batch {spec.batch_size}, "
            f"{qsl_size} samples in the QSL) on {device}"
        )
        keep_only(spec.workload)
        t0 = time.perf_counter()
        prepared = build_workload(spec.model_copy(update={"batch_size": qsl_size}), device)
        _apply_faults(prepared, spec)
        build_s = time.perf_counter() - t0
        log_dir = run_log_dir(spec)
        runner = ScenarioRunner(spec, prepared, device, log_dir)

        phase = "warmup"
        channel.phase("warmup", build_s=build_s)
        t0 = time.perf_counter()
        runner.warmup(spec.effective_warmup)
        warmup_s = time.perf_counter() - t0
        if barrier is not None:
            phase = "barrier"
            say("warm; waiting at the barrier")
            barrier.wait()
        phase = "measure"
        channel.phase("measuring", min_s=spec.min_duration_s, max_s=spec.max_duration_s)
        latencies: list[float] = []
        if sc.name == "closed-loop":
            say(f"closed loop at concurrency {sc.effective_concurrency}")
            result, latencies, start, end = runner.run_closed_loop()
        elif sc.find_max_qps:
            say(f"searching the highest server QPS within the SLO; LoadGen logs in {log_dir}")
            result, start, end = runner.search_max_qps(
                say=say,
                on_trial=lambda k, n, qps: channel.phase("trial", trial=k, trials=n, qps=qps),
            )
        else:
            say(f"LoadGen {sc.loadgen_scenario}; logs in {log_dir}")
            result, start, end = runner.run_loadgen(log_dir, target_qps=sc.target_qps)
        say(result.verdict)
    except Exception as exc:
        return failure_result(spec, exc, phase=phase, device=device, warnings=warnings)
    return _assemble(
        spec,
        device,
        prepared,
        runner,
        result,
        latencies,
        (start, end),
        barrier,
        (build_s, warmup_s),
        warnings,
    )


def _apply_faults(prepared: PreparedWorkload, spec: BenchSpec) -> None:
    """Route the spec's fault injection through ``infer_batch``: it fires in the first batch."""
    from migperf.bench.workloads.base import apply_faults

    inner = prepared.infer_batch
    if inner is None or not (spec.inject_crash or spec.inject_hang or spec.inject_oom):
        return
    pending: list[Sequence[int]] = []

    def step(mark: Callable[[], None]) -> None:
        inner(pending.pop())

    faulty = apply_faults(step, spec)

    def infer_batch(indices: Sequence[int]) -> None:
        pending.append(indices)
        faulty(_no_mark)

    prepared.infer_batch = infer_batch


def _no_mark() -> None:
    return None


def _stop_reason(result: ScenarioResult) -> Any:
    reason = result.end_reason or ""
    if "Max query count" in reason:
        return "max_iterations"
    if "Ending early" in reason or "error" in reason:
        # Max duration, too many outstanding queries, or another early end:
        # the exact words are in scenario.end_reason.
        return "max_duration"
    return "min_reached"


def _assemble(
    spec: BenchSpec,
    device: Any,
    prepared: PreparedWorkload,
    runner: ScenarioRunner,
    result: ScenarioResult,
    latencies: list[float],
    window: tuple[float, float],
    barrier: Barrier | None,
    durations: tuple[float | None, float | None],
    warnings: list[str],
) -> WorkerResult:
    from migperf.bench.environment import collect_environment
    from migperf.bench.stats import summarize

    start, end = window
    build_s, warmup_s = durations
    warnings = list(warnings) + list(prepared.notes)
    if result.valid is False:
        warnings.append(result.verdict)
    if result.max_qps is not None and result.max_qps.reason:
        warnings.append(f"capacity search: {result.max_qps.reason}")
    warmup = runner.warmup_ms.get(spec.batch_size, [])
    timing = TimingInfo(
        timer="perf_counter_ns",
        warmup_iterations=sum(len(v) for v in runner.warmup_ms.values()),
        iterations=result.query_count or 0,
        windows=len(result.max_qps.trials) if result.max_qps is not None else 1,
        stop_reason=_stop_reason(result),
        measured_duration_s=result.duration_s or (end - start),
        window_start_unix_s=start,
        window_end_unix_s=end,
        ready_unix_s=barrier.ready_unix_s if barrier else None,
        go_unix_s=barrier.go_unix_s if barrier else None,
        build_duration_s=build_s,
        warmup_duration_s=warmup_s,
    )
    samples_per_s = result.completed_qps
    return WorkerResult.for_spec(
        spec,
        "ok",
        device_kind=device_kind(device),
        environment=collect_environment(device),
        timing=timing,
        latency_ms=summarize(latencies, confidence=spec.confidence) if latencies else None,
        throughput=(
            ThroughputResult(
                samples_per_s=samples_per_s,
                tokens_per_s=samples_per_s * spec.seq_len if prepared.tokens_per_step else None,
            )
            if samples_per_s is not None
            else None
        ),
        parameter_count=prepared.parameter_count,
        executed_precision=(
            prepared.precision if prepared.precision not in (None, spec.precision) else None
        ),
        workload_config=prepared.config,
        warmup_samples_ms=list(warmup),
        latency_samples_ms=list(latencies),
        scenario=result,
        warnings=warnings,
        **memory_readings(device),
    )
