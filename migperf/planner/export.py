"""What the planner writes: the plan as a mig-parted config, and the experiments it still needs.

* :func:`plan_to_migparted` writes the plan in NVIDIA mig-parted's
  ``version: v1`` format (docs/reference/mig-facts.md section 11), one entry per GPU
  (``devices: [i]``) with the model's ``device-filter``, so the same file
  leaves GPUs of another model alone. ``migperf mig apply --config`` and
  ``nvidia-mig-parted apply`` both read it. A plan over several nodes gets
  one configuration per node (``NAME-a100-80gb-node1``), since GPU indices
  restart on every node. The file's comments say what each instance serves
  and flag estimated capacities and MPS.
* :func:`plan_mps_file` writes the MPS side of a plan that runs MPS inside
  MIG instances: mig-parted only creates the MIG layout, so which instance
  runs how many MPS processes of which service is listed in a side file
  (``mig.mps.yaml`` next to ``mig.yaml``), which the mig-parted file names.
* :func:`measurement_configs` writes, per GPU model, the experiment config
  (``migperf run``) that measures the capacities a plan is missing: layouts
  that hold each needed profile once, and per service a LoadGen server job
  searching its highest QPS under the service's SLO on those profiles only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from migperf.mig.layout import InstanceSpec, LayoutSpec, profile_sort_key
from migperf.mig.migparted import migparted_counts
from migperf.mig.solver import MigGeometry, check_layout
from migperf.nvml.catalog import get_model
from migperf.planner.capacity import MissingCapacity
from migperf.planner.demand import DemandSpec, ServiceSpec
from migperf.planner.result import GpuPlan, Plan

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "config_names",
    "measurement_configs",
    "mps_side_path",
    "plan_mps_file",
    "plan_to_migparted",
]

#: The mig-parted configuration name a plan is written under (mig-parted's ``-c``).
DEFAULT_CONFIG_NAME = "migperf-plan"


def _q(text: str) -> str:
    return json.dumps(text)


def _groups(plan: Plan) -> dict[tuple[str, int], list[GpuPlan]]:
    groups: dict[tuple[str, int], list[GpuPlan]] = {}
    for g in plan.gpus:
        groups.setdefault((g.model, g.node), []).append(g)
    return groups


def config_names(plan: Plan, name: str = DEFAULT_CONFIG_NAME) -> dict[tuple[str, int], str]:
    """The mig-parted configuration name of each (model, node) of a plan.

    One node in all: ``name``; otherwise ``name-MODEL-nodeK``.
    """
    groups = _groups(plan)
    if len(groups) <= 1:
        return {key: name for key in groups}
    return {key: f"{name}-{key[0]}-node{key[1]}" for key in groups}


def mps_side_path(out: Path) -> Path:
    """Where the MPS side file of a mig-parted file goes: ``mig.yaml`` -> ``mig.mps.yaml``."""
    return out.with_name(f"{out.stem}.mps{out.suffix or '.yaml'}")


def plan_to_migparted(
    plan: Plan, name: str = DEFAULT_CONFIG_NAME, source: str = "", mps_file: str = ""
) -> str:
    """The plan as a mig-parted ``version: v1`` config, one entry per GPU.

    Args:
        plan: A plan with at least one GPU.
        name: The configuration name (one node), or its prefix (several).
        source: The demand file, for the header comment.
        mps_file: The MPS side file written with it (:func:`plan_mps_file`),
            named in the header when the plan runs MPS.

    Returns:
        The YAML text, ending with a newline.
    """
    labels = config_names(plan, name)
    head = [
        "# MIG layout plan written by `migperf plan`"
        + (f" for {source}" if source else "")
        + f": {plan.gpus_used} GPU(s).",
        "# Apply with `migperf mig apply --config FILE` or `nvidia-mig-parted apply -f FILE`."
        if len(labels) <= 1
        else "# One configuration per node: on each node apply it with `migperf mig apply "
        "--config FILE --name CONFIG` or `nvidia-mig-parted apply -f FILE -c CONFIG`.",
    ]
    if not plan.feasible:
        head.append(
            "# WARNING: this plan does NOT meet the demand (best effort); see `migperf plan`."
        )
    if plan.uses_mps:
        head.append(
            "# MPS: instances marked 'MPS xK' below run K MPS processes of their service. "
            "mig-parted only creates the MIG layout; start one MPS control daemon per such "
            "MIG device and K clients on it"
            + (f", as {mps_file} lists" if mps_file else "")
            + " (`migperf plan --verify` does this)."
        )
    head += [f"# NOTE: {note}" for note in plan.notes]
    estimated = sorted(
        {
            (g.model, i.profile, i.job or "")
            for g in plan.gpus
            for i in g.instances
            if i.estimate and i.job
        }
    )
    if estimated:
        head.append(
            "# ESTIMATE: these capacities were not measured but estimated (--assume-linear, "
            "scaled by SM count):"
        )
        head += [f"#   {job} on {profile} ({model})" for model, profile, job in estimated]
    lines = [*head, "version: v1", "mig-configs:"]
    for (model, node), gpus in _groups(plan).items():
        pci = f"0x{get_model(model).pci_device_id:08X}"
        lines.append(f"  {labels[(model, node)]}:")
        for g in gpus:
            served: dict[tuple[str, str], int] = {}
            for i in g.instances:
                what = (
                    (i.job or "idle")
                    + (f" (MPS x{i.processes})" if i.processes > 1 else "")
                    + (" (estimate)" if i.estimate else "")
                )
                served[(i.profile, what)] = served.get((i.profile, what), 0) + 1
            serving = ", ".join(
                (f"{n} x " if n > 1 else "") + f"{p} -> {what}" for (p, what), n in served.items()
            )
            where = f"{model} GPU {g.device}" + (f" (node {node})" if node else "")
            lines.append(f"    # {where}: {serving}")
            counts = migparted_counts((i.profile, None) for i in g.instances)
            ordered = sorted(counts.items(), key=lambda kv: profile_sort_key(kv[0]))
            lines += [
                f"    - device-filter: {_q(pci)}",
                f"      devices: [{g.device}]",
                "      mig-enabled: true",
                "      mig-devices:",
                *(f"        {_q(k)}: {v}" for k, v in ordered),
            ]
    return "\n".join(lines) + "\n"


def plan_mps_file(plan: Plan, name: str = DEFAULT_CONFIG_NAME, source: str = "") -> str:
    """The MPS side of a plan: per MIG instance that runs several MPS processes, how many of what.

    Each entry names the GPU as the mig-parted file does (configuration,
    ``devices`` index, node), the instance by profile and its number among
    that profile's instances on the GPU (ordered by placement, as
    ``nvidia-smi mig -lgi`` lists them), the service and the process count.

    Args:
        plan: The plan.
        name: The mig-parted configuration name (as given to :func:`plan_to_migparted`).
        source: The demand file, for the header comment.

    Returns:
        The YAML text, ending with a newline.
    """
    labels = config_names(plan, name)
    lines = [
        "# MPS processes inside MIG instances, planned by `migperf plan`"
        + (f" for {source}" if source else "")
        + ".",
        "# mig-parted creates the MIG layout only; it does not start MPS. For each entry, start",
        "# an MPS control daemon on that MIG device (CUDA_VISIBLE_DEVICES=<its MIG UUID>) and",
        "# run `processes` clients of the service on it, each taking capacity / processes QPS.",
        "version: v1",
        "mps:",
    ]
    for g in plan.gpus:
        seen: dict[str, int] = {}
        for inst in g.instances:
            n = seen.get(inst.profile, 0)
            seen[inst.profile] = n + 1
            if inst.processes < 2 or inst.job is None:
                continue
            lines += [
                f"  - config: {_q(labels[(g.model, g.node)])}",
                f"    model: {_q(g.model)}",
                f"    node: {g.node}",
                f"    device: {g.device}",
                f"    profile: {_q(inst.profile)}",
                f"    instance: {n}",
                f"    service: {_q(inst.job)}",
                f"    processes: {inst.processes}",
                f"    capacity_qps: {inst.capacity or 0.0:.1f}",
                f"    load_qps: {inst.load or 0.0:.1f}",
            ]
    if lines[-1] == "mps:":
        lines[-1] = "mps: []"
    return "\n".join(lines) + "\n"


# ----------------------------------------------------- measuring what is missing


def _pack(model: str, profiles: Sequence[str]) -> list[str]:
    """Layouts that together hold each profile once: largest first, first fit."""
    geometry = MigGeometry.for_model(model)
    bins: list[list[str]] = []
    for p in sorted(profiles, key=profile_sort_key):
        for b in bins:
            spec = LayoutSpec(tuple(InstanceSpec(x) for x in [*b, p]))
            if check_layout(geometry.resolve(spec), geometry).ok:
                b.append(p)
                break
        else:
            bins.append([p])
    return [str(LayoutSpec(tuple(InstanceSpec(x) for x in b))) for b in bins]


def _job(demand: DemandSpec, name: str, profiles: list[str]) -> dict[str, Any]:
    job = demand.job(name)
    out: dict[str, Any] = {
        "workload": job.workload,
        "task": job.task,
        "precision": job.precision,
        "batch_size": job.batch_size,
    }
    if job.seq_len is not None:
        out["seq_len"] = job.seq_len
    if job.model_args is not None:
        out["model_args"] = dict(job.model_args)
    if isinstance(job, ServiceSpec):
        out["scenario"] = {
            "name": "server",
            "find_max_qps": True,
            "latency_target_ms": job.slo.latency_ms,
            "latency_percentile": job.slo.percentile,
        }
    out["instances"] = profiles
    return out


def measurement_configs(
    demand: DemandSpec,
    missing: Sequence[MissingCapacity],
    *,
    repeats: int = 3,
    source: str = "",
    results: Path | str = "results/migperf.db",
) -> dict[str, str]:
    """Experiment configs (``migperf run``) that measure the missing capacities.

    Args:
        demand: The demand the capacities are for.
        missing: What the plan lacks (whole-GPU keys are skipped: the planner
            never needs them; so are services without a ``workload``, which
            only capacities files can give).
        repeats: Repeats per measurement (the planner uses their median).
        source: The demand file, for the comment.
        results: The store the planner reads: the comment's ``migperf run``
            writes there, so the next plan finds the measurements.

    Returns:
        ``{model: YAML text}``, one config per GPU model with something missing.
    """
    by_model: dict[str, dict[str, list[str]]] = {}
    for m in missing:
        if demand.job(m.job).workload is None:
            continue  # planned from capacities files only: nothing migperf can run
        by_model.setdefault(m.model, {}).setdefault(m.job, [])
        if m.profile not in by_model[m.model][m.job]:
            by_model[m.model][m.job].append(m.profile)
    out: dict[str, str] = {}
    for model, jobs in by_model.items():
        profiles = sorted({p for ps in jobs.values() for p in ps}, key=profile_sort_key)
        names = [s.name for s in demand.services] + [t.name for t in demand.training]
        body = {
            "name": f"plan-capacity-{model}",
            "description": "capacities `migperf plan` is missing"
            + (f" for {source}" if source else ""),
            "gpus": [0],
            "layouts": _pack(model, profiles),
            "instances": profiles,
            "repeats": repeats,
            "jobs": [
                _job(demand, name, sorted(jobs[name], key=profile_sort_key))
                for name in names
                if name in jobs
            ],
        }
        gpu = get_model(model).name
        pairs = sum(len(ps) for ps in jobs.values())
        header = [
            f"# Written by `migperf plan --write-config`: measures the {pairs} capacity value(s)",
            f"# the plan is missing on {model} ({gpu}). Run it on a machine whose GPU 0 is",
            "# that model, into the store the planner reads, then plan again:",
            f"#   migperf run THIS_FILE --results {results}",
        ]
        for name in names:
            if name in jobs:
                header.append(f"#   {name}: {', '.join(sorted(jobs[name], key=profile_sort_key))}")
        text = yaml.safe_dump(body, sort_keys=False, default_flow_style=None, width=100)
        out[model] = "\n".join(header) + "\n" + text
    return out
