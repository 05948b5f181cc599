"""The planner against brute force, on known answers, and where the demand cannot be met."""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import pytest

import migperf.results
from migperf.mig.layout import InstanceSpec, LayoutSpec
from migperf.mig.solver import MigGeometry, check_layout
from migperf.planner import (
    CapacityEntry,
    CapacityTable,
    DemandSpec,
    Plan,
    capacity_table,
    needed_keys,
    parse_demand,
    plan_layout,
    planning_layouts,
)
from migperf.results.store import ResultsStore
from tests.planner.conftest import record_server

SMALL = ("7g.80gb", "3g.40gb", "2g.20gb", "1g.10gb")
FULL = ("7g.80gb", "4g.40gb", "3g.40gb", "2g.20gb", "1g.20gb", "1g.10gb")


def demand(
    qps: Mapping[str, float],
    count: int,
    profiles: Sequence[str] | None = SMALL,
    headroom: float = 0.0,
    extra: str = "",
) -> DemandSpec:
    services = "\n".join(
        f"  - {{name: {n}, workload: gemm, target_qps: {q}, slo: {{percentile: 99, latency_ms: 50}}}}"
        for n, q in qps.items()
    )
    prof = "" if profiles is None else f", profiles: [{', '.join(profiles)}]"
    return parse_demand(
        f"services:\n{services}\ngpus: [{{model: a100-80gb, count: {count}{prof}}}]\n"
        f"headroom: {headroom}\n{extra}"
    )


def table(caps: Mapping[tuple[str, str], float], model: str = "a100-80gb") -> CapacityTable:
    """{(profile, job): capacity} -> a table of measured entries."""
    kinds = {j: "infer" for _, j in caps}
    return CapacityTable(
        {
            (model, p, j): CapacityEntry(model, p, j, kinds[j], v, 3)  # type: ignore[arg-type]
            for (p, j), v in caps.items()
        }
    )


# ------------------------------------------------------------- brute force


@functools.lru_cache(maxsize=4)
def valid_layouts(profiles: tuple[str, ...]) -> list[dict[str, int]]:
    """Every valid layout (maximal or not) of an A100-80GB among ``profiles``, by checking all multisets."""
    g = MigGeometry.for_model("a100-80gb")
    profs = [p for p in g.profiles if p.profile in profiles]
    out = []
    for counts in itertools.product(*[range(p.instances_total + 1) for p in profs]):
        if (
            not any(counts)
            or sum(p.compute_slices * n for p, n in zip(profs, counts, strict=True)) > 7
        ):
            continue
        spec = LayoutSpec(
            tuple(
                InstanceSpec(p.profile)
                for p, n in zip(profs, counts, strict=True)
                for _ in range(n)
            )
        )
        if check_layout(g.resolve(spec), g).ok:
            out.append({p.profile: n for p, n in zip(profs, counts, strict=True) if n})
    return out


def compositions(n: int, bins: int) -> Iterable[tuple[int, ...]]:
    """Ways to put n identical instances into ``bins`` services (plus idle)."""
    for cut in itertools.combinations(range(n + bins), bins):
        parts, prev = [], -1
        for c in cut:
            parts.append(c - prev - 1)
            prev = c
        yield tuple(parts)  # the rest, n - sum(parts), stays idle


def gpu_vectors(
    caps: Mapping[tuple[str, str], float], names: Sequence[str], profiles: tuple[str, ...]
) -> set[tuple[float, ...]]:
    """Capacity per service of one GPU, for every layout and every assignment of its instances."""
    out: set[tuple[float, ...]] = set()
    for layout in valid_layouts(profiles):
        per_profile = []
        for p, n in layout.items():
            per_profile.append(
                [
                    tuple(k * caps[(p, s)] for k, s in zip(split, names, strict=True))
                    for split in compositions(n, len(names))
                    if sum(split) <= n
                ]
            )
        for combo in itertools.product(*per_profile):
            out.add(tuple(round(sum(v[i] for v in combo), 6) for i in range(len(names))))
    return out


def pareto(vectors: Iterable[tuple[float, ...]]) -> list[tuple[float, ...]]:
    vs = sorted(set(vectors), reverse=True)
    front: list[tuple[float, ...]] = []
    for v in vs:
        if not any(all(f[i] >= v[i] for i in range(len(v))) for f in front):
            front.append(v)
    return front


