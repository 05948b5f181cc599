"""What a report reads from a results store: one frame of runs, ready to plot.

:func:`load_report_data` reads the wide frame of :func:`migperf.results.load`
(one row per run, one column per metric) and adds the columns every plot and
table needs, parsed once from the run's ``params`` and ``environment`` JSON:

* ``sharing`` (``exclusive``, ``mig``, ``mps``, ``timeslice``), ``role``
  (``job``, ``neighbor``, ``baseline``), ``slot``, ``group_id``,
  ``group_size``;
* ``model_args`` as canonical JSON (so runs group by it), ``scenario`` (the
  scenario's name, or None), ``scenario_json`` (the whole scenario spec, canonical),
  ``find_max_qps``;
* ``migperf_version`` (from the worker's environment record);
* ``profile_label`` (``3g.40gb``, or ``MIG off`` for a whole GPU) and
  ``compute_slices``: the compute slices a run had, from the profile name
  (``3g.40gb`` -> 3, ``1c.7g.80gb`` -> 1) or, with MIG off, the GPU's full
  count from :mod:`migperf.nvml.catalog` (7 on A100/H100, 4 on A30).

Filters (``--filter key=value``) apply to any of the run columns and the
derived ones above; repeating a key means "any of these values". The raw
latency samples stay in the store and are read on demand
(:meth:`ReportData.latency_samples`), since a store can hold millions.

Nothing here imports matplotlib: ``migperf compare`` uses this module too.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.errors import UsageError
from migperf.results.frames import RUN_COLUMNS
from migperf.results.store import decode_params

if TYPE_CHECKING:
    import pandas as pd

#: Columns a report derives from ``params`` and ``environment`` (filterable too).
DERIVED_COLUMNS = (
    "sharing",
    "role",
    "slot",
    "group_id",
    "group_size",
    "model_args",
    "scenario",
    "scenario_json",
    "find_max_qps",
    "migperf_version",
    "profile_label",
    "compute_slices",
)

#: Label of a whole GPU with MIG disabled (``profile`` is NULL in the store).
MIG_OFF = "MIG off"

_PROFILE_RE = re.compile(r"^(?:(\d+)c\.)?(\d+)g\.(\d+)gb", re.IGNORECASE)


def full_gpu_slices(gpu_name: str | None) -> int:
    """Compute slices of a whole GPU: its largest MIG profile's (7 on A100/H100, 4 on A30).

    Looked up in :mod:`migperf.nvml.catalog` by the GPU's marketing name; a GPU
    the catalog does not know counts as 7 (every 8-slice MIG GPU has 7 compute
    slices), or 4 when its name says A30.
    """
    from migperf.nvml.catalog import MODELS

    for model in MODELS.values():
        if gpu_name and model.name == gpu_name and model.mig_capable and model.profiles:
            return model.full_profile.compute_slices
    if gpu_name and re.search(r"\bA30\b", gpu_name):
        return 4
    return 7


def compute_slices(profile: str | None, gpu_name: str | None) -> int | None:
    """Compute slices of a run's slot: ``3g.40gb`` -> 3, ``1c.7g.80gb`` -> 1, MIG off -> full.

    Returns None for a profile name migperf cannot parse.
    """
    if profile is None or (isinstance(profile, float) and math.isnan(profile)):
        return full_gpu_slices(gpu_name)
    m = _PROFILE_RE.match(str(profile))
    if m is None:
        return None
    return int(m.group(1) or m.group(2))


def uses_seq_len(workload: Any) -> bool:
    """Whether a workload's sequence length matters (language models, and unknown ones)."""
    from migperf.bench.workloads import workload_info
    from migperf.errors import MigperfError

    try:
        return workload_info(str(workload)).family == "language"
    except MigperfError:
        return True


