"""The capacity table from the results store: what one MIG instance of each profile can serve, measured.

For every (GPU model, MIG profile, service) the planner needs the highest QPS
at which the service's SLO still holds on one instance of that profile; for
every training job, the samples/s one instance reaches. From the results
store (``migperf.results.load(path, wide=True)``, see
``docs/results-schema.md``) they are read, never guessed, like this (the
other source is a capacities file, :mod:`migperf.planner.capfile`):

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

Only runs alone on their slot count (``params.group_id`` empty), with one
exception: the clients of one MPS run (``params.sharing: mps``, ``k`` clients
on one slot, no neighbours; ``migperf run`` with an ``mps`` sharing arm) that
all finished ``ok`` are one measurement of the slot running ``k`` processes,
and their ``max_qps_under_slo`` values add up to its capacity (each client
searched its own highest rate while the others ran). Other co-located runs
feed :func:`derate_factors` instead. Repeats are reduced to their median, and
the count and run ids are kept. Runs of a whole GPU with MIG off are kept
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migperf.nvml.catalog import MODELS
from migperf.planner.demand import DemandSpec, ServiceSpec, TrainingSpec
from migperf.planner.table import (
    WHOLE_GPU,
    CapacityEntry,
    CapacityTable,
    Key,
    MissingCapacity,
    MpsKey,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "WHOLE_GPU",
    "CapacityEntry",
    "CapacityTable",
    "Key",
    "MissingCapacity",
    "capacity_table",
    "derate_factors",
    "model_for_gpu_name",
]


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
    run_ids: tuple[str, ...] = ()
    processes: int = 1


def _run_id(rec: dict[str, Any]) -> str:
    rid = rec.get("run_id")
    if isinstance(rid, float) and rid.is_integer():
        rid = int(rid)
    return str(rid) if rid is not None else "?"


def _where(rec: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(model, profile, unknown GPU name) of a record; profile None: skip it."""
    model = model_for_gpu_name(rec.get("gpu_name"))
    if model is None:
        return None, None, str(rec["gpu_name"]) if rec.get("gpu_name") else None
    profile = rec.get("profile")
    if profile is None or (isinstance(profile, float) and math.isnan(profile)):
        return model, WHOLE_GPU, None
    if re.match(r"^\d+c\.", str(profile)):
        return model, None, None  # a compute-instance split: the planner plans whole GPU instances
    return model, str(profile), None


def _mps_group(members: list[tuple[str, str, dict[str, Any], dict[str, Any]]]) -> _Row | None:
    """One MPS run (its clients' records) as one row of the slot, or None when incomplete."""
    model, profile, first, params = members[0]
    slot = str(params.get("slot") or "").split("/")[0]
    slots = params.get("slots") or []
    k = sum(1 for s in slots if s == slot)
    # Neighbours on other slots, or a client that did not finish ok: not a clean measurement.
    if k < 2 or len(slots) != k or len(members) != k:
        return None
    values = dict(first)
    total = 0.0
    for _, _, rec, _ in members:
        total += _num(rec.get("max_qps_under_slo")) or 0.0  # NULL: that client served nothing
    if all(_num(rec.get("max_qps_under_slo")) is None for _, _, rec, _ in members):
        values["max_qps_under_slo"] = None
    else:
        values["max_qps_under_slo"] = total
    return _Row(
        model,
        profile,
        all(bool(rec.get("simulated")) for _, _, rec, _ in members),
        values,
        params,
        tuple(_run_id(rec) for _, _, rec, _ in members),
        k,
    )


