"""The driver's MIG placement rules, as the simulator models them.

Where a GPU instance may start, what stops it fitting (memory slices already
taken, compute slices, a profile's instance limit, the engine budget), which
id it gets, and where a compute instance fits inside a GPU instance. Pure
functions over the catalog (:mod:`migperf.nvml.catalog`) and the machine state
(:mod:`migperf.nvml.sim.state`); the simulated driver
(:mod:`migperf.nvml.sim.lib`) turns their answers into NVML return codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pynvml

from migperf.nvml.catalog import GpuModel, ProfileFact


def can_place(
    model: GpuModel, placed: Sequence[tuple[ProfileFact, int]], p: ProfileFact, start: int
) -> int:
    """``NVML_SUCCESS`` or the error creating a GPU instance of ``p`` at ``start`` would get.

    The driver's rules as modelled: allowed start, no memory-slice overlap,
    compute slices, per-profile instance limit, and the engine budget of the
    full profile (which is what limits ``+me`` to one instance and makes
    ``+me.all`` exclusive) [D from docs/reference/mig-facts.md 3 and 4.4].
    ``nvidia-smi mig -i N -cgi ID:START`` fails the same way.

    Args:
        model: The GPU model.
        placed: ``(profile, start)`` of the GPU instances already there.
        p: The profile to place.
        start: Its first memory slice.
    """
    if start not in p.starts:
        return int(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    used: set[int] = set()
    for q, s in placed:
        used.update(range(s, s + q.memory_slices))
    if used & set(range(start, start + p.memory_slices)):
        return int(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
    if sum(q.compute_slices for q, _ in placed) + p.compute_slices > model.compute_slices:
        return int(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
    if sum(1 for q, _ in placed if q.profile_id == p.profile_id) + 1 > p.instances:
        return int(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
    full = model.full_profile
    for attr in ("decoders", "encoders", "jpegs", "ofas"):
        if sum(getattr(q, attr) for q, _ in placed) + getattr(p, attr) > getattr(full, attr):
            return int(pynvml.NVML_ERROR_INSUFFICIENT_RESOURCES)
    return int(pynvml.NVML_SUCCESS)


def new_gi_id(gpu: dict[str, Any], model: GpuModel, size: int) -> int:
    """The id a new GPU instance of ``size`` memory slices gets.

    GI ids come from pools by size class (docs/reference/mig-facts.md 5) [D/U].

    Args:
        gpu: The GPU's state entry.
        model: Its model.
        size: The new instance's memory slices.
    """
    taken = {gi["gi_id"] for gi in gpu["gpu_instances"]}
    frac = size / model.placement_units
    pools = {1.0: range(0, 1), 0.5: range(1, 3), 0.25: range(3, 7), 0.125: range(7, 15)}
    pool = pools.get(frac, range(1, 64))
    for gid in pool:
        if gid not in taken:
            return gid
    return next(g for g in range(1, 1024) if g not in taken)


def ci_free_starts(
    gi: dict[str, Any], gi_compute_slices: int, c: int, starts: Sequence[int]
) -> list[int]:
    """The starts where a compute instance of ``c`` slices fits in a GPU instance now.

    Args:
        gi: The GPU instance's state entry.
        gi_compute_slices: The compute slices of its profile.
        c: The compute instance's slices.
        starts: The starts its profile allows.
    """
    used: set[int] = set()
    for ci in gi["compute_instances"]:
        used.update(range(ci["start"], ci["start"] + ci["size"]))
    free = [s for s in starts if not used & set(range(s, s + c))]
    # Compute slices are also a budget: 1c + 2c on a 3g GI leaves none.
    if sum(ci["size"] for ci in gi["compute_instances"]) + c > gi_compute_slices:
        return []
    return free
