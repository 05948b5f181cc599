"""The node side of a cluster sweep: run some of a plan's runs here, stream every result.

A cluster executor (:mod:`migperf.experiments.cluster.ray_executor`, later
Slurm or Kubernetes) has one agent per node. The agent does two things with this
module, and nothing else touches the GPUs:

* :func:`describe_node` opens NVML on the node (the real driver; the simulator
  only when ``MIGPERF_SIMULATE`` or an explicit spec asks for it, never as a
  silent fallback), lists its GPUs and plans the experiment there with
  :func:`~migperf.experiments.planning.plan_experiment`. It returns plain data:
  each run's key, description, member keys and the records to store should
  the run be lost with the node.
* :func:`main` (``python -m migperf.experiments.cluster.node``) runs the
  single-node :class:`~migperf.experiments.runner.ExperimentRunner` on a
  subset of that plan, in a process of its own. It reads one JSON request
  line on stdin, and writes JSON lines on its stdout: ``started``, runner
  events, one ``record`` per result (the
  :meth:`~migperf.results.store.RunRecord.to_dict`, via
  :class:`StreamingStore`), and a final ``report``. The driver, not the node,
  writes the results store.

Why a process, not a thread of the agent: stopping is then exactly the local
runner's SIGTERM path (the current run is aborted, its workers killed, the
node's layouts restored, the layouts found kept on disk until they are), and a
runner that loses its agent (stdin closes) stops the same way instead of
running on unattended.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

from migperf.errors import ConfigError, MigperfError
from migperf.experiments.config import ExperimentConfig
from migperf.experiments.events import event_message
from migperf.experiments.planning import ExperimentPlan, plan_experiment
from migperf.experiments.records import RecordContext, failure_records
from migperf.experiments.runner import ExperimentRunner
from migperf.mig.journal import OriginalLayout
from migperf.results.store import RunRecord

__all__ = [
    "MODULE",
    "SentRuns",
    "StreamingStore",
    "describe_node",
    "main",
    "node_model",
    "subset_plan",
]

MODULE = "migperf.experiments.cluster.node"


def node_model(gpu_names: list[str]) -> str:
    """The GPU model of a node as one string (``NVIDIA A30``, ``2 x NVIDIA A100 ... + ...``).

    Nodes with the same model string are interchangeable for a sweep: any of
    them can run any of the others' runs.
    """
    counts: dict[str, int] = {}
    for name in gpu_names:
        counts[name] = counts.get(name, 0) + 1
    return " + ".join(name if n == 1 else f"{n} x {name}" for name, n in counts.items())


def describe_node(
    config: Mapping[str, Any],
    *,
    simulate: str | None = None,
    read_only: bool | None = None,
    source: str = "config",
    dry_run: bool = True,
) -> dict[str, Any]:
    """This node's GPUs and the experiment's runs on them, as plain data.

    Each run comes with the records to store should it fail without running
    (``templates``: status and error to fill in), built by the same
    :func:`~migperf.experiments.records.failure_records` the runner uses.
    ``dry_run`` False plans to run: read-only mode then refuses a config
    that changes layouts.

    Never raises for a problem of the node or of the config on it: the
    answer's ``error`` (``{"message", "hint", "config"}``; ``config`` is
    whether the config is at fault, not the node) says what went wrong, so
    the driver can report every node's problem at once.
    """
    import migperf
    from migperf.nvml import open_nvml

    out: dict[str, Any] = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "migperf_version": migperf.__version__,
        "gpus": [],
        "model": None,
        "simulated": None,
        "machine": None,
        "runs": [],
        "journal": None,
        "error": None,
    }
    try:
        cfg = ExperimentConfig.model_validate(dict(config))
        nvml = open_nvml(simulate, allow_fallback=False, read_only=read_only)
    except MigperfError as exc:
        out["error"] = {"message": exc.message, "hint": exc.hint, "config": False}
        return out
    try:
        out["simulated"] = nvml.simulated
        out["machine"] = nvml.machine
        # A runner killed here (its node lost) left the layouts it found: the
        # next runner here puts them back, so the node needs one even with no runs.
        journals = [
            OriginalLayout(nvml.gpu(index).uuid, None, nvml.machine, index)
            for index in range(nvml.gpu_count())
        ]
        pending = [str(j.path) for j in journals if j.exists()]
        out["journal"] = pending[0] if pending else None
        for index in range(nvml.gpu_count()):
            info = nvml.gpu(index)
            out["gpus"].append(
                {
                    "index": index,
                    "name": info.name,
                    "uuid": info.uuid,
                    "mig_capable": info.mig_mode is not None,
                    "mig_enabled": bool(info.mig_mode and info.mig_mode.current),
                }
            )
        plan = plan_experiment(nvml, cfg, source, dry_run=dry_run)
        out["model"] = node_model([out["gpus"][g]["name"] for g in plan.gpus])
        ctx = RecordContext.of(nvml, cfg.name, cfg.config_hash(), plan.gpus)
        for run in plan.runs:
            out["runs"].append(
                {
                    "key": run.run_key,
                    "description": run.describe(),
                    "layout_index": run.layout_index,
                    "gpu_index": run.gpu_index,
                    "members": [m.name for m in run.members] if run.grouped else [],
                    "templates": [r.to_dict() for r in failure_records(ctx, run, "failed", "")],
                }
            )
    except MigperfError as exc:
        out["error"] = {
            "message": exc.message,
            "hint": exc.hint,
            "config": isinstance(exc, ConfigError),
        }
    finally:
        nvml.shutdown()
    return out


def subset_plan(plan: ExperimentPlan, keys: Mapping[str, str]) -> tuple[ExperimentPlan, list[str]]:
    """The plan with only the runs named in ``keys`` (planned key -> key to store under).

    Returns:
        The subset plan (runs in plan order, keyed as asked) and the asked
        keys this node did not plan.
    """
    runs = [
        dataclasses.replace(r, run_key=keys[r.run_key]) if keys[r.run_key] != r.run_key else r
        for r in plan.runs
        if r.run_key in keys
    ]
    planned = {r.run_key for r in plan.runs}
    missing = [k for k in keys if k not in planned]
    return dataclasses.replace(plan, runs=runs), missing


class StreamingStore:
    """A results store that forwards every record, as a JSON line, to whoever reads ``out``.

    The node never decides what is stored: the driver does (idempotently, by
    run key), so :meth:`stored_keys` is empty and :meth:`record` always
    returns a pseudo row id.
    """

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.sent = 0

    def send(self, message: Mapping[str, Any]) -> None:
        """Write one message; a reader that is gone is ignored (the runner is being stopped)."""
        line = json.dumps(message, default=str)
        with self.lock:
            try:
                self.out.write(line + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass

    def record(self, rec: RunRecord) -> int:
        """Forward one record."""
        self.send({"type": "record", "record": rec.to_dict()})
        self.sent += 1
        return self.sent

    def stored_keys(self, config_hash: str) -> set[str]:
        """Nothing is stored here (the driver skips stored runs before it assigns them)."""
        return set()

    def latest_attempts(self, config_hash: str) -> dict[str, tuple[int, str]]:
        """Nothing is stored here: the driver numbers the attempts when it stores them."""
        return {}


def _claim_stdout() -> IO[str]:
    """The protocol stream; anything else printed to stdout goes to stderr instead."""
    fd = os.dup(1)
    os.dup2(2, 1)
    return os.fdopen(fd, "w", encoding="utf-8")


class SentRuns:
    """Run the runs a driver sent, on this machine: the node side shared by Ray and Slurm.

    Plans the request's config here, runs the keys the driver sent (it decided
    what to run and numbers the attempts: ``rerun``), and streams events and
    records to ``store``, then one ``report``. Install :meth:`on_term` as the
    SIGTERM handler: before the runner starts nothing has changed, so it stops
    at once; while the runner runs, the runner's own handler turns SIGTERM into
    Ctrl-C, and a signal that lands just before that handler is in place stops
    it at its next event; after the runner returns the restore is in
    progress, and it finishes.
    """

    def __init__(self, store: StreamingStore) -> None:
        self.store = store
        self.phase = "setup"
        self.stop = threading.Event()

    def on_term(self, signum: int, frame: Any) -> None:
        """The SIGTERM handler (see the class docstring)."""
        self.stop.set()
        if self.phase == "setup":
            raise KeyboardInterrupt(f"signal {signum}")

    def on_event(self, kind: str, **info: Any) -> None:
        """The runner's event callback: stream it, and stop where a stop was asked for."""
        self.store.send(event_message(kind, info))
        if self.stop.is_set() and kind in ("layout", "run_start"):
            raise KeyboardInterrupt("stop requested")

    def run(self, request: Mapping[str, Any]) -> int:
        """Plan and run; returns 0 (every run attempted), 130 (stopped) or 1 (the ``report`` says why)."""
        from migperf.nvml import open_nvml

        store = self.store
        try:
            cfg = ExperimentConfig.model_validate(request["config"])
            nvml = open_nvml(
                request.get("simulate"), allow_fallback=False, read_only=request.get("read_only")
            )
            try:
                plan = plan_experiment(nvml, cfg, f"experiment {cfg.name!r}", dry_run=False)
                sub, missing = subset_plan(plan, request["keys"])
                if missing:
                    store.send({"type": "missing", "keys": missing})
                runner = ExperimentRunner(nvml, sub, store, rerun=True, on_event=self.on_event)
                self.phase = "running"
                report = runner.run()
            finally:
                nvml.shutdown()
        except KeyboardInterrupt:
            store.send({"type": "report", "ok": True, "interrupted": True, "restored": True})
            return 130
        except MigperfError as exc:
            store.send({"type": "report", "ok": False, "error": exc.message, "hint": exc.hint})
            return 1
        finally:
            self.phase = "done"
        store.send(
            {
                "type": "report",
                "ok": True,
                "interrupted": report.interrupted,
                "restored": report.restored,
                "wall_s": report.wall_s,
                "time_s": report.time_s,
            }
        )
        return 130 if report.interrupted else 0


