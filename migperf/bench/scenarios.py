"""Inference scenarios in the worker: MLPerf LoadGen drives a model through a dynamic batcher.

The pieces, in the order a request meets them:

* **Query-sample library** (QSL): ``qsl_size`` synthetic samples built once
  on the worker's device by the workload (``build_workload`` with that many
  samples); LoadGen picks sample indices from it with its seeded RNG.
* **System under test** (:class:`LoadGenSut`): LoadGen calls
  ``issue_queries`` from its own thread; the adapter hands the samples to
  the batcher and returns at once.
* **Dynamic batcher** (:class:`DynamicBatcher`): a batch thread takes up to
  ``max_batch_size`` queued samples (waiting at most ``max_queue_delay_ms``
  after the first for more), gathers their inputs and runs the model; a
  completion thread waits for the device (a CUDA event per batch, at most
  two batches in flight) and answers LoadGen with ``QuerySamplesComplete``.
* **LoadGen** (``mlperf_loadgen``): schedules the queries (Poisson arrivals
  for server, measured from the scheduled time), stops on its minimum and
  maximum duration and query count, and writes its logs, which
  :mod:`migperf.bench.loadgen_log` turns into the result.

``closed-loop`` skips LoadGen: ``concurrency`` client threads each send a
sample, wait for its answer and send the next, through the same batcher.

:func:`find_max_qps` is the capacity search (bisection over server runs);
:func:`run_scenario` is what the worker runs for a spec with a ``scenario``.
Only one LoadGen test can run in a process at a time; the worker runs them
one after another.
"""

from __future__ import annotations

import collections
import math
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from migperf.bench.loadgen_log import format_qps, parse_loadgen_logs, verdict_sentence
from migperf.bench.result import ThroughputResult, TimingInfo, WorkerResult
from migperf.bench.scenario_result import (
    BatchingStats,
    LatencyPercentiles,
    MaxQpsResult,
    QpsTrial,
    ScenarioResult,
)
from migperf.bench.scenario_spec import REPORTED_PERCENTILES, ScenarioSpec
from migperf.bench.spec import BenchSpec
from migperf.errors import UsageError

if TYPE_CHECKING:
    import torch

    from migperf.bench.workloads.base import PreparedWorkload

__all__ = [
    "DEFAULT_LOG_ROOT",
    "DynamicBatcher",
    "LoadGenSut",
    "ScenarioRunner",
    "find_max_qps",
    "loadgen_percentiles",
    "run_log_dir",
    "run_scenario",
]

#: Where LoadGen's logs go when the spec names no directory (relative to the working directory).
DEFAULT_LOG_ROOT = Path("results") / "loadgen"

#: Warmup batches of each size, at least, whatever the spec says (they size LoadGen's queries).
_MIN_WARMUP = 3
#: Batches the batch thread may launch before the oldest is answered.
_MAX_IN_FLIGHT = 2
#: Headroom on the warmup's capacity estimate when sizing LoadGen's offline query.
_OFFLINE_HEADROOM = 1.5
#: Fraction of the warmup's latency given to LoadGen as the expected latency of
#: single- and multi-stream: it pre-generates queries for twice the minimum
#: duration at that latency, and a warm model is often several times faster
#: than its first few batches. Extra queries cost LoadGen only memory.
_EXPECTED_LATENCY_FRACTION = 0.25
_NS = 1_000_000_000


# --- the dynamic batcher -----------------------------------------------------


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


# --- LoadGen -----------------------------------------------------------------


def _loadgen() -> Any:
    try:
        import mlperf_loadgen
    except ImportError as exc:
        raise UsageError(
            f"MLPerf LoadGen is not installed ({exc})",
            hint="install it with `pip install mlcommons-loadgen` (it imports as mlperf_loadgen)",
        ) from None
    return mlperf_loadgen


