"""MIG partitioning: layouts, the placement solver, GPU leases, transactional apply, mig-parted.

The Python API with the CLI's powers::

    from migperf.nvml import open_nvml
    from migperf.mig import apply_layout, apply_layout_scoped

    with open_nvml() as nvml:
        apply_layout(nvml, 0, "3g.40gb,2g.20gb,1g.10gb*2")
        with apply_layout_scoped(nvml, 0, "7g.80gb[1c*7]"):
            ...  # the previous layout is restored afterwards
"""

from __future__ import annotations

from migperf.mig.apply import (
    ApplyResult,
    RollbackFailedError,
    RolledBackError,
    apply_targets,
    converge,
    empty_target,
    restore,
)
from migperf.mig.hold import GpuHold, GpuStatus, gpu_status, hold_gpus
from migperf.mig.journal import JournalCorruptError
from migperf.mig.layout import LayoutSpec, parse_layout
from migperf.mig.manager import apply_layout, apply_layout_scoped, target_for_layout
from migperf.mig.snapshot import MigSnapshot, take_snapshot
from migperf.mig.solver import MigGeometry, check_layout, enumerate_maximal_layouts, solve_layout

__all__ = [
    "ApplyResult",
    "GpuHold",
    "GpuStatus",
    "JournalCorruptError",
    "LayoutSpec",
    "MigGeometry",
    "MigSnapshot",
    "RollbackFailedError",
    "RolledBackError",
    "apply_layout",
    "apply_layout_scoped",
    "apply_targets",
    "check_layout",
    "converge",
    "empty_target",
    "enumerate_maximal_layouts",
    "gpu_status",
    "hold_gpus",
    "parse_layout",
    "restore",
    "solve_layout",
    "take_snapshot",
    "target_for_layout",
]
