"""Warm workers: one process serves consecutive runs, builds a model once, and ends when it must."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from migperf.bench.device import resolve_device
from migperf.bench.spec import BenchSpec, parse_spec
from migperf.bench.warm import WarmPool

ENV = resolve_device("cpu").env()
FAST = {"warmup_iterations": 1, "min_iterations": 3, "min_duration_s": 0.0, "max_duration_s": 5}


def spec(**kw: Any) -> BenchSpec:
    data: dict[str, Any] = {
        "workload": "gemm",
        "task": "infer",
        "model_args": {"n": 32},
        "expect_device": "cpu",
    }
    return parse_spec({**data, **FAST, **kw})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose: it holds no device.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def gone(pid: int, within_s: float = 10.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def pool() -> Iterator[WarmPool]:
    with WarmPool(["gemm", "resnet18"]) as p:
        p.prepare(ENV)
        yield p


def test_one_process_serves_consecutive_runs_and_builds_a_model_once(pool: WarmPool) -> None:
    resnet = {"workload": "resnet18", "model_args": {"image_size": 32}}
    events: list[dict[str, Any]] = []
    first, use1 = pool.run(spec(**resnet), ENV, device="cpu", timeout_s=120)
    second, use2 = pool.run(
        spec(**resnet, batch_size=2), ENV, device="cpu", timeout_s=120, on_event=events.append
    )
    assert (first.status, second.status) == ("ok", "ok"), (first.error, second.error)
    assert use1.pid == use2.pid == first.process.pid == second.process.pid  # type: ignore[union-attr]
    assert (use1.mode, use1.run_in_process, use1.model_cached) == ("warm", 1, False)
    assert (use2.run_in_process, use2.model_cached) == (2, True)
    # The second run's "build" is only its inputs: the model was built once.
    assert second.timing is not None and first.timing is not None
    assert second.timing.build_duration_s < first.timing.build_duration_s  # type: ignore[operator]
    assert second.throughput is not None and second.throughput.samples_per_s > 0
    phases = [e.get("phase") for e in events if e.get("event") == "phase"]
    assert phases == ["building", "warmup", "measuring"]
    assert use2.to_dict()["mode"] == "warm"


def test_a_failed_run_retires_its_worker_and_the_next_run_gets_a_fresh_one(pool: WarmPool) -> None:
    ok, before = pool.run(spec(), ENV, device="slot-a", timeout_s=60)
    oom, during = pool.run(spec(inject_oom=True), ENV, device="slot-a", timeout_s=60)
    after_result, after = pool.run(spec(), ENV, device="slot-a", timeout_s=60)
    assert (ok.status, oom.status, after_result.status) == ("ok", "oom", "ok")
    assert during.pid == before.pid
    assert gone(before.pid or 0)
    assert after.pid != before.pid and after.run_in_process == 1


def test_a_run_past_its_timeout_is_killed_and_reported(pool: WarmPool) -> None:
    hung, use = pool.run(spec(inject_hang=True), ENV, device="slot-b", timeout_s=3)
    assert hung.status == "timeout"
    assert hung.process is not None and hung.process.timed_out
    assert gone(use.pid or 0)
    again, use2 = pool.run(spec(), ENV, device="slot-b", timeout_s=60)
    assert again.status == "ok" and use2.pid != use.pid


def test_releasing_the_devices_ends_every_worker(pool: WarmPool) -> None:
    _, a = pool.run(spec(), ENV, device="slot-c", timeout_s=60)
    _, b = pool.run(spec(), ENV, device="slot-d", timeout_s=60)
    assert alive(a.pid or 0) and alive(b.pid or 0)
    pool.release_devices()
    # release_devices returns once they exited: nothing holds a device when a layout changes.
    assert not alive(a.pid or 0) and not alive(b.pid or 0)


def test_peak_memory_is_reset_between_runs(pool: WarmPool) -> None:
    big, _ = pool.run(
        spec(model_args={"n": 1024}, batch_size=16), ENV, device="slot-e", timeout_s=120
    )
    small, use = pool.run(spec(), ENV, device="slot-e", timeout_s=60)
    assert big.status == small.status == "ok" and use.run_in_process == 2
    assert big.host_peak_rss_mib is not None and small.host_peak_rss_mib is not None
    # 16 x 1024 x 1024 fp32 x 3 tensors = 192 MiB that the small run must not report.
    assert small.host_peak_rss_mib < big.host_peak_rss_mib - 100


CHILD = """
import json, sys
from migperf.bench.device import resolve_device
from migperf.bench.spec import parse_spec
from migperf.bench.warm import WarmPool
env = resolve_device("cpu").env()
pool = WarmPool(["gemm"])
s = parse_spec({"workload": "gemm", "task": "infer", "model_args": {"n": 32}, "expect_device": "cpu",
                "warmup_iterations": 1, "min_iterations": 3, "min_duration_s": 0, "max_duration_s": 5})
