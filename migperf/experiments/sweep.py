"""Expanding an experiment config into the runs it asks for.

The expansion is pure: it needs the GPUs' layouts (solved placements), not a
GPU. A run is identified by a ``run_key`` that hashes the config hash with
everything that makes the run distinct (layout, GPU, slot, job, parameters,
repeat), so ``--resume`` and the store can tell which runs already exist.
Slots are named by profile and ordinal (``3g.40gb#1``), not by placement, so
keys stay the same when the same layout is applied again.

A run has one or more *members*: the workers that run at the same time and are
released together. An exclusive run has one; a ``mig`` run one per chosen MIG
slot; an MPS or time-sliced run N on the same slot (``gpu/mps2``, ``gpu/ts0``);
``neighbors`` add background members on the slots the run leaves free. With
``baselines: true`` each shared job is also planned alone on its slot (role
``baseline``), once per slot and point, so interference can be computed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from migperf.errors import ConfigError
from migperf.experiments.config import (
    MAX_RUNS,
    SCENARIO_AXES,
    ExperimentConfig,
    InstancesSpec,
    JobSpec,
    SharingArm,
    axis_values,
    job_point_count,
)
from migperf.mig.snapshot import MigSnapshot

CURRENT = "current"
#: The whole GPU with MIG mode off, as one layout of a sweep (the MIGPerf study's baseline).
DISABLED = "disabled"


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: a compute instance of a layout, or the whole GPU."""

    name: str  # "3g.40gb#0", "1c.7g.80gb#3", or "gpu" (whole GPU, MIG off)
    profile: str | None  # GPU-instance profile, None for a whole GPU
    gi_start: int | None = None
    ci_start: int | None = None


@dataclass(frozen=True)
class Member:
    """One worker of a run: which slot, which job, and how it shares the device.

    Attributes:
        name: Unique within the run: the slot name, or ``<slot>/mps<i>`` /
            ``<slot>/ts<i>`` for MPS clients and time-sliced processes,
            ``<slot>/neighbor<k>`` for a background job.
        slot: Where it runs.
        role: ``job`` (measured) or ``neighbor`` (background load).
        job: Its job (a neighbor's own job, or the run's).
        neighbor_index: Which ``neighbors`` entry, for neighbors.
        client: MPS client or time-sliced process index.
        thread_percentage: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` of an MPS client.
        pinned_mem_limit_mib: ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` of an MPS client.
    """

    name: str
    slot: Slot
    role: str = "job"
    job: JobSpec | None = field(default=None, hash=False, compare=False)
    neighbor_index: int | None = None
    client: int | None = None
    thread_percentage: float | None = None
    pinned_mem_limit_mib: int | None = None


@dataclass(frozen=True)
class RunPlan:
    """One measurement to make: one or more members released together."""

    run_key: str
    layout_index: int
    layout: str
    gpu_index: int
    slots: tuple[Slot, ...]  # the measured members' slots (repeated for MPS/time-slicing)
    job_index: int
    job: JobSpec
    batch_size: int
    seq_len: int
    model_args: dict[str, Any] = field(hash=False)
    repeat: int = 0
    sharing: str = "exclusive"  # exclusive | mig | mps | timeslice
    role: str = "job"  # job | baseline
    members: tuple[Member, ...] = ()
    scenario: dict[str, Any] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if not self.members:
            object.__setattr__(
                self, "members", tuple(Member(s.name, s, job=self.job) for s in self.slots)
            )

    @property
    def grouped(self) -> bool:
        """Whether several workers run together (results keyed per member)."""
        return len(self.members) > 1

    def member_key(self, member: Member) -> str:
        """The stored run key of one member."""
        return f"{self.run_key}:{member.name}" if self.grouped else self.run_key

    def describe(self) -> str:
        """``resnet50 infer bs=8 on 3g.40gb#0 (GPU 0, layout 2)`` style text."""
        where = "+".join(m.name for m in self.members if m.role == "job")
        extra = "".join(
            f" {k}={v}" for k, v in sorted(self.model_args.items()) if k not in self.job.model_args
        )
        if self.scenario:
            qps = self.scenario.get("target_qps")
            extra += f" {self.scenario['name']}" + (f"@{qps:g}qps" if qps else "")
            if self.scenario.get("find_max_qps"):
                extra += " max-qps"
        how = f" shared by {self.sharing}" if self.sharing != "exclusive" else ""
        if self.role == "baseline":
            how += " alone (baseline)"
        nb = sum(1 for m in self.members if m.role == "neighbor")
        if nb:
            how += f" +{nb} neighbor(s)"
        rep = f" repeat {self.repeat + 1}" if self.repeat else ""
        seq = f" seq={self.seq_len}" if _has_sequence(self.job.workload) else ""
        return f"{self.job.workload} {self.job.task} bs={self.batch_size}{seq}{extra} on {where}{how} (GPU {self.gpu_index}){rep}"


