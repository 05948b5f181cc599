"""Demand files: the example parses; every mistake is reported at once as file:line: field: problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from migperf.errors import ConfigError
from migperf.planner import load_demand, parse_demand

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "demand-example.yaml"


def test_the_example_demand_file_is_valid() -> None:
    demand = load_demand(EXAMPLE)
    assert [s.name for s in demand.services] == ["image-api", "search-embeddings", "moderation"]
    assert demand.training[0].min_samples_per_s == 150
    assert demand.gpus[0].model == "a100-80gb" and demand.total_gpus == 8
    assert demand.required_qps(demand.services[0]) == pytest.approx(1320.0)


def test_every_problem_is_reported_with_its_line() -> None:
    text = """\
services:
  - name: a
    workload: resnet5O
    target_qps: 10
    slo: {percentile: 98, latency_ms: 20}
  - name: a
    workload: gemm
    target_qps: -1
    slo: {percentile: 99, latency_ms: 20}
    colour: blue
gpus:
  - {model: a100-81gb, count: 2}
"""
    with pytest.raises(ConfigError) as err:
        parse_demand(text, "d.yaml")
    msg = err.value.message
    assert "d.yaml:3: services[0].workload: unknown workload 'resnet5O'" in msg
    assert "d.yaml:5: services[0].slo.percentile: percentile 98 is not one LoadGen reports" in msg
    assert "d.yaml:8: services[1].target_qps:" in msg
    assert "d.yaml:10: services[1].colour: unknown field" in msg
    assert "d.yaml:12: gpus[0].model: unknown GPU model 'a100-81gb'" in msg
    assert "problem(s) in d.yaml" in msg


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("gpus: [{model: a100-80gb, count: 1}]\n", "nothing to plan"),
        (
            "services: [{name: x, workload: gemm, target_qps: 1, slo: {percentile: 99, latency_ms: 5}}]\n"
            "training: [{name: x, workload: resnet18, min_samples_per_s: 1}]\n"
            "gpus: [{model: a100-80gb, count: 1}]\n",
            "the name 'x' is used twice",
        ),
        (
            "services: [{name: x, workload: gemm, target_qps: 1, slo: {percentile: 99, latency_ms: 5}}]\n"
            "gpus: [{model: l4, count: 1}]\n",
            "does not support MIG",
        ),
        (
            "services: [{name: x, workload: gemm, target_qps: 1, slo: {percentile: 99, latency_ms: 5}}]\n"
            "gpus: [{model: a100-80gb, count: 1, profiles: [1g.10gb+me]}]\n",
            "variants are not planned",
        ),
        (
            "services: [{name: x, workload: gemm, target_qps: 1, slo: {percentile: 99, latency_ms: 5}}]\n"
            "gpus: [{model: a100-80gb, count: 1, profiles: [1g.5gb]}]\n",
            "a100-80gb has no profile '1g.5gb'",
        ),
        (
            "services: [{name: x, workload: gemm, target_qps: 1, slo: {percentile: 99, latency_ms: 5}}]\n"
            "gpus: [{model: a100-80gb, count: 2}]\ngpu_count: 3\n",
            "gpu_count 3 is more than the 2 GPUs",
        ),
    ],
)
def test_cross_field_mistakes(body: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_demand(body, "d.yaml")


def test_models_and_profiles_are_case_insensitive() -> None:
    d = parse_demand(
        "services: [{name: x, workload: gemm, target_qps: 1, slo: {percentile: 99, latency_ms: 5}}]\n"
        "gpus: [{model: A100-80GB, count: 1, profiles: [3G.40GB]}]\n"
    )
    assert d.gpus[0].model == "a100-80gb" and d.gpus[0].profiles == ["3g.40gb"]


def test_job_counts_have_a_ceiling() -> None:
    from migperf.planner.demand import MAX_JOBS

    service = (
        "  - {name: s%d, workload: resnet50, target_qps: 1, slo: {percentile: 99, latency_ms: 9}}\n"
    )
    training = "  - {name: t%d, workload: resnet50, min_samples_per_s: 1}\n"
    half = MAX_JOBS // 2 + 1
    text = (
        "services:\n"
        + "".join(service % i for i in range(half))
        + "training:\n"
        + "".join(training % i for i in range(half))
        + "gpus: [{model: a100-80gb, count: 1}]\n"
    )
    with pytest.raises(ConfigError) as err:
        parse_demand(text, "d.yaml")
    assert err.value.message == (
        f"d.yaml:1: (top level): {2 * half:,} services and training jobs are more than the "
        f"{MAX_JOBS:,} one plan may have; split the demand into several files"
    )


def test_demand_files_share_the_safe_yaml_reader(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text("gpus: [{model: a100-80gb, count: 1}]\ngpus: []\n")
    with pytest.raises(ConfigError, match=r"d.yaml:2: duplicate key 'gpus'"):
        load_demand(path)