def brute_min_gpus(
    caps: Mapping[tuple[str, str], float],
    required: Mapping[str, float],
    count: int,
    profiles: tuple[str, ...] = SMALL,
) -> int | None:
    names = list(required)
    req = tuple(required[n] for n in names)
    one = pareto(
        tuple(min(v[i], req[i]) for i in range(len(v))) for v in gpu_vectors(caps, names, profiles)
    )
    reach = [tuple(0.0 for _ in names)]
    for k in range(1, count + 1):
        reach = pareto(
            tuple(min(a[i] + b[i], req[i]) for i in range(len(req))) for a in reach for b in one
        )
        if any(all(v[i] >= req[i] - 1e-6 for i in range(len(req))) for v in reach):
            return k
    return None


def brute_max_min_coverage(
    caps: Mapping[tuple[str, str], float], demand_qps: Mapping[str, float], gpus: int
) -> float:
    names = list(demand_qps)
    one = pareto(gpu_vectors(caps, names, SMALL))
    best = 0.0
    for combo in itertools.combinations_with_replacement(one, gpus):
        tot = [sum(v[i] for v in combo) for i in range(len(names))]
        best = max(best, min(tot[i] / demand_qps[n] for i, n in enumerate(names)))
    return best


def check_plan(plan: Plan, caps: Mapping[tuple[str, str], float]) -> None:
    """What a user would check by hand: valid layouts, each service covered by its instances."""
    g = MigGeometry.for_model("a100-80gb")
    got: dict[str, float] = {}
    for gpu in plan.gpus:
        assert check_layout(g.resolve(gpu.layout), g).ok, gpu.layout
        assert sorted(i.profile for i in gpu.instances) == sorted(
            i.name for i in g.resolve(gpu.layout).instances
        )
        for inst in gpu.instances:
            if inst.job:
                assert inst.capacity == pytest.approx(caps[(inst.profile, inst.job)])
                got[inst.job] = got.get(inst.job, 0.0) + caps[(inst.profile, inst.job)]
    for job in plan.jobs:
        assert got.get(job.name, 0.0) == pytest.approx(job.capacity)
        if plan.feasible:
            assert job.capacity >= job.required - 1e-6


def random_case(seed: int) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    rnd = random.Random(seed)
    names = ["a", "b", "c"][: rnd.choice((2, 3))]
    slices = {"7g.80gb": 7, "4g.40gb": 4, "3g.40gb": 3, "2g.20gb": 2, "1g.20gb": 1, "1g.10gb": 1}
    caps: dict[tuple[str, str], float] = {}
    qps: dict[str, float] = {}
    for n in names:
        base, alpha = rnd.uniform(20, 200), rnd.uniform(0.3, 1.3)
        for p, g in slices.items():
            caps[(p, n)] = round(base * g**alpha * rnd.uniform(0.8, 1.2), 1)
        qps[n] = round(rnd.uniform(0.15, 1.2) * base * 7**alpha, 1)
    return caps, qps


@pytest.mark.parametrize(
    ("seed", "count"), [*((s, 3) for s in range(8)), (5, 2), (11, 2), (13, 2), (17, 2)]
)
def test_fewest_gpus_matches_brute_force(seed: int, count: int) -> None:
    caps, qps = random_case(seed)
    d = demand(qps, count=count, headroom=0.1)
    plan = plan_layout(d, table(caps))
    required = {n: q * 1.1 for n, q in qps.items()}
    expected = brute_min_gpus(caps, required, count)
    if expected is None:
        assert not plan.feasible and plan.explanation
        assert 0 < plan.gpus_used <= count
    else:
        assert plan.feasible, plan.explanation
        assert plan.gpus_used == expected
        assert plan.solver.optimal and "proven optimal" in plan.solver.statement
    check_plan(plan, caps)


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_fixed_count_maximizes_the_smallest_coverage_like_brute_force(seed: int) -> None:
    caps, qps = random_case(seed)
    qps = dict(list(qps.items())[:2])
    d = demand(qps, count=3, extra="gpu_count: 2")
    plan = plan_layout(d, table(caps))
    assert plan.mode == "fixed-count" and plan.feasible and plan.gpus_used <= 2
    assert plan.min_coverage == pytest.approx(brute_max_min_coverage(caps, qps, 2), rel=1e-6)
    check_plan(plan, caps)


