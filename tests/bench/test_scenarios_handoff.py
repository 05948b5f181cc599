"""The batcher's hand-offs (#18: LoadGen-driven latency within 2 % of the SUT's service times).

A caller that waits for each answer runs the model on its own thread
(synchronous); on a CPU the batch thread answers its own batches; only a
device to wait for gets a completion thread.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from migperf.bench.scenarios import DynamicBatcher
from tests.bench.sleep_sut import sleep_runner


def _recorder() -> tuple[list[tuple[str, list[Any]]], Any]:
    done: list[tuple[str, list[Any]]] = []

    def on_complete(tags: list[Any]) -> None:
        done.append((threading.current_thread().name, list(tags)))

    return done, on_complete


def _wait_for(b: DynamicBatcher, samples: int) -> None:
    deadline = time.monotonic() + 5
    while b.samples < samples and time.monotonic() < deadline:
        time.sleep(0.001)


def test_synchronous_answers_before_submit_returns_on_the_callers_thread() -> None:
    done, on_complete = _recorder()
    ran: list[list[int]] = []
    b = DynamicBatcher(
        lambda idx: ran.append(list(idx)), on_complete, max_batch_size=3, synchronous=True
    )
    before = threading.active_count()
    with b:
        assert threading.active_count() == before  # no threads
        b.submit([(i, 10 + i) for i in range(7)])
        # Answered already, in batches of at most 3, in order.
        assert ran == [[10, 11, 12], [13, 14, 15], [16]]
        assert done == [
            ("MainThread", [0, 1, 2]),
            ("MainThread", [3, 4, 5]),
            ("MainThread", [6]),
        ]
    stats = b.stats()
    assert stats.samples == 7 and stats.batches == 3 and stats.batch_size_counts == {1: 1, 3: 2}


def test_synchronous_keeps_two_device_batches_in_flight_and_answers_in_order() -> None:
    events: list[str] = []

    class Handle:
        def __init__(self, n: int) -> None:
            self.n = n

        def synchronize(self) -> None:
            events.append(f"sync{self.n}")

    launched = [0]

    def run(idx: Any) -> None:
        launched[0] += 1
        events.append(f"run{launched[0]}")

    def on_complete(tags: list[Any]) -> None:
        events.append(f"done{tags}")

    b = DynamicBatcher(
        run,
        on_complete,
        max_batch_size=1,
        make_handle=lambda: Handle(launched[0]),
        synchronous=True,
    )
    b.submit([(i, 0) for i in range(3)])
    # The second batch is launched before the first is waited for.
    assert events == [
        "run1",
        "run2",
        "sync1",
        "done[0]",
        "run3",
        "sync2",
        "done[1]",
        "sync3",
        "done[2]",
    ]


def test_synchronous_failing_model_still_answers_everything() -> None:
    done, on_complete = _recorder()

    def run(idx: Any) -> None:
        raise RuntimeError("boom")

    b = DynamicBatcher(run, on_complete, max_batch_size=2, synchronous=True)
    b.submit([(i, 0) for i in range(5)])
    assert sorted(t for _, tags in done for t in tags) == list(range(5))
    assert isinstance(b.error, RuntimeError)


def test_on_a_cpu_the_batch_thread_answers_its_own_batches() -> None:
    done, on_complete = _recorder()
    b = DynamicBatcher(lambda idx: time.sleep(0.001), on_complete, max_batch_size=2)
    before = threading.active_count()
    with b:
        assert threading.active_count() == before + 1  # the batch thread only
        b.submit([(i, 0) for i in range(5)])
        _wait_for(b, 5)
    assert {name for name, _ in done} == {"migperf-batcher"}
    assert sorted(t for _, tags in done for t in tags) == list(range(5))


def test_with_a_device_a_completion_thread_waits_for_it() -> None:
    done, on_complete = _recorder()
    synced: list[int] = []

    class Handle:
        def synchronize(self) -> None:
            synced.append(1)

    b = DynamicBatcher(
        lambda idx: None, on_complete, max_batch_size=2, make_handle=lambda: Handle()
    )
    with b:
        b.submit([(i, 0) for i in range(4)])
        _wait_for(b, 4)
    assert {name for name, _ in done} == {"migperf-completer"}
    assert len(synced) == b.batches == len(done)


def test_stop_answers_what_is_queued_and_flush_skips_the_queue_delay() -> None:
    done, on_complete = _recorder()
    b = DynamicBatcher(lambda idx: None, on_complete, max_batch_size=8, max_queue_delay_s=30.0)
    b.start()
    b.submit([(0, 0)])
    b.flush()
    _wait_for(b, 1)
    assert b.samples == 1  # flushed, not held for 30 s
    b.submit([(1, 0), (2, 0)])
    t0 = time.monotonic()
    b.stop()
    assert time.monotonic() - t0 < 5 and b.samples == 3


@pytest.mark.parametrize(
    ("scenario", "synchronous"),
    [
        ({"name": "single-stream"}, True),
        ({"name": "multi-stream", "samples_per_query": 2}, True),
        ({"name": "closed-loop", "concurrency": 1}, True),
        ({"name": "closed-loop", "concurrency": 2}, False),
        ({"name": "server", "target_qps": 10.0}, False),
        ({"name": "offline"}, False),
    ],
)
def test_the_runner_runs_one_at_a_time_callers_on_their_own_thread(
    scenario: dict[str, Any], synchronous: bool, tmp_path: Path
) -> None:
    runner = sleep_runner(tmp_path, scenario, service_ms=0.1, batch=2)
    assert runner.batcher(lambda tags: None).synchronous is synchronous