def _rows(frame: pd.DataFrame) -> tuple[list[_Row], list[str]]:
    rows: list[_Row] = []
    unknown: set[str] = set()
    if frame.empty:
        return rows, []
    groups: dict[str, list[tuple[str, str, dict[str, Any], dict[str, Any]]]] = {}
    for rec in frame.to_dict("records"):
        if rec.get("status") != "ok":
            continue
        params = _params(rec.get("params"))
        if params.get("role") == "neighbor":
            continue  # co-located: derating, not capacity
        grouped = bool(params.get("group_id"))
        if grouped and params.get("sharing") != "mps":
            continue  # co-located: derating, not capacity
        model, profile, bad = _where(rec)
        if bad is not None:
            unknown.add(bad)
        if model is None or profile is None:
            continue
        if grouped:
            groups.setdefault(str(params["group_id"]), []).append((model, profile, rec, params))
            continue
        rows.append(_Row(model, profile, bool(rec.get("simulated")), rec, params, (_run_id(rec),)))
    for members in groups.values():
        row = _mps_group(members)
        if row is not None:
            rows.append(row)
    return rows, sorted(unknown)


def _same_model(row: _Row, job: ServiceSpec | TrainingSpec) -> bool:
    v = row.values
    if job.workload is None:
        return False  # planned from capacities files only
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


def _origin(rows: Sequence[_Row]) -> str:
    """``store runs 3, 4, 5`` (MPS: the clients of each run, grouped)."""
    k = rows[0].processes if rows else 1
    parts = ["+".join(r.run_ids) for r in rows]
    shown = ", ".join(parts[:8]) + (f" and {len(parts) - 8} more" if len(parts) > 8 else "")
    text = f"store run{'s' if len(parts) > 1 or k > 1 else ''} {shown}"
    if k > 1:
        text += f" (MPS: {k} clients per run, their max_qps_under_slo summed)"
    return text


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
    mps: dict[MpsKey, CapacityEntry] = {}
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
                svc.workload is not None
                and r.processes == 1
                and r.values.get("workload") == svc.workload
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
            if (
                r.processes == 1
                and lat is not None
                and (svc.name not in best or lat < best[svc.name][0])
            ):
                best[svc.name] = (lat, r.model, r.profile)
        searched = [r for r in server if (r.params.get("scenario") or {}).get("find_max_qps")]
        by_key: dict[tuple[str, str, int], list[tuple[float, _Row]]] = {}
        for r in searched:
            target, pct = _scenario_slo(r)
            key = (r.model, r.profile, r.processes)
            if target is None or pct is None:
                continue
            if pct != svc.slo.percentile:
                if r.processes == 1:
                    near[(key[0], key[1], svc.name)] = f"measured only at p{pct:g} <= {target:g} ms"
                continue
            if target > svc.slo.latency_ms * (1 + 1e-9):
                if r.processes == 1:
                    near[(key[0], key[1], svc.name)] = (
                        f"measured only under a looser SLO (p{pct:g} <= {target:g} ms)"
                    )
                continue
            by_key.setdefault(key, []).append((target, r))
        for (model, profile, k), found in by_key.items():
            closest = max(t for t, _ in found)
            use = _prefer_real([r for t, r in found if t == closest])
            # NULL: even the lowest rate tried missed the SLO; a measured zero.
            values = [_num(r.values.get("max_qps_under_slo")) or 0.0 for r in use]
            entry = CapacityEntry(
                model=model,
                profile=profile,
                job=svc.name,
                kind="infer",
                base=float(statistics.median(values)),
                runs=len(values),
                measured_slo_ms=closest,
                simulated=all(r.simulated for r in use),
                processes=k,
                origin=_origin(use),
            )
            if k > 1:
                mps[(model, profile, svc.name, k)] = entry
            else:
                entries[(model, profile, svc.name)] = entry
                near.pop((model, profile, svc.name), None)

    for job in demand.training:
        by_key2: dict[tuple[str, str], list[_Row]] = {}
        for r in rows:
            if (
                r.processes == 1
                and _same_model(r, job)
                and _num(r.values.get("samples_per_s")) is not None
            ):
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
                origin=_origin(use),
            )

    if any(e.simulated for e in [*entries.values(), *mps.values()]):
        notes.append(
            "some capacities come from SIMULATED runs (workloads ran on the CPU); "
            "measure on real GPUs before trusting the plan"
        )
    return CapacityTable(entries, best, near, tuple(notes), mps)


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
