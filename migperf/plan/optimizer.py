"""The layout planner: the fewest GPUs that serve a workload mix at its SLOs.

The problem. Each GPU of model ``m`` gets one layout ``L`` from the solver's
maximal layouts (:func:`migperf.mig.solver.enumerate_maximal_layouts`; a
non-maximal layout is never better, since an instance may stay idle), and
each of its instances serves at most one service or training job. A service
``s`` is covered when the summed capacity of its instances (the measured
``max_qps_under_slo`` of each instance's profile, see
:mod:`migperf.plan.capacity`) reaches ``target_qps x (1 + headroom)``; a
training job needs one instance whose ``samples_per_s`` reaches its floor.

The program (a mixed-integer program solved by HiGHS through
:func:`scipy.optimize.milp`). Instances of one profile on one GPU model are
interchangeable whatever GPU they sit on, so assignments are counted per
profile pool rather than per GPU, which keeps the program small (a few hundred
variables for 64 GPUs and 10 services)::

    x[m,L]   integer  GPUs of model m with layout L          (sum_L x[m,L] <= count[m])
    y[m,p,s] integer  instances of profile p serving s
    z[m,p,j] binary   training job j on an instance of p      (only where cap >= floor)

    pool:     sum_s y[m,p,s] + sum_j z[m,p,j] <= sum_L n[L,p] x[m,L]
    service:  sum_{m,p} cap[m,p,s] y[m,p,s] >= demand[s] (1 + headroom)
    training: sum_{m,p} z[m,p,j] = 1

Phase 1 minimizes ``sum x``. Phase 2 fixes that count and maximizes the
smallest coverage ``t`` (``capacity[s] >= t demand[s]`` for every s) plus a
small weight on the mean coverage, so ties between plans with as many GPUs go
to the one with the most spare capacity; being a tie-break, it is solved to
within 1 % (proving the last 0.01 % of a max-min program can take minutes).
With a fixed GPU count (``gpu_count``) only phase 2 runs, under
``sum x <= gpu_count``, to HiGHS's default 0.01 %. The per-GPU plan is then
rebuilt from the pool counts. The result says whether HiGHS proved the GPU
count (or the fixed-count coverage) optimal or, at the time limit, what MIP
gap remains.

Baselines, solved the same way: whole GPUs per service (MIG off: the
measured whole-GPU capacity, else the full-size profile's), and the best
uniform layout (one profile, as many as fit, on every GPU: ``1g.10gb*7``).

When the demand cannot be met, the result is not an empty plan: it says which
service or job is the problem and what is achievable (the best balanced
coverage on every available GPU, and how many GPUs the demand would need).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from migperf.errors import UsageError
from migperf.mig.layout import InstanceSpec, LayoutSpec, profile_sort_key
from migperf.mig.solver import (
    MigGeometry,
    check_layout,
    enumerate_maximal_layouts,
    is_media_variant,
)
from migperf.nvml.catalog import get_model
from migperf.plan.capacity import WHOLE_GPU, CapacityTable, Key
from migperf.plan.demand import DemandSpec, GpuPoolSpec

__all__ = [
    "BaselineResult",
    "CandidateLayout",
    "GpuPlan",
    "InstancePlan",
    "JobOutcome",
    "Plan",
    "SolverInfo",
    "needed_keys",
    "plan_layout",
    "planning_layouts",
    "uniform_layouts",
]

#: Weight of the mean coverage next to the smallest one in phase 2.
_SPREAD_WEIGHT = 1e-3
#: Relative MIP gap and time limit of the spare-capacity tie-break (phase 2)
#: and of the best-effort plan shown when the demand cannot be met.
_TIE_BREAK_GAP = 1e-2
_TIE_BREAK_LIMIT_S = 3.0


@dataclass(frozen=True)
class CandidateLayout:
    """A layout the planner may give a GPU.

    Attributes:
        model: Catalog model key.
        layout: The canonical layout text (``3g.40gb,2g.20gb*2``).
        counts: ``{profile: instances}``, largest profile first.
        shape: The layout by slices (``3c4m,2c2m*2``), equal across models
            with the same geometry, for the uniform baseline.
    """

    model: str
    layout: str
    counts: Mapping[str, int]
    shape: str


def planning_layouts(pool: GpuPoolSpec) -> list[CandidateLayout]:
    """The maximal layouts of a pool's model, among its allowed profiles.

    Raises:
        UsageError: the model is unknown or has no MIG.
    """
    return list(_layouts(pool.model, None if pool.profiles is None else tuple(pool.profiles)))


@functools.lru_cache(maxsize=64)
def _layouts(model: str, profiles: tuple[str, ...] | None) -> tuple[CandidateLayout, ...]:
    geometry = MigGeometry.for_model(model)
    if profiles is not None:
        allowed = set(profiles)
        geometry = replace(
            geometry, profiles=tuple(p for p in geometry.profiles if p.profile.lower() in allowed)
        )
    sizes = {p.profile: (p.compute_slices, p.memory_slices) for p in geometry.profiles}
    out = []
    for spec in enumerate_maximal_layouts(geometry):
        counts = spec.counts()
        parts = []
        for name, n in counts.items():
            c, mem = sizes[name]
            parts.append(f"{c}c{mem}m" + (f"*{n}" if n > 1 else ""))
        out.append(CandidateLayout(model, str(spec), counts, ",".join(parts)))
    return tuple(out)


def needed_keys(demand: DemandSpec, layouts: Mapping[str, Sequence[CandidateLayout]]) -> list[Key]:
    """Every (model, profile, job) capacity the plan needs, largest profile first.

    Args:
        demand: The demand.
        layouts: Candidate layouts per model (from :func:`planning_layouts`).
    """
    out: list[Key] = []
    names = [s.name for s in demand.services] + [t.name for t in demand.training]
    for pool in demand.gpus:
        profiles: dict[str, None] = {}
        for cand in layouts[pool.model]:
            for p in cand.counts:
                profiles.setdefault(p, None)
        ordered = sorted(profiles, key=profile_sort_key)
        out += [(pool.model, p, name) for p in ordered for name in names]
    return out


# ------------------------------------------------------------------ results


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
    """

    profile: str
    job: str | None = None
    kind: Literal["infer", "train"] | None = None
    capacity: float | None = None
    load: float | None = None
    estimate: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "profile": self.profile,
            "job": self.job,
            "kind": self.kind,
            "capacity": self.capacity,
            "load": self.load,
            "capacity_source": "estimate" if self.estimate else "measured",
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
    """

    name: str
    kind: Literal["infer", "train"]
    demand: float
    required: float
    capacity: float
    instances: int
    slo: str | None = None
    estimate: bool = False

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
        }


@dataclass(frozen=True)
class BaselineResult:
    """A simpler way to serve the same demand, for comparison.

    Attributes:
        name: ``whole-gpu`` (one GPU per service, MIG off) or ``uniform``
            (the best single layout on every GPU).
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
        time_s: Wall time of all solves, baselines included.
        solves: Programs solved.
    """

    optimal: bool
    statement: str
    mip_gap: float | None
    time_s: float
    solves: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "optimal": self.optimal,
            "statement": self.statement,
            "mip_gap": self.mip_gap,
            "time_s": self.time_s,
            "solves": self.solves,
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


# --------------------------------------------------------------- the program


@dataclass
class _Pool:
    model: str
    count: int
    layouts: list[tuple[str, Mapping[str, int]]]

    @property
    def profiles(self) -> list[str]:
        seen: dict[str, None] = {}
        for _, counts in self.layouts:
            for p in counts:
                seen.setdefault(p, None)
        return list(seen)

    def most(self, profile: str) -> int:
        return max((c.get(profile, 0) for _, c in self.layouts), default=0)


@dataclass
class _Problem:
    pools: list[_Pool]
    services: list[tuple[str, float, float]]  # name, demand, required
    training: list[tuple[str, float]]  # name, floor
    cap: Callable[[str, str, str], float]


@dataclass
class _Outcome:
    status: int
    message: str
    x: dict[tuple[int, int], int] = field(default_factory=dict)
    y: dict[tuple[int, str, int], int] = field(default_factory=dict)
    z: dict[tuple[int, str, int], int] = field(default_factory=dict)
    t: float | None = None
    mip_gap: float | None = None

    @property
    def gpus(self) -> int:
        return sum(self.x.values())


class _Counter:
    def __init__(self) -> None:
        self.solves = 0
        self.time_s = 0.0


def _solve(
    prob: _Problem,
    *,
    objective: Literal["min-gpus", "coverage"],
    limits: bool = True,
    total_le: int | None = None,
    total_eq: int | None = None,
    require: bool = True,
    time_limit_s: float = 20.0,
    mip_rel_gap: float = 1e-4,
    counter: _Counter | None = None,
) -> _Outcome:
    """Build and solve one program. Status: 0 optimal, 1 limit, 2 infeasible, 4 other."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    lb: list[float] = []
    ub: list[float] = []
    integ: list[int] = []

    def var(lo: float, hi: float, integer: bool = True) -> int:
        lb.append(lo)
        ub.append(hi)
        integ.append(1 if integer else 0)
        return len(lb) - 1

    big = _unlimited_bound(prob)
    x_idx: dict[tuple[int, int], int] = {}
    y_idx: dict[tuple[int, str, int], int] = {}
    z_idx: dict[tuple[int, str, int], int] = {}
    for mi, pool in enumerate(prob.pools):
        bound = pool.count if limits else big
        for li in range(len(pool.layouts)):
            x_idx[(mi, li)] = var(0, bound)
        for p in pool.profiles:
            most = pool.most(p) * bound
            for si, (name, _, _) in enumerate(prob.services):
                if prob.cap(pool.model, p, name) > 0:
                    y_idx[(mi, p, si)] = var(0, most)
            for ji, (name, floor) in enumerate(prob.training):
                if prob.cap(pool.model, p, name) >= floor * (1 - 1e-12):
                    z_idx[(mi, p, ji)] = var(0, 1)
    coverage = objective == "coverage" and bool(prob.services)
    t_idx = var(0, np.inf, integer=False) if coverage else None

    rows: list[dict[int, float]] = []
    rlo: list[float] = []
    rhi: list[float] = []

    def row(coefs: dict[int, float], lo: float, hi: float) -> None:
        rows.append(coefs)
        rlo.append(lo)
        rhi.append(hi)

    for mi, pool in enumerate(prob.pools):
        for p in pool.profiles:
            coefs: dict[int, float] = {}
            for (m2, p2, _), k in [*y_idx.items(), *z_idx.items()]:
                if m2 == mi and p2 == p:
                    coefs[k] = 1.0
            for li, (_, counts) in enumerate(pool.layouts):
                n = counts.get(p, 0)
                if n:
                    coefs[x_idx[(mi, li)]] = -float(n)
            row(coefs, -np.inf, 0.0)
    if limits:
        for mi, pool in enumerate(prob.pools):
            row({x_idx[(mi, li)]: 1.0 for li in range(len(pool.layouts))}, -np.inf, pool.count)
    all_x = {k: 1.0 for k in x_idx.values()}
    if total_le is not None:
        row(all_x, -np.inf, float(total_le))
    if total_eq is not None:
        row(all_x, float(total_eq), float(total_eq))
    for si, (name, dem, req) in enumerate(prob.services):
        coefs = {
            k: prob.cap(prob.pools[mi].model, p, name)
            for (mi, p, s2), k in y_idx.items()
            if s2 == si
        }
        if require:
            row(dict(coefs), req, np.inf)
        if t_idx is not None:
            row({**coefs, t_idx: -dem}, 0.0, np.inf)
    for ji in range(len(prob.training)):
        row({k: 1.0 for (_, _, j2), k in z_idx.items() if j2 == ji}, 1.0, 1.0)

    n = len(lb)
    c = np.zeros(n)
    if objective == "min-gpus":
        for k in x_idx.values():
            c[k] = 1.0
    elif t_idx is not None:
        c[t_idx] = -1.0
        scale = _SPREAD_WEIGHT / len(prob.services)
        for (mi, p, si), k in y_idx.items():
            name, dem, _ = prob.services[si]
            c[k] -= scale * prob.cap(prob.pools[mi].model, p, name) / dem
    a = np.zeros((len(rows), n))
    for r, coefs in enumerate(rows):
        for k, v in coefs.items():
            a[r, k] = v
    t0 = time.perf_counter()
    res = milp(
        c,
        integrality=np.array(integ),
        bounds=Bounds(np.array(lb), np.array(ub)),
        constraints=[LinearConstraint(a, np.array(rlo), np.array(rhi))] if rows else None,
        options={"time_limit": time_limit_s, "disp": False, "mip_rel_gap": mip_rel_gap},
    )
    if counter is not None:
        counter.solves += 1
        counter.time_s += time.perf_counter() - t0
    out = _Outcome(int(res.status), str(res.message), mip_gap=_gap(res))
    if res.x is None:
        return out
    xs = res.x
    out.x = {key: int(round(xs[k])) for key, k in x_idx.items() if round(xs[k]) > 0}
    out.y = {key: int(round(xs[k])) for key, k in y_idx.items() if round(xs[k]) > 0}
    out.z = {key: int(round(xs[k])) for key, k in z_idx.items() if round(xs[k]) > 0}
    out.t = float(xs[t_idx]) if t_idx is not None else None
    return out


