"""Why a layout does not fit, in one sentence.

Rules 3-5 of the solver (compute and memory slices, instance limits, engines;
see :mod:`migperf.mig.solver`) do not depend on where instances sit, so
:func:`check_sums` checks them before any search, with a message naming the
resource. The other functions word the failures that the placement search
itself finds. Each returns or raises :class:`Infeasible`, which the solver
turns into an error or a :class:`~migperf.mig.solver.LayoutCheckResult`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from migperf.mig.layout import ResolvedInstance
from migperf.mig.solver.geometry import MigGeometry, Occupied
from migperf.mig.solver.packing import PlacementGroup, bits, mask
from migperf.nvml.types import GpuInstanceProfile, Placement

__all__ = [
    "ENGINE_FIELDS",
    "HINT_LAYOUTS",
    "Infeasible",
    "bad_start",
    "blocked",
    "check_sums",
    "existing_label",
    "index_ranges",
    "no_arrangement",
    "split_unfit",
    "start_clash",
]

#: Engine types that are a budget, in the order conflicts are reported. OFA and
#: JPEG come first: on most GPUs there is one of each, and fighting over it is
#: the real reason two ``+me`` profiles cannot coexist.
ENGINE_FIELDS = ("ofa", "jpeg", "decoder", "encoder")
_ENGINE_WORDS = {
    "ofa": ("OFA engine", "OFA engines"),
    "jpeg": ("JPEG decoder", "JPEG decoders"),
    "decoder": ("video decoder (NVDEC)", "video decoders (NVDEC)"),
    "encoder": ("video encoder (NVENC)", "video encoders (NVENC)"),
}

HINT_LAYOUTS = "`migperf mig layouts` lists the layouts that fit this GPU"
_HINT_UNPIN = "drop the explicit @START placements to let migperf choose"


class Infeasible(Exception):
    """No placement exists.

    Attributes:
        reason: One sentence saying why.
        hint: What the user can do about it.
    """

    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


# ---------------------------------------------------------------- text helpers


def _join(items: Sequence[str], word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def index_ranges(values: Sequence[int]) -> list[str]:
    """``[0, 1, 2, 3, 5, 6]`` -> ``["0-3", "5", "6"]`` (runs of three or more collapse)."""
    vals = sorted(set(values))
    out: list[str] = []
    i = 0
    while i < len(vals):
        j = i
        while j + 1 < len(vals) and vals[j + 1] == vals[j] + 1:
            j += 1
        if j - i >= 2:
            out.append(f"{vals[i]}-{vals[j]}")
        else:
            out += [str(v) for v in vals[i : j + 1]]
        i = j + 1
    return out


def _slices(values: Sequence[int], word: str = "and") -> str:
    """``slice 3``, ``slices 0-3``, ``slices 1 and 5``."""
    parts = index_ranges(values)
    plural = len(values) > 1
    return ("slices " if plural else "slice ") + _join(parts, word)


def _group(labels: Sequence[str]) -> str:
    counts = Counter(labels)
    return " + ".join(f"{n} x {name}" if n > 1 else name for name, n in counts.items())


def _verb(n_instances: int) -> str:
    return "needs" if n_instances == 1 else "need"


def existing_label(profile: GpuInstanceProfile, placement: Placement) -> str:
    """How messages name an instance that is already on the GPU.

    Args:
        profile: Its profile.
        placement: Where it sits.

    Returns:
        e.g. ``the existing 3g.40gb at 4:4``.
    """
    return f"the existing {profile.profile} at {placement}"


# ------------------------------------------------- rules 3-5, before any search


def check_sums(
    req: Sequence[GpuInstanceProfile],
    occupied: Occupied,
    geometry: MigGeometry,
) -> None:
    """Check rules 3-5, which do not depend on placement.

    Args:
        req: The profiles of the requested instances.
        occupied: GPU instances that stay on the GPU.
        geometry: The GPU's geometry.

    Raises:
        Infeasible: an instance limit, the compute or memory slices, or an
            engine budget is exceeded.
    """
    occ = [p for p, _ in occupied]
    names = [p.profile for p in req]
    # Rule 4: per-profile instance limits.
    req_counts = Counter(p.profile_id for p in req)
    occ_counts = Counter(p.profile_id for p in occ)
    for p in req:
        n, k = req_counts[p.profile_id], occ_counts[p.profile_id]
        if n + k > p.instances_total:
            lim = p.instances_total
            were = "was" if n == 1 else "were"
            exist = f"{k} already exist{'s' if k == 1 else ''} and " if k else ""
            raise Infeasible(
                f"the GPU allows at most {lim} instance{'s' if lim != 1 else ''} of {p.profile}, "
                f"but {exist}{n} {were} requested",
                "see each profile's limit with `migperf mig profiles` (nvidia-smi mig -lgip, Free/Total)",
            )
    occ_labels = [existing_label(p, pl) for p, pl in occupied]

    def engine_conflict(field: str, exclusive_only: bool) -> None:
        budget = getattr(geometry.engines, field)
        total = sum(getattr(p.engines, field) for p in occ) + sum(
            getattr(p.engines, field) for p in req
        )
        if total <= budget:
            return
        needs = [(lbl, getattr(p.engines, field)) for lbl, p in zip(occ_labels, occ, strict=True)]
        needs += [(p.profile, getattr(p.engines, field)) for p in req]
        needs = [(lbl, n) for lbl, n in needs if n > 0]
        one, many = _ENGINE_WORDS[field]
        if budget == 0:
            reason = f"{_join([lbl for lbl, _ in needs])} {_verb(len(needs))} {many} but the GPU has none"
        elif budget == 1:
            who = [lbl for lbl, _ in needs]
            both = "both" if len(who) == 2 else "all"
            reason = f"{_join(who)} {both} need the GPU's only {one}"
        else:
            if exclusive_only:
                return
            hog = next((lbl for lbl, n in needs if n >= budget), None)
            if hog is not None:
                others = _join(sorted({lbl for lbl, _ in needs if lbl != hog}))
                reason = f"{hog} takes all {budget} of the GPU's {many}, leaving none for {others}"
            else:
                reason = f"{_group([lbl for lbl, _ in needs])} need {total} {many} but the GPU has {budget}"
        raise Infeasible(
            reason,
            "media engines cannot be shared: only one instance may use a +me profile, "
            "and +me.all leaves room only for -me profiles; see `migperf mig profiles`",
        )

    # Exclusive engines first: for +me conflicts they are the cause, and a
    # compute-slice message would send the user shrinking the wrong thing.
    for field in ENGINE_FIELDS:
        if getattr(geometry.engines, field) <= 1:
            engine_conflict(field, exclusive_only=True)

    # Rules 3 and memory-slice totals.
    need_c = sum(p.compute_slices for p in req)
    need_m = sum(p.memory_slices for p in req)
    used_c = sum(p.compute_slices for p in occ)
    used_m = sum(p.memory_slices for p in occ)
    over_c = need_c + used_c > geometry.compute_slices
    over_m = need_m + used_m > geometry.placement_units
    if over_c or over_m:
        # (what is needed, what the GPU has, what is still free) per exceeded resource
        parts = []
        if over_c:
            parts.append(
                (
                    f"{need_c} compute slices",
                    geometry.compute_slices,
                    geometry.compute_slices - used_c,
                )
            )
        if over_m:
            parts.append(
                (
                    f"{need_m} memory slices",
                    geometry.placement_units,
                    geometry.placement_units - used_m,
                )
            )
        what = _join([w for w, _, _ in parts])
        if not occ:
            tail = f"the GPU has {_join([str(h) for _, h, _ in parts])}"
        elif len(parts) == 1:
            tail = f"only {parts[0][2]} of the GPU's {parts[0][1]} are free"
        else:
            tail = f"only {_join([str(f) for _, _, f in parts])} are free"
        raise Infeasible(f"{_group(names)} {_verb(len(req))} {what} but {tail}", HINT_LAYOUTS)

    for field in ("decoder", "encoder", "jpeg", "ofa"):
        engine_conflict(field, exclusive_only=False)


# ------------------------------------------------ failures the search finds


def split_unfit(inst: ResolvedInstance) -> Infeasible:
    """A compute-instance split that does not fit in its GPU instance.

    Args:
        inst: The instance whose split failed.

    Returns:
        The failure, to raise.
    """
    sizes = "+".join(f"{c}c" for c in inst.compute)
    return Infeasible(
        f"compute instances {sizes} do not fit in the {inst.profile.compute_slices} "
        f"compute slices of {inst.name}",
        "see the compute-instance profiles with `nvidia-smi mig -lcip`",
    )


def bad_start(profile: GpuInstanceProfile, start: int) -> Infeasible:
    """A pinned start that is not one of the profile's placements.

    Args:
        profile: The instance's profile.
        start: The start it asked for.

    Returns:
        The failure, to raise.
    """
    allowed = [pl.start for pl in profile.placements]
    return Infeasible(
        f"{profile.profile} cannot start at memory slice {start}; "
        f"it can start only at {_slices(allowed, 'or')}",
        "see the placements with `nvidia-smi mig -lgipp`, or drop the @START",
    )


def start_clash(label: str, other: str, overlap: int) -> Infeasible:
    """A pinned instance that overlaps another pinned or existing one.

    Args:
        label: The pinned instance, e.g. ``3g.40gb@4``.
        other: What already holds the slices.
        overlap: Bitmask of the slices both need.

    Returns:
        The failure, to raise.
    """
    return Infeasible(
        f"{label} and {other} both need memory {_slices(bits(overlap))}",
        "pick another start, or drop the @START to let migperf choose",
    )


def blocked(
    profile: GpuInstanceProfile,
    group: PlacementGroup,
    owners: Sequence[tuple[int, str]],
    pinned_any: bool,
) -> Infeasible:
    """A profile none of whose placements is free.

    Args:
        profile: A profile of the group.
        group: The instances that share its placements.
        owners: ``(bitmask, label)`` of everything that holds slices.
        pinned_any: Whether the layout pins any start.

    Returns:
        The failure, to raise.
    """
    allowed = [pl.start for pl in profile.placements]
    blockers = [lbl for om, lbl in owners if any(om & m for m in group.masks)]
    only = "can only start at" if len(allowed) == 1 else "can start only at"
    which = "which" if len(allowed) == 1 else "all of which"
    hint = (
        _HINT_UNPIN
        if pinned_any
        else "free those slices first (`migperf mig reset`), or pick instances that fit the free slices"
    )
    return Infeasible(
        f"{profile.profile} {only} {_slices(allowed, 'or')}, {which} {_join(blockers)} "
        f"{'occupies' if len(blockers) == 1 else 'occupy'}",
        hint,
    )


def no_arrangement(
    order: Sequence[PlacementGroup],
    insts: Sequence[ResolvedInstance],
    free: int,
    fixed: int,
    geometry: MigGeometry,
    pinned_any: bool,
) -> Infeasible:
    """Each group has a free placement, but no combination fits together.

    Args:
        order: The groups the search tried.
        insts: The layout's instances (group members index them).
        free: Bitmask of the free memory slices.
        fixed: Bitmask of the slices held by pinned and existing instances.
        geometry: The GPU's geometry.
        pinned_any: Whether the layout pins any start.

    Returns:
        The failure, to raise.
    """
    parts = []
    for g in order:
        p = insts[g.members[0]].profile
        ok = [
            pl.start
            for pl in p.placements
            if mask(pl.start, pl.size) & free == mask(pl.start, pl.size)
        ]
        label = _group([insts[i].name for i in g.members])
        parts.append(f"{label} can start at {_slices(ok, 'or')}")
    where = (
        f"free memory {_slices(bits(free))}"
        if fixed
        else f"the GPU's {geometry.placement_units} memory slices"
    )
    return Infeasible(
        f"no arrangement of these placements fits in {where}: {'; '.join(parts)}",
        _HINT_UNPIN if pinned_any else HINT_LAYOUTS,
    )
