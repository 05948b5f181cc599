"""The layout planner: the fewest GPUs, and their MIG layouts, that serve a workload mix at its SLOs.

From a demand file (services with a QPS and a latency SLO, training jobs
with a throughput floor, the GPUs available; :mod:`~migperf.planner.demand`)
and the capacities measured in a results store
(:mod:`~migperf.planner.capacity`) or given in capacities files, CSV or YAML
(:mod:`~migperf.planner.capfile`), kept in one table
(:mod:`~migperf.planner.table`), a mixed-integer program
(:mod:`~migperf.planner.milp`) picks a layout for each GPU among the
candidates (:mod:`~migperf.planner.candidates`) and a service for each
instance, with as many MPS processes as the service allows and its
capacities say pay (:mod:`~migperf.planner.optimizer`), and compares the plan
(:mod:`~migperf.planner.result`) with simpler ones
(:mod:`~migperf.planner.baselines`). The plan is written as a mig-parted
config (:mod:`~migperf.planner.export`) and can be checked on the GPUs, all
services co-located (:mod:`~migperf.planner.verify`).
:func:`plan_demand` (:mod:`~migperf.planner.workflow`) does all of it, as
``migperf plan`` does::

    report = plan_demand(Path("configs/demand-example.yaml"), Path("results/migperf.db"))
    print(report.plan.gpus_used if report.plan else report.missing)
    Path("mig.yaml").write_text(plan_to_migparted(report.plan))

Step by step: ``load_demand``, ``capacity_table``, ``plan_layout``.
"""

from __future__ import annotations

from migperf.planner.candidates import (
    CandidateLayout,
    needed_keys,
    planning_layouts,
    uniform_layouts,
)
from migperf.planner.capacity import (
    WHOLE_GPU,
    CapacityEntry,
    CapacityTable,
    MissingCapacity,
    capacity_table,
    derate_factors,
    model_for_gpu_name,
)
from migperf.planner.capfile import load_capacities
from migperf.planner.demand import (
    DemandSpec,
    GpuPoolSpec,
    MpsAllowance,
    ServiceSpec,
    SloSpec,
    TrainingSpec,
    load_demand,
    parse_demand,
)
from migperf.planner.export import (
    DEFAULT_CONFIG_NAME,
    config_names,
    measurement_configs,
    mps_side_path,
    plan_mps_file,
    plan_to_migparted,
)
from migperf.planner.optimizer import plan_layout
from migperf.planner.result import (
    BaselineResult,
    CapacityUse,
    GpuPlan,
    InstancePlan,
    JobOutcome,
    Plan,
    SolverInfo,
)
from migperf.planner.workflow import EventKind, PlanReport, VerifyOptions, plan_demand

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "WHOLE_GPU",
    "BaselineResult",
    "CandidateLayout",
    "CapacityEntry",
    "CapacityTable",
    "CapacityUse",
    "DemandSpec",
    "EventKind",
    "GpuPlan",
    "GpuPoolSpec",
    "InstancePlan",
    "JobOutcome",
    "MissingCapacity",
    "MpsAllowance",
    "Plan",
    "PlanReport",
    "ServiceSpec",
    "SloSpec",
    "SolverInfo",
    "TrainingSpec",
    "VerifyOptions",
    "capacity_table",
    "config_names",
    "derate_factors",
    "load_capacities",
    "load_demand",
    "measurement_configs",
    "model_for_gpu_name",
    "mps_side_path",
    "needed_keys",
    "parse_demand",
    "plan_demand",
    "plan_layout",
    "plan_mps_file",
    "plan_to_migparted",
    "planning_layouts",
    "uniform_layouts",
]