def main() -> int:
    """Run a subset of an experiment on this node (see the module docstring).

    Returns:
        0 when every run was attempted, 130 when stopped, 1 when the node
        could not run its runs (the ``report`` line says why).
    """
    out = _claim_stdout()
    store = StreamingStore(out)
    job = SentRuns(store)

    signal.signal(signal.SIGTERM, job.on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        request = json.loads(sys.stdin.readline() or "null")
        if not isinstance(request, dict):
            raise ValueError("no request")
    except ValueError as exc:
        store.send({"type": "report", "ok": False, "error": f"bad request on stdin: {exc}"})
        return 1

    def watch_agent() -> None:
        # The agent keeps our stdin open; EOF means it is gone: stop like SIGTERM.
        sys.stdin.read()
        os.kill(os.getpid(), signal.SIGTERM)

    store.send({"type": "started", "pid": os.getpid()})
    niceness = request.get("niceness")
    if isinstance(niceness, int) and niceness < os.getpriority(os.PRIO_PROCESS, 0):
        # A cluster engine may run its workers at a low priority (Ray: nice
        # 15); measurements should run as they would from a shell on the node.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)
        except OSError as exc:
            store.send(
                event_message(
                    "priority_warning",
                    {
                        "error": f"runs at nice {os.getpriority(os.PRIO_PROCESS, 0)}, not "
                        f"{niceness}: {exc.strerror or exc} (CPU-side timings may suffer)"
                    },
                )
            )
    threading.Thread(target=watch_agent, daemon=True).start()
    return job.run(request)


if __name__ == "__main__":
    sys.exit(main())
