"""What a plan is: per GPU its layout and what each instance serves, per job what it gets.

These are plain frozen values with a ``to_dict`` for ``migperf plan --json``;
:func:`migperf.planner.optimizer.plan_layout` builds them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BaselineResult",
    "CapacityUse",
    "GpuPlan",
    "InstancePlan",
    "JobOutcome",
    "Plan",
    "SolverInfo",
]


@dataclass(frozen=True)
class InstancePlan:
    """One MIG instance of a planned GPU.

    Attributes:
        profile: The GPU-instance profile.
        job: The service or training job it serves (None: idle).
        kind: ``infer`` or ``train`` (None when idle).
        capacity: Its capacity for that job (QPS or samples/s).
        load: The share of the job's demand it carries (QPS; the floor for training).
        estimate: The capacity is an ``--assume-linear`` estimate.
        processes: MPS processes of the job on the instance (1: no MPS);
            ``capacity`` and ``load`` are their total.
        batch_size: The batch size its capacity was measured with, when a
            capacities file says (verification runs with it).
        origin: Where its capacity came from (store runs, ``file:line``).
    """

    profile: str
    job: str | None = None
    kind: Literal["infer", "train"] | None = None
    capacity: float | None = None
    load: float | None = None
    estimate: bool = False
    processes: int = 1
    batch_size: int | None = None
    origin: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "profile": self.profile,
            "job": self.job,
            "kind": self.kind,
            "processes": self.processes,
            "capacity": self.capacity,
            "load": self.load,
            "capacity_source": "estimate" if self.estimate else "measured",
            "batch_size": self.batch_size,
            "origin": self.origin,
        }


@dataclass(frozen=True)
class CapacityUse:
    """One capacity a plan used for a job: which row, from where, on how many instances.

    Attributes:
        model: Catalog model key.
        profile: The profile.
        processes: MPS processes per instance (1: no MPS).
        capacity: One instance's capacity (their total under MPS).
        instances: Instances of the plan that use it.
        origin: Store run ids, or ``file:line (source)``, with how it was chosen.
        from_file: It came from a capacities file.
    """

    model: str
    profile: str
    processes: int
    capacity: float
    instances: int
    origin: str
    from_file: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "model": self.model,
            "profile": self.profile,
            "processes": self.processes,
            "capacity": self.capacity,
            "instances": self.instances,
            "origin": self.origin,
            "from": "file" if self.from_file else "store",
        }


@dataclass(frozen=True)
class GpuPlan:
    """One planned GPU.

    Attributes:
        model: Catalog model key.
        index: Its number among the plan's GPUs of that model (0-based).
        node: The node it is on (``index // per_node``).
        device: Its GPU index on that node (``index % per_node``): mig-parted's ``devices``.
        layout: The layout text.
        instances: Its instances, largest first, with what each serves.
    """

    model: str
    index: int
    node: int
    device: int
    layout: str
    instances: tuple[InstancePlan, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "model": self.model,
            "index": self.index,
            "node": self.node,
            "device": self.device,
            "layout": self.layout,
            "instances": [i.to_dict() for i in self.instances],
        }


@dataclass(frozen=True)
class JobOutcome:
    """What the plan gives one service or training job.

    Attributes:
        name: The service or job.
        kind: ``infer`` or ``train``.
        demand: Target QPS (services) or samples/s floor (training).
        required: What must be covered: ``demand x (1 + headroom)`` for services,
            the floor for training.
        capacity: Planned capacity (summed over its instances; the one
            instance's for training).
        instances: Instances serving it.
        slo: The SLO in words (services).
        estimate: Some of its capacity is an estimate.
        used: The capacities its instances use, with where each came from.
    """

    name: str
    kind: Literal["infer", "train"]
    demand: float
    required: float
    capacity: float
    instances: int
    slo: str | None = None
    estimate: bool = False
    used: tuple[CapacityUse, ...] = ()

    @property
    def mps_processes(self) -> int:
        """MPS processes over all its instances that run more than one (0: no MPS)."""
        return sum(u.processes * u.instances for u in self.used if u.processes > 1)

    @property
    def coverage(self) -> float:
        """``capacity / demand`` (1.0: exactly the target, 1.1: target plus 10 %)."""
        return self.capacity / self.demand if self.demand else math.inf

    @property
    def met(self) -> bool:
        """Whether the capacity reaches what is required."""
        return self.capacity >= self.required * (1 - 1e-9)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "name": self.name,
            "kind": self.kind,
            "demand": self.demand,
            "required": self.required,
            "capacity": self.capacity,
            "coverage": self.coverage,
            "met": self.met,
            "instances": self.instances,
            "slo": self.slo,
            "capacity_source": "estimate" if self.estimate else "measured",
            "used": [u.to_dict() for u in self.used],
        }


@dataclass(frozen=True)
class BaselineResult:
    """A simpler way to serve the same demand, for comparison.

    Attributes:
        name: ``whole-gpu`` (one GPU per service, MIG off), ``uniform``
            (the best single layout on every GPU) or ``mig-only`` (the same
            planner without MPS; only when a service may run MPS).
        title: The baseline in words.
        gpus: GPUs it needs; None when it cannot serve the demand at all.
        fits: Whether that many GPUs are available.
        layout: The layout (uniform), per model.
        detail: One sentence about it.
    """

    name: str
    title: str
    gpus: int | None
    fits: bool
    layout: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "name": self.name,
            "title": self.title,
            "gpus": self.gpus,
            "fits": self.fits,
            "layout": self.layout,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class SolverInfo:
    """How the program was solved.

    Attributes:
        optimal: HiGHS proved the main objective optimal (the GPU count, or the
            smallest coverage on a fixed count) within its default 0.01 % gap.
        statement: The optimality in one sentence.
        mip_gap: The relative gap HiGHS reported for the final phase.
        time_s: Wall time of planning, every solve and the baselines included.
        solves: Programs solved.
        gap: The relative gap HiGHS proved on the main objective (the GPU
            count, or the coverage on a fixed count); 0.0: proven optimal.
        lower_bound: Fewest GPUs any plan can use, as HiGHS proved it
            (``min-gpus``; None when it proved nothing).
        main_time_s: HiGHS's time for the main program.
        solve_time_s: HiGHS's time for all programs (baselines included).
        why: When the main objective is not proven optimal: what that means
            for the plan and what to do.
    """

    optimal: bool
    statement: str
    mip_gap: float | None
    time_s: float
    solves: int
    gap: float | None = None
    lower_bound: int | None = None
    main_time_s: float = 0.0
    solve_time_s: float = 0.0
    why: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "optimal": self.optimal,
            "statement": self.statement,
            "mip_gap": self.mip_gap,
            "gap": self.gap,
            "lower_bound": self.lower_bound,
            "time_s": self.time_s,
            "main_time_s": self.main_time_s,
            "solve_time_s": self.solve_time_s,
            "solves": self.solves,
            "why": self.why,
        }


@dataclass(frozen=True)
class Plan:
    """A layout plan (or, when the demand cannot be met, the best effort and why).

    Attributes:
        feasible: Every service and job is covered.
        mode: ``min-gpus`` (fewest GPUs) or ``fixed-count`` (best coverage on
            ``gpu_count`` GPUs).
        gpus: The planned GPUs (only those used).
        jobs: Per service and training job, what it gets.
        baselines: The comparison baselines.
        solver: How it was solved.
        explanation: Why the demand cannot be met (empty when feasible).
        notes: Things the user should know (estimates, derating, simulated data).
        headroom: The demand's headroom.
        gpu_count: The fixed count, in ``fixed-count`` mode.
        available: GPUs available per model.
    """

    feasible: bool
    mode: Literal["min-gpus", "fixed-count"]
    gpus: tuple[GpuPlan, ...]
    jobs: tuple[JobOutcome, ...]
    baselines: tuple[BaselineResult, ...]
    solver: SolverInfo
    explanation: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    headroom: float = 0.1
    gpu_count: int | None = None
    available: Mapping[str, int] = field(default_factory=dict)

    @property
    def gpus_used(self) -> int:
        """GPUs the plan uses."""
        return len(self.gpus)

    @property
    def min_coverage(self) -> float | None:
        """The smallest service coverage (None without services)."""
        cov = [j.coverage for j in self.jobs if j.kind == "infer"]
        return min(cov) if cov else None

    @property
    def has_estimates(self) -> bool:
        """Whether any planned capacity is an ``--assume-linear`` estimate."""
        return any(j.estimate for j in self.jobs)

    @property
    def uses_mps(self) -> bool:
        """Whether some instance runs several MPS processes."""
        return any(i.processes > 1 for g in self.gpus for i in g.instances)

    def saved_vs(self, baseline: BaselineResult) -> int | None:
        """GPUs saved against a baseline (None when the baseline cannot serve the demand)."""
        if baseline.gpus is None or not self.feasible:
            return None
        return baseline.gpus - self.gpus_used

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (``migperf plan --json``)."""
        return {
            "feasible": self.feasible,
            "mode": self.mode,
            "gpus_used": self.gpus_used,
            "uses_mps": self.uses_mps,
            "gpu_count": self.gpu_count,
            "available": dict(self.available),
            "headroom": self.headroom,
            "min_coverage": self.min_coverage,
            "gpus": [g.to_dict() for g in self.gpus],
            "jobs": [j.to_dict() for j in self.jobs],
            "baselines": [dict(b.to_dict(), gpus_saved=self.saved_vs(b)) for b in self.baselines],
            "solver": self.solver.to_dict(),
            "explanation": list(self.explanation),
            "notes": list(self.notes),
        }