class LoadGenSut:
    """LoadGen's system under test and query-sample library around a :class:`DynamicBatcher`.

    Args:
        qsl_size: Samples in the library (all of them stay loaded).
        batcher_factory: Builds the batcher, given the completion callback.
        name: Recorded as LoadGen's SUT name.
    """

    def __init__(
        self,
        qsl_size: int,
        batcher_factory: Callable[[Callable[[list[Any]], None]], DynamicBatcher],
    ) -> None:
        self.lg = _loadgen()
        lg = self.lg
        self.qsl_size = qsl_size
        self.batcher = batcher_factory(self._complete)
        self._sut = lg.ConstructSUT(self._issue, self._flush)
        # The samples are built once on the device; loading and unloading are no-ops.
        self._qsl = lg.ConstructQSL(qsl_size, qsl_size, _ignore, _ignore)

    def _issue(self, query_samples: Sequence[Any]) -> None:
        self.batcher.submit([(s.id, s.index) for s in query_samples])

    def _flush(self) -> None:
        self.batcher.flush()

    def _complete(self, ids: list[Any]) -> None:
        response = self.lg.QuerySampleResponse
        self.lg.QuerySamplesComplete([response(i, 0, 0) for i in ids])

    def run(self, settings: Any, log_dir: Path) -> tuple[float, float]:
        """Run one LoadGen test; returns its wall-clock ``(start, end)`` in unix seconds."""
        lg = self.lg
        log_dir.mkdir(parents=True, exist_ok=True)
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(log_dir)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.log_output.copy_detail_to_stdout = False
        log_settings.enable_trace = False
        log_settings.log_mode = lg.LoggingMode.AsyncPoll
        self.batcher.reset_stats()
        self.batcher.start()
        start = time.time()
        try:
            # An audit.config in the working directory would silently change the
            # test (it is MLPerf's compliance hook); name one that does not exist.
            lg.StartTestWithLogSettings(
                self._sut, self._qsl, settings, log_settings, str(log_dir / "no-audit.config")
            )
        finally:
            end = time.time()
            self.batcher.stop()
        if self.batcher.error is not None:
            raise self.batcher.error
        return start, end

    def close(self) -> None:
        """Destroy LoadGen's SUT and QSL."""
        self.lg.DestroyQSL(self._qsl)
        self.lg.DestroySUT(self._sut)

    def __enter__(self) -> LoadGenSut:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ignore(_indices: Any) -> None:
    return None


def _scaled(latency_ms: float | None) -> float | None:
    return latency_ms * _EXPECTED_LATENCY_FRACTION if latency_ms else None


def loadgen_percentiles(latencies_ms: Sequence[float]) -> LatencyPercentiles:
    """Latency statistics computed the way LoadGen does: sorted sample at ``floor(n * p)``."""
    xs = sorted(latencies_ms)
    n = len(xs)
    if n == 0:
        return LatencyPercentiles()
    fields: dict[str, float] = {"min": xs[0], "max": xs[-1], "mean": math.fsum(xs) / n}
    for q in REPORTED_PERCENTILES:
        fields["p" + f"{q:g}".replace(".", "_")] = xs[min(n - 1, int(n * q / 100.0))]
    return LatencyPercentiles(**fields)


# --- the capacity search -----------------------------------------------------


