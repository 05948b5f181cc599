"""MPS inside MIG: when it saves a GPU, when the SLO forbids it, from files and from the store."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

import migperf.results
from migperf.cli.main import app
from migperf.mig.migparted import load_migparted
from migperf.nvml.catalog import get_model
from migperf.planner import capacity_table, parse_demand, plan_layout
from migperf.planner.milp import Outcome
from migperf.planner.optimizer import _proof
from migperf.results.store import ResultsStore, RunRecord
from tests.planner.conftest import record_server

runner = CliRunner()

# One service on A100-80GB 1g.10gb slices only (one layout: 1g.10gb*7), planned to
# exactly its target (headroom 0). Alone, an instance serves 50 QPS: 7 x 50 = 350 per GPU,
# so 630 QPS takes 2 GPUs. Two MPS processes in an instance serve 90 QPS together:
# 7 x 90 = 630, exactly the target, on 1 GPU.
DEMAND = """\
services:
  - name: api
    target_qps: 630
    slo: {{percentile: 99, latency_ms: 50}}
{mps}gpus: [{{model: a100-80gb, count: 3, profiles: [1g.10gb]}}]
headroom: 0
"""


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def files(tmp_path: Path, caps: str, mps: bool = True) -> tuple[Path, Path]:
    demand = tmp_path / "d.yaml"
    demand.write_text(DEMAND.format(mps="    mps: {max_processes: 2}\n" if mps else ""))
    path = tmp_path / "caps.csv"
    path.write_text(caps)
    return demand, path


CAPS = """\
gpu_model,profile,service,capacity_qps,mps_processes,source
a100-80gb,1g.10gb,api,50,1,perf_analyzer
a100-80gb,1g.10gb,api,90,2,perf_analyzer
"""


def test_mps_in_mig_saves_a_gpu_over_mig_alone(tmp_path: Path) -> None:
    demand, caps = files(tmp_path, CAPS)
    out = tmp_path / "mig.yaml"
    db = str(tmp_path / "none.db")
    code, stdout, stderr = run(
        "plan", str(demand), "--capacities", str(caps), "--results", db, "--out", str(out)
    )
    assert code == 0, stderr
    assert "Plan: 1 GPU(s), fewest GPUs" in stdout
    assert "Capacities used" in stdout and f"{caps}:3" in stdout
    assert "the same planner without MPS (MIG only)" in stdout and "1 (50%)" in stdout
    assert "no results store" not in stderr  # the capacities file is the data

    # The MIG layout for mig-parted; the MPS processes in a comment and a side file.
    cfg = load_migparted(out)
    assert cfg.configs["migperf-plan"][0].counts() == {"1g.10gb": 7}
    text = out.read_text()
    assert "7 x 1g.10gb -> api (MPS x2)" in text
    side = tmp_path / "mig.mps.yaml"
    assert (
        f"as {side} lists" in text
        and f"wrote the MPS processes per MIG instance to {side}" in stderr
    )
    entries = yaml.safe_load(side.read_text())["mps"]
    assert [(e["profile"], e["instance"], e["processes"], e["service"]) for e in entries] == [
        ("1g.10gb", i, 2, "api") for i in range(7)
    ]

    code, stdout, _ = run("plan", str(demand), "--capacities", str(caps), "--results", db, "--json")
    data = json.loads(stdout)
    assert data["gpus_used"] == 1 and data["uses_mps"] and data["feasible"]
    (job,) = data["jobs"]
    assert job["capacity"] == 630.0 and job["required"] == 630.0  # headroom 0: exactly the target
    assert job["used"] == [
        {
            "model": "a100-80gb",
            "profile": "1g.10gb",
            "processes": 2,
            "capacity": 90.0,
            "instances": 7,
            "origin": f"{caps}:3 (perf_analyzer)",
            "from": "file",
        }
    ]
    assert {b["name"]: b["gpus"] for b in data["baselines"]}["mig-only"] == 2
    solver = data["solver"]
    assert solver["optimal"] and solver["gap"] == 0.0 and solver["lower_bound"] == 1
    assert solver["main_time_s"] >= 0 and solver["solve_time_s"] >= solver["main_time_s"]

    # The same demand without MPS allowed: 2 GPUs, and no side file.
    demand, caps = files(tmp_path, CAPS, mps=False)
    code, stdout, _ = run("plan", str(demand), "--capacities", str(caps), "--results", db, "--json")
    data = json.loads(stdout)
    assert data["gpus_used"] == 2 and not data["uses_mps"]
    assert "mig-only" not in {b["name"] for b in data["baselines"]}


RAW = """\
gpu_model,profile,service,batch_size,mps_processes,throughput_qps,latency_ms,source
a100-80gb,1g.10gb,api,1,1,50,30,sweep
a100-80gb,1g.10gb,api,4,1,60,45,sweep
a100-80gb,1g.10gb,api,1,2,95,70,sweep
a100-80gb,1g.10gb,api,4,2,110,90,sweep
"""


def test_mps_that_breaks_the_latency_slo_is_not_used(tmp_path: Path) -> None:
    # Two processes would serve 110 QPS per instance (7 x 110 = 770: one GPU), but at
    # 70-90 ms, over p99 <= 50 ms. One process at batch 4 serves 60 within it: 2 GPUs.
    demand, caps = files(tmp_path, RAW)
    out = tmp_path / "mig.yaml"
    code, stdout, stderr = run(
        "plan",
        str(demand),
        "--capacities",
        str(caps),
        "--results",
        str(tmp_path / "none.db"),
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["gpus_used"] == 2 and not data["uses_mps"]
    assert {i["processes"] for g in data["gpus"] for i in g["instances"]} == {1}
    (used,) = data["jobs"][0]["used"]
    assert used["processes"] == 1 and used["capacity"] == 60.0
    assert (
        "the highest throughput of 2 raw point(s) within p99 <= 50 ms (batch 4, 45 ms)"
        in (used["origin"])
    )
    assert any("with 2 MPS processes: none of 2 raw point(s)" in n for n in data["notes"])
    assert {b["name"]: b["gpus_saved"] for b in data["baselines"]}["mig-only"] == 0
    assert not (tmp_path / "mig.mps.yaml").exists() and "(MPS x" not in out.read_text()


# ------------------------------------------------------------------ the store

_ids = itertools.count()


def record_mps_run(
    store: ResultsStore,
    per_client: list[float | None],
    *,
    profile: str = "1g.10gb",
    statuses: list[str] | None = None,
    neighbor: bool = False,
    repeat: int = 0,
) -> None:
    """One `migperf run` MPS arm with find_max_qps: k clients on one slot, as records.py stores them."""
    k = len(per_client)
    key = f"mps{next(_ids)}"
    slot = f"{profile}#0"
    slots = [slot] * k + (["1g.10gb#1"] if neighbor else [])
    for i, qps in enumerate(per_client):
        store.record(
            RunRecord(
                run_key=f"{key}:{slot}/mps{i}",
                experiment="capacity-mps",
                config_hash="c0ffee",
                status=(statuses or ["ok"] * k)[i],
                gpu_index=0,
                gpu_name=get_model("a100-80gb").name,
                layout=profile,
                profile=profile,
                device="MIG-x",
                device_kind="cuda",
                workload="resnet50",
                task="infer",
                precision="fp16",
                batch_size=8,
                seq_len=128,
                repeat=repeat,
                params={
                    "model_args": {},
                    "slots": slots,
                    "slot": f"{slot}/mps{i}",
                    "group_id": key,
                    "group_size": len(slots),
                    "sharing": "mps",
                    "role": "job",
                    "client": i,
                    "mps": {"thread_percentage": None, "client_count": k},
                    "scenario": {
                        "name": "server",
                        "find_max_qps": True,
                        "latency_target_ms": 50.0,
                        "latency_percentile": 99.0,
                    },
                },
                metrics={"max_qps_under_slo": (qps, "1/s")},
            )
        )


STORE_DEMAND = """\
services:
  - {name: image-api, workload: resnet50, precision: fp16, batch_size: 8, target_qps: 630,
     slo: {percentile: 99, latency_ms: 50}, mps: {max_processes: 3}}
