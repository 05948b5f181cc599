"""The placement solver: where each GPU instance of a layout goes, or why it cannot.

Usage::

    from migperf.mig.solver import MigGeometry, check_layout
    geometry = MigGeometry.for_model("a100-80gb")
    print(check_layout(geometry.resolve("4g.40gb*2"), geometry).reason)  # why it cannot fit

A set of GPU instances fits on a GPU when (docs/reference/mig-facts.md sections 3, 4 and 4.4;
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
with a message naming the resource (:mod:`.explain`). Only rules 1-2 need a
search (:mod:`.packing`): an exact backtracking search over the free-slice
bitmask, largest and most constrained profiles first, with profiles that share
the same placements treated as interchangeable and failed (profile group, free
slices) states memoized. It finds a placement whenever one exists, whatever
order the layout lists its instances in. mig-parted instead tries every
ordering of driver-placed creations; on the catalog's geometries that finds the
same layouts, but an order of magnitude more slowly, most of all for layouts
that do not fit (see ``benchmarks/solver.py``).

The parts: :mod:`.geometry` (what the solver knows about a GPU),
:mod:`.search` (:func:`solve_layout`, :func:`check_layout`), :mod:`.explain`
(the one-sentence reasons), :mod:`.packing` (the exact search) and
:mod:`.maximal` (:func:`enumerate_maximal_layouts`).
"""

from __future__ import annotations

from migperf.mig.solver.geometry import MigGeometry, is_media_variant
from migperf.mig.solver.maximal import enumerate_maximal_layouts
from migperf.mig.solver.search import (
    LayoutCheckResult,
    PlacedInstance,
    Solution,
    check_layout,
    solve_layout,
)

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
