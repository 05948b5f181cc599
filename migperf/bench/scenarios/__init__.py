"""Inference scenarios in the worker: MLPerf LoadGen drives a model through a dynamic batcher.

Usage::

    from migperf.bench.scenarios import run_scenario
    result = run_scenario(spec)  # spec: a BenchSpec with a scenario
    print(result.scenario.verdict if result.scenario else result.status)

The pieces, in the order a request meets them:

* **Query-sample library** (QSL): ``qsl_size`` synthetic samples built once
  on the worker's device by the workload (``build_workload`` with that many
  samples); LoadGen picks sample indices from it with its seeded RNG.
* **System under test** (:class:`LoadGenSut`, :mod:`.loadgen_bridge`):
  LoadGen calls ``issue_queries`` from its own thread; the adapter hands the
  samples to the batcher and returns at once.
* **Dynamic batcher** (:class:`DynamicBatcher`, :mod:`.batcher`): a batch
  thread takes up to ``max_batch_size`` queued samples (waiting at most
  ``max_queue_delay_ms`` after the first for more), gathers their inputs and
  runs the model; a completion thread waits for the device (a CUDA event per
  batch, at most two batches in flight) and answers LoadGen with
  ``QuerySamplesComplete``.
* **LoadGen** (``mlperf_loadgen``): schedules the queries (Poisson arrivals
  for server, measured from the scheduled time), stops on its minimum and
  maximum duration and query count, and writes its logs, which
  :mod:`.loadgen_log` turns into the result.

``closed-loop`` skips LoadGen: ``concurrency`` client threads each send a
sample, wait for its answer and send the next, through the same batcher.

:func:`find_max_qps` (:mod:`.capacity`) is the capacity search (bisection
over server runs); :class:`ScenarioRunner` (:mod:`.runner`) serves one
prepared workload under a scenario; :func:`run_scenario` (:mod:`.entry`) is
what the worker runs for a spec with a ``scenario``. Only one LoadGen test
can run in a process at a time; the worker runs them one after another.
The spec and result models stay in :mod:`migperf.bench.scenario_spec` and
:mod:`migperf.bench.scenario_result`: :mod:`migperf.bench.spec` and
:mod:`migperf.bench.result` embed them, and importing them must not load
this package.
"""

from __future__ import annotations

from migperf.bench.scenarios.batcher import DynamicBatcher
from migperf.bench.scenarios.capacity import find_max_qps
from migperf.bench.scenarios.entry import run_scenario
from migperf.bench.scenarios.loadgen_bridge import LoadGenSut, loadgen_percentiles
from migperf.bench.scenarios.runner import DEFAULT_LOG_ROOT, ScenarioRunner, run_log_dir

__all__ = [
    "DEFAULT_LOG_ROOT",
    "DynamicBatcher",
    "LoadGenSut",
    "ScenarioRunner",
    "find_max_qps",
    "loadgen_percentiles",
    "run_log_dir",
    "run_scenario",
]