def profile_sort_key(label: str, slices: int | None = None) -> tuple[int, int, str]:
    """Order profiles small to large: by compute slices, then memory; MIG off last."""
    if label == MIG_OFF:
        return (10_000, 0, label)
    m = _PROFILE_RE.match(label)
    if m is None:
        return (slices or 9_999, 0, label)
    return (int(m.group(1) or m.group(2)), int(m.group(3)), label)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def parse_filters(items: Sequence[str]) -> dict[str, list[str]]:
    """``["workload=bert-base", "profile=1g.10gb", "profile=3g.40gb"]`` -> key: values.

    Raises:
        UsageError: an item is not ``key=value``, or names a column runs do not have.
    """
    known = set(RUN_COLUMNS) | set(DERIVED_COLUMNS)
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"--filter {item!r} is not key=value",
                hint="e.g. --filter workload=resnet50 --filter profile=1g.10gb",
            )
        if key not in known:
            raise UsageError(
                f"cannot filter on {key!r}",
                hint="filter on: " + ", ".join(sorted(known)),
            )
        out.setdefault(key, []).append(value.strip())
    return out


def _text(value: Any) -> str:
    """A cell as a filter compares it: ``1.0`` -> ``1``, None/NaN -> ``None``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


def _wanted(values: Iterable[str]) -> set[str]:
    out: set[str] = set()
    for v in values:
        low = v.lower()
        if low in _TRUE:
            out.update({v, "true"})
        elif low in _FALSE:
            out.update({v, "false"})
        elif low in ("none", "null", ""):
            out.add("None")
        else:
            out.add(v)
    return out


@dataclass
class ReportData:
    """The runs of a store a report covers, with derived columns.

    Attributes:
        path: The store.
        runs: One row per run (every status), run columns + metrics + derived columns.
        raw: The same rows with only the store's own columns (what library
            functions such as ``interference_table`` expect).
        filters: The filters applied.
    """

    path: Path
    runs: pd.DataFrame
    raw: pd.DataFrame
    filters: dict[str, list[str]] = field(default_factory=dict)
    _samples: dict[int, list[float]] | None = None

    def latency_samples(self, run_id: int) -> list[float]:
        """Raw per-iteration (or per-query) latencies of one run, in ms."""
        if self._samples is None:
            self._samples = read_samples(self.path, [int(r) for r in self.runs["run_id"]])
        return self._samples.get(int(run_id), [])

    @property
    def ok(self) -> pd.DataFrame:
        """Runs that finished with status ``ok``."""
        return self.runs[self.runs["status"] == "ok"]

    @property
    def not_ok(self) -> pd.DataFrame:
        """Failed, crashed, OOM, timed-out, skipped runs: every status but ``ok``."""
        return self.runs[self.runs["status"] != "ok"]


def read_samples(
    path: Path, run_ids: Sequence[int], kind: str = "latency_ms"
) -> dict[int, list[float]]:
    """Raw samples of several runs (``samples`` table), keyed by run id."""
    from migperf.results.store import ResultsStore

    wanted = set(run_ids)
    out: dict[int, list[float]] = {}
    with ResultsStore(path, read_only=True) as store:
        for row in store.query("SELECT run_id, values_json FROM samples WHERE kind=?", (kind,)):
            if row["run_id"] in wanted:
                values = json.loads(row["values_json"])
                out[int(row["run_id"])] = [float(v) for v in values if v is not None]
    return out


def enrich(frame: pd.DataFrame, environments: Mapping[int, str]) -> pd.DataFrame:
    """Add :data:`DERIVED_COLUMNS` to a wide frame of runs.

    Args:
        frame: ``migperf.results.load(path, wide=True)``.
        environments: run_id -> the run's environment JSON.
    """
    frame = frame.copy()
    params = [decode_params(p) for p in frame["params"]]
    envs = [decode_params(environments.get(int(r))) for r in frame["run_id"]]

    def col(key: str, default: Any = None) -> list[Any]:
        return [p.get(key, default) if p.get(key) is not None else default for p in params]

    frame["sharing"] = col("sharing", "exclusive")
    frame["role"] = col("role", "job")
    frame["slot"] = col("slot")
    frame["group_id"] = col("group_id")
    frame["group_size"] = col("group_size", 1)
    frame["model_args"] = [_canonical(p.get("model_args") or {}) for p in params]
    scenarios = [p.get("scenario") if isinstance(p.get("scenario"), dict) else None for p in params]
    frame["scenario"] = [s.get("name") if s else None for s in scenarios]
    frame["scenario_json"] = [_canonical(s) if s else None for s in scenarios]
    frame["find_max_qps"] = [bool(s and s.get("find_max_qps")) for s in scenarios]
    frame["migperf_version"] = [e.get("migperf_version") for e in envs]
    profiles = [None if _text(p) == "None" else str(p) for p in frame["profile"]]
    frame["profile_label"] = [p if p is not None else MIG_OFF for p in profiles]
    frame["compute_slices"] = [
        compute_slices(p, g) for p, g in zip(profiles, frame["gpu_name"], strict=True)
    ]
    return frame


def apply_filters(frame: pd.DataFrame, filters: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Rows whose columns match every filter (a key's values: any of them)."""
    mask = [True] * len(frame)
    for key, values in filters.items():
        wanted = _wanted(values)
        mask = [m and _text(v) in wanted for m, v in zip(mask, frame[key].tolist(), strict=True)]
    return frame.iloc[[i for i, keep in enumerate(mask) if keep]]


