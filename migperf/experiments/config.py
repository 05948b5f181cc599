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
the file is reported at once, each as ``file:line: field: problem``. That
includes what a worker would refuse (a task the workload lacks, a model
argument it does not have or of the wrong type, a sequence longer than the
model takes; :mod:`migperf.experiments.jobcheck`), so a config that passes
``migperf config check`` does not produce ``invalid`` runs. Sizes have
ceilings: an axis has at most :data:`MAX_AXIS_VALUES` values and an
experiment at most :data:`MAX_RUNS` runs, refused before anything is expanded.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from migperf.bench.scenario_spec import ScenarioSpec
from migperf.errors import UsageError
from migperf.models import StrictModel
from migperf.yamlsource import Problem, read_text, validate_yaml

_HINT = "see `migperf config schema` for every field, and configs/quickstart.yaml for an example"

#: Most runs one experiment may plan (points x repeats x layouts x GPUs x sharing arms):
#: at a few seconds a run, 10,000 runs are days of GPU time.
MAX_RUNS = 10_000
#: Most values one sweep axis may have.
MAX_AXIS_VALUES = 10_000


class RangeSpec(StrictModel):
    """An axis as a range: ``start`` to ``stop`` inclusive, by ``step`` or ``mul``."""

    start: float = Field(allow_inf_nan=False)
    stop: float = Field(allow_inf_nan=False)
    step: float | None = Field(None, gt=0, allow_inf_nan=False)
    mul: float | None = Field(None, gt=1, allow_inf_nan=False)

    @model_validator(mode="after")
    def _one_rule(self) -> RangeSpec:
        if (self.step is None) == (self.mul is None):
            raise ValueError("give exactly one of step or mul")
        if self.stop < self.start:
            raise ValueError("stop is below start")
        if self.mul is not None and self.start <= 0:
            raise ValueError("a multiplicative range needs start > 0")
        n = self.count()
        if n > MAX_AXIS_VALUES:
            raise ValueError(
                f"the range has {_many(n)} values; an axis may have at most {MAX_AXIS_VALUES:,} "
                "(use a larger step or mul)"
            )
        return self

    def count(self) -> int:
        """How many values :meth:`values` gives, computed without listing them."""
        top = self.stop * (1 + 1e-9)
        if self.step is not None:
            q = (top - self.start) / self.step
        else:
            q = math.log(top / self.start) / math.log(self.mul or 2) if top >= self.start else -1
        # A float quotient can be astronomically large (step 1e-300): cap it, do not int() inf.
        return int(min(q, 1e18)) + 1 if q >= 0 else 0

    def values(self) -> list[float]:
        """The axis values, ``start`` first; at most :data:`MAX_AXIS_VALUES` (validation refuses more)."""
        out: list[float] = []
        v = self.start
        while v <= self.stop * (1 + 1e-9) and len(out) < MAX_AXIS_VALUES:
            out.append(v)
            v = v + self.step if self.step is not None else v * (self.mul or 2)
        return out


AxisValues = list[Any] | RangeSpec


