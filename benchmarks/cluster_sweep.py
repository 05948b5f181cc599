"""Wall time of one small sweep on a Ray cluster of 1 node and of 3 nodes.

Starts a local Ray cluster (``ray.cluster_utils.Cluster``: a head without
resources, then simulated ``a100-80gb`` nodes, each with its own state
directory), runs the same sweep (3 layouts x 2 batch sizes of a tiny GEMM,
1 s of measurement per run, so 6 runs) through ``RayExecutor`` on 1 node,
adds 2 nodes and runs it again into a fresh store, and prints both wall times
(planning included: agents placed, every node planned) and their ratio.

On a real cluster each node has its own CPUs and GPUs, so 3 nodes approach a
3x speed-up for a long sweep; here all nodes share this machine's cores (the
workers' start, mostly ``import torch``, competes for them), which caps it.

Run: ``.venv/bin/python benchmarks/cluster_sweep.py`` (needs ``pip install "migperf[ray]"``).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

CONFIG = """
name: cluster-sweep
layouts: ["0", "9", "14"]
instances: first
stop: {warmup_iterations: 2, min_iterations: 5, min_duration_s: 1.0, max_duration_s: 5}
telemetry: {enabled: false}
jobs:
  - workload: gemm
    model_args: {n: 64}
    sweep: {batch_size: [1, 2]}
"""


def _sweep(tmp: Path, label: str) -> tuple[float, int, int]:
    from migperf.experiments.cluster.ray_executor import RayExecutor
    from migperf.experiments.config import parse_config
    from migperf.results import ResultsStore

    t0 = time.monotonic()
    with RayExecutor() as ex, ResultsStore(tmp / f"{label}.db") as store:
        plan = ex.plan(parse_config(CONFIG), "cluster_sweep")
        report = ex.run(plan, store)
    wall = time.monotonic() - t0
    if not report.restored or report.failed:
        raise SystemExit(f"{label}: {report.failed} run(s) failed; restored={report.restored}")
    return wall, report.stored, len(plan.nodes)


def main() -> int:
    import ray
    from ray.cluster_utils import Cluster

    tmp = Path(tempfile.mkdtemp(prefix="migperf-cluster-"))
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )

    def add_node(i: int) -> None:
        cluster.add_node(
            num_cpus=1,
            resources={"migperf_host": 1},
            env_vars={"MIGPERF_SIMULATE": "a100-80gb", "MIGPERF_STATE_DIR": str(tmp / f"node{i}")},
        )

    try:
        add_node(0)
        ray.init(address=cluster.address, log_to_driver=False, logging_level="warning")
        one, runs_one, nodes_one = _sweep(tmp, "one")
        add_node(1)
        add_node(2)
        cluster.wait_for_nodes()
        three, runs_three, nodes_three = _sweep(tmp, "three")
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(f"machine: {os.cpu_count()} CPU core(s); sweep: {runs_one} runs of gemm n=64, 1 s each")
    print(f"{nodes_one} node : {one:6.1f} s wall ({runs_one} runs stored)")
    print(f"{nodes_three} nodes: {three:6.1f} s wall ({runs_three} runs stored)")
    print(f"speed-up: {one / three:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
