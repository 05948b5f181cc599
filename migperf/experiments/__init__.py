"""Experiments: a YAML config swept over layouts and jobs, every result stored, every GPU restored.

The path of ``migperf run`` and of the library alike: load a config, open an
executor (``local``, or ``ray[:ADDRESS]`` for a cluster), plan (changes
nothing), run (stores each result as it finishes; restores the layouts on any
exit). Example::

    cfg = load_config(Path("configs/quickstart.yaml"))
    with open_executor("local") as ex, ResultsStore("results/migperf.db") as store:
        report = ex.run(ex.plan(cfg, "quickstart.yaml", dry_run=False), store)

Modules: :mod:`.config` (the schema), :mod:`.sweep` (a config expanded into
runs), :mod:`.planning` (bound to this machine's GPUs), :mod:`.runner` (the
single-machine runner), :mod:`.records` (results to store records),
:mod:`.events`
(progress as plain data), :mod:`.executor`, :mod:`.executor_spec` and
:mod:`.local` (where runs execute), :mod:`.cluster` (a Ray cluster).
"""

from __future__ import annotations

from migperf.experiments.config import ExperimentConfig, load_config, parse_config
from migperf.experiments.executor import Executor, open_executor
from migperf.experiments.executor_spec import ExecutorSpec, parse_executor
from migperf.experiments.planning import ExperimentPlan, plan_experiment
from migperf.experiments.runner import ExperimentReport, ExperimentRunner

__all__ = [
    "ExecutorSpec",
    "Executor",
    "ExperimentConfig",
    "ExperimentPlan",
    "ExperimentReport",
    "ExperimentRunner",
    "load_config",
    "open_executor",
    "parse_config",
    "parse_executor",
    "plan_experiment",
]
