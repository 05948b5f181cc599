"""How much of a sweep's wall time is migperf's own, on the simulator.

Runs a small experiment (3 layouts x 2 batch sizes of a tiny GEMM, 1 s of
measurement per run) through the real runner, workers and store, and splits
its wall time into measurement and migperf's own: planning, partitioning,
worker start + model build + warmup, and the store. As the baseline, the same
command times a bare ``python -c "import torch"`` process, the floor that any
one-process-per-measurement design pays, so the per-run cost above that floor
is migperf's.

Run: ``.venv/bin/python benchmarks/runner_overhead.py``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
name: overhead
layouts: ["0", "9,9", "14,14,14,19"]
instances: first
stop: {warmup_iterations: 2, min_iterations: 5, min_duration_s: 1.0, max_duration_s: 5}
jobs:
  - workload: gemm
    model_args: {n: 64}
    sweep: {batch_size: [1, 2]}
"""


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    os.environ["MIGPERF_STATE_DIR"] = str(tmp / "state")
    from migperf.experiments.config import parse_config
    from migperf.experiments.planning import plan_experiment
    from migperf.experiments.runner import ExperimentRunner
    from migperf.nvml import open_nvml
    from migperf.results import ResultsStore

    t0 = time.monotonic()
    cfg = parse_config(CONFIG)
    with open_nvml("a100-80gb") as nvml:
        plan = plan_experiment(nvml, cfg)
        plan_s = time.monotonic() - t0
        with ResultsStore(tmp / "r.db") as store:
            report = ExperimentRunner(nvml, plan, store).run()
    runs = len(plan.runs)
    wall = report.wall_s + plan_s
    measure = report.time_s["measure"]
    own = wall - measure
    imports = []
    for _ in range(3):
        t = time.monotonic()
        subprocess.run([sys.executable, "-c", "import torch"], check=True)
        imports.append(time.monotonic() - t)
    floor = statistics.median(imports)
    per_run = (report.time_s["workers"]) / runs
    print(
        f"{runs} runs, wall {wall:.1f} s: measuring {measure:.1f} s ({measure / wall:.0%}), migperf's own {own:.1f} s ({own / wall:.0%})"
    )
    print(
        f"  planning {plan_s:.2f} s, partitioning {report.time_s['partition']:.2f} s "
        f"({report.time_s['partition'] / len(cfg.layouts):.2f} s per layout incl. restore), "
        f"store {report.time_s['store']:.3f} s ({report.time_s['store'] / runs * 1000:.1f} ms per run)"
    )
    print(f"  worker start + build + warmup: {per_run:.2f} s per run")
    print(f"baseline: a bare `python -c 'import torch'` process takes {floor:.2f} s (median of 3)")
    print(
        f"per-run cost above that floor: {per_run - floor:.2f} s; ratio own/measure = {own / measure:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
