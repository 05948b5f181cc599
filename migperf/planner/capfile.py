"""Capacities files: anyone's profiling data as planner capacities (``migperf plan --capacities FILE``).

A capacities file is CSV (a header row, then one row per line; blank lines and
lines starting with ``#`` are skipped) or YAML (a mapping with one list,
``capacities:`` or ``points:``, of mappings with the same column names). It
comes in two forms:

* **capacities** (CSV header with ``capacity_qps``; YAML ``capacities:``):
  ``gpu_model,profile,service,capacity_qps`` and optionally
  ``mps_processes`` (default 1), ``batch_size``, ``latency_ms``, ``source``.
  With ``mps_processes: 1`` the row is the capacity of one MIG instance of
  ``profile`` serving ``service`` within its SLO; with ``k > 1`` the *total*
  capacity of one instance running ``k`` MPS processes of the service.
  ``latency_ms``, when given, may not exceed the service's SLO (the row
  claims a capacity within it);
* **raw points** (CSV header with ``throughput_qps``; YAML ``points:``):
  ``gpu_model,profile,service,batch_size,mps_processes,throughput_qps,latency_ms``
  (and optionally ``source``), one row per measured point, ``latency_ms``
  being the latency at the service's SLO percentile. Per (GPU model, profile,
  service, processes) the planner takes the highest throughput whose latency
  meets the service's SLO, and says which row it took; no such point is a
  measured capacity of zero.

``gpu_model`` is a catalog key (``a100-80gb``) or NVML name; ``profile`` one
of that model's plain MIG profiles (or ``gpu``: the whole GPU, MIG off, for
the no-MIG baseline); ``service`` the ``name`` of a service of the demand.
``source`` is free text kept with the capacity in the plan. Every bad row
(unknown model or profile, a negative or missing number, a service the demand
lacks, the same key given twice with other values) is reported at once, each
as ``file:line: problem``.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from migperf.errors import ConfigError
from migperf.nvml.catalog import MODELS
from migperf.planner.capacity import model_for_gpu_name
from migperf.planner.demand import MAX_MPS_PROCESSES, DemandSpec, ServiceSpec
from migperf.planner.table import WHOLE_GPU, CapacityEntry, CapacityTable, Key, MpsKey
from migperf.yamlsource import composed, construct, read_text

__all__ = ["CAPACITY_COLUMNS", "RAW_COLUMNS", "load_capacities"]

#: Columns of the capacities form: required, then optional.
CAPACITY_COLUMNS = (
    ("gpu_model", "profile", "service", "capacity_qps"),
    ("mps_processes", "batch_size", "latency_ms", "source"),
)
#: Columns of the raw-points form: required, then optional.
RAW_COLUMNS = (
    (
        "gpu_model",
        "profile",
        "service",
        "batch_size",
        "mps_processes",
        "throughput_qps",
        "latency_ms",
    ),
    ("source",),
)

_HINT = (
    "see configs/capacities-a100-80gb.csv (capacities) and configs/capacities-raw-example.csv "
    "(raw points), and README.md 'Planning a layout'"
)

Form = Literal["capacities", "raw"]
Problem = tuple[str, int, str]  # file, line, problem


@dataclass(frozen=True)
class _Point:
    """One valid row of a capacities file."""

    file: str
    line: int
    raw: bool
    model: str
    profile: str
    service: str
    processes: int
    batch_size: int | None
    value: float  # capacity_qps, or throughput_qps of a raw point
    latency_ms: float | None
    source: str

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def key(self) -> MpsKey:
        return (self.model, self.profile, self.service, self.processes)


# ------------------------------------------------------------------ reading


@dataclass
class _Rows:
    """A file's rows as column -> value, with each row's line and the file's form."""

    form: Form | None
    rows: list[tuple[int, dict[str, Any]]]
    problems: list[Problem]


def _form_of(columns: Sequence[str]) -> tuple[Form | None, str]:
    has_cap, has_raw = "capacity_qps" in columns, "throughput_qps" in columns
    if has_cap and has_raw:
        return None, "give capacity_qps (capacities) or throughput_qps (raw points), not both"
    if not has_cap and not has_raw:
        return None, (
            "no capacity_qps column (capacities form) and no throughput_qps column "
            "(raw-points form)"
        )
    return ("capacities" if has_cap else "raw"), ""


