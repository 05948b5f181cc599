"""The demand file: what the planner must serve, on which GPUs.

A demand file is YAML, validated like an experiment file: every problem is
reported at once as ``file:line: field: problem``. Example
(``configs/demand-example.yaml``)::

    services:
      - name: image-api
        workload: resnet50
        precision: fp16
        batch_size: 8                 # the dynamic batcher's largest batch
        target_qps: 1200              # queries per second to serve
        slo: {percentile: 99, latency_ms: 50}
    training:
      - name: nightly-finetune
        workload: bert-base
        precision: bf16
        batch_size: 32
        min_samples_per_s: 150        # the job's throughput floor
    gpus:
      - {model: a100-80gb, count: 8}
    headroom: 0.1                     # serve 10 % more than target_qps
    # gpu_count: 4                    # fixed count: best coverage on exactly 4 GPUs

A service is matched to stored LoadGen server runs of the same workload,
precision and batch size (and ``seq_len`` / ``model_args`` when given) whose
latency target is at the same percentile and no looser than the service's SLO.
A training job is matched to ``task: train`` runs; it runs on one MIG instance
(MIG instances cannot talk to each other, so one job cannot span several), and
the instance must reach ``min_samples_per_s`` on its own. ``headroom`` applies
to the services' QPS, not to training floors, which are minimums already.

A service whose capacities all come from capacities files
(``migperf plan --capacities FILE``, :mod:`migperf.planner.capfile`) needs
only ``name``, ``target_qps`` and ``slo``: a ``workload`` (and precision,
batch size ...) is needed only where the results store must be searched for
it or ``--verify`` must run it; :func:`load_demand` reports a missing one
there with its line. ``mps: {max_processes: 3}`` lets the planner run up to
that many MPS processes of the service inside one MIG instance (when their
capacity is known).

``gpus[].profiles`` restricts the layouts the planner considers to those
profiles (layouts are maximal among them); ``gpus[].per_node`` (default 8)
says how a model's GPUs are split into nodes, which decides the ``devices``
indices and configuration names of the mig-parted file the planner writes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from migperf.bench.scenario_spec import REPORTED_PERCENTILES
from migperf.models import StrictModel
from migperf.yamlsource import read_text, validate_yaml

__all__ = [
    "MAX_JOBS",
    "DemandSpec",
    "GpuPoolSpec",
    "MpsAllowance",
    "ServiceSpec",
    "SloSpec",
    "TrainingSpec",
    "load_demand",
    "parse_demand",
]

_HINT = "see configs/demand-example.yaml for a complete demand file"


def _workload_for(task: str) -> Any:
    def check(name: str | None) -> str | None:
        if name is None:
            return None  # a service planned from capacities files only
        from migperf.bench.workloads import workload_info, workload_names

        names = workload_names()
        if name not in names:
            raise ValueError(f"unknown workload {name!r}; known: {', '.join(names)}")
        tasks = workload_info(name).tasks
        if task not in tasks:
            able = ", ".join(n for n in names if task in workload_info(n).tasks)
            raise ValueError(
                f"{name} supports only {' and '.join(tasks)}, not {task}; workloads that "
                f"{'train' if task == 'train' else 'serve inference'}: {able}"
            )
        return name

    return check


class SloSpec(StrictModel):
    """A latency SLO: the ``percentile`` latency must stay within ``latency_ms``."""

    percentile: float
    latency_ms: float = Field(..., gt=0)

    @field_validator("percentile")
    @classmethod
    def _loadgen_percentile(cls, v: float) -> float:
        if v not in REPORTED_PERCENTILES:
            shown = ", ".join(f"{q:g}" for q in REPORTED_PERCENTILES)
            raise ValueError(f"percentile {v:g} is not one LoadGen reports ({shown})")
        return v

    def __str__(self) -> str:
        return f"p{self.percentile:g} <= {self.latency_ms:g} ms"


#: Most MPS processes one MIG instance may run (what MPS allows per device on Volta and later).
MAX_MPS_PROCESSES = 48


class MpsAllowance(StrictModel):
    """MPS inside a service's MIG instances: ``{max_processes: 3}``."""

    max_processes: int = Field(..., ge=1, le=MAX_MPS_PROCESSES)


