"""What one measurement is: the spec a worker process reads on stdin.

A :class:`BenchSpec` is plain data (JSON-serialisable, validated by pydantic),
built by the parent and sent to ``python -m migperf.bench.worker``. It holds
no device handle: the device comes from the worker's environment
(``CUDA_VISIBLE_DEVICES``), see :mod:`migperf.bench.device`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from migperf.bench.scenario_spec import ScenarioSpec
from migperf.errors import UsageError

__all__ = [
    "DEFAULT_WARMUP",
    "SPEC_SCHEMA_VERSION",
    "BenchSpec",
    "Precision",
    "Task",
    "parse_spec",
]

#: Version of the spec format; bumped when a field changes meaning.
SPEC_SCHEMA_VERSION = 1

Task = Literal["train", "infer"]
Precision = Literal["fp32", "fp16", "bf16"]

#: Warmup iterations per task when the spec does not say (optimum-benchmark's defaults).
DEFAULT_WARMUP: dict[str, int] = {"infer": 10, "train": 40}

# Fields that say how a run is executed or tested, not what is measured; they
# stay out of the config hash so repeats and co-located copies hash alike.
_NOT_HASHED = frozenset(
    {
        "repeat_index",
        "barrier",
        "inject_crash",
        "inject_hang",
        "inject_oom",
        "device_label",
        "loadgen_log_dir",
    }
)


class BenchSpec(BaseModel):
    """One measurement: a workload, a task, a batch size and the stopping rules.

    Attributes:
        schema_version: Spec format version.
        workload: Registered workload name (``resnet50``, ``bert-base``, ``gemm``...).
        task: ``train`` (forward, loss, backward, optimizer step) or ``infer``.
        batch_size: Samples per iteration.
        seq_len: Tokens per sample for language workloads (ignored otherwise).
        precision: ``fp32``, or ``fp16`` / ``bf16`` under ``torch.autocast``.
        compile: Wrap the model in ``torch.compile``.
        compile_backend: Backend for ``torch.compile`` (``inductor`` by default).
        model_args: Overrides of configuration fields (``num_hidden_layers``)
            or workload arguments (``image_size``); unknown keys are an error.
        warmup_iterations: Untimed-for-statistics iterations before measuring;
            ``None`` picks the task default (10 inference, 40 training).
        min_iterations: Measure at least this many iterations...
        min_duration_s: ...and at least this long (both must be met).
        max_duration_s: Stop measuring after this long even if the minimums are not met.
        max_iterations: Optional hard cap on measured iterations.
        confidence: Coverage of the reported confidence intervals.
        seed: Seed of the random weights and synthetic inputs.
        expect_device: ``cuda`` fails when the worker sees no CUDA device,
            ``cpu`` runs on the CPU, ``auto`` takes CUDA when visible.
        device_label: What the user asked for (``0``, ``MIG-...``, ``cpu``), recorded.
        simulated: The slot is a simulated GPU: the worker runs on the CPU and
            marks every number as simulated.
        barrier: After warmup, report ready and wait for ``go`` on stdin.
        repeat_index: Which repeat of the same measurement this is (0-based).
        inject_crash: Fault injection: ``True``/``"abort"`` aborts the process
            inside the first step, ``"raise"`` raises an unexpected exception there.
        inject_hang: Fault injection: the first step never returns.
        inject_oom: Fault injection: the first step raises ``torch.OutOfMemoryError``.
        scenario: An inference scenario (LoadGen single-stream, multi-stream,
            server, offline, or closed-loop) instead of back-to-back batches;
            ``batch_size`` is then the dynamic batcher's maximum and the
            iteration counts do not apply (see :mod:`migperf.bench.scenario_spec`).
        loadgen_log_dir: Where each scenario run keeps LoadGen's logs, in a
            subdirectory per run (default ``results/loadgen`` under the
            worker's working directory).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SPEC_SCHEMA_VERSION
    workload: str
    task: Task
    batch_size: int = Field(1, ge=1)
    seq_len: int = Field(128, ge=1)
    precision: Precision = "fp32"
    compile: bool = False
    compile_backend: str = "inductor"
    model_args: dict[str, Any] = Field(default_factory=dict)
    warmup_iterations: int | None = Field(None, ge=0)
    min_iterations: int = Field(10, ge=1)
    min_duration_s: float = Field(5.0, ge=0.0)
    max_duration_s: float = Field(60.0, gt=0.0)
    max_iterations: int | None = Field(None, ge=1)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    seed: int = 0
    expect_device: Literal["auto", "cpu", "cuda"] = "auto"
    device_label: str | None = None
    simulated: bool = False
    barrier: bool = False
    repeat_index: int = Field(0, ge=0)
    inject_crash: bool | Literal["abort", "raise"] = False
    inject_hang: bool = False
    inject_oom: bool = False
    scenario: ScenarioSpec | None = None
    loadgen_log_dir: str | None = None

    @model_validator(mode="after")
    def _check_rules(self) -> BenchSpec:
        if self.schema_version > SPEC_SCHEMA_VERSION:
            raise ValueError(
                f"spec schema_version {self.schema_version} is newer than this migperf "
                f"understands ({SPEC_SCHEMA_VERSION})"
            )
        if self.max_duration_s < self.min_duration_s:
            raise ValueError(
                f"max_duration_s ({self.max_duration_s:g}) is below min_duration_s "
                f"({self.min_duration_s:g})"
            )
        if self.scenario is not None and self.task != "infer":
            raise ValueError(
                f"scenario {self.scenario.name!r} needs task 'infer', not {self.task!r}"
            )
        if self.max_iterations is not None and self.max_iterations < self.min_iterations:
            raise ValueError(
                f"max_iterations ({self.max_iterations}) is below min_iterations ({self.min_iterations})"
            )
        return self

    @property
    def effective_warmup(self) -> int:
        """Warmup iterations: the spec's, or the task default."""
        if self.warmup_iterations is not None:
            return self.warmup_iterations
        return DEFAULT_WARMUP[self.task]

    def config_hash(self) -> str:
        """A short, stable hash of everything that defines what is measured."""
        data = self.model_dump(mode="json", exclude=set(_NOT_HASHED))
        data["warmup_iterations"] = self.effective_warmup
        if data.get("scenario") is None:
            # Specs without a scenario hash as they did before the field existed.
            data.pop("scenario", None)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_line(self) -> str:
        """The spec as one line of JSON, as the worker reads it."""
        return self.model_dump_json()


def parse_spec(data: str | bytes | dict[str, Any]) -> BenchSpec:
    """Validate a spec from JSON text or a dict.

    Args:
        data: JSON text, or an already-decoded mapping.

    Returns:
        The validated spec.

    Raises:
        UsageError: When the JSON is malformed or a field is invalid; the
            message names the field.
    """
    try:
        if isinstance(data, dict):
            return BenchSpec.model_validate(data)
        return BenchSpec.model_validate_json(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ())) or "spec"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        raise UsageError(
            "invalid benchmark spec: " + "; ".join(problems),
            hint="see migperf.bench.spec.BenchSpec for the fields and their ranges",
        ) from None