def test_three_2g_and_a_1g_beat_every_uniform_layout() -> None:
    # A scales on 2g and little beyond; B is tiny and happy on any 1g.
    caps = {}
    for p, a, b in (
        ("7g.80gb", 150, 80),
        ("4g.40gb", 120, 70),
        ("3g.40gb", 110, 70),
        ("2g.20gb", 100, 60),
        ("1g.20gb", 10, 50),
        ("1g.10gb", 10, 50),
    ):
        caps[(p, "a")] = a
        caps[(p, "b")] = b
    plan = plan_layout(demand({"a": 300, "b": 40}, count=2, profiles=None), table(caps))
    assert plan.feasible and plan.gpus_used == 1
    (gpu,) = plan.gpus
    served = sorted((i.profile, i.job) for i in gpu.instances)
    assert served.count(("2g.20gb", "a")) == 3
    assert [p for p, j in served if j == "b"] in (["1g.10gb"], ["1g.20gb"])
    assert gpu.layout in ("2g.20gb*3,1g.10gb", "2g.20gb*3,1g.20gb")
    uniform = next(b for b in plan.baselines if b.name == "uniform")
    whole = next(b for b in plan.baselines if b.name == "whole-gpu")
    assert uniform.gpus == 2 and plan.saved_vs(uniform) == 1
    assert whole.gpus == 3 and plan.saved_vs(whole) == 2
    loads = {i.job: i.load for i in gpu.instances if i.profile == "2g.20gb"}
    assert loads["a"] == pytest.approx(100.0)  # 300 QPS over three equal instances


def test_the_plan_uses_only_maximal_layouts_and_covers_the_needed_keys() -> None:
    d = demand({"a": 10}, count=1, profiles=None)
    layouts = {g.model: planning_layouts(g) for g in d.gpus}
    assert len(layouts["a100-80gb"]) == 28
    keys = needed_keys(d, layouts)
    assert [p for _, p, _ in keys] == list(FULL)


def test_training_gets_one_instance_that_reaches_its_floor() -> None:
    d = parse_demand(
        """\
services: [{name: a, workload: gemm, target_qps: 200, slo: {percentile: 99, latency_ms: 50}}]
training: [{name: t, workload: resnet18, min_samples_per_s: 250}]
gpus: [{model: a100-80gb, count: 2, profiles: [7g.80gb, 3g.40gb, 2g.20gb, 1g.10gb]}]
headroom: 0
"""
    )
    caps = {
        ("7g.80gb", "a"): 700,
        ("3g.40gb", "a"): 300,
        ("2g.20gb", "a"): 200,
        ("1g.10gb", "a"): 100,
    }
    caps.update(
        {
            (p, "t"): v
            for p, v in (("7g.80gb", 600), ("3g.40gb", 260), ("2g.20gb", 180), ("1g.10gb", 90))
        }
    )
    t = table(caps)
    t = CapacityTable(
        {
            k: (CapacityEntry(*k, "train", e.base, 3) if k[2] == "t" else e)
            for k, e in t.entries.items()
        }
    )
    plan = plan_layout(d, t)
    assert plan.feasible and plan.gpus_used == 1
    profiles = {i.job: i.profile for g in plan.gpus for i in g.instances if i.job}
    assert profiles["t"] == "3g.40gb"
    job = next(j for j in plan.jobs if j.name == "t")
    assert job.kind == "train" and job.instances == 1 and job.capacity == 260


def test_too_much_demand_explains_which_service_and_what_is_achievable() -> None:
    caps = {
        (p, s): v
        for p, v in (("7g.80gb", 700), ("3g.40gb", 300), ("2g.20gb", 200), ("1g.10gb", 100))
        for s in ("a", "b")
    }
    plan = plan_layout(demand({"a": 5000, "b": 100}, count=2), table(caps))
    assert not plan.feasible
    text = " ".join(plan.explanation)
    # 2 GPUs of 7 x 1g.10gb give at most 1400 QPS to a alone.
    assert "service a: needs 5000.0 QPS" in text and "reach 1400.0 QPS" in text
    assert "serving the whole demand would take 8 GPU(s)" in text
    assert plan.gpus, "a best-effort plan, not an empty one"
    assert plan.min_coverage is not None and 0 < plan.min_coverage < 1


