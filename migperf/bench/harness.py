"""The measurement harness: warm up, optionally wait at a barrier, measure until the stop rule holds.

A *step* is a callable ``step(mark)`` that runs one iteration and calls
``mark()`` at each boundary between its phases (``len(phases) - 1`` times;
a training step marks after the forward pass and after the backward pass).

Two timers:

* :class:`PerfCounterTimer` (CPU): ``time.perf_counter_ns`` around every
  iteration and at every mark; the stop rule is checked after each iteration.
* :class:`EventTimer` (CUDA): one ``torch.cuda.Event`` per iteration boundary
  (shared by neighbouring iterations) and one per mark, recorded on the stream
  taken once per run, without any host synchronisation; the host
  synchronises once per *window* (about ``target_window_s`` of work), reads
  the events back, and only then checks the stop rule. Measured time is the
  device time of the windows, from each window's first event to its last.

Warmup iterations are timed (kept in the result) but excluded from
statistics. Measuring stops once both ``min_iterations`` and
``min_duration_s`` are met, or at ``max_duration_s`` / ``max_iterations``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from migperf.errors import UsageError

__all__ = [
    "EventTimer",
    "Measurement",
    "PerfCounterTimer",
    "StepFn",
    "StopRule",
    "Timer",
    "measure",
]

StepFn = Callable[[Callable[[], None]], None]
StopReason = Literal["min_reached", "max_duration", "max_iterations"]


def _no_mark() -> None:
    return None


@dataclass(frozen=True)
class StopRule:
    """When to stop measuring.

    Attributes:
        min_iterations: At least this many measured iterations...
        min_duration_s: ...and at least this long; both must hold.
        max_duration_s: Stop after this long regardless.
        max_iterations: Stop after this many iterations regardless (``None``: no cap).

    Raises:
        UsageError: On construction, for inconsistent limits.
    """

    min_iterations: int = 10
    min_duration_s: float = 5.0
    max_duration_s: float = 60.0
    max_iterations: int | None = None

    def __post_init__(self) -> None:
        if self.min_iterations < 1:
            raise UsageError(f"min_iterations must be at least 1, got {self.min_iterations}")
        if self.min_duration_s < 0 or self.max_duration_s <= 0:
            raise UsageError("durations must be positive")
        if self.max_duration_s < self.min_duration_s:
            raise UsageError(
                f"max_duration_s ({self.max_duration_s:g}) is below min_duration_s ({self.min_duration_s:g})"
            )
        if self.max_iterations is not None and self.max_iterations < self.min_iterations:
            raise UsageError(
                f"max_iterations ({self.max_iterations}) is below min_iterations ({self.min_iterations})"
            )

    def reason(self, iterations: int, elapsed_s: float) -> StopReason | None:
        """Why to stop after ``iterations`` taking ``elapsed_s``, or ``None`` to continue."""
        if self.max_iterations is not None and iterations >= self.max_iterations:
            return "max_iterations"
        if iterations >= self.min_iterations and elapsed_s >= self.min_duration_s:
            return "min_reached"
        if elapsed_s >= self.max_duration_s:
            return "max_duration"
        return None


@dataclass(frozen=True)
class Measurement:
    """Raw timings of one harness run.

    Attributes:
        timer: ``perf_counter_ns`` or ``cuda_event``.
        phases: Phase names, in step order.
        warmup_ms: Latency of each warmup iteration.
        latency_ms: Latency of each measured iteration.
        phase_ms: Per-phase latency of each measured iteration.
        measured_duration_s: Time the measured iterations took (see module docstring).
        window_start_unix_s: Wall-clock time the measured window started.
        window_end_unix_s: Wall-clock time the measured window ended.
        warmup_duration_s: Wall time of the warmup.
        windows: Timing windows (host synchronisations on CUDA).
        stop_reason: Why measuring stopped.
        barrier_released_unix_s: When the barrier returned, if there was one.
    """

    timer: Literal["perf_counter_ns", "cuda_event"]
    phases: tuple[str, ...]
    warmup_ms: tuple[float, ...]
    latency_ms: tuple[float, ...]
    phase_ms: dict[str, tuple[float, ...]] = field(default_factory=dict)
    measured_duration_s: float = 0.0
    window_start_unix_s: float = 0.0
    window_end_unix_s: float = 0.0
    warmup_duration_s: float = 0.0
    windows: int = 1
    stop_reason: StopReason = "min_reached"
    barrier_released_unix_s: float | None = None

    @property
    def iterations(self) -> int:
        """Measured iterations."""
        return len(self.latency_ms)


@dataclass(frozen=True)
class _Run:
    latency_ms: list[float]
    phase_ms: list[list[float]]
    duration_s: float
    start_unix_s: float
    end_unix_s: float
    windows: int
    stop_reason: StopReason


class Timer(Protocol):
    """Times iterations of a step; implemented for the CPU clock and CUDA events."""

    @property
    def name(self) -> Literal["perf_counter_ns", "cuda_event"]:
        """How this timer measures."""

    def synchronize(self) -> None:
        """Wait until all queued device work is done."""

    def run(self, step: StepFn, n_phases: int, stop: StopRule | None, count: int | None) -> _Run:
        """Run a fixed ``count`` of iterations, or until ``stop`` says so."""


def _unix_offset_ns() -> int:
    """Offset that maps ``perf_counter_ns`` readings onto ``time.time_ns``."""
    best = None
    for _ in range(3):
        a = time.perf_counter_ns()
        w = time.time_ns()
        b = time.perf_counter_ns()
        if best is None or b - a < best[0]:
            best = (b - a, w - (a + b) // 2)
    assert best is not None
    return best[1]


class PerfCounterTimer:
    """Host-clock timer for the CPU: ``perf_counter_ns`` at every iteration boundary and mark."""

    name: Literal["perf_counter_ns"] = "perf_counter_ns"

    def synchronize(self) -> None:
        """Nothing is queued on a CPU."""

    def run(self, step: StepFn, n_phases: int, stop: StopRule | None, count: int | None) -> _Run:
        """Run ``count`` iterations, or until ``stop`` holds (checked after every iteration).

        Raises:
            RuntimeError: When the step calls ``mark`` a different number of
                times than its phases need.
        """
        ns = time.perf_counter_ns
        starts: list[int] = []
        ends: list[int] = []
        marks: list[int] = []
        append_mark = marks.append
        if n_phases > 1:

            def mark() -> None:
                append_mark(ns())

        else:
            mark = _no_mark
        offset = _unix_offset_ns()
        reason: StopReason = "max_iterations"
        t0 = ns()
        if stop is None:
            for _ in range(count or 0):
                s = ns()
                step(mark)
                e = ns()
                starts.append(s)
                ends.append(e)
        else:
            # Compare raw nanoseconds in the loop; no float math per iteration.
            min_ns = int(stop.min_duration_s * 1e9)
            max_ns = int(stop.max_duration_s * 1e9)
            min_it = stop.min_iterations
            max_it = stop.max_iterations if stop.max_iterations is not None else math.inf
            n = 0
            while True:
                s = ns()
                step(mark)
                e = ns()
                starts.append(s)
                ends.append(e)
                n += 1
                if n >= max_it:
                    reason = "max_iterations"
                    break
                # From the first iteration's start: the window the result reports.
                el = e - starts[0]
                if n >= min_it and el >= min_ns:
                    reason = "min_reached"
                    break
                if el >= max_ns:
                    reason = "max_duration"
                    break
        n = len(starts)
        if n_phases > 1 and len(marks) != n * (n_phases - 1):
            raise RuntimeError(
                f"the step called mark() {len(marks)} times in {n} iterations; "
                f"{n_phases} phases need {n_phases - 1} per iteration"
            )
        latency = [(e - s) / 1e6 for s, e in zip(starts, ends, strict=True)]
        if n_phases > 1:
            per = n_phases - 1
            phase: list[list[float]] = [[] for _ in range(n_phases)]
            for i in range(n):
                bounds = [starts[i], *marks[i * per : (i + 1) * per], ends[i]]
                for j in range(n_phases):
                    phase[j].append((bounds[j + 1] - bounds[j]) / 1e6)
        else:
            phase = [latency]
        first = starts[0] if starts else t0
        last = ends[-1] if ends else t0
        return _Run(
            latency_ms=latency,
            phase_ms=phase,
            duration_s=(last - first) / 1e9,
            start_unix_s=(first + offset) / 1e9,
            end_unix_s=(last + offset) / 1e9,
            windows=1,
            stop_reason=reason,
        )


class EventTimer:
    """Device timer: one ``torch.cuda.Event`` per phase boundary, one synchronize per window.

    Args:
        event_factory: Makes a timing event (``torch.cuda.Event(enable_timing=True)``
            by default). It must offer ``record()``, ``synchronize()`` and
            ``elapsed_time(other) -> ms``.
        synchronize: Waits for all device work (``torch.cuda.synchronize`` by default).
        target_window_s: Device time one window should cover.
        max_window: Most iterations in one window (bounds the event pool).
    """

    name: Literal["cuda_event"] = "cuda_event"

    def __init__(
        self,
        event_factory: Callable[[], Any] | None = None,
        synchronize: Callable[[], None] | None = None,
        *,
        target_window_s: float = 0.1,
        max_window: int = 1024,
    ) -> None:
        default_events = event_factory is None
        if event_factory is None or synchronize is None:
            import torch

            event_factory = event_factory or (lambda: torch.cuda.Event(enable_timing=True))
            synchronize = synchronize or torch.cuda.synchronize
        self._event = event_factory
        self._sync = synchronize
        self.target_window_s = target_window_s
        self.max_window = max_window
        self._pool: list[Any] = []
        self._estimate_s: float | None = None
        # torch's Event.record() looks the current stream up on every call
        # (microseconds a launch-bound step notices); take it once per run.
        self._stream_of: Callable[[], Any] | None = None
        if default_events:
            import torch

            self._stream_of = torch.cuda.current_stream
        self._record_args: tuple[Any, ...] = ()

    def synchronize(self) -> None:
        """Wait for all queued device work."""
        self._sync()

    def _events(self, n: int) -> list[Any]:
        while len(self._pool) < n:
            self._pool.append(self._event())
        return self._pool

    def _window(
        self, step: StepFn, k: int, n_phases: int
    ) -> tuple[list[float], list[list[float]], float]:
        # Neighbouring iterations share a boundary event: the end of iteration
        # i is the start of i + 1, so an iteration costs ``n_phases`` event
        # records (one per phase), not ``n_phases + 1``. The device time
        # between two iterations (the host launching the next one) belongs to
        # the next iteration, as it does in a bare loop's throughput.
        evs = self._events(k * n_phases + 1)
        args = self._record_args
        evs[0].record(*args)
        if n_phases == 1:
            for i in range(1, k + 1):
                step(_no_mark)
                evs[i].record(*args)
        else:
            cursor = [0]
            limit = [0]

            def mark() -> None:
                cursor[0] += 1
                if cursor[0] > limit[0]:
                    raise RuntimeError(f"the step called mark() more than {n_phases - 1} times in one iteration")
                evs[cursor[0]].record(*args)

            for i in range(k):
                base = i * n_phases
                cursor[0] = base
                limit[0] = base + n_phases - 1
                step(mark)
                if cursor[0] != base + n_phases - 1:
                    raise RuntimeError(
                        f"the step called mark() {cursor[0] - base} times in one iteration; "
                        f"{n_phases} phases need {n_phases - 1}"
                    )
                evs[base + n_phases].record(*args)
        last = evs[k * n_phases]
        last.synchronize()
        bounds = [evs[j].elapsed_time(evs[j + 1]) for j in range(k * n_phases)]
        if n_phases == 1:
            latency = bounds
            phase = [latency]
        else:
            phase = [bounds[j::n_phases] for j in range(n_phases)]
            latency = [sum(bounds[i * n_phases : (i + 1) * n_phases]) for i in range(k)]
        window_ms = evs[0].elapsed_time(last)
        per_iter = window_ms / 1000.0 / k
        if per_iter > 0:
            self._estimate_s = per_iter
        return latency, phase, window_ms

    def _window_size(self, remaining: int | None) -> int:
        if self._estimate_s is None or self._estimate_s <= 0:
            k = 1
        else:
            k = max(1, min(self.max_window, round(self.target_window_s / self._estimate_s)))
        if remaining is not None:
            k = min(k, remaining)
        return max(k, 1)

    def run(self, step: StepFn, n_phases: int, stop: StopRule | None, count: int | None) -> _Run:
        """Run ``count`` iterations, or windows until ``stop`` holds (checked after each window)."""
        ns = time.perf_counter_ns
        offset = _unix_offset_ns()
        latency: list[float] = []
        phase: list[list[float]] = [[] for _ in range(n_phases)]
        device_ms = 0.0
        windows = 0
        reason: StopReason = "max_iterations"
        self._record_args = (self._stream_of(),) if self._stream_of is not None else ()
        self._sync()
        t0 = ns()
        remaining: int | None
        while True:
            n = len(latency)
            if stop is None:
                remaining = (count or 0) - n
                if remaining <= 0:
                    break
            else:
                remaining = None if stop.max_iterations is None else stop.max_iterations - n
            k = self._window_size(remaining)
            if stop is not None:
                # Do not let one window run far past max_duration.
                left_s = stop.max_duration_s - (ns() - t0) / 1e9
                if self._estimate_s:
                    k = max(1, min(k, math.ceil(left_s / self._estimate_s)))
            lat, ph, window_ms = self._window(step, k, n_phases)
            latency.extend(lat)
            for j in range(n_phases):
                phase[j].extend(ph[j])
            device_ms += window_ms
            windows += 1
            if stop is not None:
                r = stop.reason(len(latency), (ns() - t0) / 1e9)
                if r is not None:
                    reason = r
                    break
        t1 = ns()
        return _Run(
            latency_ms=latency,
            phase_ms=phase,
            duration_s=device_ms / 1000.0,
            start_unix_s=(t0 + offset) / 1e9,
            end_unix_s=(t1 + offset) / 1e9,
            windows=max(windows, 1),
            stop_reason=reason,
        )


def measure(
    step: StepFn,
    *,
    phases: Sequence[str] = ("step",),
    warmup_iterations: int = 10,
    stop: StopRule | None = None,
    timer: Timer | None = None,
    barrier: Callable[[], None] | None = None,
) -> Measurement:
    """Warm up, wait at the barrier if any, then measure until the stop rule holds.

    Args:
        step: One iteration; calls ``mark()`` ``len(phases) - 1`` times.
        phases: Names of the step's phases, in order.
        warmup_iterations: Timed iterations before measuring, excluded from statistics.
        stop: The stop rule (defaults of :class:`StopRule` when ``None``).
        timer: :class:`PerfCounterTimer` (default) or :class:`EventTimer`.
        barrier: Called after warmup (and a device synchronize), before the
            measured window; returns when the run may start.

    Returns:
        The raw timings.

    Raises:
        UsageError: For an empty phase list or a negative warmup count.
        Exception: Whatever the step raises (an out-of-memory error, for
            example) propagates unchanged.
    """
    if not phases:
        raise UsageError("a step needs at least one phase")
    if warmup_iterations < 0:
        raise UsageError(f"warmup_iterations must be >= 0, got {warmup_iterations}")
    stop = stop or StopRule()
    clock: Timer = timer if timer is not None else PerfCounterTimer()
    n_phases = len(phases)

    w0 = time.perf_counter()
    warm = clock.run(step, n_phases, None, warmup_iterations) if warmup_iterations else None
    clock.synchronize()
    warmup_s = time.perf_counter() - w0

    released = None
    if barrier is not None:
        barrier()
        released = time.time()

    run = clock.run(step, n_phases, stop, None)
    return Measurement(
        timer=clock.name,
        phases=tuple(phases),
        warmup_ms=tuple(warm.latency_ms) if warm else (),
        latency_ms=tuple(run.latency_ms),
        phase_ms={name: tuple(run.phase_ms[j]) for j, name in enumerate(phases)},
        measured_duration_s=run.duration_s,
        window_start_unix_s=run.start_unix_s,
        window_end_unix_s=run.end_unix_s,
        warmup_duration_s=warmup_s,
        windows=run.windows,
        stop_reason=run.stop_reason,
        barrier_released_unix_s=released,
    )
