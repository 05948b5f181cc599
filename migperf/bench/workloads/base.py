"""What every workload is: a named model plus synthetic inputs, prepared into a timed step.

A :class:`Workload` subclass names itself (``NAME``), says which family it
belongs to (``vision``, ``language``, ``micro``) and which tasks it supports,
and turns a :class:`~migperf.bench.spec.BenchSpec` into a
:class:`PreparedWorkload`: a ``step(mark)`` callable for the harness and the
amount of work one step does (samples, tokens, FLOP, bytes).

Model arguments (``--model-arg key=value``) are either workload arguments
(``WORKLOAD_ARGS``, e.g. ``image_size``) or fields of the model's
``transformers`` configuration class (e.g. ``num_hidden_layers``); anything
else is a :class:`~migperf.errors.UsageError` that lists what is accepted.
"""

from __future__ import annotations

import difflib
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from migperf.errors import UsageError

if TYPE_CHECKING:
    import torch

    from migperf.bench.harness import StepFn
    from migperf.bench.spec import BenchSpec

__all__ = [
    "PreparedWorkload",
    "Workload",
    "apply_faults",
    "autocast_context",
    "check_type",
    "split_model_args",
]

#: Configuration keys never worth recording (1000-entry label maps).
_UNRECORDED = frozenset({"id2label", "label2id"})


@dataclass
class PreparedWorkload:
    """A workload ready to run on its device.

    Attributes:
        step: One iteration; calls ``mark()`` between phases.
        phases: Phase names in order (``forward, backward, optimizer`` for training).
        samples_per_step: Samples one step processes.
        tokens_per_step: Tokens one step processes (language workloads).
        flop_per_step: Floating-point operations one step performs (``gemm``).
        bytes_per_step: Bytes read plus written by one step (``memcpy``).
        parameter_count: Parameters of the model.
        config: The effective configuration, for the record.
        notes: Facts a reader of the result should know.
        infer_batch: Inference on some of the prepared samples, given their
            positions along the batch dimension (the inference scenarios'
            dynamic batcher calls it with each batch it forms); ``None`` when
            the workload cannot serve requests.
        precision: The precision it executes in (see :func:`executed_precision`).
    """

    step: StepFn
    phases: tuple[str, ...]
    samples_per_step: int
    tokens_per_step: int | None = None
    flop_per_step: float | None = None
    bytes_per_step: float | None = None
    parameter_count: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    infer_batch: Callable[[Sequence[int]], None] | None = None
    precision: str | None = None


class Workload(ABC):
    """A benchmark workload (one per registered name).

    Args:
        spec: What to run (batch size, precision, task, model arguments).
        device: The torch device to run on.
    """

    NAME: ClassVar[str]
    FAMILY: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""
    TASKS: ClassVar[tuple[str, ...]] = ("train", "infer")
    #: Workload arguments accepted in ``model_args`` besides configuration fields.
    WORKLOAD_ARGS: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, spec: BenchSpec, device: torch.device) -> None:
        if spec.task not in self.TASKS:
            raise UsageError(
                f"{self.NAME} supports only {' and '.join(self.TASKS)}, not {spec.task}",
                hint=f"run it with `migperf bench {self.TASKS[0]} --model {self.NAME}`",
            )
        self.spec = spec
        self.device = device

    @abstractmethod
    def prepare(self) -> PreparedWorkload:
        """Build the model, optimizer and synthetic inputs on the device.

        Raises:
            UsageError: For an invalid model argument or sequence length.
        """


def check_type(owner: str, key: str, value: Any, default: Any) -> Any:
    """Check that an override has the type of the field's default, coercing ints to floats.

    Args:
        owner: Name of what owns the field, for the message (``BertConfig``).
        key: The field.
        value: The override.
        default: The field's default value (``None``: anything goes).

    Returns:
        The value, possibly coerced.

    Raises:
        UsageError: When the types disagree.
    """
    if default is None or value is None:
        return value
    ok: bool
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = float(value)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        if ok:
            value = list(value)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        want = type(default).__name__
        raise UsageError(
            f"model arg {key}={value!r}: {owner}.{key} takes a {want} "
            f"(default {default!r}), got {type(value).__name__}",
            hint=f"pass e.g. --model-arg {key}={_example(default)}",
        )
    return value


def _example(default: Any) -> str:
    import json

    try:
        return json.dumps(default, separators=(",", ":"))
    except TypeError:
        return str(default)


