"""What ``/proc`` says about a process: is it our daemon, what is its pid, has it ended.

A process is ours to signal only when its environment carries our private
pipe directory (:func:`owns_pipe`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from migperf.procs import pid_alive
from migperf.sharing.mps.control import PIPE_ENV

__all__ = [
    "environ_has",
    "find_daemon",
    "owns_pipe",
    "read_pid_file",
    "signal_name",
    "wait_gone",
]


def environ_has(pid: int, entry: str) -> bool:
    """Whether the environment of process ``pid`` holds ``entry`` (``NAME=value``).

    Args:
        pid: The process.
        entry: One whole ``NAME=value`` entry.

    Returns:
        False also when the environment cannot be read (the process ended, or
        belongs to another user).
    """
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return entry.encode() in fh.read().split(b"\0")
    except OSError:
        return False


def wait_gone(pid: int, timeout_s: float) -> bool:
    """Wait until process ``pid`` has ended (a zombie counts as ended).

    Args:
        pid: The process.
        timeout_s: Longest wait.

    Returns:
        Whether it ended in time.
    """
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def signal_name(num: int) -> str:
    """The name of signal ``num`` (``SIGKILL``), or ``signal <num>`` for an unknown one."""
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def owns_pipe(pid: int, pipe_dir: Path) -> bool:
    """Whether process ``pid`` runs with ``pipe_dir`` as its ``CUDA_MPS_PIPE_DIRECTORY``.

    Only such a process belongs to our private daemon and is ours to signal.
    """
    return environ_has(pid, f"{PIPE_ENV}={pipe_dir}")


def read_pid_file(path: Path, pipe_dir: Path) -> int | None:
    """The daemon pid written in ``path``, if it is one of ours (or has already ended).

    Args:
        path: The daemon's pid file.
        pipe_dir: The daemon's private pipe directory.

    Returns:
        None when the file is missing, holds no pid, or names a live process
        that does not carry ``pipe_dir``.
    """
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit():
        return None
    pid = int(text)
    return pid if owns_pipe(pid, pipe_dir) or not pid_alive(pid) else None


def find_daemon(argv: Sequence[str], pipe_dir: Path) -> int | None:
    """The live daemon started by ``argv`` with ``pipe_dir``, found by scanning ``/proc``.

    For drivers that write no pid file.

    Args:
        argv: The control program's argv.
        pipe_dir: The daemon's private pipe directory.
    """
    marker = os.path.basename(argv[-1]).encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if marker in cmdline and owns_pipe(pid, pipe_dir) and pid_alive(pid):
            return pid
    return None
