"""Helpers for the sharing tests: simulated MPS clients and a check that nothing is left running."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

import migperf
from migperf.sharing.sim_mps_control import FAULTS_ENV

ROOT = str(Path(migperf.__file__).resolve().parent.parent)
MIG_A = "MIG-11111111-2222-3333-4444-555555555555"
MIG_B = "MIG-66666666-7777-8888-9999-000000000000"

# A simulated MPS client: registers (when argv[1] == "1"), says so, sleeps, exits with argv[2].
CLIENT = (
    "import sys, time\n"
    "from migperf.sharing.sim_mps_control import register_client_from_env\n"
    "server = register_client_from_env() if sys.argv[1] == '1' else None\n"
    "print(server, flush=True)\n"
    "time.sleep(float(sys.argv[3]))\n"
    "sys.exit(int(sys.argv[2]))\n"
)


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def processes_with(marker: str) -> list[int]:
    """Running processes whose environment mentions ``marker`` (e.g. a private pipe directory)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if marker.encode() in data and running(int(entry)):
            out.append(int(entry))
    return out


def start_client(
    env: Mapping[str, str], *, register: bool = True, exit_code: int = 0, sleep_s: float = 30.0
) -> subprocess.Popen[str]:
    """Start a simulated MPS client and wait until it has (or has not) registered."""
    env = {**env, "PYTHONPATH": ROOT}
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, "1" if register else "0", str(exit_code), str(sleep_s)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    return proc


@pytest.fixture
def sim_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """This process's environment without MPS settings or simulator faults."""
    monkeypatch.delenv(FAULTS_ENV, raising=False)
    monkeypatch.delenv("MIGPERF_MPS_CONTROL", raising=False)
    return {k: v for k, v in os.environ.items() if not k.startswith("CUDA_MPS_")}
