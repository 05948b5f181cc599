"""Statistics against known answers: percentiles, intervals, insufficient samples, stability."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from migperf.bench.stats import (
    assess_stability,
    binomial_cdf,
    min_samples_for_percentile,
    percentile,
    percentile_ci_ranks,
    percentile_key,
    student_t_ppf,
    summarize,
)


def test_percentiles_of_1_to_1000_match_numpy_linear() -> None:
    values = list(range(1, 1001))
    for q in (0, 1, 25, 50, 90, 95, 99, 99.9, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_summary_of_1_to_1000() -> None:
    s = summarize(list(range(1000, 0, -1)))  # order must not matter
    assert s.count == 1000
    assert s.mean == pytest.approx(500.5)
    assert s.median == pytest.approx(500.5)
    assert s.min == 1 and s.max == 1000
    assert s.std == pytest.approx(float(np.std(np.arange(1, 1001), ddof=1)))
    assert s.mad == pytest.approx(250.0)
    assert s.percentiles["p50"].value == pytest.approx(500.5)
    assert s.percentiles["p90"].value == pytest.approx(900.1)
    assert s.percentiles["p99"].value == pytest.approx(990.01)
    # The order-statistic interval brackets the estimate.
    p99 = s.percentiles["p99"]
    assert p99.ci_low <= p99.value <= p99.ci_high
    # 1000 samples cannot support p99.9 at 95 %: needs 3688.
    p999 = s.percentiles["p99_9"]
    assert p999.value is None and p999.ci_low is None
    assert p999.samples_needed == 3688
    assert p999.insufficient == (
        "insufficient samples for p99.9: need 2688 more (have 1000; a 95% distribution-free interval needs 3688)"
    )
    # t interval of the mean: 500.5 +- t(0.975, 999) * sem.
    half = student_t_ppf(0.975, 999) * s.sem
    assert s.mean_ci_low == pytest.approx(500.5 - half)
    assert s.mean_ci_high == pytest.approx(500.5 + half)


def test_median_interval_matches_the_textbook_table() -> None:
    # n = 100: the 95 % distribution-free interval of the median is X(40)..X(61).
    assert percentile_ci_ranks(100, 50) == (40, 61)


@pytest.mark.parametrize(
    ("q", "need"),
    [(50, 6), (90, 36), (95, 72), (99, 368), (99.9, 3688)],
)
def test_samples_needed_per_percentile(q: float, need: int) -> None:
    assert min_samples_for_percentile(q, 0.95) == need
    assert percentile_ci_ranks(need, q) is not None
    assert percentile_ci_ranks(need - 1, q) is None


def test_insufficient_samples_withhold_the_value() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    for key in ("p50", "p90", "p99"):
        est = s.percentiles[key]
        assert est.value is None
        assert est.insufficient and est.insufficient.startswith(
            f"insufficient samples for {key}: need"
        )
    assert s.median == 3.0  # the plain median stays available as a descriptive number


def test_single_sample_has_no_spread() -> None:
    s = summarize([7.0])
    assert s.mean == 7.0 and s.std is None and s.cv is None and s.mean_ci_low is None


def test_empty_or_non_finite_series_is_rejected() -> None:
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, math.nan])


@pytest.mark.parametrize(
    ("df", "t"),
    [(1, 12.7062), (2, 4.3027), (5, 2.5706), (10, 2.2281), (30, 2.0423), (120, 1.9799)],
)
def test_student_t_quantiles_match_tables(df: int, t: float) -> None:
    assert student_t_ppf(0.975, df) == pytest.approx(t, abs=1e-4)
    assert student_t_ppf(0.025, df) == pytest.approx(-t, abs=1e-4)


@given(n=st.integers(1, 60), k=st.integers(-1, 61), p=st.floats(0.01, 0.99))
def test_binomial_cdf_matches_direct_sum(n: int, k: int, p: float) -> None:
    direct = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(0, min(k, n) + 1))
    assert binomial_cdf(k, n, p) == pytest.approx(direct, abs=1e-9)


@settings(max_examples=60)
@given(q=st.sampled_from([50.0, 90.0, 95.0, 99.0]), extra=st.integers(0, 3000))
def test_interval_ranks_have_the_promised_coverage(q: float, extra: int) -> None:
    n = min_samples_for_percentile(q) + extra
    ranks = percentile_ci_ranks(n, q)
    assert ranks is not None
    lo, hi = ranks
    assert 1 <= lo <= hi <= n
    p = q / 100
    below = binomial_cdf(lo - 1, n, p)  # P(true quantile < X(lo))
    above = 1 - binomial_cdf(hi - 1, n, p)  # P(true quantile > X(hi))
    assert below <= 0.025 + 1e-12
    assert above <= 0.025 + 1e-12
    assert 1 - below - above >= 0.95 - 1e-12


def test_intervals_contain_the_true_value_at_the_promised_rate() -> None:
    # Exponential(1): median ln 2, p90 ln 10, mean 1. 400 trials of 100 samples.
    rng = random.Random(12345)
    trials = 400
    hits = {"p50": 0, "p90": 0, "mean": 0}
    truth = {"p50": math.log(2), "p90": math.log(10)}
    for _ in range(trials):
        s = summarize([rng.expovariate(1.0) for _ in range(100)], percentiles=(50, 90))
        for key, true in truth.items():
            est = s.percentiles[key]
            hits[key] += est.ci_low <= true <= est.ci_high
        hits["mean"] += s.mean_ci_low <= 1.0 <= s.mean_ci_high
    # Distribution-free intervals are conservative (>= 95 %); allow Monte-Carlo noise.
    assert hits["p50"] / trials >= 0.93
    assert hits["p90"] / trials >= 0.93
    # The t interval is approximate for a skewed distribution; still close.
    assert hits["mean"] / trials >= 0.90


def test_percentile_keys() -> None:
    assert percentile_key(99.9) == "p99_9"
    assert percentile_key(50) == "p50"


def test_stability_flags_a_shifted_window() -> None:
    steady = assess_stability([10.0] * 30, samples_per_iteration=4)
    assert steady.stable is True
    assert steady.window_samples_per_s == pytest.approx([400.0, 400.0, 400.0])
    shifted = assess_stability([10.0] * 20 + [13.0] * 10, samples_per_iteration=4)
    assert shifted.stable is False
    assert shifted.reason and "30% spread" in shifted.reason
    few = assess_stability([10.0] * 5, samples_per_iteration=1)
    assert few.stable is None and "too few iterations" in (few.reason or "")


def test_mean_interval_of_a_latency_never_reaches_below_zero() -> None:
    # Seen in a report: "238.4 [-27.74, 504.5]" from three skewed latencies.
    s = summarize([20.0, 25.0, 670.0])
    assert s.mean_ci_low is not None and s.mean_ci_high is not None
    assert s.mean_ci_method == "bootstrap"
    assert 20.0 <= s.mean_ci_low <= s.mean <= s.mean_ci_high <= 670.0
    assert summarize([20.0, 25.0, 670.0]).mean_ci_low == s.mean_ci_low  # seeded: reproducible


def test_well_behaved_samples_keep_the_t_interval() -> None:
    s = summarize([10.0, 10.5, 9.8, 10.2, 10.1, 9.9])
    assert s.mean_ci_method == "t" and s.mean_ci_low is not None and s.mean_ci_low > 9.5
