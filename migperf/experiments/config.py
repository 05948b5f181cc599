"""Experiment configs: the YAML schema, validation with ``file:line: field`` errors.

An experiment is one file: which GPUs, which MIG layouts to sweep, which slices
to run on, which jobs, over which axes. Example (``configs/quickstart.yaml``)::

    name: quickstart
    gpus: [0]
    layouts: ["7g.80gb", "3g.40gb,3g.40gb", "1g.10gb*7"]
    instances: first            # first | each | all | [profile, ...]
    repeats: 1
    stop: {min_iterations: 10, min_duration_s: 1.0, max_duration_s: 10}
    jobs:
      - workload: resnet18
        task: infer
        model_args: {image_size: 64}
        sweep: {batch_size: [1, 8]}

Sweep axes are lists or ranges (``{start: 1, stop: 64, mul: 2}`` or
``{start: 32, stop: 256, step: 32}``); ``batch_size``, ``seq_len``, any
model argument (``model_args.num_hidden_layers``) and the server scenario's
``scenario.target_qps`` / ``scenario.latency_target_ms`` can be swept.

A job with ``scenario:`` runs an inference scenario (MLPerf LoadGen single-
stream, multi-stream, server, offline, or closed-loop; with
``find_max_qps: true`` the capacity under the SLO), see
:mod:`migperf.bench.scenario_spec`.

``sharing`` says how jobs share a GPU; a list compares several ways in one
file (each may name the ``layouts`` it applies to):

* ``exclusive`` (default): one job at a time on each chosen slot;
* ``mig``: every chosen MIG slot at once, one worker each, released together;
* ``{mps: {clients: 4, thread_percentage: 25}}``: N MPS clients on each chosen
  slot (the whole GPU, or one MIG device), one MPS daemon per device;
* ``{timeslice: {processes: 4}}``: N plain processes on each chosen slot.

``neighbors`` are background jobs started on the layout's other slots with
every run (noisy-neighbour studies), and ``baselines: true`` also runs each
shared job alone on its slot, so interference (normalized progress, STP,
ANTT, p99 inflation) can be computed from the store.

Unknown keys, wrong types and impossible values are errors; every problem in
the file is reported at once, each as ``file:line: field: problem``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from migperf.bench.scenario_spec import ScenarioSpec
from migperf.errors import UsageError
from migperf.models import StrictModel
from migperf.yamlsource import read_text, validate_yaml

_HINT = "see `migperf config schema` for every field, and configs/quickstart.yaml for an example"


class RangeSpec(StrictModel):
    """An axis as a range: ``start`` to ``stop`` inclusive, by ``step`` or ``mul``."""

    start: float
    stop: float
    step: float | None = Field(None, gt=0)
    mul: float | None = Field(None, gt=1)

    @model_validator(mode="after")
    def _one_rule(self) -> RangeSpec:
        if (self.step is None) == (self.mul is None):
            raise ValueError("give exactly one of step or mul")
        if self.stop < self.start:
            raise ValueError("stop is below start")
        if self.mul is not None and self.start <= 0:
            raise ValueError("a multiplicative range needs start > 0")
        return self

    def values(self) -> list[float]:
        """The axis values, ``start`` first; at most 10,000."""
        out: list[float] = []
        v = self.start
        while v <= self.stop * (1 + 1e-9) and len(out) < 10_000:
            out.append(v)
            v = v + self.step if self.step is not None else v * (self.mul or 2)
        return out


AxisValues = list[Any] | RangeSpec


class StopSpec(StrictModel):
    """When a measurement stops (see the benchmark harness)."""

    warmup_iterations: int | None = Field(None, ge=0)
    min_iterations: int = Field(10, ge=1)
    min_duration_s: float = Field(5.0, ge=0)
    max_duration_s: float = Field(60.0, gt=0)


class TelemetrySpec(StrictModel):
    """GPU telemetry during runs."""

    enabled: bool = True
    interval_ms: float = Field(100.0, gt=0)
    dcgm_url: str | None = None


SCENARIO_AXES = ("scenario.target_qps", "scenario.latency_target_ms")

InstancesSpec = Literal["first", "each", "all"] | list[str]


class JobSpec(StrictModel):
    """One workload to run on each slot, over its sweep axes."""

    workload: str
    task: Literal["train", "infer"] = "infer"
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    compile: bool = False
    batch_size: int = Field(1, ge=1)
    seq_len: int = Field(128, ge=1)
    model_args: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, AxisValues] = Field(default_factory=dict)
    scenario: ScenarioSpec | None = None
    # Which slots this job runs on (default: the experiment's ``instances``);
    # for neighbors, ``rest`` (the default) is every slot the measured run leaves free.
    instances: InstancesSpec | Literal["rest"] | None = None
    # For fault tests: make this job's workers crash, hang or run out of memory.
    inject: Literal["crash", "hang", "oom"] | None = None

    @model_validator(mode="after")
    def _scenario_task(self) -> JobSpec:
        if self.scenario is not None and self.task != "infer":
            raise ValueError(
                f"scenario {self.scenario.name!r} needs task 'infer', not {self.task!r}"
            )
        for axis in self.sweep:
            if axis.startswith("scenario.") and self.scenario is None:
                raise ValueError(f"cannot sweep {axis!r}: the job has no scenario")
            if axis == "scenario.target_qps" and self.scenario is not None:
                if self.scenario.name != "server":
                    raise ValueError("scenario.target_qps applies to the server scenario only")
                if self.scenario.find_max_qps:
                    raise ValueError("scenario.target_qps cannot be swept with find_max_qps")
        return self

    @field_validator("workload")
    @classmethod
    def _known_workload(cls, v: str) -> str:
        from migperf.bench.workloads import workload_names

        names = workload_names()
        if v not in names:
            raise ValueError(f"unknown workload {v!r}; known: {', '.join(names)}")
        return v

    @field_validator("sweep")
    @classmethod
    def _axes(cls, v: dict[str, AxisValues]) -> dict[str, AxisValues]:
        for axis, values in v.items():
            if axis not in SCENARIO_AXES + ("batch_size", "seq_len") and not axis.startswith(
                "model_args."
            ):
                raise ValueError(
                    f"cannot sweep {axis!r}: sweepable axes are batch_size, seq_len, "
                    f"model_args.<field>, {' and '.join(SCENARIO_AXES)}"
                )
            vals = values.values() if isinstance(values, RangeSpec) else values
            if not vals:
                raise ValueError(f"axis {axis!r} has no values")
            if axis in ("batch_size", "seq_len"):
                for x in vals:
                    if isinstance(x, bool) or not float(x).is_integer() or int(x) < 1:
                        raise ValueError(f"{axis} value {x!r} is not a positive integer")
            if axis in SCENARIO_AXES:
                for x in vals:
                    if isinstance(x, bool) or not isinstance(x, (int, float)) or x <= 0:
                        raise ValueError(f"{axis} value {x!r} is not a positive number")
        return v


class MpsSpec(StrictModel):
    """MPS clients on one device: ``{clients: 4, thread_percentage: 25}``."""

    clients: int = Field(..., ge=1, le=48)
    # One value for every client, or one per client; None: MPS's default (100).
    thread_percentage: float | list[float] | None = None
    pinned_mem_limit_mib: int | list[int] | None = None
    layouts: list[str] | None = None

    @model_validator(mode="after")
    def _per_client(self) -> MpsSpec:
        for name in ("thread_percentage", "pinned_mem_limit_mib"):
            value = getattr(self, name)
            values = value if isinstance(value, list) else [] if value is None else [value]
            if isinstance(value, list) and len(value) != self.clients:
                raise ValueError(
                    f"{name} lists {len(value)} value(s) for {self.clients} client(s); "
                    "give one value, or one per client"
                )
            for x in values:
                if name == "thread_percentage" and not 0 < x <= 100:
                    raise ValueError(f"thread_percentage {x:g} is not in (0, 100]")
                if name == "pinned_mem_limit_mib" and x < 1:
                    raise ValueError(f"pinned_mem_limit_mib {x} is not positive")
        return self

    def client_values(self, name: str) -> list[Any]:
        """Per-client values of ``thread_percentage`` or ``pinned_mem_limit_mib``."""
        value = getattr(self, name)
        return list(value) if isinstance(value, list) else [value] * self.clients


class TimesliceSpec(StrictModel):
    """N plain processes time-sliced on one device: ``{processes: 4}``."""

    processes: int = Field(..., ge=1, le=64)
    layouts: list[str] | None = None


class ModeSpec(StrictModel):
    """``exclusive`` or ``mig`` with options: ``{mig: {layouts: [...]}}``."""

    layouts: list[str] | None = None


class SharingArm(StrictModel):
    """One way of sharing, as parsed (exactly one field set)."""

    exclusive: ModeSpec | None = None
    mig: ModeSpec | None = None
    mps: MpsSpec | None = None
    timeslice: TimesliceSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        if isinstance(data, str):
            if data in ("exclusive", "mig"):
                return {data: {}}
            if data in ("mps", "timeslice"):
                raise ValueError(
                    f"{data} needs its settings, e.g. "
                    + ("{mps: {clients: 4}}" if data == "mps" else "{timeslice: {processes: 4}}")
                )
            raise ValueError(f"unknown sharing {data!r}: use exclusive, mig, mps or timeslice")
        return data

    @model_validator(mode="after")
    def _one(self) -> SharingArm:
        if sum(x is not None for x in (self.exclusive, self.mig, self.mps, self.timeslice)) != 1:
            raise ValueError("give exactly one of exclusive, mig, mps, timeslice")
        return self

    @property
    def mode(self) -> str:
        """``exclusive``, ``mig``, ``mps`` or ``timeslice``."""
        for name in ("exclusive", "mig", "mps", "timeslice"):
            if getattr(self, name) is not None:
                return name
        raise AssertionError("validated")

    @property
    def layouts(self) -> list[str] | None:
        """The top-level layouts this arm applies to (None: all)."""
        spec = getattr(self, self.mode)
        return spec.layouts if spec is not None else None

    @property
    def size(self) -> int:
        """Workers per device (MPS clients or time-sliced processes; 1 otherwise)."""
        if self.mps is not None:
            return self.mps.clients
        if self.timeslice is not None:
            return self.timeslice.processes
        return 1


class ExperimentConfig(StrictModel):
    """A whole experiment file."""

    name: str = Field(..., min_length=1)
    description: str = ""
    gpus: Literal["all"] | list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0])
    layouts: list[str] = Field(default_factory=lambda: ["current"], min_length=1)
    instances: InstancesSpec = "first"
    jobs: list[JobSpec] = Field(..., min_length=1)
    repeats: int = Field(1, ge=1)
    stop: StopSpec = StopSpec()
    telemetry: TelemetrySpec = TelemetrySpec()
    restore: bool = True
    timeout_s: float = Field(600.0, gt=0)
    sharing: list[SharingArm] = Field(default_factory=lambda: [SharingArm(exclusive=ModeSpec())])
    neighbors: list[JobSpec] = Field(default_factory=list)
    baselines: bool = False
    # Where the runs execute (`local`, `ray[:ADDRESS]`); not part of the config
    # hash, so a sweep has the same run keys on a laptop and on a cluster.
    executor: str = "local"

    @field_validator("executor")
    @classmethod
    def _known_executor(cls, v: str) -> str:
        from migperf.experiments.executor_spec import parse_executor

        try:
            return str(parse_executor(v, "executor"))
        except UsageError as exc:
            raise ValueError(f"{exc.message.removeprefix('executor: ')}; {exc.hint}") from None

    @field_validator("sharing", mode="before")
    @classmethod
    def _sharing_list(cls, v: Any) -> Any:
        return v if isinstance(v, list) else [v]

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        for i, arm in enumerate(self.sharing):
            for layout in arm.layouts or []:
                if layout not in self.layouts:
                    raise ValueError(
                        f"sharing[{i}] ({arm.mode}) names layout {layout!r}, which is not in "
                        f"layouts ({', '.join(map(repr, self.layouts))})"
                    )
        modes = [a.mode for a in self.sharing]
        if len(set(json.dumps(a.model_dump(), sort_keys=True) for a in self.sharing)) < len(modes):
            raise ValueError("sharing lists the same arm twice")
        for i, job in enumerate(self.neighbors):
            if job.sweep:
                raise ValueError(
                    f"neighbors[{i}] has a sweep; a neighbor runs at one setting while the jobs sweep"
                )
        for i, job in enumerate(self.jobs):
            if job.instances == "rest":
                raise ValueError(f"jobs[{i}].instances: 'rest' applies to neighbors only")
        return self

    def config_hash(self) -> str:
        """A stable hash of what is measured (name, description and executor excluded)."""
        data = self.model_dump(mode="json", exclude={"name", "description", "executor"})
        # Fields added after the first release hash only when set, so stores
        # written before them still resume.
        if data.get("sharing") == [
            {"exclusive": {"layouts": None}, "mig": None, "mps": None, "timeslice": None}
        ]:
            del data["sharing"]
        for key, default in (("neighbors", []), ("baselines", False)):
            if data.get(key, default) == default:
                data.pop(key, None)
        for job in data["jobs"]:
            for key in ("scenario", "instances"):
                if job.get(key) is None:
                    job.pop(key, None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of experiment files (``migperf config schema``)."""
    return ExperimentConfig.model_json_schema()


def parse_config(text: str, source: str = "<config>") -> ExperimentConfig:
    """Validate experiment YAML text.

    Raises:
        ConfigError: not YAML, or any field invalid; the message lists every
            problem as ``source:line: field: problem``.
    """
    return validate_yaml(text, source, ExperimentConfig, kind="an experiment file", hint=_HINT)


def load_config(path: Path) -> ExperimentConfig:
    """Read and validate an experiment file.

    Raises:
        ConfigError: unreadable, not YAML, or invalid (every problem listed).
    """
    return parse_config(read_text(path), str(path))
