"""The mixed-integer program behind the planner, solved by HiGHS through :func:`scipy.optimize.milp`.

Instances of one profile on one GPU model are interchangeable whatever GPU
they sit on, so assignments are counted per profile pool rather than per GPU,
which keeps the program small (a few hundred variables for 64 GPUs and 10
services)::

    x[m,L]     integer  GPUs of model m with layout L          (sum_L x[m,L] <= count[m])
    y[m,p,s,k] integer  instances of profile p serving s with k MPS processes
                        (k = 1: no MPS; k > 1 only where s allows MPS and the
                        capacity of p running k processes of s is known)
    z[m,p,j]   binary   training job j on an instance of p    (only where cap >= floor)

    pool:     sum_{s,k} y[m,p,s,k] + sum_j z[m,p,j] <= sum_L n[L,p] x[m,L]
    service:  sum_{m,p,k} cap[m,p,s,k] y[m,p,s,k] >= demand[s] (1 + headroom)
    training: sum_{m,p} z[m,p,j] = 1

An instance of ``p`` serving ``s`` takes one instance whatever ``k`` it runs
(the SLO is already in each capacity: a count that breaks it has none), so a
count whose capacity another beats, or matches with fewer processes, is never
the better choice; :meth:`Problem.options` drops those before the program is
built, which leaves per (m, p, s) the count with the most capacity. A
constraint that charged processes (a per-GPU client limit, memory) would keep
more candidates; the program takes them as they come.

Objective ``min-gpus`` minimizes ``sum x``; objective ``coverage`` maximizes
the smallest coverage ``t`` (``capacity[s] >= t demand[s]`` for every s) plus
a small weight on the mean coverage, so ties go to the plan with the most
spare capacity. :mod:`migperf.planner.optimizer` chains these programs;
numpy and scipy are imported only when a program is solved.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from migperf.planner.candidates import CandidateLayout
from migperf.planner.demand import DemandSpec
from migperf.planner.table import CapacityTable

__all__ = [
    "Outcome",
    "Pool",
    "Problem",
    "SolveCounter",
    "covers",
    "instance_capacity",
    "per_gpu_capacity",
    "problem_for",
    "served",
    "solve",
]

#: Weight of the mean coverage next to the smallest one in the coverage objective.
_SPREAD_WEIGHT = 1e-3


@dataclass
class Pool:
    """The GPUs of one model and the layouts they may get.

    Attributes:
        model: Catalog model key.
        count: GPUs of that model available.
        layouts: ``(layout text, {profile: instances})`` per candidate layout.
    """

    model: str
    count: int
    layouts: list[tuple[str, Mapping[str, int]]]

    @property
    def profiles(self) -> list[str]:
        """Every profile some layout has, in first-seen order."""
        seen: dict[str, None] = {}
        for _, counts in self.layouts:
            for p in counts:
                seen.setdefault(p, None)
        return list(seen)

    def most(self, profile: str) -> int:
        """The most instances of a profile one GPU of the pool can hold."""
        return max((c.get(profile, 0) for _, c in self.layouts), default=0)


@dataclass
class Problem:
    """What the program is built from.

    Attributes:
        pools: The GPU pools, one per model.
        services: ``(name, demand, required)`` per service (QPS).
        training: ``(name, floor)`` per training job (samples/s).
        cap: ``cap(model, profile, job)``: an instance's capacity for a job (0: none).
        mps: ``mps(model, profile, service)``: ``{k: total capacity}`` of an
            instance running ``k >= 2`` MPS processes of the service, for the
            counts it may run (None: no MPS anywhere).
    """

    pools: list[Pool]
    services: list[tuple[str, float, float]]  # name, demand, required
    training: list[tuple[str, float]]  # name, floor
    cap: Callable[[str, str, str], float]
    mps: Callable[[str, str, str], Mapping[int, float]] | None = None

    def options(self, model: str, profile: str, name: str) -> list[tuple[int, float]]:
        """The ``(processes, capacity)`` candidates of one instance of ``profile`` serving ``name``.

        Every candidate takes one instance and nothing else, so one whose
        capacity another beats, or matches with fewer processes, is dropped
        (see the module docstring); an empty list: the instance cannot serve it.
        """
        found = [(1, self.cap(model, profile, name))]
        if self.mps is not None:
            found += sorted(self.mps(model, profile, name).items())
        found = [(k, c) for k, c in found if c > 0]
        return [max(found, key=lambda kc: (kc[1], -kc[0]))] if found else []

    def best(self, model: str, profile: str, name: str) -> float:
        """The most one instance of ``profile`` serves of ``name`` (MPS included; 0: nothing)."""
        return max((c for _, c in self.options(model, profile, name)), default=0.0)


@dataclass
class Outcome:
    """One solved program, its variables keyed as in the module docstring.

    Attributes:
        status: scipy's ``milp`` status (0 optimal, 1 limit, 2 infeasible, 4 other).
        message: scipy's message.
        x: GPUs per ``(pool, layout)`` (nonzero only).
        y: Instances per ``(pool, profile, service, MPS processes)`` (nonzero only).
        z: ``(pool, profile, training job)`` pairs chosen (value 1).
        t: The smallest coverage, with the ``coverage`` objective.
        mip_gap: The relative MIP gap HiGHS reported.
        bound: The dual bound HiGHS proved on the objective (``min-gpus``:
            no plan uses fewer GPUs than its ceiling).
        time_s: HiGHS's time for this program.
    """

    status: int
    message: str
    x: dict[tuple[int, int], int] = field(default_factory=dict)
    y: dict[tuple[int, str, int, int], int] = field(default_factory=dict)
    z: dict[tuple[int, str, int], int] = field(default_factory=dict)
    t: float | None = None
    mip_gap: float | None = None
    bound: float | None = None
    time_s: float = 0.0

    @property
    def gpus(self) -> int:
        """GPUs the solution uses."""
        return sum(self.x.values())


class SolveCounter:
    """Programs solved and their solver time, over all the solves of one plan."""

    def __init__(self) -> None:
        self.solves = 0
        self.time_s = 0.0


def problem_for(
    demand: DemandSpec, table: CapacityTable, layouts: Mapping[str, Sequence[CandidateLayout]]
) -> Problem:
    """The program's data for a demand: its pools, services, training jobs and capacities.

    Args:
        demand: Services, training jobs and GPUs.
        table: Measured (or estimated) capacities; a missing or non-positive one counts as 0.
        layouts: Candidate layouts per model.
    """

    most = demand.max_processes

    def cap(model: str, profile: str, job: str) -> float:
        value = table.value(model, profile, job)
        return value if value is not None and value > 0 else 0.0

    def mps(model: str, profile: str, job: str) -> dict[int, float]:
        allowed = most.get(job, 1)
        if allowed < 2:
            return {}
        return {k: v for k, v in table.mps_values(model, profile, job).items() if k <= allowed}

    return Problem(
        pools=[
            Pool(g.model, g.count, [(c.layout, c.counts) for c in layouts[g.model]])
            for g in demand.gpus
        ],
        services=[(s.name, s.target_qps, demand.required_qps(s)) for s in demand.services],
        training=[(t.name, t.min_samples_per_s) for t in demand.training],
        cap=cap,
        mps=mps if demand.allows_mps else None,
    )


def solve(
    prob: Problem,
    *,
    objective: Literal["min-gpus", "coverage"],
    limits: bool = True,
    total_le: int | None = None,
    total_eq: int | None = None,
    require: bool = True,
    time_limit_s: float = 20.0,
    mip_rel_gap: float = 1e-4,
    counter: SolveCounter | None = None,
) -> Outcome:
    """Build and solve one program.

    Args:
        prob: The program's data.
        objective: ``min-gpus`` (fewest GPUs) or ``coverage`` (largest smallest coverage).
        limits: Keep each model within its available count (False: "how many would it take").
        total_le: At most this many GPUs in all.
        total_eq: Exactly this many GPUs in all.
        require: Every service must be covered (False: best effort).
        time_limit_s: HiGHS time limit.
        mip_rel_gap: HiGHS relative MIP gap.
        counter: Counts the solve and its time.

    Returns:
        The outcome; its status is 0 optimal, 1 limit, 2 infeasible, 4 other.
    """
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
    y_idx: dict[tuple[int, str, int, int], int] = {}
    y_cap: dict[tuple[int, str, int, int], float] = {}
    z_idx: dict[tuple[int, str, int], int] = {}
    for mi, pool in enumerate(prob.pools):
        bound = pool.count if limits else big
        for li in range(len(pool.layouts)):
            x_idx[(mi, li)] = var(0, bound)
        for p in pool.profiles:
            most = pool.most(p) * bound
            for si, (name, _, _) in enumerate(prob.services):
                for k, value in prob.options(pool.model, p, name):
                    y_idx[(mi, p, si, k)] = var(0, most)
                    y_cap[(mi, p, si, k)] = value
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
            for key, k in [*y_idx.items(), *z_idx.items()]:
                if key[0] == mi and key[1] == p:
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
    for si, (_, dem, req) in enumerate(prob.services):
        coefs = {k: y_cap[key] for key, k in y_idx.items() if key[2] == si}
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
        for key, k in y_idx.items():
            _, dem, _ = prob.services[key[2]]
            c[k] -= scale * y_cap[key] / dem
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
    took = time.perf_counter() - t0
    if counter is not None:
        counter.solves += 1
        counter.time_s += took
    out = Outcome(
        int(res.status),
        str(res.message),
        mip_gap=_finite(getattr(res, "mip_gap", None)),
        bound=_finite(getattr(res, "mip_dual_bound", None)),
        time_s=took,
    )
    if res.x is None:
        return out
    xs = res.x
    out.x = {key: int(round(xs[k])) for key, k in x_idx.items() if round(xs[k]) > 0}
    out.y = {key: int(round(xs[k])) for key, k in y_idx.items() if round(xs[k]) > 0}
    out.z = {key: int(round(xs[k])) for key, k in z_idx.items() if round(xs[k]) > 0}
    out.t = float(xs[t_idx]) if t_idx is not None else None
    return out


def covers(prob: Problem, out: Outcome) -> bool:
    """Whether a solution really covers every service and job (guards against rounding)."""
    if not (out.x or not (prob.services or prob.training)):
        return False
    for si, (_, _, req) in enumerate(prob.services):
        if served(prob, out, si) < req * (1 - 1e-9):
            return False
    return len(out.z) == len(prob.training)


def instance_capacity(prob: Problem, mi: int, profile: str, si: int, processes: int) -> float:
    """The capacity of one instance of a solution's ``y`` key (0 when it is no candidate)."""
    name = prob.services[si][0]
    return dict(prob.options(prob.pools[mi].model, profile, name)).get(processes, 0.0)


def served(prob: Problem, out: Outcome, si: int) -> float:
    """The capacity a solution gives service ``si``."""
    return sum(
        n * instance_capacity(prob, mi, p, s2, k) for (mi, p, s2, k), n in out.y.items() if s2 == si
    )


def per_gpu_capacity(prob: Problem, pool: Pool, name: str) -> float:
    """The most capacity one GPU of the pool can give one service (MPS included)."""
    return max(
        (
            sum(n * prob.best(pool.model, p, name) for p, n in counts.items())
            for _, counts in pool.layouts
        ),
        default=0.0,
    )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _unlimited_bound(prob: Problem) -> int:
    """GPUs per model that surely suffice when counts are lifted (for 'how many would it take')."""
    total = len(prob.training)
    for name, _, req in prob.services:
        best = max((per_gpu_capacity(prob, pool, name) for pool in prob.pools), default=0.0)
        total += math.ceil(req / best) if best > 0 else 0
    return max(total, 1)
