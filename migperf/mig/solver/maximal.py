"""Every maximal layout of a GPU: the multisets of profiles that fit and admit no more."""

from __future__ import annotations

from collections.abc import Sequence

from migperf.mig.layout import InstanceSpec, LayoutSpec
from migperf.mig.solver.explain import Infeasible, check_sums
from migperf.mig.solver.geometry import MigGeometry, is_media_variant
from migperf.mig.solver.packing import group_by_placements, mask, pack, packing_order
from migperf.nvml.types import GpuInstanceProfile

__all__ = ["enumerate_maximal_layouts"]


def _fits(profiles: Sequence[GpuInstanceProfile], geometry: MigGeometry) -> bool:
    try:
        check_sums(profiles, (), geometry)
    except Infeasible:
        return False
    order = packing_order(group_by_placements(enumerate(profiles)))
    return pack(order, mask(0, geometry.placement_units)) is not None


def enumerate_maximal_layouts(
    geometry: MigGeometry,
    include_me_variants: bool = False,
) -> list[LayoutSpec]:
    """Every maximal layout: multisets of profiles that fit and admit no further instance.

    Layouts are multisets: two arrangements of the same profiles at different
    placements count once. "Maximal" is relative to the profiles considered.
    By default the media-engine and graphics variants (``+me``, ``+me.all``,
    ``-me``, ``+gfx``) are left out, both as members and as candidates to add;
    pass ``include_me_variants=True`` to include them.

    Args:
        geometry: The GPU's geometry.
        include_me_variants: Also consider the variant profiles.

    Returns:
        Layouts by profile name without starts, largest first (a layout with a
        bigger largest instance comes first; ties go to the next instance).
    """
    profiles = [
        p
        for p in geometry.profiles
        if p.placements and (include_me_variants or not is_media_variant(p))
    ]
    profiles.sort(key=lambda p: (-p.memory_slices, -p.compute_slices, p.profile))
    cache: dict[tuple[int, ...], bool] = {}

    def feasible(counts: tuple[int, ...]) -> bool:
        hit = cache.get(counts)
        if hit is None:
            members = [p for p, n in zip(profiles, counts, strict=True) for _ in range(n)]
            hit = cache[counts] = _fits(members, geometry)
        return hit

    found: list[tuple[int, ...]] = []
    counts = [0] * len(profiles)

    def rec(i: int) -> None:
        if i == len(profiles):
            base = tuple(counts)
            for k in range(len(profiles)):
                bumped = list(base)
                bumped[k] += 1
                if feasible(tuple(bumped)):
                    return
            found.append(base)
            return
        for n in range(profiles[i].instances_total, -1, -1):
            counts[i] = n
            if n == 0 or feasible(tuple(counts)):
                rec(i + 1)
        counts[i] = 0

    rec(0)

    def size_key(c: tuple[int, ...]) -> tuple[tuple[int, int, str], ...]:
        return tuple(
            sorted(
                (
                    (p.compute_slices, p.memory_slices, p.profile)
                    for p, n in zip(profiles, c, strict=True)
                    for _ in range(n)
                ),
                reverse=True,
            )
        )

    found.sort(key=size_key, reverse=True)
    return [
        LayoutSpec(
            tuple(
                InstanceSpec(p.profile) for p, n in zip(profiles, c, strict=True) for _ in range(n)
            )
        ).canonical()
        for c in found
    ]
