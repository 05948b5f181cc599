"""The capacity table the planner plans from: what one MIG instance serves, and where that number came from.

A capacity is keyed by (GPU model, profile, service or training job) and, for
a service that may run MPS inside its MIG instances, by the number of MPS
processes ``k`` too: :attr:`CapacityTable.entries` holds one instance serving
alone (``k = 1``), :attr:`CapacityTable.mps` the *total* capacity of one
instance running ``k >= 2`` processes of the service. Entries come from the
results store (:mod:`migperf.planner.capacity`) or from capacities files
(:mod:`migperf.planner.capfile`); each says where (:attr:`CapacityEntry.origin`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from migperf.nvml.catalog import get_model

__all__ = [
    "WHOLE_GPU",
    "CapacityEntry",
    "CapacityTable",
    "Key",
    "MissingCapacity",
    "MpsKey",
    "sm_count",
]

#: The profile name under which whole-GPU (MIG off) capacities are kept.
WHOLE_GPU = "gpu"

#: ``(model, profile, job)``: one instance serving alone.
Key = tuple[str, str, str]
#: ``(model, profile, job, processes)``: one instance running ``processes`` MPS clients.
MpsKey = tuple[str, str, str, int]


@dataclass(frozen=True)
class CapacityEntry:
    """The capacity of one instance of a profile for one service or training job.

    Attributes:
        model: Catalog model key (``a100-80gb``).
        profile: GPU-instance profile (``3g.40gb``), or :data:`WHOLE_GPU`.
        job: The service or training job name.
        kind: ``infer`` (value in queries/s under the SLO) or ``train`` (samples/s).
        base: The median over repeats (or the estimate, or the file's value), before derating.
        runs: Repeats the median is over (0 for an estimate; 1 for a file row).
        source: ``measured`` or ``estimate`` (``--assume-linear``).
        measured_slo_ms: Latency target of the runs used (services).
        estimated_from: The measured profile an estimate was scaled from.
        simulated: The runs were on a simulated GPU (workloads on the CPU).
        derate: Co-location factor applied (1.0: none).
        processes: MPS processes on the instance (1: no MPS); ``base`` is
            their total.
        batch_size: The batch size the value was measured with, when known
            from a capacities file (verification runs with it).
        latency_ms: The latency a capacities file gives with the value.
        origin: Where the value came from, for the plan: ``store runs 3, 7, 9``
            or ``caps.csv:4 (perf_analyzer, May)``.
        from_file: The value came from a capacities file, not the store.
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
    processes: int = 1
    batch_size: int | None = None
    latency_ms: float | None = None
    origin: str = ""
    from_file: bool = False

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
        if self.processes > 1:
            text += f" (MPS x{self.processes})"
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
            "processes": self.processes,
            "value": self.value,
            "unit": self.unit,
            "base": self.base,
            "runs": self.runs,
            "source": self.source,
            "measured_slo_ms": self.measured_slo_ms,
            "estimated_from": self.estimated_from,
            "simulated": self.simulated,
            "derate": self.derate,
            "batch_size": self.batch_size,
            "latency_ms": self.latency_ms,
            "origin": self.origin,
            "from": "file" if self.from_file else "store",
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
    """Capacities by (model, profile, job [, MPS processes]), with what the store said about the rest.

    Attributes:
        entries: ``(model, profile, job) -> entry``: one instance serving alone.
        best_latency_ms: Per service, the lowest latency at its SLO percentile
            any matching server run (or raw capacities row) measured, with the
            model and profile: what the service can achieve at best, for explanations.
        near_misses: ``(model, profile, job) -> note`` for keys measured only
            under a looser SLO (or another percentile).
        notes: Things the user should know (ignored GPUs, simulated runs).
        mps: ``(model, profile, job, k) -> entry`` for ``k >= 2`` MPS processes
            on one instance (the entry's value is their total).
    """

    entries: Mapping[Key, CapacityEntry] = field(default_factory=dict)
    best_latency_ms: Mapping[str, tuple[float, str, str]] = field(default_factory=dict)
    near_misses: Mapping[Key, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    mps: Mapping[MpsKey, CapacityEntry] = field(default_factory=dict)

    def entry(self, model: str, profile: str, job: str, processes: int = 1) -> CapacityEntry | None:
        """The entry for a key (``processes`` MPS clients; 1: none), or None."""
        if processes > 1:
            return self.mps.get((model, profile, job, processes))
        return self.entries.get((model, profile, job))

    def value(self, model: str, profile: str, job: str, processes: int = 1) -> float | None:
        """The capacity for a key (after derating), or None when unknown."""
        e = self.entry(model, profile, job, processes)
        return None if e is None else e.value

    def mps_values(self, model: str, profile: str, job: str) -> dict[int, float]:
        """``{k: total capacity}`` of one instance running ``k >= 2`` MPS processes of a job."""
        return {
            k: e.value for (m, p, j, k), e in self.mps.items() if (m, p, j) == (model, profile, job)
        }

    def missing(
        self, needed: Iterable[Key], max_processes: Mapping[str, int] | None = None
    ) -> list[MissingCapacity]:
        """The needed keys without an entry, in the order given.

        Args:
            needed: ``(model, profile, job)`` keys.
            max_processes: Per job, the most MPS processes it may run; a key
                with a capacity for an allowed process count is not missing
                (the planner can use the instance that way).
        """
        allowed = max_processes or {}
        out = []
        for m, p, j in needed:
            if (m, p, j) in self.entries:
                continue
            most = allowed.get(j, 1)
            if most > 1 and any(k <= most for k in self.mps_values(m, p, j)):
                continue
            out.append(MissingCapacity(m, p, j, self.near_misses.get((m, p, j), "")))
        return out

    @property
    def has_estimates(self) -> bool:
        """Whether any entry is an ``--assume-linear`` estimate."""
        return any(e.source == "estimate" for e in self.entries.values())

    def with_linear_estimates(self, needed: Iterable[Key]) -> CapacityTable:
        """Fill missing keys from the same model's nearest measured profile, scaled by SMs.

        "Nearest" is the measured profile (whole GPU included) with the
        closest SM count, the larger on a tie. A key whose model has no
        measured profile for that job stays missing. MPS capacities are never
        estimated: how much MPS adds is what has to be measured.

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
            want = sm_count(m, p)
            src = min(
                sources,
                key=lambda e: (abs(sm_count(m, e.profile) - want), -sm_count(m, e.profile)),
            )
            scale = want / sm_count(m, src.profile)
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
                origin=f"estimate from {src.profile}" + (f" ({src.origin})" if src.origin else ""),
                from_file=src.from_file,
            )
        return replace(self, entries=entries)

    def derated(self, factors: Mapping[Key, float]) -> CapacityTable:
        """The table with co-location factors applied (each clipped to (0, 1]).

        A factor measured for MIG neighbours applies to an instance whatever
        runs inside it, so MPS entries of the same key get it too.

        Args:
            factors: ``(model, profile, job) -> normalized progress`` measured
                co-located; keys without a factor keep 1.0.
        """
        entries = dict(self.entries)
        mps = dict(self.mps)
        for key, factor in factors.items():
            if not math.isfinite(factor) or factor <= 0:
                continue
            f = min(1.0, float(factor))
            e = entries.get(key)
            if e is not None:
                entries[key] = replace(e, derate=f)
            for mkey, me in self.mps.items():
                if mkey[:3] == key:
                    mps[mkey] = replace(me, derate=f)
        return replace(self, entries=entries, mps=mps)

    def merged(self, other: CapacityTable) -> tuple[CapacityTable, int]:
        """This table with ``other``'s entries added, ``other`` winning on the same key.

        Args:
            other: Typically the capacities files' table, laid over the store's.

        Returns:
            The merged table, and how many of this table's entries ``other`` replaced.
        """
        replaced = sum(1 for k in other.entries if k in self.entries) + sum(
            1 for k in other.mps if k in self.mps
        )
        entries = {**self.entries, **other.entries}
        best = dict(self.best_latency_ms)
        for name, lat in other.best_latency_ms.items():
            if name not in best or lat[0] < best[name][0]:
                best[name] = lat
        near = {k: v for k, v in self.near_misses.items() if k not in entries}
        for k, v in other.near_misses.items():
            if k not in entries:
                near.setdefault(k, v)
        return (
            CapacityTable(
                entries,
                best,
                near,
                tuple(dict.fromkeys([*self.notes, *other.notes])),
                {**self.mps, **other.mps},
            ),
            replaced,
        )

    def to_list(self) -> list[dict[str, Any]]:
        """Every entry as plain JSON (alone first, then MPS)."""
        return [e.to_dict() for _, e in sorted(self.entries.items())] + [
            e.to_dict() for _, e in sorted(self.mps.items())
        ]


def sm_count(model: str, profile: str) -> int:
    """SMs of one instance of a profile (:data:`WHOLE_GPU`, or an unknown one: the full GPU's)."""
    m = get_model(model)
    if profile == WHOLE_GPU:
        return m.full_profile.sm_count
    fact = next((p for p in m.profiles if p.name == profile), None)
    return fact.sm_count if fact is not None else m.full_profile.sm_count
