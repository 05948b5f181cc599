"""Simulated slices behave like slices: the device's facts, the memory limit, the CPU share.

The resolution and routing tests start no worker. The governor tests throttle
plain busy loops and bound the CPU time they got, which only load from
elsewhere can lower, so they hold on a busy machine. A few tests run real
workers on simulated slices (a second or two each).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pytest

import migperf.bench.launch as launch_mod
from migperf.bench.device import worker_env
from migperf.bench.emulation import (
    EMULATION_ENV,
    SliceEmulation,
    emulation_env,
    emulation_from_env,
    oom_message,
    resolve_emulation,
)
from migperf.bench.launch import LaunchJob, launch_jobs
from migperf.bench.process import GroupResult
from migperf.bench.result import WorkerResult
from migperf.bench.spec import BenchSpec
from migperf.bench.throttle import CpuGovernor, cpu_seconds
from migperf.mig import apply_layout
from migperf.nvml.facade import Nvml

QUICK: dict[str, Any] = {
    "warmup_iterations": 1,
    "min_iterations": 2,
    "min_duration_s": 0.05,
    "max_duration_s": 5.0,
}


@pytest.fixture(autouse=True)
def no_user_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.fixture
def a100(sim: Callable[..., Nvml]) -> tuple[Nvml, dict[str, str]]:
    """A simulated A100-80GB with a 3g, a 2g and a 1g slice; profile -> MIG UUID."""
    nvml = sim("a100-80gb")
    apply_layout(nvml, 0, "3g.40gb,2g.20gb,1g.10gb")
    return nvml, {d.name.rsplit(" ", 1)[-1]: d.mig_uuid for d in nvml.mig_devices(0)}


def sim_spec(device: str, **kw: Any) -> BenchSpec:
    data: dict[str, Any] = {
        "workload": "sleep",
        "task": "infer",
        "model_args": {"service_ms": 1.0},
        "simulated": True,
        "expect_device": "cpu",
        "device_label": device,
        **QUICK,
    }
    return BenchSpec(**(data | kw))


class Recorder:
    """Stands in for run_worker / run_group: records the specs and environments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[BenchSpec, dict[str, str]]]]] = []

    def run_worker(
        self, spec: BenchSpec, env: Mapping[str, str] | None = None, timeout_s: float = 600.0
    ) -> WorkerResult:
        self.calls.append(("worker", [(spec, dict(env or {}))]))
        return WorkerResult.for_spec(spec, "ok")

    def run_group(self, jobs: Sequence[Any], *, timeout_s: float = 600.0) -> GroupResult:
        self.calls.append(("group", [(s, dict(e or {})) for s, e in jobs]))
        return GroupResult([WorkerResult.for_spec(j[0], "ok") for j in jobs], True, 1.0, 0.0)


