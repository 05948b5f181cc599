"""Binding a layout to one GPU's profiles, and checking each request on its own.

Parsing knows nothing about a GPU, because the same name means different
profiles on different models (``1g.10gb`` is profile 15 on an A100-40GB and 19
on an A100-80GB; docs/reference/mig-facts.md section 7). :func:`resolve_layout` looks the
names and ids up in one GPU's profiles and checks what a single request can get
wrong; whether the instances fit *together* is the solver's question.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from migperf.errors import UsageError
from migperf.mig.layout.spec import InstanceSpec, LayoutSpec, split_text
from migperf.nvml.catalog import ci_slice_options
from migperf.nvml.types import GpuInstanceProfile, Placement

__all__ = [
    "ResolvedInstance",
    "ResolvedLayout",
    "place_compute_instances",
    "resolve_layout",
]


@dataclass(frozen=True)
class ResolvedInstance:
    """A requested GPU instance bound to one GPU's profile.

    Attributes:
        profile: The GPU-instance profile on this GPU.
        start: Explicit placement start (memory slices), or None.
        compute: Compute-instance sizes (compute slices), largest first;
            ``(profile.compute_slices,)`` by default, ``()`` for none.
    """

    profile: GpuInstanceProfile
    start: int | None
    compute: tuple[int, ...]

    @property
    def name(self) -> str:
        """The profile name, e.g. ``3g.40gb``."""
        return self.profile.profile

    def to_spec(self) -> InstanceSpec:
        """This instance by name, with the default split written as None."""
        default = self.compute == (self.profile.compute_slices,)
        return InstanceSpec(self.name, self.start, None if default else self.compute)

    def __str__(self) -> str:
        return str(self.to_spec())


@dataclass(frozen=True)
class ResolvedLayout:
    """A layout whose profiles were checked against one GPU's profiles."""

    instances: tuple[ResolvedInstance, ...] = ()

    def counts(self) -> dict[str, int]:
        """``{profile name: count}``, largest profile first."""
        return self.to_spec().counts()

    def to_spec(self) -> LayoutSpec:
        """Back to a :class:`LayoutSpec` with profile names (the canonical text via ``str``)."""
        return LayoutSpec(tuple(i.to_spec() for i in self.instances))

    def __len__(self) -> int:
        return len(self.instances)

    def __str__(self) -> str:
        return str(self.to_spec())


def place_compute_instances(
    gi_compute_slices: int, sizes: Sequence[int]
) -> tuple[Placement, ...] | None:
    """Placements for compute instances of ``sizes`` inside one GPU instance, or None.

    Where a compute instance may start is not verified (docs/reference/mig-facts.md
    5, 6 [U]): real drivers choose CI placements themselves, and ``nvidia-smi
    mig -cci 0,1`` on a 3g instance makes a 1c and then a 2c, which starts at
    multiples of the size would refuse. So starts at multiples of each size
    are tried first (the placements migperf has always planned), then any
    start where the instance fits: a split is refused only when its sizes do
    not fit the GPU instance's compute slices at all. Largest first, first
    fit, with backtracking so that any split that fits is found.

    Args:
        gi_compute_slices: The GPU instance's compute slices.
        sizes: Compute-instance sizes in compute slices.

    Returns:
        Placements in compute slices, in the order of ``sizes``; None if they
        cannot all be placed.
    """
    order = sorted(range(len(sizes)), key=lambda k: -sizes[k])
    chosen: list[int] = [0] * len(sizes)

    def fit(pos: int, used: int, aligned: bool) -> bool:
        if pos == len(order):
            return True
        c = sizes[order[pos]]
        if c < 1:
            return False
        mask = (1 << c) - 1
        for s in range(0, gi_compute_slices - c + 1, c if aligned else 1):
            if not used & (mask << s):
                chosen[order[pos]] = s
                if fit(pos + 1, used | (mask << s), aligned):
                    return True
        return False

    if sum(sizes) > gi_compute_slices or not (fit(0, 0, True) or fit(0, 0, False)):
        return None
    return tuple(Placement(chosen[k], sizes[k]) for k in range(len(sizes)))


