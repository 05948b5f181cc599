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
from pathlib import Path
from typing import Any

from migperf.experiments.cluster.node import SentRuns, StreamingStore, describe_node

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
    fh = shard.open("a", encoding="utf-8")
    store = StreamingStore(fh)
    job = SentRuns(store)  # as the Ray node runs them
    signal.signal(signal.SIGTERM, job.on_term)
    if request.get("state_dir"):
        # A simulated sweep: each job is a machine of its own (its own GPU state and leases).
        os.environ["MIGPERF_STATE_DIR"] = request["state_dir"]
    try:
        store.send({"type": "started", "pid": os.getpid(), "slurm": _slurm_env()})
        return job.run(request)
    finally:
        fh.close()


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
