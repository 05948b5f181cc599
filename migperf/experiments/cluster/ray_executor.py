"""The ``ray`` executor: a sweep across every migperf node of a Ray cluster.

See :mod:`migperf.experiments.cluster` for how agents, planning, running and
faults work. This module connects to the cluster, places one
:class:`~migperf.experiments.cluster.agent.NodeAgent` per node, plans the
config on every node and hands the run to
:class:`~migperf.experiments.cluster.driver.ClusterSweep`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from types import ModuleType
from typing import TYPE_CHECKING, Any

from migperf.errors import ConfigError, MigperfError, UsageError
from migperf.experiments.cluster.agent import NodeAgent
from migperf.experiments.cluster.assignment import ClusterPlan, ClusterReport, bind_plan
from migperf.experiments.cluster.driver import ClusterSweep, first_line
from migperf.experiments.config import ExperimentConfig
from migperf.experiments.events import Event
from migperf.experiments.executor import Executor
from migperf.experiments.executor_spec import require_ray
from migperf.experiments.planning import refuse_read_only
from migperf.results.store import ResultsStore

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml

__all__ = ["RESOURCE", "START_HINT", "RayExecutor"]

#: The custom Ray resource that marks a node as a migperf node (one agent each).
RESOURCE = "migperf_host"

START_HINT = (
    "start each GPU node with `ray start --address=HEAD:6379 --resources='{\"migperf_host\": 1}'` "
    "(and the head with `ray start --head --resources='{\"migperf_host\": 1}'` if it has GPUs)"
)


class RayExecutor(Executor[ClusterPlan]):
    """Runs a sweep across a Ray cluster (see the module docstring).

    Args:
        address: The cluster (``host:port``, ``ray://host:10001``); None:
            ``RAY_ADDRESS`` or this machine's cluster. An already connected
            Ray (``ray.init`` called by the caller) is used as it is.
        simulate: A simulate spec for every node instead of its own setting.
        read_only: Refuse GPU changes on every node (None: each node's setting).
        heartbeat_timeout_s: An agent that hears nothing from the driver for
            this long stops its runner, restores its node and exits.
        start_timeout_s: How long to wait for every agent to be placed and to answer.
        poll_s: How long one poll waits on an agent for news.
        close_timeout_s: How long a stopping runner gets to restore its node.
        unavailable_grace_s: How long an unreachable agent counts as alive.

    Attributes:
        ray: The ``ray`` module.
        agents: Node id -> its :class:`NodeAgent` actor handle, while placed.
    """

    NAME = "ray"

    @classmethod
    def open(
        cls,
        address: str | None,
        *,
        nvml: Nvml | None = None,
        simulate: str | None = None,
        read_only: bool | None = None,
        fallback: str | None = None,
        **options: Any,
    ) -> RayExecutor:
        """The executor for the cluster at ``address`` (``nvml`` is not used: each node opens its own).

        ``fallback`` is not used either: a cluster node never falls back to a
        simulated GPU unless ``simulate`` (or its ``MIGPERF_SIMULATE``) says so.

        Raises:
            UsageError: Ray is not installed.
        """
        require_ray("--executor ray" + (f":{address}" if address else ""))
        return cls(address, simulate=simulate, read_only=read_only, **options)

    def __init__(
        self,
        address: str | None = None,
        *,
        simulate: str | None = None,
        read_only: bool | None = None,
        heartbeat_timeout_s: float = 30.0,
        start_timeout_s: float = 60.0,
        poll_s: float = 0.5,
        close_timeout_s: float = 120.0,
        unavailable_grace_s: float = 30.0,
    ) -> None:
        self.ray: ModuleType = require_ray()
        self.notes: list[str] = []
        self.address = address
        self.simulate = simulate
        self.read_only = read_only
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.start_timeout_s = start_timeout_s
        self.poll_s = poll_s
        self.close_timeout_s = close_timeout_s
        self.unavailable_grace_s = unavailable_grace_s
        self._connected_here = False
        self.agents: dict[str, Any] = {}

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        where = self.address or os.environ.get("RAY_ADDRESS") or "auto"
        try:
            ray.init(
                address=where,
                log_to_driver=False,
                logging_level=logging.WARNING,
                namespace="migperf",
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(
                f"cannot connect to a Ray cluster at {where}: {first_line(exc)}",
                hint=f"start one ({START_HINT}), or name it with --executor ray:HOST:6379",
            ) from None
        self._connected_here = True

    def close(self) -> None:
        """End every agent (their runners first) and disconnect if connected here."""
        self.close_agents()
        if self._connected_here:
            self.ray.shutdown()
            self._connected_here = False

    def close_agents(self, skip: set[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """Close the agents (not those in ``skip``), then kill them all; returns what each said."""
        ray = self.ray
        refs = {
            nid: agent.close.remote(self.close_timeout_s)
            for nid, agent in self.agents.items()
            if nid not in (skip or set())
        }
        out: dict[str, dict[str, Any] | None] = {}
        try:
            for nid, ref in refs.items():
                try:
                    out[nid] = ray.get(ref, timeout=self.close_timeout_s + 30.0)
                except ray.exceptions.RayError:
                    out[nid] = None  # dead or wedged: killed below anyway
        finally:
            self._kill_agents()
        return out

    def _kill_agents(self) -> None:
        ray = self.ray
        for agent in self.agents.values():
            with contextlib.suppress(Exception):
                ray.kill(agent, no_restart=True)
        self.agents = {}

    # ------------------------------------------------------------ planning

    def _candidate_nodes(self) -> list[dict[str, Any]]:
        nodes = [
            n
            for n in self.ray.nodes()
            if n.get("Alive") and (n.get("Resources") or {}).get(RESOURCE, 0) >= 1
        ]
        if not nodes:
            raise UsageError(
                f"the Ray cluster has no node with the custom resource {RESOURCE!r}",
                hint=START_HINT,
            )
        return sorted(nodes, key=lambda n: (n.get("NodeManagerAddress", ""), n["NodeID"]))

    def _start_agents(self, nodes: list[dict[str, Any]]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = self.ray.remote(NodeAgent)
        for n in nodes:
            nid = n["NodeID"]
            self.agents[nid] = remote.options(
                num_cpus=0,
                num_gpus=(n.get("Resources") or {}).get("GPU", 0),
                resources={RESOURCE: 1},
                scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False),
                lifetime="detached",
                max_restarts=0,
                max_task_retries=0,
            ).remote(self.heartbeat_timeout_s)

    def plan(
        self, cfg: ExperimentConfig, source: str = "config", *, dry_run: bool = True
    ) -> ClusterPlan:
        """Place one agent per node, plan the config on every node, split the runs.

        Unless ``dry_run``, read-only mode (``read_only``, else each node's
        setting) refuses a config that changes layouts, before any agent starts.

        Raises:
            ReadOnlyError: not a dry run, read-only, and the config changes layouts.
            UsageError: no cluster, no migperf node, an agent could not be
                placed, or a node runs another migperf version.
            ConfigError: the config does not fit some node (every node's problems listed).
            MigperfError: a node cannot open NVML.
        """
        import migperf

        if not dry_run and self.read_only:
            refuse_read_only(cfg, source)
        ray = self.ray
        self._connect()
        nodes = self._candidate_nodes()
        self.close_agents()
        self._start_agents(nodes)
        config = cfg.model_dump(mode="json")
        refs = {
            agent.describe.remote(config, self.simulate, self.read_only, source, dry_run): nid
            for nid, agent in self.agents.items()
        }
        ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=self.start_timeout_s)
        if waiting:
            names = ", ".join(
                f"{refs[r][:12]} ({n.get('NodeManagerAddress')})"
                for r in waiting
                for n in nodes
                if n["NodeID"] == refs[r]
            )
            self.close_agents()
            raise UsageError(
                f"no migperf agent started within {self.start_timeout_s:g} s on node(s) {names}: "
                f"their {RESOURCE!r} unit (or their GPUs) are held by another Ray job, e.g. another "
                f"migperf sweep, or by the agents of a driver that went away (they end within "
                f"{self.heartbeat_timeout_s:g} s)",
                hint="wait and run again; `ray list actors --filter state=ALIVE` shows who holds them",
            )
        infos: dict[str, dict[str, Any]] = {}
        problems: list[tuple[str, dict[str, Any]]] = []
        for ref in ready:
            nid = refs[ref]
            try:
                info = ray.get(ref)
            except self.ray.exceptions.RayError as exc:
                info = {"error": {"message": first_line(exc), "hint": ""}, "host": "?"}
            infos[nid] = info
            if info.get("error"):
                problems.append((nid, info))
        if problems:
            self.close_agents()
            # One line per GPU model and problem, naming its nodes.
            same: dict[tuple[str, str], list[str]] = {}
            for nid, info in problems:
                model = info.get("model") or ", ".join(g["name"] for g in info.get("gpus") or [])
                where = f"node {nid[:12]} ({info.get('host')})"
                same.setdefault((model or "GPUs unknown", info["error"]["message"]), []).append(
                    where
                )
            lines = [
                f"{model} on {', '.join(wheres)}: {message}"
                for (model, message), wheres in same.items()
            ]
            cls = (
                ConfigError if all(i["error"].get("config") for _, i in problems) else MigperfError
            )
            raise cls(
                f"{len(problems)} of {len(infos)} node(s) cannot run {source}:\n  "
                + "\n  ".join(lines),
                hint=problems[0][1]["error"].get("hint") or START_HINT,
            )
        versions = {nid: i["migperf_version"] for nid, i in infos.items()}
        other = {nid: v for nid, v in versions.items() if v != migperf.__version__}
        if other:
            self.close_agents()
            raise UsageError(
                f"node(s) {', '.join(f'{nid[:12]} (migperf {v})' for nid, v in other.items())} "
                f"run another migperf than this driver ({migperf.__version__})",
                hint="install the same migperf version on the driver and on every node",
            )
        return bind_plan(cfg, source, infos)

    # ------------------------------------------------------------ running

    def run(
        self,
        plan: ClusterPlan,
        store: ResultsStore,
        *,
        resume: bool = False,
        rerun: bool = False,
        on_event: Event | None = None,
    ) -> ClusterReport:
        """Run the plan on its nodes; store each result as it arrives (see the module docstring).

        Returns:
            The report; ``restored`` is whether every node reported its
            layouts restored (a lost node cannot).
        """
        return ClusterSweep(
            self, plan, store, resume, on_event or (lambda kind, **info: None)
        ).run()
