"""The layout planner: the fewest GPUs that serve a workload mix at its SLOs.

The problem. Each GPU of model ``m`` gets one layout ``L`` from its model's
maximal layouts (:mod:`migperf.planner.candidates`), and each of its
instances serves at most one service or training job. A service ``s`` is
covered when the summed capacity of its instances (the measured
``max_qps_under_slo`` of each instance's profile, see
:mod:`migperf.planner.capacity`, or a capacities file's value,
:mod:`migperf.planner.capfile`) reaches ``target_qps x (1 + headroom)``; a
training job needs one instance whose ``samples_per_s`` reaches its floor. A
service that allows MPS (``mps: {max_processes: k}``) may instead run up to
``k`` MPS processes in an instance, with the measured capacity of that many.
The mixed-integer program is in :mod:`migperf.planner.milp`.

Phase 1 minimizes the GPU count. Phase 2 fixes that count and maximizes the
smallest coverage plus a small weight on the mean coverage, so ties between
plans with as many GPUs go to the one with the most spare capacity; being a
tie-break, it is solved to within 1 % (proving the last 0.01 % of a max-min
program can take minutes). With a fixed GPU count (``gpu_count``) only phase
2 runs, under ``sum x <= gpu_count``, to HiGHS's default 0.01 %. The per-GPU
plan is then rebuilt from the pool counts. The result says whether HiGHS
proved the GPU count (or the fixed-count coverage) optimal or, at the time
limit, what gap remains, the fewest GPUs HiGHS proved any plan needs, and
what that means. The baselines (:mod:`migperf.planner.baselines`)
are solved the same way.

When the demand cannot be met, the result is not an empty plan: it says which
service or job is the problem and what is achievable (the best balanced
coverage on every available GPU, and how many GPUs the demand would need).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from migperf.errors import UsageError
from migperf.planner.baselines import compare_baselines
from migperf.planner.candidates import CandidateLayout, needed_keys, planning_layouts
from migperf.planner.capacity import CapacityTable
from migperf.planner.demand import DemandSpec
from migperf.planner.milp import (
    Outcome,
    Problem,
    SolveCounter,
    covers,
    per_gpu_capacity,
    problem_for,
    solve,
)
from migperf.planner.result import (
    CapacityUse,
    GpuPlan,
    InstancePlan,
    JobOutcome,
    Plan,
    SolverInfo,
)

__all__ = ["plan_layout"]

#: Relative MIP gap and time limit of the spare-capacity tie-break (phase 2)
#: and of the best-effort plan shown when the demand cannot be met.
_TIE_BREAK_GAP = 1e-2
_TIE_BREAK_LIMIT_S = 3.0


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
            ``table.missing(needed_keys(...), demand.max_processes)`` first).
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
    missing = table.missing(needed_keys(demand, layouts), demand.max_processes)
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
    prob = problem_for(demand, table, layouts)
    counter = SolveCounter()
    notes = list(table.notes)
    if table.has_estimates:
        notes.append(
            "some capacities are ESTIMATES (--assume-linear: scaled by SM count from the "
            "nearest measured profile); measure them before relying on the plan"
        )
    notes += _mps_notes(demand, table)
    explanation: list[str] = []
    phase1: Outcome | None = None
    if fixed is None:
        mode: Literal["min-gpus", "fixed-count"] = "min-gpus"
        phase1 = solve(prob, objective="min-gpus", time_limit_s=time_limit_s, counter=counter)
        if phase1.status == 1 and not covers(prob, phase1):
            # The time limit came before any plan: that says nothing about feasibility.
            feasible = False
            lb = _lower_bound(phase1)
            explanation = [
                f"HiGHS found no plan within the {time_limit_s:g} s time limit"
                + (f" (no plan can use fewer than {lb} GPU(s))" if lb else "")
                + "; raise --time-limit, or shrink the program (fewer profiles in "
                "gpus[].profiles, fewer services)"
            ]
            final = phase1
        elif phase1.status in (0, 1) and covers(prob, phase1):
            final = phase1
            if prob.services:
                # A tie-break: 1 % of the best spare capacity is close enough, and
                # proving the last 0.01 % of a max-min program can take minutes.
                phase2 = solve(
                    prob,
                    objective="coverage",
                    total_eq=phase1.gpus,
                    time_limit_s=min(time_limit_s, _TIE_BREAK_LIMIT_S),
                    mip_rel_gap=_TIE_BREAK_GAP,
                    counter=counter,
                )
                if phase2.status in (0, 1) and covers(prob, phase2):
                    final = phase2
            feasible = True
        else:
            feasible = False
            explanation, final = _explain(demand, table, prob, counter, time_limit_s)
    else:
        mode = "fixed-count"
        final = solve(
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
        final = Outcome(final.status, final.message)
    gpus, jobs = _build(demand, table, prob, final)
    if mode == "fixed-count" and feasible:
        short = [j for j in jobs if not j.met]
        for j in short:
            notes.append(
                f"{j.name} gets {j.capacity:.1f} of the {j.required:.1f} "
                f"{'QPS' if j.kind == 'infer' else 'samples/s'} it needs on {fixed} GPU(s) "
                f"({j.coverage:.0%} of its target)"
            )
    main = phase1 if phase1 is not None else final
    main_time = main.time_s
    baselines = compare_baselines(demand, table, prob, counter, time_limit_s)
    optimal, statement = _statement(phase1, final, mode)
    gap, bound, why = _proof(main, mode, time_limit_s)
    if not feasible and mode == "min-gpus":
        optimal, statement = False, "no plan meets the demand; shown: the best balanced coverage"
        why = ""
    solver = SolverInfo(
        optimal=optimal,
        statement=statement,
        mip_gap=final.mip_gap,
        time_s=time.perf_counter() - t_start,
        solves=counter.solves,
        gap=gap,
        lower_bound=bound,
        main_time_s=main_time,
        solve_time_s=counter.time_s,
        why=why,
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


def _build(
    demand: DemandSpec,
    table: CapacityTable,
    prob: Problem,
    out: Outcome,
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
    used: dict[str, dict[tuple[str, str, int], list[Any]]] = {}  # job -> key -> [entry, n]

    def assign(mi: int, p: str, name: str, kind: str, count: int, processes: int = 1) -> None:
        free = pools.get((mi, p), [])
        start = taken.get((mi, p), 0)
        model = prob.pools[mi].model
        entry = table.entry(model, p, name, processes)
        for inst in free[start : start + count]:
            inst.update(
                job=name,
                kind=kind,
                capacity=entry.value if entry else 0.0,
                estimate=bool(entry and entry.source == "estimate"),
                processes=processes,
                batch_size=entry.batch_size if entry else None,
                origin=entry.origin if entry else "",
            )
        got = min(count, max(0, len(free) - start))
        if got and entry is not None:
            slot = used.setdefault(name, {}).setdefault((model, p, processes), [entry, 0])
            slot[1] += got
        taken[(mi, p)] = start + count

    for si, (name, _, _) in enumerate(prob.services):
        for (mi, p, s2, k), n in sorted(out.y.items()):
            if s2 == si:
                assign(mi, p, name, "infer", n, k)
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
                    processes=int(inst.get("processes", 1)),
                    batch_size=inst.get("batch_size"),
                    origin=str(inst.get("origin", "")),
                )
            )
        size = per_node[model]
        plans.append(GpuPlan(model, index, index // size, index % size, text, tuple(built)))

    def uses(name: str) -> tuple[CapacityUse, ...]:
        return tuple(
            CapacityUse(m, p, k, e.value, n, e.origin, e.from_file)
            for (m, p, k), (e, n) in sorted(used.get(name, {}).items())
        )

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
            used=uses(s.name),
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
            used=uses(t.name),
        )
        for t in demand.training
    ]
    return tuple(plans), tuple(jobs)


def _mps_notes(demand: DemandSpec, table: CapacityTable) -> list[str]:
    """Services allowed MPS without any MPS capacity to plan it with."""
    notes = []
    for svc in demand.services:
        most = svc.max_processes
        if most < 2:
            continue
        models = {g.model for g in demand.gpus}
        have = {k for (m, _, j, k) in table.mps if j == svc.name and m in models and k <= most}
        if not have:
            notes.append(
                f"service {svc.name} may run up to {most} MPS processes per instance, but no "
                f"capacity with 2..{most} processes is known for it; planned without MPS"
            )
    return notes


def _lower_bound(o: Outcome) -> int | None:
    """The fewest GPUs HiGHS proved any plan needs (a min-gpus program's dual bound, rounded up)."""
    if o.bound is None:
        return None
    # The objective counts GPUs: any bound above n - 1 proves n.
    return max(0, math.ceil(o.bound - 1e-6))


def _proof(main: Outcome, mode: str, time_limit_s: float) -> tuple[float | None, int | None, str]:
    """The gap HiGHS proved on the main objective, the GPU lower bound, and what a gap means."""
    if mode == "fixed-count":
        gap = main.mip_gap
        if main.status == 1:
            shown = f"{gap:.2%}" if gap is not None else "an unknown gap"
            return (
                gap,
                None,
                (
                    f"HiGHS stopped at the {time_limit_s:g} s time limit with {shown} between the "
                    "smallest coverage found and what it proved possible; raise --time-limit to "
                    "close it"
                ),
            )
        return gap, None, ""
    bound = _lower_bound(main)
    used = main.gpus
    if not main.x:
        return main.mip_gap, bound, ""
    if bound is not None and bound >= used:
        return 0.0, used, ""
    gap = (used - bound) / used if bound is not None else main.mip_gap
    if main.status != 1:
        return gap, bound, ""
    if bound is None:
        return (
            gap,
            None,
            (
                f"HiGHS stopped at the {time_limit_s:g} s time limit without a lower bound: "
                f"fewer than {used} GPU(s) may do; raise --time-limit"
            ),
        )
    return (
        gap,
        bound,
        (
            f"HiGHS stopped at the {time_limit_s:g} s time limit: the plan uses {used} GPU(s) and "
            f"no plan uses fewer than {bound}, so a longer solve could save at most {used - bound}; "
            "raise --time-limit, or shrink the program (fewer profiles in gpus[].profiles, fewer "
            "services or MPS process counts)"
        ),
    )


def _statement(phase1: Outcome | None, final: Outcome, mode: str) -> tuple[bool, str]:
    """Whether the main objective is proven optimal, and the solver's result in words."""

    def words(o: Outcome, what: str, gap_asked: float, gpus: bool = False) -> tuple[bool, str]:
        gap = o.mip_gap or 0.0
        if o.status == 0 and gap <= 1e-4 * 1.0001:
            return True, f"{what}: proven optimal by HiGHS"
        lb = _lower_bound(o) if gpus and o.x else None
        if o.status in (0, 1) and lb is not None and lb >= o.gpus:
            # A GPU count is whole: a bound above n - 1 proves n, whatever the relative gap.
            return True, f"{what}: proven optimal by HiGHS (its lower bound is {lb} GPU(s))"
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
    ok1, s1 = words(phase1, "fewest GPUs", 1e-4, gpus=True)
    if final is phase1:
        return ok1, s1
    _, s2 = words(final, "spare-capacity tie-break", _TIE_BREAK_GAP)
    return ok1, f"{s1}; {s2}"


def _where_best(prob: Problem, name: str) -> tuple[float, str, str]:
    best = (0.0, "", "")
    for pool in prob.pools:
        for p in pool.profiles:
            v = prob.best(pool.model, p, name)
            if v > best[0]:
                best = (v, p, pool.model)
    return best


def _explain(
    demand: DemandSpec,
    table: CapacityTable,
    prob: Problem,
    counter: SolveCounter,
    time_limit_s: float,
    fixed: int | None = None,
) -> tuple[list[str], Outcome]:
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
        alone = sum(p.count * per_gpu_capacity(prob, p, svc.name) for p in prob.pools)
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
    best_effort = solve(
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
        need = solve(
            prob, objective="min-gpus", limits=False, time_limit_s=time_limit_s, counter=counter
        )
        if need.status in (0, 1) and covers(prob, need):
            by_model: dict[str, int] = {}
            for (mi, _), n in need.x.items():
                by_model[prob.pools[mi].model] = by_model.get(prob.pools[mi].model, 0) + n
            split = ", ".join(f"{n} x {m}" for m, n in by_model.items())
            lines.append(
                f"serving the whole demand would take {need.gpus} GPU(s) ({split}); "
                f"the demand lists {demand.total_gpus}"
            )
    return lines, best_effort
