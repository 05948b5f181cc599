"""The benchmark engine: workloads, the measurement harness, the worker process and its parent.

Run one spec in a worker process on the CPU::

    from migperf.bench import BenchSpec, LaunchJob, launch_jobs, worker_env
    job = LaunchJob(BenchSpec(workload="gemm", task="infer"), env=worker_env("cpu"))
    print(launch_jobs([job], simulated=False, timeout_s=120)[0].status)

Map of the package (the only one that may import torch and transformers,
always inside functions, so importing any module here stays light):

* :mod:`migperf.bench.spec` -- :class:`~migperf.bench.spec.BenchSpec`, what one
  measurement is (JSON on the worker's stdin).
* :mod:`migperf.bench.result` -- :class:`~migperf.bench.result.WorkerResult`,
  the versioned result document (JSON on the worker's stdout).
* :mod:`migperf.bench.workloads` -- the registry: ``resnet18/50/101``,
  ``vit-base``, ``bert-base/large``, ``distilbert``, ``minilm``, ``mpnet``,
  ``roberta-base``, ``gemm``, ``memcpy``, and the SYNTHETIC ``sleep`` (a fixed
  service time, for testing load generation).
* :mod:`migperf.bench.harness` -- warmup, barrier, stop rules; CUDA events
  (one synchronize per window) or ``perf_counter_ns``.
* :mod:`migperf.bench.stats` -- percentiles with distribution-free intervals,
  t intervals of the mean, stability.
* :mod:`migperf.bench.device` -- ``--device`` to a worker environment.
* :mod:`migperf.bench.worker` -- ``python -m migperf.bench.worker``;
  :mod:`migperf.bench.worker_kit` holds what every worker body needs (the
  barrier, the device, results for failures).
* :mod:`migperf.bench.process` -- :func:`~migperf.bench.process.run_worker`,
  :class:`~migperf.bench.process.WorkerGroup` and
  :func:`~migperf.bench.process.run_group` for co-located runs.
* :mod:`migperf.bench.launch` -- :func:`~migperf.bench.launch.launch_jobs`,
  the one way callers go from specs to workers on their devices (core
  split and slice emulation on simulated GPUs, telemetry, one worker or a
  released group).
* :mod:`migperf.bench.emulation` -- a simulated slice's facts (memory, share
  of the SMs) and the worker's memory limit; :mod:`migperf.bench.throttle`
  keeps each simulated device's share of the host's CPU from the parent.
* :mod:`migperf.bench.monitor` -- telemetry sampled around worker runs.
* :mod:`migperf.bench.series` -- batch-size sweeps with repeats.
* :mod:`migperf.bench.scenarios` -- inference scenarios: MLPerf LoadGen
  (single-stream, multi-stream, server, offline) or a closed loop driving the
  model through a dynamic batcher, the capacity search under an SLO, and
  :mod:`~migperf.bench.scenarios.loadgen_log`, which reads LoadGen's logs and
  words its verdict; :mod:`~migperf.bench.scenario_spec` and
  :mod:`~migperf.bench.scenario_result` are their spec and result.
"""

from __future__ import annotations

from migperf.bench.device import worker_env
from migperf.bench.launch import LaunchJob, launch_jobs
from migperf.bench.result import WorkerResult, load_result
from migperf.bench.spec import BenchSpec, parse_spec

__all__ = [
    "BenchSpec",
    "LaunchJob",
    "WorkerResult",
    "launch_jobs",
    "load_result",
    "parse_spec",
    "worker_env",
]