def _many(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"about {n:.1e}"


def _positive_int(x: Any) -> bool:
    """Whether a sweep value is a whole number >= 1 (a number, or ASCII digits as text)."""
    if isinstance(x, str):
        # float() reads "٣" (Arabic-Indic three) as 3.0; a config means what it shows.
        if not x.isascii():
            return False
        try:
            x = float(x)
        except ValueError:
            return False
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return math.isfinite(x) and float(x).is_integer() and x >= 1


def axis_values(values: AxisValues) -> list[Any]:
    """An axis's values (a range listed); ints for whole floats."""
    vals = values.values() if isinstance(values, RangeSpec) else list(values)
    return [int(v) if isinstance(v, float) and v.is_integer() else v for v in vals]


def axis_count(values: AxisValues) -> int:
    """How many values an axis has, without listing a range."""
    return values.count() if isinstance(values, RangeSpec) else len(values)


class StopSpec(StrictModel):
    """When a measurement stops (see the benchmark harness)."""

    warmup_iterations: int | None = Field(None, ge=0)
    min_iterations: int = Field(10, ge=1)
    min_duration_s: float = Field(5.0, ge=0)
    max_duration_s: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _order(self) -> StopSpec:
        # The worker's spec refuses this too; every run would come back invalid.
        if self.max_duration_s < self.min_duration_s:
            raise ValueError(
                f"max_duration_s ({self.max_duration_s:g}) is below min_duration_s "
                f"({self.min_duration_s:g})"
            )
        return self


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
            if axis_count(values) > MAX_AXIS_VALUES:
                raise ValueError(
                    f"axis {axis!r} has {axis_count(values):,} values; at most "
                    f"{MAX_AXIS_VALUES:,} are allowed"
                )
            vals = values.values() if isinstance(values, RangeSpec) else values
            if not vals:
                raise ValueError(f"axis {axis!r} has no values")
            if axis in ("batch_size", "seq_len"):
                for x in vals:
                    if not _positive_int(x):
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
    # Also the mapping form with the executor's options: `{slurm: {partition: gpu}}`.
    executor: str | dict[str, dict[str, Any] | None] = "local"
    # How workers live: `warm` (one per device serves consecutive runs and
    # builds each model once) or `fresh` (a new process per run). Not part of
    # the config hash either: both measure the same runs; each result says which.
    workers: Literal["warm", "fresh"] = "warm"
    # The simulated machine (a `--simulate` spec) to run on when this machine
    # has no NVIDIA driver; default: the GPU model the layouts' profile names
    # belong to. Not part of the config hash: on a GPU it changes nothing.
    simulate: str | None = None

    @field_validator("simulate")
    @classmethod
    def _known_machine(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from migperf.nvml.sim.state import parse_machine_spec

        try:
            parse_machine_spec(v)
        except UsageError as exc:
            raise ValueError(f"{exc.message.removeprefix('--simulate ')}; {exc.hint}") from None
        return v

    @field_validator("executor")
    @classmethod
    def _known_executor(
        cls, v: str | dict[str, dict[str, Any] | None]
    ) -> str | dict[str, dict[str, Any] | None]:
        from migperf.experiments.executor_spec import parse_executor

        try:
            spec = parse_executor(v, "executor")
            return {str(spec): dict(spec.options)} if isinstance(v, dict) else str(spec)
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
        """A stable hash of what is measured (name, description, executor, workers and simulate excluded)."""
        data = self.model_dump(
            mode="json", exclude={"name", "description", "executor", "workers", "simulate"}
        )
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


def job_point_count(job: JobSpec) -> int:
    """How many points a job's sweep has (the product of its axes), without expanding it."""
    return math.prod(axis_count(v) for v in job.sweep.values())


def run_estimate(cfg: ExperimentConfig) -> tuple[int, str]:
    """The fewest runs ``cfg`` can make, and how that number is made up.

    A lower bound: each GPU's layouts may hold several chosen slots
    (``instances: each``), and ``gpus: all`` counts one GPU here; the sweep's
    expansion on real GPUs checks the exact number again.
    """
    points = sum(job_point_count(j) for j in cfg.jobs)
    gpus = 1 if cfg.gpus == "all" else max(len(cfg.gpus), 1)
    factors = [
        (points, "sweep point"),
        (cfg.repeats, "repeat"),
        (len(cfg.layouts), "layout"),
        (gpus, "GPU"),
        (len(cfg.sharing), "sharing arm"),
    ]
    total = math.prod(n for n, _ in factors)
    how = " x ".join(f"{_many(n)} {word}{'' if n == 1 else 's'}" for n, word in factors)
    return total, how


def _too_many(cfg: ExperimentConfig) -> Problem | None:
    total, how = run_estimate(cfg)
    if total <= MAX_RUNS:
        return None
    # Point at the biggest factor: the repeats, or the job with the largest sweep.
    biggest = max(range(len(cfg.jobs)), key=lambda i: job_point_count(cfg.jobs[i]))
    loc: tuple[Any, ...] = ("repeats",)
    if job_point_count(cfg.jobs[biggest]) > cfg.repeats:
        loc = ("jobs", biggest, "sweep")
    return (
        loc,
        f"the experiment would make at least {_many(total)} runs ({how}); at most "
        f"{MAX_RUNS:,} are allowed: shrink the sweep, the repeats or the layouts, or split "
        "the experiment into several files",
    )


def _job_checks(where: tuple[Any, ...], job: JobSpec) -> list[Problem]:
    from migperf.experiments.jobcheck import job_problems

    if job_point_count(job) > MAX_RUNS:
        return []  # the run ceiling reports it; its points are not listed
    axes = {axis: axis_values(v) for axis, v in job.sweep.items()}
    return [(where + loc, msg) for loc, msg in job_problems(job, axes)]


def _checks(data: dict[str, Any], cfg: ExperimentConfig | None) -> list[Problem]:
    """What the schema cannot see: the run ceiling, and what workers would refuse."""
    out: list[Problem] = []
    if cfg is not None:
        too_many = _too_many(cfg)
        if too_many is not None:
            out.append(too_many)
        jobs = [(("jobs", i), j) for i, j in enumerate(cfg.jobs)]
        jobs += [(("neighbors", i), j) for i, j in enumerate(cfg.neighbors)]
    else:
        # The file has other problems; still check each job that is valid on its own.
        jobs = []
        for key in ("jobs", "neighbors"):
            raw = data.get(key)
            for i, item in enumerate(raw if isinstance(raw, list) else []):
                try:
                    jobs.append(((key, i), JobSpec.model_validate(item)))
                except ValueError:
                    continue
    for where, job in jobs:
        out += _job_checks(where, job)
    return out


def parse_config(text: str, source: str = "<config>") -> ExperimentConfig:
    """Validate experiment YAML text.

    Beyond the schema this checks the run ceiling (:data:`MAX_RUNS`) and
    everything a worker would refuse in a job (see
    :mod:`migperf.experiments.jobcheck`), without importing torch.

    Raises:
        ConfigError: not YAML, over a limit of the YAML reader, any field
            invalid, too many runs, or a job its workers would refuse; the
            message lists every problem as ``source:line: field: problem``.
    """
    return validate_yaml(
        text, source, ExperimentConfig, kind="an experiment file", hint=_HINT, checks=_checks
    )


def load_config(path: Path) -> ExperimentConfig:
    """Read and validate an experiment file.

    Raises:
        ConfigError: unreadable, not YAML, or invalid (every problem listed).
    """
    return parse_config(read_text(path), str(path))
