"""The worker process: ``python -m migperf.bench.worker``.

Protocol (pyperf's worker model):

* stdin, first line: one :class:`~migperf.bench.spec.BenchSpec` as JSON (a
  multi-line JSON document is accepted when it is the whole of stdin).
* stdout: exactly one :class:`~migperf.bench.result.WorkerResult` as JSON.
  Everything else the process writes (library warnings, tracebacks, even C
  code writing to file descriptor 1) goes to stderr: the worker moves fd 1 to
  stderr before anything else runs and keeps a private copy for the result.
* Barrier (``barrier: true``): after warmup the worker writes
  ``{"event": "ready", "pid": ..., "unix_s": ...}`` as one line to the file
  descriptor named by ``MIGPERF_READY_FD`` (or to stderr when unset), then
  waits for a ``go`` line on stdin before measuring. End of input instead of
  ``go`` ends the run with status ``aborted``.
* Events: the ready event and the run's phases (``building``, ``warmup``,
  ``measuring``, a LoadGen ``trial``) go as JSON lines to the same descriptor
  (:class:`~migperf.bench.worker_kit.EventChannel`), for the parent's progress.
* Exit status: 0 for ``ok`` and ``oom``, 2 for an invalid spec, 1 otherwise.

Warm mode (``--serve``, or a worker forked by :mod:`migperf.bench.zygote`):
the worker serves one spec line after the other on stdin, writing one result
line each on stdout, and keeps the model it built for the next run that uses
it (:mod:`migperf.bench.model_cache`); between runs it resets what a fresh
process would not have (:func:`~migperf.bench.worker_kit.reset_between_runs`).
It exits at end of input (its parent closed stdin or died), and after any
result that is not ``ok``: the next run gets a fresh worker. Before its first
run every worker imports the spec's workload
(:func:`~migperf.bench.worker_kit.preload_workload`), so neither the build's
time nor an emulated slice's memory counts the imports, whichever way the
worker started; a warm one then freezes them
(:func:`~migperf.bench.worker_kit.freeze_imports`: its resets between runs
skip them), as a zygote does before it forks. Every worker pins glibc's malloc
thresholds first (:func:`~migperf.bench.worker_kit.pin_allocator`): a fresh
process's allocator would otherwise still be adapting while it measures.

The device is whatever the environment gives: the first CUDA device torch
sees (``CUDA_VISIBLE_DEVICES=MIG-<uuid>`` or an index), or the CPU. A
simulated slot (``simulated: true``) always runs on the CPU; handed its
device's facts (``MIGPERF_EMULATION``, see :mod:`migperf.bench.emulation`),
the worker holds no more than the device's memory, and an allocation past it
ends the run as ``oom``.
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING

from migperf.bench.result import ErrorInfo, ThroughputResult, TimingInfo, WorkerResult
from migperf.bench.spec import BenchSpec, parse_spec
from migperf.bench.worker_kit import (
    Barrier,
    EventChannel,
    device_kind,
    failure_result,
    freeze_imports,
    memory_readings,
    pin_allocator,
    preload_workload,
    reset_between_runs,
    select_device,
    simulated_warning,
)
from migperf.errors import UsageError

if TYPE_CHECKING:
    import torch

    from migperf.bench.harness import Measurement
    from migperf.bench.workloads.base import PreparedWorkload

__all__ = ["PARENT_PID_ENV", "READY_FD_ENV", "main", "run_spec", "serve"]

#: Environment variable naming the file descriptor for the ready event.
READY_FD_ENV = "MIGPERF_READY_FD"

#: Environment variable with the parent's pid: the worker dies with its parent.
PARENT_PID_ENV = "MIGPERF_PARENT_PID"


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when the process that started it dies.

    A runner killed with SIGKILL must not leave a worker holding its MIG
    device (the restore could not destroy the instance). Best effort: only on
    Linux, and only when the parent's pid is known.
    """
    parent = os.environ.get(PARENT_PID_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before prctl took effect
        os._exit(1)


def _ready_fd_from_env() -> int | None:
    value = os.environ.get(READY_FD_ENV)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def run_spec(
    spec: BenchSpec,
    *,
    stdin: IO[str] | None = None,
    ready_fd: int | None = None,
    log: Callable[[str], None] | None = None,
    events: EventChannel | None = None,
) -> WorkerResult:
    """Run one spec in this process and return its result (the worker's body).

    Every outcome becomes a result: out of memory (``oom``), an invalid
    argument (``invalid``), an abandoned barrier (``aborted``) and any
    unexpected exception (``crashed``, with the traceback).

    Args:
        spec: What to run.
        stdin: Where the barrier's ``go`` comes from.
        ready_fd: Where the barrier's ready event goes (stderr when ``None``).
        log: Progress messages (phase changes), e.g. to stderr; ``None`` for silence.
        events: Where the phase events go (nowhere when ``None``).

    Returns:
        The result document.
    """
    if spec.scenario is not None:
        from migperf.bench.scenarios.entry import run_scenario

        return run_scenario(spec, stdin=stdin, ready_fd=ready_fd, log=log, events=events)
    say = log or (lambda _msg: None)
    channel = events or EventChannel(None)
    phase = "device"
    device = None
    warnings: list[str] = []
    barrier = Barrier(stdin, ready_fd) if spec.barrier else None
    build_s = None
    try:
        import torch

        from migperf.bench.harness import EventTimer, PerfCounterTimer, StopRule, Timer, measure
        from migperf.bench.model_cache import cache_hits, keep_only
        from migperf.bench.workloads import build_workload

        device = select_device(spec)
        if spec.expect_device == "auto" and device.type == "cpu" and not spec.simulated:
            warnings.append("no CUDA device is visible to torch in the worker: measured on the CPU")
        if spec.simulated:
            warnings.append(simulated_warning())

        phase = "build"
        channel.phase("building", workload=spec.workload)
        say(
            f"building {spec.workload} ({spec.task}, batch {spec.batch_size}, {spec.precision}) on {device}"
        )
        t0 = time.perf_counter()
        keep_only(spec.workload)
        hits = cache_hits()
        prepared = build_workload(spec, device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        build_s = time.perf_counter() - t0

        def between() -> None:
            nonlocal phase
            if barrier is not None:
                phase = "barrier"
                say("warm; waiting at the barrier")
                barrier.wait()
            phase = "measure"
            channel.phase("measuring", min_s=spec.min_duration_s, max_s=spec.max_duration_s)
            say(
                f"measuring: at least {spec.min_iterations} iterations and {spec.min_duration_s:g} s, "
                f"at most {spec.max_duration_s:g} s"
            )

        phase = "warmup"
        cached = cache_hits() > hits
        channel.phase(
            "warmup", iterations=spec.effective_warmup, build_s=build_s, model_cached=cached
        )
        say(
            f"{'reused the model; prepared' if cached else 'built'} in {build_s:.2f} s; "
            f"warming up ({spec.effective_warmup} iterations)"
        )
        timer: Timer = EventTimer() if device.type == "cuda" else PerfCounterTimer()
        stop = StopRule(
            min_iterations=spec.min_iterations,
            min_duration_s=spec.min_duration_s,
            max_duration_s=spec.max_duration_s,
            max_iterations=spec.max_iterations,
        )
        m = measure(
            prepared.step,
            phases=prepared.phases,
            warmup_iterations=spec.effective_warmup,
            stop=stop,
            timer=timer,
            barrier=between,
        )
    except Exception as exc:
        return failure_result(spec, exc, phase=phase, device=device, warnings=warnings)
    say(f"measured {m.iterations} iterations in {m.measured_duration_s:.3f} s ({m.stop_reason})")
    return _assemble(spec, device, prepared, m, barrier, build_s, warnings)


def _assemble(
    spec: BenchSpec,
    device: torch.device,
    prepared: PreparedWorkload,
    m: Measurement,
    barrier: Barrier | None,
    build_s: float | None,
    warnings: list[str],
) -> WorkerResult:
    from migperf.bench.environment import collect_environment
    from migperf.bench.stats import assess_stability, summarize

    n = m.iterations
    latency = summarize(m.latency_ms, confidence=spec.confidence)
    phase_ms = (
        {name: summarize(vals, confidence=spec.confidence) for name, vals in m.phase_ms.items()}
        if len(m.phases) > 1
        else {}
    )
    dur = m.measured_duration_s
    per_s = n / dur if dur > 0 else float("nan")
    throughput = ThroughputResult(
        samples_per_s=prepared.samples_per_step * per_s,
        tokens_per_s=prepared.tokens_per_step * per_s if prepared.tokens_per_step else None,
        tflop_per_s=prepared.flop_per_step * per_s / 1e12 if prepared.flop_per_step else None,
        gb_per_s=prepared.bytes_per_step * per_s / 1e9 if prepared.bytes_per_step else None,
    )
    stability = assess_stability(m.latency_ms, prepared.samples_per_step)
    warnings = list(warnings) + list(prepared.notes)
    if latency.median < 1.0:
        warnings.append(
            f"the median iteration takes {latency.median:.3g} ms (< 1 ms): timer resolution and "
            "per-iteration overhead weigh on every sample; a larger batch or problem size measures better"
        )
    if m.stop_reason == "max_duration" and n < spec.min_iterations:
        warnings.append(
            f"stopped at max_duration_s ({spec.max_duration_s:g} s) after {n} of the "
            f"{spec.min_iterations} minimum iterations"
        )
    if stability.stable is False and stability.reason:
        warnings.append(stability.reason)
    timing = TimingInfo(
        timer=m.timer,
        warmup_iterations=len(m.warmup_ms),
        iterations=n,
        windows=m.windows,
        stop_reason=m.stop_reason,
        measured_duration_s=dur,
        window_start_unix_s=m.window_start_unix_s,
        window_end_unix_s=m.window_end_unix_s,
        ready_unix_s=barrier.ready_unix_s if barrier else None,
        go_unix_s=barrier.go_unix_s if barrier else None,
        build_duration_s=build_s,
        warmup_duration_s=m.warmup_duration_s,
    )
    return WorkerResult.for_spec(
        spec,
        "ok",
        device_kind=device_kind(device),
        environment=collect_environment(device),
        timing=timing,
        latency_ms=latency,
        phase_ms=phase_ms,
        throughput=throughput,
        stability=stability,
        parameter_count=prepared.parameter_count,
        executed_precision=(
            prepared.precision if prepared.precision not in (None, spec.precision) else None
        ),
        workload_config=prepared.config,
        warmup_samples_ms=list(m.warmup_ms),
        latency_samples_ms=list(m.latency_ms),
        phase_samples_ms={k: list(v) for k, v in m.phase_ms.items()} if len(m.phases) > 1 else {},
        warnings=warnings,
        **memory_readings(device),
    )


def _claim_stdout() -> IO[str]:
    """Keep a private handle on stdout for the result and send fd 1 to stderr."""
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(private, "w", encoding="utf-8")


def _read_spec_text(stdin: IO[str]) -> str:
    line = stdin.readline()
    if not line.strip():
        raise UsageError(
            "the worker read no spec on stdin",
            hint='send one JSON line, e.g. {"workload": "gemm", "task": "infer"}',
        )
    try:
        json.loads(line)
    except ValueError:
        # A pretty-printed spec file piped in by hand: the rest of stdin belongs to it.
        return line + stdin.read()
    return line


def main(argv: list[str] | None = None, *, emit: Callable[[str], None] | None = None) -> int:
    """Entry point: read a spec on stdin, run it, write one JSON result on stdout.

    Args:
        argv: ``["--serve"]`` for a warm worker (serve specs until end of input).
        emit: Where the result JSON goes (the process's real stdout by default).

    Returns:
        The process exit status.
    """
    # Process-wide limits are for a worker process of its own, never for a caller's.
    own_process = emit is None
    if emit is None:
        _die_with_parent()
        # A hard crash (SIGSEGV, SIGABRT) still leaves a Python traceback on stderr.
        faulthandler.enable()
        out = _claim_stdout()

        def emit(text: str) -> None:
            out.write(text + "\n")
            out.flush()

    return serve(sys.stdin, emit, own_process=own_process, once="--serve" not in (argv or []))


def serve(
    stdin: IO[str],
    emit: Callable[[str], None],
    *,
    own_process: bool = True,
    once: bool = True,
) -> int:
    """Run specs read from ``stdin`` and emit one result each; see the module docstring.

    Args:
        stdin: Spec lines (and the barrier's ``go`` lines).
        emit: Where each result's JSON line goes.
        own_process: This is a worker process of its own: process-wide
            limits (an emulated slice's memory) apply.
        once: Run one spec (a fresh worker); else serve until end of input
            or a result that is not ``ok`` (a warm worker).

    Returns:
        The exit status of the last run (0 at end of input).
    """

    def log(message: str) -> None:
        sys.stderr.write(f"migperf worker[{os.getpid()}]: {message}\n")
        sys.stderr.flush()

    events = EventChannel(_ready_fd_from_env())
    notes: list[str] | None = None
    runs = 0
    while True:
        try:
            text = _read_spec_text(stdin) if once else stdin.readline()
            if not once and not text:
                return 0  # end of input: the parent is done with this worker (or died)
            if not text.strip():
                continue
            spec = parse_spec(text)
        except UsageError as exc:
            emit(
                WorkerResult(
                    status="invalid",
                    error=ErrorInfo(
                        kind="UsageError", message=exc.message, hint=exc.hint, phase="spec"
                    ),
                ).to_json()
            )
            return 2
        if notes is None:
            if own_process:
                pin_allocator()  # host malloc behaves alike in fresh and warm workers
            # The workload's imports are neither the build's time nor the slice's memory.
            preload_workload(spec.workload)
            if not once and own_process and gc.get_freeze_count() == 0:
                freeze_imports()  # a warm worker not forked from a zygote
            notes = _set_up_device(spec, own_process, log)
        result = run_spec(spec, stdin=stdin, ready_fd=events.fd, log=log, events=events)
        runs += 1
        if notes:
            result = result.model_copy(update={"warnings": [*result.warnings, *notes]})
        if result.error is not None:
            sys.stderr.write(f"migperf worker: {result.status}: {result.error.message}\n")
            if result.error.traceback:
                sys.stderr.write(result.error.traceback)
            sys.stderr.flush()
        emit(result.to_json())
        code = 0 if result.status in ("ok", "oom") else 2 if result.status == "invalid" else 1
        if once or result.status != "ok":
            return code
        log(f"run {runs} done; waiting for the next spec")
        reset_between_runs()


def _set_up_device(spec: BenchSpec, own_process: bool, log: Callable[[str], None]) -> list[str]:
    """Once per worker: join a simulated MPS daemon, limit an emulated slice's memory.

    Returns:
        Warnings for every result of this worker (a limit that could not be set).
    """
    if spec.simulated and os.environ.get("CUDA_MPS_PIPE_DIRECTORY"):
        # A simulated MPS client: connect to the simulated daemon as CUDA would.
        from migperf.sharing.sim_mps_control import register_client_from_env

        server = register_client_from_env()
        log(
            f"MPS client of server {server}"
            if server
            else "no MPS daemon answered; running without MPS"
        )
    notes: list[str] = []
    if own_process and spec.simulated:
        # An emulated slice holds no more than its memory (see migperf.bench.emulation).
        from migperf.bench.emulation import emulation_from_env, limit_memory

        emulation = emulation_from_env()
        if emulation is not None:
            notes = limit_memory(emulation)
            log(emulation.describe())
    return notes


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
