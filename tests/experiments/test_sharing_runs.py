"""Shared runs through the real runner on the simulator: windows overlap, results and
interference stored, telemetry and scenario metrics in the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.results import load
from migperf.sharing.interference import interference_table

STOP = "stop: {warmup_iterations: 1, min_iterations: 3, min_duration_s: 0.6, max_duration_s: 5}"
RESNET = "{image_size: 32, embedding_size: 8, hidden_sizes: [8, 16, 16, 16], depths: [1, 1, 1, 1]}"


def _run(tmp_path: Path, text: str, spec: str = "a100-80gb") -> tuple[Path, str]:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    db = tmp_path / "r.db"
    res = CliRunner().invoke(
        app, ["--simulate", spec, "run", str(cfg), "--results", str(db)], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    return db, res.output


def _params(frame):  # type: ignore[no-untyped-def]
    return [json.loads(p) for p in frame["params"]]


def test_two_and_four_mig_slices_run_together_and_interference_is_shown(tmp_path: Path) -> None:
    db, _ = _run(
        tmp_path,
        f"""
name: colocate
layouts: ["19,19", "19,19,19,19"]
# One solo run on a 1g.10gb slice is the baseline of every 1g.10gb job (same
# profile), which keeps this test to three launches.
sharing: [mig, {{exclusive: {{layouts: ["19,19"]}}}}]
{STOP}
jobs:
  - workload: gemm
    model_args: {{n: 32}}
""",
    )
    frame = load(db, wide=True)
    assert set(frame["status"]) == {"ok"}
    params = _params(frame)
    groups: dict[str, list[dict]] = {}
    for p in params:
        if p["group_id"]:
            groups.setdefault(p["group_id"], []).append(p)
    assert sorted(len(g) for g in groups.values()) == [2, 4]
    for members in groups.values():
        # Released together: every member's window overlaps every other's.
        latest_start = max(p["window_start_unix"] for p in members)
        earliest_end = min(p["window_end_unix"] for p in members)
        assert latest_start < earliest_end, members
        assert {p["sharing"] for p in members} == {"mig"}
        assert len({p["slot"] for p in members}) == len(members)
    solo = [p for p in params if p["group_id"] is None]
    assert [(p["slot"], p["sharing"]) for p in solo] == [("1g.10gb#0", "exclusive")]
    # Telemetry is sampled by default: whole-GPU energy and per-slice memory per run.
    assert frame["energy_j"].notna().all() and (frame["energy_j"] > 0).all()
    assert frame["power_mean_w"].notna().all()
    inter = interference_table(frame)
    assert len(inter) == 6 and inter["np_slot"].notna().all()
    assert (inter["np_slot"] > 0).all()
    four = inter[inter["group_size"] == 4]
    assert four["stp"].iloc[0] == pytest.approx(four["np_slot"].sum())
    shown = CliRunner().invoke(app, ["results", "show", "--results", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "interference of co-located jobs" in shown.output
    assert "STP" in shown.output and "baselines: true" not in shown.output
    as_json = json.loads(
        CliRunner().invoke(app, ["results", "show", "--results", str(db), "--json"]).output
    )
    shared = [r for r in as_json if r.get("np_slot") is not None]
    assert len(shared) == 6 and all(r["stp"] > 0 for r in shared)


def test_a_server_scenario_and_a_training_neighbor(tmp_path: Path) -> None:
    db, out = _run(
        tmp_path,
        f"""
name: noisy
layouts: ["19,19"]
baselines: true
{STOP}
jobs:
  - workload: gemm
    model_args: {{n: 32}}
    instances: ["1g.10gb#0"]
    scenario: {{name: server, target_qps: 50, latency_target_ms: 200, min_query_count: 30}}
neighbors:
  - workload: resnet18
    task: train
    batch_size: 4
    model_args: {RESNET}
""",
    )
    frame = load(db, wide=True)
    params = _params(frame)
    roles = sorted(p["role"] for p in params)
    assert roles == ["baseline", "job", "neighbor"], out
    job = frame[[p["role"] == "job" for p in params]].iloc[0]
    neighbor = frame[[p["role"] == "neighbor" for p in params]].iloc[0]
    assert job["status"] == "ok" and neighbor["status"] == "ok"
    assert neighbor["task"] == "train" and neighbor["workload"] == "resnet18"
    # Scenario metrics: LoadGen's verdict, the SLO and per-sample latencies.
    assert job["scenario_valid"] in (0.0, 1.0) and job["slo_latency_ms"] == 200.0
    assert job["target_qps"] == 50.0 and job["latency_p99_ms"] > 0
    scen = [p for p in params if p["role"] == "job"][0]["scenario"]
    assert scen["name"] == "server" and scen["latency_percentile"] == 99.0
    # The neighbor covered the job's whole window.
    jp = [p for p in params if p["role"] == "job"][0]
    np_ = [p for p in params if p["role"] == "neighbor"][0]
    assert np_["window_start_unix"] <= jp["window_start_unix"] + 0.5
    assert np_["window_end_unix"] >= jp["window_end_unix"]
    inter = interference_table(frame)
    row = inter[inter["role"] == "job"].iloc[0]
    assert row["p99_inflation"] > 0 and row["np_slot"] > 0


def test_mps_clients_and_time_sliced_processes_on_the_whole_gpu(tmp_path: Path) -> None:
    db, out = _run(
        tmp_path,
        f"""
name: mps-vs-timeslice
layouts: [current]
baselines: true
{STOP}
sharing:
  - mps: {{clients: 2, thread_percentage: [30, 70]}}
  - timeslice: {{processes: 2}}
jobs:
  - workload: gemm
    model_args: {{n: 32}}
""",
        spec="a100-80gb:1:mig-off",
    )
    frame = load(db, wide=True)
    assert set(frame["status"]) == {"ok"}, out
    params = _params(frame)
    by = {p["slot"]: p for p in params}
    assert set(by) == {"gpu", "gpu/mps0", "gpu/mps1", "gpu/ts0", "gpu/ts1"}
    mps = [by["gpu/mps0"], by["gpu/mps1"]]
    # One daemon served both clients; it saw them connect, and quit at the end.
    assert [m["mps"]["thread_percentage"] for m in mps] == [30, 70]
    info = mps[0]["mps"]
    assert info["verified"] is True and info["client_count"] == 2, info
    assert info["stopped"] == "quit" and info["daemon_pid"] == mps[1]["mps"]["daemon_pid"]
    assert "commands" not in info
    assert by["gpu/ts0"]["compute_mode"] == by["gpu/ts1"]["compute_mode"] == "DEFAULT"
    assert by["gpu/ts0"]["group_id"] == by["gpu/ts1"]["group_id"] != mps[0]["group_id"]
    inter = interference_table(frame)
    assert sorted(inter["sharing"]) == ["mps", "mps", "timeslice", "timeslice"]
    # The baseline is the job alone on the whole GPU, which MIG-off also makes np_gpu.
    assert inter["np_slot"].notna().all() and inter["np_gpu"].notna().all()
