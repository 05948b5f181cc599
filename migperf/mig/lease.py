"""GPU leases: one migperf command at a time changes a GPU, for as long as it runs.

A command that changes a GPU (``migperf run``, ``plan --verify``, every
changing ``mig`` command) leases each GPU it touches for its whole duration,
not only while a layout changes, so a second ``migperf run`` or a
``migperf mig apply`` in another shell is refused up front, naming the holder.

* A lease is an exclusive ``flock`` on ``<lease dir>/<GPU UUID>.lease``; the
  file names the holder (PID, user, host, command, experiment, since when).
  The kernel drops the lock with its process, so a lease of a dead process is
  free to take (its journals are recovered first: :mod:`migperf.mig.apply`).
* Leases are re-entrant within one process: the experiment runner holds them
  all and its layout changes take them again without blocking themselves.
* The lease dir is machine-wide, not per user, so root and other users
  exclude each other on the same GPU: ``/run/migperf`` (created world-writable
  with the sticky bit, like ``/tmp``), else ``/tmp/migperf`` where ``/run`` is
  not writable. ``MIGPERF_STATE_DIR`` overrides it (tests, containers). A
  simulated machine keeps its leases next to its state, per user, since its
  GPUs are too.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from migperf.errors import LockHeldError
from migperf.paths import state_dir

__all__ = ["GpuLease", "LeaseHolder", "lease_dir", "read_holder"]

#: Machine-wide places for leases and journals, in order of preference.
SHARED_DIRS = (Path("/run/migperf"), Path("/tmp/migperf"))


def _make_shared(path: Path) -> bool:
    """Create ``path`` world-writable with the sticky bit; whether it is usable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if path.stat().st_uid == os.geteuid():
            path.chmod(0o1777)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def lease_dir(machine: str | None, root: Path | None = None) -> Path:
    """Where GPU leases and journals live (created when missing).

    Args:
        machine: The simulated machine's name, or None for real GPUs.
        root: migperf's state directory (tests); overrides the shared location.
    """
    ns = "sim-" + machine if machine else "real"
    if root is not None or machine or os.environ.get("MIGPERF_STATE_DIR"):
        d = (root or state_dir()) / "gpus" / ns
        d.mkdir(parents=True, exist_ok=True)
        return d
    for base in SHARED_DIRS:
        if _make_shared(base) and _make_shared(base / ns):
            return base / ns
    d = state_dir() / "gpus" / ns  # no shared place is writable: this user's own
    d.mkdir(parents=True, exist_ok=True)
    return d


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds a GPU's lease."""

    pid: int
    user: str
    host: str
    command: str
    experiment: str | None
    since_unix: float

    def describe(self) -> str:
        """``PID 4242 (alice, `migperf run a.yaml`, experiment a) since 14:20:01``."""
        what = f"`{self.command}`" + (f", experiment {self.experiment}" if self.experiment else "")
        since = time.strftime("%H:%M:%S", time.localtime(self.since_unix))
        return f"PID {self.pid} ({self.user} on {self.host}, {what}) since {since}"


def read_holder(path: Path) -> LeaseHolder | None:
    """The holder a lease file names, or None when it names none (free, or being taken)."""
    try:
        data = json.loads(path.read_text() or "null")
        return LeaseHolder(
            pid=int(data["pid"]),
            user=str(data["user"]),
            host=str(data["host"]),
            command=str(data["command"]),
            experiment=data.get("experiment"),
            since_unix=float(data["since_unix"]),
        )
    except (OSError, ValueError, TypeError, KeyError):
        return None


@dataclass
class _Held:
    fd: int
    count: int


_HELD: dict[Path, _Held] = {}
_HELD_LOCK = threading.Lock()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


class GpuLease:
    """The lease of one GPU (see the module docstring).

    Args:
        gpu_uuid: The GPU's UUID (a renumbered GPU keeps its lease and journals).
        gpu_index: For messages.
        command: What the holder runs, for the refusal message of others.
        experiment: The experiment's name, if any.
        root: migperf's state directory (tests).
        machine: The simulated machine's name, or None for real GPUs.
    """

    def __init__(
        self,
        gpu_uuid: str,
        gpu_index: int,
        *,
        command: str,
        experiment: str | None = None,
        root: Path | None = None,
        machine: str | None = None,
    ) -> None:
        self.gpu_index = gpu_index
        self.command = command
        self.experiment = experiment
        self.path = lease_dir(machine, root) / f"{gpu_uuid}.lease"
        self.fresh = False

    @property
    def held(self) -> bool:
        """Whether this process holds the lease."""
        with _HELD_LOCK:
            return self.path in _HELD

    def acquire(self) -> GpuLease:
        """Take the lease at once or fail; taking it again in the same process nests.

        ``fresh`` tells whether this call took it (rather than nesting): only
        then are the journals of an earlier holder to be recovered.

        Raises:
            LockHeldError: another process holds it; the message names the holder.
        """
        with _HELD_LOCK:
            held = _HELD.get(self.path)
            if held is not None:
                held.count += 1
                self.fresh = False
                return self
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except PermissionError:
                # Another user's lease file we may not write: a lock needs only a read fd.
                fd = os.open(self.path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = read_holder(self.path)
                who = holder.describe() if holder else "another migperf process"
                raise LockHeldError(
                    f"GPU {self.gpu_index} is leased by {who}",
                    hint="wait for that command to finish (a lease lasts as long as its command); "
                    "if that process is gone its lease is free already and the next command takes "
                    "it over",
                ) from None
            with contextlib.suppress(OSError):
                os.fchmod(fd, 0o666)  # others must be able to open it to try the lock
            info = {
                "pid": os.getpid(),
                "user": _user(),
                "host": socket.gethostname(),
                "command": self.command,
                "experiment": self.experiment,
                "since_unix": time.time(),
            }
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(info).encode(), 0)
            _HELD[self.path] = _Held(fd, 1)
            self.fresh = True
            return self

    def release(self) -> None:
        """Give the lease back (the outermost release in this process frees it)."""
        with _HELD_LOCK:
            held = _HELD.get(self.path)
            if held is None:
                return
            held.count -= 1
            if held.count > 0:
                return
            del _HELD[self.path]
            # Unnamed before unlocked: a reader never sees a free lease naming us.
            with contextlib.suppress(OSError):
                os.ftruncate(held.fd, 0)
            os.close(held.fd)

    def __enter__(self) -> GpuLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def holder(self) -> LeaseHolder | None:
        """Who holds the lease now (None: nobody)."""
        if self.held:
            return read_holder(self.path)
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return read_holder(self.path)
        finally:
            os.close(fd)
        return None


@contextlib.contextmanager
def leases(items: list[GpuLease]) -> Iterator[list[GpuLease]]:
    """Hold several leases, all or none (taken in GPU order, released in reverse)."""
    taken: list[GpuLease] = []
    try:
        for lease in sorted(items, key=lambda item: item.gpu_index):
            taken.append(lease.acquire())
        yield taken
    finally:
        for lease in reversed(taken):
            lease.release()
