"""Running a sweep across a Ray cluster: one agent per node, one results store.

``migperf run CONFIG --executor ray[:ADDRESS]`` connects to a running Ray
cluster (``ADDRESS``, else ``RAY_ADDRESS``, else the cluster this machine
belongs to) and uses every node that declares the custom resource
``migperf_host`` (``ray start ... --resources='{"migperf_host": 1}'``).

* Agents. Each such node gets one :class:`NodeAgent` actor, pinned there by
  hard node affinity and holding the node's ``migperf_host`` unit and its
  GPUs, so no second sweep and no other Ray GPU work lands on the node while
  it runs. The agent uses its node's own NVML and state directory: a node
  whose environment sets ``MIGPERF_SIMULATE`` (before ``ray start``) is a
  simulated machine, for demos and tests; otherwise it is the real driver,
  with no silent fallback.
* Planning. Every agent plans the config on its node
  (:func:`~migperf.experiments.node_runner.describe_node`). Nodes are grouped
  by GPU model; each model's runs are split across its nodes in contiguous
  chunks of the plan order, so each node applies as few layouts as possible.
  All problems of all nodes are reported at once, before anything changes.
* Running. Nodes run in parallel, each one run at a time: the agent runs the
  single-node :class:`~migperf.experiments.runner.ExperimentRunner` on its
  chunk in a child process (:mod:`~migperf.experiments.node_runner`) and
  keeps its results in memory until the driver collects them with
  :meth:`NodeAgent.poll`. The driver (this process) is the only writer of the
  store and stores each record as it arrives; the store ignores a run key it
  already has, so nothing is stored twice.
* Faults. A node lost mid-sweep (its agent dies): its current run is stored
  as ``failed`` with ``node <id> (<host>) lost: <why>``, and its remaining
  runs go to another node with the same GPU model, or are stored as failed
  when none is left. Ctrl-C: every agent's runner is stopped the way the
  local runner stops on SIGTERM (current run aborted, its workers killed by
  pid, the node's layouts restored), then the agents are ended. A driver that
  goes away without ending them: the agents are detached actors that watch
  the driver's polls; after ``heartbeat_timeout_s`` without one they stop
  their runner (which restores the node) and exit. An agent killed outright
  (its node lost) takes its runner and workers with it (Ray ends a worker's
  child processes); the node's experiment journal then restores its layouts
  at the next run of the same config there.
* Keys. A run key names the layout, GPU index, slot, job and point, not the
  GPU model, so a sweep has the same keys locally and on a cluster. When two
  GPU models in the cluster plan the same key (whole GPUs with MIG off), the
  driver keys those runs per model, so each model's result is stored.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from migperf.errors import ConfigError, MigperfError, UsageError
from migperf.experiments.config import ExperimentConfig
from migperf.experiments.executor import Executor, require_ray
from migperf.experiments.node_runner import MODULE, describe_node, record_from_dict
from migperf.experiments.plan import run_key
from migperf.experiments.runner import Event, ExperimentReport
from migperf.results.store import ResultsStore

#: The custom Ray resource that marks a node as a migperf node (one agent each).
RESOURCE = "migperf_host"

_START_HINT = (
    "start each GPU node with `ray start --address=HEAD:6379 --resources='{\"migperf_host\": 1}'` "
    "(and the head with `ray start --head --resources='{\"migperf_host\": 1}'` if it has GPUs)"
)

# Variables Ray sets for each worker process; the node runner gets the node's own values.
_RAY_WORKER_ENV = ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES")


# ---------------------------------------------------------------------- the agent


def _node_env() -> dict[str, str]:
    """This process's environment with the node's values of what Ray sets per worker.

    Ray gives each worker ``OMP_NUM_THREADS`` (1 for an actor without CPUs)
    and ``CUDA_VISIBLE_DEVICES`` (its GPU share); the runner and its workers
    should see the node as ``ray start`` saw it, as a local ``migperf run``
    would. The raylet (the agent's parent) has that environment.
    """
    env = dict(os.environ)
    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return env
    node = dict(
        item.decode(errors="replace").split("=", 1) for item in raw.split(b"\0") if b"=" in item
    )
    for name in _RAY_WORKER_ENV:
        if name in node:
            env[name] = node[name]
        else:
            env.pop(name, None)
    return env


def _node_niceness() -> int | None:
    """The scheduling priority of the raylet (the agent's parent); Ray lowers its workers' to 15."""
    try:
        return os.getpriority(os.PRIO_PROCESS, os.getppid())
    except OSError:
        return None


class NodeAgent:
    """The migperf agent on one node (a Ray actor; see the module docstring).

    Every method returns plain data. One batch of runs at a time runs in a
    child process (:mod:`migperf.experiments.node_runner`); its output is
    kept here until :meth:`poll` collects it.

    Args:
        heartbeat_timeout_s: Stop the runner and exit when the driver has not
            polled for this long (it is gone).
    """

    def __init__(self, heartbeat_timeout_s: float = 30.0) -> None:
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._cond = threading.Condition()
        self._items: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)
        self._last_poll = time.monotonic()
        self._closed = False
        threading.Thread(target=self._watch_driver, name="migperf-heartbeat", daemon=True).start()

    # ------------------------------------------------------------ driver calls

    def describe(
        self,
        config: dict[str, Any],
        simulate: str | None,
        read_only: bool | None,
        source: str = "config",
    ) -> dict[str, Any]:
        """This node, its GPUs and its plan of the experiment (see :func:`describe_node`)."""
        import ray

        self._last_poll = time.monotonic()
        info = describe_node(config, simulate=simulate, read_only=read_only, source=source)
        info["node_id"] = ray.get_runtime_context().get_node_id()
        return info

    def start(
        self,
        config: dict[str, Any],
        keys: dict[str, str],
        simulate: str | None,
        read_only: bool | None,
    ) -> int:
        """Start running a batch (planned key -> key to store under); returns the runner's pid.

        Raises:
            MigperfError: a batch is still running.
        """
        self._last_poll = time.monotonic()
        with self._cond:
            if self._proc is not None and self._proc.poll() is None:
                raise MigperfError(f"a batch is still running (pid {self._proc.pid})")
            self._stderr.clear()
            proc = subprocess.Popen(
                [sys.executable, "-m", MODULE],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_node_env(),
                text=True,
                encoding="utf-8",
                errors="replace",
                start_new_session=True,
            )
            self._proc = proc
        request = {
            "config": config,
            "keys": keys,
            "simulate": simulate,
            "read_only": read_only,
            "niceness": _node_niceness(),
        }
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.flush()
        self._readers = [
            threading.Thread(target=self._read_stdout, args=(proc,), daemon=True),
            threading.Thread(target=self._read_stderr, args=(proc,), daemon=True),
        ]
        for t in self._readers:
            t.start()
        return proc.pid

    def poll(self, wait_s: float = 0.5) -> dict[str, Any]:
        """What the runner sent since the last poll (waits up to ``wait_s`` for something).

        Each poll is also the driver's heartbeat.
        """
        self._last_poll = time.monotonic()
        with self._cond:
            if not self._items:
                # Also when idle: the driver polls every agent as its heartbeat.
                self._cond.wait(wait_s)
            proc = self._proc
            finished = proc is not None and not self._running()
            items, self._items = self._items, []
            return {
                "items": items,
                "running": proc is not None and not finished,
                "pid": proc.pid if proc is not None else None,
                "exit_code": proc.returncode if finished and proc is not None else None,
                "stderr_tail": list(self._stderr) if finished else [],
            }

    def stop(self) -> bool:
        """Ask the runner to stop (SIGTERM: current run aborted, the node restored).

        Returns:
            Whether a runner was running.
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        return True

    def close(self, timeout_s: float = 120.0) -> dict[str, Any]:
        """Stop the runner, wait for its restore, and kill it by pid if it does not end.

        Returns:
            ``{"agent_pid", "runner_pid", "exit_code", "killed", "items"}``;
            ``items`` is what the runner sent that no poll collected.
        """
        self._closed = True
        proc = self._proc
        killed = False
        if proc is not None and proc.poll() is None:
            self.stop()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                killed = True
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for t in self._readers:
            t.join(timeout=5.0)
        with self._cond:
            items, self._items = self._items, []
        return {
            "agent_pid": os.getpid(),
            "runner_pid": proc.pid if proc is not None else None,
            "exit_code": proc.returncode if proc is not None else None,
            "killed": killed,
            "items": items,
        }

    # ------------------------------------------------------------ internals

    def _running(self) -> bool:
        proc = self._proc
        if proc is None:
            return False
        return proc.poll() is None or any(t.is_alive() for t in self._readers)

    def _read_stdout(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                item = json.loads(line)
            except ValueError:
                item = {"type": "noise", "line": line.rstrip()[:500]}
            with self._cond:
                self._items.append(item)
                self._cond.notify_all()
        proc.wait()
        with self._cond:
            self._cond.notify_all()

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._stderr.append(line.rstrip()[:500])

    def _watch_driver(self) -> None:
        while not self._closed:
            time.sleep(min(1.0, self.heartbeat_timeout_s / 4))
            if self._closed or time.monotonic() - self._last_poll < self.heartbeat_timeout_s:
                continue
            logging.getLogger(__name__).warning(
                "no poll from the migperf driver for %g s: stopping the runner "
                "(it restores the node) and exiting",
                self.heartbeat_timeout_s,
            )
            self.close()
            os._exit(0)


# ---------------------------------------------------------------------- plans


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------- reports


@dataclass
class ClusterReport(ExperimentReport):
    """What a cluster sweep did, overall and per node (``nodes``)."""

    nodes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _NodeState:
    node: ClusterNode
    queue: list[str] = field(default_factory=list)
    batch: list[str] = field(default_factory=list)
    done: set[str] = field(default_factory=set)
    current: str | None = None
    running: bool = False
    alive: bool = True
    lost: str | None = None
    restored: bool | None = None
    runner_pids: list[int] = field(default_factory=list)
    inbox: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    stored: int = 0
    failed: int = 0
    unavailable_since: float | None = None
    last_report: dict[str, Any] | None = None
    close_info: dict[str, Any] | None = None


# ---------------------------------------------------------------------- the driver


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
    """

    NAME = "ray"

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
        self._ray = require_ray()
        self.address = address
        self.simulate = simulate
        self.read_only = read_only
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.start_timeout_s = start_timeout_s
        self.poll_s = poll_s
        self.close_timeout_s = close_timeout_s
        self.unavailable_grace_s = unavailable_grace_s
        self._connected_here = False
        self._agents: dict[str, Any] = {}

    # ------------------------------------------------------------ connection

    def _connect(self) -> None:
        ray = self._ray
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
                f"cannot connect to a Ray cluster at {where}: {_first_line(exc)}",
                hint=f"start one ({_START_HINT}), or name it with --executor ray:HOST:6379",
            ) from None
        self._connected_here = True

    def close(self) -> None:
        """End every agent (their runners first) and disconnect if connected here."""
        self._close_agents()
        if self._connected_here:
            self._ray.shutdown()
            self._connected_here = False

    def _close_agents(self, skip: set[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """Close the agents (not those in ``skip``), then kill them all; returns what each said."""
        ray = self._ray
        refs = {
            nid: agent.close.remote(self.close_timeout_s)
            for nid, agent in self._agents.items()
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
        ray = self._ray
        for agent in self._agents.values():
            with contextlib.suppress(Exception):
                ray.kill(agent, no_restart=True)
        self._agents = {}

    # ------------------------------------------------------------ planning

    def _candidate_nodes(self) -> list[dict[str, Any]]:
        nodes = [
            n
            for n in self._ray.nodes()
            if n.get("Alive") and (n.get("Resources") or {}).get(RESOURCE, 0) >= 1
        ]
        if not nodes:
            raise UsageError(
                f"the Ray cluster has no node with the custom resource {RESOURCE!r}",
                hint=_START_HINT,
            )
        return sorted(nodes, key=lambda n: (n.get("NodeManagerAddress", ""), n["NodeID"]))

    def _start_agents(self, nodes: list[dict[str, Any]]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        remote = self._ray.remote(NodeAgent)
        for n in nodes:
            nid = n["NodeID"]
            self._agents[nid] = remote.options(
                num_cpus=0,
                num_gpus=(n.get("Resources") or {}).get("GPU", 0),
                resources={RESOURCE: 1},
                scheduling_strategy=NodeAffinitySchedulingStrategy(nid, soft=False),
                lifetime="detached",
                max_restarts=0,
                max_task_retries=0,
            ).remote(self.heartbeat_timeout_s)

    def plan(self, cfg: ExperimentConfig, source: str = "config") -> ClusterPlan:
        """Place one agent per node, plan the config on every node, split the runs.

        Raises:
            UsageError: no cluster, no migperf node, an agent could not be
                placed, or a node runs another migperf version.
            ConfigError: the config does not fit some node (every node's problems listed).
            MigperfError: a node cannot open NVML.
        """
        import migperf

        ray = self._ray
        self._connect()
        nodes = self._candidate_nodes()
        self._close_agents()
        self._start_agents(nodes)
        config = cfg.model_dump(mode="json")
        refs = {
            agent.describe.remote(config, self.simulate, self.read_only, source): nid
            for nid, agent in self._agents.items()
        }
        ready, waiting = ray.wait(list(refs), num_returns=len(refs), timeout=self.start_timeout_s)
        if waiting:
            names = ", ".join(
                f"{refs[r][:12]} ({n.get('NodeManagerAddress')})"
                for r in waiting
                for n in nodes
                if n["NodeID"] == refs[r]
            )
            self._close_agents()
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
            except self._ray.exceptions.RayError as exc:
                info = {"error": {"message": _first_line(exc), "hint": ""}, "host": "?"}
            infos[nid] = info
            if info.get("error"):
                problems.append((nid, info))
        if problems:
            self._close_agents()
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
                hint=problems[0][1]["error"].get("hint") or _START_HINT,
            )
        versions = {nid: i["migperf_version"] for nid, i in infos.items()}
        other = {nid: v for nid, v in versions.items() if v != migperf.__version__}
        if other:
            self._close_agents()
            raise UsageError(
                f"node(s) {', '.join(f'{nid[:12]} (migperf {v})' for nid, v in other.items())} "
                f"run another migperf than this driver ({migperf.__version__})",
                hint="install the same migperf version on the driver and on every node",
            )
        return self._bind(cfg, source, infos)

    def _bind(
        self, cfg: ExperimentConfig, source: str, infos: dict[str, dict[str, Any]]
    ) -> ClusterPlan:
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

    # ------------------------------------------------------------ running

    def run(
        self,
        plan: ClusterPlan,
        store: ResultsStore,
        *,
        resume: bool = False,
        on_event: Event | None = None,
    ) -> ClusterReport:
        """Run the plan on its nodes; store each result as it arrives (see the module docstring).

        Returns:
            The report; ``restored`` is whether every node reported its
            layouts restored (a lost node cannot).
        """
        return _Sweep(self, plan, store, resume, on_event or (lambda kind, **info: None)).run()


class _Sweep:
    """One execution of a :class:`ClusterPlan` by the driver."""

    def __init__(
        self,
        ex: RayExecutor,
        plan: ClusterPlan,
        store: ResultsStore,
        resume: bool,
        emit: Event,
    ) -> None:
        self.ex = ex
        self.ray = ex._ray
        self.plan = plan
        self.store = store
        self.emit = emit
        self.config = plan.config.model_dump(mode="json")
        chash = plan.config.config_hash()
        stored = store.stored_keys(chash) if resume else set()
        self.todo = [r for r in plan.runs.values() if not set(r.member_keys) <= stored]
        self.report = ClusterReport(
            planned=len(plan.runs), skipped_existing=len(plan.runs) - len(self.todo)
        )
        self.states = {nid: _NodeState(node) for nid, node in plan.nodes.items()}
        for nid, keys in assign_runs(self.todo, list(plan.nodes)).items():
            self.states[nid].queue = list(keys)
        self.finished: set[str] = set()
        self.stopping = False
        self.polls: dict[Any, str] = {}

    # ------------------------------------------------------------ loop

    def run(self) -> ClusterReport:
        t0 = time.monotonic()
        self.emit("nodes", nodes=list(self.plan.nodes.values()))
        try:
            try:
                for nid in self.states:
                    self._start_batch(nid)
                self._loop()
            except KeyboardInterrupt:
                self.report.interrupted = True
                self.emit("interrupted")
                self._stop_all()
        finally:
            try:
                self._close()
            finally:
                self._finish_report(time.monotonic() - t0)
        return self.report

    def _close(self) -> None:
        """End the agents; store what their runners sent that no poll collected."""
        dead = {nid for nid, st in self.states.items() if not st.alive}
        closed = self.ex._close_agents(skip=dead)
        for nid, info in closed.items():
            st = self.states[nid]
            st.close_info = {k: v for k, v in (info or {}).items() if k != "items"} or None
            st.inbox.extend((info or {}).get("items") or [])
            self._drain(nid)

    def _stop_all(self) -> None:
        """After Ctrl-C: stop every runner, keep collecting until each has restored its node."""
        self.stopping = True
        ray = self.ray
        for nid, st in self.states.items():
            st.queue = []
            if st.alive and st.running:
                with contextlib.suppress(Exception):
                    ray.get(self.ex._agents[nid].stop.remote(), timeout=10.0)
        self.emit("stopping", nodes=[s.node for s in self.states.values() if s.running])
        deadline = time.monotonic() + self.ex.close_timeout_s
        try:
            self._loop(deadline)
        except KeyboardInterrupt:
            # A second Ctrl-C: stop waiting for the nodes' last results. Closing
            # the agents still lets each runner restore its node; a third
            # Ctrl-C kills them (each node's journal restores it at its next run).
            self.emit("forced")

    def _busy(self) -> bool:
        return any(st.alive and (st.running or st.queue or st.inbox) for st in self.states.values())

    def _loop(self, deadline: float | None = None) -> None:
        ray = self.ray
        while self._busy():
            if deadline is not None and time.monotonic() > deadline:
                return
            polled = set(self.polls.values())
            for nid, st in self.states.items():
                if st.inbox:
                    self._drain(nid)
                # Every live agent is polled: it is the driver's heartbeat, and
                # a poll dropped by Ctrl-C must not lose a node's last messages.
                if st.alive and nid not in polled:
                    self._poll(nid)
            ready, _ = ray.wait(list(self.polls), num_returns=1, timeout=5.0)
            for ref in ready:
                nid = self.polls.pop(ref)
                st = self.states[nid]
                try:
                    msg = ray.get(ref)
                except ray.exceptions.ActorUnavailableError as exc:
                    now = time.monotonic()
                    st.unavailable_since = st.unavailable_since or now
                    if now - st.unavailable_since > self.ex.unavailable_grace_s:
                        self._lost(nid, exc)
                    else:
                        time.sleep(0.2)
                    continue
                except ray.exceptions.RayActorError as exc:
                    self._lost(nid, exc)
                    continue
                st.unavailable_since = None
                st.inbox.extend(msg["items"])
                self._drain(nid)
                if st.running and not msg["running"]:
                    self._batch_ended(nid, msg)

    def _poll(self, nid: str) -> None:
        self.polls[self.ex._agents[nid].poll.remote(self.ex.poll_s)] = nid

    def _start_batch(self, nid: str) -> None:
        st = self.states[nid]
        if st.running or not st.alive or self.stopping:
            return
        if not st.queue and not (st.node.journal and not st.runner_pids):
            return
        keys = {self.plan.runs[k].planned_key: k for k in st.queue}
        st.batch, st.queue = st.queue, []
        st.running = True
        agent = self.ex._agents[nid]
        try:
            pid = self.ray.get(
                agent.start.remote(self.config, keys, self.ex.simulate, self.ex.read_only)
            )
        except self.ray.exceptions.RayError as exc:
            self._lost(nid, exc)
            return
        st.runner_pids.append(int(pid))
        self.emit("node_start", node=st.node, runs=len(st.batch), pid=pid, journal=st.node.journal)

    # ------------------------------------------------------------ messages

    def _drain(self, nid: str) -> None:
        st = self.states[nid]
        while st.inbox:
            self._handle(nid, st.inbox[0])
            st.inbox.popleft()

    def _handle(self, nid: str, item: Mapping[str, Any]) -> None:
        st = self.states[nid]
        kind = item.get("type")
        if kind == "record":
            self._store(nid, record_from_dict(item["record"]))
        elif kind == "event":
            self._event(nid, item)
        elif kind == "missing":
            reverse = {r.planned_key: r.key for r in self.plan.runs.values() if nid in r.nodes}
            for planned in item["keys"]:
                key = reverse.get(planned, planned)
                self._fail_run(
                    nid,
                    key,
                    f"{st.node.name} no longer plans this run (its GPUs changed since planning)",
                )
        elif kind == "report":
            st.last_report = dict(item)
            if item.get("ok"):
                st.restored = bool(item.get("restored"))
                for name, value in (item.get("time_s") or {}).items():
                    self.report.time_s[name] = self.report.time_s.get(name, 0.0) + float(value)

    def _event(self, nid: str, item: Mapping[str, Any]) -> None:
        st = self.states[nid]
        kind = item["kind"]
        info = {k: v for k, v in item.items() if k not in ("type", "kind")}
        if kind == "run_start":
            st.current = item.get("key")
        elif kind == "run_done":
            key = item.get("key")
            if key is None:
                return
            st.current = None
            st.done.add(key)
            if key in self.finished:
                return
            self.finished.add(key)
            results = item.get("results") or []
            first = results[0] if results else {}
            info.update(
                status=first.get("status") or item.get("status", ""),
                samples_per_s=first.get("samples_per_s"),
                error=first.get("error") or item.get("error"),
                done=len(self.finished),
                total=len(self.todo),
            )
            info.pop("results", None)
        self.emit(kind, node=st.node, **info)

    def _store(self, nid: str, rec: Any) -> None:
        st = self.states[nid]
        params = dict(rec.params or {})
        params["node"] = {"executor": "ray", "node_id": nid, "host": st.node.host}
        rec = replace(rec, params=params)
        if self.store.record(rec) is None or params.get("role") == "neighbor":
            return
        if rec.status == "ok":
            self.report.stored += 1
            st.stored += 1
        else:
            self.report.failed += 1
            st.failed += 1

    def _fail_run(self, nid: str, key: str, reason: str) -> None:
        """Store a run that will not run as failed, with the reason."""
        run = self.plan.runs[key]
        for t in run.templates:
            self._store(nid, record_from_dict(dict(t, status="failed", error=reason)))
        self.states[nid].done.add(key)
        if key not in self.finished:
            self.finished.add(key)
            self.emit(
                "run_done",
                node=self.states[nid].node,
                key=key,
                description=run.description,
                status="failed",
                samples_per_s=None,
                error=reason,
                done=len(self.finished),
                total=len(self.todo),
            )

    # ------------------------------------------------------------ faults

    def _unfinished(self, st: _NodeState) -> list[str]:
        return [k for k in st.batch if k not in st.done and k not in self.finished]

    def _batch_ended(self, nid: str, msg: Mapping[str, Any]) -> None:
        st = self.states[nid]
        st.running = False
        left = self._unfinished(st)
        report = st.last_report or {}
        code = msg.get("exit_code")
        if left and not self.stopping and not report.get("interrupted"):
            why = report.get("error") or (
                f"its runner (pid {msg.get('pid')}) exited with code {code}"
                + (f": {msg['stderr_tail'][-1]}" if msg.get("stderr_tail") else "")
            )
            self._node_failed(nid, f"{st.node.name} failed: {why}", left)
        st.batch, st.current = [], None
        self.emit(
            "node_done",
            node=st.node,
            exit_code=code,
            restored=st.restored,
            interrupted=bool(report.get("interrupted")),
        )
        self._start_batch(nid)

    def _lost(self, nid: str, exc: BaseException) -> None:
        st = self.states[nid]
        if not st.alive:
            return
        st.alive = False
        st.restored = None
        reason = f"{st.node.name} lost: {_first_line(exc)}"
        st.lost = reason
        left = self._unfinished(st) + [k for k in st.queue if k not in self.finished]
        st.queue = []
        st.running = False
        self.emit("node_lost", node=st.node, error=reason, runs_left=len(left))
        if self.stopping:
            return
        self._node_failed(nid, reason, left)

    def _node_failed(self, nid: str, reason: str, left: list[str]) -> None:
        """The current run of a node that failed is failed; its other runs go elsewhere."""
        st = self.states[nid]
        if st.current in left:
            self._fail_run(nid, st.current, reason)
            left = [k for k in left if k != st.current]
        st.current = None
        moved: dict[str, list[str]] = {}
        for key in left:
            run = self.plan.runs[key]
            others = [
                n for n in run.nodes if n != nid and self.states[n].alive and n in self.ex._agents
            ]
            if not others:
                self._fail_run(
                    nid, key, f"{reason}; no other node with {run.model} is left to run it"
                )
                continue
            target = min(
                others,
                key=lambda n: len(self._unfinished(self.states[n])) + len(self.states[n].queue),
            )
            self.states[target].queue.append(key)
            moved.setdefault(target, []).append(key)
        for target, keys in moved.items():
            self.emit("requeued", node=self.states[target].node, source=st.node, runs=len(keys))
            self._start_batch(target)

    # ------------------------------------------------------------ report

    def _finish_report(self, wall_s: float) -> None:
        rep = self.report
        rep.wall_s = wall_s
        rep.restored = all(st.restored for st in self.states.values() if st.runner_pids)
        for nid, st in self.states.items():
            rep.nodes.append(
                {
                    "node_id": nid,
                    "host": st.node.host,
                    "model": st.node.model,
                    "simulated": st.node.simulated,
                    "machine": st.node.machine,
                    "stored": st.stored,
                    "failed": st.failed,
                    "lost": st.lost,
                    "restored": st.restored,
                    "agent_pid": st.node.agent_pid,
                    "runner_pids": list(st.runner_pids),
                    "closed": st.close_info,
                }
            )
