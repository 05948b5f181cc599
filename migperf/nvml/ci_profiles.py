"""Compute-instance profiles a GPU instance offers: the facts ``nvidia-smi mig -lcip`` shows.

Kept apart from :mod:`migperf.nvml.catalog` (the GPU-instance facts) because
the compute-instance side is the least verified part of the fact sheet
(docs/reference/mig-facts.md 5 and 6): the sizes each GPU instance offers
come from captures [V], the placement grid and the REV1/NVL variants are
[U]. The simulated NVML (:mod:`migperf.nvml.sim`) serves these facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from migperf.nvml.catalog import (
    ARCH_AMPERE,
    ARCH_HOPPER,
    CI_1_SLICE_REV1,
    CI_7_SLICE_NVL,
    CI_ID_OF_SLICES,
    GpuModel,
    ProfileFact,
    ci_slice_options,
    ci_sm_count,
)

__all__ = ["CI_GRID_CONFIDENCE", "CiProfileFact", "ci_profile", "ci_profiles"]

#: Confidence of the compute-instance placement grid (where each size may start).
CI_GRID_CONFIDENCE = "U"


@dataclass(frozen=True)
class CiProfileFact:
    """One compute-instance profile a GPU instance offers (``nvidia-smi mig -lcip``).

    ``starts`` is where an instance may start, in compute slices of the GPU
    instance. That grid is **[U]** (:data:`CI_GRID_CONFIDENCE`): the captures
    only show ``0:1``, ``1:1`` (docs/reference/mig-facts.md 5), and ``nvidia-smi
    mig -cci 0,1`` on a 3g instance makes a 1c and then a 2c, which starts at
    multiples of the size refuse once the 1c holds slice 0. So every start
    where the instance fits is offered. ``confidence`` is that of the profile
    itself (its size, count and SMs), not of the grid.
    """

    profile_id: int
    compute_slices: int
    instances: int
    sm_count: int
    starts: tuple[int, ...]
    confidence: str = "U"


def ci_profiles(model: GpuModel, gi: ProfileFact) -> tuple[CiProfileFact, ...]:
    """The compute-instance profiles a GPU instance of ``gi`` offers on ``model``, by id.

    The plain sizes follow :func:`ci_slice_options`. Real drivers also list two
    variants that share a size and a name with a plain profile: 1_SLICE_REV1
    (id 7, a 1-slice instance with 26 SMs in an H100 2g instance) and
    7_SLICE_NVL (id 8, a 7-slice instance of an A100 7g instance); where else
    they appear, and their SMs elsewhere, is [U].
    """
    g = gi.compute_slices
    out = [
        CiProfileFact(
            CI_ID_OF_SLICES[c],
            c,
            g // c,
            ci_sm_count(gi.sm_count, g, c),
            tuple(range(0, g - c + 1)),
            "V" if g in (1, 2, 3, 4, 7) else "U",
        )
        for c in ci_slice_options(g)
    ]
    if model.architecture == ARCH_HOPPER and model.compute_slices == 7 and g >= 2:
        out.append(CiProfileFact(CI_1_SLICE_REV1, 1, 1, min(26, gi.sm_count), tuple(range(g)), "U"))
    if model.architecture == ARCH_AMPERE and g == 7:
        out.append(CiProfileFact(CI_7_SLICE_NVL, 7, 1, gi.sm_count, (0,), "U"))
    return tuple(sorted(out, key=lambda f: f.profile_id))


def ci_profile(model: GpuModel, gi: ProfileFact, ci_profile_id: int) -> CiProfileFact | None:
    """The compute-instance profile ``ci_profile_id`` of a GPU instance of ``gi``, or None."""
    return next((f for f in ci_profiles(model, gi) if f.profile_id == ci_profile_id), None)