def split_model_args(
    workload: str,
    model_args: Mapping[str, Any],
    workload_args: Mapping[str, Any],
    config_defaults: Mapping[str, Any] | None,
    config_name: str = "config",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``model_args`` into workload arguments and configuration overrides.

    Args:
        workload: Workload name, for messages.
        model_args: The user's overrides.
        workload_args: Workload arguments with their defaults.
        config_defaults: Every field of the configuration class with its
            default (``config.to_dict()``); ``None`` when there is no configuration.
        config_name: Name of the configuration class, for messages.

    Returns:
        ``(workload_args with defaults filled in, config overrides)``.

    Raises:
        UsageError: For a key that is neither, or a value of the wrong type.
    """
    wargs = dict(workload_args)
    overrides: dict[str, Any] = {}
    config_keys = set(config_defaults or ()) - _UNRECORDED
    for key, value in model_args.items():
        if key in workload_args:
            wargs[key] = check_type(workload, key, value, workload_args[key])
        elif config_defaults is not None and key in config_keys:
            overrides[key] = check_type(config_name, key, value, config_defaults[key])
        else:
            known = sorted(set(workload_args) | config_keys)
            close = difflib.get_close_matches(key, known, n=3)
            if config_defaults is not None:
                message = (
                    f"unknown model arg {key!r} for {workload}: it is neither a workload argument "
                    f"nor a field of {config_name}"
                )
            else:
                message = f"unknown model arg {key!r} for {workload}: it is not a workload argument"
            if close:
                message += f" (did you mean {', '.join(close)}?)"
            shown = ", ".join(known) if len(known) <= 40 else ", ".join(known[:40]) + ", ..."
            raise UsageError(message, hint=f"accepted keys: {shown}")
    return wargs, overrides


def recordable_config(config: Any) -> dict[str, Any]:
    """A configuration as JSON-ready data without label maps."""
    data = config.to_dict()
    return {k: v for k, v in data.items() if k not in _UNRECORDED}


def executed_precision(precision: str, device: torch.device) -> str:
    """The precision a workload runs in on ``device``: as asked, except fp16 on a CPU.

    CPUs have no fast fp16 kernels (ResNet-50 on this project's CI CPU: 71 ms
    per image in fp32, 40 ms in bf16, 2,427 ms in fp16), so an fp16 request
    on a CPU (a simulated GPU, ``--device cpu``) runs in bf16, the half
    precision CPUs execute natively; the result records both. On a GPU
    nothing changes.
    """
    if precision == "fp16" and device.type == "cpu":
        return "bf16"
    return precision


def precision_note(requested: str, executed: str) -> str | None:
    """What a reader must know when the executed precision is not the requested one."""
    if requested == executed:
        return None
    return (
        f"precision: {requested} requested, {executed} executed (this CPU has no fast "
        f"{requested} kernels; on a GPU {requested} runs as asked)"
    )


def autocast_context(
    precision: str, device: torch.device
) -> Callable[[], AbstractContextManager[Any]]:
    """A factory of the autocast context for ``precision`` (a null context for fp32)."""
    import torch

    if precision == "fp32":
        return nullcontext
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    device_type = device.type

    def ctx() -> AbstractContextManager[Any]:
        return torch.autocast(device_type=device_type, dtype=dtype)

    return ctx


def apply_faults(step: StepFn, spec: BenchSpec) -> StepFn:
    """Wrap ``step`` with the spec's fault injection (tests of crash, hang and OOM paths).

    The faults fire inside the first call of the step, after the real work of
    that step, exactly where a real failure would surface:

    * ``inject_oom``: raises ``torch.OutOfMemoryError`` (the class
      ``torch.cuda.OutOfMemoryError`` names), with a CUDA-style message.
    * ``inject_crash``: ``True``/``"abort"`` aborts the process (SIGABRT, no
      result document); ``"raise"`` raises an unexpected ``RuntimeError``.
    * ``inject_hang``: never returns.
    """
    if not (spec.inject_oom or spec.inject_crash or spec.inject_hang):
        return step
    fired = False

    def faulty(mark: Callable[[], None]) -> None:
        nonlocal fired
        step(mark)
        if fired:
            return
        fired = True
        if spec.inject_hang:
            while True:
                time.sleep(3600)
        if spec.inject_crash:
            if spec.inject_crash == "raise":
                raise RuntimeError("injected crash (spec inject_crash: raise)")
            os.abort()
        if spec.inject_oom:
            import torch

            raise torch.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB. "
                f"(injected by spec inject_oom at batch size {spec.batch_size})"
            )

    return faulty


def count_parameters(model: Any) -> int:
    """Number of parameters of a torch module."""
    return sum(p.numel() for p in model.parameters())