def _gap(res: Any) -> float | None:
    gap = getattr(res, "mip_gap", None)
    if gap is None:
        return None
    try:
        value = float(gap)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def _per_gpu(prob: _Problem, pool: _Pool, name: str) -> float:
    """The most capacity one GPU of the pool can give one service."""
    return max(
        (
            sum(n * prob.cap(pool.model, p, name) for p, n in counts.items())
            for _, counts in pool.layouts
        ),
        default=0.0,
    )


def _unlimited_bound(prob: _Problem) -> int:
    """GPUs per model that surely suffice when counts are lifted (for 'how many would it take')."""
    total = len(prob.training)
    for name, _, req in prob.services:
        best = max((_per_gpu(prob, pool, name) for pool in prob.pools), default=0.0)
        total += math.ceil(req / best) if best > 0 else 0
    return max(total, 1)


# ------------------------------------------------------------- the planner


def _problem(
    demand: DemandSpec, table: CapacityTable, layouts: Mapping[str, Sequence[CandidateLayout]]
) -> _Problem:
    def cap(model: str, profile: str, job: str) -> float:
        value = table.value(model, profile, job)
        return value if value is not None and value > 0 else 0.0

    return _Problem(
        pools=[
            _Pool(g.model, g.count, [(c.layout, c.counts) for c in layouts[g.model]])
            for g in demand.gpus
        ],
        services=[(s.name, s.target_qps, demand.required_qps(s)) for s in demand.services],
        training=[(t.name, t.min_samples_per_s) for t in demand.training],
        cap=cap,
    )


