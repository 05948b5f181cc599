"""Which layouts a GPU may get, and which capacities a plan therefore needs.

The planner gives each GPU one of its model's maximal layouts
(:func:`migperf.mig.solver.enumerate_maximal_layouts`): a non-maximal layout
is never better, since an instance may stay idle. The uniform baseline uses
the homogeneous layouts instead (one profile, as many as fit).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from migperf.mig.layout import InstanceSpec, LayoutSpec, profile_sort_key
from migperf.mig.solver import (
    MigGeometry,
    check_layout,
    enumerate_maximal_layouts,
    is_media_variant,
)
from migperf.planner.capacity import Key
from migperf.planner.demand import DemandSpec, GpuPoolSpec

__all__ = ["CandidateLayout", "needed_keys", "planning_layouts", "uniform_layouts"]


@dataclass(frozen=True)
class CandidateLayout:
    """A layout the planner may give a GPU.

    Attributes:
        model: Catalog model key.
        layout: The canonical layout text (``3g.40gb,2g.20gb*2``).
        counts: ``{profile: instances}``, largest profile first.
        shape: The layout by slices (``3c4m,2c2m*2``), equal across models
            with the same geometry, for the uniform baseline.
    """

    model: str
    layout: str
    counts: Mapping[str, int]
    shape: str


def planning_layouts(pool: GpuPoolSpec) -> list[CandidateLayout]:
    """The maximal layouts of a pool's model, among its allowed profiles.

    Raises:
        UsageError: the model is unknown or has no MIG.
    """
    return list(_layouts(pool.model, None if pool.profiles is None else tuple(pool.profiles)))


@functools.lru_cache(maxsize=64)
def _layouts(model: str, profiles: tuple[str, ...] | None) -> tuple[CandidateLayout, ...]:
    geometry = MigGeometry.for_model(model)
    if profiles is not None:
        allowed = set(profiles)
        geometry = replace(
            geometry, profiles=tuple(p for p in geometry.profiles if p.profile.lower() in allowed)
        )
    sizes = {p.profile: (p.compute_slices, p.memory_slices) for p in geometry.profiles}
    out = []
    for spec in enumerate_maximal_layouts(geometry):
        counts = spec.counts()
        parts = []
        for name, n in counts.items():
            c, mem = sizes[name]
            parts.append(f"{c}c{mem}m" + (f"*{n}" if n > 1 else ""))
        out.append(CandidateLayout(model, str(spec), counts, ",".join(parts)))
    return tuple(out)


def needed_keys(demand: DemandSpec, layouts: Mapping[str, Sequence[CandidateLayout]]) -> list[Key]:
    """Every (model, profile, job) capacity the plan needs, largest profile first.

    Args:
        demand: The demand.
        layouts: Candidate layouts per model (from :func:`planning_layouts`).
    """
    out: list[Key] = []
    names = [s.name for s in demand.services] + [t.name for t in demand.training]
    for pool in demand.gpus:
        profiles: dict[str, None] = {}
        for cand in layouts[pool.model]:
            for p in cand.counts:
                profiles.setdefault(p, None)
        ordered = sorted(profiles, key=profile_sort_key)
        out += [(pool.model, p, name) for p in ordered for name in names]
    return out


def uniform_layouts(pool: GpuPoolSpec) -> list[CandidateLayout]:
    """Homogeneous layouts: as many instances of one profile as fit (``1g.10gb*7``, ``3g.40gb*2``).

    Raises:
        UsageError: the model is unknown or has no MIG.
    """
    return list(_uniform(pool.model, None if pool.profiles is None else tuple(pool.profiles)))


@functools.lru_cache(maxsize=64)
def _uniform(model: str, profiles: tuple[str, ...] | None) -> tuple[CandidateLayout, ...]:
    geometry = MigGeometry.for_model(model)
    out = []
    for prof in geometry.profiles:
        if not prof.placements or is_media_variant(prof):
            continue
        if profiles is not None and prof.profile.lower() not in profiles:
            continue
        best = 0
        for n in range(1, prof.instances_total + 1):
            spec = LayoutSpec((InstanceSpec(prof.profile),) * n)
            if not check_layout(geometry.resolve(spec), geometry).ok:
                break
            best = n
        if best:
            text = str(LayoutSpec((InstanceSpec(prof.profile),) * best))
            shape = f"{prof.compute_slices}c{prof.memory_slices}m" + (
                f"*{best}" if best > 1 else ""
            )
            out.append(CandidateLayout(model, text, {prof.profile: best}, shape))
    return tuple(out)
