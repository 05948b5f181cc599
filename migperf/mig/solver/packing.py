"""The exact search behind the solver: disjoint placements on a free-slice bitmask.

Memory slices are bits of an int. Unpinned instances whose profiles have the
same placements are interchangeable, so they form one :class:`PlacementGroup`
and take a combination of its placements, never a permutation. The search
packs the groups largest and most constrained first, backtracks, and memoizes
failed (group, free slices) states, so it finds a packing whenever one exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from migperf.nvml.types import GpuInstanceProfile

__all__ = ["PlacementGroup", "bits", "group_by_placements", "mask", "pack", "packing_order"]


def mask(start: int, size: int) -> int:
    """The bitmask of ``size`` memory slices from ``start``.

    Args:
        start: First memory slice.
        size: Number of memory slices.

    Returns:
        An int with those bits set.
    """
    return ((1 << size) - 1) << start


def bits(value: int) -> list[int]:
    """The slices a bitmask holds, ascending: ``0b1010`` -> ``[1, 3]``.

    Args:
        value: A bitmask of memory slices.

    Returns:
        The indices of its set bits.
    """
    return [b for b in range(value.bit_length()) if value >> b & 1]


class PlacementGroup:
    """Unpinned instances whose profiles have identical placements.

    Attributes:
        masks: The placements as bitmasks, by ascending start.
        size: Memory slices of each member.
        members: Indices of the member instances in the caller's list.
    """

    __slots__ = ("masks", "members", "size")

    def __init__(self, masks: tuple[int, ...], size: int) -> None:
        self.masks = masks
        self.size = size
        self.members: list[int] = []


def group_by_placements(
    instances: Iterable[tuple[int, GpuInstanceProfile]],
) -> list[PlacementGroup]:
    """Group instances by their profile's placements.

    Args:
        instances: ``(index, profile)`` of each unpinned instance.

    Returns:
        The groups, in the order their first member came.
    """
    groups: dict[tuple[int, ...], PlacementGroup] = {}
    for idx, p in instances:
        masks = tuple(mask(pl.start, pl.size) for pl in sorted(p.placements, key=lambda x: x.start))
        g = groups.get(masks)
        if g is None:
            g = groups[masks] = PlacementGroup(masks, p.memory_slices)
        g.members.append(idx)
    return list(groups.values())


def packing_order(groups: Iterable[PlacementGroup]) -> list[PlacementGroup]:
    """Largest first, then fewest options: the classic order for exact packing.

    Args:
        groups: The groups to pack.

    Returns:
        The same groups, in the order :func:`pack` should try them.
    """
    return sorted(groups, key=lambda g: (-g.size, len(g.masks), g.masks))


def _combos(masks: Sequence[int], k: int, free: int, begin: int = 0) -> Iterator[tuple[int, ...]]:
    """Index tuples of ``k`` pairwise-disjoint masks inside ``free``, ascending (no permutations)."""
    if k == 0:
        yield ()
        return
    for j in range(begin, len(masks) - k + 1):
        m = masks[j]
        if m & free == m:
            for rest in _combos(masks, k - 1, free & ~m, j + 1):
                yield (j, *rest)


def pack(groups: Sequence[PlacementGroup], free: int) -> list[tuple[int, ...]] | None:
    """Exact search: for each group, the indices of the masks its members take.

    Args:
        groups: The groups, in :func:`packing_order`.
        free: Bitmask of the memory slices still free.

    Returns:
        One tuple of mask indices per group, or None when no packing exists.
    """
    need_after = [0] * (len(groups) + 1)
    for i in range(len(groups) - 1, -1, -1):
        need_after[i] = need_after[i + 1] + groups[i].size * len(groups[i].members)
    failed: set[tuple[int, int]] = set()

    def rec(i: int, free: int) -> list[tuple[int, ...]] | None:
        if i == len(groups):
            return []
        if (i, free) in failed or need_after[i] > free.bit_count():
            return None
        g = groups[i]
        for combo in _combos(g.masks, len(g.members), free):
            used = 0
            for j in combo:
                used |= g.masks[j]
            rest = rec(i + 1, free & ~used)
            if rest is not None:
                return [combo, *rest]
        failed.add((i, free))
        return None

    return rec(0, free)
