"""Import and export NVIDIA mig-parted configuration files (``version: v1``).

The format and its validation rules are mig-parted's (``api/spec/v1/spec.go``,
docs/reference/mig-facts.md section 11)::

    version: v1
    mig-configs:
      all-balanced:
        - device-filter: ["0x20B010DE", "0x20B110DE"]   # optional
          devices: all                                  # or [0, 1, ...]
          mig-enabled: true
          mig-devices:
            "1g.5gb": 2
            "2g.10gb": 1
            "3g.20gb": 1

``mig-devices`` counts compute instances by their profile name: ``3g.40gb``
is a GPU instance with one compute instance spanning it, while ``2c.3g.40gb``
and ``1c.3g.40gb`` are compute instances that share 3g.40gb GPU instances.
mig-parted creates them in order, reusing the last GPU instance while the next
compute instance fits and trying other orders on failure; migperf turns them
into a layout by packing the compute instances of each GPU-instance profile
into as few GPU instances as possible (largest first, first fit), which gives
back the GPU instances an export described.

Errors quote the file and line: ``cfg.yaml:7: mig-configs.x[0].devices: ...``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migperf.errors import ConfigError, UsageError
from migperf.mig.layout import MAX_COUNT, InstanceSpec, LayoutSpec, place_compute_instances
from migperf.nvml.naming import compute_instance_profile_name
from migperf.yamlsource import composed, construct, read_text

__all__ = [
    "MigPartedConfig",
    "MigPartedEntry",
    "export_migparted",
    "layout_for_gpu",
    "layout_from_counts",
    "load_migparted",
    "migparted_counts",
    "select_config",
]

VERSION = "v1"
_TOP_KEYS = ("version", "mig-configs")
_ENTRY_KEYS = ("device-filter", "devices", "mig-enabled", "mig-devices")
# go-nvlib's MIG profile grammar: [<c>c.]<g>g.<gb>gb[+attr[,attr]|-attr]. ASCII
# only: \d and IGNORECASE alone accept "３g.40gb" (fullwidth digits), which
# int() reads as 3. Numbers are at most 4 digits (no GPU has 10,000 GB).
_PROFILE_RE = re.compile(
    r"^(?:(\d{1,4})c\.)?(\d{1,4})g\.(\d{1,4})gb(\+[a-z0-9.]+(?:,[a-z0-9.]+)*|-[a-z0-9.]+)?$",
    re.IGNORECASE | re.ASCII,
)
_PLAIN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")
_FILTER_RE = re.compile(r"^0x[0-9a-f]{8}(?::0x[0-9a-f]{8})?$", re.IGNORECASE | re.ASCII)
_HINT = (
    "the mig-parted format is: version: v1, then mig-configs: NAME: a list of "
    '{devices: all, mig-enabled: true, mig-devices: {"1g.10gb": 7}}'
)


@dataclass(frozen=True)
class MigPartedEntry:
    """One entry of a mig-parted config: which GPUs, and what to make of them.

    Attributes:
        devices: ``"all"`` or GPU indices.
        mig_enabled: The MIG mode to set.
        mig_devices: ``(profile, count)`` pairs as written, zero counts kept.
        device_filter: PCI ids as written (``0x20B010DE``, optionally with
            ``:0xSSSSVVVV``); empty matches every GPU.
        line: The entry's line in the file (1-based), for messages.
    """

    devices: str | tuple[int, ...]
    mig_enabled: bool
    mig_devices: tuple[tuple[str, int], ...] = ()
    device_filter: tuple[str, ...] = ()
    line: int = 0

    def counts(self) -> dict[str, int]:
        """``{profile: count}`` without zero counts."""
        out: dict[str, int] = {}
        for name, n in self.mig_devices:
            if n:
                out[name] = out.get(name, 0) + n
        return out

    def applies_to(self, gpu_index: int, pci_device_id: int) -> bool:
        """Whether this entry selects the GPU (its index and its PCI device id).

        A filter's optional subsystem part (``:0xSSSSVVVV``) is not compared:
        migperf matches on the device id (``0x20B010DE``) only.
        """
        if self.device_filter and not any(
            int(f.split(":", 1)[0], 16) == pci_device_id for f in self.device_filter
        ):
            return False
        return self.devices == "all" or gpu_index in self.devices


@dataclass(frozen=True)
class MigPartedConfig:
    """A validated mig-parted file.

    Attributes:
        source: Where it came from (a path, or a label for text).
        configs: Entries by configuration name, in file order.
    """

    source: str
    configs: dict[str, tuple[MigPartedEntry, ...]] = field(hash=False)

    @property
    def names(self) -> list[str]:
        """The configuration names, in file order."""
        return list(self.configs)


# -------------------------------------------------------------------- loading


class _Doc:
    """Turns YAML nodes into values, with ``file:line: field`` errors."""

    def __init__(self, source: str, loader: yaml.SafeLoader) -> None:
        self.source = source
        self.loader = loader

    def error(self, node: yaml.Node, where: str, problem: str) -> ConfigError:
        line = node.start_mark.line + 1
        prefix = f"{self.source}:{line}: " + (f"{where}: " if where else "")
        return ConfigError(prefix + problem, hint=_HINT)

    def value(self, node: yaml.Node) -> Any:
        return construct(self.loader, node, self.source, _HINT)

    def mapping(self, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, where, f"expected a mapping, got {_kind(self.value(node))}")
        out: list[tuple[str, yaml.Node, yaml.Node]] = []
        seen: set[str] = set()
        for knode, vnode in node.value:
            key = self.value(knode)
            if not isinstance(key, str):
                raise self.error(knode, where, f"key {key!r} is not a string")
            if key in seen:
                raise self.error(knode, where, f"duplicate key {key!r}")
            seen.add(key)
            out.append((key, knode, vnode))
        return out


def _big(n: int) -> str:
    """A count for a message; a huge one by its size (``str()`` of it may itself fail)."""
    return str(n) if n < 10**30 else f"about 10**{int(n.bit_length() * 0.30103)}"


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, list):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def load_migparted(text_or_path: str | Path, *, source: str | None = None) -> MigPartedConfig:
    """Load and validate a mig-parted config.

    Args:
        text_or_path: The YAML text, or a :class:`~pathlib.Path` to read.
        source: Name used in messages; defaults to the path, or ``<config>``.

    Raises:
        ConfigError: the file cannot be read, is not YAML, or breaks a rule of
            the v1 format: version other than ``v1``; unknown keys; ``devices``
            not ``all`` or a list of GPU indices; ``mig-enabled`` missing or not
            a boolean; ``mig-devices`` missing when enabled or non-empty when
            disabled; counts that are negative or all zero; profile names or
            ``device-filter`` ids of the wrong form. The message quotes
            ``file:line: field``.
    """
    if isinstance(text_or_path, Path):
        src = source or str(text_or_path)
        text = read_text(
            text_or_path, what="mig-parted config ", hint="check the path and its permissions"
        )
    else:
        src = source or "<config>"
        text = text_or_path
    with composed(text, src, _HINT) as (loader, root):
        return _load(_Doc(src, loader), root)


def _load(doc: _Doc, root: yaml.Node) -> MigPartedConfig:
    top = doc.mapping(root, "")
    keys = {k: (kn, vn) for k, kn, vn in top}
    for k, kn, _ in top:
        if k not in _TOP_KEYS:
            raise doc.error(
                kn, "", f"unexpected top-level field {k!r} (expected version, mig-configs)"
            )
    if "version" not in keys:
        raise doc.error(root, "", "missing required field 'version' (it must be v1)")
    vnode = keys["version"][1]
    version = doc.value(vnode)
    if version != VERSION:
        raise doc.error(vnode, "version", f'unknown version {version!r}; only "v1" is supported')
    if "mig-configs" not in keys:
        raise doc.error(root, "", "missing required field 'mig-configs'")
    knode, cnode = keys["mig-configs"]
    labels = doc.mapping(cnode, "mig-configs")
    if not labels:
        raise doc.error(knode, "mig-configs", "at least one configuration is required")
    configs: dict[str, tuple[MigPartedEntry, ...]] = {}
    for label, lknode, lnode in labels:
        where = f"mig-configs.{label}"
        if not isinstance(lnode, yaml.SequenceNode):
            raise doc.error(
                lknode, where, f"expected a list of entries, got {_kind(doc.value(lnode))}"
            )
        if not lnode.value:
            raise doc.error(lknode, where, "at least one entry is required")
        configs[label] = tuple(
            _entry(doc, enode, f"{where}[{i}]") for i, enode in enumerate(lnode.value)
        )
    return MigPartedConfig(doc.source, configs)


def _entry(doc: _Doc, node: yaml.Node, where: str) -> MigPartedEntry:
    fields = doc.mapping(node, where)
    by_key = {k: (kn, vn) for k, kn, vn in fields}
    for k, kn, _ in fields:
        if k not in _ENTRY_KEYS:
            raise doc.error(
                kn, where, f"unexpected field {k!r} (expected {', '.join(_ENTRY_KEYS)})"
            )
    for required in ("devices", "mig-enabled"):
        if required not in by_key:
            raise doc.error(node, where, f"missing required field {required!r}")

    dnode = by_key["devices"][1]
    raw = doc.value(dnode)
    devices: str | tuple[int, ...]
    if raw == "all":
        devices = "all"
    elif isinstance(raw, list) and all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in raw
    ):
        devices = tuple(raw)
    else:
        raise doc.error(
            dnode, f"{where}.devices", f'expected "all" or a list of GPU indices, got {_kind(raw)}'
        )

    enode = by_key["mig-enabled"][1]
    enabled = doc.value(enode)
    if not isinstance(enabled, bool):
        raise doc.error(
            enode, f"{where}.mig-enabled", f"expected true or false, got {_kind(enabled)}"
        )

    mig_devices: list[tuple[str, int]] = []
    if "mig-devices" in by_key:
        mknode, mnode = by_key["mig-devices"]
        mwhere = f"{where}.mig-devices"
        if isinstance(mnode, yaml.ScalarNode) and doc.value(mnode) is None:
            pairs: list[tuple[str, yaml.Node, yaml.Node]] = []
            missing = True
        else:
            pairs = doc.mapping(mnode, mwhere)
            missing = False
        for name, pknode, cnode in pairs:
            if not _PROFILE_RE.match(name):
                raise doc.error(
                    pknode,
                    mwhere,
                    f"{name!r} is not a MIG profile name like 1g.10gb, 3g.40gb+me or 1c.3g.40gb",
                )
            m = _PROFILE_RE.match(name)
            assert m is not None
            if m.group(1) is not None and int(m.group(1)) > int(m.group(2)):
                raise doc.error(
                    pknode,
                    mwhere,
                    f"{name!r}: a compute instance cannot be larger than its GPU instance",
                )
            count = doc.value(cnode)
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise doc.error(
                    cnode, f"{mwhere}.{name}", f"expected a count >= 0, got {_kind(count)}"
                )
            if count > MAX_COUNT:
                # Refused here: a layout of 10**20 instances would be built
                # (and overflow) long before the solver could say it does not fit.
                raise doc.error(
                    cnode,
                    f"{mwhere}.{name}",
                    f"{_big(count)} instances is more than a GPU can hold "
                    f"(at most {MAX_COUNT} per profile; a GPU has at most 8 slices)",
                )
            mig_devices.append((name.lower(), count))
        if enabled and missing:
            raise doc.error(
                mknode, where, "missing required field 'mig-devices' when 'mig-enabled' is true"
            )
        if not enabled and mig_devices:
            raise doc.error(mknode, where, "MIG devices included when 'mig-enabled' is false")
        if mig_devices and not any(n for _, n in mig_devices):
            raise doc.error(mknode, mwhere, "all counts for all MIG profiles are 0")
        total = sum(n for _, n in mig_devices)
        if total > MAX_COUNT:
            raise doc.error(
                mknode,
                mwhere,
                f"{total} MIG devices in all is more than a GPU can hold (at most {MAX_COUNT})",
            )
    elif enabled:
        raise doc.error(
            node, where, "missing required field 'mig-devices' when 'mig-enabled' is true"
        )

    filters: tuple[str, ...] = ()
    if "device-filter" in by_key:
        fnode = by_key["device-filter"][1]
        raw = doc.value(fnode)
        values = [raw] if isinstance(raw, str) else raw
        if not isinstance(values, list) or not all(isinstance(f, str) for f in values):
            quote = (
                " (quote the ids: YAML reads 0x20B010DE as a number)"
                if any(
                    isinstance(f, int) for f in (values if isinstance(values, list) else [values])
                )
                else ""
            )
            raise doc.error(
                fnode,
                f"{where}.device-filter",
                f'expected a PCI id string like "0x20B010DE" or a list of them, got {_kind(raw)}'
                + quote,
            )
        for f in values:
            if not _FILTER_RE.match(f):
                raise doc.error(
                    fnode,
                    f"{where}.device-filter",
                    f'{f!r} is not a PCI id of the form "0xDDDDVVVV" (e.g. "0x20B010DE"); '
                    "quote it, or YAML reads it as a number",
                )
        filters = tuple(values)

    return MigPartedEntry(
        devices=devices,
        mig_enabled=enabled,
        mig_devices=tuple(mig_devices),
        device_filter=filters,
        line=node.start_mark.line + 1,
    )


def select_config(cfg: MigPartedConfig, name: str | None) -> list[MigPartedEntry]:
    """The entries of one configuration.

    Args:
        cfg: The loaded file.
        name: The configuration name; may be None only if the file has one.

    Raises:
        ConfigError: no name given and the file has several, or no such name.
    """
    names = ", ".join(cfg.names)
    if name is None:
        if len(cfg.configs) == 1:
            return list(next(iter(cfg.configs.values())))
        raise ConfigError(
            f"{cfg.source} has {len(cfg.configs)} MIG configurations; choose one of: {names}",
            hint="name the configuration to apply (mig-parted's -c)",
        )
    if name not in cfg.configs:
        raise ConfigError(
            f"{cfg.source} has no MIG configuration named {name!r}; it has: {names}",
            hint="name one of the listed configurations",
        )
    return list(cfg.configs[name])


def layout_from_counts(counts: Mapping[str, int]) -> LayoutSpec:
    """The GPU instances a ``mig-devices`` map describes.

    Whole-GPU-instance names (``3g.40gb``) give one instance each. Compute
    instance names (``2c.3g.40gb``, ``1c.3g.40gb``) are packed into as few
    GPU instances of their profile as possible, largest first, first fit.

    Raises:
        UsageError: a name is not a MIG profile name.
    """
    whole: list[InstanceSpec] = []
    split: dict[str, list[int]] = {}
    gi_slices: dict[str, int] = {}
    for name, count in counts.items():
        m = _PROFILE_RE.match(name)
        if m is None:
            raise UsageError(
                f"{name!r} is not a MIG profile name like 1g.10gb or 1c.3g.40gb",
                hint="see `migperf mig profiles`",
            )
        if count <= 0:
            continue
        if count > MAX_COUNT:
            raise UsageError(
                f"{count} {name} instances is more than a GPU can hold (at most {MAX_COUNT})",
                hint="a GPU has at most 8 MIG slices; see `migperf mig profiles`",
            )
        c, g = m.group(1), int(m.group(2))
        gi = name.lower().split(".", 1)[1] if c is not None else name.lower()
        if c is None or int(c) >= g:
            whole += [InstanceSpec(gi)] * count
        else:
            split.setdefault(gi, []).extend([int(c)] * count)
            gi_slices[gi] = g
    for gi, sizes in split.items():
        bins: list[list[int]] = []
        for c in sorted(sizes, reverse=True):
            for b in bins:
                if place_compute_instances(gi_slices[gi], [*b, c]) is not None:
                    b.append(c)
                    break
            else:
                bins.append([c])
        whole += [InstanceSpec(gi, None, tuple(b)) for b in bins]
    return LayoutSpec(tuple(whole)).canonical()


def layout_for_gpu(
    entries: Sequence[MigPartedEntry], gpu_index: int, pci_device_id: int
) -> tuple[bool, LayoutSpec] | None:
    """What a configuration asks of one GPU.

    When several entries select the GPU, the last one wins: mig-parted applies
    every matching entry in file order, so the last one is what remains.

    Args:
        entries: From :func:`select_config`.
        gpu_index: The GPU's index.
        pci_device_id: Its PCI device id (``0x20B010DE``), for ``device-filter``.

    Returns:
        ``(mig_enabled, layout)``, or None when no entry selects this GPU.

    Raises:
        UsageError: a ``mig-devices`` name is malformed (not possible for
            entries from :func:`load_migparted`).
    """
    chosen = None
    for entry in entries:
        if entry.applies_to(gpu_index, pci_device_id):
            chosen = entry
    if chosen is None:
        return None
    if not chosen.mig_enabled:
        return (False, LayoutSpec())
    return (True, layout_from_counts(chosen.counts()))


# -------------------------------------------------------------------- export


def migparted_counts(instances: Iterable[tuple[str, Sequence[int] | None]]) -> dict[str, int]:
    """``mig-devices`` counts for GPU instances and their compute-instance sizes.

    Args:
        instances: ``(GI profile name, CI sizes)`` per GPU instance; None
            means one CI spanning the GI. A GI with no CI counts for nothing,
            as in ``nvidia-mig-parted export`` (it counts compute instances).

    Returns:
        e.g. ``{"3g.40gb": 1, "2c.3g.40gb": 1, "1c.3g.40gb": 1}`` for a whole
        3g.40gb plus one split into 2c + 1c.
    """
    out: dict[str, int] = {}
    for name, sizes in instances:
        if sizes is None:
            out[name] = out.get(name, 0) + 1
            continue
        for c in sizes:
            ci = compute_instance_profile_name(c, name)
            out[ci] = out.get(ci, 0) + 1
    return out


def _count_key(name: str) -> tuple[int, int, int, str]:
    m = _PROFILE_RE.match(name)
    if m is None:
        return (0, 0, 0, name)
    g = int(m.group(2))
    c = int(m.group(1)) if m.group(1) else g
    return (-g, -int(m.group(3)), -c, name)


def _q(text: str) -> str:
    # A JSON string is a valid YAML double-quoted scalar; quoting keeps
    # "0x20B010DE" a string (YAML would read it as a number).
    return json.dumps(text)


def export_migparted(
    per_gpu: Sequence[tuple[int, int, bool, Mapping[str, int]]],
    name: str = "current",
) -> str:
    """YAML text in mig-parted's format for the given GPUs' configurations.

    GPUs are merged as ``nvidia-mig-parted export`` merges them: GPUs with the
    same mode and counts share one entry; ``device-filter`` appears only when
    GPUs of more than one model are present (and never when one entry covers
    everything); ``devices`` becomes ``all`` when an entry covers every GPU its
    filters select.

    Args:
        per_gpu: ``(gpu_index, pci_device_id, mig_enabled, counts)`` per GPU;
            counts as :func:`migparted_counts` makes them.
        name: The configuration name (mig-parted's export uses ``current``).

    Returns:
        The YAML text, ending with a newline.

    Raises:
        UsageError: a GPU has MIG disabled but non-zero counts.
    """
    specs: list[dict[str, Any]] = []
    for gpu_index, pci_id, enabled, counts in per_gpu:
        clean = {k: v for k, v in counts.items() if v}
        if not enabled and clean:
            raise UsageError(
                f"GPU {gpu_index}: MIG is disabled but the export lists MIG devices {clean}",
                hint="export MIG devices only for GPUs with MIG enabled",
            )
        specs.append(
            {
                "filters": [f"0x{pci_id:08X}"],
                "devices": [gpu_index],
                "enabled": enabled,
                "counts": dict(sorted(clean.items(), key=lambda kv: _count_key(kv[0]))),
            }
        )
    merged: list[dict[str, Any]] = []
    for s in specs:
        for m in merged:
            if m["enabled"] == s["enabled"] and m["counts"] == s["counts"]:
                m["devices"] = sorted(set(m["devices"]) | set(s["devices"]))
                m["filters"] = sorted(set(m["filters"]) | set(s["filters"]))
                break
        else:
            merged.append(dict(s))
    by_filter: dict[str, set[int]] = {}
    for s in specs:
        by_filter.setdefault(s["filters"][0], set()).update(s["devices"])
    for m in merged:
        covered = set().union(*(by_filter[f] for f in m["filters"]))
        m["all"] = set(m["devices"]) == covered
        m["show_filter"] = len(by_filter) > 1 and len(merged) > 1

    label = name if _PLAIN_RE.match(name) and yaml.safe_load(name) == name else _q(name)
    lines = ["version: v1", "mig-configs:", f"  {label}:"]
    for m in merged:
        body: list[str] = []
        if m["show_filter"]:
            fs = m["filters"]
            body.append(
                "device-filter: " + (_q(fs[0]) if len(fs) == 1 else f"[{', '.join(map(_q, fs))}]")
            )
        body.append("devices: " + ("all" if m["all"] else f"[{', '.join(map(str, m['devices']))}]"))
        body.append(f"mig-enabled: {'true' if m['enabled'] else 'false'}")
        if m["counts"]:
            body.append("mig-devices:")
            body += [f"  {_q(k)}: {v}" for k, v in m["counts"].items()]
        else:
            body.append("mig-devices: {}")
        lines += [("  - " if i == 0 else "    ") + text for i, text in enumerate(body)]
    return "\n".join(lines) + "\n"
