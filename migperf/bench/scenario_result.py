"""What an inference-scenario run reports: LoadGen's verdict in plain words, QPS, latency, capacity.

A :class:`ScenarioResult` is the ``scenario`` field of a
:class:`~migperf.bench.result.WorkerResult`. Its numbers come from LoadGen's
own logs of the run (``mlperf_log_detail.txt``, cross-checked against
``mlperf_log_summary.txt``), which stay in :attr:`ScenarioResult.log_dir`;
closed-loop runs, which LoadGen does not drive, are measured by migperf.

Latency percentiles follow LoadGen's definition everywhere (closed-loop
included, so the numbers compare): the sorted sample at index
``floor(n * p)``, no interpolation.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from migperf.bench.scenario_spec import ScenarioName
from migperf.models import FrozenModel

__all__ = [
    "BatchingStats",
    "EarlyStoppingResult",
    "LatencyPercentiles",
    "MaxQpsResult",
    "QpsTrial",
    "ScenarioResult",
]


class LatencyPercentiles(FrozenModel):
    """Latency statistics in milliseconds, as LoadGen reports them.

    Attributes:
        min: Smallest latency.
        max: Largest latency.
        mean: Mean latency.
        p50: Median.
        p90: 90th percentile.
        p95: 95th percentile.
        p97: 97th percentile.
        p99: 99th percentile.
        p99_9: 99.9th percentile.
    """

    min: float | None = None
    max: float | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p97: float | None = None
    p99: float | None = None
    p99_9: float | None = None

    def at(self, percentile: float) -> float | None:
        """The latency at ``percentile`` (one of 50, 90, 95, 97, 99, 99.9), or ``None``."""
        key = "p" + f"{percentile:g}".replace(".", "_")
        value = getattr(self, key, None)
        return value if isinstance(value, float) else None


class EarlyStoppingResult(FrozenModel):
    """LoadGen's early-stopping test: can the run's sample count bound the target percentile?

    Attributes:
        met: Whether the test passed.
        percentile: The percentile it bounds.
        estimate_ms: LoadGen's conservative estimate of that percentile
            (single- and multi-stream), or ``None``.
        more_queries_needed: Queries the run was short of, when it failed for
            too few queries.
        text: LoadGen's own words, on one line.
    """

    met: bool | None
    percentile: float | None = None
    estimate_ms: float | None = None
    more_queries_needed: int | None = None
    text: str = ""


class BatchingStats(FrozenModel):
    """What the dynamic batcher did.

    Attributes:
        max_batch_size: The largest batch it may form.
        max_queue_delay_ms: How long the first queued sample may wait for a fuller batch.
        batches: Batches run.
        samples: Samples answered.
        mean_batch_size: ``samples / batches``.
        batch_size_counts: Batches per batch size.
        busy_s: Time spent inside the model (wall time on the batch thread).
        window_s: From the first arrival to the last answer.
        utilization: ``busy_s / window_s``: how much of the window the model was busy.
    """

    max_batch_size: int
    max_queue_delay_ms: float
    batches: int
    samples: int
    mean_batch_size: float | None
    batch_size_counts: dict[int, int] = Field(default_factory=dict)
    busy_s: float
    window_s: float | None = None
    utilization: float | None = None


class QpsTrial(FrozenModel):
    """One LoadGen server run of the capacity search.

    Attributes:
        target_qps: The arrival rate tried.
        valid: LoadGen's verdict.
        verdict: The verdict in one sentence.
        target_percentile_latency_ms: The latency at the target percentile.
        completed_qps: Samples completed per second.
        query_count: Queries issued.
        log_dir: Where this run's LoadGen logs are.
    """

    target_qps: float
    valid: bool
    verdict: str
    target_percentile_latency_ms: float | None = None
    completed_qps: float | None = None
    query_count: int | None = None
    log_dir: str | None = None


class MaxQpsResult(FrozenModel):
    """The slice's capacity for this model and SLO: the highest server QPS LoadGen judges VALID.

    The search brackets the answer by doubling or halving the rate, then
    bisects (geometric midpoint) until the lowest INVALID rate is at most
    ``precision`` above the highest VALID one, so the true capacity lies in
    ``[max_qps_under_slo, lowest_invalid_qps)``. A rate counts as VALID only
    when LoadGen says so, early stopping included: near the boundary more
    queries per run make the answer less conservative.

    Attributes:
        max_qps_under_slo: Highest VALID rate found; ``None`` when even
            ``min_qps`` was INVALID.
        slo_latency_ms: The latency target.
        slo_percentile: The percentile the target applies to.
        precision: The requested relative precision.
        achieved_precision: ``lowest_invalid_qps / max_qps_under_slo - 1``.
        lowest_invalid_qps: Lowest INVALID rate tried (``None``: none was).
        converged: Whether the achieved precision meets the requested one.
        method: How the search works, in words.
        reason: Why there is no answer or it did not converge.
        trials: Every run, in order.
        search_duration_s: Wall time of the whole search.
        log_dir: The search's directory (one ``trial-NN-qps-X`` subdirectory per run).
    """

    max_qps_under_slo: float | None
    slo_latency_ms: float
    slo_percentile: float
    precision: float
    achieved_precision: float | None = None
    lowest_invalid_qps: float | None = None
    converged: bool
    method: str = "bisection over LoadGen server runs (geometric midpoint)"
    reason: str | None = None
    trials: list[QpsTrial] = Field(default_factory=list)
    search_duration_s: float | None = None
    log_dir: str | None = None


class ScenarioResult(FrozenModel):
    """Everything one scenario run measured.

    Attributes:
        scenario: migperf's scenario name.
        generator: ``mlperf_loadgen`` or ``closed_loop`` (migperf's own loop).
        loadgen_version: LoadGen's version, from its log.
        loadgen_scenario: LoadGen's name of the scenario (``Server``).
        valid: LoadGen's verdict (``None`` for closed-loop, which has none).
        verdict: The verdict in one sentence a person understands.
        invalid_reasons: Every reason the run is INVALID, in plain words.
        checks: LoadGen's individual checks (``perf_constraints_met``,
            ``min_duration_met``, ``min_queries_met``, ``early_stopping_met``).
        slo_met: Whether the target percentile is within ``latency_target_ms``
            (``None`` without a target).
        target_qps: Server: the scheduled arrival rate asked for.
        scheduled_qps: Server: the rate LoadGen's Poisson schedule actually had.
        completed_qps: Samples completed per second (server: LoadGen's
            completed rate; offline: samples/s; single-stream: QPS with
            LoadGen's overhead; multi-stream and closed-loop: migperf's count
            over the window).
        qps_without_overhead: Single-stream: ``1 / mean latency``.
        latency_target_ms: The latency target applied, if any.
        latency_percentile: The target percentile.
        target_percentile_latency_ms: The latency at the target percentile
            (per query for multi-stream).
        latency_ms: Per-sample latency statistics.
        query_latency_ms: Multi-stream: per-query latency statistics.
        early_stopping: LoadGen's early-stopping test.
        query_count: Queries issued.
        sample_count: Samples answered.
        samples_per_query: Samples per query (offline: all of them).
        overlatency_query_count: Server: queries over the latency target.
        concurrency: Closed-loop: requests kept outstanding.
        duration_s: Wall time of the test.
        end_reason: How the run ended (``Ending naturally...`` or LoadGen's
            early-end message).
        loadgen_errors: Errors LoadGen logged.
        loadgen_warnings: Warnings LoadGen logged.
        settings: LoadGen's effective settings (``effective_*`` in its detail log).
        seeds: The random seeds (QSL, sample index, schedule).
        log_dir: Directory with LoadGen's logs of this run.
        log_files: File names in ``log_dir``.
        batching: What the dynamic batcher did.
        warmup_batch_ms: Fastest warmup latency per batch size (what the
            default expected latency and QPS were derived from).
        max_qps: The capacity search, when one was run; the other fields then
            describe the run at ``max_qps.max_qps_under_slo``.
    """

    scenario: ScenarioName
    generator: Literal["mlperf_loadgen", "closed_loop"]
    loadgen_version: str | None = None
    loadgen_scenario: str | None = None
    valid: bool | None = None
    verdict: str
    invalid_reasons: list[str] = Field(default_factory=list)
    checks: dict[str, bool] = Field(default_factory=dict)
    slo_met: bool | None = None
    target_qps: float | None = None
    scheduled_qps: float | None = None
    completed_qps: float | None = None
    qps_without_overhead: float | None = None
    latency_target_ms: float | None = None
    latency_percentile: float | None = None
    target_percentile_latency_ms: float | None = None
    latency_ms: LatencyPercentiles = Field(default_factory=LatencyPercentiles)
    query_latency_ms: LatencyPercentiles | None = None
    early_stopping: EarlyStoppingResult | None = None
    query_count: int | None = None
    sample_count: int | None = None
    samples_per_query: int | None = None
    overlatency_query_count: int | None = None
    concurrency: int | None = None
    duration_s: float | None = None
    end_reason: str | None = None
    loadgen_errors: list[str] = Field(default_factory=list)
    loadgen_warnings: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)
    seeds: dict[str, int] = Field(default_factory=dict)
    log_dir: str | None = None
    log_files: list[str] = Field(default_factory=list)
    batching: BatchingStats | None = None
    warmup_batch_ms: dict[int, float] = Field(default_factory=dict)
    max_qps: MaxQpsResult | None = None

    @property
    def max_qps_under_slo(self) -> float | None:
        """The capacity found by the search (``None`` without a search or an answer)."""
        return self.max_qps.max_qps_under_slo if self.max_qps is not None else None
