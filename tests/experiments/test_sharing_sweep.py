"""Planning shared runs: MIG co-location, MPS clients, time-slicing, neighbors, baselines.

Pure expansion against the simulator: nothing runs, so these are fast.
"""

from __future__ import annotations

import pytest

from migperf.errors import ConfigError
from migperf.experiments.config import parse_config
from migperf.experiments.planning import plan_experiment
from migperf.experiments.sweep import RunPlan, run_key
from migperf.nvml import open_nvml

BASE = """
name: share
gpus: [0]
stop: {{warmup_iterations: 1, min_iterations: 3, min_duration_s: 0.0, max_duration_s: 5}}
jobs:
  - workload: gemm
    model_args: {{n: 32}}
{extra}
"""


def plan(extra: str, spec: str = "a100-80gb", jobs: str | None = None) -> list[RunPlan]:
    text = BASE.format(extra=extra)
    if jobs is not None:
        text = text.split("jobs:")[0] + jobs + "\n" + extra
    cfg = parse_config(text, "share.yaml")
    with open_nvml(spec) as nvml:
        return plan_experiment(nvml, cfg, "share.yaml").runs


def names(run: RunPlan) -> list[str]:
    return [m.name for m in run.members]


def test_mig_sharing_runs_every_slice_together_after_the_baselines() -> None:
    runs = plan('layouts: ["19,19,19,19"]\nsharing: mig\nbaselines: true')
    assert [(r.role, r.sharing, names(r)) for r in runs] == [
        ("baseline", "exclusive", ["1g.10gb#0"]),
        ("baseline", "exclusive", ["1g.10gb#1"]),
        ("baseline", "exclusive", ["1g.10gb#2"]),
        ("baseline", "exclusive", ["1g.10gb#3"]),
        ("job", "mig", ["1g.10gb#0", "1g.10gb#1", "1g.10gb#2", "1g.10gb#3"]),
    ]
    group = runs[-1]
    keys = [group.member_key(m) for m in group.members]
    assert len(set(keys)) == 4 and all(k.startswith(group.run_key + ":") for k in keys)


def test_exclusive_runs_serve_as_baselines_without_duplicates() -> None:
    runs = plan('layouts: ["19,19"]\ninstances: each\nsharing: [exclusive, mig]\nbaselines: true')
    assert [(r.role, r.sharing, names(r)) for r in runs] == [
        ("job", "exclusive", ["1g.10gb#0"]),
        ("job", "exclusive", ["1g.10gb#1"]),
        ("job", "mig", ["1g.10gb#0", "1g.10gb#1"]),
    ]


def test_mps_clients_share_one_device_with_their_thread_percentages() -> None:
    runs = plan(
        'layouts: ["current"]\nsharing: {mps: {clients: 4, thread_percentage: [10, 20, 30, 40]}}',
        spec="h100-80gb:1:mig-off",
    )
    (run,) = runs
    assert run.sharing == "mps"
    assert names(run) == ["gpu/mps0", "gpu/mps1", "gpu/mps2", "gpu/mps3"]
    assert [m.thread_percentage for m in run.members] == [10, 20, 30, 40]
    assert {m.slot.name for m in run.members} == {"gpu"}


def test_mps_on_each_mig_device_is_one_group_per_device() -> None:
    runs = plan(
        'layouts: ["9,9"]\ninstances: each\nsharing: {mps: {clients: 2, thread_percentage: 50}}'
    )
    assert [names(r) for r in runs] == [
        ["3g.40gb#0/mps0", "3g.40gb#0/mps1"],
        ["3g.40gb#1/mps0", "3g.40gb#1/mps1"],
    ]
    assert all(m.thread_percentage == 50 for r in runs for m in r.members)


def test_arms_apply_only_to_the_layouts_they_name() -> None:
    runs = plan(
        'layouts: ["19,19,19,19", "5"]\n'
        'sharing:\n  - mig: {layouts: ["19,19,19,19"]}\n'
        '  - timeslice: {processes: 4, layouts: ["5"]}\n'
    )
    assert [(r.layout, r.sharing, names(r)) for r in runs] == [
        ("19,19,19,19", "mig", ["1g.10gb#0", "1g.10gb#1", "1g.10gb#2", "1g.10gb#3"]),
        ("5", "timeslice", ["4g.40gb#0/ts0", "4g.40gb#0/ts1", "4g.40gb#0/ts2", "4g.40gb#0/ts3"]),
    ]


