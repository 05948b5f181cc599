"""From specs to workers running on their devices: the one way every caller launches.

A caller (``migperf bench``, the experiment runner, plan verification) turns
what it measures into :class:`LaunchJob` s (a spec, the worker's environment
and the device label telemetry resolves) and calls :func:`launch_jobs` (or
:func:`launch`, which also says whether a group was released together):

* on a simulated GPU the workers share this host's CPU cores, so each job's
  ``OMP_NUM_THREADS`` gets its share (unless the user set it for this process);
* a job whose spec is simulated is emulated (:mod:`migperf.bench.emulation`):
  its device's facts (memory, SMs, an MPS client's limits) are resolved
  through NVML and handed to the worker, which may then hold no more than the
  device's memory and, while it measures, use no more than the device's share
  of the host's CPU (:mod:`migperf.bench.throttle`); such a job waits at the
  barrier, so the share applies from its release;
* with a :class:`~migperf.bench.monitor.RunMonitor`, every job's telemetry
  target is resolved; when one cannot be (the CPU, a machine without GPUs),
  the runs go on without telemetry;
* one job runs as one worker process; several (or one whose spec asks for the
  barrier) run as a :class:`~migperf.bench.process.WorkerGroup`, released
  together once all are warm;
* with a :class:`~migperf.bench.warm.WarmPool`, a single job runs on its
  device's warm worker (which serves the runs after it too, and builds each
  model once). Co-located groups, neighbours and MPS clients always run in
  fresh processes: their workers start, warm up and are released together
  behind one barrier per run, and an MPS client's daemon lives for one run;
* ``on_event(job_index, event)`` is told each phase a single job's worker
  reports (``building``, ``warmup``, ``measuring``, a LoadGen ``trial``);
* an exception or interrupt kills every worker started, so none outlives the
  call holding its device.

:func:`optional_monitor` opens the monitor itself: telemetry never stops a
run, so a monitor that cannot start is reported and replaced by ``None``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from migperf.bench.emulation import (
    EMULATION_ENV,
    SliceEmulation,
    emulation_env,
    host_cores,
    mps_client_emulation,
    resolve_emulation,
)
from migperf.bench.process import GroupResult, run_group, run_worker
from migperf.bench.spec import BenchSpec
from migperf.errors import MigperfError, UsageError

if TYPE_CHECKING:
    from migperf.bench.monitor import RunMonitor
    from migperf.bench.result import WorkerResult
    from migperf.bench.warm import WarmPool, WorkerUse
    from migperf.nvml.facade import Nvml
    from migperf.telemetry.target import TelemetryTarget

__all__ = ["LaunchJob", "launch", "launch_jobs", "optional_monitor"]


@dataclass
class LaunchJob:
    """One worker to launch.

    Attributes:
        spec: What the worker runs.
        env: The worker's environment (see :func:`migperf.bench.device.worker_env`);
            :func:`launch_jobs` may add ``OMP_NUM_THREADS`` to it, and on a
            simulated device ``MIGPERF_EMULATION`` and ``OMP_WAIT_POLICY``.
        device: The label telemetry resolves to a target: a GPU index as text
            or a MIG UUID; ``None`` uses the monitor's first target.
        emulation: The simulated device's facts; ``None``: :func:`launch`
            resolves them from the device label (``device``, else the spec's
            ``device_label``) when the spec is simulated and NVML is at hand.
    """

    spec: BenchSpec
    env: dict[str, str]
    device: str | None = None
    emulation: SliceEmulation | None = None


def split_cores(jobs: Sequence[LaunchJob]) -> None:
    """Give each job an equal share of this host's CPU cores in its ``OMP_NUM_THREADS``.

    Workers on simulated GPU slots all run on this host's CPU; without a
    share, co-located workers would each start a thread per core and
    oversubscribe them. A value the user set for this process wins: nothing
    is changed then.
    """
    if not jobs or "OMP_NUM_THREADS" in os.environ:
        return
    share = str(max(1, (os.cpu_count() or 1) // len(jobs)))
    for job in jobs:
        job.env["OMP_NUM_THREADS"] = share


_LAUNCHES = itertools.count()


def emulate(jobs: Sequence[LaunchJob], nvml: Nvml | None) -> list[BenchSpec]:
    """Hand each simulated job its device's emulation; return the specs to run.

    Each simulated job's environment gets its device's facts (an explicit
    :attr:`LaunchJob.emulation`, else resolved through ``nvml``), with the MPS
    limits its environment sets, this host's cores and its device's group in
    this launch (jobs on one device share its CPU share). A job whose device
    cannot be resolved runs without emulation; its result says so. A throttled
    job's spec gets the barrier, so its share applies from its release.

    Args:
        jobs: The jobs; their ``env`` is updated in place.
        nvml: Where devices are resolved; ``None``: only explicit emulations apply.

    Returns:
        The spec to run for each job, in job order.
    """
    launch_id = f"{os.getpid()}-{next(_LAUNCHES)}"
    cores = host_cores()
    specs = []
    for job in jobs:
        job.env.pop(EMULATION_ENV, None)
        emulation = job.emulation
        label = job.device or job.spec.device_label
        if emulation is None and job.spec.simulated and nvml is not None and label:
            try:
                emulation = resolve_emulation(nvml, label)
            except MigperfError:
                emulation = None  # the worker's result says it ran unemulated
        if emulation is None or not job.spec.simulated:
            specs.append(job.spec)
            continue
        emulation = replace(
            mps_client_emulation(emulation, job.env),
            host_cores=float(cores),
            group=f"{launch_id}:{emulation.device}",
        )
        job.env.update(emulation_env(emulation))
        # Idle OpenMP threads must sleep, not spin: spinning would spend a
        # throttled worker's budget on nothing and steal the cores co-located
        # workers share. The user's own setting (already in env) wins.
        job.env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        throttled = emulation.throttled and not job.spec.barrier
        specs.append(job.spec.model_copy(update={"barrier": True}) if throttled else job.spec)
    return specs


def _targets(
    jobs: Sequence[LaunchJob], monitor: RunMonitor, nvml: Nvml | None
) -> list[TelemetryTarget] | None:
    """Each job's telemetry target; ``None`` as soon as one job has none."""
    from migperf.telemetry.target import resolve_target

    found = []
    for job in jobs:
        target = (
            monitor.targets[0]
            if job.device is None
            else resolve_target(nvml or monitor.nvml, job.device)
        )
        if target is None:
            return None
        found.append(target)
    return found


