"""The harness: stopping rules, warmup bookkeeping, phases, barrier order, event windows."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from migperf.bench.harness import EventTimer, StopRule, measure
from migperf.errors import UsageError


def sleeper(seconds: float) -> Callable[[Callable[[], None]], None]:
    def step(mark: Callable[[], None]) -> None:
        time.sleep(seconds)

    return step


def test_min_iterations_dominates_when_steps_are_slow() -> None:
    # 0.01 s per step: 30 iterations take ~0.3 s, well past the 0.05 s minimum.
    m = measure(sleeper(0.01), warmup_iterations=0, stop=StopRule(30, 0.05, 5.0))
    assert m.iterations == 30
    assert m.stop_reason == "min_reached"


def test_min_duration_dominates_when_steps_are_fast() -> None:
    m = measure(sleeper(0.001), warmup_iterations=0, stop=StopRule(3, 0.15, 5.0))
    assert m.iterations > 3
    assert m.measured_duration_s >= 0.15
    assert m.stop_reason == "min_reached"


def test_max_duration_caps_a_run_that_cannot_reach_its_minimum() -> None:
    t0 = time.perf_counter()
    m = measure(sleeper(0.02), warmup_iterations=0, stop=StopRule(10_000, 0.0, 0.1))
    assert time.perf_counter() - t0 < 1.0
    assert m.stop_reason == "max_duration"
    assert 2 <= m.iterations < 10_000
    assert m.measured_duration_s >= 0.1


def test_max_iterations_caps_the_count() -> None:
    m = measure(sleeper(0.0), warmup_iterations=0, stop=StopRule(5, 10.0, 20.0, max_iterations=7))
    assert m.iterations == 7
    assert m.stop_reason == "max_iterations"


def test_warmup_is_kept_but_not_measured() -> None:
    calls = []

    def step(mark: Callable[[], None]) -> None:
        calls.append(time.perf_counter())
        time.sleep(0.03 if len(calls) == 1 else 0.001)  # a slow first call, like compilation

    m = measure(step, warmup_iterations=4, stop=StopRule(5, 0.0, 5.0))
    assert len(m.warmup_ms) == 4
    assert m.warmup_ms[0] >= 30.0
    assert m.iterations == 5
    assert max(m.latency_ms) < 30.0
    assert len(calls) == 9


def test_raw_latencies_and_throughput_window_agree() -> None:
    m = measure(sleeper(0.005), warmup_iterations=1, stop=StopRule(10, 0.0, 5.0))
    assert all(lat >= 5.0 for lat in m.latency_ms)
    # The window spans the iterations plus a few microseconds of bookkeeping each.
    assert m.measured_duration_s * 1000 == pytest.approx(sum(m.latency_ms), rel=0.05)
    assert m.window_end_unix_s - m.window_start_unix_s == pytest.approx(
        m.measured_duration_s, abs=0.01
    )
    assert abs(m.window_start_unix_s - time.time()) < 5.0


def test_phase_split_adds_up_to_the_iteration() -> None:
    def step(mark: Callable[[], None]) -> None:
        time.sleep(0.002)
        mark()
        time.sleep(0.004)
        mark()
        time.sleep(0.001)

    m = measure(
        step,
        phases=("forward", "backward", "optimizer"),
        warmup_iterations=1,
        stop=StopRule(5, 0.0, 5.0),
    )
    assert set(m.phase_ms) == {"forward", "backward", "optimizer"}
    for i in range(m.iterations):
        parts = [m.phase_ms[p][i] for p in ("forward", "backward", "optimizer")]
        assert sum(parts) == pytest.approx(m.latency_ms[i], rel=1e-9)
    assert min(m.phase_ms["backward"]) >= 4.0
    assert min(m.phase_ms["forward"]) >= 2.0


def test_a_step_that_marks_wrongly_is_an_error() -> None:
    def step(mark: Callable[[], None]) -> None:
        mark()

    with pytest.raises(RuntimeError, match="called mark"):
        measure(step, phases=("a", "b", "c"), warmup_iterations=0, stop=StopRule(2, 0.0, 1.0))


def test_barrier_runs_after_warmup_and_before_measuring() -> None:
    log: list[str] = []

    def step(mark: Callable[[], None]) -> None:
        log.append("step")

    m = measure(
        step, warmup_iterations=2, stop=StopRule(3, 0.0, 1.0), barrier=lambda: log.append("barrier")
    )
    assert log == ["step", "step", "barrier", "step", "step", "step"]
    assert m.barrier_released_unix_s is not None
    assert m.barrier_released_unix_s <= m.window_start_unix_s


def test_step_exceptions_propagate_unchanged() -> None:
    def step(mark: Callable[[], None]) -> None:
        raise MemoryError("boom")

    with pytest.raises(MemoryError):
        measure(step, warmup_iterations=1)


def test_inconsistent_stop_rules_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        StopRule(min_iterations=0)
    with pytest.raises(UsageError):
        StopRule(min_duration_s=10.0, max_duration_s=1.0)
    with pytest.raises(UsageError):
        StopRule(min_iterations=10, max_iterations=5)


class HostEvent:
    """Stands in for torch.cuda.Event on a CPU: record() stamps the host clock."""

    syncs = 0

    def __init__(self) -> None:
        self.t: int | None = None

    def record(self) -> None:
        self.t = time.perf_counter_ns()

    def synchronize(self) -> None:
        HostEvent.syncs += 1

    def elapsed_time(self, end: HostEvent) -> float:
        assert self.t is not None and end.t is not None, "event read before it was recorded"
        return (end.t - self.t) / 1e6


def test_event_timer_synchronizes_once_per_window_not_per_iteration() -> None:
    HostEvent.syncs = 0
    device_syncs = []
    timer = EventTimer(HostEvent, lambda: device_syncs.append(1), target_window_s=0.02)

    def step(mark: Callable[[], None]) -> None:
        time.sleep(0.001)
        mark()
        time.sleep(0.001)

    m = measure(
        step,
        phases=("forward", "backward"),
        warmup_iterations=3,
        stop=StopRule(40, 0.1, 5.0),
        timer=timer,
    )
    assert m.timer == "cuda_event"
    assert m.iterations >= 40
    # Windows grow to ~20 ms (about 9 iterations of ~2.2 ms), so far fewer syncs than iterations.
    assert m.windows < m.iterations / 3
    assert HostEvent.syncs <= m.windows + 3  # measured windows + warmup windows
    assert m.stop_reason == "min_reached"
    for i in range(m.iterations):
        assert m.phase_ms["forward"][i] + m.phase_ms["backward"][i] == pytest.approx(
            m.latency_ms[i]
        )
    assert m.measured_duration_s * 1000 >= sum(m.latency_ms) * 0.95


def test_event_timer_respects_max_iterations() -> None:
    timer = EventTimer(HostEvent, lambda: None, target_window_s=1.0)
    m = measure(
        sleeper(0.0005),
        warmup_iterations=2,
        stop=StopRule(5, 0.0, 5.0, max_iterations=7),
        timer=timer,
    )
    assert m.iterations == 7
    assert m.stop_reason in ("max_iterations", "min_reached")


@pytest.mark.parametrize("marks", [0, 2])
def test_event_timer_refuses_a_step_with_the_wrong_number_of_marks(marks: int) -> None:
    # Neighbouring iterations share boundary events, so a step that marks too
    # often or too rarely would shift every later phase: it must be an error.
    timer = EventTimer(HostEvent, lambda: None, target_window_s=0.01)

    def step(mark: Callable[[], None]) -> None:
        for _ in range(marks):
            mark()

    with pytest.raises(RuntimeError, match="mark"):
        measure(step, phases=("forward", "backward"), warmup_iterations=1, stop=StopRule(5, 0.0, 1.0), timer=timer)


def test_event_timer_latencies_cover_the_window_without_gaps() -> None:
    # One event per boundary: the iterations' latencies add up to the window's
    # device time (what a bare loop's throughput sees), phases to latencies.
    timer = EventTimer(HostEvent, lambda: None, target_window_s=0.01)

    def step(mark: Callable[[], None]) -> None:
        time.sleep(0.0005)
        mark()
        time.sleep(0.0005)
        mark()

    m = measure(step, phases=("a", "b", "c"), warmup_iterations=0, stop=StopRule(30, 0.0, 5.0), timer=timer)
    assert sum(m.latency_ms) == pytest.approx(m.measured_duration_s * 1000, rel=1e-6)
    for i in range(m.iterations):
        assert m.phase_ms["a"][i] + m.phase_ms["b"][i] + m.phase_ms["c"][i] == pytest.approx(m.latency_ms[i])
        assert m.phase_ms["a"][i] >= 0.4 and m.phase_ms["b"][i] >= 0.4
