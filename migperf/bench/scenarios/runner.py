"""The scenario runner: one prepared workload served under LoadGen, the closed loop, or the capacity search.

:class:`ScenarioRunner` warms the workload up (its timings size LoadGen's
queries), builds LoadGen's test settings, runs one LoadGen test after another
through a :class:`~migperf.bench.scenarios.loadgen_bridge.LoadGenSut` (only
one can run in a process at a time), drives the closed loop's client threads,
and bisects server runs for the capacity search.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.bench.scenario_result import MaxQpsResult, QpsTrial, ScenarioResult
from migperf.bench.scenario_spec import ScenarioSpec
from migperf.bench.scenarios.batcher import DynamicBatcher
from migperf.bench.scenarios.capacity import find_max_qps
from migperf.bench.scenarios.loadgen_bridge import (
    LoadGenSut,
    import_loadgen,
    loadgen_percentiles,
)
from migperf.bench.scenarios.loadgen_log import format_qps, parse_loadgen_logs, verdict_sentence
from migperf.bench.spec import BenchSpec
from migperf.errors import UsageError

if TYPE_CHECKING:
    import torch

    from migperf.bench.workloads.base import PreparedWorkload

__all__ = ["DEFAULT_LOG_ROOT", "ScenarioRunner", "run_log_dir"]

#: Where LoadGen's logs go when the spec names no directory (relative to the working directory).
DEFAULT_LOG_ROOT = Path("results") / "loadgen"

#: Warmup batches of each size, at least, whatever the spec says (they size LoadGen's queries).
_MIN_WARMUP = 3
#: Headroom on the warmup's capacity estimate when sizing LoadGen's offline query.
_OFFLINE_HEADROOM = 1.5
#: Fraction of the warmup's latency given to LoadGen as the expected latency of
#: single- and multi-stream: it pre-generates queries for twice the minimum
#: duration at that latency, and a warm model is often several times faster
#: than its first few batches. Extra queries cost LoadGen only memory.
_EXPECTED_LATENCY_FRACTION = 0.25
_NS = 1_000_000_000


def _scaled(latency_ms: float | None) -> float | None:
    return latency_ms * _EXPECTED_LATENCY_FRACTION if latency_ms else None


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

    Raises:
        UsageError: When the spec has no scenario or the workload has no per-sample inputs.
    """

    #: Have LoadGen write its trace too (``mlperf_log_trace.json``); measurement tools set it.
    loadgen_trace = False

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
        """A batcher over this workload with the spec's batch size and queue delay.

        Synchronous (each submission runs on the submitting thread, no thread
        hand-off between the caller and the model) where the caller waits for
        each answer before it submits again: LoadGen's single- and
        multi-stream, and a closed loop with one client.
        """
        sc = self.scenario
        one_at_a_time = sc.name in ("single-stream", "multi-stream") or (
            sc.name == "closed-loop" and sc.effective_concurrency == 1
        )
        return DynamicBatcher(
            self.infer_batch,
            on_complete,
            max_batch_size=self.spec.batch_size,
            max_queue_delay_s=sc.max_queue_delay_ms / 1000.0,
            make_handle=self._handle_factory(),
            synchronous=one_at_a_time,
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
        lg = import_loadgen()
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
        with LoadGenSut(self.qsl_size, self.batcher, trace=self.loadgen_trace) as sut:
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

    def search_max_qps(
        self,
        *,
        say: Callable[[str], None],
        on_trial: Callable[[int, int, float], None] | None = None,
    ) -> tuple[ScenarioResult, float, float]:
        """The capacity search: server runs, bisected over the target QPS.

        ``on_trial(k, max_trials, qps)`` is told as each trial starts.

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
            if on_trial is not None:
                on_trial(n, sc.max_trials, qps)
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