@pytest.fixture
def plain(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    rec = Recorder()
    monkeypatch.setattr(launch_mod, "run_worker", rec.run_worker)
    monkeypatch.setattr(launch_mod, "run_group", rec.run_group)
    return rec


def handed(env: Mapping[str, str]) -> SliceEmulation:
    emulation = emulation_from_env(env)
    assert emulation is not None
    return emulation


# --- the device's facts ---------------------------------------------------------


def test_a_slice_resolves_to_its_memory_and_its_share_of_the_sms(
    a100: tuple[Nvml, dict[str, str]],
) -> None:
    nvml, uuids = a100
    one = resolve_emulation(nvml, uuids["1g.10gb"])
    three = resolve_emulation(nvml, uuids["3g.40gb"])
    whole = resolve_emulation(nvml, "0")
    assert one is not None and three is not None and whole is not None
    assert (one.name, one.memory_mib, one.sm_count, one.gpu_sm_count) == (
        "MIG 1g.10gb",
        9728,
        14,
        98,
    )
    assert one.sm_share == pytest.approx(14 / 98) and three.sm_share == pytest.approx(42 / 98)
    assert whole.sm_share == 1.0 and whole.memory_mib == 81920
    assert resolve_emulation(nvml, "cpu") is None


def test_the_facts_travel_in_one_variable_and_describe_themselves() -> None:
    emulation = SliceEmulation(
        "MIG-x", "MIG 1g.10gb", 9728, 14, 98, thread_percentage=50.0, host_cores=2.0, group="g"
    )
    assert emulation_from_env(emulation_env(emulation)) == emulation
    assert emulation_from_env({EMULATION_ENV: "not json"}) is None
    assert emulation.device_cores == pytest.approx(2.0 * 14 / 98)
    assert emulation.client_cores == pytest.approx(1.0 * 14 / 98)
    text = emulation.describe()
    assert text.startswith("emulated MIG 1g.10gb:") and "14 of 98 SMs" in text
    assert "9728 MiB" in text and "MPS client at 50 %" in text
    oom = oom_message(emulation, RuntimeError("you tried to allocate 2147483648 bytes"))
    assert "tried to allocate 2.00 GiB" in oom and "9728 MiB" in oom
    injected = oom_message(emulation, RuntimeError("CUDA out of memory (injected)\nmore"))
    assert injected.startswith("CUDA out of memory (injected); MIG 1g.10gb has a total capacity")
    assert "9728 MiB" in oom_message(emulation, MemoryError())


# --- the launch hands every simulated job its emulation ---------------------------


def test_each_simulated_job_gets_its_device_and_jobs_on_one_device_share_a_group(
    a100: tuple[Nvml, dict[str, str]], plain: Recorder
) -> None:
    nvml, uuids = a100
    one, three = uuids["1g.10gb"], uuids["3g.40gb"]
    jobs = [
        LaunchJob(sim_spec(one), worker_env(one, simulated=True), one),
        LaunchJob(sim_spec(three), worker_env(three, simulated=True), three),
        LaunchJob(sim_spec(three), worker_env(three, simulated=True), three),
    ]
    launch_jobs(jobs, simulated=True, timeout_s=5.0, nvml=nvml)
    got = [handed(env) for _, env in plain.calls[0][1]]
    assert [e.memory_mib for e in got] == [9728, 40192, 40192]
    assert all(e.host_cores == float(len(os.sched_getaffinity(0))) for e in got)
    # Time-sliced processes on one device take turns in its share: one group, no own quota.
    assert got[1].group == got[2].group != got[0].group
    assert all(e.client_cores is None for e in got)
    # Idle OpenMP threads sleep instead of spending the share spinning.
    assert all(env["OMP_WAIT_POLICY"] == "PASSIVE" for _, env in plain.calls[0][1])


def test_an_mps_client_gets_its_thread_percentage_and_pinned_memory(
    a100: tuple[Nvml, dict[str, str]], plain: Recorder
) -> None:
    nvml, uuids = a100
    dev = uuids["3g.40gb"]
    env = worker_env(dev, simulated=True) | {
        "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25",
        "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT": "0=2048M",
    }
    launch_jobs([LaunchJob(sim_spec(dev), env, dev)], simulated=True, timeout_s=5.0, nvml=nvml)
    emulation = handed(plain.calls[0][1][0][1])
    assert emulation.thread_percentage == 25.0 and emulation.memory_limit_mib == 2048
    assert emulation.host_cores is not None
    assert emulation.client_cores == pytest.approx(emulation.host_cores * 42 / 98 / 4)


def test_a_throttled_single_job_waits_at_the_barrier_and_real_runs_are_left_alone(
    a100: tuple[Nvml, dict[str, str]], plain: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml, uuids = a100
    dev = uuids["2g.20gb"]
    job = LaunchJob(sim_spec(dev), worker_env(dev, simulated=True), dev)
    launch_jobs([job], simulated=True, timeout_s=5.0, nvml=nvml)
    kind, [(spec, env)] = plain.calls[0]
    # Still one worker, released when ready: its share applies from the release.
    assert kind == "worker" and spec.barrier and not job.spec.barrier and EMULATION_ENV in env
    # A real run, and a simulated one whose device NVML does not know, are not emulated.
    monkeypatch.setenv(EMULATION_ENV, "{}")  # a stray value in the caller's environment
    real = LaunchJob(sim_spec(dev, simulated=False), worker_env(dev), dev)
    lost = LaunchJob(sim_spec("7"), worker_env("7", simulated=True), "7")
    launch_jobs([real], simulated=False, timeout_s=5.0, nvml=nvml)
    launch_jobs([lost], simulated=True, timeout_s=5.0, nvml=nvml)
    for _, [(spec, env)] in plain.calls[1:]:
        assert EMULATION_ENV not in env and not spec.barrier


def test_an_explicit_emulation_needs_no_nvml(plain: Recorder) -> None:
    facts = SliceEmulation("MIG-x", "MIG 1g.5gb", 4864, 14, 98)
    job = LaunchJob(sim_spec("MIG-x"), worker_env("cpu"), "MIG-x", emulation=facts)
    launch_jobs([job], simulated=True, timeout_s=5.0)
    emulation = handed(plain.calls[0][1][0][1])
    assert emulation.memory_mib == 4864 and emulation.throttled


# --- the CPU share (the governor) ----------------------------------------------------


@pytest.fixture
def spinners() -> Iterator[Callable[[int], list[subprocess.Popen[bytes]]]]:
    """Start busy loops (one thread each); all are killed after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(n: int) -> list[subprocess.Popen[bytes]]:
        procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
        started.extend(procs)
        return procs

    yield start
    for p in started:
        p.kill()
        p.wait()


def _cpu_over(
    procs: Sequence[subprocess.Popen[bytes]], seconds: float
) -> tuple[list[float], float]:
    """CPU seconds each process used over the next ``seconds``, and the wall time it took."""
    before = [cpu_seconds(p.pid) or 0.0 for p in procs]
    t0 = time.monotonic()
    time.sleep(seconds)
    after = [cpu_seconds(p.pid) or 0.0 for p in procs]
    return [a - b for a, b in zip(after, before, strict=True)], time.monotonic() - t0


def test_a_governed_process_gets_no_more_than_its_share(
    spinners: Callable[[int], list[subprocess.Popen[bytes]]],
) -> None:
    gov = CpuGovernor()
    (proc,) = spinners(1)
    handle = gov.attach(proc.pid, group="1g", group_cores=0.15)
    time.sleep(0.2)
    (used,), wall = _cpu_over([proc], 1.0)
    # Load from elsewhere can only lower it; the bucket's burst is the only overshoot.
    assert 0.0 < used <= 0.15 * wall + 0.06
    handle.close()
    (free,), wall = _cpu_over([proc], 0.3)
    assert free > 0.15 * wall  # continued and ungoverned once closed


def test_time_sliced_processes_share_one_device_and_mps_clients_have_their_own_quota(
    spinners: Callable[[int], list[subprocess.Popen[bytes]]],
) -> None:
    gov = CpuGovernor()
    a, b, c, d = spinners(4)
    handles = [
        # Time-slicing: two processes in one device's 0.3 cores, no quota each.
        gov.attach(a.pid, group="slice", group_cores=0.3),
        gov.attach(b.pid, group="slice", group_cores=0.3),
        # MPS: clients at 10 % of a device of 1.0 core each get 0.1.
        gov.attach(c.pid, group="mps", group_cores=1.0, own_cores=0.1),
        gov.attach(d.pid, group="mps", group_cores=1.0, own_cores=0.1),
    ]
    time.sleep(0.2)
    used, wall = _cpu_over([a, b, c, d], 1.0)
    assert used[0] + used[1] <= 0.3 * wall + 0.06
    assert used[2] <= 0.1 * wall + 0.04 and used[3] <= 0.1 * wall + 0.04
    assert all(u > 0 for u in used)
    for h in handles:
        h.close()


def test_an_unarmed_process_runs_free_until_armed(
    spinners: Callable[[int], list[subprocess.Popen[bytes]]],
) -> None:
    gov = CpuGovernor()
    (proc,) = spinners(1)
    handle = gov.attach(proc.pid, group="g", group_cores=0.1, armed=False)
    (free,), wall = _cpu_over([proc], 0.3)
    assert free > 0.1 * wall + 0.05
    handle.arm()
    time.sleep(0.1)
    (used,), wall = _cpu_over([proc], 0.6)
    assert used <= 0.1 * wall + 0.05
    handle.close()


def test_time_spent_getting_ready_buys_no_burst_after_the_release(
    spinners: Callable[[int], list[subprocess.Popen[bytes]]],
) -> None:
    # A long burst allowance makes a saved-up credit visible: 0.2 cores x 1 s = 0.2 s.
    gov = CpuGovernor(burst_s=1.0)
    (proc,) = spinners(1)
    # Unarmed for 1.5 s, as a fresh worker importing torch; a warm one is ready at once.
    handle = gov.attach(proc.pid, group="g", group_cores=0.2, armed=False)
    time.sleep(1.5)
    handle.arm()
    (used,), wall = _cpu_over([proc], 0.5)
    # The share from the release on (0.1 s), a tick's overshoot; not 0.2 s saved before it.
    assert used <= 0.2 * wall + 0.04, (used, wall)
    handle.close()


# --- real workers on simulated slices ------------------------------------------------


def test_a_working_set_larger_than_the_1g_slice_is_oom_and_fits_on_the_3g(
    a100: tuple[Nvml, dict[str, str]],
) -> None:
    nvml, uuids = a100
    # 12000 MiB, never touched: more than 1g.10gb's 9728 MiB, less than 3g.40gb's.
    args = {"service_ms": 1.0, "hold_mib": 12000}
    jobs = [
        LaunchJob(sim_spec(d, model_args=args), worker_env(d, simulated=True), d)
        for d in (uuids["1g.10gb"], uuids["3g.40gb"])
    ]
    small, large = (launch_jobs([j], simulated=True, timeout_s=60.0, nvml=nvml)[0] for j in jobs)
    assert small.status == "oom" and small.simulated and small.error is not None
    assert small.error.kind == "OutOfMemoryError" and small.error.phase == "build"
    assert "9728 MiB" in small.error.message and "MIG 1g.10gb" in small.error.message
    assert "tried to allocate 11.72 GiB" in small.error.message
    assert large.status == "ok", large.error
    assert large.environment is not None and large.environment.emulation is not None
    assert "42 of 98 SMs" in large.environment.emulation
    assert any("emulated MIG 3g.40gb" in w for w in large.warnings)


def test_a_real_workload_that_does_not_fit_its_slice_is_oom() -> None:
    # gemm at n=2048 holds three 16 MiB matrices: more than a slice of 32 MiB.
    facts = SliceEmulation("MIG-x", "MIG tiny", memory_mib=32)
    spec = sim_spec("MIG-x", workload="gemm", model_args={"n": 2048})
    job = LaunchJob(spec, worker_env("cpu"), "MIG-x", emulation=facts)
    (result,) = launch_jobs([job], simulated=True, timeout_s=60.0)
    assert result.status == "oom" and result.error is not None, result.error
    assert "32 MiB" in result.error.message and "MIG tiny" in result.error.message


def test_a_worker_at_a_14_of_98_share_measures_slower_than_at_98_of_98() -> None:
    def rate(sm: int) -> float:
        facts = SliceEmulation("MIG-x", f"MIG {sm}", memory_mib=4096, sm_count=sm, gpu_sm_count=98)
        spec = sim_spec(
            "MIG-x",
            workload="gemm",
            model_args={"n": 256},
            batch_size=4,
            warmup_iterations=2,
            min_iterations=3,
            min_duration_s=0.4,
        )
        job = LaunchJob(spec, worker_env("cpu"), "MIG-x", emulation=facts)
        (r,) = launch_jobs([job], simulated=True, timeout_s=60.0)
        assert r.status == "ok" and r.throughput is not None, r.error
        return r.throughput.samples_per_s

    slow, fast = rate(14), rate(98)
    # 14/98 of the cores is about 0.14 of the speed; generous for a loaded machine.
    assert slow < 0.6 * fast, (slow, fast)


def test_a_warm_worker_on_a_1g_slice_gets_a_seventh_of_the_cores_in_every_run() -> None:
    from migperf.bench.emulation import host_cores
    from migperf.bench.launch import launch
    from migperf.bench.warm import WarmPool

    facts = SliceEmulation("MIG-w", "MIG 1g", memory_mib=4096, sm_count=14, gpu_sm_count=98)
    share = host_cores() * 14 / 98
    marks: dict[str, Any] = {}

    def on_event(_index: int, event: dict[str, Any]) -> None:
        if event.get("event") == "ready":
            marks["pid"] = event["pid"]
        if event.get("phase") == "measuring":
            marks["cpu"], marks["t"] = cpu_seconds(marks["pid"]), time.monotonic()

    with WarmPool(["gemm"]) as pool:
        pool.prepare(worker_env("cpu", simulated=True) | {"OMP_WAIT_POLICY": "PASSIVE"})
        for run in (1, 2):
            marks.clear()
            spec = sim_spec(
                "MIG-w",
                workload="gemm",
                model_args={"n": 256},
                batch_size=4,
                warmup_iterations=2,
                min_iterations=3,
                min_duration_s=1.0,
            )
            job = LaunchJob(spec, worker_env("cpu", simulated=True), "MIG-w", emulation=facts)
            out = launch([job], simulated=True, timeout_s=60.0, pool=pool, on_event=on_event)
            used = (cpu_seconds(marks["pid"]) or 0.0) - marks["cpu"]
            wall = time.monotonic() - marks["t"]
            (result,), (use,) = out.results, out.workers or [None]
            assert result.status == "ok", result.error
            assert use is not None and use.mode == "warm" and use.forked
            assert use.run_in_process == run
            # Its measurement (and the result it wrote, and the reset after it) got the
            # slice's share, not the host's cores; load from elsewhere can only lower it.
            assert 0.0 < used <= share * wall + 0.1, (run, used, wall, share)
