"""The experiment runner: layouts x jobs, every result stored, the GPU given back.

:func:`plan_experiment` validates a config against the GPUs (every layout
resolved and solved on every GPU; all problems reported at once) before
anything changes. :class:`ExperimentRunner` then, layout by layout, applies
the layout through the transactional partition manager, runs each planned run
in its own worker process on its MIG device, and stores each result as soon as
it finishes. Whatever happens (a crash, Ctrl-C, SIGTERM) the original layouts
are restored at the end; a SIGKILL leaves the experiment journal, and the next
``migperf run`` of the same config restores from it and, with ``--resume``,
runs only what is missing.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migperf.errors import ConfigError, MigperfError
from migperf.experiments.config import ExperimentConfig
from migperf.experiments.plan import CURRENT, Member, RunPlan, Slot, expand
from migperf.mig.apply import converge
from migperf.mig.manager import target_for_layout
from migperf.mig.snapshot import MigSnapshot, take_snapshot
from migperf.nvml.facade import Nvml
from migperf.paths import state_dir
from migperf.results.store import ResultsStore, RunRecord

Event = Callable[..., None]


@dataclass
class ExperimentPlan:
    """A validated config bound to this machine's GPUs."""

    config: ExperimentConfig
    gpus: list[int]
    targets: dict[tuple[int, int], MigSnapshot | None]
    runs: list[RunPlan]

    def estimated_duration_s(self) -> float:
        """A rough estimate: per run its minimum duration plus warmup and process start."""
        stop = self.config.stop
        per_run = stop.min_duration_s + 6.0
        partitions = len(self.config.layouts) * len(self.gpus) * 2.0
        return len(self.runs) * per_run + partitions


@dataclass
class ExperimentReport:
    """What a run of an experiment did."""

    planned: int
    stored: int = 0
    skipped_existing: int = 0
    failed: int = 0
    interrupted: bool = False
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


def _gpus(nvml: Nvml, cfg: ExperimentConfig) -> list[int]:
    count = nvml.gpu_count()
    if cfg.gpus == "all":
        return list(range(count))
    missing = [g for g in cfg.gpus if g >= count]
    if missing:
        raise ConfigError(
            f"gpus: GPU {', '.join(map(str, missing))} does not exist; this machine has {count} GPU(s)",
            hint="list them with `migperf gpus`",
        )
    return list(cfg.gpus)


def plan_experiment(nvml: Nvml, cfg: ExperimentConfig, source: str = "config") -> ExperimentPlan:
    """Bind a config to this machine and expand it into runs, changing nothing.

    Raises:
        ConfigError: a GPU does not exist, or layouts do not fit (every problem listed).
    """
    gpus = _gpus(nvml, cfg)
    targets: dict[tuple[int, int], MigSnapshot | None] = {}
    problems: list[str] = []
    for gpu in gpus:
        info = nvml.gpu(gpu)
        mig_on = bool(info.mig_mode and info.mig_mode.current)
        current = take_snapshot(nvml, gpu) if mig_on else None
        for li, layout in enumerate(cfg.layouts):
            if layout.strip().lower() == CURRENT:
                targets[(li, gpu)] = current
                continue
            if not mig_on:
                problems.append(
                    f"layouts[{li}] {layout!r}: MIG mode is {'not supported' if info.mig_mode is None else 'disabled'} "
                    f"on GPU {gpu} ({info.name})"
                )
                continue
            try:
                targets[(li, gpu)] = target_for_layout(nvml, gpu, layout)
            except MigperfError as exc:
                problems.append(
                    f"layouts[{li}] {layout!r} on GPU {gpu} ({info.name}): {exc.message}"
                )
    if problems:
        head = (
            f"{len(problems)} problem(s) in {source}:\n  " if len(problems) > 1 else f"{source}: "
        )
        raise ConfigError(
            head + "\n  ".join(problems),
            hint="fix the layouts (check them with `migperf mig check LAYOUT --gpu N`), or enable MIG "
            "with `migperf mig enable`; `current` uses the GPU as it is",
        )
    runs = expand(cfg, targets)
    if not runs:
        raise ConfigError(
            f"{source}: the experiment plans no runs: its layouts leave no slot matching "
            f"instances: {cfg.instances!r} (a `current` layout of a MIG-enabled GPU without instances has none)",
            hint="create instances first (`migperf mig apply`), disable MIG to measure the whole GPU, "
            "or list layouts to sweep",
        )
    return ExperimentPlan(cfg, gpus, targets, runs)


