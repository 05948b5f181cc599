"""Expanding an experiment config into the runs it asks for.

The expansion is pure: it needs the GPUs' layouts (solved placements), not a
GPU. A run is identified by a ``run_key`` that hashes the config hash with
everything that makes the run distinct (layout, GPU, slot, job, parameters,
repeat), so ``--resume`` and the store can tell which runs already exist.
Slots are named by profile and ordinal (``3g.40gb#1``), not by placement, so
keys stay the same when the same layout is applied again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from migperf.experiments.config import ExperimentConfig, JobSpec, RangeSpec
from migperf.mig.snapshot import MigSnapshot

CURRENT = "current"


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a compute instance of a layout, or the whole GPU."""

    name: str  # "3g.40gb#0", "1c.7g.80gb#3", or "gpu" (whole GPU, MIG off)
    profile: str | None  # GPU-instance profile, None for a whole GPU
    gi_start: int | None = None
    ci_start: int | None = None


@dataclass(frozen=True)
class RunPlan:
    """One measurement to make."""

    run_key: str
    layout_index: int
    layout: str
    gpu_index: int
    slots: tuple[Slot, ...]  # one slot, or several for a co-located group
    job_index: int
    job: JobSpec
    batch_size: int
    seq_len: int
    model_args: dict[str, Any] = field(hash=False)
    repeat: int = 0

    def describe(self) -> str:
        """``resnet50 infer bs=8 on 3g.40gb#0 (GPU 0, layout 2)`` style text."""
        where = "+".join(s.name for s in self.slots)
        extra = "".join(
            f" {k}={v}" for k, v in sorted(self.model_args.items()) if k not in self.job.model_args
        )
        rep = f" repeat {self.repeat + 1}" if self.repeat else ""
        return f"{self.job.workload} {self.job.task} bs={self.batch_size} seq={self.seq_len}{extra} on {where} (GPU {self.gpu_index}){rep}"


def slots_of(snapshot: MigSnapshot | None) -> list[Slot]:
    """The compute instances of a layout as slots, largest GPU instance first."""
    if snapshot is None or not snapshot.mig_enabled:
        return [Slot("gpu", None)]
    out: list[Slot] = []
    counts: dict[str, int] = {}
    for inst in sorted(snapshot.instances, key=lambda i: (-i.size, i.start)):
        g = int(inst.profile.split("g.", 1)[0])
        for ci in sorted(inst.compute, key=lambda c: (-c.size, c.start)):
            name = inst.profile if ci.size >= g else f"{ci.size}c.{inst.profile}"
            n = counts.get(name, 0)
            counts[name] = n + 1
            out.append(Slot(f"{name}#{n}", inst.profile, inst.start, ci.start))
    return out


def choose_slots(cfg: ExperimentConfig, slots: list[Slot]) -> list[tuple[Slot, ...]]:
    """Which slot groups to run on, per the config's ``instances``."""
    if not slots:
        return []
    mode = cfg.instances
    if mode == "first":
        return [(slots[0],)]
    if mode == "each":
        return [(s,) for s in slots]
    if mode == "all":
        return [tuple(slots)]
    wanted = {p.lower() for p in mode}
    return [
        (s,)
        for s in slots
        if (s.profile or "").lower() in wanted or s.name.split("#")[0].lower() in wanted
    ]


def _axis(values: list[Any] | RangeSpec) -> list[Any]:
    vals = values.values() if isinstance(values, RangeSpec) else list(values)
    return [int(v) if isinstance(v, float) and v.is_integer() else v for v in vals]


def job_points(job: JobSpec) -> list[tuple[int, int, dict[str, Any]]]:
    """(batch size, sequence length, model args) for every point of a job's sweep."""
    axes = list(job.sweep.items())
    points = []
    for combo in itertools.product(*[_axis(v) for _, v in axes]) if axes else [()]:
        bs, seq, margs = job.batch_size, job.seq_len, dict(job.model_args)
        for (axis, _), value in zip(axes, combo, strict=True):
            if axis == "batch_size":
                bs = int(value)
            elif axis == "seq_len":
                seq = int(value)
            else:
                margs[axis.removeprefix("model_args.")] = value
        points.append((bs, seq, margs))
    # Ascending batch size within a job, so an out-of-memory run can skip larger ones.
    return sorted(points, key=lambda p: (json.dumps(p[2], sort_keys=True), p[1], p[0]))


def run_key(config_hash: str, **parts: Any) -> str:
    """The identity of a run within an experiment."""
    text = json.dumps({"config": config_hash, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def expand(
    cfg: ExperimentConfig,
    layouts: dict[tuple[int, int], MigSnapshot | None],
) -> list[RunPlan]:
    """Every run of the experiment, in execution order (layout, GPU, job, point, slot, repeat).

    Args:
        cfg: The config.
        layouts: ``(layout index, GPU index) -> target snapshot`` (None: the GPU as it is, MIG off).
    """
    chash = cfg.config_hash()
    runs: list[RunPlan] = []
    for (li, gpu), snap in sorted(layouts.items()):
        groups = choose_slots(cfg, slots_of(snap))
        for ji, job in enumerate(cfg.jobs):
            for bs, seq, margs in job_points(job):
                for group in groups:
                    for rep in range(cfg.repeats):
                        key = run_key(
                            chash,
                            layout=cfg.layouts[li],
                            gpu=gpu,
                            slots=[s.name for s in group],
                            job=ji,
                            batch_size=bs,
                            seq_len=seq,
                            model_args=margs,
                            repeat=rep,
                        )
                        runs.append(
                            RunPlan(
                                key, li, cfg.layouts[li], gpu, group, ji, job, bs, seq, margs, rep
                            )
                        )
    return runs
