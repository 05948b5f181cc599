"""Benchmark the layout planner: 10 services on 64 GPUs of two models, against the baselines.

Run with ``python benchmarks/planner.py [--services 10] [--gpus 64] [--seed 0]``.
It builds a seeded synthetic capacity table for A100-80GB and H100-80GB (half
the GPUs each; small models that gain little from a bigger slice, large ones
that scale almost linearly, H100 1.5-2.2x faster), sizes each service's demand
to a random share of the fleet, and prints:

* the planning time, wall clock and CPU (enumerating layouts, both solver
  phases and both baselines; on a busy machine the wall time grows with the
  load, the CPU time does not), and whether HiGHS proved the plan optimal;
* GPUs used by the plan, by one whole GPU per service (MIG off) and by the
  best uniform layout, and the plan's ratio to each.

Exits with status 1 when planning takes 10 s or more.
"""

from __future__ import annotations

import argparse
import random
import time

from migperf.nvml.catalog import get_model
from migperf.planner import (
    CapacityEntry,
    CapacityTable,
    needed_keys,
    parse_demand,
    plan_layout,
    planning_layouts,
)

MODELS = ("a100-80gb", "h100-80gb")
WORKLOADS = ("resnet50", "resnet18", "bert-base", "minilm", "vit-base", "distilbert", "gemm")
LIMIT_S = 10.0


def synthetic(
    services: int, gpus: int, seed: int
) -> tuple[str, dict[str, tuple[float, float, float]]]:
    """A demand file's text and per service (base QPS of a 1g, scaling exponent, H100 speedup)."""
    rnd = random.Random(seed)
    traits: dict[str, tuple[float, float, float]] = {}
    lines = ["services:"]
    for k in range(services):
        name = f"svc{k:02d}"
        base = rnd.uniform(40, 400)
        alpha = rnd.uniform(0.35, 1.0)  # capacity ~ SMs ** alpha: small models scale poorly
        speedup = rnd.uniform(1.5, 2.2)
        traits[name] = (base, alpha, speedup)
        # Demand: what 5-14 whole A100s would serve: together about 40-55 GPUs of the 64.
        qps = round(base * 7**alpha * rnd.uniform(5.0, 14.0), 1)
        pct, slo = rnd.choice(((99, 50), (99, 100), (95, 30), (90, 20)))
        lines.append(
            f"  - {{name: {name}, workload: {rnd.choice(WORKLOADS)}, target_qps: {qps}, "
            f"slo: {{percentile: {pct}, latency_ms: {slo}}}}}"
        )
    half = gpus // 2
    lines.append(
        f"gpus: [{{model: {MODELS[0]}, count: {gpus - half}}}, {{model: {MODELS[1]}, count: {half}}}]"
    )
    lines.append("headroom: 0.1")
    return "\n".join(lines) + "\n", traits


def capacities(demand_text: str, traits: dict[str, tuple[float, float, float]]) -> CapacityTable:
    """Capacity ~ base x (SMs / 14) ** alpha, x the H100 speedup; 1g.20gb +5 % (more memory)."""
    demand = parse_demand(demand_text, "<benchmark>")
    layouts = {g.model: planning_layouts(g) for g in demand.gpus}
    entries = {}
    for model, profile, job in needed_keys(demand, layouts):
        base, alpha, speedup = traits[job]
        fact = next(p for p in get_model(model).profiles if p.name == profile)
        value = base * (fact.sm_count / 14) ** alpha
        if model.startswith("h100"):
            value *= speedup * 14 / 16  # per-SM speedup (an H100 1g has 16 SMs)
        if profile.startswith("1g.20gb"):
            value *= 1.05
        entries[(model, profile, job)] = CapacityEntry(model, profile, job, "infer", value, 3)
    return CapacityTable(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    text, traits = synthetic(args.services, args.gpus, args.seed)
    demand = parse_demand(text, "<benchmark>")
    table = capacities(text, traits)
    t0, c0 = time.perf_counter(), time.process_time()
    plan = plan_layout(demand, table)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0

    print(
        f"{args.services} services on {args.gpus} GPUs ({', '.join(MODELS)}), seed {args.seed}: "
        f"planned in {elapsed:.2f} s wall, {cpu:.2f} s CPU ({plan.solver.solves} programs, "
        "HiGHS via scipy.optimize.milp)"
    )
    print(f"  {plan.solver.statement}")
    if not plan.feasible:
        print("  demand NOT met: " + "; ".join(plan.explanation))
    used = {m: sum(1 for g in plan.gpus if g.model == m) for m in MODELS}
    print(
        f"  plan: {plan.gpus_used} GPUs ({', '.join(f'{n} x {m}' for m, n in used.items())}), "
        f"smallest coverage {plan.min_coverage or 0:.0%} of target (headroom {demand.headroom:.0%})"
    )
    for b in plan.baselines:
        if b.gpus is None:
            print(f"  {b.title}: cannot serve the demand ({b.detail})")
            continue
        fits = (
            "" if b.fits else " (does not fit the GPUs available; counted without per-model limits)"
        )
        layout = f" [{b.layout}]" if b.layout else ""
        print(
            f"  {b.title}{layout}: {b.gpus} GPUs{fits}; plan/baseline = "
            f"{plan.gpus_used / b.gpus:.2f} ({b.gpus - plan.gpus_used} GPUs saved)"
        )
    if elapsed >= LIMIT_S:
        raise SystemExit(f"planning took {elapsed:.1f} s, over the {LIMIT_S:g} s budget")


if __name__ == "__main__":
    main()