gpus: [{model: a100-80gb, count: 3, profiles: [1g.10gb]}]
headroom: 0
"""


def test_store_mps_runs_are_capacities_of_the_slot_running_k_processes(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    with ResultsStore(db) as s:
        record_server(s, profile="1g.10gb", max_qps=50.0)
        record_mps_run(s, [44.0, 46.0])  # 90
        record_mps_run(s, [45.0, 47.0], repeat=1)  # 92
        record_mps_run(s, [40.0, 41.0], repeat=2)  # 81: the median of three is 90
        record_mps_run(s, [99.0, 99.0], statuses=["ok", "crashed"])  # incomplete: ignored
        record_mps_run(s, [99.0, 99.0], neighbor=True)  # a neighbour next door: ignored
        record_mps_run(s, [30.0, None, 31.0])  # one client missed even the lowest rate: 61
    demand = parse_demand(STORE_DEMAND)
    table = capacity_table(migperf.results.load(db, wide=True), demand)
    one = table.entry("a100-80gb", "1g.10gb", "image-api")
    assert one is not None and one.value == 50.0 and one.processes == 1
    two = table.entry("a100-80gb", "1g.10gb", "image-api", 2)
    assert two is not None and (two.value, two.runs, two.processes) == (90.0, 3, 2)
    assert two.origin.startswith("store runs 2+3, 4+5, 6+7 (MPS: 2 clients per run")
    three = table.entry("a100-80gb", "1g.10gb", "image-api", 3)
    assert three is not None and three.value == 61.0
    plan = plan_layout(demand, table)
    assert plan.gpus_used == 1 and plan.uses_mps
    assert {i.processes for g in plan.gpus for i in g.instances} == {2}
    assert {b.name: b.gpus for b in plan.baselines}["mig-only"] == 2
    assert plan.jobs[0].used[0].origin == two.origin


def test_a_time_limit_gives_a_lower_bound_and_says_what_it_means() -> None:
    # HiGHS at its time limit with 5 GPUs found and a dual bound of 3.2: no plan uses fewer than 4.
    stopped = Outcome(1, "time limit", x={(0, 0): 5}, mip_gap=0.36, bound=3.2)
    gap, bound, why = _proof(stopped, "min-gpus", 2.0)
    assert bound == 4 and gap == 0.2
    assert why.startswith(
        "HiGHS stopped at the 2 s time limit: the plan uses 5 GPU(s) and no plan uses fewer "
        "than 4, so a longer solve could save at most 1"
    )
    # A bound above n - 1 proves n, whatever the relative gap says.
    assert _proof(Outcome(1, "time limit", x={(0, 0): 5}, bound=4.0001), "min-gpus", 2.0) == (
        0.0,
        5,
        "",
    )


def test_verify_runs_k_mps_clients_on_the_mig_device_and_judges_each(tmp_path: Path) -> None:
    # One 7g.80gb: 60 QPS alone, 120 with two MPS processes; 100 QPS needs the two.
    demand = tmp_path / "d.yaml"
    demand.write_text(
        """\