def find_max_qps(
    run_at: Callable[[float], tuple[bool, Any]],
    *,
    start_qps: float,
    precision: float = 0.05,
    max_trials: int = 12,
    min_qps: float = 0.5,
) -> tuple[float | None, float | None, list[tuple[float, bool, Any]], str | None]:
    """Search the highest rate ``run_at`` judges valid, to a relative precision.

    Brackets by doubling from ``start_qps`` while valid (or halving while
    invalid), then bisects at the geometric midpoint until
    ``hi / lo - 1 <= precision``. Validity is assumed to fall with the rate;
    each rate is run once.

    Args:
        run_at: Runs one trial at a rate; returns ``(valid, anything)``.
        start_qps: The first rate tried.
        precision: Relative width at which to stop.
        max_trials: Most trials.
        min_qps: Give up when an invalid rate would be halved below this.

    Returns:
        ``(highest valid rate, lowest invalid rate, trials as (rate, valid, payload), reason)``;
        ``reason`` says why the answer is missing or not converged.

    Raises:
        UsageError: For a non-positive start, precision or trial count.
    """
    if start_qps <= 0 or precision <= 0 or max_trials < 1:
        raise UsageError(
            f"find_max_qps: start_qps ({start_qps}), precision ({precision}) and "
            f"max_trials ({max_trials}) must be positive"
        )
    trials: list[tuple[float, bool, Any]] = []
    lo: float | None = None
    hi: float | None = None

    def trial(qps: float) -> bool:
        valid, payload = run_at(qps)
        trials.append((qps, valid, payload))
        return valid

    qps = start_qps
    while len(trials) < max_trials:
        if trial(qps):
            lo = qps
            if hi is not None:
                break
            qps *= 2.0
        else:
            hi = qps
            if lo is not None:
                break
            if qps / 2.0 < min_qps:
                return (
                    None,
                    hi,
                    trials,
                    (
                        f"no rate down to {format_qps(qps)} QPS met the target; the search stops "
                        f"below {format_qps(min_qps)} QPS"
                    ),
                )
            qps /= 2.0
    if lo is None or hi is None:
        which = "invalid" if lo is None else "valid"
        return (
            lo,
            hi,
            trials,
            f"every one of the {len(trials)} trials was {which}; raise max_trials",
        )
    while hi / lo - 1.0 > precision and len(trials) < max_trials:
        mid = math.sqrt(lo * hi)
        if trial(mid):
            lo = mid
        else:
            hi = mid
    reason = None
    if hi / lo - 1.0 > precision:
        reason = (
            f"stopped after {len(trials)} trials at {hi / lo - 1.0:.1%} precision "
            f"(asked {precision:.1%}); raise max_trials"
        )
    return lo, hi, trials, reason


# --- the runner --------------------------------------------------------------


def run_log_dir(spec: BenchSpec, root: Path | str | None = None) -> Path:
    """A fresh directory for one run's LoadGen logs: ``<root>/<time>-<workload>-<scenario>-b<batch>-r<repeat>-<pid>``."""
    base = Path(root if root is not None else (spec.loadgen_log_dir or DEFAULT_LOG_ROOT))
    scenario = spec.scenario.name if spec.scenario is not None else "bench"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = (
        f"{stamp}-{spec.workload}-{scenario}-b{spec.batch_size}-r{spec.repeat_index}-{os.getpid()}"
    )
    path = base / name
    n = 1
    while path.exists():
        n += 1
        path = base / f"{name}-{n}"
    return path


