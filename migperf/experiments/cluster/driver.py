"""The driver's side of a cluster sweep: start batches, poll agents, store, handle faults.

The driver (the process that called :meth:`RayExecutor.run`) is the only
writer of the results store. It polls every agent (each poll is also the
driver's heartbeat), stores each record as it arrives (a run key already
stored is ignored), fails the current run of a lost node and moves its other
runs to a node with the same GPU model, and on Ctrl-C stops every runner and
waits for each to restore its node.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, Protocol

from migperf.experiments.cluster.assignment import (
    ClusterNode,
    ClusterPlan,
    ClusterReport,
    assign_runs,
)
from migperf.experiments.events import Event
from migperf.experiments.records import plan_attempts
from migperf.results.store import ResultsStore, RunRecord

__all__ = ["AgentPool", "ClusterSweep", "NodeState", "first_line"]


class AgentPool(Protocol):
    """What the driver needs of its executor (a :class:`~.ray_executor.RayExecutor`)."""

    ray: ModuleType
    agents: dict[str, Any]
    simulate: str | None
    read_only: bool | None
    poll_s: float
    close_timeout_s: float
    unavailable_grace_s: float

    def close_agents(self, skip: set[str] | None = None) -> dict[str, dict[str, Any] | None]:
        """Close the agents (not those in ``skip``), then kill them all; what each said."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (Ray's are long), or its type's name."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass
class NodeState:
    """What the driver knows of one node during a sweep."""

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


class ClusterSweep:
    """One execution of a :class:`ClusterPlan` by the driver (see :mod:`migperf.experiments.cluster`).

    Args:
        ex: The executor holding the agents.
        plan: What to run.
        store: The only writer of the results.
        resume: Skip runs done (see :data:`~migperf.experiments.records.DONE_STATUSES`).
        emit: Progress events.
        rerun: Measure every run again as new attempts.

    Raises:
        UsageError: the store holds runs of this config and neither flag is set.
    """

    def __init__(
        self,
        ex: AgentPool,
        plan: ClusterPlan,
        store: ResultsStore,
        resume: bool,
        emit: Event,
        rerun: bool = False,
    ) -> None:
        self.ex = ex
        self.ray = ex.ray
        self.plan = plan
        self.store = store
        self.emit = emit
        self.config = plan.config.model_dump(mode="json")
        chash = plan.config.config_hash()
        self.attempts = plan_attempts(
            store.latest_attempts(chash),
            experiment=plan.config.name,
            config_hash=chash,
            resume=resume,
            rerun=rerun,
        )
        done = self.attempts.done
        self.todo = [r for r in plan.runs.values() if not set(r.member_keys) <= done]
        self.report = ClusterReport(
            planned=len(plan.runs), skipped_existing=len(plan.runs) - len(self.todo)
        )
        self.states = {nid: NodeState(node) for nid, node in plan.nodes.items()}
        for nid, keys in assign_runs(self.todo, list(plan.nodes)).items():
            self.states[nid].queue = list(keys)
        self.finished: set[str] = set()
        self.stopping = False
        self.polls: dict[Any, str] = {}

    # ------------------------------------------------------------ loop

    def run(self) -> ClusterReport:
        """Run every batch, store every record, give every node back; the report."""
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
        closed = self.ex.close_agents(skip=dead)
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
                    ray.get(self.ex.agents[nid].stop.remote(), timeout=10.0)
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
        self.polls[self.ex.agents[nid].poll.remote(self.ex.poll_s)] = nid

    def _start_batch(self, nid: str) -> None:
        st = self.states[nid]
        if st.running or not st.alive or self.stopping:
            return
        if not st.queue and not (st.node.journal and not st.runner_pids):
            return
        keys = {self.plan.runs[k].planned_key: k for k in st.queue}
        st.batch, st.queue = st.queue, []
        st.running = True
        agent = self.ex.agents[nid]
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
            self._store(nid, RunRecord.from_dict(item["record"]))
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
        self.emit(kind, node=st.node, **info)

    def _store(self, nid: str, rec: Any) -> None:
        st = self.states[nid]
        params = dict(rec.params or {})
        params["node"] = {"executor": "ray", "node_id": nid, "host": st.node.host}
        rec = replace(rec, params=params, attempt=self.attempts.attempt(rec.run_key))
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
            self._store(nid, RunRecord.from_dict(dict(t, status="failed", error=reason)))
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

    def _unfinished(self, st: NodeState) -> list[str]:
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
        reason = f"{st.node.name} lost: {first_line(exc)}"
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
                n for n in run.nodes if n != nid and self.states[n].alive and n in self.ex.agents
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