services:
  - {name: a, workload: gemm, model_args: {n: 32}, target_qps: 100,
     slo: {percentile: 90, latency_ms: 500}, mps: {max_processes: 2}}
gpus: [{model: a100-80gb, count: 1, profiles: [7g.80gb]}]
headroom: 0
"""
    )
    caps = tmp_path / "caps.csv"
    caps.write_text(
        "gpu_model,profile,service,capacity_qps,mps_processes,batch_size\n"
        "a100-80gb,7g.80gb,a,60,1,1\n"
        "a100-80gb,7g.80gb,a,120,2,1\n"
    )
    code, stdout, stderr = run(
        "--simulate",
        "a100-80gb",
        "plan",
        str(demand),
        "--capacities",
        str(caps),
        "--results",
        str(tmp_path / "none.db"),
        "--verify",
        "--verify-duration",
        "0.5",
        "--verify-min-queries",
        "100",
        "--timeout",
        "120",
        "--json",
    )
    assert code == 0, stdout + stderr
    data = json.loads(stdout)
    assert data["gpus_used"] == 1 and data["uses_mps"]
    (job,) = data["verify"]["jobs"]
    assert job["held"] and data["verify"]["restored"]
    insts = job["instances"]
    assert [i["mps_client"] for i in insts] == [0, 1]
    assert len({i["mig_uuid"] for i in insts}) == 1  # both clients on the one MIG device
    assert all(i["target"] == 50.0 and i["held"] for i in insts)
    (info,) = data["verify"]["mps"].values()
    assert info["verified"] is True and info["client_count"] == 2


def test_the_shipped_mps_example_saves_a_gpu() -> None:
    root = Path(__file__).resolve().parents[2] / "configs"
    code, stdout, stderr = run(
        "plan",
        str(root / "demand-mps-example.yaml"),
        "--capacities",
        str(root / "capacities-raw-example.csv"),
        "--results",
        str(root / "no-such.db"),
        "--json",
    )
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["gpus_used"] == 2 and data["uses_mps"] and data["solver"]["optimal"]
    assert {b["name"]: b["gpus"] for b in data["baselines"]}["mig-only"] == 3
