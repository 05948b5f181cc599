"""The worker through the real subprocess: success, crash, timeout, OOM, invalid, barrier.

Every worker of this module starts at once in a module fixture (they spend
most of their time importing torch, which two cores do in parallel); each
test then waits for its own.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from migperf.bench.device import worker_env
from migperf.bench.process import WorkerGroup, WorkerProcess, run_worker
from migperf.bench.result import load_result
from migperf.bench.spec import BenchSpec
from tests.bench.tiny import QUICK, TINY

ENV = worker_env("cpu")
TIMEOUT_S = 120.0
HANG_TIMEOUT_S = 8.0


def gemm(**kw: Any) -> BenchSpec:
    return BenchSpec(workload="gemm", task="infer", **{"model_args": TINY["gemm"], **QUICK, **kw})


SOLO: dict[str, tuple[BenchSpec, float]] = {
    "ok": (
        BenchSpec(
            workload="resnet18",
            task="train",
            batch_size=2,
            model_args=TINY["resnet18"],
            # Twelve workers start at once on a 2-core CI box: room for 5 slow
            # iterations (the stop rule still ends it as soon as it has them).
            **{**QUICK, "min_iterations": 5, "max_duration_s": 60.0},
        ),
        TIMEOUT_S,
    ),
    "abort": (gemm(inject_crash=True), TIMEOUT_S),
    "raise": (gemm(inject_crash="raise"), TIMEOUT_S),
    "oom": (gemm(inject_oom=True, batch_size=4), TIMEOUT_S),
    "hang": (gemm(inject_hang=True), HANG_TIMEOUT_S),
    "invalid": (gemm(model_args={"n": 8, "m": 3}), TIMEOUT_S),
    "simulated": (gemm(simulated=True), TIMEOUT_S),
}


@pytest.fixture(scope="module")
def workers() -> Iterator[dict[str, Any]]:
    procs = {name: WorkerProcess(s, ENV, timeout_s=t) for name, (s, t) in SOLO.items()}
    colocated = WorkerGroup(
        [
            (gemm(min_duration_s=0.4, min_iterations=5), ENV),
            (gemm(min_duration_s=0.4, min_iterations=5), ENV),
        ],
        timeout_s=TIMEOUT_S,
    )
    # The second worker crashes in warmup, so this group never gets past its barrier.
    doomed = WorkerGroup([(gemm(), ENV), (gemm(inject_crash=True), ENV)], timeout_s=TIMEOUT_S)
    for p in procs.values():
        p.start()
    colocated.start()
    doomed.start()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    solo_barrier = pool.submit(
        run_worker, gemm(barrier=True, max_iterations=3, min_duration_s=0.0), ENV, TIMEOUT_S
    )
    yield {"solo": procs, "colocated": colocated, "doomed": doomed, "barrier_solo": solo_barrier}
    pool.shutdown(wait=True)
    for p in procs.values():
        p.kill()
    for g in (colocated, doomed):
        for w in g.workers:
            w.kill()


def test_success_returns_one_complete_document(workers: dict[str, Any]) -> None:
    r = workers["solo"]["ok"].wait()
    assert r.status == "ok", r.error
    assert r.schema_version == 1
    assert r.workload == "resnet18" and r.task == "train" and r.batch_size == 2
    assert r.device_kind == "cpu" and r.simulated is False
    env = r.environment
    assert env is not None
    assert env.device_kind == "cpu" and env.torch_version and env.transformers_version
    assert env.pid == r.process.pid and env.host and env.python_version
    assert env.cuda_visible_devices == ""
    t = r.timing
    assert t is not None and t.timer == "perf_counter_ns"
    assert t.warmup_iterations == 1 and len(r.warmup_samples_ms) == 1
    assert t.iterations == len(r.latency_samples_ms) >= 5
    assert r.latency_ms is not None and r.latency_ms.count == t.iterations
    assert set(r.phase_ms) == {"forward", "backward", "optimizer"}
    assert r.throughput is not None
    assert r.throughput.samples_per_s == pytest.approx(2 * t.iterations / t.measured_duration_s)
    assert r.peak_memory_mib is None  # no device memory on a CPU
    assert r.host_peak_rss_mib and r.host_peak_rss_mib > 0
    assert r.process.returncode == 0
    assert any("measuring" in line for line in r.process.stderr_tail)


def test_stdout_carries_exactly_one_json_document(workers: dict[str, Any]) -> None:
    p: WorkerProcess = workers["solo"]["ok"]
    r = p.wait()
    lines = p.stdout_text.strip().splitlines()
    assert len(lines) == 1
    assert load_result(lines[0]).status == r.status == "ok"
    # The worker's own progress lines went to stderr.
    assert any(line.startswith("migperf worker[") for line in r.process.stderr_tail)


def test_hard_crash_is_reported_with_the_stderr_tail(workers: dict[str, Any]) -> None:
    r = workers["solo"]["abort"].wait()
    assert r.status == "crashed"
    assert r.process.returncode == -6
    assert "killed by SIGABRT" in r.error.message
    # faulthandler leaves the Python stack of the crash on stderr.
    assert any("Fatal Python error" in line or "Aborted" in line for line in r.process.stderr_tail)


def test_unexpected_exception_is_crashed_with_its_traceback(workers: dict[str, Any]) -> None:
    r = workers["solo"]["raise"].wait()
    assert r.status == "crashed"
    assert r.error.kind == "RuntimeError" and r.error.phase == "warmup"
    assert "injected crash" in r.error.message
    assert "Traceback" in (r.error.traceback or "")
    assert r.process.returncode == 1


def test_out_of_memory_is_an_outcome_with_the_batch_size(workers: dict[str, Any]) -> None:
    r = workers["solo"]["oom"].wait()
    assert r.status == "oom"
    assert r.batch_size == 4
    assert r.error.kind == "OutOfMemoryError"
    assert "batch size 4" in r.error.message
    assert r.process.returncode == 0


def test_timeout_kills_the_worker(workers: dict[str, Any]) -> None:
    p = workers["solo"]["hang"]
    r = p.wait()
    assert r.status == "timeout"
    assert r.process.timed_out and r.process.returncode == -9
    # Killed at its deadline, even though nobody waited on it until now.
    assert HANG_TIMEOUT_S <= r.process.wall_duration_s < HANG_TIMEOUT_S + 3
    with pytest.raises(ProcessLookupError):
        os.kill(p.pid, 0)


def test_invalid_model_arg_is_reported_not_crashed(workers: dict[str, Any]) -> None:
    r = workers["solo"]["invalid"].wait()
    assert r.status == "invalid"
    assert r.error.kind == "UsageError" and r.error.phase == "build"
    assert "unknown model arg 'm' for gemm" in r.error.message
    assert r.process.returncode == 2


def test_simulated_slot_runs_on_cpu_and_says_so(workers: dict[str, Any]) -> None:
    r = workers["solo"]["simulated"].wait()
    assert r.status == "ok"
    assert r.simulated is True and r.device_kind == "cpu"
    assert any("simulated GPU slot" in w for w in r.warnings)


def test_barrier_releases_colocated_workers_together(workers: dict[str, Any]) -> None:
    group: WorkerGroup = workers["colocated"]
    assert group.wait_ready(TIMEOUT_S)
    assert all(w.is_ready() for w in group.workers)
    released = group.release()
    a, b = group.collect()
    assert a.status == "ok" and b.status == "ok", (a.error, b.error)
    ta, tb = a.timing, b.timing
    # Both were ready before either started measuring...
    assert max(ta.ready_unix_s, tb.ready_unix_s) <= min(
        ta.window_start_unix_s, tb.window_start_unix_s
    )
    assert max(ta.ready_unix_s, tb.ready_unix_s) <= released + 0.01
    assert ta.go_unix_s >= released - 0.01 and tb.go_unix_s >= released - 0.01
    # ...and their measurement windows overlap.
    overlap = min(ta.window_end_unix_s, tb.window_end_unix_s) - max(
        ta.window_start_unix_s, tb.window_start_unix_s
    )
    assert overlap > 0.3
    assert group.release_spread_s is not None and group.release_spread_s < 0.05


def test_barrier_is_abandoned_when_a_worker_fails_before_it_is_ready(
    workers: dict[str, Any],
) -> None:
    group: WorkerGroup = workers["doomed"]
    assert group.wait_ready(TIMEOUT_S) is False
    group.abort()
    healthy, crashed = group.collect()
    assert crashed.status == "crashed"
    assert healthy.status == "aborted"
    assert "barrier was abandoned" in healthy.error.message


def test_run_worker_never_raises_for_a_missing_interpreter() -> None:
    p = WorkerProcess(gemm(), ENV, python="/nonexistent/python")
    p.start()
    r = p.wait()
    assert r.status == "crashed" and r.error.phase == "process"


def test_malformed_spec_is_an_invalid_document() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "migperf.bench.worker"],
        input='{"workload": "gemm", "task": "fly"}\n',
        capture_output=True,
        text=True,
        env=ENV,
        timeout=TIMEOUT_S,
    )
    doc = json.loads(proc.stdout)
    assert proc.returncode == 2
    assert doc["status"] == "invalid" and "task" in doc["error"]["message"]


def test_run_worker_with_a_barrier_releases_at_once(workers: dict[str, Any]) -> None:
    r = workers["barrier_solo"].result(timeout=TIMEOUT_S)
    assert r.status == "ok"
    assert r.timing.ready_unix_s is not None and r.timing.go_unix_s >= r.timing.ready_unix_s