class ScenarioRunner:
    """One prepared workload served under scenarios (LoadGen runs one after another).

    Args:
        spec: The bench spec; its ``scenario`` says what to run, its
            ``batch_size`` is the batcher's maximum.
        prepared: The workload, prepared with ``qsl_size`` samples.
        device: Where it runs (``None`` or a CPU device: no device sync).
        log_dir: This run's LoadGen log directory.
    """

    def __init__(
        self,
        spec: BenchSpec,
        prepared: PreparedWorkload,
        device: torch.device | None,
        log_dir: Path,
    ) -> None:
        if spec.scenario is None:
            raise UsageError("ScenarioRunner needs a spec with a scenario")
        if prepared.infer_batch is None:
            raise UsageError(
                f"{spec.workload} cannot serve inference scenarios: it has no per-sample inputs",
                hint="use a model workload (resnet50, bert-base, ...), gemm, or the synthetic sleep",
            )
        self.spec = spec
        self.scenario: ScenarioSpec = spec.scenario
        self.prepared = prepared
        self.infer_batch: Callable[[Sequence[int]], None] = prepared.infer_batch
        self.device = device
        self.log_dir = log_dir
        self.qsl_size = self.scenario.effective_qsl_size(spec.batch_size)
        self.warmup_ms: dict[int, list[float]] = {}
        self.seed = spec.seed % 2**64

    # -- device ------------------------------------------------------------

    def _cuda(self) -> bool:
        return self.device is not None and getattr(self.device, "type", "cpu") == "cuda"

    def _sync(self) -> None:
        if self._cuda():
            import torch

            torch.cuda.synchronize(self.device)

    def _handle_factory(self) -> Callable[[], Any] | None:
        if not self._cuda():
            return None
        import torch

        def record() -> Any:
            event = torch.cuda.Event()
            event.record()
            return event

        return record

    def batcher(self, on_complete: Callable[[list[Any]], None]) -> DynamicBatcher:
        """A batcher over this workload with the spec's batch size and queue delay."""
        return DynamicBatcher(
            self.infer_batch,
            on_complete,
            max_batch_size=self.spec.batch_size,
            max_queue_delay_s=self.scenario.max_queue_delay_ms / 1000.0,
            make_handle=self._handle_factory(),
        )

    # -- warmup ------------------------------------------------------------

    def warmup(self, iterations: int) -> dict[int, list[float]]:
        """Run full and single-sample batches (and a multi-stream query's worth) and time them.

        Always at least :data:`_MIN_WARMUP` of each, however small
        ``iterations``: their timings size LoadGen's queries (expected
        latency and QPS) and start the capacity search.
        """
        sizes = {1, self.spec.batch_size}
        if self.scenario.name == "multi-stream":
            sizes.add(min(self.spec.batch_size, self.scenario.effective_samples_per_query))
        rng = random.Random(self.seed)
        for size in sorted(sizes):
            times = self.warmup_ms.setdefault(size, [])
            for _ in range(max(_MIN_WARMUP, iterations)):
                indices = [rng.randrange(self.qsl_size) for _ in range(size)]
                self._sync()
                t0 = time.perf_counter_ns()
                self.infer_batch(indices)
                self._sync()
                times.append((time.perf_counter_ns() - t0) / 1e6)
        return self.warmup_ms

    def batch_ms(self, size: int) -> float | None:
        """Fastest warmup latency of a batch of ``size`` (``None`` if that size was not run).

        The fastest, not the median: the first calls carry one-time costs
        (thread pools, allocations, kernel selection), and every use of this
        estimate is safer when it errs fast (LoadGen pre-generates more
        queries, the offline query is larger).
        """
        times = self.warmup_ms.get(size)
        if not times:
            return None
        return min(times)

    def capacity_estimate(self) -> float | None:
        """Samples per second with full batches back to back, from the warmup."""
        t = self.batch_ms(self.spec.batch_size)
        return self.spec.batch_size / (t / 1000.0) if t else None

    # -- LoadGen -----------------------------------------------------------

    def settings(
        self, *, target_qps: float | None = None, min_query_count: int | None = None
    ) -> Any:
        """LoadGen's ``TestSettings`` for this scenario (performance mode, fixed seeds)."""
        lg = _loadgen()
        sc = self.scenario
        spec = self.spec
        s = lg.TestSettings()
        s.scenario = getattr(lg.TestScenario, sc.loadgen_scenario or "")
        s.mode = lg.TestMode.PerformanceOnly
        s.min_duration_ms = int(round(spec.min_duration_s * 1000))
        s.max_duration_ms = int(round(spec.max_duration_s * 1000))
        s.min_query_count = min_query_count or sc.effective_min_query_count
        if sc.max_query_count is not None:
            s.max_query_count = sc.max_query_count
        s.qsl_rng_seed = self.seed
        s.sample_index_rng_seed = self.seed
        s.schedule_rng_seed = self.seed
        s.performance_sample_count_override = self.qsl_size
        pct = sc.effective_percentile
        if sc.name == "server":
            s.server_target_qps = float(target_qps or sc.target_qps or 1.0)
            s.server_target_latency_ns = int(round((sc.effective_latency_target_ms or 100.0) * 1e6))
            s.server_target_latency_percentile = (pct or 99.0) / 100.0
        elif sc.name == "single-stream":
            s.single_stream_target_latency_percentile = (pct or 90.0) / 100.0
            expected = sc.expected_latency_ms or _scaled(self.batch_ms(1))
            if expected:
                s.single_stream_expected_latency_ns = max(1, int(expected * 1e6))
        elif sc.name == "multi-stream":
            spq = sc.effective_samples_per_query
            s.multi_stream_samples_per_query = spq
            s.multi_stream_target_latency_percentile = (pct or 99.0) / 100.0
            expected = sc.expected_latency_ms or _scaled(self._query_ms(spq))
            if expected:
                s.multi_stream_expected_latency_ns = max(1, int(expected * 1e6))
        elif sc.name == "offline":
            expected_qps = sc.expected_qps
            if expected_qps is None:
                capacity = self.capacity_estimate()
                expected_qps = capacity * _OFFLINE_HEADROOM if capacity else None
            if expected_qps:
                s.offline_expected_qps = float(expected_qps)
        return s

    def _query_ms(self, samples: int) -> float | None:
        b = self.spec.batch_size
        full, rest = divmod(samples, b)
        t_full = self.batch_ms(b)
        t_rest = self.batch_ms(rest) if rest else 0.0
        if t_full is None or t_rest is None:
            return None
        return full * t_full + t_rest

    def run_loadgen(
        self, log_dir: Path, *, target_qps: float | None = None, min_query_count: int | None = None
    ) -> tuple[ScenarioResult, float, float]:
        """One LoadGen test; returns the parsed result and its wall-clock window (unix seconds)."""
        settings = self.settings(target_qps=target_qps, min_query_count=min_query_count)
        with LoadGenSut(self.qsl_size, self.batcher) as sut:
            start, end = sut.run(settings, log_dir)
            stats = sut.batcher.stats()
        qps = target_qps or self.scenario.target_qps
        result = parse_loadgen_logs(log_dir, self.scenario, target_qps=qps)
        update: dict[str, Any] = {
            "batching": stats,
            "duration_s": end - start,
            "seeds": {
                "qsl_rng_seed": self.seed,
                "sample_index_rng_seed": self.seed,
                "schedule_rng_seed": self.seed,
            },
            "warmup_batch_ms": {k: m for k in self.warmup_ms if (m := self.batch_ms(k))},
        }
        if result.completed_qps is None and stats.window_s:
            # LoadGen reports no rate for multi-stream: count the answered samples.
            update["completed_qps"] = stats.samples / stats.window_s
        if result.sample_count is None or self.scenario.name == "offline":
            update["sample_count"] = stats.samples
        return result.model_copy(update=update), start, end

    def search_max_qps(self, *, say: Callable[[str], None]) -> tuple[ScenarioResult, float, float]:
        """The capacity search: server runs, bisected over the target QPS.

        Each trial keeps its logs in ``trial-NN-qps-X`` under the run's log
        directory and runs the scenario's minimum query count (by default
        twice what the early-stopping test needs with none over the target:
        918 for p99).
        """
        sc = self.scenario
        pct = sc.effective_percentile or 99.0
        min_queries = sc.effective_min_query_count
        capacity = self.capacity_estimate()
        start_qps = sc.target_qps or (capacity / 2.0 if capacity else 10.0)
        t0 = time.time()
        trials_seen: list[tuple[ScenarioResult, float, float]] = []

        def run_at(qps: float) -> tuple[bool, tuple[ScenarioResult, float, float]]:
            n = len(trials_seen) + 1
            trial_dir = self.log_dir / f"trial-{n:02d}-qps-{qps:.6g}"
            say(f"capacity search: trial {n} at {format_qps(qps)} QPS")
            outcome = self.run_loadgen(trial_dir, target_qps=qps, min_query_count=min_queries)
            trials_seen.append(outcome)
            say(f"  {outcome[0].verdict}")
            return bool(outcome[0].valid), outcome

        lo, hi, trials, reason = find_max_qps(
            run_at,
            start_qps=start_qps,
            precision=sc.qps_precision,
            max_trials=sc.max_trials,
            min_qps=sc.min_qps,
        )
        achieved = hi / lo - 1.0 if lo is not None and hi is not None else None
        max_qps = MaxQpsResult(
            max_qps_under_slo=lo,
            slo_latency_ms=sc.effective_latency_target_ms or 100.0,
            slo_percentile=pct,
            precision=sc.qps_precision,
            achieved_precision=achieved,
            lowest_invalid_qps=hi,
            converged=achieved is not None and achieved <= sc.qps_precision,
            reason=reason,
            trials=[
                QpsTrial(
                    target_qps=qps,
                    valid=valid,
                    verdict=payload[0].verdict,
                    target_percentile_latency_ms=payload[0].target_percentile_latency_ms,
                    completed_qps=payload[0].completed_qps,
                    query_count=payload[0].query_count,
                    log_dir=payload[0].log_dir,
                )
                for qps, valid, payload in trials
            ],
            search_duration_s=time.time() - t0,
            log_dir=str(self.log_dir),
        )
        # Report the run at the capacity found, or the last one tried without an answer.
        chosen = next((p for q, v, p in trials if v and q == lo), trials[-1][2])
        result, start, end = chosen
        return result.model_copy(update={"max_qps": max_qps}), start, end

    # -- closed loop -------------------------------------------------------

    def run_closed_loop(self) -> tuple[ScenarioResult, list[float], float, float]:
        """``concurrency`` clients, each with one request outstanding, through the batcher.

        Runs until both ``min_query_count`` answers and ``min_duration_s`` are
        reached, or ``max_duration_s`` / ``max_query_count``. Latency is from
        send to answer; a request still in flight at the end is not counted.

        Returns:
            The result, the latencies in ms, and the window (unix seconds).
        """
        sc = self.scenario
        spec = self.spec
        n_clients = sc.effective_concurrency
        lock = threading.Lock()
        done_count = [0]
        stop = threading.Event()

        class _Request:
            __slots__ = ("done_ns", "event")

            def __init__(self) -> None:
                self.event = threading.Event()
                self.done_ns = 0

        def on_complete(tags: list[Any]) -> None:
            now = time.perf_counter_ns()
            for req in tags:
                req.done_ns = now
                req.event.set()
            with lock:
                done_count[0] += len(tags)

        records: list[list[tuple[int, int]]] = [[] for _ in range(n_clients)]
        batcher = self.batcher(on_complete)

        def client(i: int) -> None:
            rng = random.Random(self.seed * 1_000_003 + i)
            mine = records[i]
            while not stop.is_set():
                req = _Request()
                sent = time.perf_counter_ns()
                batcher.submit([(req, rng.randrange(self.qsl_size))])
                req.event.wait()
                mine.append((sent, req.done_ns))
                if batcher.error is not None:
                    return

        min_ns = int(spec.min_duration_s * _NS)
        max_ns = int(spec.max_duration_s * _NS)
        cap = sc.max_query_count
        threads = [
            threading.Thread(target=client, args=(i,), name=f"migperf-client-{i}", daemon=True)
            for i in range(n_clients)
        ]
        batcher.start()
        start_unix = time.time()
        t0 = time.perf_counter_ns()
        for t in threads:
            t.start()
        end_reason = "Ending naturally: minimum query count and duration met"
        while True:
            time.sleep(0.002)
            elapsed = time.perf_counter_ns() - t0
            with lock:
                done = done_count[0]
            if batcher.error is not None:
                end_reason = "the model raised an error"
                break
            if cap is not None and done >= cap:
                end_reason = "Ending early: Max query count reached"
                break
            if done >= sc.effective_min_query_count and elapsed >= min_ns:
                break
            if elapsed >= max_ns:
                end_reason = "Ending early: Max test duration reached"
                break
        stop_ns = time.perf_counter_ns()
        end_unix = time.time()
        stop.set()
        for t in threads:
            t.join()
        batcher.stop()
        if batcher.error is not None:
            raise batcher.error
        pairs = [p for rec in records for p in rec if p[1] <= stop_ns]
        if cap is not None:
            pairs = sorted(pairs, key=lambda p: p[1])[:cap]
        latencies = [(d - s) / 1e6 for s, d in pairs]
        window_s = (stop_ns - t0) / _NS
        pct = sc.effective_percentile
        lat = loadgen_percentiles(latencies)
        target_lat = lat.at(pct) if pct is not None else None
        slo = sc.effective_latency_target_ms
        result = ScenarioResult(
            scenario="closed-loop",
            generator="closed_loop",
            valid=None,
            verdict="",
            slo_met=None if slo is None or target_lat is None else target_lat <= slo,
            completed_qps=len(latencies) / window_s if window_s > 0 else None,
            latency_target_ms=slo,
            latency_percentile=pct,
            target_percentile_latency_ms=target_lat,
            latency_ms=lat,
            query_count=len(latencies),
            sample_count=len(latencies),
            samples_per_query=1,
            concurrency=n_clients,
            duration_s=window_s,
            end_reason=end_reason,
            settings={
                "concurrency": n_clients,
                "min_duration_ms": spec.min_duration_s * 1000.0,
                "max_duration_ms": spec.max_duration_s * 1000.0,
                "min_query_count": sc.effective_min_query_count,
                "max_query_count": cap or 0,
            },
            seeds={"client_rng_seed": self.seed},
            batching=batcher.stats(),
            warmup_batch_ms={k: m for k in self.warmup_ms if (m := self.batch_ms(k))},
        )
        verdict, _ = verdict_sentence(result)
        return result.model_copy(update={"verdict": verdict}), latencies, start_unix, end_unix


