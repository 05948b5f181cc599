"""The layout types as the user writes them, and their canonical text form.

A :class:`LayoutSpec` is a multiset of :class:`InstanceSpec` requests, by
profile name or id, not yet checked against any GPU. ``str()`` of either gives
the text form that :func:`migperf.mig.layout.parse_layout` reads back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PROFILE_NAME_RE",
    "InstanceSpec",
    "LayoutSpec",
    "layout_from_state",
    "profile_sort_key",
    "split_text",
]

#: A GPU-instance profile name, lower case: groups are the compute slices, the
#: memory in GB and the attribute suffix (``+me``, ``-me``, ``+me.all``, or "").
#: ASCII digits only: ``\d`` alone matches "３" or "٣", which int() reads as 3.
PROFILE_NAME_RE = re.compile(r"(\d+)g\.(\d+)gb((?:[+-][a-z0-9]+(?:\.[a-z0-9]+)*)?)", re.ASCII)


def split_text(sizes: Sequence[int]) -> str:
    """The text form of a compute-instance split, repeats folded: ``[2, 1, 1]`` -> ``2c,1c*2``.

    Args:
        sizes: Compute-instance sizes in compute slices, largest first.

    Returns:
        What goes between the ``[...]`` of a layout item.
    """
    parts: list[str] = []
    i = 0
    while i < len(sizes):
        j = i
        while j < len(sizes) and sizes[j] == sizes[i]:
            j += 1
        parts.append(f"{sizes[i]}c" + (f"*{j - i}" if j - i > 1 else ""))
        i = j
    return ",".join(parts)


@dataclass(frozen=True)
class InstanceSpec:
    """One requested GPU instance, as the user wrote it.

    Attributes:
        profile: Profile name (``3g.40gb``, lower case) or profile id (``9``).
        start: Explicit placement start in memory slices, or None to let the
            solver choose.
        compute: Compute-instance sizes in compute slices, largest first; None
            means one compute instance spanning the GPU instance, ``()`` means
            none at all.
    """

    profile: str | int
    start: int | None = None
    compute: tuple[int, ...] | None = None

    def __str__(self) -> str:
        text = str(self.profile)
        if self.start is not None:
            text += f"@{self.start}"
        if self.compute is not None:
            text += f"[{split_text(self.compute)}]"
        return text


def profile_sort_key(profile: str | int) -> tuple[Any, ...]:
    """Sort key that puts larger profiles first: ``7g`` before ``3g.40gb`` before ``3g.20gb``.

    Names sort by compute slices, then memory, both descending, then suffix;
    profile ids (not yet resolved) sort after names, ascending.

    Args:
        profile: A profile name or id.

    Returns:
        A key for ``sorted``.
    """
    if isinstance(profile, int):
        return (1, profile)
    m = PROFILE_NAME_RE.fullmatch(profile)
    if m is None:
        return (0, 0, 0, profile)
    return (0, -int(m.group(1)), -int(m.group(2)), m.group(3))


def _instance_key(i: InstanceSpec) -> tuple[Any, ...]:
    start = -1 if i.start is None else i.start
    compute = (0,) if i.compute is None else (1, *(-c for c in i.compute))
    return (profile_sort_key(i.profile), start, compute)


@dataclass(frozen=True)
class LayoutSpec:
    """A layout: a multiset of :class:`InstanceSpec`.

    ``instances`` keeps the order the user wrote; order carries no meaning.
    ``str()`` gives the canonical text form (largest first, repeats folded into
    ``*N``), which :func:`~migperf.mig.layout.parse_layout` reads back to an
    equal multiset.
    """

    instances: tuple[InstanceSpec, ...] = ()

    def canonical(self) -> LayoutSpec:
        """The same multiset in canonical order (largest profile first)."""
        return LayoutSpec(tuple(sorted(self.instances, key=_instance_key)))

    def same_as(self, other: LayoutSpec) -> bool:
        """Whether both hold the same instances, ignoring order."""
        return self.canonical() == other.canonical()

    def counts(self) -> dict[str, int]:
        """``{profile: count}`` as written (ids as decimal strings), largest first."""
        out: dict[str, int] = {}
        for inst in self.canonical().instances:
            out[str(inst.profile)] = out.get(str(inst.profile), 0) + 1
        return out

    def __len__(self) -> int:
        return len(self.instances)

    def __str__(self) -> str:
        items = self.canonical().instances
        if not items:
            return "none"
        parts: list[str] = []
        i = 0
        while i < len(items):
            j = i
            # Pinned repeats stay separate: "3g.40gb@4*2" is not valid input.
            while j < len(items) and items[j] == items[i] and (j == i or items[i].start is None):
                j += 1
            parts.append(str(items[i]) + (f"*{j - i}" if j - i > 1 else ""))
            i = j
        return ",".join(parts)


def layout_from_state(
    instances: Iterable[tuple[str, int | None, Sequence[int] | None]],
) -> LayoutSpec:
    """A GPU's current instances as a canonical layout.

    Args:
        instances: ``(profile name, placement start or None, CI sizes)`` per GPU
            instance, e.g. ``("3g.40gb", 4, [2, 1])``. CI sizes None, or one CI
            spanning the GPU instance, are written as the default split.

    Returns:
        A canonical :class:`LayoutSpec`; ``str()`` of it is the text form,
        e.g. ``3g.40gb@4[2c,1c],1g.10gb@0``.
    """
    out: list[InstanceSpec] = []
    for name, start, sizes in instances:
        name = name.lower()
        compute: tuple[int, ...] | None = None
        if sizes is not None:
            compute = tuple(sorted(sizes, reverse=True))
            m = PROFILE_NAME_RE.match(name)
            if m is not None and compute == (int(m.group(1)),):
                compute = None
        out.append(InstanceSpec(name, start, compute))
    return LayoutSpec(tuple(out)).canonical()
