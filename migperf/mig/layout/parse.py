"""Reading layouts: the text grammar and YAML lists.

A layout is a multiset of GPU-instance requests. Each request names a profile,
may pin its placement start (in memory slices, as ``nvidia-smi mig -lgipp``
counts them) and may split the GPU instance into several compute instances.

Text grammar (``migperf mig apply --layout ...``)::

    layout   := "" | "none" | "empty" | item ("," item)*
    item     := PROFILE ["@" START] ["[" split "]"] [("*" | "x") COUNT]
    PROFILE  := <g>"g."<gb>"gb"[("+" | "-")ATTR]   e.g. 3g.40gb, 1g.10gb+me,
                                                  1g.24gb-me, 1g.24gb+me.all
              | <profile id>                      e.g. 9 (nvidia-smi mig -lgip "ID")
    split    := "" | size ("," size)*             "[]" = a GPU instance with no
                                                  compute instance
    size     := <c>"c" ["*" K]                    e.g. 2c, 1c*7

Whitespace anywhere is ignored and names are case-insensitive, so
``1g.10gb x2``, ``1g.10gbx2`` and ``1g.10gb*2`` mean the same. Examples::

    3g.40gb,2g.20gb,1g.10gb*2     the same as 3g.40gb, 2g.20gb, 1g.10gb, 1g.10gb
    3g.40gb@4                     3g.40gb at memory slices 4-7
    7g.80gb[1c*7]                 one 7g GPU instance, seven 1-slice compute instances
    3g.40gb[2c,1c]                one 3g GPU instance, a 2-slice and a 1-slice CI
    9,14,19                       profile ids: 3g + 2g + 1g on an 8-slice GPU

Without ``[...]`` a GPU instance gets one compute instance spanning it, as
``nvidia-smi mig -cgi ... -C`` does.

Parsing knows nothing about a GPU: :func:`~migperf.mig.layout.resolve_layout`
checks the names and ids against one GPU's profiles, because the same name
means different profiles on different models (``1g.10gb`` is profile 15 on an
A100-40GB and 19 on an A100-80GB; docs/reference/mig-facts.md section 7).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from migperf.errors import ConfigError, UsageError
from migperf.mig.layout.spec import PROFILE_NAME_RE, InstanceSpec, LayoutSpec

__all__ = ["MAX_COUNT", "layout_from_yaml", "parse_layout"]

#: Most instances one item may repeat; no GPU has more than 8 MIG slices, and a
#: cap keeps ``1g.10gb*10**9`` from allocating a billion specs.
MAX_COUNT = 64

_EXAMPLE = '"3g.40gb@4, 2g.20gb, 1g.10gb*2" or "7g.80gb[1c*7]"'
_HINT = f"write comma-separated items such as {_EXAMPLE}"

# Every pattern is re.ASCII: Python's \d (and int()) also take "３" and "٣" as
# digits, and a layout must mean what it shows.
_PROFILE_NAME_RE = re.compile(r"^(\d+)g\.(\d+)gb(?:[+-][a-z0-9]+(?:\.[a-z0-9]+)*)?$", re.ASCII)
_CI_NAME_RE = re.compile(r"\d+c\.\d+g\.", re.ASCII)
_ID_RE = re.compile(r"\d+", re.ASCII)
_NUM_RE = re.compile(r"\d+", re.ASCII)
_CI_SIZE_RE = re.compile(r"^(\d+)c(?:\*(\d+))?$", re.ASCII)
_COUNT_RE = re.compile(r"[*x](\d+)", re.ASCII)
_G_RE = re.compile(r"\d+g", re.ASCII)
# An attribute cannot end in "x<digits>", so "1g.24gb-mex2" is 1g.24gb-me twice.
_ATTR_COUNT_RE = re.compile(r"^(.*[+-][a-z0-9.]*?[a-z0-9])x(\d+)$", re.ASCII)
#: Most digits a number in a layout may have: every real one (a profile id,
#: a slice, a count, GB) has at most 4, and int() of a 5,000-digit string fails.
_MAX_DIGITS = 6


# --------------------------------------------------------------------- parsing


class _ItemError(Exception):
    """A problem with one item; parse_layout adds the item and its position."""


def _int(digits: str, what: str) -> int:
    """An ASCII digit string as an int, refusing absurd lengths before int() sees them."""
    if len(digits) > _MAX_DIGITS:
        raise _ItemError(
            f"{what} {digits[:8]}... has {len(digits)} digits; no GPU has anything that large"
        )
    return int(digits)


def _split_items(text: str) -> list[tuple[int, str]]:
    """Top-level comma-separated items with their 1-based column (commas in [...] stay)."""
    items: list[tuple[int, str]] = []
    depth = 0
    begin = 0
    for pos, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth <= 0:
            items.append((begin + 1, text[begin:pos]))
            begin = pos + 1
            depth = 0
    items.append((begin + 1, text[begin:]))
    return items


def _parse_split(body: str) -> tuple[int, ...]:
    if body == "":
        return ()
    sizes: list[int] = []
    for part in body.split(","):
        m = _CI_SIZE_RE.match(part)
        if m is None:
            raise _ItemError(
                f'expected compute-instance sizes like [2c,1c] or [1c*7] inside "[...]", got "{part}"'
            )
        size = _int(m.group(1), "the compute-instance size")
        reps = _int(m.group(2) or "1", "the repeat count")
        if size < 1:
            raise _ItemError("a compute instance needs at least 1 compute slice (1c)")
        if reps < 1 or reps > MAX_COUNT:
            raise _ItemError(f"the repeat count in {part} must be between 1 and {MAX_COUNT}")
        sizes += [size] * reps
    return tuple(sorted(sizes, reverse=True))


def _parse_item(item: str) -> list[InstanceSpec]:
    """One item (whitespace already removed, lower case) as instances."""
    if not item:
        raise _ItemError("empty item (two commas in a row, or a trailing comma)")
    odd = next((ch for ch in item if not ch.isascii()), None)
    if odd is not None:
        raise _ItemError(
            f"{odd!r} (U+{ord(odd):04X}) is not allowed: layouts are plain ASCII, with the digits 0-9"
        )
    if _CI_NAME_RE.match(item):
        raise _ItemError(
            "compute-instance names like 2c.3g.40gb are not layout items; "
            "write the GPU instance with its split, e.g. 3g.40gb[2c,1c]"
        )
    profile: str | int
    m = PROFILE_NAME_RE.match(item)
    if m is not None:
        profile = m.group(0)
        _int(m.group(1), "the slice count")
        _int(m.group(2), "the memory size")
    elif _G_RE.match(item):
        raise _ItemError("expected a profile name of the form <g>g.<gb>gb, like 3g.40gb")
    else:
        mid = _ID_RE.match(item)
        if mid is None:
            raise _ItemError("expected a profile name like 3g.40gb or a profile id like 9")
        m = mid
        profile = _int(mid.group(0), "the profile id")
    rest = item[m.end() :]

    count_text: str | None = None
    if isinstance(profile, str) and rest == "":
        am = _ATTR_COUNT_RE.match(profile)
        if am is not None and PROFILE_NAME_RE.fullmatch(am.group(1)):
            profile, count_text = am.group(1), am.group(2)

    start: int | None = None
    if rest.startswith("@"):
        sm = _NUM_RE.match(rest, 1)
        if sm is None:
            raise _ItemError('expected a placement start (a number of memory slices) after "@"')
        start = _int(sm.group(0), "the placement start")
        rest = rest[sm.end() :]

    compute: tuple[int, ...] | None = None
    if rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            raise _ItemError('missing "]" after the compute-instance split')
        compute = _parse_split(rest[1:close])
        rest = rest[close + 1 :]

    if rest[:1] in ("*", "x"):
        cm = _COUNT_RE.fullmatch(rest)
        if cm is None:
            raise _ItemError(
                f'expected a count after "{rest[0]}", like *2 or x2, then the next item'
            )
        count_text, rest = cm.group(1), ""
    if rest:
        what = "a placement start, a compute split, a count or a comma"
        raise _ItemError(f'unexpected "{rest}" after the profile; expected {what}')

    digits = (count_text or "1").lstrip("0") or "0"
    # A longer number is over the limit whatever it is; int() would choke on 5,000 digits.
    count = int(digits) if len(digits) <= _MAX_DIGITS else MAX_COUNT + 1
    if count < 1 or count > MAX_COUNT:
        got = count_text if count_text is None or len(count_text) <= 12 else count_text[:8] + "..."
        raise _ItemError(f"the count must be between 1 and {MAX_COUNT}, got {got}")
    if start is not None and count > 1:
        raise _ItemError(
            f"{count} instances cannot all start at memory slice {start}; "
            "give each its own item, or drop the @START"
        )
    return [InstanceSpec(profile, start, compute)] * count


def _clip(text: str, width: int = 60) -> str:
    """Text for a message: a megabyte of layout is not quoted back whole."""
    return text if len(text) <= width else text[: width - 3] + "..."


def parse_layout(text: str) -> LayoutSpec:
    """Parse the text form of a layout (grammar in the module docstring).

    Args:
        text: e.g. ``"3g.40gb, 2g.20gb, 1g.10gb*2"``.

    Raises:
        UsageError: the text is malformed; the message quotes the offending
            item and its position and says what was expected.
    """
    if text.strip().lower() in ("", "none", "empty"):
        return LayoutSpec()
    if text.count("[") != text.count("]"):
        raise UsageError(
            f'invalid layout "{_clip(text)}": unbalanced "[" and "]"',
            hint=_HINT,
        )
    instances: list[InstanceSpec] = []
    for number, (column, raw) in enumerate(_split_items(text), start=1):
        try:
            instances += _parse_item(re.sub(r"\s+", "", raw).lower())
        except _ItemError as exc:
            raise UsageError(
                f'invalid layout "{_clip(text)}": item {number} "{_clip(raw.strip())}" '
                f"(column {column}): {exc}",
                hint=_HINT,
            ) from None
    return LayoutSpec(tuple(instances))


_YAML_KEYS = ("profile", "count", "start", "compute")


def _yaml_int(value: Any, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum > 0 else "a non-negative integer"
        raise ConfigError(f"{where}: {value!r} is not {kind}", hint=_YAML_HINT)
    return value


_YAML_HINT = (
    "each entry is a string like 3g.40gb@4 or a mapping like "
    "{profile: 3g.40gb, count: 2, start: 4, compute: [2, 1]}"
)


def layout_from_yaml(data: Any, *, where: str = "layout") -> LayoutSpec:
    """A layout from parsed YAML: a list of items.

    Each entry is either a string in the text grammar (``"1g.10gb*2"``) or a
    mapping ``{profile: 3g.40gb, count: 2, start: 4, compute: [2, 1]}`` where
    only ``profile`` is required. A plain string or None is accepted too (the
    text form, and the empty layout).

    Args:
        data: What ``yaml.safe_load`` returned for the layout.
        where: Where the data came from, for messages (``configs/x.yaml: layout``).

    Raises:
        ConfigError: an entry is malformed or has an unknown key.
    """
    if data is None:
        return LayoutSpec()
    if isinstance(data, str):
        try:
            return parse_layout(data)
        except UsageError as exc:
            raise ConfigError(f"{where}: {exc.message}", hint=exc.hint) from None
    if not isinstance(data, list):
        raise ConfigError(
            f"{where}: expected a list of GPU instances, got {type(data).__name__}",
            hint=_YAML_HINT,
        )
    instances: list[InstanceSpec] = []
    for i, entry in enumerate(data):
        here = f"{where}[{i}]"
        if isinstance(entry, (str, int)) and not isinstance(entry, bool):
            try:
                instances += parse_layout(str(entry)).instances
            except UsageError as exc:
                raise ConfigError(f"{here}: {exc.message}", hint=exc.hint) from None
            continue
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"{here}: expected a string or a mapping, got {type(entry).__name__}",
                hint=_YAML_HINT,
            )
        unknown = [k for k in entry if k not in _YAML_KEYS]
        if unknown:
            raise ConfigError(
                f"{here}: unknown key {unknown[0]!r} (expected {', '.join(_YAML_KEYS)})",
                hint=_YAML_HINT,
            )
        if "profile" not in entry:
            raise ConfigError(f"{here}: missing required key 'profile'", hint=_YAML_HINT)
        raw = entry["profile"]
        profile: str | int
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise ConfigError(
                f"{here}.profile: {raw!r} is not a profile name or id", hint=_YAML_HINT
            )
        if isinstance(raw, int):
            profile = _yaml_int(raw, f"{here}.profile", 0)
        else:
            profile = re.sub(r"\s+", "", raw).lower()
            if _ID_RE.fullmatch(profile) and len(profile) <= _MAX_DIGITS:
                profile = int(profile)
            elif not (m := _PROFILE_NAME_RE.match(profile)) or any(
                len(g) > _MAX_DIGITS for g in m.groups()
            ):
                raise ConfigError(
                    f"{here}.profile: {raw!r} is not a profile name like 3g.40gb or an id like 9",
                    hint=_YAML_HINT,
                )
        count = _yaml_int(entry.get("count", 1), f"{here}.count", 1)
        if count > MAX_COUNT:
            raise ConfigError(f"{here}.count: {count} is more than {MAX_COUNT}", hint=_YAML_HINT)
        start = entry.get("start")
        if start is not None:
            start = _yaml_int(start, f"{here}.start", 0)
            if count > 1:
                raise ConfigError(
                    f"{here}: {count} instances cannot all start at memory slice {start}",
                    hint="give each instance its own entry, or drop 'start'",
                )
        compute: tuple[int, ...] | None = None
        if entry.get("compute") is not None:
            compute = _yaml_split(entry["compute"], f"{here}.compute")
        instances += [InstanceSpec(profile, start, compute)] * count
    return LayoutSpec(tuple(instances))


def _yaml_split(value: Any, where: str) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            return _parse_split(re.sub(r"\s+", "", value).lower())
        except _ItemError as exc:
            raise ConfigError(f"{where}: {exc}", hint=_YAML_HINT) from None
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of compute-instance sizes", hint=_YAML_HINT)
    sizes: list[int] = []
    for v in value:
        if isinstance(v, str) and re.fullmatch(r"\d{1,6}c", v.strip().lower(), re.ASCII):
            v = int(v.strip()[:-1])
        sizes.append(_yaml_int(v, where, 1))
    return tuple(sorted(sizes, reverse=True))
