"""From a planned run and its workers' results to the records the store keeps.

Every path that stores a run goes through here: a measured member
(:func:`run_record`), a run that failed or was skipped before it measured
anything (:func:`failure_records`, also used by a cluster driver to store a
run lost with its node), and the headline numbers of a result
(:func:`metrics_of`). The column meanings are in ``docs/results-schema.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from migperf.errors import UsageError
from migperf.experiments.sweep import Member, RunPlan, Slot
from migperf.nvml.facade import Nvml
from migperf.results.store import RunRecord

__all__ = [
    "DONE_STATUSES",
    "AttemptPlan",
    "RecordContext",
    "failure_records",
    "measuring_seconds",
    "metrics_of",
    "plan_attempts",
    "run_record",
    "telemetry_metrics",
]

Metrics = dict[str, tuple[float | None, str]]


@dataclass(frozen=True)
class RecordContext:
    """What every record of one experiment on one machine shares.

    Attributes:
        experiment: The config's name.
        config_hash: The config's hash (keys and ``--resume`` use it).
        simulated: Whether the GPUs are simulated.
        driver_version: The NVIDIA driver version.
        gpus: GPU index -> (name, UUID).
    """

    experiment: str
    config_hash: str
    simulated: bool
    driver_version: str
    gpus: Mapping[int, tuple[str, str]]

    @classmethod
    def of(cls, nvml: Nvml, experiment: str, config_hash: str, gpus: list[int]) -> RecordContext:
        """Read the machine facts for an experiment on ``gpus``."""
        infos = {g: nvml.gpu(g) for g in gpus}
        return cls(
            experiment=experiment,
            config_hash=config_hash,
            simulated=nvml.simulated,
            driver_version=nvml.driver_version(),
            gpus={g: (i.name, i.uuid) for g, i in infos.items()},
        )

    def base(
        self,
        run: RunPlan,
        key: str,
        slot: Slot | None,
        device: str | None,
        started: float | None,
    ) -> dict[str, Any]:
        """The columns every record of ``run`` has (identity, GPU, layout, job)."""
        name, uuid = self.gpus.get(run.gpu_index, (None, None))
        return {
            "run_key": key,
            "experiment": self.experiment,
            "config_hash": self.config_hash,
            "started_unix": started,
            "gpu_index": run.gpu_index,
            "gpu_name": name,
            "gpu_uuid": uuid,
            "driver_version": self.driver_version,
            "layout": run.layout,
            "profile": (slot.name.split("#")[0] if slot and slot.profile else None),
            "mig_uuid": device if device and device.startswith("MIG-") else None,
            "device": device,
            "simulated": self.simulated,
            "workload": run.job.workload,
            "task": run.job.task,
            "precision": run.job.precision,
            "batch_size": run.batch_size,
            "seq_len": run.seq_len,
            "repeat": run.repeat,
        }


def _role(run: RunPlan, member: Member) -> str:
    return "neighbor" if member.role == "neighbor" else run.role


def failure_records(ctx: RecordContext, run: RunPlan, status: str, error: str) -> list[RunRecord]:
    """One record per member of a run that did not measure (layout failed, skipped, lost).

    Args:
        ctx: The experiment's shared facts.
        run: The run.
        status: ``failed``, ``layout_failed``, ``skipped``...
        error: Why, in a sentence.
    """
    return [
        RunRecord(
            **ctx.base(run, run.member_key(member), member.slot, None, None),
            status=status,
            error=error,
            params={
                "model_args": run.model_args,
                "slots": [m.slot.name for m in run.members],
                "slot": member.name,
                "group_id": run.run_key if run.grouped else None,
                "group_size": len(run.members),
                "sharing": run.sharing,
                "role": _role(run, member),
            },
        )
        for member in run.members
    ]


def run_record(
    ctx: RecordContext,
    run: RunPlan,
    member: Member,
    spec: Any,
    device: str,
    result: Any,
    *,
    started: float,
    sharing_info: Mapping[str, Any],
    worker: Mapping[str, Any] | None = None,
) -> RunRecord:
    """The record of one member's worker result.

    Args:
        ctx: The experiment's shared facts.
        run: The run the member belongs to.
        member: The member.
        spec: The :class:`~migperf.bench.spec.BenchSpec` its worker was given.
        device: Where it ran (GPU index as text, or MIG UUID).
        result: Its :class:`~migperf.bench.result.WorkerResult`.
        started: When the run's workers were started (Unix seconds).
        sharing_info: What the run's sharing set up: ``mps`` (device -> daemon
            facts) and ``compute_mode`` (device -> mode), when present.
        worker: How its worker ran (:meth:`migperf.bench.warm.WorkerUse.to_dict`):
            ``mode`` (``warm`` or ``fresh``), ``run_in_process``, ``model_cached``;
            stored as ``params["worker"]``.
    """
    data = result.to_dict()
    timing = result.timing
    params: dict[str, Any] = {
        "model_args": dict(spec.model_args),
        "slots": [m.slot.name for m in run.members],
        "slot": member.name,
        "group_id": run.run_key if run.grouped else None,
        "group_size": len(run.members),
        "sharing": run.sharing,
        "role": _role(run, member),
        "window_start_unix": timing.window_start_unix_s if timing else None,
        "window_end_unix": timing.window_end_unix_s if timing else None,
    }
    if worker is not None:
        params["worker"] = dict(worker)
    executed = getattr(result, "executed_precision", None)
    if executed:
        params["precision_executed"] = executed  # fp16 asked on a CPU runs in bf16
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
                for k, v in (sharing_info.get("mps") or {}).get(device, {}).items()
                if k != "commands"  # the control log stays in the MPS log directory
            },
        }
    if "compute_mode" in sharing_info:
        params["compute_mode"] = sharing_info["compute_mode"].get(device)
    scenario = spec.scenario
    if scenario is not None:
        params["scenario"] = {
            **scenario.model_dump(mode="json", exclude_defaults=True),
            "name": scenario.name,
            "latency_target_ms": scenario.effective_latency_target_ms,
            "latency_percentile": scenario.effective_percentile,
        }
    rec = RunRecord(
        **ctx.base(run, run.member_key(member), member.slot, device, started),
        status=result.status,
        error=result.error.message if result.error else None,
        device_kind=result.device_kind,
        params=params,
        environment=data.get("environment") or {},
        result=data,
        metrics=metrics_of(result),
        samples=(
            {"latency_ms": list(result.latency_samples_ms)} if result.latency_samples_ms else None
        ),
        telemetry=data.get("telemetry"),
    )
    if member.role == "neighbor":
        # A neighbor runs its own job: store what it ran, not the run's job.
        rec = replace(
            rec,
            workload=spec.workload,
            task=spec.task,
            precision=spec.precision,
            batch_size=spec.batch_size,
            seq_len=spec.seq_len,
        )
    return rec


def measuring_seconds(result: Any) -> float:
    """How long a worker result spent measuring: its window, or a capacity search's every trial.

    A ``--find-max-qps`` run reports the numbers of the trial at the capacity
    it found, but all its trials measured: the time breakdown and the learned
    run times count them as measuring, not as migperf's own overhead.
    """
    scenario = getattr(result, "scenario", None)
    search = getattr(getattr(scenario, "max_qps", None), "search_duration_s", None)
    if search:
        return float(search)
    timing = getattr(result, "timing", None)
    return float(getattr(timing, "measured_duration_s", None) or 0.0)


def metrics_of(result: Any) -> Metrics:
    """The headline numbers of a worker result, with units."""
    out: Metrics = {}
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
    stability = getattr(result, "stability", None)
    windows = list(getattr(stability, "window_samples_per_s", None) or [])
    if stability is not None and stability.stable is not None and len(windows) >= 2 and min(windows) > 0:
        # Host contention shows as windows that disagree; flag it where the
        # numbers are read (results show, report), not only in `bench`.
        out["window_spread"] = (max(windows) / min(windows) - 1.0, "ratio")
        out["unstable"] = (0.0 if stability.stable else 1.0, "flag")
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


def _scenario_metrics(sc: Any) -> Metrics:
    """Per-sample latency, completed rate, verdict and capacity of a scenario run."""
    out: Metrics = {}
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


def telemetry_metrics(summary: Any) -> Metrics:
    """The stored telemetry numbers of one run's window (see docs/results-schema.md)."""
    out: Metrics = {}

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


