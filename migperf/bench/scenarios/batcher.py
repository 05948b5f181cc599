"""The dynamic batcher: queued samples become batches, run, and are answered in order.

A batch thread takes up to ``max_batch_size`` queued samples (waiting at most
``max_queue_delay_s`` after the first for more) and runs them. On a GPU it
hands a handle to a completion thread, which waits for the device (a CUDA
event per batch, at most two batches in flight) and reports the batch as
answered; on a CPU the work is done when ``run_batch`` returns, so the batch
thread answers the batch itself (one thread hand-off fewer per batch).

A caller that never submits again before its last submission is answered
(LoadGen's single- and multi-stream, a closed loop with one client) can ask
for ``synchronous``: each submission then runs on the caller's thread, with
no thread or queue between it and the model. LoadGen's system under test and
the closed loop both drive a model through it.
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
#: Messages to the batch thread besides ``(items, arrival_ns)``.
_FLUSH = "flush"
_STOP = "stop"


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
        synchronous: Run each submission on the submitting thread, in
            batches of at most ``max_batch_size``, and answer it before
            :meth:`submit` returns; no threads are started. Only for callers
            that wait for each answer before they submit again.

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
        synchronous: bool = False,
    ) -> None:
        if max_batch_size < 1:
            raise UsageError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self._run = run_batch
        self._on_complete = on_complete
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self._make_handle = make_handle
        self.synchronous = synchronous
        # The submitter's one hand-off: a C-level queue, one put per submission
        # (not per sample); the batch thread owns the samples waiting for a batch.
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._queue: collections.deque[tuple[Any, int, int]] = collections.deque()
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
        """Start the batch thread, and the completion thread when there is a device to wait for."""
        self._stopping = False
        self._flush = False
        if self.synchronous:
            return
        self._threads = [
            threading.Thread(target=self._batch_loop, name="migperf-batcher", daemon=True)
        ]
        if self._make_handle is not None:
            self._threads.append(
                threading.Thread(target=self._complete_loop, name="migperf-completer", daemon=True)
            )
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Answer what is queued, then stop the threads."""
        if self._threads:
            self._inbox.put(_STOP)
        for t in self._threads:
            t.join()
        self._threads = []

    def __enter__(self) -> DynamicBatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def submit(self, items: Sequence[tuple[Any, int]]) -> None:
        """Queue samples as ``(tag, qsl_index)``; returns at once (synchronous: once answered)."""
        now = time.perf_counter_ns()
        if self.synchronous:
            if self.first_arrival_ns is None:
                self.first_arrival_ns = now
            self._serve(items)
            return
        if self.first_arrival_ns is None:
            self.first_arrival_ns = now
        self._inbox.put((items, now))

    def flush(self) -> None:
        """Run what is queued without waiting for fuller batches (LoadGen's ``FlushQueries``)."""
        if not self.synchronous:
            self._inbox.put(_FLUSH)

    def _absorb(self, message: Any) -> None:
        """Take one inbox message in (on the batch thread)."""
        if message is _STOP:
            self._stopping = True
        elif message is _FLUSH:
            self._flush = True
        else:
            items, now = message
            self._queue.extend((tag, index, now) for tag, index in items)

    def _take(self) -> list[tuple[Any, int, int]] | None:
        inbox = self._inbox
        while not self._queue:
            if self._stopping:
                return None
            self._absorb(inbox.get())
        while True:  # whatever else has arrived
            try:
                self._absorb(inbox.get_nowait())
            except queue.Empty:
                break
        if self.max_queue_delay_s > 0:
            deadline_ns = self._queue[0][2] + int(self.max_queue_delay_s * _NS)
            while len(self._queue) < self.max_batch_size and not self._flush and not self._stopping:
                left = (deadline_ns - time.perf_counter_ns()) / _NS
                if left <= 0:
                    break
                try:
                    self._absorb(inbox.get(timeout=left))
                except queue.Empty:
                    break
        n = min(len(self._queue), self.max_batch_size)
        batch = [self._queue.popleft() for _ in range(n)]
        if not self._queue:
            self._flush = False
        return batch

    def _launch(self, indices: Sequence[int]) -> tuple[Any, int]:
        """Run one batch; returns its device handle (``None`` on a CPU) and when it started."""
        start = time.perf_counter_ns()
        handle = None
        if self.error is None:
            try:
                self._run(indices)
                handle = self._make_handle() if self._make_handle is not None else None
            except BaseException as exc:  # noqa: BLE001 - reported after the test
                # LoadGen waits for every sample it issued: keep answering
                # (without running) so the test ends, then report the error.
                self.error = exc
        return handle, start

    def _serve(self, items: Sequence[tuple[Any, int]]) -> None:
        """Run and answer ``items`` on this thread, at most two batches on the device at once."""
        pending: collections.deque[tuple[list[Any], Any, int, int]] = collections.deque()
        size = self.max_batch_size
        for lo in range(0, len(items), size):
            chunk = items[lo : lo + size]
            handle, start = self._launch([index for _, index in chunk])
            pending.append(([tag for tag, _ in chunk], handle, start, len(chunk)))
            if len(pending) >= _MAX_IN_FLIGHT:
                self._answer(*pending.popleft())
        while pending:
            self._answer(*pending.popleft())

    def _batch_loop(self) -> None:
        inline = self._make_handle is None
        while True:
            batch = self._take()
            if batch is None:
                break
            tags = [tag for tag, _, _ in batch]
            if inline:
                # A CPU batch is done when it returns: answer it here.
                handle, start = self._launch([index for _, index, _ in batch])
                self._answer(tags, handle, start, len(batch))
                continue
            self._slots.acquire()
            handle, start = self._launch([index for _, index, _ in batch])
            self._done.put((tags, handle, start, len(batch)))
        if not inline:
            self._done.put(None)

    def _complete_loop(self) -> None:
        while True:
            item = self._done.get()
            if item is None:
                break
            try:
                self._answer(*item)
            finally:
                self._slots.release()

    def _answer(self, tags: list[Any], handle: Any, start: int, n: int) -> None:
        """Wait for the batch's device work, report it answered, and count it."""
        if handle is not None and self.error is None:
            try:
                handle.synchronize()
            except BaseException as exc:  # noqa: BLE001 - reported after the test
                self.error = exc
        end = time.perf_counter_ns()
        self._on_complete(tags)
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