def _build(
    demand: DemandSpec,
    table: CapacityTable,
    prob: _Problem,
    out: _Outcome,
) -> tuple[tuple[GpuPlan, ...], tuple[JobOutcome, ...]]:
    """Per-GPU plan and per-job outcome from a solved program."""
    per_node = {g.model: g.per_node for g in demand.gpus}
    gpus: list[list[Any]] = []  # [model, index, layout, [instance dicts]]
    pools: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for mi, pool in enumerate(prob.pools):
        index = 0
        for li, (text, counts) in enumerate(pool.layouts):
            for _ in range(out.x.get((mi, li), 0)):
                insts = [{"profile": p} for p, n in counts.items() for _ in range(n)]
                for inst in insts:
                    pools.setdefault((mi, inst["profile"]), []).append(inst)
                gpus.append([pool.model, index, text, insts])
                index += 1
    taken: dict[tuple[int, str], int] = {}

    def assign(mi: int, p: str, name: str, kind: str, count: int) -> None:
        free = pools.get((mi, p), [])
        start = taken.get((mi, p), 0)
        entry = table.entry(prob.pools[mi].model, p, name)
        for inst in free[start : start + count]:
            inst.update(
                job=name,
                kind=kind,
                capacity=entry.value if entry else 0.0,
                estimate=bool(entry and entry.source == "estimate"),
            )
        taken[(mi, p)] = start + count

    for si, (name, _, _) in enumerate(prob.services):
        for (mi, p, s2), n in sorted(out.y.items()):
            if s2 == si:
                assign(mi, p, name, "infer", n)
    for ji, (name, _) in enumerate(prob.training):
        for (mi, p, j2), n in sorted(out.z.items()):
            if j2 == ji:
                assign(mi, p, name, "train", n)

    totals: dict[str, float] = {}
    counts_by_job: dict[str, int] = {}
    est: dict[str, bool] = {}
    for _, _, _, insts in gpus:
        for inst in insts:
            if inst.get("job"):
                totals[inst["job"]] = totals.get(inst["job"], 0.0) + inst["capacity"]
                counts_by_job[inst["job"]] = counts_by_job.get(inst["job"], 0) + 1
                est[inst["job"]] = est.get(inst["job"], False) or inst["estimate"]
    demands = {s.name: s.target_qps for s in demand.services}
    floors = {t.name: t.min_samples_per_s for t in demand.training}
    plans = []
    for model, index, text, insts in gpus:
        built = []
        for inst in insts:
            job = inst.get("job")
            load = None
            if job in demands and totals.get(job):
                load = demands[job] * inst["capacity"] / totals[job]
            elif job in floors:
                load = floors[job]
            built.append(
                InstancePlan(
                    profile=inst["profile"],
                    job=job,
                    kind=inst.get("kind"),
                    capacity=inst.get("capacity"),
                    load=load,
                    estimate=bool(inst.get("estimate")),
                )
            )
        size = per_node[model]
        plans.append(GpuPlan(model, index, index // size, index % size, text, tuple(built)))
    jobs = [
        JobOutcome(
            name=s.name,
            kind="infer",
            demand=s.target_qps,
            required=demand.required_qps(s),
            capacity=totals.get(s.name, 0.0),
            instances=counts_by_job.get(s.name, 0),
            slo=str(s.slo),
            estimate=est.get(s.name, False),
        )
        for s in demand.services
    ] + [
        JobOutcome(
            name=t.name,
            kind="train",
            demand=t.min_samples_per_s,
            required=t.min_samples_per_s,
            capacity=totals.get(t.name, 0.0),
            instances=counts_by_job.get(t.name, 0),
            estimate=est.get(t.name, False),
        )
        for t in demand.training
    ]
    return tuple(plans), tuple(jobs)


def _statement(phase1: _Outcome | None, final: _Outcome, mode: str) -> tuple[bool, str]:
    """Whether the main objective is proven optimal, and the solver's result in words."""

    def words(o: _Outcome, what: str, gap_asked: float) -> tuple[bool, str]:
        gap = o.mip_gap or 0.0
        if o.status == 0 and gap <= 1e-4 * 1.0001:
            return True, f"{what}: proven optimal by HiGHS"
        if o.status == 0:
            return True, (
                f"{what}: optimal within the requested {gap_asked:.0%} (HiGHS MIP gap {gap:.2%})"
            )
        shown = f"{o.mip_gap:.2%}" if o.mip_gap is not None else "unknown"
        return (
            False,
            f"{what}: not proven optimal, stopped at the time limit with a MIP gap of {shown}",
        )

    if mode == "fixed-count":
        return words(final, "smallest coverage on the fixed GPU count", 1e-4)
    assert phase1 is not None
    ok1, s1 = words(phase1, "fewest GPUs", 1e-4)
    if final is phase1:
        return ok1, s1
    _, s2 = words(final, "spare-capacity tie-break", _TIE_BREAK_GAP)
    return ok1, f"{s1}; {s2}"


def plan_layout(
    demand: DemandSpec,
    table: CapacityTable,
    *,
    layouts: Mapping[str, Sequence[CandidateLayout]] | None = None,
    gpu_count: int | None = None,
    time_limit_s: float = 20.0,
) -> Plan:
    """Plan layouts and assignments for a demand from a capacity table.

    Args:
        demand: Services, training jobs and GPUs.
        table: Capacities (every needed key present: check
            ``table.missing(needed_keys(...))`` first).
        layouts: Candidate layouts per model (default: :func:`planning_layouts`).
        gpu_count: Fixed GPU count (overrides ``demand.gpu_count``): maximize the
            smallest coverage on that many GPUs instead of minimizing GPUs.
        time_limit_s: HiGHS time limit per program.

    Returns:
        The plan; ``feasible`` is False (with an ``explanation`` and the best
        effort) when the demand cannot be met.

    Raises:
        UsageError: a needed capacity is missing from the table, or
            ``gpu_count`` exceeds the available GPUs.
    """
    t_start = time.perf_counter()
    layouts = layouts or {g.model: planning_layouts(g) for g in demand.gpus}
    missing = table.missing(needed_keys(demand, layouts))
    if missing:
        m = missing[0]
        raise UsageError(
            f"{len(missing)} capacity value(s) the plan needs were never measured, "
            f"e.g. {m.job} on {m.profile} ({m.model})",
            hint="measure them (`migperf plan DEMAND --write-config measure.yaml`), or pass "
            "--assume-linear to estimate them",
        )
    fixed = gpu_count if gpu_count is not None else demand.gpu_count
    if fixed is not None and fixed > demand.total_gpus:
        raise UsageError(
            f"gpu count {fixed} is more than the {demand.total_gpus} GPUs the demand lists",
            hint="lower the GPU count, or add GPUs to the demand's gpus",
        )
    prob = _problem(demand, table, layouts)
    counter = _Counter()
    notes = list(table.notes)
    if table.has_estimates:
        notes.append(
            "some capacities are ESTIMATES (--assume-linear: scaled by SM count from the "
            "nearest measured profile); measure them before relying on the plan"
        )
    explanation: list[str] = []
    phase1: _Outcome | None = None
    if fixed is None:
        mode: Literal["min-gpus", "fixed-count"] = "min-gpus"
        phase1 = _solve(prob, objective="min-gpus", time_limit_s=time_limit_s, counter=counter)
        if phase1.status in (0, 1) and _covers(prob, phase1):
            final = phase1
            if prob.services:
                # A tie-break: 1 % of the best spare capacity is close enough, and
                # proving the last 0.01 % of a max-min program can take minutes.
                phase2 = _solve(
                    prob,
                    objective="coverage",
                    total_eq=phase1.gpus,
                    time_limit_s=min(time_limit_s, _TIE_BREAK_LIMIT_S),
                    mip_rel_gap=_TIE_BREAK_GAP,
                    counter=counter,
                )
                if phase2.status in (0, 1) and _covers(prob, phase2):
                    final = phase2
            feasible = True
        else:
            feasible = False
            explanation, final = _explain(demand, table, prob, counter, time_limit_s)
    else:
        mode = "fixed-count"
        final = _solve(
            prob,
            objective="coverage",
            require=False,
            total_le=fixed,
            time_limit_s=time_limit_s,
            counter=counter,
        )
        feasible = final.status in (0, 1) and len(final.z) == len(prob.training)
        if not feasible:
            explanation, _ = _explain(demand, table, prob, counter, time_limit_s, fixed=fixed)
    if final.status not in (0, 1):
        final = _Outcome(final.status, final.message)
    gpus, jobs = _build(demand, table, prob, final)
    if mode == "fixed-count" and feasible:
        short = [j for j in jobs if not j.met]
        for j in short:
            notes.append(
                f"{j.name} gets {j.capacity:.1f} of the {j.required:.1f} "
                f"{'QPS' if j.kind == 'infer' else 'samples/s'} it needs on {fixed} GPU(s) "
                f"({j.coverage:.0%} of its target)"
            )
    baselines = _baselines(demand, table, prob, counter, time_limit_s)
    optimal, statement = _statement(phase1, final, mode)
    if not feasible and mode == "min-gpus":
        optimal, statement = False, "no plan meets the demand; shown: the best balanced coverage"
    solver = SolverInfo(
        optimal=optimal,
        statement=statement,
        mip_gap=final.mip_gap,
        time_s=time.perf_counter() - t_start,
        solves=counter.solves,
    )
    return Plan(
        feasible=feasible and all(j.met for j in jobs) if mode == "min-gpus" else feasible,
        mode=mode,
        gpus=gpus,
        jobs=jobs,
        baselines=baselines,
        solver=solver,
        explanation=tuple(explanation),
        notes=tuple(notes),
        headroom=demand.headroom,
        gpu_count=fixed,
        available={g.model: g.count for g in demand.gpus},
    )


def _covers(prob: _Problem, out: _Outcome) -> bool:
    """Whether a solution really covers every service and job (guards against rounding)."""
    if not (out.x or not (prob.services or prob.training)):
        return False
    for si, (name, _, req) in enumerate(prob.services):
        got = sum(
            n * prob.cap(prob.pools[mi].model, p, name)
            for (mi, p, s2), n in out.y.items()
            if s2 == si
        )
        if got < req * (1 - 1e-9):
            return False
    return len(out.z) == len(prob.training)


def _where_best(prob: _Problem, name: str) -> tuple[float, str, str]:
    best = (0.0, "", "")
    for pool in prob.pools:
        for p in pool.profiles:
            v = prob.cap(pool.model, p, name)
            if v > best[0]:
                best = (v, p, pool.model)
    return best


def _explain(
    demand: DemandSpec,
    table: CapacityTable,
    prob: _Problem,
    counter: _Counter,
    time_limit_s: float,
    fixed: int | None = None,
) -> tuple[list[str], _Outcome]:
    """Sentences saying which service or job cannot be served, and the best-effort plan."""
    lines: list[str] = []
    pct = f"{demand.headroom:.0%}"
    for svc in demand.services:
        best, _, _ = _where_best(prob, svc.name)
        if best <= 0:
            text = (
                f"service {svc.name}: no measured instance serves any load within its SLO "
                f"({svc.slo}) on any GPU model"
            )
            lat = table.best_latency_ms.get(svc.name)
            if lat is not None:
                text += (
                    f"; the lowest p{svc.slo.percentile:g} latency measured for it is "
                    f"{lat[0]:.1f} ms ({lat[2]} on {lat[1]})"
                )
            lines.append(text + ". Relax the SLO, or serve it with a smaller batch size.")
            continue
        alone = sum(p.count * _per_gpu(prob, p, svc.name) for p in prob.pools)
        req = demand.required_qps(svc)
        if alone < req * (1 - 1e-9):
            lines.append(
                f"service {svc.name}: needs {req:.1f} QPS ({svc.target_qps:g} + {pct} headroom) "
                f"but all {demand.total_gpus} GPUs serving only it reach {alone:.1f} QPS "
                f"({alone / svc.target_qps:.0%} of its target)"
            )
    for job in demand.training:
        best, p, m = _where_best(prob, job.name)
        if best < job.min_samples_per_s:
            where = f" ({p} on {m})" if best > 0 else ""
            lines.append(
                f"training job {job.name}: needs {job.min_samples_per_s:g} samples/s on one "
                f"instance; the fastest measured instance gives {best:.1f} samples/s{where}"
            )
    limit = fixed if fixed is not None else demand.total_gpus
    best_effort = _solve(
        prob,
        objective="coverage",
        require=False,
        total_le=limit,
        time_limit_s=min(time_limit_s, _TIE_BREAK_LIMIT_S),
        mip_rel_gap=_TIE_BREAK_GAP,
        counter=counter,
    )
    if best_effort.status not in (0, 1):
        n_train = len(demand.training)
        lines.append(
            f"the {n_train} training job(s) cannot all get an instance fast enough on "
            f"{limit} GPU(s)"
        )
        return lines, best_effort
    if best_effort.t is not None and not lines:
        lines.append(
            f"together the services need more than the {limit} GPU(s) available: the best "
            f"plan on all of them covers {best_effort.t:.0%} of every service's target QPS "
            f"(the demand asks for {1 + demand.headroom:.0%})"
        )
    if fixed is None:
        need = _solve(
            prob, objective="min-gpus", limits=False, time_limit_s=time_limit_s, counter=counter
        )
        if need.status in (0, 1) and _covers(prob, need):
            by_model: dict[str, int] = {}
            for (mi, _), n in need.x.items():
                by_model[prob.pools[mi].model] = by_model.get(prob.pools[mi].model, 0) + n
            split = ", ".join(f"{n} x {m}" for m, n in by_model.items())
            lines.append(
                f"serving the whole demand would take {need.gpus} GPU(s) ({split}); "
                f"the demand lists {demand.total_gpus}"
            )
    return lines, best_effort


# ---------------------------------------------------------------- baselines


def _baselines(
    demand: DemandSpec,
    table: CapacityTable,
    prob: _Problem,
    counter: _Counter,
    time_limit_s: float,
) -> tuple[BaselineResult, ...]:
    return (
        _whole_gpu_baseline(demand, table, prob, counter, time_limit_s),
        _uniform_baseline(demand, prob, counter, time_limit_s),
    )


def _min_gpus(
    prob: _Problem, counter: _Counter, time_limit_s: float
) -> tuple[int | None, bool, _Outcome | None]:
    """GPUs needed within the counts, else without them (fits=False), else None."""
    out = _solve(prob, objective="min-gpus", time_limit_s=time_limit_s, counter=counter)
    if out.status in (0, 1) and _covers(prob, out):
        return out.gpus, True, out
    out = _solve(
        prob, objective="min-gpus", limits=False, time_limit_s=time_limit_s, counter=counter
    )
    if out.status in (0, 1) and _covers(prob, out):
        return out.gpus, False, out
    return None, False, None


def _whole_gpu_baseline(
    demand: DemandSpec, table: CapacityTable, prob: _Problem, counter: _Counter, time_limit_s: float
) -> BaselineResult:
    title = "whole GPUs per service (MIG off)"
    caps: dict[Key, float] = {}
    sources: set[str] = set()
    names = [s.name for s in demand.services] + [t.name for t in demand.training]
    for pool in prob.pools:
        full = get_model(pool.model).full_profile.name
        for name in names:
            whole = table.value(pool.model, WHOLE_GPU, name)
            if whole is not None:
                caps[(pool.model, WHOLE_GPU, name)] = whole
                sources.add("whole-GPU runs")
            else:
                v = table.value(pool.model, full, name)
                if v is not None:
                    caps[(pool.model, WHOLE_GPU, name)] = v
                    sources.add(f"{full} runs")
    missing = [
        name for name in names if not any((p.model, WHOLE_GPU, name) in caps for p in prob.pools)
    ]
    if missing:
        return BaselineResult(
            "whole-gpu",
            title,
            None,
            False,
            detail=f"not computed: no whole-GPU or full-profile capacity for {', '.join(missing)}",
        )
    base = _Problem(
        pools=[_Pool(p.model, p.count, [(WHOLE_GPU, {WHOLE_GPU: 1})]) for p in prob.pools],
        services=prob.services,
        training=prob.training,
        cap=lambda m, p, j: caps.get((m, p, j), 0.0),
    )
    # Each GPU serves one service: a pool of one instance per GPU is exactly that.
    gpus, fits, _ = _min_gpus(base, counter, time_limit_s)
    src = " and ".join(sorted(sources))
    if gpus is None:
        return BaselineResult("whole-gpu", title, None, False, detail="cannot serve the demand")
    detail = f"capacities from {src}" + (
        "" if fits else "; does not fit the GPUs available (counted without the per-model limits)"
    )
    return BaselineResult("whole-gpu", title, gpus, fits, detail=detail)


def uniform_layouts(pool: GpuPoolSpec) -> list[CandidateLayout]:
    """Homogeneous layouts: as many instances of one profile as fit (``1g.10gb*7``, ``3g.40gb*2``).

    Raises:
        UsageError: the model is unknown or has no MIG.
    """
    return list(_uniform(pool.model, None if pool.profiles is None else tuple(pool.profiles)))


@functools.lru_cache(maxsize=64)
def _uniform(model: str, profiles: tuple[str, ...] | None) -> tuple[CandidateLayout, ...]:
    geometry = MigGeometry.for_model(model)
    out = []
    for prof in geometry.profiles:
        if not prof.placements or is_media_variant(prof):
            continue
        if profiles is not None and prof.profile.lower() not in profiles:
            continue
        best = 0
        for n in range(1, prof.instances_total + 1):
            spec = LayoutSpec((InstanceSpec(prof.profile),) * n)
            if not check_layout(geometry.resolve(spec), geometry).ok:
                break
            best = n
        if best:
            text = str(LayoutSpec((InstanceSpec(prof.profile),) * best))
            shape = f"{prof.compute_slices}c{prof.memory_slices}m" + (
                f"*{best}" if best > 1 else ""
            )
            out.append(CandidateLayout(model, text, {prof.profile: best}, shape))
    return tuple(out)


def _uniform_baseline(
    demand: DemandSpec,
    prob: _Problem,
    counter: _Counter,
    time_limit_s: float,
) -> BaselineResult:
    title = "best uniform layout on every GPU"
    shapes: dict[str, dict[str, CandidateLayout]] = {}
    for pool in demand.gpus:
        for cand in uniform_layouts(pool):
            shapes.setdefault(cand.shape, {})[pool.model] = cand

    def sub(per_model: dict[str, CandidateLayout]) -> _Problem:
        return _Problem(
            pools=[
                _Pool(p.model, p.count, [(per_model[p.model].layout, per_model[p.model].counts)])
                for p in prob.pools
                if p.model in per_model
            ],
            services=prob.services,
            training=prob.training,
            cap=prob.cap,
        )

    # Within the available GPUs first; only if no layout fits, how many each would need.
    for limits in (True, False):
        best: tuple[int, float, str] | None = None  # (gpus, -spare, shape)
        for shape, per_model in shapes.items():
            problem = sub(per_model)
            out = _solve(
                problem,
                objective="min-gpus",
                limits=limits,
                time_limit_s=time_limit_s,
                counter=counter,
            )
            if out.status not in (0, 1) or not _covers(problem, out):
                continue
            key = (out.gpus, -_spare(problem, out), shape)
            if best is None or key < best:
                best = key
        if best is not None:
            gpus, _, shape = best
            text = " / ".join(dict.fromkeys(c.layout for c in shapes[shape].values()))
            detail = (
                ""
                if limits
                else "does not fit the GPUs available (counted without the per-model limits)"
            )
            return BaselineResult("uniform", title, gpus, limits, layout=text, detail=detail)
    return BaselineResult(
        "uniform", title, None, False, detail="no uniform layout can serve the demand"
    )


def _spare(prob: _Problem, out: _Outcome) -> float:
    """Mean service coverage of a solution (its spare capacity)."""
    if not prob.services:
        return 0.0
    cov = []
    for si, (name, dem, _) in enumerate(prob.services):
        got = sum(
            n * prob.cap(prob.pools[mi].model, p, name)
            for (mi, p, s2), n in out.y.items()
            if s2 == si
        )
        cov.append(got / dem)
    return sum(cov) / len(cov)
