"""launch_jobs: the core split, one worker or a released group, telemetry targets, kills.

The routing tests replace the process runners with recorders (no worker
starts); one test runs a real co-located pair on simulated slots to see the
core share reach the workers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import pytest

import migperf.bench.launch as launch_mod
from migperf.bench.device import worker_env
from migperf.bench.launch import LaunchJob, launch, launch_jobs, optional_monitor, split_cores
from migperf.bench.process import GroupResult, run_worker
from migperf.bench.result import WorkerResult
from migperf.bench.spec import BenchSpec
from migperf.errors import GpuNotFoundError, UsageError
from migperf.mig import apply_layout
from migperf.nvml.facade import Nvml
from migperf.telemetry.target import TelemetryTarget, resolve_target
from tests.bench.tiny import QUICK, TINY

if TYPE_CHECKING:
    from migperf.bench.monitor import RunMonitor

CPU_ENV = worker_env("cpu")


def gemm(**kw: Any) -> BenchSpec:
    return BenchSpec(workload="gemm", task="infer", **{"model_args": TINY["gemm"], **QUICK, **kw})


def share(n: int) -> str:
    return str(max(1, (os.cpu_count() or 1) // n))


@pytest.fixture(autouse=True)
def no_user_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


class Recorder:
    """Stands in for run_worker / run_group and for a RunMonitor: records each call."""

    def __init__(self, nvml: Nvml | None = None, targets: Sequence[TelemetryTarget] = ()) -> None:
        self.nvml = nvml
        self.targets = list(targets)
        self.calls: list[tuple[str, Any]] = []

    def run_worker(
        self,
        spec: BenchSpec,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 600.0,
        *,
        target: TelemetryTarget | None = None,
    ) -> WorkerResult:
        self.calls.append(("worker", (spec, dict(env or {}), timeout_s, target)))
        return WorkerResult.for_spec(spec, "ok")

    def run_group(self, jobs: Sequence[Any], *, timeout_s: float = 600.0) -> GroupResult:
        self.calls.append(("group", (list(jobs), timeout_s)))
        results = [WorkerResult.for_spec(job[0], "ok") for job in jobs]
        return GroupResult(results, released=True, release_unix_s=1.0, release_spread_s=0.0)


def as_monitor(rec: Recorder) -> RunMonitor:
    return cast("RunMonitor", rec)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    """The process runners launch_jobs uses without a monitor, recorded."""
    rec = Recorder()
    monkeypatch.setattr(launch_mod, "run_worker", rec.run_worker)
    monkeypatch.setattr(launch_mod, "run_group", rec.run_group)
    return rec


# --- the core split -----------------------------------------------------------


def test_a_simulated_launch_splits_the_cores_between_its_jobs(plain: Recorder) -> None:
    jobs = [LaunchJob(gemm(), dict(CPU_ENV)) for _ in range(3)]
    launch_jobs(jobs, simulated=True, timeout_s=5.0)
    assert [j.env["OMP_NUM_THREADS"] for j in jobs] == [share(3)] * 3
    ((kind, (group, _)),) = plain.calls
    assert kind == "group" and [env["OMP_NUM_THREADS"] for _, env in group] == [share(3)] * 3


def test_a_single_simulated_job_gets_every_core_and_real_gpus_none(plain: Recorder) -> None:
    alone = LaunchJob(gemm(), dict(CPU_ENV))
    launch_jobs([alone], simulated=True, timeout_s=5.0)
    assert alone.env["OMP_NUM_THREADS"] == share(1)
    real = [LaunchJob(gemm(), dict(CPU_ENV)) for _ in range(2)]
    launch_jobs(real, simulated=False, timeout_s=5.0)
    assert all("OMP_NUM_THREADS" not in j.env for j in real)


def test_the_users_omp_num_threads_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    jobs = [LaunchJob(gemm(), {}), LaunchJob(gemm(), {})]
    split_cores(jobs)
    assert jobs[0].env == {} and jobs[1].env == {}


# --- one worker or a group ----------------------------------------------------


def test_one_job_runs_as_one_worker_and_several_as_a_group(plain: Recorder) -> None:
    one = launch([LaunchJob(gemm(), dict(CPU_ENV))], simulated=False, timeout_s=7.0)
    assert one.released and [r.status for r in one.results] == ["ok"]
    assert plain.calls[0][0] == "worker" and plain.calls[0][1][2] == 7.0
    two = launch_jobs(
        [LaunchJob(gemm(), {}), LaunchJob(gemm(batch_size=2), {})], simulated=False, timeout_s=7.0
    )
    assert [r.batch_size for r in two] == [1, 2]
    assert plain.calls[1][0] == "group" and plain.calls[1][1][1] == 7.0


def test_a_single_job_that_asks_for_the_barrier_goes_through_a_group(plain: Recorder) -> None:
    launch_jobs([LaunchJob(gemm(barrier=True), {})], simulated=False, timeout_s=5.0)
    assert [kind for kind, _ in plain.calls] == ["group"]


def test_no_jobs_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        launch_jobs([], simulated=False, timeout_s=1.0)


# --- telemetry ----------------------------------------------------------------


def test_the_monitor_runs_each_job_on_its_resolved_target(sim_h100: Nvml, plain: Recorder) -> None:
    apply_layout(sim_h100, 0, "3g.40gb")
    uuid = sim_h100.mig_devices(0)[0].mig_uuid
    gpu0, slice3g = resolve_target(sim_h100, "0"), resolve_target(sim_h100, uuid)
    assert gpu0 is not None and slice3g is not None and slice3g.mig_uuid == uuid
    monitor = Recorder(sim_h100, [gpu0])
    launch_jobs(
        [LaunchJob(gemm(), {}, device=uuid)],
        simulated=True,
        timeout_s=5.0,
        monitor=as_monitor(monitor),
    )
    ((kind, (_, _, _, target)),) = monitor.calls
    assert kind == "worker" and target == slice3g
    jobs = [LaunchJob(gemm(), {}, device=d) for d in ("0", uuid, None)]
    launch_jobs(jobs, simulated=True, timeout_s=5.0, monitor=as_monitor(monitor))
    kind, (group, _) = monitor.calls[1]
    # A job without a device label is measured on the monitor's first target.
    assert kind == "group" and [t for _, _, t in group] == [gpu0, slice3g, gpu0]
    assert plain.calls == []


def test_the_monitor_is_dropped_when_a_job_has_no_target(sim_h100: Nvml, plain: Recorder) -> None:
    gpu0 = resolve_target(sim_h100, "0")
    assert gpu0 is not None
    monitor = Recorder(sim_h100, [gpu0])
    jobs = [LaunchJob(gemm(), {}, device="0"), LaunchJob(gemm(), {}, device="cpu")]
    results = launch_jobs(jobs, simulated=True, timeout_s=5.0, monitor=as_monitor(monitor))
    assert len(results) == 2 and monitor.calls == []
    assert [kind for kind, _ in plain.calls] == ["group"]


def test_a_device_that_does_not_exist_raises(sim_h100: Nvml, plain: Recorder) -> None:
    monitor = Recorder(sim_h100)
    with pytest.raises(GpuNotFoundError):
        launch_jobs(
            [LaunchJob(gemm(), {}, device="7")],
            simulated=True,
            timeout_s=5.0,
            monitor=as_monitor(monitor),
        )
    assert plain.calls == []


def test_optional_monitor_starts_stops_or_says_why_not(sim_h100: Nvml) -> None:
    why: list[str] = []
    with optional_monitor(
        sim_h100, [None], interval_s=0.05, on_unavailable=why.append, on_warning=why.append
    ) as monitor:
        assert monitor is None
    assert why and "at least one GPU" in why[0]

    def failing() -> Iterator[TelemetryTarget | None]:
        yield resolve_target(sim_h100, "9")

    with optional_monitor(
        sim_h100, failing(), interval_s=0.05, on_unavailable=why.append, on_warning=why.append
    ) as monitor:
        assert monitor is None
    assert len(why) == 2
    with optional_monitor(
        sim_h100,
        [resolve_target(sim_h100, "0")],
        interval_s=0.05,
        on_unavailable=why.append,
        on_warning=why.append,
    ) as monitor:
        assert monitor is not None and monitor.sampler.running
    assert not monitor.sampler.running and len(why) == 2


# --- real workers -------------------------------------------------------------


def test_a_simulated_pair_is_released_together_with_its_share_of_the_cores() -> None:
    env = worker_env("0", simulated=True)
    jobs = [
        LaunchJob(gemm(simulated=True, min_duration_s=0.2), dict(env), device="0") for _ in range(2)
    ]
    outcome = launch(jobs, simulated=True, timeout_s=120.0)
    assert outcome.released, [r.error for r in outcome.results]
    for r in outcome.results:
        assert r.status == "ok" and r.simulated and r.spec is not None and r.spec.barrier
        assert r.timing is not None and r.timing.go_unix_s is not None
        assert r.environment is not None
        assert str(r.environment.torch_num_threads) == share(2)


def test_an_interrupt_kills_a_started_worker() -> None:
    pids: list[int] = []

    def started(pid: int) -> None:
        pids.append(pid)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_worker(gemm(inject_hang=True), CPU_ENV, 60.0, on_started=started)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            os.kill(pids[0], 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        pytest.fail(f"worker {pids[0]} still runs")