def launch(
    jobs: Sequence[LaunchJob],
    *,
    simulated: bool,
    timeout_s: float,
    monitor: RunMonitor | None = None,
    nvml: Nvml | None = None,
    pool: WarmPool | None = None,
    on_event: Callable[[int, dict[str, Any]], None] | None = None,
) -> GroupResult:
    """Run the jobs' workers and return every result, and whether a group was released together.

    Args:
        jobs: The workers; several are co-located behind one barrier.
        simulated: The jobs run on simulated GPU slots, i.e. on this host's
            CPU: split its cores between them (see :func:`split_cores`).
            Emulation follows each job's spec (``simulated``), see :func:`emulate`.
        timeout_s: Wall-clock limit of each worker.
        monitor: Attach each run's telemetry; dropped when a job's device
            has no telemetry target.
        nvml: Where the jobs' devices are resolved (the monitor's NVML by default).
        pool: Run a single job on its device's warm worker (see the module docstring).
        on_event: Told ``(job index, event)`` for each phase a single job's worker reports.

    Returns:
        One result per job, in job order. ``released`` is ``False`` only when
        a barrier was abandoned (a worker failed before all were ready); a
        single job without a barrier is never held, so it is ``True``.
        ``workers`` says how each job's worker ran.

    Raises:
        UsageError: Without jobs.
        GpuNotFoundError: With a monitor, when a job's device does not exist.
    """
    if not jobs:
        raise UsageError("nothing to launch: no jobs")
    if simulated:
        split_cores(jobs)
    targets = _targets(jobs, monitor, nvml) if monitor is not None else None
    specs = emulate(jobs, nvml or (monitor.nvml if monitor is not None else None))
    if len(jobs) == 1 and not jobs[0].spec.barrier:
        # A spec with the barrier (an emulated one) is released as soon as it is ready.
        target = targets[0] if monitor is not None and targets is not None else None
        return _run_single(jobs[0], specs[0], timeout_s, monitor, target, pool, on_event)
    if monitor is not None and targets is not None:
        outcome = monitor.run_group(
            [(s, j.env, t) for s, j, t in zip(specs, jobs, targets, strict=True)],
            timeout_s=timeout_s,
        )
    else:
        outcome = run_group(
            [(s, j.env) for s, j in zip(specs, jobs, strict=True)], timeout_s=timeout_s
        )
    return replace(outcome, workers=[_fresh_use(r) for r in outcome.results])


