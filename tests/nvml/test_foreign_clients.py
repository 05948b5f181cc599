"""Programs written for a real driver run against the simulator: nvitop, gpustat.

nvitop's API in-process (through the ``simulated_gpus`` fixture this package's
pytest plugin offers), and ``nvitop --once`` and ``gpustat --json`` as
separate programs through ``migperf --simulate SPEC sim exec``. Each must see
the simulator's state (totals, MIG names and UUIDs, a worker's process) and
never call a function the simulated driver lacks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

# Not imported here: gpustat monkey-patches pynvml when imported.
if importlib.util.find_spec("nvitop") is None or importlib.util.find_spec("gpustat") is None:
    pytest.skip("the test extra's nvitop and gpustat are not installed", allow_module_level=True)

MIB = 1024 * 1024


def _forget(prefix: str) -> None:
    for name in [m for m in sys.modules if m == prefix or m.startswith(prefix + ".")]:
        del sys.modules[name]


@pytest.fixture
def fresh_nvitop() -> Iterator[None]:
    """nvitop imported afresh inside the test (it binds pynvml at import)."""
    _forget("nvitop")
    yield
    _forget("nvitop")


def _record_missing(pynvml: ModuleType) -> list[str]:
    """Names the program asks the simulated library for and does not get."""
    missing: list[str] = []
    original = pynvml._nvmlGetFunctionPointer

    def lookup(name: str) -> Any:
        try:
            return original(name)
        except pynvml.NVMLError_FunctionNotFound:
            missing.append(name)
            raise

    pynvml._nvmlGetFunctionPointer = lookup
    return missing


CASES = [
    ("a100-80gb", "3g.40gb,2g.20gb,1g.10gb*2", ["3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb"]),
    ("h100-80gb", "3g.40gb,1g.10gb*2", ["3g.40gb", "1g.10gb", "1g.10gb"]),
    ("a100-80gb:mig-off", None, []),
    ("h100-80gb:mig-off", None, []),
]


@pytest.mark.parametrize(("spec", "layout", "profiles"), CASES)
def test_nvitop_api_sees_the_simulated_machine(
    simulated_gpus: Any, fresh_nvitop: None, spec: str, layout: str | None, profiles: list[str]
) -> None:
    from migperf.nvml.catalog import get_model

    machine = simulated_gpus(spec, layout=layout)
    model = get_model(spec.split(":")[0])
    missing = _record_missing(machine.pynvml)
    migs = machine.mig_devices(0)
    worker = os.getpid()
    if migs:
        machine.attach_process(0, mig_uuid=migs[0].uuid, used_mib=3072)
    else:
        machine.attach_process(0, used_mib=3072)

    import pynvml

    assert pynvml is machine.pynvml
    from nvitop import NA, Device

    (device,) = Device.all()
    snapshot = device.as_snapshot()
    fields = vars(snapshot)
    assert len(fields) >= 40
    assert snapshot.name == model.name
    assert snapshot.uuid == machine.pynvml.nvmlDeviceGetUUID(
        machine.pynvml.nvmlDeviceGetHandleByIndex(0)
    )
    assert snapshot.memory_total == model.memory_total_mib * MIB
    assert snapshot.power_limit == model.power_limit_w * 1000
    assert snapshot.cuda_compute_capability == model.compute_capability
    assert snapshot.mig_mode == ("Enabled" if layout else "Disabled")
    assert snapshot.temperature != NA and snapshot.power_usage != NA
    assert snapshot.persistence_mode == "Enabled"
    assert snapshot.performance_state == "P0"
    assert snapshot.total_volatile_uncorrected_ecc_errors == 0
    # What NVML refuses with MIG on, nvitop shows as N/A; with MIG off it has a value.
    assert (snapshot.gpu_utilization == NA) == bool(layout)
    assert (snapshot.encoder_utilization == NA) == bool(layout)

    mig_devices = device.mig_devices()
    assert [m.name() for m in mig_devices] == [m.name for m in migs]
    assert sorted(n.split(" MIG ")[1] for n in (m.name for m in migs)) == sorted(profiles)
    for nv, ours in zip(mig_devices, migs, strict=True):
        mig_snapshot = nv.as_snapshot()
        assert mig_snapshot.uuid == ours.uuid
        assert mig_snapshot.gpu_instance_id == ours.gpu_instance_id
        assert mig_snapshot.compute_instance_id == ours.compute_instance_id
        assert mig_snapshot.memory_total == ours.memory_mib * MIB
        assert mig_snapshot.gpu_utilization == NA  # nvml.h: not supported on MIG
        assert len(vars(mig_snapshot)) >= 30

    holder = mig_devices[0] if mig_devices else device
    processes = holder.processes()
    assert list(processes) == [worker]
    assert processes[worker].gpu_memory() == 3072 * MIB
    if mig_devices:
        assert all(not m.processes() for m in mig_devices[1:])
    assert missing == []


def _run(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migperf", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def cli_env(state_dir: Path) -> dict[str, str]:
    env = dict(os.environ, MIGPERF_STATE_DIR=str(state_dir), COLUMNS="200")
    env.pop("MIGPERF_SIMULATE", None)
    return env


def _prepared_machine(spec: str, env: dict[str, str], layout: str) -> tuple[list[str], int]:
    """Apply a layout with migperf, start a worker on its first MIG device: (UUIDs, pid)."""
    from migperf.nvml.sim import control, simulated_pynvml

    done = _run("--simulate", spec, "mig", "apply", layout, env=env)
    assert done.returncode == 0, done.stderr
    root = Path(env["MIGPERF_STATE_DIR"])
    nvml = simulated_pynvml(spec, root)
    nvml.nvmlInit()
    try:
        h = nvml.nvmlDeviceGetHandleByIndex(0)
        uuids = []
        for i in range(nvml.nvmlDeviceGetMaxMigDeviceCount(h)):
            with contextlib.suppress(nvml.NVMLError_NotFound):
                uuids.append(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, i)))
    finally:
        nvml.nvmlShutdown()
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    control.attach_process(spec, 0, mig_uuid=uuids[0], pid=worker.pid, used_mib=5120, root=root)
    return uuids, worker.pid


@pytest.fixture
def workers() -> Iterator[list[int]]:
    pids: list[int] = []
    yield pids
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_nvitop_once_through_sim_exec(cli_env: dict[str, str], workers: list[int]) -> None:
    uuids, pid = _prepared_machine("a100-80gb", cli_env, "3g.40gb,2g.20gb,1g.10gb*2")
    workers.append(pid)
    done = _run("--simulate", "a100-80gb", "sim", "exec", "--", "nvitop", "--once", env=cli_env)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "FunctionNotFound" not in done.stdout + done.stderr
    out = done.stdout
    assert "A100-SXM4-80GB" in out and "Driver Version: 580.65.06" in out
    assert "Enabled" in out  # MIG mode
    assert "80.00GiB" in out
    assert str(pid) in out and "5120MiB" in out  # the worker, with its memory
    assert "3g.40gb" in out  # the MIG device it runs on


def test_gpustat_json_through_sim_exec(cli_env: dict[str, str], workers: list[int]) -> None:
    uuids, pid = _prepared_machine("h100-80gb:2", cli_env, "3g.40gb,1g.10gb*2")
    workers.append(pid)
    done = _run("--simulate", "h100-80gb:2", "sim", "exec", "--", "gpustat", "--json", env=cli_env)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["driver_version"] == "580.65.06"
    gpus = report["gpus"]
    assert [g["name"] for g in gpus] == ["NVIDIA H100 80GB HBM3"] * 2
    assert all(g["memory.total"] == 81559 for g in gpus)
    assert all(g["enforced.power.limit"] == 700 for g in gpus)
    assert gpus[0]["utilization.gpu"] is None  # MIG on: NVML refuses utilization
    (proc,) = gpus[0]["processes"]
    assert proc["pid"] == pid and proc["gpu_memory_usage"] == 5120
    assert gpus[1]["processes"] == []
