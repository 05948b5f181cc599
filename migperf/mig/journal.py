"""Per-GPU locks and the write-ahead journal that makes a partition change undoable.

Before migperf changes a GPU it takes the GPU's lock (one process at a time;
the lock file names the holder) and writes a journal with the state it found.
A crash, a SIGKILL or a power cut between the first change and the last leaves
the journal behind; ``migperf mig restore`` (and the next apply) replays it.
Files live under ``<state dir>/mig/``, keyed by GPU UUID so a renumbered GPU
keeps its journal.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from migperf.errors import LockHeldError
from migperf.mig.snapshot import MigSnapshot
from migperf.paths import state_dir

JOURNAL_VERSION = 1


def _dir(root: Path | None, machine: str | None) -> Path:
    # Simulated machines get their own namespace: their UUIDs are synthetic
    # and must never collide with a real GPU's journal on the same host.
    base = (root or state_dir()) / "mig"
    return base / ("sim-" + machine if machine else "real")


class GpuLock:
    """An exclusive, non-blocking lock on one GPU, naming its holder.

    Args:
        gpu_uuid: The GPU's UUID.
        gpu_index: For messages.
        root: migperf state directory.
        machine: The simulated machine's name, or None for real GPUs.
    """

    def __init__(
        self, gpu_uuid: str, gpu_index: int, root: Path | None = None, machine: str | None = None
    ) -> None:
        d = _dir(root, machine)
        self.gpu_index = gpu_index
        self.path = d / f"{gpu_uuid}.lock"
        self.holder_path = d / f"{gpu_uuid}.holder"
        self._lock = FileLock(str(self.path))

    def acquire(self) -> None:
        """Take the lock at once or fail.

        Raises:
            LockHeldError: "GPU 0 is being reconfigured by PID n".
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self._holder()
            raise LockHeldError(
                f"GPU {self.gpu_index} is being reconfigured by {holder}",
                hint="wait for it to finish; if that process is gone, its lock is released "
                "automatically (the kernel drops it with the process)",
            ) from None
        self.holder_path.write_text(
            json.dumps(
                {"pid": os.getpid(), "host": socket.gethostname(), "since_unix": time.time()}
            )
        )

    def _holder(self) -> str:
        try:
            h = json.loads(self.holder_path.read_text())
            return f"PID {h['pid']} on {h['host']}"
        except (OSError, ValueError, KeyError):
            return "another migperf process"

    def release(self) -> None:
        """Release the lock."""
        self.holder_path.unlink(missing_ok=True)
        self._lock.release()

    def __enter__(self) -> GpuLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@dataclass(frozen=True)
class JournalEntry:
    """A journal found on disk."""

    path: Path
    before: MigSnapshot
    target: MigSnapshot | None
    pid: int
    started_unix: float
    command: str


class Journal:
    """The write-ahead journal of one GPU."""

    def __init__(self, gpu_uuid: str, root: Path | None = None, machine: str | None = None) -> None:
        self.path = _dir(root, machine) / f"{gpu_uuid}.journal.json"

    def write(self, before: MigSnapshot, target: MigSnapshot | None, command: str) -> None:
        """Record the state to restore, durably, before the first change."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data: dict[str, Any] = {
            "version": JOURNAL_VERSION,
            "pid": os.getpid(),
            "started_unix": time.time(),
            "command": command,
            "before": before.to_dict(),
            "target": target.to_dict() if target is not None else None,
        }
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def read(self) -> JournalEntry | None:
        """The journal left on disk, if any."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        return JournalEntry(
            path=self.path,
            before=MigSnapshot.from_dict(data["before"]),
            target=MigSnapshot.from_dict(data["target"]) if data.get("target") else None,
            pid=int(data["pid"]),
            started_unix=float(data["started_unix"]),
            command=str(data.get("command", "")),
        )

    def clear(self) -> None:
        """Remove the journal (the change completed or was rolled back)."""
        self.path.unlink(missing_ok=True)
