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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migperf.errors import ConfigError, MigperfError
from migperf.experiments.config import ExperimentConfig
from migperf.experiments.plan import CURRENT, RunPlan, Slot, expand
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
            return {
                int(k): MigSnapshot.from_dict(v) if v else None
                for k, v in data["originals"].items()
            }
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
        todo = [r for r in runs if r.run_key not in done]
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
                tuple(s.name for s in run.slots),
                run.repeat,
            )
            if series in oom_at and run.batch_size > oom_at[series]:
                self._store_failure(
                    run, "skipped", f"batch size {oom_at[series]} already ran out of memory"
                )
                continue
            statuses = self._execute(run, devices[run.gpu_index])
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

    def _spec(self, run: RunPlan, device: str, simulated: bool, kind: str) -> Any:
        from migperf.bench.spec import parse_spec

        stop = self.cfg.stop
        job = run.job
        return parse_spec(
            {
                "workload": job.workload,
                "task": job.task,
                "batch_size": run.batch_size,
                "seq_len": run.seq_len,
                "precision": job.precision,
                "compile": job.compile,
                "model_args": run.model_args,
                "warmup_iterations": stop.warmup_iterations,
                "min_iterations": stop.min_iterations,
                "min_duration_s": stop.min_duration_s,
                "max_duration_s": stop.max_duration_s,
                "seed": run.repeat,
                "repeat_index": run.repeat,
                "expect_device": kind,
                "device_label": device,
                "simulated": simulated,
                "inject_crash": job.inject == "crash",
                "inject_hang": job.inject == "hang",
                "inject_oom": job.inject == "oom",
            }
        )

    def _execute(self, run: RunPlan, devices: dict[tuple[int, int], str]) -> list[str]:
        from migperf.bench.device import resolve_device
        from migperf.bench.runner import WorkerGroup, WorkerProcess

        self.emit("run_start", run=run)
        jobs = []
        for slot in run.slots:
            try:
                device = self._device_for(slot, run.gpu_index, devices)
            except MigperfError as exc:
                self._store_failure(run, "failed", exc.message)
                return ["failed"]
            sel = resolve_device(device, simulated=self.nvml.simulated)
            jobs.append((slot, device, self._spec(run, device, sel.simulated, sel.kind), sel.env()))
        started = time.time()
        t = time.monotonic()
        if len(jobs) == 1:
            slot, device, spec, env = jobs[0]
            worker = WorkerProcess(spec, env, timeout_s=self.cfg.timeout_s)
            worker.start()
            try:
                results = [worker.wait()]
            except BaseException:
                worker.kill()
                raise
        else:
            group = WorkerGroup([(s, e) for _, _, s, e in jobs], timeout_s=self.cfg.timeout_s)
            group.start()
            results, _ = group.release_when_ready()
        elapsed = time.monotonic() - t
        measured = sum((r.timing.measured_duration_s or 0.0) for r in results if r.timing) / max(
            len(results), 1
        )
        self.report.time_s["measure"] += measured
        self.report.time_s["workers"] += max(0.0, elapsed - measured)
        group_id = run.run_key if len(jobs) > 1 else None
        statuses: list[str] = []
        for (slot, device, _, _), result in zip(jobs, results, strict=True):
            key = run.run_key if len(jobs) == 1 else f"{run.run_key}:{slot.name}"
            self._store(run, key, slot, device, result, started, group_id)
            statuses.append(result.status)
        self.emit("run_done", run=run, results=results)
        return statuses

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
        for slot in run.slots:
            key = run.run_key if len(run.slots) == 1 else f"{run.run_key}:{slot.name}"
            rec = RunRecord(
                **self._base(run, key, slot, None, None),
                status=status,
                error=error,
                params={"model_args": run.model_args, "slots": [s.name for s in run.slots]},
            )
            if self.store.record(rec) is not None:
                self.report.failed += 1
        self.report.time_s["store"] += time.monotonic() - t
        self.emit("run_done", run=run, results=[], status=status, error=error)

    def _store(
        self,
        run: RunPlan,
        key: str,
        slot: Slot,
        device: str,
        result: Any,
        started: float,
        group_id: str | None,
    ) -> None:
        t = time.monotonic()
        data = result.to_dict()
        rec = RunRecord(
            **self._base(run, key, slot, device, started),
            status=result.status,
            error=result.error.message if result.error else None,
            device_kind=result.device_kind,
            params={
                "model_args": run.model_args,
                "slots": [s.name for s in run.slots],
                "group_id": group_id,
            },
            environment=data.get("environment") or {},
            result=data,
            metrics=metrics_of(result),
            samples={"latency_ms": list(result.latency_samples_ms)}
            if result.latency_samples_ms
            else None,
            telemetry=data.get("telemetry"),
        )
        if self.store.record(rec) is not None:
            if result.status == "ok":
                self.report.stored += 1
            else:
                self.report.failed += 1
        self.report.time_s["store"] += time.monotonic() - t


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
    telemetry = getattr(result, "telemetry", None)
    summary = getattr(telemetry, "summary", None) if telemetry is not None else None
    if summary is not None:
        for k, v in (
            summary.model_dump() if hasattr(summary, "model_dump") else dict(summary)
        ).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                out[f"telemetry_{k}"] = (float(v), "")
    return out
