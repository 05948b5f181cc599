"""The plan as a mig-parted file (read back by migperf, applied on the simulator) and the experiments it lacks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.experiments.config import parse_config
from migperf.experiments.planning import plan_experiment
from migperf.mig.layout import parse_layout
from migperf.mig.migparted import layout_for_gpu, load_migparted, select_config
from migperf.nvml import open_nvml
from migperf.nvml.catalog import get_model
from migperf.nvml.facade import Nvml
from migperf.planner import (
    CapacityEntry,
    CapacityTable,
    MissingCapacity,
    Plan,
    config_names,
    measurement_configs,
    parse_demand,
    plan_layout,
    plan_to_migparted,
)

A100 = get_model("a100-80gb").pci_device_id
H100 = get_model("h100-80gb").pci_device_id


def two_gpu_plan(per_node: int = 8, estimate: bool = False) -> Plan:
    """a on 3g.40gb (x3) and b on 1g.10gb (x4): one GPU 3g.40gb*2, one 3g.40gb,1g.10gb*4."""
    d = parse_demand(
        f"""\
services:
  - {{name: a, workload: gemm, target_qps: 290, slo: {{percentile: 99, latency_ms: 50}}}}
  - {{name: b, workload: gemm, target_qps: 40, slo: {{percentile: 99, latency_ms: 50}}}}
gpus: [{{model: a100-80gb, count: 2, profiles: [3g.40gb, 1g.10gb], per_node: {per_node}}}]
headroom: 0
"""
    )
    caps = {
        ("3g.40gb", "a"): 100.0,
        ("1g.10gb", "a"): 1.0,
        ("3g.40gb", "b"): 11.0,
        ("1g.10gb", "b"): 10.0,
    }
    entries = {}
    for (p, j), v in caps.items():
        est = estimate and p == "1g.10gb"
        entries[("a100-80gb", p, j)] = CapacityEntry(
            "a100-80gb",
            p,
            j,
            "infer",
            v,
            0 if est else 3,
            source="estimate" if est else "measured",
            estimated_from="3g.40gb" if est else None,
        )
    plan = plan_layout(d, CapacityTable(entries))
    assert plan.feasible and plan.gpus_used == 2
    return plan


def test_the_mig_parted_file_round_trips_through_migperfs_parser(tmp_path: Path) -> None:
    plan = two_gpu_plan()
    text = plan_to_migparted(plan, source="demand.yaml")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    cfg = load_migparted(path)
    assert cfg.names == ["migperf-plan"]
    entries = select_config(cfg, None)
    assert [e.devices for e in entries] == [(0,), (1,)]
    assert all(e.device_filter == ("0x20B210DE",) and e.mig_enabled for e in entries)
    for g in plan.gpus:
        got = layout_for_gpu(entries, g.device, A100)
        assert got is not None and got[0]
        assert got[1].same_as(parse_layout(g.layout))
        assert layout_for_gpu(entries, g.device, H100) is None  # another model is left alone
    assert "# a100-80gb GPU 0:" in text and "-> a" in text


def test_migperf_mig_apply_accepts_the_plan(tmp_path: Path) -> None:
    plan = two_gpu_plan()
    path = tmp_path / "plan.yaml"
    path.write_text(plan_to_migparted(plan))
    result = CliRunner().invoke(
        app, ["--simulate", "a100-80gb:2", "mig", "apply", "--config", str(path)]
    )
    assert result.exit_code == 0, result.stderr
    with open_nvml("a100-80gb:2") as nvml:
        for g in plan.gpus:
            have = sorted(gi.profile for gi in nvml.gpu_instances(g.device))
            assert have == sorted(i.profile for i in g.instances)


def test_several_nodes_get_one_configuration_each(tmp_path: Path) -> None:
    plan = two_gpu_plan(per_node=1)
    assert config_names(plan) == {
        ("a100-80gb", 0): "migperf-plan-a100-80gb-node0",
        ("a100-80gb", 1): "migperf-plan-a100-80gb-node1",
    }
    path = tmp_path / "plan.yaml"
    path.write_text(plan_to_migparted(plan, "mine"))
    cfg = load_migparted(path)
    assert cfg.names == ["mine-a100-80gb-node0", "mine-a100-80gb-node1"]
    for g in plan.gpus:
        entries = select_config(cfg, f"mine-a100-80gb-node{g.node}")
        got = layout_for_gpu(entries, 0, A100)
        assert got is not None and got[1].same_as(parse_layout(g.layout))


def test_estimated_capacities_are_flagged_in_the_file() -> None:
    text = plan_to_migparted(two_gpu_plan(estimate=True))
    assert "# ESTIMATE: these capacities were not measured" in text
    assert "#   b on 1g.10gb (a100-80gb)" in text
    assert "1g.10gb -> b (estimate)" in text


def test_the_measurement_config_measures_exactly_what_is_missing(
    sim: Callable[..., Nvml],
) -> None:
    d = parse_demand(
        """\