class ServiceSpec(StrictModel):
    """An inference service: a model behind a dynamic batcher, a QPS to serve, an SLO.

    ``workload`` may be left out when every capacity of the service comes
    from capacities files and it is not verified (see the module docstring).
    """

    name: str = Field(..., min_length=1)
    workload: str | None = None
    task: Literal["infer"] = "infer"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    batch_size: int = Field(1, ge=1)
    seq_len: int | None = Field(None, ge=1)
    model_args: dict[str, Any] | None = None
    target_qps: float = Field(..., gt=0)
    slo: SloSpec
    mps: MpsAllowance | None = None

    _workload = field_validator("workload")(_workload_for("infer"))

    @property
    def max_processes(self) -> int:
        """The most MPS processes one instance may run for it (1: no MPS)."""
        return self.mps.max_processes if self.mps is not None else 1


class TrainingSpec(StrictModel):
    """A training job that needs one MIG instance reaching ``min_samples_per_s``."""

    name: str = Field(..., min_length=1)
    workload: str
    task: Literal["train"] = "train"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    batch_size: int = Field(1, ge=1)
    seq_len: int | None = Field(None, ge=1)
    model_args: dict[str, Any] | None = None
    min_samples_per_s: float = Field(..., gt=0)

    _workload = field_validator("workload")(_workload_for("train"))


