"""The dynamic batcher: queued samples become batches, run, and are answered in order.

A batch thread takes up to ``max_batch_size`` queued samples (waiting at most
``max_queue_delay_s`` after the first for more), runs them and hands a handle
to a completion thread, which waits for the device (a CUDA event per batch,
at most two batches in flight) and reports the batch as answered. LoadGen's
system under test and the closed loop both drive a model through it.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from migperf.bench.scenario_result import BatchingStats
from migperf.errors import UsageError

__all__ = ["DynamicBatcher"]

#: Batches the batch thread may launch before the oldest is answered.
_MAX_IN_FLIGHT = 2
_NS = 1_000_000_000


class DynamicBatcher:
    """Turns queued samples into batches, runs them, and reports each answered batch.

    Args:
        run_batch: Inference on the samples at these QSL positions.
        on_complete: Called on the completion thread with the tags of each
            answered batch, once its device work is done.
        max_batch_size: Most samples in one batch.
        max_queue_delay_s: How long the first queued sample may wait for the
            batch to fill (0: take whatever is queued).
        make_handle: Called on the batch thread right after ``run_batch``;
            returns something with ``synchronize()`` that returns once the
            batch's device work is done (a CUDA event), or ``None`` on a CPU.

    Raises:
        UsageError: When ``max_batch_size`` is below 1.
    """

    def __init__(
        self,
        run_batch: Callable[[Sequence[int]], None],
        on_complete: Callable[[list[Any]], None],
        *,
        max_batch_size: int,
        max_queue_delay_s: float = 0.0,
        make_handle: Callable[[], Any] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise UsageError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self._run = run_batch
        self._on_complete = on_complete
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._make_handle = make_handle
        self._queue: collections.deque[tuple[Any, int, int]] = collections.deque()
        self._cv = threading.Condition()
        self._done: queue.SimpleQueue[tuple[list[Any], Any, int, int] | None] = queue.SimpleQueue()
        self._slots = threading.Semaphore(_MAX_IN_FLIGHT)
        self._flush = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.error: BaseException | None = None
        self.reset_stats()

    def reset_stats(self) -> None:
        """Forget the counts so far (between warmup and measurement, or between runs)."""
        self.batches = 0
        self.samples = 0
        self.size_counts: collections.Counter[int] = collections.Counter()
        self.busy_ns = 0
        self._last_end_ns = 0
        self.first_arrival_ns: int | None = None
        self.last_done_ns: int | None = None

    def start(self) -> None:
        """Start the batch and completion threads."""
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._batch_loop, name="migperf-batcher", daemon=True),
            threading.Thread(target=self._complete_loop, name="migperf-completer", daemon=True),
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Answer what is queued, then stop both threads."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        for t in self._threads:
            t.join()
        self._threads = []

    def __enter__(self) -> DynamicBatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, items: Sequence[tuple[Any, int]]) -> None:
        """Queue samples as ``(tag, qsl_index)``; returns at once."""
        now = time.perf_counter_ns()
        with self._cv:
            if self.first_arrival_ns is None:
                self.first_arrival_ns = now
            self._queue.extend((tag, index, now) for tag, index in items)
            self._cv.notify()

    def flush(self) -> None:
        """Run what is queued without waiting for fuller batches (LoadGen's ``FlushQueries``)."""
        with self._cv:
            self._flush = True
            self._cv.notify()

    def _take(self) -> list[tuple[Any, int, int]] | None:
        with self._cv:
            while not self._queue and not self._stopping:
                self._cv.wait()
            if not self._queue:
                return None
            if self.max_queue_delay_s > 0:
                deadline_ns = self._queue[0][2] + int(self.max_queue_delay_s * _NS)
                while (
                    len(self._queue) < self.max_batch_size
                    and not self._flush
                    and not self._stopping
                ):
                    left = (deadline_ns - time.perf_counter_ns()) / _NS
                    if left <= 0:
                        break
                    self._cv.wait(left)
            n = min(len(self._queue), self.max_batch_size)
            batch = [self._queue.popleft() for _ in range(n)]
            if not self._queue:
                self._flush = False
            return batch

    def _batch_loop(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                break
            self._slots.acquire()
            start = time.perf_counter_ns()
            handle = None
            if self.error is None:
                try:
                    self._run([index for _, index, _ in batch])
                    handle = self._make_handle() if self._make_handle is not None else None
                except BaseException as exc:  # noqa: BLE001 - reported after the test
                    # LoadGen waits for every sample it issued: keep answering
                    # (without running) so the test ends, then report the error.
                    self.error = exc
            self._done.put(([tag for tag, _, _ in batch], handle, start, len(batch)))
        self._done.put(None)

    def _complete_loop(self) -> None:
        while True:
            item = self._done.get()
            if item is None:
                break
            tags, handle, start, n = item
            if handle is not None and self.error is None:
                try:
                    handle.synchronize()
                except BaseException as exc:  # noqa: BLE001 - reported after the test
                    self.error = exc
            end = time.perf_counter_ns()
            try:
                self._on_complete(tags)
            finally:
                self._slots.release()
            # Batches overlap on a GPU (two in flight): count each instant once.
            self.busy_ns += max(0, end - max(start, self._last_end_ns))
            self._last_end_ns = end
            self.last_done_ns = end
            self.batches += 1
            self.samples += n
            self.size_counts[n] += 1

    def stats(self) -> BatchingStats:
        """What the batcher did since the last :meth:`reset_stats`."""
        window = None
        if self.first_arrival_ns is not None and self.last_done_ns is not None:
            window = max(0, self.last_done_ns - self.first_arrival_ns) / _NS
        busy = self.busy_ns / _NS
        return BatchingStats(
            max_batch_size=self.max_batch_size,
            max_queue_delay_ms=self.max_queue_delay_s * 1000.0,
            batches=self.batches,
            samples=self.samples,
            mean_batch_size=self.samples / self.batches if self.batches else None,
            batch_size_counts=dict(sorted(self.size_counts.items())),
            busy_s=busy,
            window_s=window,
            utilization=min(1.0, busy / window) if window else None,
        )
