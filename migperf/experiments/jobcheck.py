"""What the worker would refuse in a job, found before anything runs.

A worker turns a bad job into an ``invalid`` result: a task the workload
lacks, a model argument it does not have or of the wrong type, a sequence
longer than the model's position embeddings, ``compile`` on a
microbenchmark, a scenario on a workload that cannot serve requests, or a
swept scenario value the scenario does not take. The same rules are checked
here, from the workload classes' declarations (importing them needs no torch;
see :mod:`migperf.bench.workloads`) and, for ``transformers`` configuration
fields, from the installed package's source (:mod:`.hf_fields`), so
``migperf config check`` and ``migperf run`` refuse such a config at once.
"""

from __future__ import annotations

import difflib
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from migperf.errors import UsageError
from migperf.experiments.hf_fields import config_fields

__all__ = ["JobLike", "job_problems"]

#: A problem: the field's path inside the job, and what is wrong.
JobProblem = tuple[tuple[Any, ...], str]

# Workloads whose prepared step has no per-sample inference (no infer_batch):
# the scenario runner refuses them. tests/experiments checks this against the
# workloads themselves.
NO_SCENARIO = frozenset({"memcpy"})
# A synthetic token id must be above the special ids 0-2 (bench language workloads).
_FIRST_ORDINARY_TOKEN = 3


class JobLike(Protocol):
    """The fields of a config job that decide what its workers are given."""

    @property
    def workload(self) -> str:
        """Registered workload name."""

    @property
    def task(self) -> str:
        """``train`` or ``infer``."""

    @property
    def compile(self) -> bool:
        """Whether the model is wrapped in ``torch.compile``."""

    @property
    def seq_len(self) -> int:
        """Tokens per sample when not swept."""

    @property
    def model_args(self) -> dict[str, Any]:
        """Model arguments when not swept."""

    @property
    def scenario(self) -> Any:
        """The job's scenario (a pydantic model) or None."""


def job_problems(job: JobLike, axes: Mapping[str, Sequence[Any]]) -> list[JobProblem]:
    """Everything a worker would refuse in ``job`` over the points of its sweep.

    Args:
        job: A schema-valid job.
        axes: The job's sweep axes with their values (a caller has already
            checked that their product is within the run ceiling).

    Returns:
        ``(path inside the job, problem)`` pairs, one per distinct problem.
    """
    from migperf.bench.workloads import load_workload, workload_info

    try:
        info = workload_info(job.workload)
    except UsageError:
        return []  # the schema reports unknown workloads
    cls = load_workload(job.workload)
    out: list[JobProblem] = []
    if job.task not in info.tasks:
        out.append(
            (("task",), f"{info.name} supports only {' and '.join(info.tasks)}, not {job.task}")
        )
    is_model = hasattr(cls, "CONFIG_CLASS")
    if job.compile and not is_model:
        out.append((("compile",), f"{info.name} runs no model; compile does not apply (drop it)"))
    if job.scenario is not None and info.name in NO_SCENARIO:
        out.append(
            (
                ("scenario",),
                f"{info.name} cannot serve inference scenarios: it has no per-sample inputs; "
                "use a model workload (resnet50, bert-base, ...), gemm, or the synthetic sleep",
            )
        )
    out += _arg_problems(cls, job, axes)
    out += _point_problems(cls, job, axes)
    return list(dict.fromkeys(out))


def _where(key: str, axes: Mapping[str, Sequence[Any]]) -> tuple[Any, ...]:
    swept = f"model_args.{key}"
    return ("sweep", swept) if swept in axes else ("model_args", key)


def _arg_problems(cls: Any, job: JobLike, axes: Mapping[str, Sequence[Any]]) -> list[JobProblem]:
    """Unknown model arguments and values of the wrong type."""
    from migperf.bench.workloads.base import check_type

    wargs: Mapping[str, Any] = cls.WORKLOAD_ARGS
    given: dict[str, list[Any]] = {k: [v] for k, v in job.model_args.items()}
    for axis, values in axes.items():
        if axis.startswith("model_args."):
            given[axis.removeprefix("model_args.")] = list(values)
    config_class: str | None = getattr(cls, "CONFIG_CLASS", None)
    declared: Mapping[str, Any] = getattr(cls, "CONFIG_DEFAULTS", {})
    fields: dict[str, Any] | None = None
    if config_class is not None and any(k not in wargs and k not in declared for k in given):
        # Read only when needed: the first read parses transformers' sources (~0.2 s).
        fields = config_fields(config_class)
    out: list[JobProblem] = []
    for key, values in given.items():
        default: Any
        if key in wargs:
            owner, default = cls.NAME, wargs[key]
        elif key in declared:
            owner, default = config_class or cls.NAME, declared[key]
        elif config_class is not None and fields is None:
            continue  # transformers' source not found: the worker checks it
        elif fields is not None and key in fields:
            owner, default = config_class or cls.NAME, fields[key]
        else:
            known = sorted(set(wargs) | set(declared) | set(fields or ()))
            close = difflib.get_close_matches(key, known, n=3)
            what = f"nor a field of {config_class}" if config_class else ""
            msg = f"unknown model arg {key!r} for {cls.NAME}: it is not a workload argument"
            msg += f" {what}" if what else ""
            msg += f" (did you mean {', '.join(close)}?)" if close else ""
            shown = ", ".join(known) if len(known) <= 40 else ", ".join(known[:40]) + ", ..."
            out.append((_where(key, axes), f"{msg}; accepted: {shown}"))
            continue
        for value in values:
            try:
                check_type(owner, key, value, default)
            except UsageError as exc:
                msg = exc.message
                if isinstance(value, str) and _exponent_text(value):
                    msg += (
                        f" (YAML reads {value} as text; write a dot and a signed exponent, "
                        "like 1.0e-5, or the plain number)"
                    )
                out.append((_where(key, axes), msg))
                break
    return out