class GpuPoolSpec(StrictModel):
    """GPUs of one catalog model the plan may use."""

    model: str
    count: int = Field(..., ge=1, le=100_000)
    profiles: list[str] | None = None
    per_node: int = Field(8, ge=1)

    @field_validator("model")
    @classmethod
    def _known_model(cls, v: str) -> str:
        from migperf.nvml.catalog import MODELS

        model = MODELS.get(v.lower())
        known = ", ".join(k for k, m in MODELS.items() if m.mig_capable)
        if model is None:
            raise ValueError(f"unknown GPU model {v!r}; models with MIG: {known}")
        if not model.mig_capable:
            raise ValueError(f"{model.key} ({model.name}) does not support MIG; use one of {known}")
        return model.key

    @field_validator("profiles")
    @classmethod
    def _lower(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("profiles is empty; leave it out to consider every profile")
        return None if v is None else [p.strip().lower() for p in v]

    @model_validator(mode="after")
    def _known_profiles(self) -> GpuPoolSpec:
        from migperf.mig.solver import is_media_variant
        from migperf.nvml.catalog import get_model

        model = get_model(self.model)
        names = {p.name.lower(): p for p in model.profiles}
        for name in self.profiles or []:
            fact = names.get(name)
            if fact is None:
                plain = ", ".join(
                    p.name for p in model.profiles if not is_media_variant(p.to_profile())
                )
                raise ValueError(f"{model.key} has no profile {name!r}; it has {plain}")
            if is_media_variant(fact.to_profile()):
                raise ValueError(
                    f"{name}: media-engine and graphics variants are not planned; "
                    "use the plain profile"
                )
        return self


#: Most services plus training jobs one demand file may list: the planner's
#: program grows with jobs x layouts x GPUs, and a fleet's demand is tens of jobs.
MAX_JOBS = 1_000


class DemandSpec(StrictModel):
    """A whole demand file (see the module docstring)."""

    services: list[ServiceSpec] = Field(default_factory=list, max_length=MAX_JOBS)
    training: list[TrainingSpec] = Field(default_factory=list, max_length=MAX_JOBS)
    gpus: list[GpuPoolSpec] = Field(..., min_length=1, max_length=100)
    headroom: float = Field(0.1, ge=0, le=10)
    gpu_count: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _cross_checks(self) -> DemandSpec:
        if not self.services and not self.training:
            raise ValueError("nothing to plan: give at least one service or training job")
        jobs = len(self.services) + len(self.training)
        if jobs > MAX_JOBS:
            raise ValueError(
                f"{jobs:,} services and training jobs are more than the {MAX_JOBS:,} one plan may "
                "have; split the demand into several files"
            )
        seen: set[str] = set()
        for name in [s.name for s in self.services] + [t.name for t in self.training]:
            if name in seen:
                raise ValueError(
                    f"the name {name!r} is used twice; services and jobs need unique names"
                )
            seen.add(name)
        models = [g.model for g in self.gpus]
        for m in models:
            if models.count(m) > 1:
                raise ValueError(f"gpus lists {m} twice; give one entry per model with its count")
        total = sum(g.count for g in self.gpus)
        if self.gpu_count is not None and self.gpu_count > total:
            raise ValueError(f"gpu_count {self.gpu_count} is more than the {total} GPUs in gpus")
        return self

    @property
    def jobs(self) -> list[ServiceSpec | TrainingSpec]:
        """Services, then training jobs."""
        return [*self.services, *self.training]

    @property
    def total_gpus(self) -> int:
        """Every GPU the demand offers, all models together."""
        return sum(g.count for g in self.gpus)

    @property
    def max_processes(self) -> dict[str, int]:
        """Per service, the most MPS processes one instance may run for it (1: no MPS)."""
        return {s.name: s.max_processes for s in self.services}

    @property
    def allows_mps(self) -> bool:
        """Whether any service may run several MPS processes in one instance."""
        return any(s.max_processes > 1 for s in self.services)

    def required_qps(self, service: ServiceSpec) -> float:
        """The QPS a service must be able to serve: ``target_qps x (1 + headroom)``."""
        return service.target_qps * (1.0 + self.headroom)

    def job(self, name: str) -> ServiceSpec | TrainingSpec:
        """The service or training job called ``name``.

        Raises:
            KeyError: no such name.
        """
        items: list[ServiceSpec | TrainingSpec] = [*self.services, *self.training]
        for item in items:
            if item.name == name:
                return item
        raise KeyError(name)


# ---------------------------------------------------------------- loading


def _workload_checks(
    names: Collection[str] | Literal["all"],
) -> Any:
    """A :func:`~migperf.yamlsource.validate_yaml` check: these services need a workload."""

    def check(
        data: dict[str, Any], _spec: DemandSpec | None
    ) -> Iterable[tuple[tuple[Any, ...], str]]:
        services = data.get("services")
        if not isinstance(services, list):
            return
        for i, svc in enumerate(services):
            if not isinstance(svc, dict) or svc.get("workload") is not None:
                continue
            if names == "all" or svc.get("name") in names:
                yield (
                    ("services", i, "workload"),
                    "required field is missing (the service is planned from the results store "
                    "or run by --verify; a service planned from capacities files only may leave "
                    "it out)"
                    if names != "all"
                    else "required field is missing",
                )

    return check


def parse_demand(
    text: str,
    source: str = "<demand>",
    *,
    require_workload: Collection[str] | Literal["all"] = "all",
) -> DemandSpec:
    """Validate demand YAML text.

    Args:
        text: The YAML.
        source: Name used in messages (the path).
        require_workload: The services that must give a ``workload``
            (``all``: every one, as without capacities files).

    Raises:
        ConfigError: not YAML, or any field invalid; the message lists every
            problem as ``source:line: field: problem``.
    """
    return validate_yaml(
        text,
        source,
        DemandSpec,
        kind="a demand file",
        hint=_HINT,
        checks=_workload_checks(require_workload),
    )


def load_demand(
    path: Path, *, require_workload: Collection[str] | Literal["all"] = "all"
) -> DemandSpec:
    """Read and validate a demand file.

    Args:
        path: The file.
        require_workload: The services that must give a ``workload`` (see
            :func:`parse_demand`).

    Raises:
        ConfigError: unreadable, not YAML, or invalid (every problem listed).
    """
    return parse_demand(read_text(path), str(path), require_workload=require_workload)
