"""MIG profile names, derived the way NVIDIA's tools derive them.

nvidia-smi, mig-parted and the k8s device plugin all name profiles from NVML
numbers with go-nvlib's rule (docs/reference/mig-facts.md section 7), not from the driver's
``name`` string. migperf uses the same rule so its names match theirs, on every
driver: the memory fraction rounded *up* to eighths of the parent, times the
parent's memory in whole GiB (rounded up), rounded half away from zero.
"""

from __future__ import annotations

import math

from migperf.nvml.catalog import SLICES_OF_INDEX, SUFFIX_OF_INDEX

_MIB = 1024 * 1024
_GIB = 1024 * _MIB


def memory_size_gb(total_memory_bytes: int, mig_memory_mib: int) -> int:
    """The ``<N>gb`` figure of a profile name (go-nvlib ``getMigMemorySizeGB``).

    Args:
        total_memory_bytes: The parent GPU's framebuffer total in bytes.
        mig_memory_mib: The profile's ``memorySizeMB``.
    """
    frac = (mig_memory_mib * _MIB) / total_memory_bytes
    frac = math.ceil(frac * 8) / 8
    total_gb = math.ceil(total_memory_bytes / _GIB)
    # Go's math.Round rounds half away from zero; Python's round() does not.
    return math.floor(frac * total_gb + 0.5)


def gpu_instance_profile_name(index: int, memory_mib: int, total_memory_bytes: int) -> str:
    """Name of a GPU-instance profile, e.g. ``3g.40gb`` or ``1g.10gb+me``.

    Args:
        index: The NVML profile index constant (``NVML_GPU_INSTANCE_PROFILE_*``).
        memory_mib: The profile's memory size in MiB.
        total_memory_bytes: The parent GPU's memory in bytes.
    """
    g = SLICES_OF_INDEX[index]
    gb = memory_size_gb(total_memory_bytes, memory_mib)
    return f"{g}g.{gb}gb{SUFFIX_OF_INDEX.get(index, '')}"


def compute_instance_profile_name(ci_slices: int, gi_profile_name: str) -> str:
    """Name of a compute-instance profile: ``1c.3g.40gb``, or the GI name when it spans the GI."""
    g = int(gi_profile_name.split("g.", 1)[0])
    if ci_slices >= g:
        return gi_profile_name
    return f"{ci_slices}c.{gi_profile_name}"