def test_neighbors_load_the_other_slices_and_the_job_gets_a_baseline() -> None:
    jobs = """jobs:
  - workload: gemm
    model_args: {n: 32}
    instances: ["1g.10gb#0"]
neighbors:
  - workload: resnet18
    task: train
    model_args: {image_size: 32, embedding_size: 8, hidden_sizes: [8, 16, 16, 16], depths: [1, 1, 1, 1]}
"""
    runs = plan('layouts: ["19,19,19"]\nbaselines: true', jobs=jobs)
    assert [(r.role, r.sharing, names(r)) for r in runs] == [
        ("baseline", "exclusive", ["1g.10gb#0"]),
        ("job", "mig", ["1g.10gb#0", "1g.10gb#1/neighbor0", "1g.10gb#2/neighbor0"]),
    ]
    nb = runs[1].members[1]
    assert nb.role == "neighbor" and nb.job is not None and nb.job.task == "train"
    assert [s.name for s in runs[1].slots] == ["1g.10gb#0"]  # only the job is measured


def test_scenario_axes_sweep_the_arrival_rate() -> None:
    jobs = """jobs:
  - workload: gemm
    model_args: {n: 32}
    scenario: {name: server, target_qps: 10, latency_target_ms: 50}
    sweep: {scenario.target_qps: [25, 50, 100]}
"""
    runs = plan('layouts: ["current"]', spec="a100-80gb:1:mig-off", jobs=jobs)
    assert [r.scenario for r in runs] == [
        {"name": "server", "target_qps": q, "latency_target_ms": 50.0} for q in (25.0, 50.0, 100.0)
    ]
    assert len({r.run_key for r in runs}) == 3
    assert "server@25qps" in runs[0].describe()


def test_plain_configs_keep_the_run_keys_of_earlier_releases() -> None:
    text = BASE.format(extra='layouts: ["9,9"]\ninstances: each')
    cfg = parse_config(text)
    with open_nvml("a100-80gb") as nvml:
        runs = plan_experiment(nvml, cfg).runs
    expected = run_key(
        cfg.config_hash(),
        layout="9,9",
        gpu=0,
        slots=["3g.40gb#1"],
        job=0,
        batch_size=1,
        seq_len=128,
        model_args={"n": 32},
        repeat=0,
    )
    assert runs[1].run_key == expected


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("sharing: mps", "mps needs its settings"),
        ("sharing: bogus", "unknown sharing 'bogus'"),
        (
            "sharing: {mps: {clients: 3, thread_percentage: [50, 50]}}",
            "thread_percentage lists 2 value(s) for 3 client(s)",
        ),
        ("sharing: {mps: {clients: 2, thread_percentage: 0}}", "not in (0, 100]"),
        (
            'layouts: ["0"]\nsharing: {mig: {layouts: ["9,9"]}}',
            "names layout '9,9', which is not in layouts",
        ),
        ("sharing: [mig, mig]", "the same arm twice"),
        ("neighbors: [{workload: gemm, sweep: {batch_size: [1, 2]}}]", "neighbors[0] has a sweep"),
    ],
)
def test_bad_sharing_settings_are_config_errors_with_a_line(extra: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(BASE.format(extra=extra), "share.yaml")
    assert message in exc.value.message
    assert "share.yaml:" in exc.value.message


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (
            "  - {workload: gemm, task: train, scenario: {name: offline}}",
            "needs task 'infer', not 'train'",
        ),
        (
            "  - {workload: gemm, sweep: {scenario.target_qps: [1, 2]}}",
            "the job has no scenario",
        ),
        (
            "  - {workload: gemm, scenario: {name: offline}, sweep: {scenario.target_qps: [1]}}",
            "server scenario only",
        ),
        (
            "  - {workload: gemm, scenario: {name: server, target_qps: 5}, "
            "sweep: {scenario.target_qps: [0, 2]}}",
            "is not a positive number",
        ),
        ("  - {workload: gemm, instances: rest}", "'rest' applies to neighbors only"),
    ],
)
def test_bad_scenario_jobs_are_config_errors(job: str, message: str) -> None:
    text = "name: x\njobs:\n" + job + "\n"
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "x.yaml")
    assert message in exc.value.message


def test_resume_skips_a_co_located_run_only_when_every_member_is_stored(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from migperf.experiments.runner import ExperimentRunner
    from migperf.results.store import ResultsStore, RunRecord

    cfg = parse_config(BASE.format(extra='layouts: ["19,19"]\nsharing: mig'))
    with open_nvml("a100-80gb") as nvml:
        planned = plan_experiment(nvml, cfg)
        (run,) = planned.runs
        with ResultsStore(tmp_path / "r.db") as store:
            first, second = (run.member_key(m) for m in run.members)
            store.record(RunRecord(first, "share", cfg.config_hash(), "ok"))
            runner = ExperimentRunner(nvml, planned, store, resume=True, root=tmp_path)
            started: list[object] = []
            runner._execute = lambda r, d, m=None: started.append(r) or ["ok"]  # type: ignore[method-assign]
            runner.run()
            assert started == [run]  # one member missing: the group runs again
            store.record(RunRecord(second, "share", cfg.config_hash(), "ok"))
            started.clear()
            report = ExperimentRunner(nvml, planned, store, resume=True, root=tmp_path).run()
            assert report.skipped_existing == 1
