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


#: The GPU-instance id mappings seen in the field. On a real GPU an instance's
#: id is a fixed function of its placement: a pool by size class (full 0,
#: halves 1-2, quarters 3-6, eighths 7-14; docs/reference/mig-facts.md 5) and
#: the position inside it. ``standard`` counts positions from slice 0;
#: ``swapped`` counts from the second half first (one A100 gave 7 x 1g.5gb,
#: created without placements at 6,4,5,0,1,2,3, the ids 9,7,8,11,12,13,14).
#: Which GPU has which is not documented [U], so the simulator gives each GPU
#: one of them (:func:`migperf.nvml.sim.state.new_state`) and no code may
#: depend on a particular id.
GI_ID_MAPPINGS: tuple[str, ...] = ("standard", "swapped")

# Id pool base by the share of the GPU an instance's memory slices are.
_POOL_BASE = {1.0: 0, 0.5: 1, 0.25: 3, 0.125: 7}


def gi_id_for(model: GpuModel, start: int, size: int, mapping: str) -> int | None:
    """The id of a GPU instance at ``start:size`` under ``mapping``; None outside the pools.

    Args:
        model: The GPU model.
        start: The instance's first memory slice.
        size: Its memory slices.
        mapping: One of :data:`GI_ID_MAPPINGS`.
    """
    units = model.placement_units
    base = _POOL_BASE.get(size / units) if units else None
    if base is None or size <= 0:
        return None
    position = start if mapping != "swapped" else (start + units // 2) % units
    return base + position // size


def new_gi_id(gpu: dict[str, Any], model: GpuModel, start: int, size: int) -> int:
    """The id a new GPU instance at ``start:size`` gets on this GPU.

    A function of the placement (:func:`gi_id_for`, with the GPU's
    ``gi_id_map``), not "the lowest free id" [D/U, docs/reference/mig-facts.md 5].
    A size outside the pools takes the lowest id no instance holds [U].

    Args:
        gpu: The GPU's state entry.
        model: Its model.
        start: The new instance's first memory slice.
        size: Its memory slices.
    """
    taken = {gi["gi_id"] for gi in gpu["gpu_instances"]}
    gid = gi_id_for(model, start, size, gpu.get("gi_id_map", "standard"))
    if gid is not None and gid not in taken:
        return gid
    return next(g for g in range(15, 1024) if g not in taken)


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
