"""What an inference-scenario run is: the load pattern, the latency target and the search.

A :class:`ScenarioSpec` rides inside a :class:`~migperf.bench.spec.BenchSpec`
(its ``scenario`` field). The four MLPerf scenarios are driven by MLPerf
LoadGen; ``closed-loop`` is migperf's own, simpler mode for comparison with
tools that keep N requests outstanding (perf_analyzer's ``--concurrency-range``,
most HTTP load testers):

=============  ================================================================
single-stream  LoadGen SingleStream: one sample per query, the next query when
               the previous one completes. Headline: the p90 latency.
multi-stream   LoadGen MultiStream: ``samples_per_query`` samples per query, the
               next query when the previous one completes. Headline: p99 of
               the query latency.
server         LoadGen Server: Poisson arrivals at ``target_qps``, one sample per
               query, latency measured from the *scheduled* arrival (no
               coordinated omission). VALID when the ``latency_percentile``
               latency is within ``latency_target_ms``.
offline        LoadGen Offline: every sample in one query. Headline: samples/s.
closed-loop    Not LoadGen: ``concurrency`` clients, each sending its next
               request as soon as the previous one is answered. Latency is from
               send to answer, so it hides queueing; use ``server`` for SLOs.
=============  ================================================================

The spec's ``batch_size`` is the dynamic batcher's maximum batch size and its
``min_duration_s`` / ``max_duration_s`` / ``seed`` are LoadGen's minimum and
maximum duration and its three random seeds. This module imports nothing heavy.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_LATENCY_TARGET_MS",
    "DEFAULT_PERCENTILE",
    "LOADGEN_SCENARIOS",
    "REPORTED_PERCENTILES",
    "SCENARIO_NAMES",
    "ScenarioName",
    "ScenarioSpec",
    "early_stopping_min_queries",
]

ScenarioName = Literal["single-stream", "multi-stream", "server", "offline", "closed-loop"]

#: Scenario names in the order the CLI lists them.
SCENARIO_NAMES: tuple[str, ...] = (
    "single-stream",
    "multi-stream",
    "server",
    "offline",
    "closed-loop",
)

#: migperf's scenario names to LoadGen's ``TestScenario`` members.
LOADGEN_SCENARIOS: dict[str, str] = {
    "single-stream": "SingleStream",
    "multi-stream": "MultiStream",
    "server": "Server",
    "offline": "Offline",
}

#: The latency percentiles LoadGen reports; a target percentile must be one of them.
REPORTED_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 97.0, 99.0, 99.9)

#: LoadGen's default target percentile per scenario (closed-loop follows server).
DEFAULT_PERCENTILE: dict[str, float | None] = {
    "single-stream": 90.0,
    "multi-stream": 99.0,
    "server": 99.0,
    "offline": None,
    "closed-loop": 99.0,
}

#: LoadGen's default server latency target (``server_target_latency_ns``), in ms.
DEFAULT_LATENCY_TARGET_MS = 100.0

#: LoadGen's default ``min_query_count``.
_LOADGEN_MIN_QUERIES = 100

#: Confidence of LoadGen's early-stopping test (one-sided binomial).
_EARLY_STOPPING_CONFIDENCE = 0.99


def early_stopping_min_queries(percentile: float, overlatency: int = 0) -> int:
    """Queries LoadGen's early-stopping test needs to bound a percentile.

    The test (one-sided binomial at 99 % confidence) passes once the chance
    of seeing at most ``overlatency`` queries over the target, were the true
    share over it ``1 - p``, is at most 1 %. With none over the target: 44
    queries for p90, 459 for p99, 4,603 for p99.9; each query over the target
    adds roughly 200 for p99. Single- and multi-stream ask for the count with
    one over (64 for p90, 662 for p99), as LoadGen's messages say.

    Args:
        percentile: The target percentile, strictly between 0 and 100.
        overlatency: Queries over the target.

    Returns:
        The minimum total query count.

    Raises:
        ValueError: For a percentile outside (0, 100) or a negative count.
    """
    from migperf.bench.stats import binomial_cdf

    if not 0.0 < percentile < 100.0:
        raise ValueError(f"percentile {percentile} must be strictly between 0 and 100")
    if overlatency < 0:
        raise ValueError(f"overlatency {overlatency} must not be negative")
    p = percentile / 100.0
    alpha = 1.0 - _EARLY_STOPPING_CONFIDENCE
    # The count with none over the target (p**n <= alpha) is a floor for any count.
    n = max(overlatency + 1, math.floor(math.log(alpha) / math.log(p)) - 1)
    while binomial_cdf(overlatency, n, 1.0 - p) > alpha:
        n += 1
    return n


class ScenarioSpec(BaseModel):
    """The load pattern of one inference-scenario run (see the module docstring).

    Attributes:
        name: ``single-stream``, ``multi-stream``, ``server``, ``offline`` or ``closed-loop``.
        target_qps: Server: the Poisson arrival rate (queries per second). With
            ``find_max_qps`` it is where the search starts (default: half the
            capacity estimated during warmup).
        latency_target_ms: The latency SLO. Server: LoadGen's
            ``server_target_latency_ns`` (default 100 ms, LoadGen's). Other
            scenarios: an extra check migperf reports (``slo_met``); it does not
            change LoadGen's verdict.
        latency_percentile: The percentile the target applies to, one of
            LoadGen's reported ones (50, 90, 95, 97, 99, 99.9). Default: p90 for
            single-stream, p99 otherwise.
        samples_per_query: Multi-stream: samples in each query (default 8, LoadGen's).
        concurrency: Closed-loop: requests kept outstanding (default 1).
        max_queue_delay_ms: Dynamic batcher: how long the first queued sample
            may wait for the batch to fill (0: batch whatever is queued).
        min_query_count: LoadGen's ``min_query_count`` (Offline: minimum
            samples). Default: enough queries for LoadGen's early-stopping test
            to bound the target percentile, at least 100 (LoadGen's default):
            server twice the count with none over the target (918 for p99),
            single- and multi-stream the count LoadGen asks for (100 for p90,
            662 for p99).
        max_query_count: LoadGen's ``max_query_count``; ``None`` for no cap.
        qsl_size: Synthetic samples in the query-sample library (default: the
            largest of 64, the batch size and ``samples_per_query``).
        expected_qps: Offline: LoadGen's ``offline_expected_qps``, which sizes
            the single query (default: 1.1 x the capacity measured in warmup).
        expected_latency_ms: Single-/multi-stream: LoadGen's expected latency,
            which sizes the query pool (default: measured in warmup).
        find_max_qps: Server: search the highest ``target_qps`` that LoadGen
            judges VALID under the latency target (bisection over runs).
        qps_precision: Stop the search when the lowest INVALID QPS is within
            this fraction above the highest VALID one (0.05: 5 %).
        max_trials: Most LoadGen runs the search may make.
        min_qps: The search gives up below this QPS.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ScenarioName
    target_qps: float | None = Field(None, gt=0.0)
    latency_target_ms: float | None = Field(None, gt=0.0)
    latency_percentile: float | None = None
    samples_per_query: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1)
    max_queue_delay_ms: float = Field(0.0, ge=0.0)
    min_query_count: int | None = Field(None, ge=1)
    max_query_count: int | None = Field(None, ge=1)
    qsl_size: int | None = Field(None, ge=1)
    expected_qps: float | None = Field(None, gt=0.0)
    expected_latency_ms: float | None = Field(None, gt=0.0)
    find_max_qps: bool = False
    qps_precision: float = Field(0.05, gt=0.0, lt=1.0)
    max_trials: int = Field(12, ge=2)
    min_qps: float = Field(0.5, gt=0.0)

    @model_validator(mode="after")
    def _check_rules(self) -> ScenarioSpec:
        if self.latency_percentile is not None:
            if self.name == "offline":
                raise ValueError("latency_percentile does not apply to the offline scenario")
            if self.latency_percentile not in REPORTED_PERCENTILES:
                shown = ", ".join(f"{q:g}" for q in REPORTED_PERCENTILES)
                raise ValueError(
                    f"latency_percentile {self.latency_percentile:g} is not one LoadGen reports ({shown})"
                )
        if self.name == "server" and self.target_qps is None and not self.find_max_qps:
            raise ValueError("the server scenario needs target_qps (or find_max_qps)")
        if self.find_max_qps and self.name != "server":
            raise ValueError(f"find_max_qps applies to the server scenario, not {self.name}")
        if self.target_qps is not None and self.name != "server":
            raise ValueError(f"target_qps applies to the server scenario, not {self.name}")
        if self.concurrency is not None and self.name != "closed-loop":
            raise ValueError(f"concurrency applies to the closed-loop scenario, not {self.name}")
        if self.samples_per_query is not None and self.name != "multi-stream":
            raise ValueError(
                f"samples_per_query applies to the multi-stream scenario, not {self.name}"
            )
        if (
            self.qsl_size is not None
            and self.samples_per_query is not None
            and self.qsl_size < self.samples_per_query
        ):
            raise ValueError(
                f"qsl_size ({self.qsl_size}) is below samples_per_query ({self.samples_per_query})"
            )
        if self.latency_target_ms is not None and self.name == "offline":
            raise ValueError("latency_target_ms does not apply to the offline scenario")
        if (
            self.max_query_count is not None
            and self.max_query_count < self.effective_min_query_count
        ):
            raise ValueError(
                f"max_query_count ({self.max_query_count}) is below min_query_count "
                f"({self.effective_min_query_count})"
            )
        return self

    @property
    def loadgen_scenario(self) -> str | None:
        """LoadGen's ``TestScenario`` name, ``None`` for closed-loop."""
        return LOADGEN_SCENARIOS.get(self.name)

    @property
    def effective_percentile(self) -> float | None:
        """The target percentile: the spec's or the scenario's default (``None`` for offline)."""
        if self.latency_percentile is not None:
            return self.latency_percentile
        return DEFAULT_PERCENTILE[self.name]

    @property
    def effective_latency_target_ms(self) -> float | None:
        """The latency target: the spec's, LoadGen's 100 ms for server, else ``None``."""
        if self.latency_target_ms is not None:
            return self.latency_target_ms
        return DEFAULT_LATENCY_TARGET_MS if self.name == "server" else None

    @property
    def effective_min_query_count(self) -> int:
        """LoadGen's minimum query count: the spec's, or enough to bound the target percentile."""
        if self.min_query_count is not None:
            return self.min_query_count
        pct = self.effective_percentile
        if pct is None or self.name in ("offline", "closed-loop"):
            return _LOADGEN_MIN_QUERIES
        if self.name == "server":
            # Twice the bare minimum leaves room for a few queries over the target.
            return max(_LOADGEN_MIN_QUERIES, 2 * early_stopping_min_queries(pct))
        return max(_LOADGEN_MIN_QUERIES, early_stopping_min_queries(pct, overlatency=1))

    @property
    def effective_samples_per_query(self) -> int:
        """Samples per query: the spec's for multi-stream (default 8, LoadGen's), else 1.

        Offline sends every sample in one query; this is the per-query count of
        the other scenarios.
        """
        if self.name == "multi-stream":
            return self.samples_per_query or 8
        return 1

    @property
    def effective_concurrency(self) -> int:
        """Outstanding requests of the closed loop (default 1)."""
        return self.concurrency or 1

    def effective_qsl_size(self, max_batch_size: int) -> int:
        """Samples in the query-sample library for a batcher of ``max_batch_size``."""
        if self.qsl_size is not None:
            return self.qsl_size
        return max(64, max_batch_size, self.effective_samples_per_query)
