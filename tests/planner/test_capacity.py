"""The capacity table, built from stores written the way docs/results-schema.md describes."""

from __future__ import annotations

from pathlib import Path

import pytest

import migperf.results
from migperf.planner import capacity_table, derate_factors, model_for_gpu_name, parse_demand
from migperf.results.store import ResultsStore
from tests.planner.conftest import record_server, record_throughput

DEMAND = parse_demand(
    """\
services:
  - {name: api, workload: resnet50, precision: fp16, batch_size: 8, target_qps: 100,
     slo: {percentile: 99, latency_ms: 50}}
training:
  - {name: tune, workload: bert-base, precision: bf16, batch_size: 32, min_samples_per_s: 50}
gpus: [{model: a100-80gb, count: 2}, {model: h100-80gb, count: 2}]
"""
)


def _table(path: Path):  # type: ignore[no-untyped-def]
    return capacity_table(migperf.results.load(path, wide=True), DEMAND)


def test_median_over_repeats_keeps_the_count(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        for rep, q in enumerate((90.0, 200.0, 100.0)):
            record_server(s, profile="1g.10gb", max_qps=q, repeat=rep)
    e = _table(db).entry("a100-80gb", "1g.10gb", "api")
    assert e is not None
    assert (e.value, e.runs, e.source, e.measured_slo_ms) == (100.0, 3, "measured", 50.0)


def test_a_stricter_slo_counts_a_looser_one_does_not(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        record_server(s, profile="3g.40gb", max_qps=300, latency_target_ms=80)  # looser
        record_server(s, profile="2g.20gb", max_qps=150, latency_target_ms=20)  # stricter
        record_server(s, profile="2g.20gb", max_qps=180, latency_target_ms=40)  # stricter, closer
        record_server(s, profile="1g.10gb", max_qps=90, latency_target_ms=50, percentile=90)
    t = _table(db)
    assert t.entry("a100-80gb", "3g.40gb", "api") is None
    assert "looser SLO (p99 <= 80 ms)" in t.near_misses[("a100-80gb", "3g.40gb", "api")]
    e = t.entry("a100-80gb", "2g.20gb", "api")
    assert e is not None and e.value == 180 and e.measured_slo_ms == 40
    assert t.entry("a100-80gb", "1g.10gb", "api") is None
    missing = t.missing([("a100-80gb", "1g.10gb", "api"), ("a100-80gb", "2g.20gb", "api")])
    assert [(m.profile, m.note) for m in missing] == [("1g.10gb", "measured only at p90 <= 50 ms")]


def test_null_capacity_is_a_measured_zero_and_the_best_latency_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        record_server(s, profile="1g.10gb", max_qps=None, p_latency_ms=80.0)
        record_server(s, profile="7g.80gb", max_qps=None, p_latency_ms=61.5, repeat=1)
    t = _table(db)
    e = t.entry("a100-80gb", "1g.10gb", "api")
    assert e is not None and e.value == 0.0 and e.runs == 1
    assert t.best_latency_ms["api"] == (61.5, "a100-80gb", "7g.80gb")


def test_other_models_failed_and_co_located_runs_are_not_capacity(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        record_server(s, profile="1g.10gb", max_qps=100, batch_size=4)
        record_server(s, profile="1g.10gb", max_qps=100, precision="fp32")
        record_server(s, profile="1g.10gb", max_qps=100, status="failed")
        record_throughput(s, profile="1g.10gb", group_id="g1", sharing="mig", samples_per_s=1)
        record_server(s, profile="1c.7g.80gb", max_qps=100)
        record_server(s, profile="1g.10gb", max_qps=100, gpu_name="Tesla V100-SXM2-16GB")
    t = _table(db)
    assert t.entries == {}
    assert "measured only with another precision" in t.near_misses[("a100-80gb", "1g.10gb", "api")]
    assert any("Tesla V100-SXM2-16GB" in n for n in t.notes)


def test_gpu_names_with_and_without_the_nvidia_prefix() -> None:
    assert model_for_gpu_name("NVIDIA A100-SXM4-80GB") == "a100-80gb"
    assert model_for_gpu_name("A100-SXM4-80GB") == "a100-80gb"
    assert model_for_gpu_name("NVIDIA H100 80GB HBM3") == "h100-80gb"
    assert model_for_gpu_name("NVIDIA GeForce RTX 4090") is None


def test_real_runs_win_over_simulated_ones(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        record_server(s, profile="1g.10gb", max_qps=5, simulated=True)
        record_server(s, profile="1g.10gb", max_qps=120)
        record_server(s, profile="2g.20gb", max_qps=7, simulated=True)
    t = _table(db)
    real = t.entry("a100-80gb", "1g.10gb", "api")
    sim = t.entry("a100-80gb", "2g.20gb", "api")
    assert real is not None and (real.value, real.simulated) == (120, False)
    assert sim is not None and sim.simulated and "(simulated)" in sim.describe()
    assert any("SIMULATED" in n for n in t.notes)


def test_training_capacity_and_the_whole_gpu(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        for rep, v in enumerate((40.0, 44.0)):
            record_throughput(s, profile="1g.10gb", samples_per_s=v, repeat=rep)
        record_throughput(s, profile=None, samples_per_s=400.0, model="h100-80gb")
        record_throughput(s, profile="1g.10gb", samples_per_s=999.0, precision="fp32")
    t = _table(db)
    e = t.entry("a100-80gb", "1g.10gb", "tune")
    assert e is not None and (e.value, e.runs, e.kind, e.unit) == (42.0, 2, "train", "samples/s")
    whole = t.entry("h100-80gb", "gpu", "tune")
    assert whole is not None and whole.value == 400.0


def test_assume_linear_scales_the_nearest_measured_profile_by_sms(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        record_server(s, profile="3g.40gb", max_qps=300)
        record_server(s, model="h100-80gb", profile="7g.80gb", max_qps=1320)
    needed = [
        ("a100-80gb", "1g.10gb", "api"),
        ("a100-80gb", "7g.80gb", "api"),
        ("h100-80gb", "3g.40gb", "api"),
        ("h100-80gb", "1g.10gb", "tune"),
    ]
    t = _table(db).with_linear_estimates(needed)
    one = t.entry("a100-80gb", "1g.10gb", "api")
    seven = t.entry("a100-80gb", "7g.80gb", "api")
    h3 = t.entry("h100-80gb", "3g.40gb", "api")
    assert one is not None and one.source == "estimate" and one.estimated_from == "3g.40gb"
    assert one.value == pytest.approx(100.0)  # 14 of 42 SMs
    assert seven is not None and seven.value == pytest.approx(700.0)  # 98 of 42 SMs
    assert h3 is not None and h3.value == pytest.approx(600.0)  # Hopper: 60 of 132 SMs
    assert "estimate from 3g.40gb" in one.describe()
    assert t.entry("h100-80gb", "1g.10gb", "tune") is None  # nothing measured to scale from
    assert t.has_estimates and t.to_list()[0]["source"] in ("measured", "estimate")


def test_derating_from_measured_co_located_progress(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        record_server(s, profile="3g.40gb", max_qps=300)
        # resnet50 fp16 bs 8 alone on a 3g slot, then co-located with a neighbour at 80 %.
        kw = {"workload": "resnet50", "task": "infer", "precision": "fp16", "batch_size": 8}
        record_throughput(s, profile="3g.40gb", samples_per_s=1000.0, layout="3g.40gb*2", **kw)
        record_throughput(
            s,
            profile="3g.40gb",
            samples_per_s=800.0,
            group_id="g",
            sharing="mig",
            layout="3g.40gb*2",
            **kw,
        )
    frame = migperf.results.load(db, wide=True)
    factors, what = derate_factors(frame, DEMAND)
    assert factors == {("a100-80gb", "3g.40gb", "api"): pytest.approx(0.8)}
    assert "derated 1" in what
    e = capacity_table(frame, DEMAND).derated(factors).entry("a100-80gb", "3g.40gb", "api")
    assert e is not None and e.value == pytest.approx(240.0) and e.derate == pytest.approx(0.8)
    assert "derated x0.80" in e.describe()


def test_derating_without_co_located_runs_changes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        record_server(s, profile="3g.40gb", max_qps=300)
    factors, what = derate_factors(migperf.results.load(db, wide=True), DEMAND)
    assert factors == {} and "nothing derated" in what
