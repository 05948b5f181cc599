"""The placement solver: where each GPU instance of a layout goes, or why it cannot.

A set of GPU instances fits on a GPU when (mig-facts.md sections 3, 4 and 4.4;
the simulated driver enforces the same rules):

1. each instance sits at one of its profile's placements (``-lgipp``);
2. no two instances share a memory slice;
3. their compute slices add up to at most the GPU's;
4. no profile has more instances than its ``instances_total``;
5. for each engine type (video decoder, video encoder, JPEG, OFA) their sum
   is at most what the full-GPU profile owns. Copy engines are not limited.
   Rule 5 is what allows only one ``+me`` instance and makes ``+me.all``
   exclude everything but ``-me`` profiles.

Rules 3-5 do not depend on where instances sit, so they are checked first,
with a message naming the resource. Only rules 1-2 need a search: an exact
backtracking search over the free-slice bitmask, largest and most constrained
profiles first, with profiles that share the same placements treated as
interchangeable and failed (profile group, free slices) states memoized. It
finds a placement whenever one exists, whatever order the layout lists its
instances in. mig-parted instead tries every ordering of driver-placed
creations; on the catalog's geometries that finds the same layouts, but an
order of magnitude more slowly, most of all for layouts that do not fit (see
``benchmarks/solver.py``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from migperf.errors import InsufficientResourcesError, UsageError
from migperf.mig.layout import (
    InstanceSpec,
    LayoutSpec,
    ResolvedLayout,
    layout_from_state,
    parse_layout,
    place_compute_instances,
    resolve_layout,
)
from migperf.nvml.catalog import MODELS, get_model
from migperf.nvml.types import Engines, GpuInstanceProfile, Placement

__all__ = [
    "LayoutCheckResult",
    "MigGeometry",
    "PlacedInstance",
    "Solution",
    "check_layout",
    "enumerate_maximal_layouts",
    "is_media_variant",
    "solve_layout",
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
_VARIANT_RE = re.compile(r"[+-][a-z0-9.]+$")

Occupied = Sequence[tuple[GpuInstanceProfile, Placement]]


def is_media_variant(profile: GpuInstanceProfile) -> bool:
    """Whether a profile is a media-engine or graphics variant (``+me``, ``+me.all``, ``-me``, ``+gfx``)."""
    return _VARIANT_RE.search(profile.profile) is not None


@dataclass(frozen=True)
class MigGeometry:
    """What the solver needs to know about one GPU model's MIG geometry.

    Attributes:
        profiles: The GPU-instance profiles (``nvidia-smi mig -lgip``).
        placement_units: Memory slices: the end of the furthest placement
            (8 on A100/H100, 4 on A30, 12 on RTX PRO 6000 Blackwell).
        compute_slices: Compute slices of the full-GPU profile (7, 4, 4).
        engines: The engine budget, the full-GPU profile's engines (its copy
            engines are not a constraint).
        full_profile: The profile spanning the whole GPU.
    """

    profiles: tuple[GpuInstanceProfile, ...]
    placement_units: int
    compute_slices: int
    engines: Engines
    full_profile: GpuInstanceProfile

    @classmethod
    def from_profiles(cls, profiles: Sequence[GpuInstanceProfile]) -> MigGeometry:
        """The geometry a GPU's profile list implies.

        Raises:
            UsageError: the list is empty or no profile has placements (MIG
                unsupported, or placements unreadable).
        """
        placed = [p for p in profiles if p.placements]
        if not placed:
            raise UsageError(
                "cannot plan MIG layouts: the GPU reports no GPU-instance profiles with placements",
                hint="check MIG support with `migperf mig profiles` (nvidia-smi mig -lgipp)",
            )
        full = max(placed, key=lambda p: (p.memory_slices, p.compute_slices))
        units = max(pl.start + pl.size for p in placed for pl in p.placements)
        return cls(tuple(profiles), units, full.compute_slices, full.engines, full)

    @classmethod
    def for_model(cls, key: str) -> MigGeometry:
        """The geometry of a catalog model (``a100-80gb``), for planning without a GPU.

        Raises:
            UsageError: the model is unknown or does not support MIG.
        """
        try:
            model = get_model(key)
        except KeyError:
            known = ", ".join(k for k, m in MODELS.items() if m.mig_capable)
            raise UsageError(
                f"unknown GPU model {key!r}; models with MIG: {known}",
                hint="pass one of the listed model keys",
            ) from None
        if not model.mig_capable:
            raise UsageError(
                f"{model.key} ({model.name}) does not support MIG",
                hint="pick a MIG-capable model",
            )
        return cls.from_profiles([p.to_profile() for p in model.profiles])

    def resolve(self, layout: LayoutSpec | str) -> ResolvedLayout:
        """Resolve a layout (or its text form) against this geometry's profiles.

        Raises:
            UsageError: the text is malformed or names an unknown profile.
        """
        spec = parse_layout(layout) if isinstance(layout, str) else layout
        return resolve_layout(spec, self.profiles)


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


# ---------------------------------------------------------------- text helpers


def _join(items: Sequence[str], word: str = "and") -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _ranges(values: Sequence[int]) -> list[str]:
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
    parts = _ranges(values)
    plural = len(values) > 1
    return ("slices " if plural else "slice ") + _join(parts, word)


def _group(labels: Sequence[str]) -> str:
    counts = Counter(labels)
    return " + ".join(f"{n} x {name}" if n > 1 else name for name, n in counts.items())


def _verb(n_instances: int) -> str:
    return "needs" if n_instances == 1 else "need"


def _mask(start: int, size: int) -> int:
    return ((1 << size) - 1) << start


def _bits(mask: int) -> list[int]:
    return [b for b in range(mask.bit_length()) if mask >> b & 1]


# ----------------------------------------------------------------- the search


class _Group:
    """Unpinned instances whose profiles have identical placements."""

    __slots__ = ("masks", "members", "size")

    def __init__(self, masks: tuple[int, ...], size: int) -> None:
        self.masks = masks
        self.size = size
        self.members: list[int] = []


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


def _pack(groups: Sequence[_Group], free: int) -> list[tuple[int, ...]] | None:
    """Exact search: for each group, the indices of the masks its members take."""
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


class _Infeasible(Exception):
    def __init__(self, reason: str, hint: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.hint = hint


_HINT_LAYOUTS = "`migperf mig layouts` lists the layouts that fit this GPU"


def _check_sums(
    req: Sequence[GpuInstanceProfile],
    occupied: Occupied,
    geometry: MigGeometry,
) -> None:
    """Rules 3-5, which do not depend on placement. Raises _Infeasible."""
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
            raise _Infeasible(
                f"the GPU allows at most {lim} instance{'s' if lim != 1 else ''} of {p.profile}, "
                f"but {exist}{n} {were} requested",
                "see each profile's limit with `migperf mig profiles` (nvidia-smi mig -lgip, Free/Total)",
            )
    occ_labels = [f"the existing {p.profile} at {pl}" for p, pl in occupied]

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
        raise _Infeasible(
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
        raise _Infeasible(f"{_group(names)} {_verb(len(req))} {what} but {tail}", _HINT_LAYOUTS)

    for field in ("decoder", "encoder", "jpeg", "ofa"):
        engine_conflict(field, exclusive_only=False)


def _solve(layout: ResolvedLayout, geometry: MigGeometry, occupied: Occupied) -> Solution:
    """Raises _Infeasible with the reason when no placement exists."""
    insts = layout.instances
    _check_sums([i.profile for i in insts], occupied, geometry)

    # Compute-instance splits (resolve_layout checks them; a hand-built layout may not be).
    ci_places: list[tuple[Placement, ...]] = []
    for inst in insts:
        cis = place_compute_instances(inst.profile.compute_slices, inst.compute)
        if cis is None:
            sizes = "+".join(f"{c}c" for c in inst.compute)
            raise _Infeasible(
                f"compute instances {sizes} do not fit in the {inst.profile.compute_slices} "
                f"compute slices of {inst.name}",
                "see the compute-instance profiles with `nvidia-smi mig -lcip`",
            )
        ci_places.append(cis)

    full = _mask(0, geometry.placement_units)
    fixed = 0
    owners: list[tuple[int, str]] = []  # (mask, label) of what holds slices
    for p, pl in occupied:
        m = _mask(pl.start, pl.size)
        fixed |= m
        owners.append((m, f"the existing {p.profile} at {pl}"))

    starts: list[int | None] = [None] * len(insts)
    pinned_any = False
    for idx, inst in enumerate(insts):
        if inst.start is None:
            continue
        pinned_any = True
        p = inst.profile
        allowed = [pl.start for pl in p.placements]
        label = f"{p.profile}@{inst.start}"
        if inst.start not in allowed:
            raise _Infeasible(
                f"{p.profile} cannot start at memory slice {inst.start}; "
                f"it can start only at {_slices(allowed, 'or')}",
                "see the placements with `nvidia-smi mig -lgipp`, or drop the @START",
            )
        m = _mask(inst.start, p.memory_slices)
        clash = [(om, lbl) for om, lbl in owners if om & m]
        if clash:
            om, other = clash[0]
            raise _Infeasible(
                f"{label} and {other} both need memory {_slices(_bits(om & m))}",
                "pick another start, or drop the @START to let migperf choose",
            )
        fixed |= m
        owners.append((m, label))
        starts[idx] = inst.start

    groups: dict[tuple[int, ...], _Group] = {}
    for idx, inst in enumerate(insts):
        if inst.start is not None:
            continue
        p = inst.profile
        masks = tuple(
            _mask(pl.start, pl.size) for pl in sorted(p.placements, key=lambda x: x.start)
        )
        g = groups.get(masks)
        if g is None:
            g = groups[masks] = _Group(masks, p.memory_slices)
        g.members.append(idx)

    free = full & ~fixed
    for g in groups.values():
        if any(m & free == m for m in g.masks):
            continue
        p = insts[g.members[0]].profile
        allowed = [pl.start for pl in p.placements]
        blockers = [lbl for om, lbl in owners if any(om & m for m in g.masks)]
        only = "can only start at" if len(allowed) == 1 else "can start only at"
        which = "which" if len(allowed) == 1 else "all of which"
        hint = (
            "drop the explicit @START placements to let migperf choose"
            if pinned_any
            else "free those slices first (`migperf mig reset`), or pick instances that fit the free slices"
        )
        raise _Infeasible(
            f"{p.profile} {only} {_slices(allowed, 'or')}, {which} {_join(blockers)} "
            f"{'occupies' if len(blockers) == 1 else 'occupy'}",
            hint,
        )

    # Largest first, then fewest options: the classic order for exact packing.
    order = sorted(groups.values(), key=lambda g: (-g.size, len(g.masks), g.masks))
    chosen = _pack(order, free)
    if chosen is None:
        parts = []
        for g in order:
            p = insts[g.members[0]].profile
            ok = [
                pl.start
                for pl in p.placements
                if _mask(pl.start, pl.size) & free == _mask(pl.start, pl.size)
            ]
            label = _group([insts[i].name for i in g.members])
            parts.append(f"{label} can start at {_slices(ok, 'or')}")
        where = (
            f"free memory {_slices(_bits(free))}"
            if fixed
            else f"the GPU's {geometry.placement_units} memory slices"
        )
        raise _Infeasible(
            f"no arrangement of these placements fits in {where}: {'; '.join(parts)}",
            "drop the explicit @START placements to let migperf choose"
            if pinned_any
            else _HINT_LAYOUTS,
        )
    for g, combo in zip(order, chosen, strict=True):
        for member, j in zip(g.members, combo, strict=True):
            starts[member] = _bits(g.masks[j])[0]

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
    except _Infeasible as exc:
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
    except _Infeasible as exc:
        return LayoutCheckResult(False, exc.reason, exc.hint)


# ---------------------------------------------------------------- enumeration


def _fits(profiles: Sequence[GpuInstanceProfile], geometry: MigGeometry) -> bool:
    try:
        _check_sums(profiles, (), geometry)
    except _Infeasible:
        return False
    groups: dict[tuple[int, ...], _Group] = {}
    for idx, p in enumerate(profiles):
        masks = tuple(
            _mask(pl.start, pl.size) for pl in sorted(p.placements, key=lambda x: x.start)
        )
        g = groups.get(masks)
        if g is None:
            g = groups[masks] = _Group(masks, p.memory_slices)
        g.members.append(idx)
    order = sorted(groups.values(), key=lambda g: (-g.size, len(g.masks), g.masks))
    return _pack(order, _mask(0, geometry.placement_units)) is not None


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
