"""A series of runs for `migperf bench`: batch sizes in order, each repeated, and their spread.

A sweep runs batch sizes in ascending order, each ``repeats`` times in
separate worker processes. Once a batch size runs out of memory, larger ones
are not run (they are recorded as ``skipped``); an ``invalid`` spec stops the
sweep with a :class:`~migperf.errors.UsageError`, since every other batch
size would fail the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from migperf.bench.result import ErrorInfo, WorkerResult
from migperf.bench.spec import BenchSpec
from migperf.bench.stats import Summary, summarize
from migperf.errors import UsageError

__all__ = [
    "HIGH_CV",
    "RepeatSpread",
    "RunFn",
    "parse_batch_sizes",
    "run_series",
    "summarize_repeats",
]

#: Coefficient of variation above which repeated runs are flagged (pyperf's 10 %).
HIGH_CV = 0.10

RunFn = Callable[[BenchSpec, Mapping[str, str] | None, float], WorkerResult]


def parse_batch_sizes(text: str) -> list[int]:
    """Parse ``"1,8,32"`` into sorted, distinct positive batch sizes.

    Raises:
        UsageError: For an empty list or a value that is not a positive integer.
    """
    sizes: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        # isascii: str.isdigit() and int() also take "٣" (Arabic-Indic three) and
        # "３"; the length cap keeps int() from a 5,000-digit string.
        if not (part.isascii() and part.isdigit()) or len(part) > 9 or int(part) < 1:
            # A pasted megabyte is not quoted back whole.
            whole = text if len(text) <= 60 else text[:50] + "..."
            shown = part if len(part) <= 20 else part[:12] + "..."
            raise UsageError(
                f"--batch-size {whole!r}: {shown!r} is not a positive integer",
                hint="give a comma-separated list, e.g. --batch-size 1,8,32",
            )
        sizes.add(int(part))
    if not sizes:
        raise UsageError(
            "--batch-size is empty", hint="give a comma-separated list, e.g. --batch-size 1,8,32"
        )
    return sorted(sizes)


def run_series(
    base: BenchSpec,
    batch_sizes: Sequence[int],
    *,
    repeats: int = 1,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600.0,
    run: RunFn | None = None,
    on_start: Callable[[BenchSpec], None] | None = None,
    on_result: Callable[[WorkerResult], None] | None = None,
) -> list[WorkerResult]:
    """Run ``base`` at each batch size, ``repeats`` times each, in fresh workers.

    Args:
        base: The spec to vary (its ``batch_size`` and ``repeat_index`` are replaced).
        batch_sizes: Batch sizes; run in ascending order.
        repeats: Separate worker processes per batch size.
        env: Worker environment (see :func:`migperf.bench.device.worker_env`).
        timeout_s: Limit per worker.
        run: How to run one spec (:func:`migperf.bench.process.run_worker` by default).
        on_start: Called before each run.
        on_result: Called with each result (skipped ones included).

    Returns:
        One result per run, plus a ``skipped`` result per batch size not run.

    Raises:
        UsageError: When ``repeats < 1``, or a worker reports the spec itself
            invalid (an unknown model argument, a sequence too long...).
    """
    if repeats < 1:
        raise UsageError(f"--repeats must be at least 1, got {repeats}")
    if run is None:
        from migperf.bench.process import run_worker

        run = run_worker
    results: list[WorkerResult] = []
    oom_at: int | None = None
    for bs in sorted(set(batch_sizes)):
        for r in range(repeats):
            spec = base.model_copy(update={"batch_size": bs, "repeat_index": r})
            if oom_at is not None:
                if r == 0:
                    skipped = WorkerResult.for_spec(
                        spec,
                        "skipped",
                        error=ErrorInfo(
                            kind="skipped",
                            message=f"not run: batch size {oom_at} already ran out of memory",
                            phase="sweep",
                        ),
                    )
                    results.append(skipped)
                    if on_result:
                        on_result(skipped)
                break
            if on_start:
                on_start(spec)
            result = run(spec, env, timeout_s)
            results.append(result)
            if on_result:
                on_result(result)
            if result.status == "invalid":
                err = result.error
                raise UsageError(
                    err.message if err else f"the worker rejected the spec for {spec.workload}",
                    hint=err.hint if err else "",
                )
            if result.status == "oom":
                oom_at = bs
                break
    return results


@dataclass(frozen=True)
class RepeatSpread:
    """How repeated runs of one batch size agree.

    Attributes:
        batch_size: The batch size.
        runs: Runs attempted.
        runs_ok: Runs that finished ``ok``.
        samples_per_s: Summary of the ``ok`` runs' throughput (mean, std, CV,
            t-based interval, median, MAD); ``None`` without any ``ok`` run.
        high_cv: The coefficient of variation exceeds :data:`HIGH_CV`.
    """

    batch_size: int
    runs: int
    runs_ok: int
    samples_per_s: Summary | None
    high_cv: bool


def summarize_repeats(
    results: Sequence[WorkerResult], confidence: float = 0.95
) -> list[RepeatSpread]:
    """Group results by batch size and summarise the throughput of the ``ok`` runs.

    Skipped batch sizes are left out; the order is ascending batch size.
    """
    by_bs: dict[int, list[WorkerResult]] = {}
    for res in results:
        if res.status == "skipped" or res.batch_size is None:
            continue
        by_bs.setdefault(res.batch_size, []).append(res)
    spreads = []
    for bs in sorted(by_bs):
        group = by_bs[bs]
        rates = [r.throughput.samples_per_s for r in group if r.status == "ok" and r.throughput]
        summary = summarize(rates, percentiles=(), confidence=confidence) if rates else None
        high = bool(summary and summary.cv is not None and summary.cv > HIGH_CV)
        spreads.append(
            RepeatSpread(
                batch_size=bs,
                runs=len(group),
                runs_ok=len(rates),
                samples_per_s=summary,
                high_cv=high,
            )
        )
    return spreads