#: Latest-attempt statuses that ``--resume`` counts as done: measured outcomes.
#: ``oom`` is the batch size not fitting, and ``skipped`` a larger one not tried
#: after it; everything else (failed, layout_failed, crashed, timeout, invalid,
#: aborted) is retried as a new attempt.
DONE_STATUSES = frozenset({"ok", "oom", "skipped"})


@dataclass(frozen=True)
class AttemptPlan:
    """Which runs a sweep skips, and the attempt number each stored record gets.

    Attributes:
        done: Run keys (member keys of co-located runs) not to run again.
        latest: Run key -> its highest stored attempt.
    """

    done: frozenset[str]
    latest: Mapping[str, int]

    def attempt(self, key: str) -> int:
        """The attempt number of a new record for ``key``."""
        return self.latest.get(key, 0) + 1


def plan_attempts(
    latest: Mapping[str, tuple[int, str]],
    *,
    experiment: str,
    config_hash: str,
    resume: bool,
    rerun: bool,
) -> AttemptPlan:
    """Decide what a sweep does about runs already in the store, before it measures anything.

    Args:
        latest: The store's latest attempts of this config (run key -> (attempt, status)).
        experiment: The config's name (for the message).
        config_hash: The config's hash (for the message).
        resume: Skip what is done (see :data:`DONE_STATUSES`), retry the rest.
        rerun: Measure every run again, as new attempts next to the old ones.

    Raises:
        UsageError: both flags, or neither while the store already holds runs
            of this config (a rerun would otherwise measure them again
            unasked).
    """
    if resume and rerun:
        raise UsageError(
            "--resume and --rerun exclude each other",
            hint="--resume runs what is missing or failed; --rerun measures everything again",
        )
    if latest and not (resume or rerun):
        failed = sum(1 for _, status in latest.values() if status not in DONE_STATUSES)
        raise UsageError(
            f"the results store already holds {len(latest)} run(s) of experiment "
            f"{experiment!r} (config {config_hash}), {failed} of them not ok",
            hint="add --resume to run only what is missing and retry failed runs, --rerun to "
            "measure every run again as a new attempt (the old ones are kept), or pass another "
            "--results file",
        )
    done = frozenset(k for k, (_, status) in latest.items() if status in DONE_STATUSES)
    return AttemptPlan(
        done=done if resume else frozenset(),
        latest={k: attempt for k, (attempt, _) in latest.items()},
    )