# --- the worker's entry ------------------------------------------------------


def run_scenario(
    spec: BenchSpec,
    *,
    stdin: IO[str] | None = None,
    ready_fd: int | None = None,
    log: Callable[[str], None] | None = None,
) -> WorkerResult:
    """Run the spec's scenario in this process and return its result (the worker's body).

    Builds the workload with ``qsl_size`` samples on the worker's device,
    warms it up (full and single-sample batches), waits at the barrier if
    the spec has one, then runs LoadGen (or the closed loop, or the capacity
    search). Every outcome is a result, as in :func:`migperf.bench.worker.run_spec`.
    """
    from migperf.bench.worker import _Barrier, failure_result, select_device

    say = log or (lambda _msg: None)
    sc = spec.scenario
    assert sc is not None
    phase = "device"
    device = None
    warnings: list[str] = []
    build_s = warmup_s = None
    barrier = _Barrier(stdin, ready_fd) if spec.barrier else None
    try:
        from migperf.bench.workloads import build_workload

        device = select_device(spec)
        if spec.expect_device == "auto" and device.type == "cpu" and not spec.simulated:
            warnings.append("no CUDA device is visible to torch in the worker: measured on the CPU")
        if spec.simulated:
            warnings.append(
                "simulated GPU slot: every number was measured on this host's CPU, not on a GPU"
            )
        phase = "build"
        qsl_size = sc.effective_qsl_size(spec.batch_size)
        say(
            f"building {spec.workload} for the {sc.name} scenario (max batch {spec.batch_size}, "
            f"{qsl_size} samples in the QSL) on {device}"
        )
        t0 = time.perf_counter()
        prepared = build_workload(spec.model_copy(update={"batch_size": qsl_size}), device)
        _apply_faults(prepared, spec)
        build_s = time.perf_counter() - t0
        log_dir = run_log_dir(spec)
        runner = ScenarioRunner(spec, prepared, device, log_dir)

        phase = "warmup"
        t0 = time.perf_counter()
        runner.warmup(spec.effective_warmup)
        warmup_s = time.perf_counter() - t0
        if barrier is not None:
            phase = "barrier"
            say("warm; waiting at the barrier")
            barrier.wait()
        phase = "measure"
        latencies: list[float] = []
        if sc.name == "closed-loop":
            say(f"closed loop at concurrency {sc.effective_concurrency}")
            result, latencies, start, end = runner.run_closed_loop()
        elif sc.find_max_qps:
            say(f"searching the highest server QPS within the SLO; LoadGen logs in {log_dir}")
            result, start, end = runner.search_max_qps(say=say)
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
    barrier: Any,
    durations: tuple[float | None, float | None],
    warnings: list[str],
) -> WorkerResult:
    from migperf.bench.environment import collect_environment
    from migperf.bench.stats import summarize
    from migperf.bench.worker import _kind, _memory

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
        device_kind=_kind(device),
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
        workload_config=prepared.config,
        warmup_samples_ms=list(warmup),
        latency_samples_ms=list(latencies),
        scenario=result,
        warnings=warnings,
        **_memory(device),
    )
