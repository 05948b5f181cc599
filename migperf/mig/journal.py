"""The two journals of a GPU: what to put back if a migperf process dies mid-way.

* :class:`Journal`, the write-ahead journal of one layout change: before the
  first destroy or create, the state found; a crash between the first change
  and the last leaves it, and the next change (or ``migperf mig restore``)
  replays it.
* :class:`OriginalLayout`, the layout a lease holder found before a longer
  change (an experiment, ``plan --verify``, ``mig apply`` on several GPUs): a
  SIGKILLed holder leaves it, and whichever command next leases the GPU puts
  that layout back first, whatever config or command it runs.

Both live next to the GPU's lease (:func:`migperf.mig.lease.lease_dir`,
machine-wide), keyed by GPU UUID so a renumbered GPU keeps them. A journal
that cannot be read is never applied blindly: :class:`JournalCorruptError`
names the file and how to inspect or discard it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migperf.errors import MigperfError
from migperf.mig.lease import lease_dir
from migperf.mig.snapshot import MigSnapshot

__all__ = ["Journal", "JournalCorruptError", "JournalEntry", "OriginalLayout"]

JOURNAL_VERSION = 1


@dataclass(frozen=True)
class JournalEntry:
    """A journal found on disk."""

    path: Path
    before: MigSnapshot
    target: MigSnapshot | None
    pid: int
    started_unix: float
    command: str


class JournalCorruptError(MigperfError):
    """A journal on disk cannot be read, or describes a state the GPU cannot hold."""


def corrupt(path: Path, gpu_index: int | None, why: str) -> JournalCorruptError:
    """The error for an unreadable journal: names the file and how to inspect or discard it."""
    gpu = f" --gpu {gpu_index}" if gpu_index is not None else ""
    return JournalCorruptError(
        f"the journal {path} cannot be used: {why}",
        hint=f"inspect it (`cat {path}`) and the GPU (`migperf mig show`); if the GPU's layout "
        f"is fine as it is, discard the journal with `migperf mig restore{gpu} --discard`",
    )


def _load(path: Path, gpu_index: int | None) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise corrupt(path, gpu_index, exc.strerror or str(exc)) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise corrupt(path, gpu_index, f"not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise corrupt(path, gpu_index, "not a JSON object")
    return data


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _snapshot(data: Any, path: Path, gpu_index: int | None, field: str) -> MigSnapshot:
    try:
        return MigSnapshot.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise corrupt(path, gpu_index, f"its {field!r} is not a MIG state ({exc!r})") from None


class _GpuFile:
    """A file of one GPU next to its lease.

    Args:
        gpu_uuid: The GPU's UUID.
        root: migperf's state directory (tests).
        machine: The simulated machine's name, or None for real GPUs.
        gpu_index: For messages.
    """

    SUFFIX = ""

    def __init__(
        self,
        gpu_uuid: str,
        root: Path | None = None,
        machine: str | None = None,
        gpu_index: int | None = None,
    ) -> None:
        self.path = lease_dir(machine, root) / f"{gpu_uuid}{self.SUFFIX}"
        self.gpu_index = gpu_index


class Journal(_GpuFile):
    """The write-ahead journal of one GPU's layout change (see :class:`_GpuFile` for the arguments)."""

    SUFFIX = ".journal.json"

    def write(self, before: MigSnapshot, target: MigSnapshot | None, command: str) -> None:
        """Record the state to restore, durably, before the first change."""
        _write(
            self.path,
            {
                "version": JOURNAL_VERSION,
                "pid": os.getpid(),
                "started_unix": time.time(),
                "command": command,
                "before": before.to_dict(),
                "target": target.to_dict() if target is not None else None,
            },
        )

    def read(self) -> JournalEntry | None:
        """The journal left on disk, if any.

        Raises:
            JournalCorruptError: it exists but cannot be read.
        """
        data = _load(self.path, self.gpu_index)
        if data is None:
            return None
        try:
            pid, started = int(data["pid"]), float(data["started_unix"])
        except (KeyError, TypeError, ValueError) as exc:
            raise corrupt(self.path, self.gpu_index, f"missing or bad field {exc}") from None
        if "before" not in data:
            raise corrupt(self.path, self.gpu_index, "it records no previous state ('before')")
        return JournalEntry(
            path=self.path,
            before=_snapshot(data["before"], self.path, self.gpu_index, "before"),
            target=(
                _snapshot(data["target"], self.path, self.gpu_index, "target")
                if data.get("target")
                else None
            ),
            pid=pid,
            started_unix=started,
            command=str(data.get("command", "")),
        )

    def clear(self) -> None:
        """Remove the journal (the change completed or was rolled back)."""
        self.path.unlink(missing_ok=True)


class OriginalLayout(_GpuFile):
    """The layout a lease holder found on a GPU, kept until it has put it back.

    Same arguments as :class:`Journal`.
    """

    SUFFIX = ".original.json"

    def write(self, layout: MigSnapshot, command: str, experiment: str | None = None) -> None:
        """Record the layout to give back, durably, before the first change."""
        _write(
            self.path,
            {
                "version": JOURNAL_VERSION,
                "pid": os.getpid(),
                "started_unix": time.time(),
                "command": command,
                "experiment": experiment,
                "layout": layout.to_dict(),
            },
        )

    def read(self) -> tuple[MigSnapshot, str] | None:
        """The recorded layout and the command that recorded it, if a holder left one.

        Raises:
            JournalCorruptError: it exists but cannot be read.
        """
        data = _load(self.path, self.gpu_index)
        if data is None:
            return None
        if "layout" not in data:
            raise corrupt(self.path, self.gpu_index, "it records no layout")
        layout = _snapshot(data["layout"], self.path, self.gpu_index, "layout")
        return layout, str(data.get("command") or "an earlier migperf command")

    def exists(self) -> bool:
        """Whether a holder left a layout to give back."""
        return self.path.exists()

    def clear(self) -> None:
        """Forget it: the GPU holds that layout again."""
        self.path.unlink(missing_ok=True)
