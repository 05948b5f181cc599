"""The three ways in: ``sim exec``, ``patched`` and the ``simulated_gpus`` fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from migperf.errors import UsageError
from migperf.nvml.sim import patched


def _migperf(*argv: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MIGPERF_STATE_DIR=str(state_dir))
    env.pop("MIGPERF_SIMULATE", None)
    return subprocess.run(
        [sys.executable, "-m", "migperf", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


PROGRAM = """
import subprocess, sys
import pynvml
pynvml.nvmlInit()
h = pynvml.nvmlDeviceGetHandleByIndex(0)
names = []
for i in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(h)):
    try:
        names.append(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetMigDeviceHandleByIndex(h, i)))
    except pynvml.NVMLError_NotFound:
        pass
print(pynvml.nvmlDeviceGetCount(), sorted(names))
# A Python process it starts sees the same machine.
child = "import pynvml; pynvml.nvmlInit(); print(pynvml.nvmlDeviceGetCount())"
print(subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout.strip())
sys.exit(7)
"""


def test_sim_exec_shows_the_layout_migperf_applied_and_passes_the_exit_code(
    state_dir: Path,
) -> None:
    done = _migperf(
        "--simulate",
        "a100-80gb:2",
        "mig",
        "apply",
        "-i",
        "0",
        "3g.40gb,1g.10gb*2",
        state_dir=state_dir,
    )
    assert done.returncode == 0, done.stderr
    done = _migperf(
        "--simulate",
        "a100-80gb:2",
        "sim",
        "exec",
        "--",
        sys.executable,
        "-c",
        PROGRAM,
        state_dir=state_dir,
    )
    assert done.returncode == 7, done.stderr
    first, second = done.stdout.strip().splitlines()
    assert first == (
        "2 ['NVIDIA A100-SXM4-80GB MIG 1g.10gb', 'NVIDIA A100-SXM4-80GB MIG 1g.10gb', "
        "'NVIDIA A100-SXM4-80GB MIG 3g.40gb']"
    )
    assert second == "2"


def test_sim_exec_refuses_without_a_machine_or_command(state_dir: Path) -> None:
    done = _migperf("sim", "exec", "--", "true", state_dir=state_dir)
    assert done.returncode == 2 and "needs a simulated machine" in done.stderr
    assert "HINT:" in done.stderr
    done = _migperf(
        "--simulate", "a100-80gb", "sim", "exec", "--", "no-such-program-x", state_dir=state_dir
    )
    assert done.returncode == 2 and "command not found: no-such-program-x" in done.stderr
    done = _migperf("--simulate", "a100-99gb", "sim", "exec", "--", "true", state_dir=state_dir)
    assert done.returncode == 2 and "unknown GPU model" in done.stderr


def test_patched_swaps_pynvml_and_puts_it_back(state_dir: Path) -> None:
    import pynvml as real

    with patched("h200") as simulated:
        import pynvml

        assert pynvml is simulated and pynvml is not real
        pynvml.nvmlInit()
        assert pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0)) == "NVIDIA H200"
        pynvml.nvmlShutdown()
    import pynvml

    assert pynvml is real


def test_the_fixture_gives_a_machine_with_its_layout(simulated_gpus: Any) -> None:
    machine = simulated_gpus("h100-80gb:2", layout="3g.40gb,1g.10gb*2")
    import pynvml

    assert pynvml is machine.pynvml
    for gpu in (0, 1):
        devices = machine.mig_devices(gpu)
        assert sorted(d.name.split(" MIG ")[1] for d in devices) == [
            "1g.10gb",
            "1g.10gb",
            "3g.40gb",
        ]
    assert os.environ["MIGPERF_STATE_DIR"] == str(machine.state_dir)
    uuid = machine.mig_devices(0)[1].uuid
    pid = machine.attach_process(0, mig_uuid=uuid, used_mib=512)
    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    (proc,) = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    assert (proc.pid, proc.usedGpuMemory) == (pid, 512 * 1024 * 1024)
    pynvml.nvmlShutdown()
    # A subprocess given the machine's environment sees it too.
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pynvml; pynvml.nvmlInit(); print(pynvml.nvmlDeviceGetCount())",
        ],
        env=machine.env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "2"


def test_the_fixture_refuses_a_layout_that_cannot_be(simulated_gpus: Any) -> None:
    with pytest.raises(UsageError, match="has no profile '2g.35gb'"):
        simulated_gpus("a100-80gb", layout="2g.35gb")
    with pytest.raises(UsageError, match="does not fit"):
        simulated_gpus("a100-80gb", layout="4g.40gb*2")
    with pytest.raises(UsageError, match="MIG is off"):
        simulated_gpus("a100-80gb:mig-off", layout="1g.10gb")
    with pytest.raises(UsageError, match="bad item"):
        simulated_gpus("a100-80gb", layout="3g.40gb;1g.10gb")


def test_a_simulated_worker_reports_its_resident_memory_not_a_constant(sim) -> None:  # type: ignore[no-untyped-def]
    # #24: simulated slice memory read a constant 1024 MiB, drawn as a measurement.
    import os
    import subprocess
    import sys

    nvml = sim("a100-40gb")
    from migperf.mig import apply_layout

    apply_layout(nvml, 0, "3g.20gb")
    uuid = nvml.mig_devices(0)[0].mig_uuid
    # A child that holds ~300 MiB of host memory, like a worker with its model built.
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; b=bytearray(300*2**20); sys.stdout.write('x'); sys.stdout.flush(); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.read(1) == b"x"
        nvml.attach_simulated_process(0, child.pid, mig_uuid=uuid)
        [reading] = nvml.mig_memory(0, nvml.mig_devices(0))
        used = reading.memory_used_mib
        assert used is not None and 300 < used < 1000, used
        assert used != 1024
    finally:
        child.kill()
        child.wait()
    assert os.getpid() > 0
