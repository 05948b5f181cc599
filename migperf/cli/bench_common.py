"""What both modes of ``migperf bench`` share: limits, faults, failures, the sweep with progress.

:mod:`migperf.cli.bench` (back-to-back batches) and
:mod:`migperf.cli.bench_scenarios` (LoadGen scenarios) both import from here,
so neither imports the other's internals. Nothing here imports torch, NVML or
rich at import time.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.cli._common import stderr
from migperf.errors import MigperfError, UsageError

if TYPE_CHECKING:
    from migperf.bench.monitor import RunMonitor
    from migperf.bench.result import WorkerResult
    from migperf.bench.spec import BenchSpec

__all__ = [
    "TIMEOUT_MARGIN_S",
    "Fault",
    "check_simulated_device",
    "RunsFailedError",
    "fmt_number",
    "parse_model_args",
    "raise_if_failed",
    "run_with_progress",
    "store_and_say",
]

#: Seconds a worker gets beyond --max-duration for start-up, model build and warmup.
TIMEOUT_MARGIN_S = 300.0


class RunsFailedError(MigperfError):
    """Some runs of a sweep crashed, timed out or were aborted (their results are still printed)."""


class Fault(str, Enum):
    """Fault injection, for testing migperf itself."""

    crash = "crash"
    hang = "hang"
    oom = "oom"


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` items; values are JSON when they parse, else strings.

    Raises:
        UsageError: For an item without ``=`` or with an empty key.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(
                f"--model-arg {item!r} is not KEY=VALUE",
                hint="e.g. --model-arg num_hidden_layers=2",
            )
        raw = raw.strip()
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def fmt_number(value: float | None, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits, thousands separators when large, ``-`` for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:,.0f}"


def raise_if_failed(results: list[WorkerResult]) -> None:
    """Fail the command when a run crashed, timed out or was aborted (after its results were printed).

    Raises:
        RunsFailedError: Naming how many runs failed and the first one's error.
    """
    failed = [r for r in results if r.status in ("crashed", "timeout", "aborted")]
    if failed:
        first = failed[0]
        raise RunsFailedError(
            f"{len(failed)} of {len(results)} runs failed; first: batch size {first.batch_size}, "
            f"{first.status}: {first.error.message if first.error else 'no detail'}",
            hint="each failed run's last stderr lines are in its result (--json: process.stderr_tail)",
        )


def run_with_progress(
    spec: BenchSpec,
    sizes: list[int],
    repeats: int,
    env: dict[str, str],
    timeout_s: float,
    monitor: RunMonitor | None = None,
) -> list[WorkerResult]:
    """Run the batch-size sweep, one worker at a time, with a progress bar on stderr.

    Args:
        spec: The spec to vary over ``sizes`` and repeats.
        sizes: Batch sizes, ascending.
        repeats: Worker processes per batch size.
        env: Every worker's environment.
        timeout_s: Limit per worker.
        monitor: Attach each run's telemetry (``None``: none).

    Returns:
        Every result, skipped batch sizes included.

    Raises:
        UsageError: When a worker reports the spec itself invalid.
    """
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from migperf.bench.launch import LaunchJob, launch_jobs
    from migperf.bench.series import run_series

    def run(s: BenchSpec, e: Mapping[str, str] | None, t: float) -> WorkerResult:
        job = LaunchJob(spec=s, env=dict(os.environ if e is None else e))
        # One worker at a time has the host's cores to itself: the bench
        # commands leave OMP_NUM_THREADS to the user, simulated or not.
        return launch_jobs([job], simulated=False, timeout_s=t, monitor=monitor)[0]

    total = len(sizes) * repeats
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} runs"),
        TimeElapsedColumn(),
        console=stderr(),
        transient=True,
    ) as progress:
        task_id = progress.add_task(f"{spec.workload} {spec.task}", total=total)

        def on_start(s: BenchSpec) -> None:
            which = f" run {s.repeat_index + 1}/{repeats}" if repeats > 1 else ""
            progress.update(
                task_id, description=f"{s.workload} {s.task} batch {s.batch_size}{which}"
            )

        def on_result(r: WorkerResult) -> None:
            progress.advance(task_id, repeats if r.status == "skipped" else 1)

        return run_series(
            spec,
            sizes,
            repeats=repeats,
            env=env,
            timeout_s=timeout_s,
            run=run,
            on_start=on_start,
            on_result=on_result,
        )


def store_and_say(
    path: Path,
    results: list[WorkerResult],
    *,
    device: str | None,
    simulate: str | None,
    repeats: int,
) -> None:
    """``--results``: store the results like ``migperf run`` and say where (stderr)."""
    from migperf.cli.bench_store import store_bench_results

    n = store_bench_results(path, results, device=device, simulate=simulate, repeats=repeats)
    stderr().print(
        f"stored {n} result(s) in {path} (experiment 'bench'; `migperf results show --results {path}`)",
        soft_wrap=True,
        markup=False,
    )


def check_simulated_device(simulate: str | None, device: str | None) -> None:
    """Refuse a GPU index or MIG UUID the simulated machine does not have, as a real one would.

    On a real GPU, ``CUDA_VISIBLE_DEVICES=MIG-<unknown>`` leaves the worker no
    CUDA device and the run fails; a simulated slot must not quietly measure
    on the CPU instead.

    Raises:
        GpuNotFoundError: the device is not on the simulated machine.
    """
    text = (device or "").strip()
    if not simulate or text.lower() in ("", "cpu", "auto"):
        return
    from migperf.errors import GpuNotFoundError
    from migperf.nvml import open_nvml
    from migperf.telemetry.target import resolve_target

    with open_nvml(simulate, read_only=True) as nvml:
        try:
            resolve_target(nvml, text)
            return
        except GpuNotFoundError as exc:
            count = nvml.gpu_count()
            migs = [
                d.mig_uuid for g in nvml.gpus() if g.mig_devices for d in nvml.mig_devices(g.index)
            ]
            missing = exc
    raise GpuNotFoundError(
        f"--device {text}: no such device on the simulated {simulate}",
        hint=f"its GPU indices are 0..{count - 1}"
        + (
            f"; its MIG devices: {', '.join(migs)}"
            if migs
            else f"; it has no MIG devices (create some with `migperf --simulate {simulate} mig apply ...`)"
        ),
    ) from missing
