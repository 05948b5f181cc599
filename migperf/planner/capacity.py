"""The capacity table: what one MIG instance of each profile can serve, measured.

For every (GPU model, MIG profile, service) the planner needs the highest QPS
at which the service's SLO still holds on one instance of that profile; for
every training job, the samples/s one instance reaches. Both come from the
results store (``migperf.results.load(path, wide=True)``, see
``docs/results-schema.md``), never from a guess:

* a service's capacity is the metric ``max_qps_under_slo`` of ``ok`` runs
  with ``task: infer``, the service's workload, precision and batch size
  (``seq_len`` and ``model_args`` too when the service gives them), a server
  scenario with ``find_max_qps``, and ``params.scenario.latency_percentile``
  equal to the service's. The run's ``latency_target_ms`` must be equal to the
  service's or *stricter* (lower): capacity under a stricter SLO is a safe
  lower bound. Among several such targets the one closest to the service's
  is used. ``max_qps_under_slo`` stored as NULL (even the lowest rate missed
  the SLO) is a measured capacity of zero;
* a training job's capacity is the metric ``samples_per_s`` of ``ok`` runs
  with ``task: train`` and the job's workload, precision and batch size.

Only runs alone on their slot count (``params.group_id`` empty); co-located
runs feed :func:`derate_factors` instead. Repeats are reduced to their
median, and the count is kept. Runs of a whole GPU with MIG off are kept
under the profile :data:`WHOLE_GPU` for the no-MIG baseline. Real
measurements win over simulated ones for the same key; simulated ones are
used only when nothing else exists, and are flagged.

With ``--assume-linear`` a missing capacity is estimated from the same
model's nearest measured profile, scaled by SM count; every such value is
labelled ``estimate``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from migperf.nvml.catalog import MODELS, get_model
from migperf.planner.demand import DemandSpec, ServiceSpec, TrainingSpec

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "WHOLE_GPU",
    "CapacityEntry",
    "CapacityTable",
    "MissingCapacity",
    "capacity_table",
    "derate_factors",
    "model_for_gpu_name",
]

#: The profile name under which whole-GPU (MIG off) capacities are kept.
WHOLE_GPU = "gpu"

Key = tuple[str, str, str]


def model_for_gpu_name(name: str | None) -> str | None:
    """The catalog model key for an NVML GPU name (``NVIDIA A100-SXM4-80GB`` -> ``a100-80gb``).

    Old drivers drop the ``NVIDIA`` prefix; both spellings match.
    """
    if not name:
        return None

    def norm(text: str) -> str:
        return re.sub(r"^nvidia\s+", "", text.strip().lower())

    wanted = norm(name)
    for model in MODELS.values():
        if norm(model.name) == wanted:
            return model.key
    return None


@dataclass(frozen=True)
class CapacityEntry:
    """The capacity of one instance of a profile for one service or training job.

    Attributes:
        model: Catalog model key (``a100-80gb``).
        profile: GPU-instance profile (``3g.40gb``), or :data:`WHOLE_GPU`.
        job: The service or training job name.
        kind: ``infer`` (value in queries/s under the SLO) or ``train`` (samples/s).
        base: The median over repeats (or the estimate), before derating.
        runs: Repeats the median is over (0 for an estimate).
        source: ``measured`` or ``estimate`` (``--assume-linear``).
        measured_slo_ms: Latency target of the runs used (services).
        estimated_from: The measured profile an estimate was scaled from.
        simulated: The runs were on a simulated GPU (workloads on the CPU).
        derate: Co-location factor applied (1.0: none).
    """

    model: str
    profile: str
    job: str
    kind: Literal["infer", "train"]
    base: float
    runs: int
    source: Literal["measured", "estimate"] = "measured"
    measured_slo_ms: float | None = None
    estimated_from: str | None = None
    simulated: bool = False
    derate: float = 1.0

    @property
    def value(self) -> float:
        """The capacity the planner uses: ``base x derate``."""
        return self.base * self.derate

    @property
    def unit(self) -> str:
        """``QPS`` for services, ``samples/s`` for training."""
        return "QPS" if self.kind == "infer" else "samples/s"

    def describe(self) -> str:
        """The value with its provenance, for tables (``812.5 (estimate from 3g.40gb)``)."""
        text = f"{self.value:.1f}"
        if self.source == "estimate":
            text += f" (estimate from {self.estimated_from})"
        if self.derate < 1.0:
            text += f" (derated x{self.derate:.2f})"
        if self.simulated:
            text += " (simulated)"
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {
            "model": self.model,
            "profile": self.profile,
            "job": self.job,
            "kind": self.kind,
            "value": self.value,
            "unit": self.unit,
            "base": self.base,
            "runs": self.runs,
            "source": self.source,
            "measured_slo_ms": self.measured_slo_ms,
            "estimated_from": self.estimated_from,
            "simulated": self.simulated,
            "derate": self.derate,
        }


@dataclass(frozen=True)
class MissingCapacity:
    """A capacity the plan needs and the store does not have.

    Attributes:
        model: Catalog model key.
        profile: The profile.
        job: Service or training job name.
        note: Why, when the store has something close (a looser SLO only).
    """

    model: str
    profile: str
    job: str
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return {"model": self.model, "profile": self.profile, "job": self.job, "note": self.note}


@dataclass(frozen=True)
class CapacityTable:
    """Capacities by (model, profile, job), with what the store said about the rest.

    Attributes:
        entries: ``(model, profile, job) -> entry``.
        best_latency_ms: Per service, the lowest latency at its SLO percentile
            any matching server run measured, with the model and profile:
            what the service can achieve at best, for explanations.
        near_misses: ``(model, profile, job) -> note`` for keys measured only
            under a looser SLO (or another percentile).
        notes: Things the user should know (ignored GPUs, simulated runs).
    """

    entries: Mapping[Key, CapacityEntry] = field(default_factory=dict)
    best_latency_ms: Mapping[str, tuple[float, str, str]] = field(default_factory=dict)
    near_misses: Mapping[Key, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def entry(self, model: str, profile: str, job: str) -> CapacityEntry | None:
        """The entry for a key, or None."""
        return self.entries.get((model, profile, job))

    def value(self, model: str, profile: str, job: str) -> float | None:
        """The capacity for a key (after derating), or None when unknown."""
        e = self.entries.get((model, profile, job))
        return None if e is None else e.value

    def missing(self, needed: Iterable[Key]) -> list[MissingCapacity]:
        """The needed keys without an entry, in the order given."""
        return [
            MissingCapacity(m, p, j, self.near_misses.get((m, p, j), ""))
            for m, p, j in needed
            if (m, p, j) not in self.entries
        ]

    @property
    def has_estimates(self) -> bool:
        """Whether any entry is an ``--assume-linear`` estimate."""
        return any(e.source == "estimate" for e in self.entries.values())

    def with_linear_estimates(self, needed: Iterable[Key]) -> CapacityTable:
        """Fill missing keys from the same model's nearest measured profile, scaled by SMs.

        "Nearest" is the measured profile (whole GPU included) with the
        closest SM count, the larger on a tie. A key whose model has no
        measured profile for that job stays missing.

        Args:
            needed: The keys the plan needs.

        Returns:
            A new table; estimates carry ``source="estimate"``.
        """
        entries = dict(self.entries)
        for m, p, j in needed:
            if (m, p, j) in entries:
                continue
            sources = [
                e
                for e in self.entries.values()
                if e.model == m and e.job == j and e.source == "measured"
            ]
            if not sources:
                continue
            want = _sm_count(m, p)
            src = min(
                sources,
                key=lambda e: (abs(_sm_count(m, e.profile) - want), -_sm_count(m, e.profile)),
            )
            scale = want / _sm_count(m, src.profile)
            entries[(m, p, j)] = CapacityEntry(
                model=m,
                profile=p,
                job=j,
                kind=src.kind,
                base=src.base * scale,
                runs=0,
                source="estimate",
                measured_slo_ms=src.measured_slo_ms,
                estimated_from=src.profile,
                simulated=src.simulated,
                derate=src.derate,
            )
        return replace(self, entries=entries)

    def derated(self, factors: Mapping[Key, float]) -> CapacityTable:
        """The table with co-location factors applied (each clipped to (0, 1]).

        Args:
            factors: ``(model, profile, job) -> normalized progress`` measured
                co-located; keys without a factor keep 1.0.
        """
        entries = dict(self.entries)
        for key, factor in factors.items():
            e = entries.get(key)
            if e is None or not math.isfinite(factor) or factor <= 0:
                continue
            entries[key] = replace(e, derate=min(1.0, float(factor)))
        return replace(self, entries=entries)

    def to_list(self) -> list[dict[str, Any]]:
        """Every entry as plain JSON."""
        return [e.to_dict() for _, e in sorted(self.entries.items())]


def _sm_count(model: str, profile: str) -> int:
    m = get_model(model)
    if profile == WHOLE_GPU:
        return m.full_profile.sm_count
    fact = next((p for p in m.profiles if p.name == profile), None)
    return fact.sm_count if fact is not None else m.full_profile.sm_count


# --------------------------------------------------------------- from a store


def _params(text: Any) -> dict[str, Any]:
    if isinstance(text, dict):
        return text
    try:
        value = json.loads(text) if text else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    if value is None:
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _latency_column(percentile: float) -> str:
    return "latency_p" + f"{percentile:g}".replace(".", "_") + "_ms"


@dataclass
class _Row:
    model: str
    profile: str
    simulated: bool
    values: dict[str, Any]
    params: dict[str, Any]


def _rows(frame: pd.DataFrame) -> tuple[list[_Row], list[str]]:
    rows: list[_Row] = []
    unknown: set[str] = set()
    if frame.empty:
        return rows, []
    for rec in frame.to_dict("records"):
        if rec.get("status") != "ok":
            continue
        params = _params(rec.get("params"))
        if params.get("group_id") or params.get("role") == "neighbor":
            continue  # co-located: derating, not capacity
        model = model_for_gpu_name(rec.get("gpu_name"))
        if model is None:
            if rec.get("gpu_name"):
                unknown.add(str(rec["gpu_name"]))
            continue
        profile = rec.get("profile")
        if profile is None or (isinstance(profile, float) and math.isnan(profile)):
            profile = WHOLE_GPU
        elif re.match(r"^\d+c\.", str(profile)):
            continue  # a compute-instance split: the planner plans whole GPU instances
        rows.append(_Row(model, str(profile), bool(rec.get("simulated")), rec, params))
    return rows, sorted(unknown)


def _same_model(row: _Row, job: ServiceSpec | TrainingSpec) -> bool:
    v = row.values
    if v.get("workload") != job.workload or v.get("task") != job.task:
        return False
    if v.get("precision") != job.precision or _num(v.get("batch_size")) != job.batch_size:
        return False
    if job.seq_len is not None and _num(v.get("seq_len")) != job.seq_len:
        return False
    return job.model_args is None or (row.params.get("model_args") or {}) == job.model_args


def _scenario_slo(row: _Row) -> tuple[float | None, float | None]:
    sc = row.params.get("scenario") or {}
    target = _num(sc.get("latency_target_ms"))
    pct = _num(sc.get("latency_percentile"))
    if target is None:
        target = _num(row.values.get("slo_latency_ms"))
    if pct is None:
        pct = _num(row.values.get("slo_percentile"))
    return target, pct


def _prefer_real(rows: Sequence[_Row]) -> list[_Row]:
    real = [r for r in rows if not r.simulated]
    return real or list(rows)


def capacity_table(frame: pd.DataFrame, demand: DemandSpec) -> CapacityTable:
    """Build the capacity table for a demand from stored runs.

    Args:
        frame: One row per run (``migperf.results.load(path, wide=True)``).
        demand: What is to be served.

    Returns:
        The table (see the module docstring for the matching rules).
    """
    rows, unknown = _rows(frame)
    entries: dict[Key, CapacityEntry] = {}
    near: dict[Key, str] = {}
    best: dict[str, tuple[float, str, str]] = {}
    notes: list[str] = []
    if unknown:
        notes.append("ignored runs on GPUs the catalog does not know: " + ", ".join(unknown))

    for svc in demand.services:
        server = [
            r
            for r in rows
            if _same_model(r, svc) and (r.params.get("scenario") or {}).get("name") == "server"
        ]
        for r in rows:
            if (
                r.values.get("workload") == svc.workload
                and r.values.get("task") == "infer"
                and (r.params.get("scenario") or {}).get("find_max_qps")
                and not _same_model(r, svc)
            ):
                near.setdefault(
                    (r.model, r.profile, svc.name),
                    "measured only with another precision, batch size, seq_len or model_args",
                )
        lat_col = _latency_column(svc.slo.percentile)
        for r in server:
            lat = _num(r.values.get(lat_col))
            if lat is not None and (svc.name not in best or lat < best[svc.name][0]):
                best[svc.name] = (lat, r.model, r.profile)
        searched = [r for r in server if (r.params.get("scenario") or {}).get("find_max_qps")]
        by_key: dict[tuple[str, str], list[tuple[float, _Row]]] = {}
        for r in searched:
            target, pct = _scenario_slo(r)
            key = (r.model, r.profile)
            if target is None or pct is None:
                continue
            if pct != svc.slo.percentile:
                near[(key[0], key[1], svc.name)] = f"measured only at p{pct:g} <= {target:g} ms"
                continue
            if target > svc.slo.latency_ms * (1 + 1e-9):
                near[(key[0], key[1], svc.name)] = (
                    f"measured only under a looser SLO (p{pct:g} <= {target:g} ms)"
                )
                continue
            by_key.setdefault(key, []).append((target, r))
        for (model, profile), found in by_key.items():
            closest = max(t for t, _ in found)
            use = _prefer_real([r for t, r in found if t == closest])
            # NULL: even the lowest rate tried missed the SLO; a measured zero.
            values = [_num(r.values.get("max_qps_under_slo")) or 0.0 for r in use]
            entries[(model, profile, svc.name)] = CapacityEntry(
                model=model,
                profile=profile,
                job=svc.name,
                kind="infer",
                base=float(statistics.median(values)),
                runs=len(values),
                measured_slo_ms=closest,
                simulated=all(r.simulated for r in use),
            )
            near.pop((model, profile, svc.name), None)

    for job in demand.training:
        by_key2: dict[tuple[str, str], list[_Row]] = {}
        for r in rows:
            if _same_model(r, job) and _num(r.values.get("samples_per_s")) is not None:
                by_key2.setdefault((r.model, r.profile), []).append(r)
        for (model, profile), found2 in by_key2.items():
            use = _prefer_real(found2)
            values = [_num(r.values.get("samples_per_s")) or 0.0 for r in use]
            entries[(model, profile, job.name)] = CapacityEntry(
                model=model,
                profile=profile,
                job=job.name,
                kind="train",
                base=float(statistics.median(values)),
                runs=len(values),
                simulated=all(r.simulated for r in use),
            )

    if any(e.simulated for e in entries.values()):
        notes.append(
            "some capacities come from SIMULATED runs (workloads ran on the CPU); "
            "measure on real GPUs before trusting the plan"
        )
    return CapacityTable(entries, best, near, tuple(notes))


def derate_factors(frame: pd.DataFrame, demand: DemandSpec) -> tuple[dict[Key, float], str]:
    """Co-location factors per (model, profile, job) from measured normalized progress.

    Uses :func:`migperf.sharing.interference.interference_table`: for each
    job of a MIG co-located group (``sharing: mig``, role ``job``) with a
    baseline alone on its slot, ``np_slot`` is the share of its alone
    throughput it kept. The factor of a key is the mean ``np_slot`` of the
    co-located runs of the same model (workload, task, precision, batch size)
    on that GPU model and profile, at most 1.

    Args:
        frame: One row per run.
        demand: The services and jobs to match.

    Returns:
        The factors, and one sentence saying what was found.
    """
    from migperf.sharing.interference import interference_table

    table = interference_table(frame)
    if table.empty:
        return {}, "no co-located MIG runs with baselines in the store; nothing derated"
    by_id = {rec["run_id"]: rec for rec in frame.to_dict("records")}
    sums: dict[Key, list[float]] = {}
    for rec in table.to_dict("records"):
        if rec.get("sharing") != "mig" or rec.get("role") != "job":
            continue
        np_slot = _num(rec.get("np_slot"))
        run = by_id.get(rec.get("run_id"))
        model = model_for_gpu_name(rec.get("gpu_name"))
        if np_slot is None or run is None or model is None or not rec.get("profile"):
            continue
        row = _Row(
            model, str(rec["profile"]), bool(run.get("simulated")), run, _params(run.get("params"))
        )
        for job in demand.jobs:
            if _same_model(row, job):
                sums.setdefault((model, row.profile, job.name), []).append(np_slot)
    factors = {k: min(1.0, sum(v) / len(v)) for k, v in sums.items()}
    if not factors:
        return {}, "no co-located MIG runs of the demand's models in the store; nothing derated"
    return factors, f"derated {len(factors)} capacity value(s) by measured co-located progress"