class _Interrupted(Exception):
    pass


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: the current run is aborted, the GPU restored."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _journal_path(nvml: Nvml, config_hash: str, root: Path | None) -> Path:
    base = (
        (root or state_dir()) / "experiments" / (f"sim-{nvml.machine}" if nvml.machine else "real")
    )
    return base / f"{config_hash}.json"


class ExperimentRunner:
    """Runs an :class:`ExperimentPlan` and stores every result.

    Args:
        nvml: Open NVML (read-only mode allows only ``current`` layouts).
        plan: From :func:`plan_experiment`.
        store: Where results go.
        resume: Skip runs already stored for the same config hash.
        on_event: Called as ``on_event(kind, **info)`` for progress display.
        root: migperf state directory (tests).
        python: Interpreter for workers (tests).
    """

    def __init__(
        self,
        nvml: Nvml,
        plan: ExperimentPlan,
        store: ResultsStore,
        *,
        resume: bool = False,
        on_event: Event | None = None,
        root: Path | None = None,
    ) -> None:
        self.nvml = nvml
        self.plan = plan
        self.cfg = plan.config
        self.store = store
        self.resume = resume
        self.emit = on_event or (lambda kind, **info: None)
        self.root = root
        self.chash = self.cfg.config_hash()
        self.report = ExperimentReport(planned=len(plan.runs))
        self._changed: set[int] = set()

    # ------------------------------------------------------------ journal

    def _originals(self) -> dict[int, MigSnapshot | None]:
        """The layouts to give back: from a killed run's journal, else as found now."""
        path = _journal_path(self.nvml, self.chash, self.root)
        if path.exists():
            data = json.loads(path.read_text())
            self.emit("recovered", path=str(path))
            recovered = {
                int(k): MigSnapshot.from_dict(v) if v else None
                for k, v in data["originals"].items()
            }
            # A killed run may have left any of these GPUs partitioned, even
            # when no run is left to do: restore them all at the end.
            self._changed.update(g for g, snap in recovered.items() if snap is not None)
            return recovered
        originals: dict[int, MigSnapshot | None] = {}
        for gpu in self.plan.gpus:
            info = self.nvml.gpu(gpu)
            originals[gpu] = (
                take_snapshot(self.nvml, gpu) if info.mig_mode and info.mig_mode.current else None
            )
        if any(li for li in self.cfg.layouts if li.strip().lower() != CURRENT):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "pid": os.getpid(),
                        "config": self.cfg.name,
                        "originals": {
                            str(g): (s.to_dict() if s else None) for g, s in originals.items()
                        },
                    }
                )
            )
            os.replace(tmp, path)
        return originals

    # -------------------------------------------------------------- runs

    def run(self) -> ExperimentReport:
        """Execute every planned run; always restore the original layouts when asked to.

        Returns:
            The report (``interrupted`` when stopped by Ctrl-C or SIGTERM; the
            results so far are stored either way).
        """
        t0 = time.monotonic()
        originals = self._originals()
        done = self.store.stored_keys(self.chash) if self.resume else set()
        try:
            with _signals_interrupt():
                for li in range(len(self.cfg.layouts)):
                    self._run_layout(li, originals, done)
        except KeyboardInterrupt:
            self.report.interrupted = True
            self.emit("interrupted")
        finally:
            if self.cfg.restore:
                self._restore(originals)
            self.report.wall_s = time.monotonic() - t0
        return self.report

    def _restore(self, originals: dict[int, MigSnapshot | None]) -> None:
        t = time.monotonic()
        ok = True
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
                )
            except MigperfError as exc:
                ok = False
                self.emit("restore_failed", gpu=gpu, error=exc.message)
        if ok:
            _journal_path(self.nvml, self.chash, self.root).unlink(missing_ok=True)
        self.report.restored = ok
        self.report.time_s["partition"] += time.monotonic() - t
        self.emit("restored", ok=ok, gpus=sorted(self._changed))

    def _run_layout(
        self, li: int, originals: dict[int, MigSnapshot | None], done: set[str]
    ) -> None:
        runs = [r for r in self.plan.runs if r.layout_index == li]
        # A co-located run is stored per member: it is done when every member is.
        todo = [r for r in runs if any(r.member_key(m) not in done for m in r.members)]
        self.report.skipped_existing += len(runs) - len(todo)
        layout = self.cfg.layouts[li]
        self.emit("layout", index=li, total=len(self.cfg.layouts), layout=layout, runs=len(todo))
        if not todo:
            return
        failed_gpus: dict[int, str] = {}
        t = time.monotonic()
        for gpu in self.plan.gpus:
            target = self.plan.targets.get((li, gpu))
            if layout.strip().lower() == CURRENT:
                target = originals.get(gpu)
            if target is None:
                continue
            try:
                self._changed.add(gpu)
                converge(
                    self.nvml, gpu, target, root=self.root, command=f"migperf run {self.cfg.name}"
                )
            except MigperfError as exc:
                failed_gpus[gpu] = f"applying layout {layout!r} failed: {exc.message}"
                self.emit("layout_failed", gpu=gpu, error=exc.message)
        self.report.time_s["partition"] += time.monotonic() - t
        devices = {gpu: self._devices(gpu) for gpu in self.plan.gpus if gpu not in failed_gpus}
        with self._monitor(devices) as monitor:
            self._run_all(todo, devices, failed_gpus, monitor)

    @contextmanager
    def _monitor(self, devices: dict[int, dict[tuple[int, int], str]]) -> Iterator[Any]:
        """A started telemetry monitor for the layout's devices, or None.

        Telemetry never stops an experiment: when it cannot start, an event
        says why and the runs go on without it.
        """
        tel = self.cfg.telemetry
        if not tel.enabled or not devices:
            yield None
            return
        from migperf.bench.monitor import RunMonitor
        from migperf.telemetry.target import resolve_target

        try:
            targets = []
            for gpu, devs in devices.items():
                targets.append(resolve_target(self.nvml, str(gpu)))
                targets.extend(resolve_target(self.nvml, uuid) for uuid in devs.values())
            monitor = RunMonitor(
                self.nvml,
                [t for t in targets if t is not None],
                interval_s=tel.interval_ms / 1000.0,
                dcgm_url=tel.dcgm_url,
                keep_series=False,
                all_slices=True,
            )
            monitor.start()
        except MigperfError as exc:
            self.emit("telemetry_off", error=exc.message)
            yield None
            return
        for w in monitor.warnings:
            self.emit("telemetry_warning", warning=w)
        try:
            yield monitor
        finally:
            monitor.stop()

    def _run_all(
        self,
        todo: list[RunPlan],
        devices: dict[int, dict[tuple[int, int], str]],
        failed_gpus: dict[int, str],
        monitor: Any,
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
        self, run: RunPlan, devices: dict[tuple[int, int], str], monitor: Any = None
    ) -> list[str]:
        from migperf.bench.device import resolve_device

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
            env = dict(sel.env())
            if sel.simulated and "OMP_NUM_THREADS" not in os.environ:
                # Simulated slices share this machine's CPU cores: split them, so
                # co-located CPU workers do not oversubscribe the cores.
                share = max(1, (os.cpu_count() or 1) // len(run.members))
                env["OMP_NUM_THREADS"] = str(share)
            jobs.append(_Job(member, device, spec, env))
        started = time.time()
        t = time.monotonic()
        try:
            with self._sharing(run, jobs) as info:
                results = self._launch(run, jobs, monitor)
        except MigperfError as exc:
            self._store_failure(run, "failed", exc.message)
            return ["failed"]
        elapsed = time.monotonic() - t
        measured = [r.timing.measured_duration_s or 0.0 for r in results if r.timing]
        window = max(measured) if measured else 0.0
        self.report.time_s["measure"] += window
        self.report.time_s["workers"] += max(0.0, elapsed - window)
        group_id = run.run_key if run.grouped else None
        statuses: list[str] = []
        for job, result in zip(jobs, results, strict=True):
            self._store(run, job, result, started, group_id, info)
            if job.member.role == "job":
                statuses.append(result.status)
        self.emit("run_done", run=run, results=results)
        return statuses

    def _launch(self, run: RunPlan, jobs: list[_Job], monitor: Any) -> list[Any]:
        """Run the workers of one run (released together when there are several)."""
        from migperf.bench.runner import WorkerGroup, WorkerProcess
        from migperf.telemetry.target import resolve_target

        timeout = self.cfg.timeout_s
        if any(j.member.role == "neighbor" for j in jobs):
            timeout += self.cfg.stop.max_duration_s * 1.5 + 1.0
        if monitor is not None:
            targets = []
            for j in jobs:
                target = resolve_target(self.nvml, j.device)
                if target is None:
                    monitor = None
                    break
                targets.append(target)
        if monitor is not None:
            if len(jobs) == 1:
                return [monitor.run_worker(jobs[0].spec, jobs[0].env, timeout, target=targets[0])]
            group = monitor.run_group(
                [(j.spec, j.env, t) for j, t in zip(jobs, targets, strict=True)],
                timeout_s=timeout,
            )
            return list(group.results)
        if len(jobs) == 1:
            worker = WorkerProcess(jobs[0].spec, jobs[0].env, timeout_s=timeout)
            worker.start()
            try:
                return [worker.wait()]
            except BaseException:
                worker.kill()
                raise
        wg = WorkerGroup([(j.spec, j.env) for j in jobs], timeout_s=timeout)
        wg.start()
        results, _ = wg.release_when_ready()
        return list(results)

    @contextmanager
    def _sharing(self, run: RunPlan, jobs: list[_Job]) -> Iterator[dict[str, Any]]:
        """Set up how the run's workers share their devices (MPS daemons, compute mode).

        Yields what was set up, for the stored results.
        """
        info: dict[str, Any] = {}
        if run.sharing == "timeslice":
            info["compute_mode"] = self._compute_modes(run, jobs)
        if run.sharing != "mps":
            yield info
            return
        from migperf.sharing.mps import mps_for_run

        with mps_for_run(self.nvml, run, jobs, root=self.root) as mps_info:
            info["mps"] = mps_info
            yield info

    def _compute_modes(self, run: RunPlan, jobs: list[_Job]) -> dict[str, str]:
        from migperf.sharing.timeslice import check_timeslicing

        return check_timeslicing(self.nvml, run.gpu_index, sorted({j.device for j in jobs}))

    # -------------------------------------------------------------- store

    def _base(
        self, run: RunPlan, key: str, slot: Slot | None, device: str | None, started: float | None
    ) -> dict[str, Any]:
        info = self.nvml.gpu(run.gpu_index)
        return {
            "run_key": key,
            "experiment": self.cfg.name,
            "config_hash": self.chash,
            "started_unix": started,
            "gpu_index": run.gpu_index,
            "gpu_name": info.name,
            "gpu_uuid": info.uuid,
            "driver_version": self.nvml.driver_version(),
            "layout": run.layout,
            "profile": (slot.name.split("#")[0] if slot and slot.profile else None),
            "mig_uuid": device if device and device.startswith("MIG-") else None,
            "device": device,
            "simulated": self.nvml.simulated,
            "workload": run.job.workload,
            "task": run.job.task,
            "precision": run.job.precision,
            "batch_size": run.batch_size,
            "seq_len": run.seq_len,
            "repeat": run.repeat,
        }

    def _store_failure(self, run: RunPlan, status: str, error: str) -> None:
        t = time.monotonic()
        for member in run.members:
            rec = RunRecord(
                **self._base(run, run.member_key(member), member.slot, None, None),
                status=status,
                error=error,
                params={
                    "model_args": run.model_args,
                    "slots": [m.slot.name for m in run.members],
                    "slot": member.name,
                    "group_id": run.run_key if run.grouped else None,
                    "group_size": len(run.members),
                    "sharing": run.sharing,
                    "role": "neighbor" if member.role == "neighbor" else run.role,
                },
            )
            if self.store.record(rec) is not None and member.role == "job":
                self.report.failed += 1
        self.report.time_s["store"] += time.monotonic() - t
        self.emit("run_done", run=run, results=[], status=status, error=error)

    def _store(
        self,
        run: RunPlan,
        job: _Job,
        result: Any,
        started: float,
        group_id: str | None,
        info: dict[str, Any],
    ) -> None:
        t = time.monotonic()
        member = job.member
        data = result.to_dict()
        timing = result.timing
        params: dict[str, Any] = {
            "model_args": dict(job.spec.model_args),
            "slots": [m.slot.name for m in run.members],
            "slot": member.name,
            "group_id": group_id,
            "group_size": len(run.members),
            "sharing": run.sharing,
            "role": "neighbor" if member.role == "neighbor" else run.role,
            "window_start_unix": timing.window_start_unix_s if timing else None,
            "window_end_unix": timing.window_end_unix_s if timing else None,
        }
        if member.role == "neighbor":
            params["neighbor_index"] = member.neighbor_index
        if run.sharing in ("mps", "timeslice"):
            params["client"] = member.client
        if run.sharing == "mps":
            params["mps"] = {
                "thread_percentage": member.thread_percentage,
                "pinned_mem_limit_mib": member.pinned_mem_limit_mib,
                **{
                    k: v
                    for k, v in (info.get("mps") or {}).get(job.device, {}).items()
                    if k != "commands"  # the control log stays in the MPS log directory
                },
            }
        if "compute_mode" in info:
            params["compute_mode"] = info["compute_mode"].get(job.device)
        scenario = job.spec.scenario
        if scenario is not None:
            params["scenario"] = {
                **scenario.model_dump(mode="json", exclude_defaults=True),
                "name": scenario.name,
                "latency_target_ms": scenario.effective_latency_target_ms,
                "latency_percentile": scenario.effective_percentile,
            }
        spec = job.spec
        rec = RunRecord(
            **self._base(run, run.member_key(member), member.slot, job.device, started),
            status=result.status,
            error=result.error.message if result.error else None,
            device_kind=result.device_kind,
            params=params,
            environment=data.get("environment") or {},
            result=data,
            metrics=metrics_of(result),
            samples=_samples_of(result),
            telemetry=data.get("telemetry"),
        )
        if member.role == "neighbor":
            rec = replace(
                rec,
                workload=spec.workload,
                task=spec.task,
                precision=spec.precision,
                batch_size=spec.batch_size,
                seq_len=spec.seq_len,
            )
        # The report counts measured jobs; neighbors are stored but not counted.
        if self.store.record(rec) is not None and member.role == "job":
            if result.status == "ok":
                self.report.stored += 1
            else:
                self.report.failed += 1
        self.report.time_s["store"] += time.monotonic() - t


@dataclass
class _Job:
    """One member of a run, ready to launch."""

    member: Member
    device: str
    spec: Any
    env: dict[str, str]


def _samples_of(result: Any) -> dict[str, list[float]] | None:
    if result.latency_samples_ms:
        return {"latency_ms": list(result.latency_samples_ms)}
    return None


def metrics_of(result: Any) -> dict[str, tuple[float | None, str]]:
    """The headline numbers of a worker result, with units."""
    out: dict[str, tuple[float | None, str]] = {}
    tp = result.throughput
    if tp is not None:
        for name, unit in (
            ("samples_per_s", "1/s"),
            ("tokens_per_s", "1/s"),
            ("tflop_per_s", "TFLOP/s"),
            ("gb_per_s", "GB/s"),
        ):
            value = getattr(tp, name, None)
            if value is not None:
                out[name] = (float(value), unit)
    lat = result.latency_ms
    if lat is not None:
        out["latency_mean_ms"] = (lat.mean, "ms")
        out["latency_std_ms"] = (lat.std, "ms")
        out["latency_mean_ci_low_ms"] = (lat.mean_ci_low, "ms")
        out["latency_mean_ci_high_ms"] = (lat.mean_ci_high, "ms")
        for q, p in (lat.percentiles or {}).items():
            out[f"latency_{q}_ms"] = (p.value, "ms")
    for name in ("peak_memory_mib", "peak_reserved_mib", "host_peak_rss_mib"):
        value = getattr(result, name, None)
        if value is not None:
            out[name] = (float(value), "MiB")
    if result.timing is not None:
        out["iterations"] = (float(result.timing.iterations), "count")
        if result.timing.measured_duration_s is not None:
            out["measured_duration_s"] = (float(result.timing.measured_duration_s), "s")
    scenario = getattr(result, "scenario", None)
    if scenario is not None:
        out.update(_scenario_metrics(scenario))
    telemetry = getattr(result, "telemetry", None)
    summary = getattr(telemetry, "summary", None) if telemetry is not None else None
    if summary is not None:
        out.update(telemetry_metrics(summary))
    return out


def _scenario_metrics(sc: Any) -> dict[str, tuple[float | None, str]]:
    """Per-sample latency, completed rate, verdict and capacity of a scenario run."""
    out: dict[str, tuple[float | None, str]] = {}
    if sc.completed_qps is not None:
        spq = sc.samples_per_query or 1
        per_sample = sc.completed_qps * (spq if sc.scenario == "multi-stream" else 1)
        out["samples_per_s"] = (float(per_sample), "1/s")
    lat = sc.latency_ms
    for name in ("mean", "p50", "p90", "p95", "p99", "p99_9"):
        value = getattr(lat, name, None)
        if value is not None:
            out[f"latency_{name}_ms"] = (float(value), "ms")
    if sc.target_qps is not None:
        out["target_qps"] = (float(sc.target_qps), "1/s")
    if sc.valid is not None:
        out["scenario_valid"] = (1.0 if sc.valid else 0.0, "bool")
    if sc.slo_met is not None:
        out["slo_met"] = (1.0 if sc.slo_met else 0.0, "bool")
    if sc.latency_target_ms is not None:
        out["slo_latency_ms"] = (float(sc.latency_target_ms), "ms")
    if sc.latency_percentile is not None:
        out["slo_percentile"] = (float(sc.latency_percentile), "%")
    if sc.max_qps is not None:
        mq = sc.max_qps
        value = mq.max_qps_under_slo
        out["max_qps_under_slo"] = (float(value) if value is not None else None, "1/s")
        out["slo_latency_ms"] = (float(mq.slo_latency_ms), "ms")
        out["slo_percentile"] = (float(mq.slo_percentile), "%")
    return out


def telemetry_metrics(summary: Any) -> dict[str, tuple[float | None, str]]:
    """The stored telemetry numbers of one run's window (see docs/results-schema.md)."""
    out: dict[str, tuple[float | None, str]] = {}

    def put(name: str, value: Any, unit: str) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = (float(value), unit)

    gpu = summary.gpu
    if gpu is not None:
        put("power_mean_w", gpu.power_mean_w, "W")
        put("power_max_w", gpu.power_max_w, "W")
        put("energy_j", gpu.energy_j, "J")
        put("temperature_max_c", gpu.temperature_max_c, "C")
        put("sm_clock_mean_mhz", gpu.sm_clock_mean_mhz, "MHz")
        put("gpu_util_mean_pct", gpu.gpu_util_mean_pct, "%")
        put("gpu_memory_used_max_mib", gpu.memory_used_max_mib, "MiB")
    if summary.instance is not None:
        put("instance_memory_used_max_mib", summary.instance.memory_used_max_mib, "MiB")
    put("energy_per_sample_j", summary.energy_per_sample_j, "J")
    put("energy_per_1k_tokens_j", summary.energy_per_1k_tokens_j, "J")
    act = summary.activity
    if act is not None:
        put("activity_graphics_pct", act.graphics_util_pct, "%")
        put("activity_sm_pct", act.sm_util_pct, "%")
        put("activity_tensor_pct", act.tensor_util_pct, "%")
        put("activity_dram_pct", act.dram_bw_util_pct, "%")
    return out
