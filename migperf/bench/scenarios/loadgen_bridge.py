"""The bridge to MLPerf LoadGen: its import, the system under test, its percentiles.

:class:`LoadGenSut` is LoadGen's system under test and query-sample library
around a :class:`~migperf.bench.scenarios.batcher.DynamicBatcher`: LoadGen
calls ``issue_queries`` from its own thread, the adapter hands the samples to
the batcher, and each answered batch goes back to LoadGen with
``QuerySamplesComplete``. Under server and offline the batcher queues them
and returns at once; under single- and multi-stream, where LoadGen issues
the next query only when this one is answered, a synchronous batcher runs
them on LoadGen's thread and answers before returning (no thread hand-off).
Each test runs under :func:`~migperf.bench.scenarios.timerslack.precise_timers`,
so LoadGen's server scheduler wakes at each query's scheduled time instead of
up to the OS's default 50 us timer slack later (a lateness its latencies count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from migperf.bench.scenario_result import LatencyPercentiles
from migperf.bench.scenario_spec import REPORTED_PERCENTILES
from migperf.bench.scenarios.batcher import DynamicBatcher
from migperf.bench.scenarios.timerslack import precise_timers
from migperf.errors import UsageError

__all__ = ["LoadGenSut", "import_loadgen", "loadgen_percentiles"]


def import_loadgen() -> Any:
    """The ``mlperf_loadgen`` module.

    Raises:
        UsageError: When LoadGen is not installed.
    """
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
        trace: Also write LoadGen's ``mlperf_log_trace.json`` (each sample's
            scheduled, issue and completion times; a measurement tool's
            option, it costs LoadGen's logging thread more work).

    Raises:
        UsageError: When LoadGen is not installed.
    """

    def __init__(
        self,
        qsl_size: int,
        batcher_factory: Callable[[Callable[[list[Any]], None]], DynamicBatcher],
        *,
        trace: bool = False,
    ) -> None:
        self.lg = import_loadgen()
        self.trace = trace
        lg = self.lg
        self.qsl_size = qsl_size
        self.batcher = batcher_factory(self._complete)
        # Looked up once: _complete runs once per batch.
        self._response = lg.QuerySampleResponse
        self._samples_complete = lg.QuerySamplesComplete
        self._sut = lg.ConstructSUT(self._issue, self._flush)
        # The samples are built once on the device; loading and unloading are no-ops.
        self._qsl = lg.ConstructQSL(qsl_size, qsl_size, _ignore, _ignore)

    def _issue(self, query_samples: Sequence[Any]) -> None:
        self.batcher.submit([(s.id, s.index) for s in query_samples])

    def _flush(self) -> None:
        self.batcher.flush()

    def _complete(self, ids: list[Any]) -> None:
        response = self._response
        self._samples_complete([response(i, 0, 0) for i in ids])

    def run(self, settings: Any, log_dir: Path) -> tuple[float, float]:
        """Run one LoadGen test; returns its wall-clock ``(start, end)`` in unix seconds."""
        lg = self.lg
        log_dir.mkdir(parents=True, exist_ok=True)
        log_settings = lg.LogSettings()
        log_settings.log_output.outdir = str(log_dir)
        log_settings.log_output.copy_summary_to_stdout = False
        log_settings.log_output.copy_detail_to_stdout = False
        log_settings.enable_trace = self.trace
        log_settings.log_mode = lg.LoggingMode.AsyncPoll
        self.batcher.reset_stats()
        # Before the batcher starts its threads: they inherit the precise slack.
        with precise_timers():
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