def _has_sequence(workload: str) -> bool:
    """Whether a workload's inputs have a sequence length (a vision model's do not)."""
    from migperf.bench.workloads import workload_info
    from migperf.errors import UsageError

    try:
        return workload_info(workload).family == "language"
    except UsageError:  # an unknown name: validation refuses it; show everything meanwhile
        return True


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


def choose_slots(
    cfg: ExperimentConfig,
    slots: list[Slot],
    instances: InstancesSpec | Literal["rest"] | None = None,
) -> list[tuple[Slot, ...]]:
    """Which slot groups to run on, per ``instances`` (default: the config's).

    A list names profiles (``1g.10gb``), slot kinds (``1c.7g.80gb``) or single
    slots (``1g.10gb#2``).
    """
    if not slots:
        return []
    mode = cfg.instances if instances is None else instances
    if mode == "first":
        return [(slots[0],)]
    if mode in ("each", "rest"):
        return [(s,) for s in slots]
    if mode == "all":
        return [tuple(slots)]
    wanted = {p.lower() for p in mode}
    return [
        (s,)
        for s in slots
        if (s.profile or "").lower() in wanted
        or s.name.split("#")[0].lower() in wanted
        or s.name.lower() in wanted
    ]


def job_points(job: JobSpec) -> list[tuple[int, int, dict[str, Any]]]:
    """(batch size, sequence length, model args) for every point of a job's sweep.

    Scenario axes are in :func:`job_points_full`; this keeps the older shape.
    """
    return [(bs, seq, margs) for bs, seq, margs, _ in job_points_full(job)]


_SWEPT = tuple(a.removeprefix("scenario.") for a in SCENARIO_AXES)


def job_points_full(
    job: JobSpec,
) -> list[tuple[int, int, dict[str, Any], dict[str, Any] | None]]:
    """(batch size, sequence length, model args, scenario) for every point of a job's sweep.

    The scenario is the job's scenario as a dict with swept fields replaced
    (``None`` for a throughput job).

    Raises:
        ConfigError: the sweep has more than :data:`~migperf.experiments.config.MAX_RUNS`
            points (counted before anything is expanded).
    """
    n = job_point_count(job)
    if n > MAX_RUNS:
        raise ConfigError(
            f"the sweep of {job.workload} has {n:,} points; at most {MAX_RUNS:,} runs are allowed",
            hint="shrink the sweep's axes",
        )
    axes = list(job.sweep.items())
    base_scenario = (
        job.scenario.model_dump(mode="json", exclude_defaults=True)
        if job.scenario is not None
        else None
    )
    if base_scenario is not None:
        base_scenario["name"] = job.scenario.name if job.scenario is not None else None
    points = []
    for combo in itertools.product(*[axis_values(v) for _, v in axes]) if axes else [()]:
        bs, seq, margs = job.batch_size, job.seq_len, dict(job.model_args)
        scen = dict(base_scenario) if base_scenario is not None else None
        for (axis, _), value in zip(axes, combo, strict=True):
            if axis == "batch_size":
                bs = int(value)
            elif axis == "seq_len":
                seq = int(value)
            elif axis in SCENARIO_AXES and scen is not None:
                scen[axis.removeprefix("scenario.")] = float(value)
            else:
                margs[axis.removeprefix("model_args.")] = value
        points.append((bs, seq, margs, scen))
    # Ascending batch size within a job, so an out-of-memory run can skip larger ones.
    return sorted(
        points,
        key=lambda p: (
            json.dumps(p[2], sort_keys=True),
            json.dumps({k: v for k, v in (p[3] or {}).items() if k not in _SWEPT}, sort_keys=True),
            *[float((p[3] or {}).get(k) or 0.0) for k in _SWEPT],
            p[1],
            p[0],
        ),
    )


