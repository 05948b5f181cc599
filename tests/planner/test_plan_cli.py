"""`migperf plan`: what a user types and sees."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.experiments.config import parse_config
from migperf.mig.migparted import load_migparted
from migperf.nvml import open_nvml
from migperf.results.store import ResultsStore
from tests.planner.conftest import fill_store, record_server

runner = CliRunner()
CAPS = {"7g.80gb": 700.0, "3g.40gb": 350.0, "1g.10gb": 130.0}


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_plan_prints_the_gpus_the_baselines_and_writes_mig_parted(
    tmp_path: Path, demand_file
) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", CAPS)
    out = tmp_path / "mig.yaml"
    code, stdout, stderr = run(
        "plan", str(demand_file(qps=800)), "--results", str(db), "--out", str(out)
    )
    assert code == 0, stderr
    # 7 x 1g.10gb = 910 QPS >= 880 (800 + 10 %): one GPU, where whole GPUs need two.
    assert "Plan: 1 GPU(s), fewest GPUs" in stdout
    assert "1g.10gb*7" in stdout and "image-api" in stdout and "88%" in stdout
    assert "whole GPUs per service (MIG off)" in stdout and "1 (50%)" in stdout
    assert "proven optimal by HiGHS" in stdout
    cfg = load_migparted(out)
    assert cfg.configs["migperf-plan"][0].counts() == {"1g.10gb": 7}
    assert f"wrote the plan to {out}" in stderr


def test_json_for_scripts(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", CAPS)
    code, stdout, _ = run("plan", str(demand_file(qps=1500)), "--results", str(db), "--json")
    assert code == 0
    data = json.loads(stdout)
    assert data["feasible"] and data["gpus_used"] == 2 and data["solver"]["optimal"]
    (job,) = data["jobs"]
    assert job["name"] == "image-api" and job["met"] and job["capacity"] >= 1650
    assert {b["name"]: b["gpus_saved"] for b in data["baselines"]} == {"whole-gpu": 1, "uniform": 0}
    assert all(c["source"] == "measured" and c["runs"] == 3 for c in data["capacities"])
    assert sum(len(g["instances"]) for g in data["gpus"]) == 14


def test_missing_capacities_are_listed_and_exit_non_zero(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", {"7g.80gb": 700.0})
    code, stdout, stderr = run("plan", str(demand_file()), "--results", str(db))
    assert code == 1
    assert "Missing capacities" in stdout
    assert "3g.40gb" in stdout and "1g.10gb" in stdout and "image-api" in stdout
    assert "2 capacity value(s) the plan needs were never measured" in stderr
    assert "--write-config" in stderr and "--assume-linear" in stderr
    assert f"--results {db}" in " ".join(stderr.split())
    code, stdout, _ = run("plan", str(demand_file()), "--results", str(db), "--json")
    assert code == 1
    assert [(m["profile"], m["job"]) for m in json.loads(stdout)["missing"]] == [
        ("3g.40gb", "image-api"),
        ("1g.10gb", "image-api"),
    ]


def test_write_config_writes_the_experiment_that_measures_them(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    target = tmp_path / "measure.yaml"
    code, _, stderr = run(
        "plan",
        str(demand_file()),
        "--results",
        str(tmp_path / "none.db"),
        "--write-config",
        str(target),
    )
    assert code == 0, stderr
    assert "no results store" in stderr and f"wrote {target}" in stderr
    # The measurements must land where this plan looks: the --results it was given.
    store = tmp_path / "none.db"
    assert f"migperf run {target} --results {store}" in " ".join(stderr.split())
    assert f"#   migperf run THIS_FILE --results {store}" in target.read_text()
    cfg = parse_config(target.read_text(), str(target))
    assert cfg.instances == ["7g.80gb", "3g.40gb", "1g.10gb"]
    (job,) = cfg.jobs
    assert job.scenario is not None and job.scenario.latency_target_ms == 50.0


def test_assume_linear_labels_every_estimate(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", {"7g.80gb": 700.0, "3g.40gb": 400.0})
    out = tmp_path / "mig.yaml"
    args = ("plan", str(demand_file(qps=800)), "--results", str(db), "--assume-linear")
    code, stdout, stderr = run(*args, "--out", str(out))
    assert code == 0, stderr
    # 1g.10gb: 14 of 3g's 42 SMs -> 133.3 QPS; 7 of them (933) are the only 1-GPU answer.
    assert "ESTIMATED capacities" in stdout and "133.3 QPS (estimate)" in stdout
    assert "1g.10gb*7" in stdout
    text = out.read_text()
    assert "# ESTIMATE:" in text and "7 x 1g.10gb -> image-api (estimate)" in text
    code, stdout, _ = run(*args, "--json")
    data = json.loads(stdout)
    sources = {c["profile"]: c["source"] for c in data["capacities"]}
    assert sources == {"7g.80gb": "measured", "3g.40gb": "measured", "1g.10gb": "estimate"}
    assert data["jobs"][0]["capacity_source"] == "estimate"
    assert {i["capacity_source"] for g in data["gpus"] for i in g["instances"]} == {"estimate"}
    assert any("ESTIMATES" in n for n in data["notes"])


def test_an_impossible_demand_is_explained(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", CAPS)
    code, stdout, stderr = run("plan", str(demand_file(qps=5000)), "--results", str(db))
    assert code == 1
    assert "Best effort (the demand is NOT met)" in stdout
    assert "ERROR: the demand cannot be met: service image-api: needs 5500.0 QPS" in stderr
    assert "all 2 GPUs serving only it reach 1820.0 QPS" in stderr


def test_fixed_gpu_count(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", CAPS)
    code, stdout, stderr = run(
        "plan", str(demand_file(qps=1500)), "--results", str(db), "--gpu-count", "1"
    )
    assert code == 0
    assert "best coverage on 1 GPU(s)" in stdout
    assert "image-api gets 910.0 of the 1650.0 QPS" in stderr


def test_derate_says_what_it_found(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", CAPS)
    code, _, stderr = run("plan", str(demand_file()), "--results", str(db), "--derate")
    assert code == 0
    assert "nothing derated" in stderr


def test_verify_is_refused_in_read_only_mode(tmp_path: Path, demand_file) -> None:  # type: ignore[no-untyped-def]
    db = fill_store(tmp_path / "s.db", CAPS)
    code, _, stderr = run(
        "--read-only",
        "--simulate",
        "a100-80gb",
        "plan",
        str(demand_file()),
        "--results",
        str(db),
        "--verify",
    )
    assert code != 0
    assert "read-only mode is on" in stderr and "plan without --verify" in stderr


def test_verify_runs_the_services_co_located_and_restores_the_gpu(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    with ResultsStore(db) as s:
        for prof, q in {"7g.80gb": 900.0, "4g.40gb": 700.0, "3g.40gb": 600.0}.items():
            for bs, share in ((1, 1.0), (2, 0.5)):
                record_server(
                    s,
                    profile=prof,
                    workload="gemm",
                    precision="fp32",
                    batch_size=bs,
                    max_qps=q * share,
                    latency_target_ms=500,
                    percentile=90,
                    model_args={"n": 32},
                )
    demand = tmp_path / "d.yaml"
    demand.write_text(
        """\
services:
  - {name: a, workload: gemm, model_args: {n: 32}, target_qps: 150,
     slo: {percentile: 90, latency_ms: 500}}
  - {name: b, workload: gemm, batch_size: 2, model_args: {n: 32}, target_qps: 100,
     slo: {percentile: 90, latency_ms: 500}}
gpus: [{model: a100-80gb, count: 1, profiles: [7g.80gb, 4g.40gb, 3g.40gb]}]
"""
    )
    code, stdout, stderr = run(
        "--simulate",
        "a100-80gb",
        "plan",
        str(demand),
        "--results",
        str(db),
        "--verify",
        "--verify-duration",
        "0.5",
        "--verify-min-queries",
        "100",
        "--timeout",
        "120",
    )
    assert code == 0, stdout + stderr
    assert "Verification, all services co-located (SIMULATED GPU" in stdout
    rows = [line for line in stdout.splitlines() if "p90 <= 500 ms" in line and "yes" in line]
    assert len(rows) >= 4  # both services planned and both held
    assert "GPU 0: applying" in stderr and "layouts restored" in stderr
    with open_nvml("a100-80gb") as nvml:
        assert nvml.gpu_instances(0) == []
