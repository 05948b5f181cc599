"""Check a plan on the GPUs: apply it, run every service at its share, co-located, and judge the SLOs.

Capacities are measured one instance at a time; a plan puts several services
on one GPU, where they share memory bandwidth and power. Verification runs the
plan as it would serve: every planned GPU gets its layout (each restored to
its previous layout afterwards, also on error or interrupt), and each
assigned instance gets one worker, all released together behind one barrier
(:func:`migperf.bench.launch.launch`):

* a service instance runs the LoadGen server scenario at its share of the
  service's ``target_qps`` (shares proportional to the instances' capacities)
  under the service's SLO;
* a training instance trains its job and reports samples/s against its floor;
* an instance the plan runs ``k`` MPS processes on gets one MPS control
  daemon on its MIG device and ``k`` client workers
  (:func:`migperf.sharing.mps.mps_for_run`), each at ``1/k`` of the
  instance's share, each judged against the SLO on its own.

A service holds when every one of its instances is LoadGen-VALID (the
percentile latency within the target, enough queries) with its SLO met. On a
simulated GPU the workers run on the CPU and the verdicts say nothing about a
real GPU; the result says so.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migperf.errors import GpuNotFoundError, UsageError
from migperf.nvml.catalog import get_model, model_for_pci_device_id
from migperf.nvml.facade import Nvml
from migperf.planner.demand import DemandSpec, ServiceSpec
from migperf.planner.result import GpuPlan, Plan

__all__ = ["InstanceCheck", "JobCheck", "VerifyResult", "machine_gpus", "verify_plan"]


@dataclass(frozen=True)
class InstanceCheck:
    """One worker of the verification.

    Attributes:
        gpu_index: The machine's GPU index.
        profile: The instance's profile.
        mig_uuid: Its MIG device.
        job: The service or training job it ran.
        target: Its share: QPS (services) or the floor in samples/s (training).
        status: The worker's status (``ok``, ``crashed``, ``timeout`` ...).
        held: This instance met its target.
        achieved: Completed QPS or samples/s.
        latency_ms: Services: the latency at the SLO percentile.
        verdict: LoadGen's verdict or the worker's error, in one sentence.
        mps_client: The MPS client index on the instance (None: no MPS).
    """

    gpu_index: int
    profile: str
    mig_uuid: str
    job: str
    target: float
    status: str
    held: bool
    achieved: float | None = None
    latency_ms: float | None = None
    verdict: str = ""
    mps_client: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class JobCheck:
    """The verdict for one service or training job.

    Attributes:
        name: The service or job.
        kind: ``infer`` or ``train``.
        target: Target QPS, or the samples/s floor.
        slo: The SLO in words (services).
        held: Every instance met its share (services: SLO held).
        achieved: Completed QPS summed over instances, or the job's samples/s.
        worst_latency_ms: Services: the highest SLO-percentile latency of its instances.
        instances: The workers.
    """

    name: str
    kind: str
    target: float
    slo: str | None
    held: bool
    achieved: float | None
    worst_latency_ms: float | None
    instances: tuple[InstanceCheck, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "name": self.name,
            "kind": self.kind,
            "target": self.target,
            "slo": self.slo,
            "held": self.held,
            "achieved": self.achieved,
            "worst_latency_ms": self.worst_latency_ms,
            "instances": [i.to_dict() for i in self.instances],
        }


@dataclass(frozen=True)
class VerifyResult:
    """What verification found.

    Attributes:
        jobs: Per service and training job.
        simulated: The GPUs were simulated (workers ran on the CPU).
        gpus: Machine GPU index per planned GPU (``model#index``).
        restored: Every GPU got its previous layout back.
        released: All workers were ready and released together.
        mps: Per MIG device that ran MPS clients, what its daemon reported
            (``verified``: it listed all its clients; ``client_count``, ...).
    """

    jobs: tuple[JobCheck, ...]
    simulated: bool
    gpus: dict[str, int] = field(default_factory=dict)
    restored: bool = True
    released: bool = True
    mps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def all_held(self) -> bool:
        """Every service's SLO and every training floor held."""
        return all(j.held for j in self.jobs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "all_held": self.all_held,
            "simulated": self.simulated,
            "gpus": dict(self.gpus),
            "restored": self.restored,
            "released": self.released,
            "mps": {d: dict(info) for d, info in self.mps.items()},
            "jobs": [j.to_dict() for j in self.jobs],
        }


def machine_gpus(nvml: Nvml, plan: Plan) -> dict[tuple[str, int], int]:
    """Which GPU of this machine plays each planned GPU: the k-th GPU of a model is its plan index k.

    Raises:
        UsageError: the machine has fewer GPUs of a model than the plan uses.
    """
    by_model: dict[str, list[int]] = {}
    for i in range(nvml.gpu_count()):
        info = nvml.gpu(i)
        model = model_for_pci_device_id(info.pci_device_id)
        if model is not None and info.mig_capable:
            by_model.setdefault(model.key, []).append(i)
    out: dict[tuple[str, int], int] = {}
    for g in plan.gpus:
        have = by_model.get(g.model, [])
        if g.index >= len(have):
            need = sum(1 for x in plan.gpus if x.model == g.model)
            raise UsageError(
                f"the plan uses {need} {g.model} GPU(s) ({get_model(g.model).name}); "
                f"this machine has {len(have)}",
                hint=f"verify on a machine with enough of them, or simulate one with "
                f"`migperf --simulate {g.model}:{need} plan ... --verify`",
            )
        out[(g.model, g.index)] = have[g.index]
    return out


def _uuids(nvml: Nvml, gpu_index: int, g: GpuPlan) -> list[str]:
    """MIG device UUIDs for the plan's instances, in the plan's order (same profile: by start)."""
    by_profile: dict[str, list[Any]] = {}
    for gi in nvml.gpu_instances(gpu_index):
        by_profile.setdefault(gi.profile, []).append(gi)
    for gis in by_profile.values():
        gis.sort(key=lambda x: x.placement.start if x.placement else 0)
    taken: dict[str, int] = {}
    out = []
    for inst in g.instances:
        k = taken.get(inst.profile, 0)
        taken[inst.profile] = k + 1
        gis = by_profile.get(inst.profile, [])
        if k >= len(gis) or not gis[k].compute_instances:
            raise GpuNotFoundError(
                f"GPU {gpu_index} has no MIG device for the plan's {inst.profile} #{k} after applying "
                f"{g.layout}",
                hint=f"check the GPU with `migperf mig show --gpu {gpu_index}`",
            )
        out.append(gis[k].compute_instances[0].mig_uuid)
    return out


def verify_plan(
    nvml: Nvml,
    plan: Plan,
    demand: DemandSpec,
    *,
    min_duration_s: float = 30.0,
    max_duration_s: float | None = None,
    min_query_count: int | None = None,
    warmup_iterations: int | None = None,
    timeout_s: float = 900.0,
    log_dir: Path | None = None,
    force: bool = False,
    on_event: Callable[[str], None] | None = None,
) -> VerifyResult:
    """Apply the plan, run every assigned instance co-located, and judge each service and job.

    Args:
        nvml: An NVML opened for changes (or a simulated machine).
        plan: The plan to check (only its GPUs are touched).
        demand: The demand the plan is for.
        min_duration_s: LoadGen's minimum duration (and the training workers' minimum).
        max_duration_s: Longest run (default: 4 x ``min_duration_s`` + 30 s).
        min_query_count: LoadGen's minimum query count (default: enough for early
            stopping at the SLO percentile).
        warmup_iterations: Warmup per worker (default: the task's).
        timeout_s: Wall-clock limit of each worker.
        log_dir: Where LoadGen logs go (default ``results/loadgen``).
        force: Destroy existing instances even if processes run on them.
        on_event: Called with a line of progress.

    Returns:
        The verdicts; the GPUs hold their previous layouts again.

    Raises:
        UsageError: the plan is empty, the machine lacks the plan's GPUs, or
            a service the plan runs has no ``workload``.
        MigperfError: a layout cannot be applied, or an MPS daemon cannot be
            started (nothing is left changed).
    """
    from migperf.bench.device import resolve_device
    from migperf.bench.launch import LaunchJob, launch
    from migperf.bench.spec import parse_spec
    from migperf.mig.manager import apply_layout_scoped
    from migperf.sharing.mps import MpsClient, mps_for_run

    if not plan.gpus:
        raise UsageError(
            "the plan has no GPUs to verify", hint="plan a demand that can be served first"
        )
    say = on_event or (lambda _line: None)
    mapping = machine_gpus(nvml, plan)
    max_s = max_duration_s if max_duration_s is not None else 4 * min_duration_s + 30.0
    jobs: list[LaunchJob] = []
    meta: list[_Meta] = []
    clients: list[MpsClient] = []
    restored = False
    released = False
    results: list[Any] = []
    mps_info: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for g in plan.gpus:
            gpu = mapping[(g.model, g.index)]
            say(f"GPU {gpu}: applying {g.layout}")
            stack.enter_context(apply_layout_scoped(nvml, gpu, g.layout, force=force))
        for g in plan.gpus:
            gpu = mapping[(g.model, g.index)]
            for inst, uuid in zip(g.instances, _uuids(nvml, gpu, g), strict=True):
                if inst.job is None:
                    continue
                spec_job = demand.job(inst.job)
                if spec_job.workload is None:
                    raise UsageError(
                        f"service {inst.job} has no workload: --verify cannot run it",
                        hint="give the service's workload (and precision, batch size ...) in the "
                        "demand file",
                    )
                sel = resolve_device(uuid, simulated=nvml.simulated)
                data: dict[str, Any] = {
                    "workload": spec_job.workload,
                    "task": spec_job.task,
                    # A capacities file may say which batch size its capacity was measured with.
                    "batch_size": inst.batch_size or spec_job.batch_size,
                    "seq_len": spec_job.seq_len or 128,
                    "precision": spec_job.precision,
                    "model_args": dict(spec_job.model_args or {}),
                    "warmup_iterations": warmup_iterations,
                    "min_duration_s": min_duration_s,
                    "max_duration_s": max_s,
                    "expect_device": sel.kind,
                    "device_label": uuid,
                    "simulated": sel.simulated,
                    # Even a plan with one instance is released at the barrier,
                    # so a worker that fails while warming up shows as not released.
                    "barrier": True,
                }
                k = max(1, inst.processes)
                if isinstance(spec_job, ServiceSpec):
                    target = (inst.load or 0.0) / k
                    scenario: dict[str, Any] = {
                        "name": "server",
                        "target_qps": target,
                        "latency_target_ms": spec_job.slo.latency_ms,
                        "latency_percentile": spec_job.slo.percentile,
                    }
                    if min_query_count is not None:
                        scenario["min_query_count"] = min_query_count
                    data["scenario"] = scenario
                    data["loadgen_log_dir"] = str(log_dir) if log_dir else None
                else:
                    target = spec_job.min_samples_per_s
                spec = parse_spec(data)
                for client in range(k):
                    # mps_for_run rewrites this very dict into the client's MPS environment.
                    env = dict(sel.env())
                    jobs.append(LaunchJob(spec, env, uuid))
                    meta.append(
                        _Meta(gpu, inst.profile, uuid, inst.job, target, client if k > 1 else None)
                    )
                    if k > 1:
                        clients.append(MpsClient(device=uuid, env=env))
        if not jobs:
            raise UsageError("no instance of the plan serves anything", hint="check the demand")
        say(f"running {len(jobs)} worker(s) together for at least {min_duration_s:g} s")
        if clients:
            devices = len({c.device for c in clients})
            say(f"MPS: {len(clients)} client(s) on {devices} MIG device(s), one daemon each")
            mps_info = stack.enter_context(mps_for_run(nvml, clients, run_key="plan-verify"))
        outcome = launch(jobs, simulated=nvml.simulated, timeout_s=timeout_s, nvml=nvml)
        results, released = list(outcome.results), outcome.released
    restored = True
    return VerifyResult(
        jobs=_judge(demand, meta, results),
        simulated=nvml.simulated,
        gpus={f"{g.model}#{g.index}": mapping[(g.model, g.index)] for g in plan.gpus},
        restored=restored,
        released=released,
        # The daemons' facts, refreshed by mps_for_run once they stopped.
        mps={d: {k: v for k, v in info.items() if k != "commands"} for d, info in mps_info.items()},
    )


@dataclass(frozen=True)
class _Meta:
    """What one verify worker is: where, for what, at what target."""

    gpu: int
    profile: str
    uuid: str
    job: str
    target: float
    client: int | None


def _judge(
    demand: DemandSpec, meta: Sequence[_Meta], results: Sequence[Any]
) -> tuple[JobCheck, ...]:
    checks: dict[str, list[InstanceCheck]] = {}
    for m, r in zip(meta, results, strict=True):
        gpu, profile, uuid, job, target = m.gpu, m.profile, m.uuid, m.job, m.target
        spec = demand.job(job)
        sc = getattr(r, "scenario", None)
        if isinstance(spec, ServiceSpec):
            lat = sc.latency_ms.at(spec.slo.percentile) if sc is not None else None
            if sc is not None and sc.target_percentile_latency_ms is not None:
                lat = sc.target_percentile_latency_ms
            held = (
                r.status == "ok" and sc is not None and bool(sc.valid) and sc.slo_met is not False
            )
            achieved = sc.completed_qps if sc is not None else None
            verdict = sc.verdict if sc is not None else (r.error.message if r.error else r.status)
        else:
            tp = getattr(r, "throughput", None)
            achieved = getattr(tp, "samples_per_s", None) if tp is not None else None
            held = r.status == "ok" and achieved is not None and achieved >= target
            lat = None
            if r.status != "ok":
                verdict = r.error.message if r.error else r.status
            else:
                verdict = f"{achieved or 0:.1f} samples/s against a floor of {target:g}"
        checks.setdefault(job, []).append(
            InstanceCheck(
                gpu, profile, uuid, job, target, r.status, held, achieved, lat, verdict, m.client
            )
        )
    out = []
    for svc in demand.services:
        insts = checks.get(svc.name, [])
        if not insts:
            continue
        lats = [i.latency_ms for i in insts if i.latency_ms is not None]
        done = [i.achieved for i in insts if i.achieved is not None]
        out.append(
            JobCheck(
                svc.name,
                "infer",
                svc.target_qps,
                str(svc.slo),
                all(i.held for i in insts),
                sum(done) if done else None,
                max(lats) if lats else None,
                tuple(insts),
            )
        )
    for train in demand.training:
        insts = checks.get(train.name, [])
        if not insts:
            continue
        out.append(
            JobCheck(
                train.name,
                "train",
                train.min_samples_per_s,
                None,
                all(i.held for i in insts),
                insts[0].achieved,
                None,
                tuple(insts),
            )
        )
    return tuple(out)
