"""Layouts: the GPU instances a user asks for, as text, YAML or resolved profiles.

Usage::

    from migperf.mig.layout import parse_layout, resolve_layout
    spec = parse_layout("3g.40gb@4, 2g.20gb, 1g.10gb*2")  # or "7g.80gb[1c*7]"
    resolved = resolve_layout(spec, profiles)  # profiles: this GPU's (nvidia-smi mig -lgip)

A layout is a multiset of GPU-instance requests. Each request names a profile,
may pin its placement start (in memory slices) and may split the GPU instance
into several compute instances. The parts:

* :mod:`.spec`: :class:`InstanceSpec` and :class:`LayoutSpec`, what the user
  asked for by name, and their canonical text form;
* :mod:`.parse`: the text grammar (in its docstring) and YAML lists;
* :mod:`.resolve`: binding names and ids to one GPU's profiles
  (:class:`ResolvedLayout`) and checking each request, compute-instance split
  included, on its own.
"""

from __future__ import annotations

from migperf.mig.layout.parse import MAX_COUNT, layout_from_yaml, parse_layout
from migperf.mig.layout.resolve import (
    ResolvedInstance,
    ResolvedLayout,
    place_compute_instances,
    resolve_layout,
)
from migperf.mig.layout.spec import InstanceSpec, LayoutSpec, layout_from_state, profile_sort_key

__all__ = [
    "MAX_COUNT",
    "InstanceSpec",
    "LayoutSpec",
    "ResolvedInstance",
    "ResolvedLayout",
    "layout_from_state",
    "layout_from_yaml",
    "parse_layout",
    "place_compute_instances",
    "profile_sort_key",
    "resolve_layout",
]
