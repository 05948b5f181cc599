"""Batch-size sweeps: ascending order, early stop after OOM, invalid specs, repeat spread."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from migperf.bench.result import ErrorInfo, ThroughputResult, WorkerResult
from migperf.bench.series import parse_batch_sizes, run_series, summarize_repeats
from migperf.bench.spec import BenchSpec
from migperf.errors import UsageError

BASE = BenchSpec(workload="gemm", task="infer")


class FakeSlice:
    """Runs nothing: answers like a device with room for batch sizes below `limit`."""

    def __init__(self, limit: int, rates: Mapping[int, list[float]] | None = None) -> None:
        self.limit = limit
        self.rates = rates or {}
        self.ran: list[tuple[int, int]] = []

    def __call__(
        self, spec: BenchSpec, env: Mapping[str, str] | None, timeout_s: float
    ) -> WorkerResult:
        self.ran.append((spec.batch_size, spec.repeat_index))
        if spec.batch_size >= self.limit:
            return WorkerResult.for_spec(
                spec, "oom", error=ErrorInfo(kind="OutOfMemoryError", message="oom")
            )
        rate = self.rates.get(spec.batch_size, [100.0] * 10)[spec.repeat_index]
        return WorkerResult.for_spec(spec, "ok", throughput=ThroughputResult(samples_per_s=rate))


def test_batch_sizes_are_parsed_sorted_and_distinct() -> None:
    assert parse_batch_sizes("32, 1,8,8") == [1, 8, 32]
    for bad in ("", "0", "a", "1,-2"):
        with pytest.raises(UsageError):
            parse_batch_sizes(bad)


def test_sweep_skips_larger_batch_sizes_after_an_oom() -> None:
    fake = FakeSlice(limit=8)
    results = run_series(BASE, [32, 1, 8, 4, 16], repeats=2, run=fake)
    assert fake.ran == [(1, 0), (1, 1), (4, 0), (4, 1), (8, 0)]
    assert [(r.batch_size, r.status) for r in results] == [
        (1, "ok"),
        (1, "ok"),
        (4, "ok"),
        (4, "ok"),
        (8, "oom"),
        (16, "skipped"),
        (32, "skipped"),
    ]
    assert "batch size 8 already ran out of memory" in results[-1].error.message


def test_invalid_spec_stops_the_sweep_with_the_workers_message() -> None:
    def reject(spec: BenchSpec, env: Mapping[str, str] | None, timeout_s: float) -> WorkerResult:
        return WorkerResult.for_spec(
            spec,
            "invalid",
            error=ErrorInfo(kind="UsageError", message="unknown model arg 'x'", hint="h"),
        )

    with pytest.raises(UsageError, match="unknown model arg 'x'"):
        run_series(BASE, [1, 2], run=reject)


def test_repeat_spread_flags_a_high_cv() -> None:
    fake = FakeSlice(limit=99, rates={1: [100.0, 101.0, 99.0], 2: [100.0, 150.0, 60.0]})
    spreads = summarize_repeats(run_series(BASE, [1, 2], repeats=3, run=fake))
    calm, noisy = spreads
    assert calm.runs_ok == 3 and calm.samples_per_s.mean == pytest.approx(100.0)
    assert calm.samples_per_s.mean_ci_low < 100.0 < calm.samples_per_s.mean_ci_high
    assert not calm.high_cv
    assert noisy.high_cv and noisy.samples_per_s.cv > 0.10


def test_callbacks_see_every_run_and_skip() -> None:
    fake = FakeSlice(limit=2)
    started, finished = [], []
    run_series(BASE, [1, 2, 4], run=fake, on_start=started.append, on_result=finished.append)
    assert [s.batch_size for s in started] == [1, 2]
    assert [r.status for r in finished] == ["ok", "oom", "skipped"]
