"""The experiment runner: layouts x jobs, every result stored, the GPU given back.

:func:`~migperf.experiments.planning.plan_experiment` validates a config
against the GPUs before anything changes. :class:`ExperimentRunner` then, layout by layout, applies
the layout through the transactional partition manager, runs each planned run
on its MIG device, and stores each result as soon as it finishes. With
``workers: warm`` (the default) one worker per device serves its consecutive
runs and builds each model once (:class:`~migperf.bench.warm.WarmPool`); every
worker is retired before a layout changes or is restored. ``workers: fresh``
starts one process per run. Each stored result says which (``params.worker``). The plan's GPUs are leased for the whole run
(:func:`migperf.mig.apply.hold_gpus`), so no other migperf command changes
them meanwhile. Whatever happens (a crash, Ctrl-C, SIGTERM, SIGHUP) the
original layouts are restored at the end, and a second signal does not cut
the restore short; a SIGKILL leaves the layouts found recorded per GPU, and
the next migperf command that leases one of those GPUs puts them back, whatever
config it runs. ``--resume`` then runs only what is missing.

Read-only mode is enforced here too, not only by the CLI: planning a run
that changes layouts, or running such a plan, raises
:class:`~migperf.errors.ReadOnlyError` before anything changes.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.errors import MigperfError
from migperf.experiments.estimates import RunTimes
from migperf.experiments.events import Event
from migperf.experiments.planning import ExperimentPlan, changes_layouts, refuse_read_only
from migperf.experiments.records import (
    AttemptPlan,
    RecordContext,
    failure_records,
    measuring_seconds,
    plan_attempts,
    run_record,
)
from migperf.experiments.sweep import CURRENT, DISABLED, Member, RunPlan, Slot
from migperf.mig.apply import converge
from migperf.mig.hold import GpuHold, hold_gpus
from migperf.mig.snapshot import MigSnapshot, take_snapshot
from migperf.nvml.facade import Nvml
from migperf.procs import signals_deferred, signals_interrupt
from migperf.results.store import RecordSink, RunRecord

if TYPE_CHECKING:
    from migperf.bench.launch import LaunchJob
    from migperf.bench.monitor import RunMonitor
    from migperf.bench.warm import WarmPool
    from migperf.telemetry.target import TelemetryTarget


@dataclass
class ExperimentReport:
    """What a run of an experiment did."""

    planned: int
    stored: int = 0
    skipped_existing: int = 0
    failed: int = 0
    interrupted: bool = False
    signal: int | None = None  # what interrupted it (SIGINT, SIGTERM, SIGHUP)
    restored: bool = False
    wall_s: float = 0.0
    time_s: dict[str, float] = field(
        default_factory=lambda: {
            "plan": 0.0,
            "partition": 0.0,
            "workers": 0.0,
            "measure": 0.0,
            "store": 0.0,
        }
    )


@dataclass
class _Job:
    """One member of a run, ready to launch."""

    member: Member
    launch: LaunchJob

    @property
    def device(self) -> str:
        return self.launch.device or ""


class ExperimentRunner:
    """Runs an :class:`ExperimentPlan` and stores every result.

    Args:
        nvml: Open NVML (read-only mode allows only ``current`` layouts).
        plan: From :func:`plan_experiment`.
        store: Where results go (a :class:`~migperf.results.store.ResultsStore`,
            or any :class:`~migperf.results.store.RecordSink`).
        resume: Skip runs whose latest stored attempt is done (ok, oom,
            skipped); retry the others as new attempts.
        rerun: Measure every run again, as new attempts next to the old ones.
            Without either, a store that already holds runs of this config
            is refused before anything runs.
        on_event: Called as ``on_event(kind, **info)`` for progress display.
        root: migperf state directory (tests).

    Raises:
        ReadOnlyError: read-only mode is on and the plan changes layouts.
    """

    def __init__(
        self,
        nvml: Nvml,
        plan: ExperimentPlan,
        store: RecordSink,
        *,
        resume: bool = False,
        rerun: bool = False,
        on_event: Event | None = None,
        root: Path | None = None,
    ) -> None:
        if nvml.read_only:
            refuse_read_only(plan.config, f"experiment {plan.config.name!r}")
        self.nvml = nvml
        self.plan = plan
        self.cfg = plan.config
        self.store = store
        self.resume = resume
        self.rerun = rerun
        self.emit = on_event or (lambda kind, **info: None)
        self.root = root
        self.chash = self.cfg.config_hash()
        self.records = RecordContext.of(nvml, self.cfg.name, self.chash, plan.gpus)
        self.report = ExperimentReport(planned=len(plan.runs))
        self.attempts = AttemptPlan(frozenset(), {})
        self.run_times = RunTimes.load(root)
        self._changed: set[int] = set()
        self._pool: WarmPool | None = None

    # -------------------------------------------------------------- runs

    def run(self) -> ExperimentReport:
        """Execute every planned run; always restore the original layouts when asked to.

        The plan's GPUs are leased for the whole run (another migperf command
        that would change them is refused), a dead holder's layouts are put
        back first, and the layouts found are recorded until they are
        restored, so a SIGKILL leaves them for the next command to put back.

        Returns:
            The report (``interrupted`` when stopped by Ctrl-C, SIGTERM or
            SIGHUP; the results so far are stored either way).

        Raises:
            LockHeldError: another process leases one of the plan's GPUs (nothing ran).
            UsageError: the store already holds runs of this config and
                neither ``resume`` nor ``rerun`` says what to do with them.
        """
        t0 = time.monotonic()
        self.attempts = plan_attempts(
            self.store.latest_attempts(self.chash),
            experiment=self.cfg.name,
            config_hash=self.chash,
            resume=self.resume,
            rerun=self.rerun,
        )
        done = set(self.attempts.done)
        todo = [r for r in self.plan.runs if any(r.member_key(m) not in done for m in r.members)]
        self.emit("started", runs=len(todo), stored=len(self.plan.runs) - len(todo))
        self._start_pool()
        with hold_gpus(
            self.nvml,
            self.plan.gpus,
            command=f"migperf run {self.cfg.name}",
            experiment=self.cfg.name,
            root=self.root,
            on_recover=lambda gpu, layout, command: self.emit(
                "recovered", gpu=gpu, layout=layout.describe(), command=command
            ),
        ) as hold:
            originals: dict[int, MigSnapshot | None] = {}
            for gpu in self.plan.gpus:
                info = self.nvml.gpu(gpu)
                mig_on = bool(info.mig_mode and info.mig_mode.current)
                originals[gpu] = take_snapshot(self.nvml, gpu) if mig_on else None
            if changes_layouts(self.cfg):
                hold.keep_originals({g: s for g, s in originals.items() if s is not None})
            stopped_by: list[int] = []
            try:
                with signals_interrupt(stopped_by):
                    for position, li in enumerate(self._layout_order(originals)):
                        self._run_layout(li, originals, done, position)
            except KeyboardInterrupt:
                self.report.interrupted = True
                self.report.signal = stopped_by[0] if stopped_by else signal.SIGINT
                self.emit("interrupted")
            finally:
                # No worker may hold a device while the layouts are put back.
                self._close_pool()
                if self.cfg.restore:
                    self._restore(originals, hold)
                else:
                    # The last layout stays, as asked: nothing is to be put back later.
                    for gpu in self.plan.gpus:
                        hold.forget_original(gpu)
                self.report.wall_s = time.monotonic() - t0
                self.run_times.save()
        return self.report

    def _restore(self, originals: dict[int, MigSnapshot | None], hold: GpuHold) -> None:
        """Put every changed GPU back; a signal meanwhile is noted, not obeyed, until done."""
        t = time.monotonic()
        ok = True

        def on_signal(signum: int) -> None:
            self.report.interrupted = True
            self.report.signal = self.report.signal or signum
            self.emit("restoring", gpus=sorted(self._changed))

        with signals_deferred(on_signal, redeliver=False):
            for gpu in sorted(self._changed):
                original = originals.get(gpu)
                if original is None:
                    continue
                try:
                    converge(
                        self.nvml,
                        gpu,
                        original,
                        root=self.root,
                        command=f"migperf run {self.cfg.name} (restore)",
                        change_mode=True,
                    )
                except MigperfError as exc:
                    ok = False
                    self.emit("restore_failed", gpu=gpu, error=exc.message)
                    continue
                hold.forget_original(gpu)
        if ok:
            for gpu in self.plan.gpus:
                hold.forget_original(gpu)
        self.report.restored = ok
        self.report.time_s["partition"] += time.monotonic() - t
        self.emit("restored", ok=ok, gpus=sorted(self._changed))

    def _layout_order(self, originals: dict[int, MigSnapshot | None]) -> list[int]:
        """The layouts in config order, but the MIG-off one where it costs the fewest mode changes.

        A MIG-enabled GPU measures every partitioned layout first and leaves
        MIG only once, at the end (the restore enables it again); a GPU that
        starts without MIG measures ``disabled`` first.
        """
        layouts = [layout.strip().lower() for layout in self.cfg.layouts]
        starts_on = any(snap is not None for snap in originals.values())
        return sorted(range(len(layouts)), key=lambda li: (layouts[li] == DISABLED) == starts_on)

    def _run_layout(
        self, li: int, originals: dict[int, MigSnapshot | None], done: set[str], position: int
    ) -> None:
        runs = [r for r in self.plan.runs if r.layout_index == li]
        # A co-located run is stored per member: it is done when every member is.
        todo = [r for r in runs if any(r.member_key(m) not in done for m in r.members)]
        self.report.skipped_existing += len(runs) - len(todo)
        layout = self.cfg.layouts[li]
        self.emit(
            "layout", index=position, total=len(self.cfg.layouts), layout=layout, runs=len(todo)
        )
        if not todo:
            return
        failed_gpus: dict[int, str] = {}
        t = time.monotonic()
        # A live worker's CUDA context would block destroying its MIG instance.
        self._release_workers()
        for gpu in self.plan.gpus:
            target = self.plan.targets.get((li, gpu))
            if layout.strip().lower() == CURRENT:
                if gpu not in self._changed:
                    # Measured as found: nothing to apply (and nothing that
                    # read-only mode would have to refuse).
                    continue
                target = originals.get(gpu)
            if target is None:
                continue
            try:
                self._changed.add(gpu)
                converge(
                    self.nvml,
                    gpu,
                    target,
                    root=self.root,
                    command=f"migperf run {self.cfg.name}",
                    change_mode=True,
                )
            except MigperfError as exc:
                hint = f" (what to do: {exc.hint})" if exc.hint else ""
                failed_gpus[gpu] = f"applying layout {layout!r} failed: {exc.message}{hint}"
                self.emit("layout_failed", gpu=gpu, error=exc.message)
        self.report.time_s["partition"] += time.monotonic() - t
        devices = {gpu: self._devices(gpu) for gpu in self.plan.gpus if gpu not in failed_gpus}
        try:
            with self._monitor(devices) as monitor:
                self._run_all(todo, devices, failed_gpus, monitor)
        finally:
            self._release_workers()

    def _warm_pool(self) -> WarmPool | None:
        """The warm workers (``workers: warm``), started on first use."""
        if self.cfg.workers != "warm":
            return None
        if self._pool is None:
            from migperf.bench.warm import WarmPool

            self._pool = WarmPool([j.workload for j in (*self.cfg.jobs, *self.cfg.neighbors)])
        return self._pool

    def _start_pool(self) -> None:
        """Start the warm workers' zygote now: its imports overlap leasing and partitioning."""
        pool = self._warm_pool()
        if pool is None or not self.plan.gpus:
            return
        from migperf.bench.device import resolve_device

        # A worker's environment apart from what is bound per device (see bench.zygote).
        env = resolve_device(str(self.plan.gpus[0]), simulated=self.nvml.simulated).env()
        if self.nvml.simulated:
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench.launch sets for emulation
        pool.prepare(env)

    def _release_workers(self) -> None:
        if self._pool is not None:
            self._pool.release_devices()

    def _close_pool(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    @contextmanager
    def _monitor(
        self, devices: dict[int, dict[tuple[int, int], str]]
    ) -> Iterator[RunMonitor | None]:
        """A started telemetry monitor for the layout's devices, or None.

        Telemetry never stops an experiment: when it cannot start, an event
        says why and the runs go on without it.
        """
        tel = self.cfg.telemetry
        if not tel.enabled or not devices:
            yield None
            return
        from migperf.bench.launch import optional_monitor
        from migperf.telemetry.target import resolve_target

        def targets() -> Iterator[TelemetryTarget | None]:
            for gpu, devs in devices.items():
                yield resolve_target(self.nvml, str(gpu))
                yield from (resolve_target(self.nvml, uuid) for uuid in devs.values())

        with optional_monitor(
            self.nvml,
            targets(),
            interval_s=tel.interval_ms / 1000.0,
            dcgm_url=tel.dcgm_url,
            keep_series=False,
            all_slices=True,
            on_unavailable=lambda why: self.emit("telemetry_off", error=why),
            on_warning=lambda warning: self.emit("telemetry_warning", warning=warning),
        ) as monitor:
            yield monitor

    def _run_all(
        self,
        todo: list[RunPlan],
        devices: dict[int, dict[tuple[int, int], str]],
        failed_gpus: dict[int, str],
        monitor: RunMonitor | None,
    ) -> None:
        oom_at: dict[tuple[Any, ...], int] = {}
        for run in todo:
            if run.gpu_index in failed_gpus:
                self._store_failure(run, "layout_failed", failed_gpus[run.gpu_index])
                continue
            series = (
                run.gpu_index,
                run.job_index,
                run.seq_len,
                json.dumps(run.model_args, sort_keys=True),
                tuple(m.name for m in run.members),
                json.dumps(run.scenario, sort_keys=True),
                run.repeat,
            )
            if series in oom_at and run.batch_size > oom_at[series]:
                self._store_failure(
                    run, "skipped", f"batch size {oom_at[series]} already ran out of memory"
                )
                continue
            statuses = self._execute(run, devices[run.gpu_index], monitor)
            if "oom" in statuses:
                oom_at[series] = min(oom_at.get(series, run.batch_size), run.batch_size)

    def _devices(self, gpu: int) -> dict[tuple[int, int], str]:
        """(GI start, CI start) -> MIG device UUID for the GPU as it is now."""
        out = {}
        for gi in self.nvml.gpu_instances(gpu):
            for ci in gi.compute_instances:
                if gi.placement is not None and ci.placement is not None:
                    out[(gi.placement.start, ci.placement.start)] = ci.mig_uuid
        return out

    def _device_for(self, slot: Slot, gpu: int, devices: dict[tuple[int, int], str]) -> str:
        if slot.profile is None:
            return str(gpu)
        uuid = devices.get((slot.gi_start or 0, slot.ci_start or 0))
        if not uuid:
            raise MigperfError(f"slot {slot.name} has no MIG device on GPU {gpu}")
        # A GPU reset wipes every GPU and compute instance (MIG user guide): a run
        # must not be stored "ok" on a MIG device that no longer exists.
        if uuid not in {d.mig_uuid for d in self.nvml.mig_devices(gpu)}:
            raise MigperfError(
                f"MIG device {uuid} of slot {slot.name} no longer exists on GPU {gpu}: "
                "the layout vanished (GPU reset?)"
            )
        return uuid

    def _spec(self, run: RunPlan, member: Member, device: str, simulated: bool, kind: str) -> Any:
        from migperf.bench.spec import parse_spec

        stop = self.cfg.stop
        job = member.job or run.job
        if member.role == "neighbor":
            # A neighbor keeps loading its slot for as long as a measured job can run.
            bs, seq, margs = job.batch_size, job.seq_len, dict(job.model_args)
            scenario = (
                job.scenario.model_dump(mode="json", exclude_defaults=True)
                | {"name": job.scenario.name}
                if job.scenario is not None
                else None
            )
            min_s, max_s = stop.max_duration_s, stop.max_duration_s * 1.5 + 1.0
        else:
            bs, seq, margs, scenario = run.batch_size, run.seq_len, run.model_args, run.scenario
            min_s, max_s = stop.min_duration_s, stop.max_duration_s
        return parse_spec(
            {
                "workload": job.workload,
                "task": job.task,
                "batch_size": bs,
                "seq_len": seq,
                "precision": job.precision,
                "compile": job.compile,
                "model_args": margs,
                "warmup_iterations": stop.warmup_iterations,
                "min_iterations": stop.min_iterations,
                "min_duration_s": min_s,
                "max_duration_s": max_s,
                "seed": run.repeat + (member.client or 0),
                "repeat_index": run.repeat,
                "expect_device": kind,
                "device_label": device,
                "simulated": simulated,
                "scenario": scenario,
                "inject_crash": job.inject == "crash",
                "inject_hang": job.inject == "hang",
                "inject_oom": job.inject == "oom",
            }
        )

    def _execute(
        self, run: RunPlan, devices: dict[tuple[int, int], str], monitor: RunMonitor | None
    ) -> list[str]:
        from migperf.bench.device import resolve_device
        from migperf.bench.launch import LaunchJob

        self.emit("run_start", run=run)
        jobs: list[_Job] = []
        for member in run.members:
            try:
                device = self._device_for(member.slot, run.gpu_index, devices)
            except MigperfError as exc:
                self._store_failure(run, "failed", exc.message)
                return ["failed"]
            sel = resolve_device(device, simulated=self.nvml.simulated)
            spec = self._spec(run, member, device, sel.simulated, sel.kind)
            jobs.append(_Job(member, LaunchJob(spec, dict(sel.env()), device)))
        started = time.time()
        t = time.monotonic()
        try:
            with self._sharing(run, jobs) as info:
                results, workers = self._launch(run, jobs, monitor)
        except MigperfError as exc:
            self._store_failure(run, "failed", exc.message)
            return ["failed"]
        elapsed = time.monotonic() - t
        measured = [measuring_seconds(r) for r in results if r.timing]
        window = max(measured) if measured else 0.0
        self.report.time_s["measure"] += window
        self.report.time_s["workers"] += max(0.0, elapsed - window)
        self.run_times.observe(
            run.job.workload,
            run.job.task,
            self.nvml.simulated,
            overhead_s=max(0.0, elapsed - window),
            window_s=window,
        )
        statuses: list[str] = []
        for job, result, use in zip(jobs, results, workers, strict=True):
            rec = run_record(
                self.records,
                run,
                job.member,
                job.launch.spec,
                job.device,
                result,
                started=started,
                sharing_info=info,
                worker=use.to_dict() if use is not None else None,
            )
            self._store(rec, job.member.role, result.status)
            if job.member.role == "job":
                statuses.append(result.status)
        self.emit("run_done", run=run, results=results)
        return statuses

    def _launch(
        self, run: RunPlan, jobs: list[_Job], monitor: RunMonitor | None
    ) -> tuple[list[Any], list[Any]]:
        """Run the workers of one run (released together when there are several).

        Returns:
            The results, and how each worker ran, in job order.
        """
        from migperf.bench.launch import launch

        timeout = self.cfg.timeout_s
        if any(j.member.role == "neighbor" for j in jobs):
            timeout += self.cfg.stop.max_duration_s * 1.5 + 1.0

        def phase(index: int, event: dict[str, Any]) -> None:
            if event.get("event") == "phase":
                info = {k: v for k, v in event.items() if k not in ("event", "unix_s")}
                self.emit("run_phase", run=run, **info)

        outcome = launch(
            [j.launch for j in jobs],
            simulated=self.nvml.simulated,
            timeout_s=timeout,
            monitor=monitor,
            nvml=self.nvml,
            pool=self._warm_pool(),
            on_event=phase,
        )
        return outcome.results, outcome.workers or [None] * len(jobs)

    @contextmanager
    def _sharing(self, run: RunPlan, jobs: list[_Job]) -> Iterator[dict[str, Any]]:
        """Set up how the run's workers share their devices (MPS daemons, compute mode).

        Yields what was set up, for the stored results.
        """
        info: dict[str, Any] = {}
        if run.sharing == "timeslice":
            from migperf.sharing.timeslice import check_timeslicing

            devices = sorted({j.device for j in jobs})
            info["compute_mode"] = check_timeslicing(self.nvml, run.gpu_index, devices)
        if run.sharing != "mps":
            yield info
            return
        from migperf.sharing.mps import MpsClient, mps_for_run

        clients = [
            MpsClient(
                device=j.device,
                env=j.launch.env,  # rewritten in place to the client's MPS environment
                thread_percentage=j.member.thread_percentage,
                pinned_mem_limit_mib=j.member.pinned_mem_limit_mib,
            )
            for j in jobs
            if j.member.client is not None
        ]
        with mps_for_run(self.nvml, clients, run_key=run.run_key, root=self.root) as mps_info:
            info["mps"] = mps_info
            yield info

    # -------------------------------------------------------------- store

    def _store(self, rec: RunRecord, role: str, status: str) -> None:
        t = time.monotonic()
        rec = replace(rec, attempt=self.attempts.attempt(rec.run_key))
        # The report counts measured jobs; neighbors are stored but not counted.
        if self.store.record(rec) is not None and role == "job":
            if status == "ok":
                self.report.stored += 1
            else:
                self.report.failed += 1
        self.report.time_s["store"] += time.monotonic() - t

    def _store_failure(self, run: RunPlan, status: str, error: str) -> None:
        for member, rec in zip(
            run.members, failure_records(self.records, run, status, error), strict=True
        ):
            self._store(rec, member.role, status)
        self.emit("run_done", run=run, results=[], status=status, error=error)
