"""Running a sweep across a cluster: one agent per node, one results store.

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
  (:func:`~migperf.experiments.cluster.node.describe_node`). Nodes are grouped
  by GPU model; each model's runs are split across its nodes in contiguous
  chunks of the plan order, so each node applies as few layouts as possible.
  All problems of all nodes are reported at once, before anything changes.
* Running. Nodes run in parallel, each one run at a time: the agent runs the
  single-node :class:`~migperf.experiments.runner.ExperimentRunner` on its
  chunk in a child process (:mod:`~migperf.experiments.cluster.node`) and
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
  child processes); the layouts its runner recorded per GPU are put back by the next migperf command there
  at the next run of the same config there.
* Keys. A run key names the layout, GPU index, slot, job and point, not the
  GPU model, so a sweep has the same keys locally and on a cluster. When two
  GPU models in the cluster plan the same key (whole GPUs with MIG off), the
  driver keys those runs per model, so each model's result is stored.

Modules: :mod:`.node` (the node side: plan here, run a subset, stream the
records), :mod:`.agent` (the Ray actor on each node), :mod:`.assignment`
(nodes, runs, which node runs what; the cluster plan and report),
:mod:`.driver` (the driver's loop: polls, stores, faults) and
:mod:`.ray_executor` (the :class:`~migperf.experiments.executor.Executor`
for Ray). Example::

    with open_executor("ray:head:6379") as ex, ResultsStore(db) as store:
        report = ex.run(ex.plan(cfg, "sweep.yaml", dry_run=False), store)
"""

from __future__ import annotations

from migperf.experiments.cluster.assignment import (
    ClusterNode,
    ClusterPlan,
    ClusterReport,
    ClusterRun,
    assign_runs,
)

__all__ = ["ClusterNode", "ClusterPlan", "ClusterReport", "ClusterRun", "assign_runs"]