def load_report_data(
    path: Path | str, filters: Mapping[str, Sequence[str]] | None = None
) -> ReportData:
    """The runs of a store (each run's latest attempt), with derived columns, filtered.

    Args:
        path: The SQLite results store.
        filters: Column -> accepted values (see :func:`parse_filters`).

    Raises:
        UsageError: no store at ``path``, the store holds no runs, or no run
            matches the filters.
    """
    from migperf.results import load
    from migperf.results.store import ResultsStore

    p = Path(path)
    wide = load(p, wide=True)
    if wide.empty and not chosen_or_none(filters) and _has_compat(p):
        # A store that holds only `migperf compat` matrices: a report of those.
        return ReportData(path=p, runs=enrich(wide, {}), raw=wide, filters={})
    if wide.empty:
        raise UsageError(
            f"the results store {p} holds no runs",
            hint=f"run an experiment into it first: `migperf run CONFIG --results {p}`",
        )
    with ResultsStore(p, read_only=True) as store:
        envs = {
            int(r["run_id"]): r["environment"]
            for r in store.query("SELECT run_id, environment FROM latest_runs")
        }
    everything = enrich(wide, envs)
    runs = everything
    chosen = {k: list(v) for k, v in (filters or {}).items()}
    if chosen:
        runs = apply_filters(everything, chosen)
        if runs.empty:
            shown = " ".join(f"{k}={v}" for k, vs in chosen.items() for v in vs)
            options = "; ".join(
                f"{k}: " + ", ".join(sorted({_text(v) for v in everything[k]})[:12]) for k in chosen
            )
            raise UsageError(
                f"no run in {p} matches --filter {shown}",
                hint=f"values in the store: {options}",
            )
    runs = runs.reset_index(drop=True)
    raw = wide[wide["run_id"].isin(runs["run_id"])].reset_index(drop=True)
    return ReportData(path=p, runs=runs, raw=raw, filters=chosen)


def chosen_or_none(filters: Mapping[str, Sequence[str]] | None) -> bool:
    """Whether any filter was given."""
    return bool(filters) and any(filters.values())  # type: ignore[union-attr]


def _has_compat(p: Path) -> bool:
    from migperf.results.compat import compat_sessions
    from migperf.results.store import ResultsStore

    with ResultsStore(p, read_only=True) as store:
        return bool(compat_sessions(store))


def provenance(rows: pd.DataFrame) -> str:
    """Which GPU, driver and migperf version produced these runs, as one line."""

    def distinct(column: str) -> str:
        if column not in rows.columns:
            return "?"
        values = sorted({str(v) for v in rows[column].tolist() if _text(v) != "None"})
        return " / ".join(values) if values else "?"

    sim = " (simulated)" if "simulated" in rows.columns and bool(rows["simulated"].any()) else ""
    return (
        f"GPU {distinct('gpu_name')}{sim} · driver {distinct('driver_version')}"
        f" · migperf {distinct('migperf_version')}"
    )


def is_missing(value: Any) -> bool:
    """None or NaN."""
    return value is None or (isinstance(value, float) and math.isnan(value))
