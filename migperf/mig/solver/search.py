"""The placement search: where each GPU instance of a layout goes.

Rules 3-5 (slices, instance limits, engines) are checked first by
:func:`~migperf.mig.solver.explain.check_sums`; then pinned starts are checked
and the unpinned instances packed around them by the exact search of
:mod:`~migperf.mig.solver.packing`. Every failure becomes one sentence from
:mod:`~migperf.mig.solver.explain`.
"""

from __future__ import annotations

from dataclasses import dataclass

from migperf.errors import InsufficientResourcesError
from migperf.mig.layout import (
    InstanceSpec,
    LayoutSpec,
    ResolvedLayout,
    layout_from_state,
    place_compute_instances,
)
from migperf.mig.solver.explain import (
    Infeasible,
    bad_start,
    blocked,
    check_sums,
    existing_label,
    no_arrangement,
    split_unfit,
    start_clash,
)
from migperf.mig.solver.geometry import MigGeometry, Occupied
from migperf.mig.solver.packing import bits, group_by_placements, mask, pack, packing_order
from migperf.nvml.types import GpuInstanceProfile, Placement

__all__ = ["LayoutCheckResult", "PlacedInstance", "Solution", "check_layout", "solve_layout"]


@dataclass(frozen=True)
class PlacedInstance:
    """A GPU instance with its placement and its compute instances' placements.

    Attributes:
        profile: The GPU-instance profile.
        placement: Where it sits, in memory slices.
        compute: Compute-instance placements in the GPU instance's compute
            slices, largest first (CI profile id = ``CI_ID_OF_SLICES[size]``).
    """

    profile: GpuInstanceProfile
    placement: Placement
    compute: tuple[Placement, ...]

    @property
    def name(self) -> str:
        """Profile name, ``3g.40gb``."""
        return self.profile.profile

    def to_spec(self) -> InstanceSpec:
        """This instance as a pinned :class:`InstanceSpec`."""
        sizes = tuple(c.size for c in self.compute)
        default = sizes == (self.profile.compute_slices,)
        return InstanceSpec(self.name, self.placement.start, None if default else sizes)

    def __str__(self) -> str:
        return str(self.to_spec())


@dataclass(frozen=True)
class Solution:
    """Explicit placements for every instance of a layout.

    Attributes:
        instances: One per layout instance, in the layout's order.
        creation_order: The same instances, largest first: the order to create
            them in (placements are explicit, so any order works; largest first
            mirrors ``mig-parted`` and the driver's own examples).
    """

    instances: tuple[PlacedInstance, ...]
    creation_order: tuple[PlacedInstance, ...]

    def to_layout(self) -> LayoutSpec:
        """The solved layout with explicit starts (``str()`` gives ``3g.40gb@4,...``)."""
        return layout_from_state(
            (i.name, i.placement.start, [c.size for c in i.compute]) for i in self.instances
        )

    def __str__(self) -> str:
        return str(self.to_layout())


@dataclass(frozen=True)
class LayoutCheckResult:
    """Whether a layout fits, and why not.

    Attributes:
        ok: True when every instance can be placed.
        reason: Empty when ok; otherwise one sentence saying why no placement exists.
        hint: What the user can do about it (empty when ok).
        solution: The placements when ok.
    """

    ok: bool
    reason: str = ""
    hint: str = ""
    solution: Solution | None = None

    @property
    def placements(self) -> tuple[PlacedInstance, ...]:
        """The placed instances in layout order (empty when not ok)."""
        return self.solution.instances if self.solution else ()


def _solve(layout: ResolvedLayout, geometry: MigGeometry, occupied: Occupied) -> Solution:
    """Raises Infeasible with the reason when no placement exists."""
    insts = layout.instances
    check_sums([i.profile for i in insts], occupied, geometry)

    # Compute-instance splits (resolve_layout checks them; a hand-built layout may not be).
    ci_places: list[tuple[Placement, ...]] = []
    for inst in insts:
        cis = place_compute_instances(inst.profile.compute_slices, inst.compute)
        if cis is None:
            raise split_unfit(inst)
        ci_places.append(cis)

    full = mask(0, geometry.placement_units)
    fixed = 0
    owners: list[tuple[int, str]] = []  # (mask, label) of what holds slices
    for p, pl in occupied:
        m = mask(pl.start, pl.size)
        fixed |= m
        owners.append((m, existing_label(p, pl)))

    starts: list[int | None] = [None] * len(insts)
    pinned_any = False
    for idx, inst in enumerate(insts):
        if inst.start is None:
            continue
        pinned_any = True
        p = inst.profile
        if inst.start not in [pl.start for pl in p.placements]:
            raise bad_start(p, inst.start)
        label = f"{p.profile}@{inst.start}"
        m = mask(inst.start, p.memory_slices)
        clash = [(om, lbl) for om, lbl in owners if om & m]
        if clash:
            om, other = clash[0]
            raise start_clash(label, other, om & m)
        fixed |= m
        owners.append((m, label))
        starts[idx] = inst.start

    groups = group_by_placements(
        (idx, inst.profile) for idx, inst in enumerate(insts) if inst.start is None
    )
    free = full & ~fixed
    for g in groups:
        if not any(m & free == m for m in g.masks):
            raise blocked(insts[g.members[0]].profile, g, owners, pinned_any)

    order = packing_order(groups)
    chosen = pack(order, free)
    if chosen is None:
        raise no_arrangement(order, insts, free, fixed, geometry, pinned_any)
    for g, combo in zip(order, chosen, strict=True):
        for member, j in zip(g.members, combo, strict=True):
            starts[member] = bits(g.masks[j])[0]

    placed: list[PlacedInstance] = []
    for inst, start, ci in zip(insts, starts, ci_places, strict=True):
        assert start is not None
        placed.append(
            PlacedInstance(inst.profile, Placement(start, inst.profile.memory_slices), ci)
        )
    creation = tuple(
        sorted(
            placed,
            key=lambda i: (-i.profile.memory_slices, -i.profile.compute_slices, i.placement.start),
        )
    )
    return Solution(tuple(placed), creation)


def solve_layout(
    layout: ResolvedLayout,
    geometry: MigGeometry,
    occupied: Occupied = (),
) -> Solution:
    """Explicit placements for every instance of ``layout``.

    Args:
        layout: The resolved layout; explicit starts in it are kept.
        geometry: The GPU's geometry.
        occupied: GPU instances that stay on the GPU, as (profile, placement);
            they hold their slices, compute slices, engines and instance counts.

    Returns:
        The placements, in layout order, plus a creation order.

    Raises:
        InsufficientResourcesError: no placement exists; the message is one
            sentence naming the cause (instance limit, compute or memory
            slices, engines, or the placements themselves).
    """
    try:
        return _solve(layout, geometry, occupied)
    except Infeasible as exc:
        raise InsufficientResourcesError(
            f"cannot fit {layout} on this GPU: {exc.reason}", hint=exc.hint
        ) from None


def check_layout(
    layout: ResolvedLayout,
    geometry: MigGeometry,
    occupied: Occupied = (),
) -> LayoutCheckResult:
    """Like :func:`solve_layout`, but reports an infeasible layout instead of raising.

    Args:
        layout: The resolved layout.
        geometry: The GPU's geometry.
        occupied: GPU instances that stay on the GPU.

    Returns:
        ``ok``, the ``reason`` and ``hint`` when not ok, and the solution when ok.
    """
    try:
        return LayoutCheckResult(True, solution=_solve(layout, geometry, occupied))
    except Infeasible as exc:
        return LayoutCheckResult(False, exc.reason, exc.hint)
