"""The layout planner: the fewest GPUs, and their MIG layouts, that serve a workload mix at its SLOs.

From a demand file (services with a QPS and a latency SLO, training jobs
with a throughput floor, the GPUs available; :mod:`migperf.plan.demand`) and
the capacities measured in a results store (:mod:`migperf.plan.capacity`),
a mixed-integer program picks a layout for each GPU and a service for each
instance (:mod:`migperf.plan.optimizer`). The plan is written as a mig-parted
config (:mod:`migperf.plan.export`) and can be checked on the GPUs, all
services co-located (:mod:`migperf.plan.verify`)::

    demand = load_demand(Path("configs/demand-example.yaml"))
    table = capacity_table(migperf.results.load("results/migperf.db", wide=True), demand)
    plan = plan_layout(demand, table)
    Path("mig.yaml").write_text(plan_to_migparted(plan))

``migperf plan`` is the command-line face of all this.
"""

from __future__ import annotations

from migperf.plan.capacity import (
    WHOLE_GPU,
    CapacityEntry,
    CapacityTable,
    MissingCapacity,
    capacity_table,
    derate_factors,
    model_for_gpu_name,
)
from migperf.plan.demand import (
    DemandSpec,
    GpuPoolSpec,
    ServiceSpec,
    SloSpec,
    TrainingSpec,
    load_demand,
    parse_demand,
)
from migperf.plan.export import (
    DEFAULT_CONFIG_NAME,
    config_names,
    measurement_configs,
    plan_to_migparted,
)
from migperf.plan.optimizer import (
    BaselineResult,
    CandidateLayout,
    GpuPlan,
    InstancePlan,
    JobOutcome,
    Plan,
    SolverInfo,
    needed_keys,
    plan_layout,
    planning_layouts,
    uniform_layouts,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "WHOLE_GPU",
    "BaselineResult",
    "CandidateLayout",
    "CapacityEntry",
    "CapacityTable",
    "DemandSpec",
    "GpuPlan",
    "GpuPoolSpec",
    "InstancePlan",
    "JobOutcome",
    "MissingCapacity",
    "Plan",
    "ServiceSpec",
    "SloSpec",
    "SolverInfo",
    "TrainingSpec",
    "capacity_table",
    "config_names",
    "derate_factors",
    "load_demand",
    "measurement_configs",
    "model_for_gpu_name",
    "needed_keys",
    "parse_demand",
    "plan_layout",
    "plan_to_migparted",
    "planning_layouts",
    "uniform_layouts",
]
