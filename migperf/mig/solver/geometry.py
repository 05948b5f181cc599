"""What the solver knows about a GPU: its MIG geometry, and what already sits on it."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from migperf.errors import UsageError
from migperf.mig.layout import LayoutSpec, ResolvedLayout, parse_layout, resolve_layout
from migperf.nvml.catalog import MODELS, get_model
from migperf.nvml.types import Engines, GpuInstanceProfile, Placement

__all__ = ["MigGeometry", "Occupied", "is_media_variant"]

_VARIANT_RE = re.compile(r"[+-][a-z0-9.]+$")

#: GPU instances that stay on the GPU while a layout is placed around them.
Occupied = Sequence[tuple[GpuInstanceProfile, Placement]]


def is_media_variant(profile: GpuInstanceProfile) -> bool:
    """Whether a profile is a media-engine or graphics variant (``+me``, ``+me.all``, ``-me``, ``+gfx``).

    Args:
        profile: A GPU-instance profile.

    Returns:
        True for the variants, False for the plain compute profiles.
    """
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
