"""A sweep bound to a cluster: its nodes, its runs, which node runs what, and the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from migperf.experiments.config import ExperimentConfig
from migperf.experiments.runner import ExperimentReport
from migperf.experiments.sweep import run_key

__all__ = [
    "ClusterNode",
    "ClusterPlan",
    "ClusterReport",
    "ClusterRun",
    "assign_runs",
    "bind_plan",
]


@dataclass
class ClusterNode:
    """One node of the cluster as its agent described it."""

    node_id: str
    host: str
    model: str
    gpus: list[dict[str, Any]]
    simulated: bool
    machine: str | None
    agent_pid: int
    journal: str | None = None

    @property
    def name(self) -> str:
        """``node 3f2a1b9c0d1e (gpu-07)``."""
        return f"node {self.node_id[:12]} ({self.host})"


@dataclass
class ClusterRun:
    """One run of the sweep: its stored key, where it may run, and its failure records."""

    key: str
    planned_key: str
    model: str
    description: str
    layout_index: int
    gpu_index: int
    member_keys: list[str]
    templates: list[dict[str, Any]]
    nodes: list[str] = field(default_factory=list)


@dataclass
class ClusterPlan:
    """A config bound to a cluster: its nodes, every run, and which node runs what."""

    config: ExperimentConfig
    source: str
    nodes: dict[str, ClusterNode]
    runs: dict[str, ClusterRun]
    assignment: dict[str, list[str]]

    def models(self) -> dict[str, list[str]]:
        """GPU model -> its node ids."""
        out: dict[str, list[str]] = {}
        for nid, node in self.nodes.items():
            out.setdefault(node.model, []).append(nid)
        return out

    def estimated_duration_s(self) -> float:
        """A rough estimate: the busiest node's runs, as the local runner estimates them."""
        per_run = self.config.stop.min_duration_s + 6.0
        busiest = max((len(keys) for keys in self.assignment.values()), default=0)
        return busiest * per_run + len(self.config.layouts) * 2.0

    def headline(self) -> str:
        """``sweep: 6 run(s) on 3 node(s) of the Ray cluster (...); estimated 1.0 min``."""
        simulated = [n for n in self.nodes.values() if n.simulated]
        sim = (
            f"; {len(simulated)} of them SIMULATED (workloads run on the CPU; results marked simulated)"
            if simulated
            else ""
        )
        models = ", ".join(f"{m}: {len(ids)} node(s)" for m, ids in self.models().items())
        return (
            f"{self.config.name}: {len(self.runs)} run(s) on {len(self.nodes)} node(s) of the Ray "
            f"cluster ({models}){sim}; estimated {self.estimated_duration_s() / 60:.1f} min"
        )

    def describe(self) -> list[str]:
        """Each node's share of the runs, a line per run; idle nodes too."""
        lines = []
        for nid, keys in self.assignment.items():
            node = self.nodes[nid]
            lines.append(f"{node.name}, {node.model}: {len(keys)} run(s)")
            lines.extend(f"  {self.runs[key].description}" for key in keys)
        for nid, node in self.nodes.items():
            if nid not in self.assignment:
                lines.append(f"{node.name}, {node.model}: nothing to run")
        return lines


def assign_runs(runs: list[ClusterRun], node_order: list[str]) -> dict[str, list[str]]:
    """Split runs across their nodes: contiguous, even chunks per GPU model.

    A node keeps taking runs in plan order until it has its share, so it
    applies as few layouts as possible; a run goes only to a node that
    planned it.
    """
    out: dict[str, list[str]] = {nid: [] for nid in node_order}
    order = {nid: i for i, nid in enumerate(node_order)}
    by_model: dict[str, list[ClusterRun]] = {}
    for run in runs:
        by_model.setdefault(run.model, []).append(run)
    for model_runs in by_model.values():
        nodes = {nid for run in model_runs for nid in run.nodes}
        share = math.ceil(len(model_runs) / max(1, len(nodes)))
        current: str | None = None
        for run in model_runs:
            if current not in run.nodes or len(out[current]) >= share:
                current = min(run.nodes, key=lambda nid: (len(out[nid]), order[nid]))
            out[current].append(run.key)
    return {nid: keys for nid, keys in out.items() if keys}


@dataclass
class ClusterReport(ExperimentReport):
    """What a cluster sweep did, overall and per node (``nodes``)."""

    nodes: list[dict[str, Any]] = field(default_factory=list)


def bind_plan(cfg: ExperimentConfig, source: str, infos: dict[str, dict[str, Any]]) -> ClusterPlan:
    """The cluster plan from every node's :func:`~migperf.experiments.cluster.node.describe_node`.

    Runs that several GPU models plan under the same key (whole GPUs with MIG
    off) are keyed per model, so each model's result is stored.
    """
    chash = cfg.config_hash()
    nodes = {
        nid: ClusterNode(
            node_id=nid,
            host=info["host"],
            model=info["model"],
            gpus=info["gpus"],
            simulated=bool(info["simulated"]),
            machine=info.get("machine"),
            agent_pid=int(info["pid"]),
            journal=info.get("journal"),
        )
        for nid, info in infos.items()
    }
    models_of: dict[str, set[str]] = {}
    for nid, info in infos.items():
        for r in info["runs"]:
            models_of.setdefault(r["key"], set()).add(nodes[nid].model)
    runs: dict[str, ClusterRun] = {}
    for nid, info in infos.items():
        model = nodes[nid].model
        for r in info["runs"]:
            planned = r["key"]
            key = (
                run_key(chash, key=planned, gpu_model=model)
                if len(models_of[planned]) > 1
                else planned
            )
            if key in runs:
                runs[key].nodes.append(nid)
                continue
            members = [f"{key}:{m}" for m in r["members"]] or [key]
            templates = []
            for t in r["templates"]:
                old = t["run_key"]
                t = dict(t, run_key=key + old[len(planned) :] if old != planned else key)
                templates.append(t)
            runs[key] = ClusterRun(
                key=key,
                planned_key=planned,
                model=model,
                description=r["description"],
                layout_index=r["layout_index"],
                gpu_index=r["gpu_index"],
                member_keys=members,
                templates=templates,
                nodes=[nid],
            )
    ordered = dict(sorted(runs.items(), key=lambda kv: (kv[1].model, kv[1].layout_index)))
    assignment = assign_runs(list(ordered.values()), list(nodes))
    return ClusterPlan(cfg, source, nodes, ordered, assignment)
