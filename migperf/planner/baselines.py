"""The baselines a plan is compared with, solved with the same program.

* whole GPUs per service (MIG off): the measured whole-GPU capacity, else the
  full-size profile's; each GPU serves one service;
* the best uniform layout: one profile, as many as fit, on every GPU
  (``1g.10gb*7``);
* when a service may run MPS inside its instances: the same plan without
  MPS (MIG only), so the plan says what MPS saved.

The whole-GPU and uniform baselines use the one-process capacities only.

Each is counted within the GPUs available first and, when it cannot fit
them, without the per-model limits (``fits`` is then False).
"""

from __future__ import annotations

from dataclasses import replace

from migperf.nvml.catalog import get_model
from migperf.planner.candidates import CandidateLayout, uniform_layouts
from migperf.planner.capacity import WHOLE_GPU, CapacityTable, Key
from migperf.planner.demand import DemandSpec
from migperf.planner.milp import Outcome, Pool, Problem, SolveCounter, covers, served, solve
from migperf.planner.result import BaselineResult

__all__ = ["compare_baselines"]


def compare_baselines(
    demand: DemandSpec,
    table: CapacityTable,
    prob: Problem,
    counter: SolveCounter,
    time_limit_s: float,
) -> tuple[BaselineResult, ...]:
    """The whole-GPU and the uniform-layout baselines for a demand (and MIG only, with MPS).

    Args:
        demand: The demand.
        table: Capacities (the whole-GPU baseline reads whole-GPU and full-profile ones).
        prob: The plan's program (its pools, services, training jobs and capacities).
        counter: Counts the solves.
        time_limit_s: HiGHS time limit per program.
    """
    mig_only = replace(prob, mps=None)
    out = (
        _whole_gpu_baseline(demand, table, prob, counter, time_limit_s),
        _uniform_baseline(demand, mig_only, counter, time_limit_s),
    )
    if prob.mps is None:
        return out
    return (*out, _mig_only_baseline(mig_only, counter, time_limit_s))


def _mig_only_baseline(prob: Problem, counter: SolveCounter, time_limit_s: float) -> BaselineResult:
    title = "the same planner without MPS (MIG only)"
    gpus, fits, out = _min_gpus(prob, counter, time_limit_s)
    if gpus is None or out is None:
        return BaselineResult(
            "mig-only", title, None, False, detail="cannot serve the demand without MPS"
        )
    detail = "" if out.status == 0 else "not proven optimal within the time limit"
    if not fits:
        detail = "does not fit the GPUs available (counted without the per-model limits)"
    return BaselineResult("mig-only", title, gpus, fits, detail=detail)


def _min_gpus(
    prob: Problem, counter: SolveCounter, time_limit_s: float
) -> tuple[int | None, bool, Outcome | None]:
    """GPUs needed within the counts, else without them (fits=False), else None."""
    out = solve(prob, objective="min-gpus", time_limit_s=time_limit_s, counter=counter)
    if out.status in (0, 1) and covers(prob, out):
        return out.gpus, True, out
    out = solve(
        prob, objective="min-gpus", limits=False, time_limit_s=time_limit_s, counter=counter
    )
    if out.status in (0, 1) and covers(prob, out):
        return out.gpus, False, out
    return None, False, None


def _whole_gpu_baseline(
    demand: DemandSpec,
    table: CapacityTable,
    prob: Problem,
    counter: SolveCounter,
    time_limit_s: float,
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
    base = Problem(
        pools=[Pool(p.model, p.count, [(WHOLE_GPU, {WHOLE_GPU: 1})]) for p in prob.pools],
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


def _uniform_baseline(
    demand: DemandSpec,
    prob: Problem,
    counter: SolveCounter,
    time_limit_s: float,
) -> BaselineResult:
    title = "best uniform layout on every GPU"
    shapes: dict[str, dict[str, CandidateLayout]] = {}
    for pool in demand.gpus:
        for cand in uniform_layouts(pool):
            shapes.setdefault(cand.shape, {})[pool.model] = cand

    def sub(per_model: dict[str, CandidateLayout]) -> Problem:
        return Problem(
            pools=[
                Pool(p.model, p.count, [(per_model[p.model].layout, per_model[p.model].counts)])
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
            out = solve(
                problem,
                objective="min-gpus",
                limits=limits,
                time_limit_s=time_limit_s,
                counter=counter,
            )
            if out.status not in (0, 1) or not covers(problem, out):
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


def _spare(prob: Problem, out: Outcome) -> float:
    """Mean service coverage of a solution (its spare capacity)."""
    if not prob.services:
        return 0.0
    cov = [served(prob, out, si) / dem for si, (_, dem, _) in enumerate(prob.services)]
    return sum(cov) / len(cov)