def _exponent_text(text: str) -> bool:
    """Whether a string is a number in exponent form that YAML 1.1 kept as text (``1e-5``)."""
    try:
        float(text)
    except ValueError:
        return False
    return text.isascii() and "e" in text.lower()


def _points(axes: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the swept values, as ``{axis: value}``."""
    names = list(axes)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _number(value: Any) -> float | None:
    """A finite number, or None for anything else (the type check reports those)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _value_problem(cls: Any, margs: Mapping[str, Any]) -> tuple[str, str] | None:
    """The first workload argument the build refuses: ``(key, problem)``."""
    from migperf.bench.workloads.micro import Gemm, Memcpy
    from migperf.bench.workloads.synthetic import Sleep
    from migperf.bench.workloads.vision import VisionWorkload, VitBase

    def num(key: str) -> float | None:
        return _number(margs.get(key))

    n, mib, size, patch = num("n"), num("size_mib"), num("image_size"), num("patch_size")
    if issubclass(cls, Gemm) and n is not None and n < 1:
        return "n", f"gemm: model arg n={margs['n']} must be positive"
    if issubclass(cls, Memcpy) and mib is not None and int(mib * 1024 * 1024) < 1:
        return "size_mib", f"memcpy: model arg size_mib={margs['size_mib']} gives less than a byte"
    if issubclass(cls, Sleep):
        for key in ("service_ms", "per_sample_ms"):
            v = num(key)
            if v is not None and v < 0:
                return key, f"sleep: {key}={margs[key]} must not be negative"
    if issubclass(cls, VisionWorkload) and size is not None and int(size) < 1:
        return (
            "image_size",
            f"model arg image_size={margs['image_size']} must be a positive number of pixels",
        )
    if issubclass(cls, VitBase) and size and patch and int(size) % int(patch):
        return "image_size", (
            f"vit-base: image_size {int(size)} is not a multiple of patch_size {int(patch)}; "
            "pick an image size divisible by the patch size"
        )
    return None


def _point_problems(cls: Any, job: JobLike, axes: Mapping[str, Sequence[Any]]) -> list[JobProblem]:
    """Values each point gives the workload that its build would refuse (first per field)."""
    from pydantic import ValidationError

    from migperf.bench.scenario_spec import ScenarioSpec
    from migperf.bench.workloads.language import LanguageWorkload

    found: dict[tuple[Any, ...], str] = {}
    declared: Mapping[str, Any] = getattr(cls, "CONFIG_DEFAULTS", {})
    base_scenario = (
        job.scenario.model_dump(mode="json", exclude_defaults=True) | {"name": job.scenario.name}
        if job.scenario is not None
        else None
    )
    for point in _points(axes):
        margs = {**cls.WORKLOAD_ARGS, **declared, **job.model_args}
        margs.update(
            {
                k.removeprefix("model_args."): v
                for k, v in point.items()
                if k.startswith("model_args.")
            }
        )
        problem = _value_problem(cls, margs)
        if problem is not None:
            found.setdefault(_where(problem[0], axes), problem[1])
        if issubclass(cls, LanguageWorkload):
            seq = int(point.get("seq_len", job.seq_len))
            for where, msg in _language(cls, margs, seq, axes):
                found.setdefault(where, msg)
        if base_scenario is not None:
            scen = dict(base_scenario)
            scen.update(
                {
                    k.removeprefix("scenario."): float(v)
                    for k, v in point.items()
                    if k.startswith("scenario.")
                }
            )
            try:
                ScenarioSpec.model_validate(scen)
            except ValidationError as exc:
                swept = [k for k in point if k.startswith("scenario.")]
                where = ("sweep", swept[0]) if swept else ("scenario",)
                msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
                at = ", ".join(f"{k}={point[k]}" for k in swept)
                found.setdefault(where, f"{msg} (at {at})" if at else msg)
    return list(found.items())


def _language(
    cls: Any, margs: Mapping[str, Any], seq: int, axes: Mapping[str, Sequence[Any]]
) -> list[JobProblem]:
    """A language model's sequence length against its position embeddings, and its vocabulary."""
    out: list[JobProblem] = []
    positions = _number(margs.get("max_position_embeddings"))
    pad = _number(margs.get("pad_token_id")) or 0.0
    if positions is not None:
        # RoBERTa-style position ids start after the padding id (bench LanguageWorkload).
        limit = int(positions) - (int(pad) + 1 if cls.PADDING_OFFSET_POSITIONS else 0)
        if seq > limit:
            where = ("sweep", "seq_len") if "seq_len" in axes else ("seq_len",)
            out.append(
                (
                    where,
                    f"{cls.NAME}: seq_len {seq} exceeds the {limit} positions the model supports "
                    f"(max_position_embeddings={int(positions)}); use {limit} or less, or raise "
                    "model_args.max_position_embeddings",
                )
            )
    vocab = _number(margs.get("vocab_size"))
    if vocab is not None and vocab <= _FIRST_ORDINARY_TOKEN:
        out.append(
            (_where("vocab_size", axes), f"{cls.NAME}: vocab_size {int(vocab)} is too small")
        )
    return out
