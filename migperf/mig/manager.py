"""The partition manager: from a layout a person wrote to a GPU that holds it.

Joins the three parts below it: :mod:`~migperf.mig.layout` (what was asked,
checked against this GPU's own profiles), :mod:`~migperf.mig.solver` (where
each instance goes) and :mod:`~migperf.mig.apply` (the transaction). This is
the Python API the CLI and the benchmark runner use::

    with open_nvml() as nvml, apply_layout(nvml, 0, "3g.40gb,2g.20gb,1g.10gb*2"):
        ...  # benchmark on the slices; the previous layout is back afterwards
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from migperf.errors import InsufficientResourcesError, UsageError
from migperf.mig.apply import ApplyResult, applied, converge
from migperf.mig.layout import (
    LayoutSpec,
    ResolvedInstance,
    ResolvedLayout,
    parse_layout,
    resolve_layout,
)
from migperf.mig.snapshot import ComputeState, InstanceState, MigSnapshot, Step, take_snapshot
from migperf.mig.solver import MigGeometry, Solution, solve_layout
from migperf.nvml.catalog import CI_ID_OF_SLICES
from migperf.nvml.facade import Nvml

__all__ = [
    "apply_layout",
    "apply_layout_scoped",
    "resolve_for_gpu",
    "solution_to_snapshot",
    "target_for_layout",
]


def resolve_for_gpu(
    nvml: Nvml, gpu_index: int, layout: LayoutSpec | str
) -> tuple[ResolvedLayout, MigGeometry]:
    """Check a layout's profile names against GPU ``gpu_index``'s own profiles.

    Raises:
        UsageError: malformed layout or a profile this GPU does not have.
        MigNotSupportedError: the GPU has no MIG.
    """
    spec = parse_layout(layout) if isinstance(layout, str) else layout
    profiles = nvml.gpu_instance_profiles(gpu_index)
    return resolve_layout(spec, profiles), MigGeometry.from_profiles(profiles)


def solution_to_snapshot(solution: Solution, gpu_index: int, gpu_uuid: str) -> MigSnapshot:
    """A solved layout as the state the GPU should end in."""
    instances = []
    for placed in solution.instances:
        compute = tuple(
            sorted(ComputeState(c.start, c.size, CI_ID_OF_SLICES[c.size]) for c in placed.compute)
        )
        instances.append(
            InstanceState(
                start=placed.placement.start,
                size=placed.placement.size,
                profile_id=placed.profile.profile_id,
                profile=placed.profile.profile,
                compute=compute,
            )
        )
    return MigSnapshot(gpu_index, gpu_uuid, True, tuple(sorted(instances)))


def _pin_to_current(layout: ResolvedLayout, current: MigSnapshot) -> ResolvedLayout:
    """Give unplaced instances the start of a matching existing instance, so it is kept."""
    free = [i for i in current.instances]
    taken_starts = {i.start for i in layout.instances if i.start is not None}
    pinned = []
    for inst in layout.instances:
        if inst.start is None:
            sizes = tuple(sorted(inst.compute, reverse=True))
            match = next(
                (
                    c
                    for c in free
                    if c.profile_id == inst.profile.profile_id
                    and tuple(sorted((x.size for x in c.compute), reverse=True)) == sizes
                    and c.start not in taken_starts
                ),
                None,
            )
            if match is not None:
                free.remove(match)
                inst = ResolvedInstance(inst.profile, match.start, inst.compute)
        pinned.append(inst)
    return ResolvedLayout(tuple(pinned))


def target_for_layout(nvml: Nvml, gpu_index: int, layout: LayoutSpec | str) -> MigSnapshot:
    """The exact state (instances and placements) that ``layout`` means on this GPU.

    Instances that already exist and match the request keep their places (and
    so their MIG device UUIDs) when the rest of the layout still fits around
    them; otherwise everything is placed afresh.

    Raises:
        UsageError: empty or malformed layout, or unknown profile.
        InsufficientResourcesError: no placement exists; the message says why.
    """
    if isinstance(layout, str) and not layout.strip():
        # An unset shell variable must not read as "no instances at all".
        raise UsageError(
            f"the layout for GPU {gpu_index} is empty: it would destroy every instance",
            hint=f"to destroy every instance on purpose, run `migperf mig reset --gpu {gpu_index}`",
        )
    resolved, geometry = resolve_for_gpu(nvml, gpu_index, layout)
    current = take_snapshot(nvml, gpu_index)
    pinned = _pin_to_current(resolved, current)
    try:
        solution = solve_layout(pinned, geometry)
    except InsufficientResourcesError:
        solution = solve_layout(resolved, geometry)
    return solution_to_snapshot(solution, gpu_index, current.gpu_uuid)


def apply_layout(
    nvml: Nvml,
    gpu_index: int,
    layout: LayoutSpec | str,
    *,
    force: bool = False,
    dry_run: bool = False,
    root: Path | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> ApplyResult:
    """Partition GPU ``gpu_index`` into ``layout``, as one transaction.

    The equivalent of a series of ``nvidia-smi mig -dci/-dgi/-cgi ID:START/-cci``
    that either completes or is undone.

    Raises:
        UsageError, InsufficientResourcesError: the layout is wrong for this GPU
            (nothing was changed).
        RolledBackError: applying failed; the previous layout is back.
        (and see :func:`migperf.mig.apply.converge`)
    """
    target = target_for_layout(nvml, gpu_index, layout)
    return converge(
        nvml,
        gpu_index,
        target,
        force=force,
        dry_run=dry_run,
        root=root,
        on_step=on_step,
        command=f"migperf mig apply {layout}",
    )


@contextmanager
def apply_layout_scoped(
    nvml: Nvml,
    gpu_index: int,
    layout: LayoutSpec | str,
    *,
    force: bool = False,
    root: Path | None = None,
) -> Iterator[ApplyResult]:
    """Hold ``layout`` on the GPU for a ``with`` block; restore the previous layout after it.

    The restore runs also when the block raises or is interrupted.
    """
    target = target_for_layout(nvml, gpu_index, layout)
    with applied(nvml, gpu_index, target, force=force, root=root) as result:
        yield result
