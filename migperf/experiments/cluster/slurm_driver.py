"""The driver's side of a Slurm sweep: submit jobs, merge their shards, handle jobs that end early.

The driver is the only writer of the results store. Each job appends its
messages to its own shard (:mod:`~migperf.experiments.cluster.slurm_job`);
the driver reads each shard's new complete lines every poll, stores every
record it has not stored from that job before (a run key per job id is
stored once, also across driver restarts: the store's records carry their
job id), and asks Slurm for the jobs' states. A job that ends with runs left
(failed, cancelled, timed out, preempted, node failure): its current run is
stored as failed with Slurm's state and reason, its other runs go to a new
job (a run is tried in at most ``max_jobs_per_run`` jobs). The job ids and
their runs are kept in ``state.json`` next to the shards, so ``--resume``
after a driver restart picks up jobs still running and merges the shards
of those that ended.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from migperf.errors import UsageError
from migperf.experiments.cluster.assignment import ClusterPlan, ClusterReport
from migperf.experiments.cluster.slurm_cli import (
    JobState,
    SlurmOptions,
    job_states,
    sbatch,
    scancel,
)
from migperf.experiments.cluster.slurm_job import MODULE as JOB_MODULE
from migperf.experiments.events import Event
from migperf.experiments.records import DONE_STATUSES, plan_attempts
from migperf.results.store import ResultsStore, RunRecord

__all__ = ["JobNode", "SlurmJob", "SlurmSweep", "chunk", "job_script"]


def chunk(keys: list[str], parts: int) -> list[list[str]]:
    """``keys`` in at most ``parts`` contiguous, even chunks (plan order kept: fewer layout changes)."""
    size = math.ceil(len(keys) / max(1, parts)) if keys else 0
    return [keys[i : i + size] for i in range(0, len(keys), size)] if size else []


def job_script(python: str, *args: str | Path) -> str:
    """The batch script of a job: one ``exec``, every argument quoted."""
    cmd = " ".join(shlex.quote(str(a)) for a in (python, "-m", JOB_MODULE, *args))
    return f"#!/bin/sh\n# Written by migperf (Slurm executor).\nexec {cmd}\n"


@dataclass
class JobNode:
    """A job as progress events show it (``node.name``)."""

    job_id: str
    host: str = ""
    model: str = ""
    simulated: bool = False

    @property
    def name(self) -> str:
        """``slurm job 12 (gpu-07)``."""
        return f"slurm job {self.job_id}" + (f" ({self.host})" if self.host else "")


@dataclass
class SlurmJob:
    """One job of the sweep, as the driver follows it."""

    job_id: str
    name: str
    keys: list[str]
    node: JobNode
    closed: bool = False
    state: str = "PENDING"
    offset: int = 0
    done: set[str] = field(default_factory=set)
    current: str | None = None
    report: dict[str, Any] | None = None
    lost: str | None = None
    stored: int = 0
    failed: int = 0
    shown: tuple[Any, ...] = ()


class SlurmSweep:
    """One execution of a Slurm plan by the driver (see the module docstring)."""

    def __init__(
        self,
        plan: ClusterPlan,
        opts: SlurmOptions,
        workdir: Path,
        store: ResultsStore,
        *,
        resume: bool,
        rerun: bool,
        emit: Event,
        simulate: str | None,
        read_only: bool | None,
    ) -> None:
        self.plan, self.opts, self.workdir, self.store, self.emit = plan, opts, workdir, store, emit
        self.simulate, self.read_only = simulate, read_only
        self.resume = resume
        cfg = plan.config
        self.chash = cfg.config_hash()
        self.config = cfg.model_dump(mode="json")
        self.model = next(iter(plan.nodes.values())).model if plan.nodes else ""
        self.simulated = any(n.simulated for n in plan.nodes.values())
        latest = store.latest_attempts(self.chash)
        plan_attempts(
            latest, experiment=cfg.name, config_hash=self.chash, resume=resume, rerun=rerun
        )
        self.latest = dict(latest)
        self.state_path = workdir / "state.json"
        old = self._load_state()
        self.jobs: dict[str, SlurmJob] = {}
        self.tries: dict[str, int] = {}
        live = [j for j in old.get("jobs", []) if not j.get("closed")]
        states = job_states(j["job_id"] for j in live)
        active = [jid for jid, s in states.items() if s.active]
        if active and not resume:
            raise UsageError(
                f"{len(active)} Slurm job(s) of an earlier `migperf run` of {cfg.name!r} are still "
                f"queued or running (job ids {', '.join(active)})",
                hint="add --resume to pick them up, or cancel them with `scancel "
                + " ".join(active)
                + "`",
            )
        if resume:
            self.tries = dict(old.get("tries", {}))
            for j in old.get("jobs", []):
                self.jobs[j["job_id"]] = SlurmJob(
                    j["job_id"],
                    j["name"],
                    list(j["keys"]),
                    JobNode(j["job_id"], j.get("host", ""), self.model, self.simulated),
                    closed=bool(j.get("closed")),
                )
        self.merged = self._merged_before()
        self.finished: set[str] = set()
        self.stopping = False
        self.total = 0
        self.session = time.strftime("%Y%m%d-%H%M%S")
        self.seq = 0
        self.report = ClusterReport(planned=len(plan.runs))

    # ------------------------------------------------------------ state

    def _load_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}
        return data if data.get("config_hash") == self.chash else {}

    def _save_state(self) -> None:
        data = {
            "config_hash": self.chash,
            "experiment": self.plan.config.name,
            "tries": self.tries,
            "jobs": [
                {
                    "job_id": j.job_id,
                    "name": j.name,
                    "keys": j.keys,
                    "closed": j.closed,
                    "host": j.node.host,
                }
                for j in self.jobs.values()
            ],
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.state_path)

    def _merged_before(self) -> set[tuple[str, str]]:
        """(job id, run key) of every record an earlier driver stored from these jobs."""
        if not self.jobs:
            return set()
        rows = self.store.query(
            "SELECT run_key, json_extract(params, '$.node.job_id') AS job FROM runs "
            "WHERE config_hash = ? AND json_extract(params, '$.node.executor') = 'slurm'",
            (self.chash,),
        )
        return {(str(r["job"]), r["run_key"]) for r in rows if str(r["job"]) in self.jobs}

    def _done(self, key: str) -> bool:
        if key in self.finished:
            return True
        run = self.plan.runs[key]
        return self.resume and all(
            self.latest.get(k, (0, ""))[1] in DONE_STATUSES for k in run.member_keys
        )

    # ------------------------------------------------------------ loop

    def run(self) -> ClusterReport:
        """Submit, follow and merge every job; the report."""
        t0 = time.monotonic()
        try:
            try:
                self._start()
                self._loop()
            except KeyboardInterrupt:
                self.report.interrupted = True
                self.emit("interrupted")
                self._stop_all()
        finally:
            self._save_state()
            self._finish_report(time.monotonic() - t0)
        return self.report

    def _start(self) -> None:
        old = [j for j in self.jobs.values()]
        for job in old:
            self._read_shard(job)
        open_jobs = [j for j in old if not j.closed]
        states = job_states(j.job_id for j in open_jobs)
        for job in open_jobs:
            job.state = states[job.job_id].state
            if not states[job.job_id].active:
                self._job_ended(job, states[job.job_id])
        busy = {k for j in self.jobs.values() if not j.closed for k in j.keys}
        todo = [k for k in self.plan.runs if not self._done(k) and k not in busy]
        self.report.skipped_existing = len(self.plan.runs) - len(todo) - len(busy)
        self.total = len(todo) + len(busy)
        self.emit("started", runs=self.total, stored=self.report.skipped_existing)
        for keys in chunk(todo, self.opts.jobs):
            self._submit(keys)
        self._save_state()
        self._show()

    def _active(self) -> list[SlurmJob]:
        return [j for j in self.jobs.values() if not j.closed]

    def _loop(self, deadline: float | None = None) -> None:
        while self._active():
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(self.opts.poll_s)
            self._poll()

    def _poll(self) -> None:
        jobs = self._active()
        for job in jobs:
            self._read_shard(job)
        states = job_states(j.job_id for j in jobs)
        for job in jobs:
            st = states[job.job_id]
            job.state = st.state
            if st.nodes and not job.node.host and st.nodes not in ("(null)", ""):
                job.node.host = st.nodes
            if not st.active:
                self._read_shard(job)
                self._job_ended(job, st)
        self._show()

    def _submit(self, keys: list[str]) -> SlurmJob:
        self.seq += 1
        name = f"{self.session}-{self.seq:03d}"
        request = self.workdir / f"{name}.request.json"
        shard = self.workdir / f"{name}.jsonl"
        script = self.workdir / f"{name}.sh"
        request.write_text(
            json.dumps(
                {
                    "config": self.config,
                    "keys": {self.plan.runs[k].planned_key: k for k in keys},
                    "simulate": self.simulate,
                    "read_only": self.read_only,
                    # With --simulate each job is a simulated machine of its own.
                    "state_dir": str(self.workdir / "sim" / name) if self.simulate else None,
                }
            )
        )
        shard.touch()
        script.write_text(job_script(self.opts.python or sys.executable, "run", request, shard))
        job_id = sbatch(
            script,
            [f"--chdir={self.workdir}", *self.opts.sbatch_options(self.seq - 1)],
            self.workdir / f"{name}.out",
            f"migperf-{self.plan.config.name}"[:60],
        )
        job = SlurmJob(job_id, name, list(keys), JobNode(job_id, "", self.model, self.simulated))
        self.jobs[job_id] = job
        self._save_state()
        return job

    def _stop_all(self) -> None:
        """After Ctrl-C: SIGTERM to running jobs (each restores its node), cancel pending ones."""
        self.stopping = True
        jobs = self._active()
        running = [j.job_id for j in jobs if j.state not in ("PENDING", "CONFIGURING")]
        scancel([j.job_id for j in jobs if j.job_id not in running])
        scancel(running, signal="TERM")
        self.emit("stopping", nodes=[j.node for j in jobs])
        try:
            self._loop(time.monotonic() + self.opts.close_timeout_s)
        except KeyboardInterrupt:
            self.emit("forced")
        scancel(j.job_id for j in self._active())
        for job in self._active():
            self._read_shard(job)
            job.closed = True

    # ------------------------------------------------------------ shards

    def _read_shard(self, job: SlurmJob) -> None:
        path = self.workdir / f"{job.name}.jsonl"
        try:
            with path.open("rb") as fh:
                fh.seek(job.offset)
                data = fh.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1  # only complete lines; a partial one waits
        job.offset += end
        for line in data[:end].splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            self._handle(job, item)

    def _handle(self, job: SlurmJob, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "record":
            self._store(job, RunRecord.from_dict(item["record"]))
        elif kind == "started":
            job.node.host = (item.get("slurm") or {}).get("SLURMD_NODENAME") or job.node.host
        elif kind == "missing":
            reverse = {r.planned_key: r.key for r in self.plan.runs.values()}
            for planned in item["keys"]:
                self._fail_run(
                    job,
                    reverse.get(planned, planned),
                    f"{job.node.name} does not plan this run (its node has other GPUs)",
                )
        elif kind == "report":
            job.report = dict(item)
            for name, value in (item.get("time_s") or {}).items():
                self.report.time_s[name] = self.report.time_s.get(name, 0.0) + float(value)
        elif kind == "event":
            info = {k: v for k, v in item.items() if k not in ("type", "kind")}
            ev = item["kind"]
            if ev == "run_start":
                job.current = item.get("key")
            elif ev == "run_done" and item.get("key"):
                key = item["key"]
                job.current = None
                job.done.add(key)
                if key in self.finished:
                    return
                self.finished.add(key)
                first = (item.get("results") or [{}])[0]
                info.update(
                    status=first.get("status") or item.get("status", ""),
                    error=first.get("error") or item.get("error"),
                    done=len(self.finished),
                    total=self.total,
                )
            self.emit(ev, node=job.node, **info)

    def _store(self, job: SlurmJob, rec: RunRecord) -> None:
        if (job.job_id, rec.run_key) in self.merged:
            return
        params = dict(rec.params or {})
        params["node"] = {"executor": "slurm", "job_id": job.job_id, "host": job.node.host}
        attempt = self.latest.get(rec.run_key, (0, ""))[0] + 1
        rec = replace(rec, params=params, attempt=attempt)
        self.merged.add((job.job_id, rec.run_key))
        if self.store.record(rec) is None:
            return
        self.latest[rec.run_key] = (attempt, rec.status)
        if params.get("role") == "neighbor":
            return
        if rec.status == "ok":
            self.report.stored += 1
            job.stored += 1
        else:
            self.report.failed += 1
            job.failed += 1

    def _fail_run(self, job: SlurmJob, key: str, reason: str) -> None:
        run = self.plan.runs[key]
        for t in run.templates:
            self._store(job, RunRecord.from_dict(dict(t, status="failed", error=reason)))
        job.done.add(key)
        if key not in self.finished:
            self.finished.add(key)
            self.emit(
                "run_done",
                node=job.node,
                key=key,
                description=run.description,
                status="failed",
                samples_per_s=None,
                error=reason,
                done=len(self.finished),
                total=self.total,
            )

    # ------------------------------------------------------------ faults

    def _job_ended(self, job: SlurmJob, st: JobState) -> None:
        job.closed = True
        left = [k for k in job.keys if k not in job.done and k not in self.finished]
        if left and not self.stopping:
            why = st.describe()
            if job.report and job.report.get("error"):
                why += f": {job.report['error']}"
            job.lost = why
            self.emit("node_lost", node=job.node, error=why, runs_left=len(left))
            if job.current in left:
                self._fail_run(job, job.current, why)
                left.remove(job.current)
            again = []
            for key in left:
                self.tries[key] = self.tries.get(key, 1) + 1
                if self.tries[key] > self.opts.max_jobs_per_run:
                    self._fail_run(job, key, f"{why}; tried in {self.opts.max_jobs_per_run} jobs")
                else:
                    again.append(key)
            if again:
                new = self._submit(again)
                self.emit("requeued", node=new.node, source=job.node, runs=len(again))
        job.current = None
        self._save_state()

    # ------------------------------------------------------------ progress, report

    def _show(self) -> None:
        lines = []
        for job in self.jobs.values():
            done = sum(1 for k in job.keys if k in job.done)
            running = 1 if job.current and not job.closed else 0
            queued = 0 if job.closed else len(job.keys) - done - running
            shown = (job.state, done, running, job.node.host)
            if shown != job.shown:
                job.shown = shown
                lines.append(
                    f"{job.node.name} {job.state}: {done} done, {running} running, "
                    f"{queued} queued of {len(job.keys)} run(s)"
                )
        if lines:
            active = len(self._active())
            lines.append(
                f"slurm: {len(self.finished)}/{self.total} run(s) done; {active} job(s) queued or running"
            )
            self.emit("jobs", lines=lines)

    def _finish_report(self, wall_s: float) -> None:
        rep = self.report
        rep.wall_s = wall_s
        reports = [j.report for j in self.jobs.values() if j.report is not None]
        rep.restored = all(r.get("restored") for r in reports if r.get("ok"))
        for job in self.jobs.values():
            rep.nodes.append(
                {
                    "node_id": f"job {job.job_id}",
                    "host": job.node.host or "?",
                    "model": job.node.model,
                    "simulated": job.node.simulated,
                    "stored": job.stored,
                    "failed": job.failed,
                    "lost": job.lost,
                    "restored": (job.report or {}).get("restored"),
                    "state": job.state,
                }
            )
