"""What the ``migperf mig`` commands share: GPU options, choosing GPUs, printing a change plan."""

from __future__ import annotations

from typing import Annotated

import typer

from migperf.cli._common import stdout
from migperf.errors import GpuNotFoundError

__all__ = [
    "DryRunOption",
    "ForceOption",
    "GpuOption",
    "GpuTargetOption",
    "JsonOption",
    "gpu_indices",
    "print_plan",
    "target_gpus",
]

GpuOption = Annotated[
    int | None,
    typer.Option("--gpu", "-i", help="GPU index (default: every GPU).", min=0),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def gpu_indices(nvml: object, gpu: int | None) -> list[int]:
    from migperf.nvml.facade import Nvml

    assert isinstance(nvml, Nvml)
    count = nvml.gpu_count()
    if gpu is None:
        return list(range(count))
    if gpu >= count:
        raise GpuNotFoundError(
            f"GPU {gpu} does not exist: this machine has {count} GPU(s)",
            hint="list them with `migperf gpus`",
        )
    return [gpu]


GpuTargetOption = Annotated[
    str,
    typer.Option("--gpu", "-i", help="GPU index, or 'all'.", metavar="N|all"),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Destroy instances even if processes run on them.")
]


def target_gpus(nvml: object, gpu: str) -> list[int]:
    from migperf.errors import UsageError

    if gpu.strip().lower() == "all":
        return gpu_indices(nvml, None)
    try:
        index = int(gpu)
    except ValueError:
        raise UsageError(
            f"--gpu {gpu!r} is not a GPU index or 'all'", hint="e.g. --gpu 0 or --gpu all"
        ) from None
    if index < 0:
        raise UsageError(
            f"--gpu {gpu!r} is not a GPU index or 'all'", hint="e.g. --gpu 0 or --gpu all"
        )
    return gpu_indices(nvml, index)


def print_plan(result: object, *, dry_run: bool) -> None:
    from migperf.mig.apply import ApplyResult

    assert isinstance(result, ApplyResult)
    console = stdout()
    g = result.gpu_index
    if result.recovered is not None:
        console.print(f"GPU {g}: replayed a journal left by an interrupted change first")
    if not result.steps:
        console.print(
            f"GPU {g}: already in the requested layout ({result.before.describe()}); nothing to do"
        )
        return
    head = "would" if dry_run else "did"
    console.print(f"GPU {g}: {result.before.describe()}  ->  {result.after.describe()}")
    for step in result.steps:
        console.print(f"  {head} {step.describe()}")