services:
  - {name: api, workload: resnet50, precision: fp16, batch_size: 8, seq_len: 64,
     target_qps: 100, slo: {percentile: 95, latency_ms: 40}}
training:
  - {name: tune, workload: bert-base, precision: bf16, batch_size: 32, min_samples_per_s: 10}
gpus: [{model: a100-80gb, count: 2}]
"""
    )
    missing = [
        MissingCapacity("a100-80gb", "4g.40gb", "api"),
        MissingCapacity("a100-80gb", "2g.20gb", "api"),
        MissingCapacity("a100-80gb", "1g.10gb", "api"),
        MissingCapacity("a100-80gb", "2g.20gb", "tune"),
    ]
    texts = measurement_configs(d, missing, source="demand.yaml")
    assert list(texts) == ["a100-80gb"]
    text = texts["a100-80gb"]
    assert text.startswith("# Written by `migperf plan --write-config`: measures the 4 capacity")
    cfg = parse_config(text, "measure.yaml")
    assert cfg.repeats == 3 and cfg.gpus == [0]
    api, tune = cfg.jobs
    assert api.scenario is not None and api.scenario.find_max_qps
    assert (api.scenario.name, api.scenario.latency_target_ms, api.scenario.latency_percentile) == (
        "server",
        40.0,
        95.0,
    )
    assert (api.workload, api.precision, api.batch_size, api.seq_len) == ("resnet50", "fp16", 8, 64)
    assert (tune.task, tune.scenario, tune.batch_size) == ("train", None, 32)
    plan = plan_experiment(sim("a100-80gb"), cfg, "measure.yaml")
    measured = {(r.slots[0].profile, r.job.workload) for r in plan.runs}
    assert measured == {
        ("4g.40gb", "resnet50"),
        ("2g.20gb", "resnet50"),
        ("1g.10gb", "resnet50"),
        ("2g.20gb", "bert-base"),
    }
    # Each (profile, job) once per repeat: no slot is measured twice.
    assert len(plan.runs) == 4 * 3


@pytest.mark.parametrize("model", ["a100-80gb", "h100-80gb"])
def test_packed_layouts_fit(model: str) -> None:
    d = parse_demand(
        f"services: [{{name: a, workload: gemm, target_qps: 1, slo: {{percentile: 99, latency_ms: 5}}}}]\n"
        f"gpus: [{{model: {model}, count: 1}}]\n"
    )
    profiles = ["7g.80gb", "4g.40gb", "3g.40gb", "2g.20gb", "1g.20gb", "1g.10gb"]
    cfg = parse_config(
        measurement_configs(d, [MissingCapacity(model, p, "a") for p in profiles])[model]
    )
    assert cfg.layouts == ["7g.80gb", "4g.40gb,3g.40gb", "2g.20gb,1g.20gb,1g.10gb"]