def _fresh_use(result: WorkerResult) -> WorkerUse:
    from migperf.bench.warm import WorkerUse

    pid = result.process.pid if result.process is not None else None
    return WorkerUse(mode="fresh", pid=pid, run_in_process=1, model_cached=False)


def _run_single(
    job: LaunchJob,
    spec: BenchSpec,
    timeout_s: float,
    monitor: RunMonitor | None,
    target: TelemetryTarget | None,
    pool: WarmPool | None,
    on_event: Callable[[int, dict[str, Any]], None] | None,
) -> GroupResult:
    """One job's worker, warm (from ``pool``) when it fits, with its telemetry attached."""

    def event(info: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(0, info)

    extra: dict[str, Any] = {"on_event": event} if on_event is not None else {}
    # An MPS client connects to its run's daemon when its context starts: a fresh process.
    if pool is None or "CUDA_MPS_PIPE_DIRECTORY" in job.env:
        if monitor is not None and target is not None:
            result = monitor.run_worker(spec, job.env, timeout_s, target=target, **extra)
        else:
            result = run_worker(spec, job.env, timeout_s, **extra)
        use = _fresh_use(result)
    else:
        pids: list[int] = []

        def started(pid: int) -> None:
            pids.append(pid)
            if monitor is not None and target is not None:
                monitor.worker_started(pid, target)

        try:
            result, use = pool.run(
                spec,
                job.env,
                device=job.device or spec.device_label or "default",
                timeout_s=timeout_s,
                on_started=started,
                on_event=event,
            )
        finally:
            if monitor is not None and target is not None:
                for pid in pids:
                    monitor.worker_finished(pid, target)
        if monitor is not None and target is not None:
            result = monitor.attach(result, target)
    return GroupResult(
        results=[result],
        released=True,
        release_unix_s=None,
        release_spread_s=None,
        workers=[use],
    )


def launch_jobs(
    jobs: Sequence[LaunchJob],
    *,
    simulated: bool,
    timeout_s: float,
    monitor: RunMonitor | None = None,
    nvml: Nvml | None = None,
    pool: WarmPool | None = None,
) -> list[WorkerResult]:
    """Run the jobs' workers (several released together) and return their results in job order.

    :func:`launch` without the group's release information; the arguments
    are the same.

    Raises:
        UsageError: Without jobs.
        GpuNotFoundError: With a monitor, when a job's device does not exist.
    """
    outcome = launch(
        jobs, simulated=simulated, timeout_s=timeout_s, monitor=monitor, nvml=nvml, pool=pool
    )
    return list(outcome.results)


@contextlib.contextmanager
def optional_monitor(
    nvml: Nvml,
    targets: Iterable[TelemetryTarget | None],
    *,
    interval_s: float,
    dcgm_url: str | None = None,
    keep_series: bool = True,
    all_slices: bool = False,
    on_unavailable: Callable[[str], None],
    on_warning: Callable[[str], None],
) -> Iterator[RunMonitor | None]:
    """A started :class:`~migperf.bench.monitor.RunMonitor`, or ``None`` when it cannot start.

    Telemetry never stops a run: a :class:`~migperf.errors.MigperfError`
    while resolving the targets or starting the monitor goes to
    ``on_unavailable`` (its message) and the block runs with ``None``. The
    monitor is stopped when the block ends.

    Args:
        nvml: Open NVML, real or simulated.
        targets: The devices to sample; ``None`` entries are left out. A
            generator is consumed inside the guard, so its resolution errors
            count as telemetry being unavailable.
        interval_s: NVML sampling interval.
        dcgm_url: Also scrape this dcgm-exporter.
        keep_series: Store the readings around each window with its result.
        all_slices: Read every MIG device on the sampled GPUs.
        on_unavailable: Told why there is no monitor.
        on_warning: Told each warning of the started monitor.
    """
    from migperf.bench.monitor import RunMonitor

    try:
        monitor = RunMonitor(
            nvml,
            [t for t in targets if t is not None],
            interval_s=interval_s,
            dcgm_url=dcgm_url,
            keep_series=keep_series,
            all_slices=all_slices,
        )
        monitor.start()
    except MigperfError as exc:
        on_unavailable(exc.message)
        yield None
        return
    for warning in monitor.warnings:
        on_warning(warning)
    try:
        yield monitor
    finally:
        monitor.stop()