def _or_list(values: Sequence[object], word: str = "or") -> str:
    items = [str(v) for v in values]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} {word} {items[-1]}"


def _lookup(
    profiles: Sequence[GpuInstanceProfile],
) -> tuple[dict[str, GpuInstanceProfile], dict[int, GpuInstanceProfile]]:
    return {p.profile.lower(): p for p in profiles}, {p.profile_id: p for p in profiles}


def resolve_layout(
    spec: LayoutSpec,
    profiles: Sequence[GpuInstanceProfile],
    *,
    gpu_name: str | None = None,
) -> ResolvedLayout:
    """Bind a layout's names and ids to one GPU's profiles and check each request.

    Checks what a single request can get wrong on its own: the profile exists
    on this GPU, an explicit start is one of the profile's placements, and the
    compute-instance split uses sizes the GPU instance offers and fits inside
    it. Whether the instances fit *together* is the solver's question.

    Args:
        spec: The parsed layout.
        profiles: This GPU's GPU-instance profiles (``nvidia-smi mig -lgip``).
        gpu_name: The GPU's name, for messages (``NVIDIA A100-SXM4-80GB``).

    Returns:
        The layout with each request bound to its profile.

    Raises:
        UsageError: unknown profile name or id, a start the profile cannot
            use, or an invalid compute-instance split.
    """
    by_name, by_id = _lookup(profiles)
    on = f"on {gpu_name}" if gpu_name else "on this GPU"
    resolved: list[ResolvedInstance] = []
    for inst in spec.instances:
        p = (
            by_id.get(inst.profile)
            if isinstance(inst.profile, int)
            else by_name.get(inst.profile.lower())
        )
        if p is None:
            valid = (
                ", ".join(f"{q.profile} ({q.profile_id})" for q in profiles)
                or "none (MIG unsupported)"
            )
            what = "profile id" if isinstance(inst.profile, int) else "MIG profile"
            raise UsageError(
                f"unknown {what} {inst.profile} {on}; valid profiles are {valid}",
                hint="list them with `migperf mig profiles` (nvidia-smi mig -lgip)",
            )
        starts = [pl.start for pl in p.placements]
        if inst.start is not None and inst.start not in starts:
            where = "slice" if len(starts) == 1 else "slices"
            raise UsageError(
                f"{p.profile} cannot start at memory slice {inst.start} {on}; "
                f"it can start only at {where} {_or_list(starts)}",
                hint="see the placements with `migperf mig profiles` (nvidia-smi mig -lgipp), or drop the @START",
            )
        compute = (p.compute_slices,) if inst.compute is None else inst.compute
        _check_split(p, compute)
        resolved.append(ResolvedInstance(p, inst.start, compute))
    return ResolvedLayout(tuple(resolved))


def _check_split(p: GpuInstanceProfile, compute: tuple[int, ...]) -> None:
    if not compute:
        return
    options = ci_slice_options(p.compute_slices)
    bad = [c for c in compute if c not in options]
    split = f"{p.profile}[{split_text(compute)}]"
    hint = f"a {p.profile} GPU instance offers compute instances of {_or_list(options)} slices; see `nvidia-smi mig -lcip`"
    if bad:
        raise UsageError(
            f"{split}: a {p.profile} GPU instance has no {bad[0]}-slice compute instance "
            f"(it offers {_or_list(options)} slices)",
            hint=hint,
        )
    if sum(compute) > p.compute_slices:
        raise UsageError(
            f"{split}: the compute instances need {sum(compute)} compute slices "
            f"but a {p.profile} GPU instance has {p.compute_slices}",
            hint=hint,
        )
    if place_compute_instances(p.compute_slices, compute) is None:
        raise UsageError(
            f"{split}: compute instances of {_or_list(compute, 'and')} slices cannot all be placed "
            f"in the {p.compute_slices} compute slices of {p.profile}",
            hint=hint,
        )
