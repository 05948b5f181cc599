"""Leasing GPUs for a longer change, and what ``gpus`` and ``mig show`` say about a lease.

:func:`hold_gpus` leases several GPUs (all or none), puts back what a dead
holder left on each (:func:`migperf.mig.recovery.recover`), and hands out a
:class:`GpuHold` that records the layouts found until they are given back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from migperf.mig.journal import Journal, OriginalLayout
from migperf.mig.lease import GpuLease, LeaseHolder, leases
from migperf.mig.recovery import Recovered, recover
from migperf.mig.snapshot import MigSnapshot
from migperf.nvml.facade import Nvml

__all__ = ["GpuHold", "GpuStatus", "gpu_status", "hold_gpus", "lease_gpu"]


def lease_gpu(
    nvml: Nvml,
    gpu_index: int,
    *,
    command: str,
    experiment: str | None = None,
    root: Path | None = None,
) -> GpuLease:
    """The (not yet taken) lease of GPU ``gpu_index``."""
    info = nvml.gpu(gpu_index)
    return GpuLease(
        info.uuid,
        gpu_index,
        command=command,
        experiment=experiment,
        root=root,
        machine=nvml.machine,
    )


@dataclass
class GpuHold:
    """Leased GPUs, and the layouts to give back should their holder die.

    Attributes:
        nvml: The NVML the GPUs belong to.
        gpus: The leased GPUs.
        recovered: GPU -> the layout a dead holder left, put back when leasing.
    """

    nvml: Nvml
    gpus: list[int]
    command: str
    experiment: str | None
    root: Path | None
    recovered: dict[int, MigSnapshot]

    def _journal(self, gpu: int) -> OriginalLayout:
        return OriginalLayout(self.nvml.gpu(gpu).uuid, self.root, self.nvml.machine, gpu)

    def keep_originals(self, originals: dict[int, MigSnapshot]) -> None:
        """Record the layouts to put back if this process dies before it does."""
        for gpu, layout in originals.items():
            self._journal(gpu).write(layout, self.command, self.experiment)

    def forget_original(self, gpu: int) -> None:
        """The GPU holds its original layout again (or is meant to keep the new one)."""
        self._journal(gpu).clear()


@contextmanager
def hold_gpus(
    nvml: Nvml,
    gpus: list[int],
    *,
    command: str,
    experiment: str | None = None,
    root: Path | None = None,
    on_recover: Recovered | None = None,
) -> Iterator[GpuHold]:
    """Lease GPUs for a ``with`` block (all or none), putting back what a dead holder left.

    In read-only mode the GPUs are leased (so no other migperf command
    changes them meanwhile) but nothing is recovered.

    Raises:
        LockHeldError: another process holds one of the leases (none is kept).
        JournalCorruptError, MigperfError: a dead holder's layout cannot be put back.
    """
    items = [lease_gpu(nvml, g, command=command, experiment=experiment, root=root) for g in gpus]
    recovered: dict[int, MigSnapshot] = {}
    with leases(items):
        if not nvml.read_only:
            for lease in items:
                if lease.fresh:
                    snap = recover(nvml, lease.gpu_index, root=root, on_recover=on_recover)
                    if snap is not None:
                        recovered[lease.gpu_index] = snap
        yield GpuHold(nvml, list(gpus), command, experiment, root, recovered)


@dataclass(frozen=True)
class GpuStatus:
    """Whether a GPU is leased, and what an interrupted command left to put back.

    Attributes:
        holder: Who leases it now (None: nobody).
        pending: Journals left by a command that died (paths); the next
            command that leases the GPU puts their layout back.
    """

    holder: LeaseHolder | None
    pending: tuple[Path, ...]

    def describe(self) -> str:
        """One line for people, empty when there is nothing to say."""
        parts = []
        if self.holder is not None:
            parts.append(f"leased by {self.holder.describe()}")
        if self.pending and self.holder is None:
            parts.append(
                "an interrupted migperf command left a layout to put back "
                f"({', '.join(str(p) for p in self.pending)}): the next changing command restores "
                "it, or run `migperf mig restore`"
            )
        return "; ".join(parts)


def gpu_status(nvml: Nvml, gpu_index: int, *, root: Path | None = None) -> GpuStatus:
    """The lease and the pending journals of GPU ``gpu_index`` (reads only)."""
    info = nvml.gpu(gpu_index)
    try:
        lease = lease_gpu(nvml, gpu_index, command="", root=root)
        journals = (
            Journal(info.uuid, root, nvml.machine, gpu_index),
            OriginalLayout(info.uuid, root, nvml.machine, gpu_index),
        )
        return GpuStatus(lease.holder(), tuple(j.path for j in journals if j.path.exists()))
    except OSError:
        # No lease directory can be made here (read-only filesystem): nothing is known.
        return GpuStatus(None, ())
