"""Telemetry around worker runs: sample in the parent, attach each run's window.

:class:`RunMonitor` owns one :class:`~migperf.telemetry.sampler.NvmlSampler`
(and optionally a :class:`~migperf.telemetry.dcgm.DcgmScraper`) for a sweep
or a co-located group, runs workers, and stores with each result the
telemetry of its measurement window (:attr:`WorkerResult.telemetry`)::

    with RunMonitor(nvml, [target]) as monitor:
        results = run_series(spec, [1, 8], run=monitor.run_worker)

On a simulated GPU the workers run on the CPU; the monitor registers each
worker's pid on its simulated GPU or MIG device
(:meth:`Nvml.attach_simulated_process`), so the simulated power and energy
counter respond to the run, and unregisters it when the worker exits. Such
results stay marked ``simulated``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from migperf.bench.process import GroupResult, WorkerGroup, run_worker
from migperf.bench.result import WorkerResult
from migperf.bench.spec import BenchSpec
from migperf.errors import MigperfError, UsageError
from migperf.nvml.facade import Nvml
from migperf.telemetry.dcgm import DEFAULT_DCGM_INTERVAL_S, DcgmScraper
from migperf.telemetry.model import TelemetryResult
from migperf.telemetry.sampler import DEFAULT_GPM_INTERVAL_S, DEFAULT_INTERVAL_S, NvmlSampler
from migperf.telemetry.summary import summarize_window
from migperf.telemetry.target import TelemetryTarget

__all__ = ["RunMonitor"]


class RunMonitor:
    """Sample GPUs while workers run; attach each run's telemetry to its result.

    Args:
        nvml: Open NVML, real or simulated.
        targets: The devices the runs use (their GPUs are sampled).
        interval_s: NVML sampling interval.
        gpm_interval_s: NVML GPM activity interval.
        dcgm_url: Also scrape this dcgm-exporter ``/metrics`` URL.
        dcgm_interval_s: Time between scrapes.
        keep_series: Store the readings around each window with its result
            (the summary is always stored).
        all_slices: Read the memory and GPM activity of every MIG device on
            the sampled GPUs, not only the targets' (one NVML call per device
            per tick).

    Raises:
        UsageError: without targets, or for a bad interval or URL.
    """

    def __init__(
        self,
        nvml: Nvml,
        targets: Sequence[TelemetryTarget],
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        gpm_interval_s: float = DEFAULT_GPM_INTERVAL_S,
        dcgm_url: str | None = None,
        dcgm_interval_s: float = DEFAULT_DCGM_INTERVAL_S,
        keep_series: bool = True,
        all_slices: bool = False,
    ) -> None:
        if not targets:
            raise UsageError("telemetry needs at least one GPU or MIG device to sample")
        self.nvml = nvml
        self.targets = list(targets)
        self.keep_series = keep_series
        gpus = sorted({t.gpu_index for t in self.targets})
        slices = {t.mig_uuid for t in self.targets if t.mig_uuid is not None}
        # Only the targets' own slices, unless all are asked for or a target is a
        # whole GPU (then every slice on it is part of what it uses).
        whole = any(t.mig_uuid is None for t in self.targets)
        self.sampler = NvmlSampler(
            nvml,
            gpus,
            interval_s=interval_s,
            gpm_interval_s=gpm_interval_s,
            mig_uuids=None if all_slices or whole else slices,
        )
        self.scraper = (
            DcgmScraper(dcgm_url, interval_s=dcgm_interval_s) if dcgm_url is not None else None
        )
        self.warnings: list[str] = []

    @property
    def simulated(self) -> bool:
        """Whether the sampled GPUs are simulated."""
        return self.nvml.simulated

    def __enter__(self) -> RunMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> RunMonitor:
        """Start sampling (and scraping). A dcgm-exporter that does not answer is a warning."""
        self.sampler.start()
        if self.scraper is not None:
            self.scraper.start()
            if not self.scraper.scrapes:
                errs = self.scraper.errors()
                self.warnings.append(
                    f"dcgm-exporter at {self.scraper.url} did not answer"
                    + (f" ({errs[0].message})" if errs else "")
                    + "; DCGM values will be missing until it does"
                )
        return self

    def stop(self) -> None:
        """Stop sampling and scraping."""
        self.sampler.stop()
        if self.scraper is not None:
            self.scraper.stop()

    # ----------------------------------------------------------- workers

    def worker_started(self, pid: int, target: TelemetryTarget) -> None:
        """Register a worker on its simulated device (no-op on real GPUs)."""
        if not self.nvml.simulated:
            return
        try:
            self.nvml.attach_simulated_process(target.gpu_index, pid, mig_uuid=target.mig_uuid)
        except MigperfError as exc:
            self.warnings.append(f"could not register worker {pid} on the simulated GPU: {exc}")

    def worker_finished(self, pid: int, target: TelemetryTarget) -> None:
        """Unregister a worker from its simulated device (it would also vanish on exit)."""
        if not self.nvml.simulated:
            return
        with contextlib.suppress(MigperfError):
            self.nvml.detach_simulated_process(target.gpu_index, pid)

    def run_worker(
        self,
        spec: BenchSpec,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 600.0,
        *,
        target: TelemetryTarget | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> WorkerResult:
        """:func:`~migperf.bench.process.run_worker` with telemetry attached.

        Fits :func:`~migperf.bench.series.run_series`'s ``run`` argument;
        ``on_event`` is told the worker's phases.
        """
        t = target or self.targets[0]
        pids: list[int] = []

        def started(pid: int) -> None:
            pids.append(pid)
            self.worker_started(pid, t)

        try:
            result = run_worker(spec, env, timeout_s, on_started=started, on_event=on_event)
        finally:
            for pid in pids:
                self.worker_finished(pid, t)
        return self.attach(result, t)

    def run_group(
        self,
        jobs: Sequence[tuple[BenchSpec, Mapping[str, str] | None, TelemetryTarget]],
        *,
        timeout_s: float = 600.0,
        ready_timeout_s: float | None = None,
    ) -> GroupResult:
        """:func:`~migperf.bench.process.run_group` with telemetry attached to every result.

        Whole-GPU values of jobs on the same physical GPU are labelled as
        shared by those jobs.
        """
        group = WorkerGroup([(s, e) for s, e, _ in jobs], timeout_s=timeout_s)
        started = []
        try:
            group.start()
            for w, (_, _, t) in zip(group.workers, jobs, strict=True):
                if w.pid is not None:
                    self.worker_started(w.pid, t)
                    started.append((w.pid, t))
            results, released = group.release_when_ready(ready_timeout_s)
        except BaseException:
            for w in group.workers:
                w.kill()
            raise
        finally:
            for pid, t in started:
                self.worker_finished(pid, t)
        labels = [f"job {i} ({t.label})" for i, (_, _, t) in enumerate(jobs)]
        attached = []
        for r, (_, _, t) in zip(results, jobs, strict=True):
            shared = [
                label
                for label, (_, _, other) in zip(labels, jobs, strict=True)
                if other.gpu_index == t.gpu_index
            ]
            attached.append(self.attach(r, t, shared_by=shared))
        return GroupResult(
            results=attached,
            released=released,
            release_unix_s=group.release_unix_s,
            release_spread_s=group.release_spread_s,
        )

    # ----------------------------------------------------------- results

    def telemetry_for(
        self,
        result: WorkerResult,
        target: TelemetryTarget | None = None,
        *,
        shared_by: Sequence[str] = (),
    ) -> TelemetryResult | None:
        """The telemetry of a result's measurement window; None without a window."""
        timing = result.timing
        if timing is None or timing.window_end_unix_s <= 0:
            return None
        t = target or self.targets[0]
        lo, hi = timing.window_start_unix_s, timing.window_end_unix_s
        series = self.sampler.series(lo, hi)
        if self.scraper is not None:
            series = series.model_copy(
                update={
                    "dcgm": self.scraper.series(lo, hi),
                    "errors": [*series.errors, *self.scraper.errors()],
                }
            )
        tp = result.throughput
        duration = timing.measured_duration_s
        samples = tp.samples_per_s * duration if tp is not None else None
        tokens = tp.tokens_per_s * duration if tp is not None and tp.tokens_per_s else None
        summary = summarize_window(
            series,
            lo,
            hi,
            target=t,
            samples_processed=samples,
            tokens_processed=tokens,
            shared_by=shared_by,
            simulated=self.nvml.simulated,
        )
        return TelemetryResult(summary=summary, series=series if self.keep_series else None)

    def attach(
        self,
        result: WorkerResult,
        target: TelemetryTarget | None = None,
        *,
        shared_by: Sequence[str] = (),
    ) -> WorkerResult:
        """``result`` with its window's telemetry in ``telemetry`` (unchanged without a window)."""
        telemetry = self.telemetry_for(result, target, shared_by=shared_by)
        if telemetry is None:
            return result
        return result.model_copy(update={"telemetry": telemetry})