result, use = pool.run(s, env, device="cpu", timeout_s=60)
print(json.dumps({"pid": use.pid, "status": result.status}), flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_warm_worker_dies_with_its_runner(how: int) -> None:
    runner = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdout is not None
        line = json.loads(runner.stdout.readline())
        assert line["status"] == "ok" and alive(line["pid"])
        runner.send_signal(how)
        runner.wait(timeout=10)
        assert gone(line["pid"]), "the warm worker outlived its runner"
    finally:
        runner.kill()
        runner.wait()


def test_a_forked_warm_worker_measures_with_the_threads_and_cores_of_a_fresh_one(
    pool: WarmPool,
) -> None:
    from migperf.bench.process import run_worker

    env = {**ENV, "OMP_NUM_THREADS": "1"}  # bound after the fork: the zygote imported with none
    warm, use = pool.run(spec(), env, device="slot-threads", timeout_s=60)
    fresh = run_worker(spec(), env, timeout_s=60)
    assert warm.status == fresh.status == "ok", (warm.error, fresh.error)
    assert use.forked and warm.environment is not None and fresh.environment is not None
    assert warm.environment.torch_num_threads == fresh.environment.torch_num_threads == 1
    assert warm.environment.cpu_count == fresh.environment.cpu_count
    assert warm.environment.pid != fresh.environment.pid


FROZEN = """
import gc, json, weakref
from migperf.bench.model_cache import cached_model, keep_only
from migperf.bench.worker_kit import freeze_imports, pin_allocator, preload_workload, reset_between_runs
import platform, sys
pinned = pin_allocator()
preload_workload("bert-base")
preload_workload("no-such-workload")  # the run reports it; preloading never fails
freeze_imports()
class Model:
    def __init__(self): self.me = self  # a cycle: only a collection frees it
model = cached_model(("resnet18",), Model)
ref = weakref.ref(model)
del model
reset_between_runs()
kept = ref() is not None
keep_only("bert-base")  # another workload: the kept model must be gone
print(json.dumps({"frozen": gc.get_freeze_count(), "tracked": len(gc.get_objects()),
                  "transformers": "transformers" in sys.modules, "kept": kept, "freed": ref() is None,
                  "pinned": pinned, "glibc": platform.libc_ver()[0] == "glibc"}))
"""


def test_imports_are_frozen_once_and_a_dropped_models_cycles_are_still_freed() -> None:
    out = subprocess.run(
        [sys.executable, "-c", FROZEN], capture_output=True, text=True, timeout=120, check=True
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["transformers"]  # a BERT worker's imports happen before its first run
    # A collection between runs passes over what the runs made, not torch's and transformers'.
    assert doc["frozen"] > 100_000 and doc["tracked"] < doc["frozen"] // 10, doc
    assert doc["kept"] and doc["freed"], doc
    # glibc's malloc thresholds are fixed: no worker measures while they still move.
    assert doc["pinned"] == doc["glibc"]
