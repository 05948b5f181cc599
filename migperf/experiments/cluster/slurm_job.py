"""What one Slurm job of a sweep runs: ``python -m migperf.experiments.cluster.slurm_job``.

* ``describe REQUEST OUT``: plan the experiment on the node Slurm gave the
  job (:func:`~migperf.experiments.cluster.node.describe_node`) and write the
  answer to ``OUT`` as JSON.
* ``run REQUEST SHARD``: run the runs the request names with the single-node
  :class:`~migperf.experiments.runner.ExperimentRunner` (its lease, journal
  and restore, exactly as on one machine) and append every message to the
  job's shard ``SHARD``: JSON lines of ``started``, runner events, one
  ``record`` per result and a final ``report``, each flushed as written, so
  the driver can merge a shard while the job runs and up to its last finished
  run after the job died. The driver, not the job, writes the results store.

Slurm stops a job (``scancel``, its time limit, preemption) with SIGTERM:
the runner aborts its current run, kills its workers and restores the node,
as the local runner does on SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from migperf.errors import MigperfError
from migperf.experiments.cluster.node import StreamingStore, describe_node, subset_plan
from migperf.experiments.config import ExperimentConfig
from migperf.experiments.events import event_message
from migperf.experiments.planning import plan_experiment
from migperf.experiments.runner import ExperimentRunner

__all__ = ["MODULE", "describe", "main", "run"]

MODULE = "migperf.experiments.cluster.slurm_job"


def _slurm_env() -> dict[str, str]:
    keys = ("SLURM_JOB_ID", "SLURMD_NODENAME", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_GPUS")
    return {k: os.environ[k] for k in keys if k in os.environ}


def describe(request: dict[str, Any], out: Path) -> int:
    """Plan here and write the answer (see the module docstring)."""
    info = describe_node(
        request["config"],
        simulate=request.get("simulate"),
        read_only=request.get("read_only"),
        source=request.get("source", "config"),
        dry_run=bool(request.get("dry_run", True)),
    )
    info["slurm"] = _slurm_env()
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, default=str))
    tmp.replace(out)
    return 0


def run(request: dict[str, Any], shard: Path) -> int:
    """Run the requested runs here, appending every message to ``shard``.

    Returns:
        0 when every run was attempted, 130 when stopped, 1 when the runs
        could not start (the ``report`` line says why).
    """
    from migperf.nvml import open_nvml

    fh = shard.open("a", encoding="utf-8")
    store = StreamingStore(fh)
    phase = {"value": "setup"}
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        # As in the Ray node runner: before the runner starts, stop at once;
        # while it runs its own handler turns SIGTERM into Ctrl-C.
        stop.set()
        if phase["value"] == "setup":
            raise KeyboardInterrupt(f"signal {signum}")

    def on_event(kind: str, **info: Any) -> None:
        store.send(event_message(kind, info))
        if stop.is_set() and kind in ("layout", "run_start"):
            raise KeyboardInterrupt("stop requested")

    signal.signal(signal.SIGTERM, on_term)
    if request.get("state_dir"):
        # A simulated sweep: each job is a machine of its own (its own GPU state and leases).
        os.environ["MIGPERF_STATE_DIR"] = request["state_dir"]
    store.send({"type": "started", "pid": os.getpid(), "slurm": _slurm_env()})
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
            runner = ExperimentRunner(nvml, sub, store, rerun=True, on_event=on_event)
            phase["value"] = "running"
            report = runner.run()
            phase["value"] = "done"
        finally:
            nvml.shutdown()
    except KeyboardInterrupt:
        store.send({"type": "report", "ok": True, "interrupted": True, "restored": True})
        return 130
    except MigperfError as exc:
        store.send({"type": "report", "ok": False, "error": exc.message, "hint": exc.hint})
        return 1
    finally:
        phase["value"] = "done"
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
    fh.close()
    return 130 if report.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    """``describe REQUEST OUT`` or ``run REQUEST SHARD``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or args[0] not in ("describe", "run"):
        print(f"usage: python -m {MODULE} describe|run REQUEST OUT", file=sys.stderr)
        return 2
    request = json.loads(Path(args[1]).read_text())
    if args[0] == "describe":
        return describe(request, Path(args[2]))
    return run(request, Path(args[2]))


if __name__ == "__main__":
    sys.exit(main())