def _check_columns(form: Form, columns: Sequence[str]) -> str:
    required, optional = CAPACITY_COLUMNS if form == "capacities" else RAW_COLUMNS
    problems = []
    missing = [c for c in required if c not in columns]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    unknown = [c for c in columns if c not in required and c not in optional]
    if unknown:
        problems.append(
            f"unknown column(s) {', '.join(unknown)}; the {form} form has "
            f"{', '.join(required)} and optionally {', '.join(optional)}"
        )
    dup = sorted({c for c in columns if columns.count(c) > 1})
    if dup:
        problems.append(f"column(s) {', '.join(dup)} given twice")
    return "; ".join(problems)


def _read_csv(text: str, source: str) -> _Rows:
    out = _Rows(None, [], [])
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    header: list[str] | None = None
    try:
        for cells in reader:
            line = reader.line_num
            if not any(c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = [c.strip().lower() for c in cells]
                form, why = _form_of(header)
                if form is not None:
                    why = _check_columns(form, header)
                if why:
                    out.problems.append((source, line, f"header: {why}"))
                    return out
                out.form = form
                continue
            if len(cells) != len(header):
                out.problems.append(
                    (source, line, f"{len(cells)} value(s); the header has {len(header)} columns")
                )
                continue
            out.rows.append((line, {h: c.strip() for h, c in zip(header, cells, strict=True)}))
    except csv.Error as exc:
        out.problems.append((source, reader.line_num, f"not valid CSV: {exc}"))
    if header is None:
        out.problems.append((source, 1, "the file has no header row"))
    return out


def _read_yaml(text: str, source: str) -> _Rows:
    out = _Rows(None, [], [])
    with composed(text, source, _HINT) as (loader, root):
        data = construct(loader, root, source, _HINT)
        items = _yaml_items(root)
    lists = [k for k in ("capacities", "points") if isinstance(data, dict) and k in data]
    if not isinstance(data, dict) or len(lists) != 1 or len(data) != 1:
        out.problems.append(
            (
                source,
                1,
                "a capacities file in YAML is a mapping with one list: capacities: or points:",
            )
        )
        return out
    key = lists[0]
    out.form = "capacities" if key == "capacities" else "raw"
    rows = data[key]
    if not isinstance(rows, list):
        out.problems.append((source, items.get(key, (1, []))[0], f"{key} must be a list"))
        return out
    lines = items.get(key, (1, []))[1]
    for i, row in enumerate(rows):
        line = lines[i] if i < len(lines) else 1
        if not isinstance(row, dict):
            out.problems.append((source, line, f"{key}[{i}] must be a mapping of columns"))
            continue
        cols = [str(c).strip().lower() for c in row]
        why = _check_columns(out.form, cols)
        if why:
            out.problems.append((source, line, f"{key}[{i}]: {why}"))
            continue
        out.rows.append((line, {str(c).strip().lower(): v for c, v in row.items()}))
    return out


def _yaml_items(root: yaml.Node) -> dict[str, tuple[int, list[int]]]:
    """Top-level key -> (its line, the line of each item of its list)."""
    out: dict[str, tuple[int, list[int]]] = {}
    if not isinstance(root, yaml.MappingNode):
        return out
    for k, v in root.value:
        if isinstance(k, yaml.ScalarNode):
            items = (
                [n.start_mark.line + 1 for n in v.value] if isinstance(v, yaml.SequenceNode) else []
            )
            out[str(k.value)] = (k.start_mark.line + 1, items)
    return out


def _read(path: Path) -> _Rows:
    text = read_text(path, what="capacities file ", hint=_HINT)
    source = str(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        return _read_yaml(text, source)
    if path.suffix.lower() == ".csv":
        return _read_csv(text, source)
    first = next(
        (ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")),
        "",
    )
    return (
        _read_yaml(text, source)
        if first.startswith(("capacities:", "points:"))
        else _read_csv(text, source)
    )


# ---------------------------------------------------------------- checking


def _number(value: Any, name: str, *, integer: bool = False) -> tuple[float | None, str]:
    """A column's number, or (None, the problem); an empty value is (None, '')."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, ""
    if isinstance(value, bool):
        return None, f"{name} {value!r} is not a number"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None, f"{name} {value!r} is not a number"
    if not math.isfinite(f):
        return None, f"{name} {value!r} is not a finite number"
    if f < 0:
        return None, f"{name} {value} is negative"
    if integer and not f.is_integer():
        return None, f"{name} {value} is not a whole number"
    return f, ""


def _model(value: Any) -> tuple[str | None, str]:
    text = str(value or "").strip()
    if text.lower() in MODELS:
        return text.lower(), ""
    key = model_for_gpu_name(text)
    if key is not None:
        return key, ""
    return None, f"unknown GPU model {text!r}; the catalog has {', '.join(MODELS)}"


def _profile(model: str, value: Any) -> tuple[str | None, str]:
    from migperf.mig.solver import is_media_variant

    name = str(value or "").strip().lower()
    if name == WHOLE_GPU:
        return name, ""
    profiles = {p.name.lower(): p for p in MODELS[model].profiles}
    fact = profiles.get(name)
    plain = [p.name for p in MODELS[model].profiles if not is_media_variant(p.to_profile())]
    if fact is None:
        have = ", ".join(plain) if plain else "no MIG profiles"
        return None, f"{model} has no profile {name!r}; it has {have} (and {WHOLE_GPU}: MIG off)"
    if is_media_variant(fact.to_profile()):
        return (
            None,
            f"{name}: media-engine and graphics variants are not planned; use the plain profile",
        )
    return fact.name, ""


def _point(
    form: Form, source: str, line: int, row: dict[str, Any], demand: DemandSpec
) -> tuple[_Point | None, list[str]]:
    problems: list[str] = []
    model, why = _model(row.get("gpu_model"))
    if why:
        problems.append(why)
    profile = None
    if model is not None:
        profile, why = _profile(model, row.get("profile"))
        if why:
            problems.append(why)
    name = str(row.get("service") or "").strip()
    services = {s.name: s for s in demand.services}
    svc = services.get(name)
    if svc is None:
        if any(t.name == name for t in demand.training):
            problems.append(f"{name!r} is a training job; capacities files give services only")
        else:
            problems.append(
                f"service {name!r} is not in the demand (its services: {', '.join(services) or 'none'})"
            )
    raw = form == "raw"
    value_col = "throughput_qps" if raw else "capacity_qps"
    nums: dict[str, float | None] = {}
    for col, integer in (
        (value_col, False),
        ("mps_processes", True),
        ("batch_size", True),
        ("latency_ms", False),
    ):
        nums[col], why = _number(row.get(col), col, integer=integer)
        if why:
            problems.append(why)
        elif nums[col] is None and (col == value_col or raw):
            problems.append(f"{col}: required value is missing")
    k = int(nums["mps_processes"] or 1)
    if nums["mps_processes"] is not None and not 1 <= k <= MAX_MPS_PROCESSES:
        problems.append(f"mps_processes {k} is not in 1..{MAX_MPS_PROCESSES}")
    if nums["batch_size"] is not None and nums["batch_size"] < 1:
        problems.append("batch_size 0 is not a batch size")
    if nums["latency_ms"] == 0:
        problems.append("latency_ms 0 is not a latency")
    if profile == WHOLE_GPU and k > 1:
        problems.append("MPS on a whole GPU (MIG off) is not planned; give a MIG profile")
    lat = nums["latency_ms"]
    if not raw and svc is not None and lat is not None and lat > svc.slo.latency_ms * (1 + 1e-9):
        problems.append(
            f"latency_ms {lat:g} is over service {name}'s SLO ({svc.slo}): the row's capacity "
            "does not hold the SLO; drop the row, or give the raw-points form and let the "
            "planner pick"
        )
    if problems or model is None or profile is None or svc is None:
        return None, problems
    value = nums[value_col]
    assert value is not None
    return (
        _Point(
            file=source,
            line=line,
            raw=raw,
            model=model,
            profile=profile,
            service=name,
            processes=k,
            batch_size=None if nums["batch_size"] is None else int(nums["batch_size"]),
            value=value,
            latency_ms=lat,
            source=str(row.get("source") or "").strip(),
        ),
        [],
    )


def _dedupe(points: Sequence[_Point]) -> tuple[list[_Point], list[Problem]]:
    """Drop exact repeats; report repeats that disagree, and a key given in both forms."""
    problems: list[Problem] = []
    kept: dict[tuple[Any, ...], _Point] = {}
    forms: dict[MpsKey, _Point] = {}
    for pt in points:
        # A raw point is one (batch size) measurement; a capacity row is the key's one value.
        key: tuple[Any, ...] = (*pt.key, pt.batch_size) if pt.raw else pt.key
        other = forms.get(pt.key)
        if other is not None and other.raw != pt.raw:
            problems.append(
                (
                    pt.file,
                    pt.line,
                    f"{_describe(pt)} is given as a {'raw point' if pt.raw else 'capacity'} here "
                    f"and as a {'raw point' if other.raw else 'capacity'} at {other.where}; "
                    "give one form per key",
                )
            )
            continue
        forms.setdefault(pt.key, pt)
        first = kept.get(key)
        if first is None:
            kept[key] = pt
            continue
        if (first.value, first.latency_ms) == (pt.value, pt.latency_ms):
            continue  # the same measurement twice (files concatenated): harmless
        what = (
            f"throughput {pt.value:g} QPS at {pt.latency_ms:g} ms here, {first.value:g} QPS at "
            f"{first.latency_ms:g} ms at {first.where}"
            if pt.raw and pt.latency_ms is not None and first.latency_ms is not None
            else f"{pt.value:g} QPS here, {first.value:g} QPS at {first.where}"
        )
        hint = "" if pt.raw else "; to let the planner choose among batch sizes, give raw points"
        problems.append(
            (pt.file, pt.line, f"{_describe(pt)} is given again with another value ({what}){hint}")
        )
    return list(kept.values()), problems


def _describe(pt: _Point, batch: bool = True) -> str:
    text = f"{pt.service} on {pt.profile} ({pt.model})"
    if pt.processes > 1:
        text += f" with {pt.processes} MPS processes"
    if batch and pt.raw and pt.batch_size is not None:
        text += f" at batch {pt.batch_size}"
    return text


# ---------------------------------------------------------------- the table


def _origin(pt: _Point) -> str:
    return pt.where + (f" ({pt.source})" if pt.source else "")


def _entry(pt: _Point, svc: ServiceSpec, base: float, origin: str) -> CapacityEntry:
    return CapacityEntry(
        model=pt.model,
        profile=pt.profile,
        job=pt.service,
        kind="infer",
        base=base,
        runs=1,
        measured_slo_ms=svc.slo.latency_ms,
        processes=pt.processes,
        batch_size=pt.batch_size,
        latency_ms=pt.latency_ms,
        origin=origin,
        from_file=True,
    )


def _from_raw(
    points: Sequence[_Point], svc: ServiceSpec
) -> tuple[CapacityEntry, tuple[float, str, str] | None]:
    """The capacity of one (model, profile, service, processes) from its raw points."""
    slo = svc.slo.latency_ms * (1 + 1e-9)
    within = [p for p in points if p.latency_ms is not None and p.latency_ms <= slo]
    over = [p for p in points if p not in within]
    lats = [(p.latency_ms, p) for p in points if p.latency_ms is not None]
    fastest = min(lats, key=lambda lp: lp[0]) if lats else None
    low = (fastest[0], fastest[1].model, fastest[1].profile) if fastest else None
    if not within:
        lines = ", ".join(str(p.line) for p in points)
        lowest = f"; the lowest latency is {fastest[0]:g} ms" if fastest else ""
        origin = (
            f"{points[0].file}: none of {len(points)} raw point(s) (line(s) {lines}) meets "
            f"{svc.slo}{lowest}: a measured capacity of zero"
        )
        return _entry(points[0], svc, 0.0, origin), low
    best = max(within, key=lambda p: (p.value, -(p.batch_size or 0), -p.line))
    origin = (
        f"{_origin(best)}: the highest throughput of {len(within)} raw point(s) within "
        f"{svc.slo} (batch {best.batch_size}, {best.latency_ms:g} ms)"
    )
    if over:
        origin += f"; {len(over)} point(s) over the SLO left out (line(s) {', '.join(str(p.line) for p in over)})"
    return _entry(best, svc, best.value, origin), low


def _iter_problems(problems: Sequence[Problem], order: Sequence[str]) -> Iterator[str]:
    rank = {f: i for i, f in enumerate(order)}
    for f, line, msg in sorted(problems, key=lambda p: (rank.get(p[0], 0), p[1])):
        yield f"{f}:{line}: {msg}"


def load_capacities(paths: Sequence[Path], demand: DemandSpec) -> CapacityTable:
    """Read capacities files (CSV or YAML; see the module docstring) into a capacity table.

    Args:
        paths: The files, in the order given.
        demand: The demand: rows name its services, and raw points are
            filtered by their SLOs.

    Returns:
        The table: one-instance capacities in ``entries``, MPS ones in ``mps``,
        each entry's ``origin`` naming its ``file:line`` and ``source``.

    Raises:
        ConfigError: a file cannot be read, is not CSV or YAML of either form,
            or has bad rows; every problem of every file is listed, each as
            ``file:line: problem``.
    """
    problems: list[Problem] = []
    points: list[_Point] = []
    raw_files: list[str] = []
    for path in paths:
        read = _read(path)
        problems += read.problems
        if read.form is None:
            continue
        if read.form == "raw":
            raw_files.append(str(path))
        for line, row in read.rows:
            pt, why = _point(read.form, str(path), line, row, demand)
            problems += [(str(path), line, w) for w in why]
            if pt is not None:
                points.append(pt)
    points, dup = _dedupe(points)
    problems += dup
    if problems:
        listed = list(dict.fromkeys(_iter_problems(problems, [str(p) for p in paths])))
        head = f"{len(listed)} problem(s) in the capacities file(s):\n  " if len(listed) > 1 else ""
        raise ConfigError(head + "\n  ".join(listed), hint=_HINT)

    services = {s.name: s for s in demand.services}
    entries: dict[Key, CapacityEntry] = {}
    mps: dict[MpsKey, CapacityEntry] = {}
    best: dict[str, tuple[float, str, str]] = {}
    groups: dict[MpsKey, list[_Point]] = {}
    for pt in points:
        groups.setdefault(pt.key, []).append(pt)
    left_out: dict[str, int] = {}
    zero: list[str] = []
    for key, pts in groups.items():
        svc = services[key[2]]
        if pts[0].raw:
            entry, low = _from_raw(pts, svc)
            if entry.base == 0.0:
                zero.append(f"{_describe(pts[0], batch=False)}: {entry.origin.split(': ', 1)[1]}")
            for p in pts:
                if (p.latency_ms or 0) > svc.slo.latency_ms * (1 + 1e-9):
                    left_out[p.file] = left_out.get(p.file, 0) + 1
        else:
            entry = _entry(pts[0], svc, pts[0].value, _origin(pts[0]))
            lat = pts[0].latency_ms
            low = (lat, pts[0].model, pts[0].profile) if lat is not None else None
        if low is not None and key[3] == 1 and (svc.name not in best or low[0] < best[svc.name][0]):
            best[svc.name] = low
        if key[3] > 1:
            mps[key] = entry
        else:
            entries[key[:3]] = entry
    notes = [
        f"{f}: raw points: per (GPU model, profile, MPS processes) the planner took the highest "
        f"throughput whose latency meets the service's SLO"
        + (f" ({left_out[f]} point(s) over their SLO left out)" if left_out.get(f) else "")
        for f in raw_files
    ]
    notes += zero
    return CapacityTable(entries, best, {}, tuple(notes), mps)
