"""Benchmark the layout planner: a mixed fleet against the baselines, and MPS inside MIG from a file.

Run with ``python benchmarks/planner.py [--services 10] [--gpus 64] [--seed 0]``.

Part 1 builds a seeded synthetic capacity table for A100-80GB and H100-80GB
(half the GPUs each; small models that gain little from a bigger slice, large
ones that scale almost linearly, H100 1.5-2.2x faster), sizes each service's
demand to a random share of the fleet, and prints:

* the planning time, wall clock and CPU (enumerating layouts, both solver
  phases and both baselines; on a busy machine the wall time grows with the
  load, the CPU time does not), and whether HiGHS proved the plan optimal;
* GPUs used by the plan, by one whole GPU per service (MIG off) and by the
  best uniform layout, and the plan's ratio to each.

Part 2 reads the 11 services' capacities on A100-80GB from a capacities file
(``configs/capacities-a100-80gb.csv``: one instance alone, and running 2 or 3
MPS processes; ``--write-capacities PATH`` regenerates it from the seeded
model in :func:`mps_capacities`), and plans six traffic scenarios of the same
11 services twice, MIG only and with MPS inside MIG (``max_processes: 3``),
printing per plan the GPUs, the gap HiGHS proved on the GPU count, HiGHS's
time for the main program and the whole planning time (baselines included).

Exits with status 1 when any planning takes 10 s or more.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from migperf.nvml.catalog import get_model
from migperf.planner import (
    CapacityEntry,
    CapacityTable,
    load_capacities,
    needed_keys,
    parse_demand,
    plan_layout,
    planning_layouts,
)

MODELS = ("a100-80gb", "h100-80gb")
WORKLOADS = ("resnet50", "resnet18", "bert-base", "minilm", "vit-base", "distilbert", "gemm")
LIMIT_S = 10.0
CAPACITIES = Path(__file__).resolve().parents[1] / "configs" / "capacities-a100-80gb.csv"

#: The 11 services of part 2: (name, QPS of one 1g.10gb alone, SM scaling exponent,
#: GiB one process needs, share of a 1g.10gb one process keeps busy, p99 SLO in ms).
#: Small models leave a slice idle between kernels, so extra MPS processes add a lot;
#: big ones fill it already; tight SLOs lose much of the gain to queueing.
SERVICES = (
    ("image-classify", 420.0, 0.55, 3, 0.55, 50),
    ("embeddings", 900.0, 0.40, 2, 0.40, 30),
    ("sentiment", 650.0, 0.45, 2, 0.45, 40),
    ("moderation", 380.0, 0.60, 4, 0.60, 60),
    ("ner", 300.0, 0.65, 3, 0.65, 50),
    ("detection", 140.0, 0.80, 6, 0.80, 100),
    ("ocr", 110.0, 0.75, 5, 0.75, 150),
    ("rerank", 260.0, 0.70, 3, 0.70, 25),
    ("asr-small", 45.0, 0.85, 8, 0.85, 300),
    ("translate", 70.0, 0.90, 9, 0.90, 200),
    ("chat-7b", 6.0, 0.95, 16, 0.97, 2000),
)
#: Part 2's traffic scenarios: each service's target QPS is its base x the factor.
SCENARIOS = {
    "weekday-peak": 1.0,
    "weekday-offpeak": 0.45,
    "weekend": 0.3,
    "launch-day": 1.8,
    "nightly-batch": 0.2,
    "region-failover": 2.5,
}


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


def mps_capacities(seed: int = 11) -> str:
    """The capacities file of part 2 (CSV), from the seeded model in :data:`SERVICES`.

    One process on a profile serves ``base x (SMs / 14) ** alpha`` (+5 % on
    1g.20gb: more memory for the batcher), with a few percent of seeded
    noise, and keeps ``busy x (14 / SMs) ** (1 - alpha)`` of the slice busy.
    ``k`` processes serve ``1 + 0.8 (k - 1)`` times one, until the slice is
    full, and only where ``k x`` the process's memory fits; under an SLO
    tighter than 40 ms each extra process costs 15 % to queueing. A model
    that does not fit a slice serves 0.
    """
    rnd = random.Random(seed)
    profiles = [p for p in get_model("a100-80gb").profiles if "+" not in p.name]
    lines = ["gpu_model,profile,service,capacity_qps,mps_processes,source"]
    for name, base, alpha, gib, busy, slo in SERVICES:
        for prof in profiles:
            mem = prof.memory_mib / 1024
            one = base * (prof.sm_count / 14) ** alpha * rnd.uniform(0.97, 1.03)
            if prof.name.startswith("1g.20gb"):
                one *= 1.05
            if gib > mem:
                one = 0.0
            used = min(1.0, busy * (14 / prof.sm_count) ** (1 - alpha))
            for k in (1, 2, 3):
                if k > 1 and (one == 0.0 or k * gib > mem):
                    continue
                qps = one * min(1 + 0.8 * (k - 1), 1 / used)
                if slo < 40:
                    qps *= 1 - 0.15 * (k - 1)
                lines.append(
                    f"a100-80gb,{prof.name},{name},{qps:.1f},{k},"
                    f"synthetic (benchmarks/planner.py mps_capacities seed {seed})"
                )
    return "\n".join(lines) + "\n"


def scenario_demand(scenario: str, mps: bool, gpus: int = 64) -> str:
    """A demand file's text: the 11 services at a scenario's traffic, MPS allowed or not."""
    factor = SCENARIOS[scenario]
    rows = []
    for name, base, alpha, _, _, slo in SERVICES:
        # Each service's base traffic is what about two and a half 7g.80gb serve alone.
        qps = round(base * 7**alpha * 2.5 * factor, 1)
        extra = ", mps: {max_processes: 3}" if mps else ""
        rows.append(
            f"  - {{name: {name}, target_qps: {qps}, slo: {{percentile: 99, latency_ms: {slo}}}"
            f"{extra}}}"
        )
    return (
        "services:\n" + "\n".join(rows) + f"\ngpus: [{{model: a100-80gb, count: {gpus}}}]\n"
        "headroom: 0.1\n"
    )


def mps_part(capacities: Path) -> float:
    """Plan every scenario MIG only and with MPS; print the numbers; return the slowest time."""
    print(
        f"\n11 services on A100-80GB from {capacities.name}, 6 scenarios, MIG only vs MIG+MPS "
        "(max_processes 3):"
    )
    print(
        f"  {'scenario':<16} {'mode':<8} {'GPUs':>4} {'gap':>6} {'bound':>5} "
        f"{'HiGHS main':>10} {'planning':>9}  optimal"
    )
    slowest = 0.0
    for scenario in SCENARIOS:
        for mps in (False, True):
            demand = parse_demand(
                scenario_demand(scenario, mps), f"<{scenario}>", require_workload=()
            )
            table = load_capacities([capacities], demand)
            t0 = time.perf_counter()
            plan = plan_layout(demand, table)
            elapsed = time.perf_counter() - t0
            slowest = max(slowest, elapsed)
            sv = plan.solver
            gap = "-" if sv.gap is None else f"{sv.gap:.2%}"
            bound = "-" if sv.lower_bound is None else str(sv.lower_bound)
            mode = "MIG+MPS" if mps else "MIG"
            used = plan.gpus_used if plan.feasible else f"{plan.gpus_used}!"
            print(
                f"  {scenario:<16} {mode:<8} {used:>4} {gap:>6} {bound:>5} "
                f"{sv.main_time_s:>9.2f}s {elapsed:>8.2f}s  {'yes' if sv.optimal else 'NO'}"
                + (
                    f"  ({sum(j.mps_processes for j in plan.jobs)} MPS processes)"
                    if plan.uses_mps
                    else ""
                )
            )
            if sv.why:
                print(f"    {sv.why}")
    return slowest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10)
    parser.add_argument("--gpus", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--capacities", type=Path, default=CAPACITIES, help="Part 2's capacities file."
    )
    parser.add_argument(
        "--write-capacities",
        type=Path,
        default=None,
        metavar="PATH",
        help="Write part 2's capacities file there and exit.",
    )
    args = parser.parse_args()
    if args.write_capacities is not None:
        args.write_capacities.write_text(mps_capacities(), encoding="utf-8")
        print(f"wrote {args.write_capacities}")
        return

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
    slowest = max(elapsed, mps_part(args.capacities))
    if slowest >= LIMIT_S:
        raise SystemExit(f"planning took {slowest:.1f} s, over the {LIMIT_S:g} s budget")


if __name__ == "__main__":
    main()