def run_key(config_hash: str, **parts: Any) -> str:
    """The identity of a run within an experiment."""
    text = json.dumps({"config": config_hash, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _arm_groups(
    cfg: ExperimentConfig,
    arm: SharingArm,
    slots: list[Slot],
    instances: InstancesSpec | Literal["rest"] | None,
) -> list[tuple[Slot, ...]]:
    """The slot groups one sharing arm runs on."""
    if arm.mode == "exclusive":
        return choose_slots(cfg, slots, instances)
    if arm.mode == "mig":
        if all(s.profile is None for s in slots):
            return []  # MIG off: nothing to co-locate on MIG slices
        mode = cfg.instances if instances is None else instances
        chosen = [
            s for g in choose_slots(cfg, slots, "all" if mode == "first" else mode) for s in g
        ]
        unique = list(dict.fromkeys(chosen))
        return [tuple(unique)] if len(unique) > 1 else []
    # mps / timeslice: N workers on each chosen slot.
    singles = [s for g in choose_slots(cfg, slots, instances) for s in g]
    return [(s,) * arm.size for s in dict.fromkeys(singles)]


def _members(arm: SharingArm, group: tuple[Slot, ...], job: JobSpec) -> tuple[Member, ...]:
    if arm.mode == "mps" and arm.mps is not None:
        pct = arm.mps.client_values("thread_percentage")
        mem = arm.mps.client_values("pinned_mem_limit_mib")
        return tuple(
            Member(
                f"{s.name}/mps{i}",
                s,
                job=job,
                client=i,
                thread_percentage=pct[i],
                pinned_mem_limit_mib=mem[i],
            )
            for i, s in enumerate(group)
        )
    if arm.mode == "timeslice":
        return tuple(Member(f"{s.name}/ts{i}", s, job=job, client=i) for i, s in enumerate(group))
    return tuple(Member(s.name, s, job=job) for s in group)


def _neighbors(cfg: ExperimentConfig, slots: list[Slot], used: set[str]) -> tuple[Member, ...]:
    out: list[Member] = []
    taken = set(used)
    for k, nb in enumerate(cfg.neighbors):
        free = [s for s in slots if s.name not in taken]
        if nb.instances in (None, "rest"):
            chosen = free
        else:
            chosen = [s for g in choose_slots(cfg, free, nb.instances) for s in g]
        for s in chosen:
            taken.add(s.name)
            out.append(
                Member(f"{s.name}/neighbor{k}", s, role="neighbor", job=nb, neighbor_index=k)
            )
    return tuple(out)


def expand(
    cfg: ExperimentConfig,
    layouts: dict[tuple[int, int], MigSnapshot | None],
) -> list[RunPlan]:
    """Every run of the experiment, in execution order (layout, GPU, job, point, arm, slot, repeat).

    Args:
        cfg: The config.
        layouts: ``(layout index, GPU index) -> target snapshot`` (None: the GPU as it is, MIG off).

    Raises:
        ConfigError: the experiment would make more than
            :data:`~migperf.experiments.config.MAX_RUNS` runs on these GPUs
            (counted before any run is built).
    """
    total = count_runs(cfg, layouts)
    if total > MAX_RUNS:
        raise ConfigError(
            f"{cfg.name}: on these GPUs the experiment would make up to {total:,} runs "
            f"({len(layouts)} layout-GPU pair(s)); at most {MAX_RUNS:,} are allowed",
            hint="shrink the sweep, the repeats, the layouts, the GPUs or the instances, "
            "or split the experiment into several files",
        )
    chash = cfg.config_hash()
    legacy = [a.mode for a in cfg.sharing] == ["exclusive"] and not cfg.neighbors
    runs: list[RunPlan] = []
    for (li, gpu), snap in sorted(layouts.items()):
        layout = cfg.layouts[li]
        slots = slots_of(snap)
        for ji, job in enumerate(cfg.jobs):
            for bs, seq, margs, scen in job_points_full(job):
                arms = [a for a in cfg.sharing if a.layouts is None or layout in a.layouts]
                # Exclusive runs without neighbors already are the baselines.
                baselines_done: set[str] = {
                    g[0].name
                    for a in arms
                    if a.mode == "exclusive" and not cfg.neighbors
                    for g in _arm_groups(cfg, a, slots, job.instances)
                    if len(g) == 1
                }
                for arm in arms:
                    for group in _arm_groups(cfg, arm, slots, job.instances):
                        members = _members(arm, group, job)
                        used = {s.name for s in group}
                        neighbors = _neighbors(cfg, slots, used) if cfg.neighbors else ()
                        sharing = arm.mode
                        if sharing == "exclusive" and (len(set(group)) > 1 or neighbors):
                            sharing = "mig" if any(s.profile for s in group) else "exclusive"
                        plans: list[tuple[str, tuple[Member, ...], str]] = [
                            ("job", members + neighbors, sharing)
                        ]
                        shared = len(members) > 1 or bool(neighbors)
                        if cfg.baselines and shared:
                            alone = [
                                s for s in dict.fromkeys(group) if s.name not in baselines_done
                            ]
                            baselines_done.update(s.name for s in alone)
                            plans[:0] = [
                                ("baseline", (Member(s.name, s, job=job),), "exclusive")
                                for s in alone
                            ]
                        for role, mems, how in plans:
                            for rep in range(cfg.repeats):
                                parts: dict[str, Any] = {
                                    "layout": layout,
                                    "gpu": gpu,
                                    "slots": [m.slot.name for m in mems if m.role == "job"],
                                    "job": ji,
                                    "batch_size": bs,
                                    "seq_len": seq,
                                    "model_args": margs,
                                    "repeat": rep,
                                }
                                if not legacy or scen is not None:
                                    parts.update(
                                        sharing=how,
                                        role=role,
                                        members=[m.name for m in mems],
                                        scenario=scen,
                                    )
                                runs.append(
                                    RunPlan(
                                        run_key(chash, **parts),
                                        li,
                                        layout,
                                        gpu,
                                        tuple(m.slot for m in mems if m.role == "job"),
                                        ji,
                                        job,
                                        bs,
                                        seq,
                                        margs,
                                        rep,
                                        sharing=how,
                                        role=role,
                                        members=mems,
                                        scenario=scen,
                                    )
                                )
    return dedupe(runs)


def count_runs(cfg: ExperimentConfig, layouts: dict[tuple[int, int], MigSnapshot | None]) -> int:
    """An upper bound of ``len(expand(cfg, layouts))``, computed without building a run.

    It counts every baseline as if none were shared or deduplicated.
    """
    total = 0
    for (li, _), snap in layouts.items():
        slots = slots_of(snap)
        layout = cfg.layouts[li]
        arms = [a for a in cfg.sharing if a.layouts is None or layout in a.layouts]
        for job in cfg.jobs:
            per_point = 0
            for arm in arms:
                for group in _arm_groups(cfg, arm, slots, job.instances):
                    per_point += 1 + (len(set(group)) if cfg.baselines else 0)
            total += per_point * job_point_count(job) * cfg.repeats
    return total


def dedupe(runs: list[RunPlan]) -> list[RunPlan]:
    """Drop runs planned twice (a baseline that is also an exclusive run)."""
    seen: set[str] = set()
    out = []
    for r in runs:
        if r.run_key not in seen:
            seen.add(r.run_key)
            out.append(r)
    return out