def test_services_that_fit_alone_but_not_together() -> None:
    caps = {
        (p, s): v
        for p, v in (("7g.80gb", 700), ("3g.40gb", 300), ("2g.20gb", 200), ("1g.10gb", 100))
        for s in ("a", "b")
    }
    plan = plan_layout(demand({"a": 1000, "b": 1000}, count=2), table(caps))
    assert not plan.feasible
    text = " ".join(plan.explanation)
    assert "together the services need more than the 2 GPU(s) available" in text
    assert "covers 70% of every service's target QPS" in text  # 2 x 700 QPS shared by 2000
    assert "would take 3 GPU(s)" in text


def test_an_slo_below_every_measured_latency(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        for p, lat in (("7g.80gb", 7.5), ("3g.40gb", 9.0), ("2g.20gb", 12.0), ("1g.10gb", 20.0)):
            record_server(
                s,
                profile=p,
                workload="gemm",
                precision="fp32",
                batch_size=1,
                max_qps=None,
                latency_target_ms=50,
                p_latency_ms=lat,
            )
    d = demand({"a": 10}, count=2)
    plan = plan_layout(d, capacity_table(migperf.results.load(db, wide=True), d))
    assert not plan.feasible
    assert plan.explanation[0].startswith(
        "service a: no measured instance serves any load within its SLO (p99 <= 50 ms)"
    )
    assert (
        "the lowest p99 latency measured for it is 7.5 ms (7g.80gb on a100-80gb)"
        in plan.explanation[0]
    )


def test_a_training_floor_no_instance_reaches() -> None:
    d = parse_demand(
        "training: [{name: t, workload: resnet18, min_samples_per_s: 1000}]\n"
        "gpus: [{model: a100-80gb, count: 2, profiles: [7g.80gb, 1g.10gb]}]\n"
    )
    t = CapacityTable(
        {
            ("a100-80gb", "7g.80gb", "t"): CapacityEntry(
                "a100-80gb", "7g.80gb", "t", "train", 640, 3
            ),
            ("a100-80gb", "1g.10gb", "t"): CapacityEntry(
                "a100-80gb", "1g.10gb", "t", "train", 90, 3
            ),
        }
    )
    plan = plan_layout(d, t)
    assert not plan.feasible
    assert (
        "training job t: needs 1000 samples/s on one instance; the fastest measured instance "
        "gives 640.0 samples/s (7g.80gb on a100-80gb)" in plan.explanation
    )


def test_a_missing_capacity_is_never_guessed() -> None:
    from migperf.errors import UsageError

    caps = {(p, "a"): 100.0 for p in SMALL if p != "2g.20gb"}
    with pytest.raises(UsageError, match="never measured, e.g. a on 2g.20gb"):
        plan_layout(demand({"a": 10}, count=1), table(caps))


def test_two_models_and_nodes() -> None:
    d = parse_demand(
        """\
services: [{name: a, workload: gemm, target_qps: 2000, slo: {percentile: 99, latency_ms: 50}}]
gpus:
  - {model: a100-80gb, count: 3, profiles: [7g.80gb], per_node: 2}
  - {model: h100-80gb, count: 1, profiles: [7g.80gb]}
headroom: 0
"""
    )
    t = CapacityTable(
        {
            ("a100-80gb", "7g.80gb", "a"): CapacityEntry(
                "a100-80gb", "7g.80gb", "a", "infer", 500, 3
            ),
            ("h100-80gb", "7g.80gb", "a"): CapacityEntry(
                "h100-80gb", "7g.80gb", "a", "infer", 600, 3
            ),
        }
    )
    plan = plan_layout(d, t)
    assert plan.feasible and plan.gpus_used == 4
    assert [(g.model, g.node, g.device) for g in plan.gpus] == [
        ("a100-80gb", 0, 0),
        ("a100-80gb", 0, 1),
        ("a100-80gb", 1, 0),
        ("h100-80gb", 0, 0),
    ]
