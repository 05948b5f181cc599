"""Statistics for benchmark samples: percentiles you can defend, and intervals.

Pure Python (``math`` only), so the parent process can summarise results
without importing numpy or torch.

Methodology:

* Percentile point estimates use linear interpolation between order
  statistics (numpy's default ``linear`` method, Hyndman & Fan type 7).
* Percentile confidence intervals are distribution-free: the interval between
  two order statistics ``X_(l) <= X_(u)`` whose coverage follows from the
  binomial distribution of the number of samples below the true quantile.
  When no pair of order statistics gives the requested coverage the estimate
  is withheld: the value is ``None`` and ``insufficient`` says how many more
  samples are needed. For a quantile ``p`` and confidence ``1 - a`` that
  happens while ``p**n > a/2`` or ``(1-p)**n > a/2`` (e.g. p99 at 95 % needs
  367 samples, p99.9 needs 3687).
* The mean's interval is Student-t based: ``mean +- t(1-a/2, n-1) * s/sqrt(n)``.
* ``std`` is the sample standard deviation (``n - 1``), ``cv = std / mean``,
  ``sem = std / sqrt(n)``, ``mad`` is the (unscaled) median absolute deviation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

__all__ = [
    "DEFAULT_PERCENTILES",
    "PercentileEstimate",
    "StabilityResult",
    "Summary",
    "assess_stability",
    "binomial_cdf",
    "min_samples_for_percentile",
    "percentile",
    "percentile_ci_ranks",
    "percentile_key",
    "regularized_incomplete_beta",
    "student_t_cdf",
    "student_t_ppf",
    "summarize",
]

#: Percentiles reported by default (p50, p90, p95, p99, p99.9).
DEFAULT_PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)

_FPMIN = 1e-300
_EPS = 1e-15


class PercentileEstimate(BaseModel):
    """One percentile with its distribution-free confidence interval.

    Attributes:
        q: The percentile, 0-100 (``99.9`` for p99.9).
        value: Point estimate (linear interpolation), or ``None`` when the
            sample count cannot support it.
        ci_low: Lower end of the interval (an order statistic), or ``None``.
        ci_high: Upper end of the interval (an order statistic), or ``None``.
        confidence: Coverage of the interval (e.g. ``0.95``).
        samples_needed: Samples a defensible estimate needs at this confidence.
        insufficient: Why the value is withheld, or ``None`` when it is given.
    """

    model_config = ConfigDict(frozen=True)

    q: float
    value: float | None
    ci_low: float | None
    ci_high: float | None
    confidence: float
    samples_needed: int
    insufficient: str | None = None


class Summary(BaseModel):
    """Descriptive statistics of one series of samples (unit given by the owner's field name).

    Attributes:
        count: Number of samples.
        mean: Arithmetic mean.
        std: Sample standard deviation, ``None`` for fewer than two samples.
        cv: Coefficient of variation ``std / mean``, ``None`` when undefined.
        sem: Standard error of the mean, ``None`` for fewer than two samples.
        min: Smallest sample.
        max: Largest sample.
        median: Median (p50 by linear interpolation, always given).
        mad: Median absolute deviation (unscaled).
        mean_ci_low: Lower end of the interval of the mean (t-based; see ``mean_ci_method``).
        mean_ci_high: Upper end of the interval of the mean.
        confidence: Coverage of every interval in this summary.
        percentiles: Keyed ``p50``, ``p90``, ``p95``, ``p99``, ``p99_9``.
        mean_ci_method: ``t`` (Student's t), or ``bootstrap`` where the t-interval
            of a non-negative metric would reach below zero.
    """

    model_config = ConfigDict(frozen=True)

    count: int
    mean: float
    std: float | None
    cv: float | None
    sem: float | None
    min: float
    max: float
    median: float
    mad: float
    mean_ci_low: float | None
    mean_ci_high: float | None
    confidence: float
    percentiles: dict[str, PercentileEstimate]
    mean_ci_method: Literal["t", "bootstrap"] | None = None


class StabilityResult(BaseModel):
    """Whether consecutive windows of a run agree (Triton perf_analyzer's criterion).

    Attributes:
        stable: ``True`` when the windows agree within ``tolerance``, ``False``
            when they do not, ``None`` when there were too few iterations to say.
        reason: Plain-language explanation when ``stable`` is not ``True``.
        window_samples_per_s: Throughput of each window.
        tolerance: Allowed relative spread (``0.10`` = 10 %).
    """

    model_config = ConfigDict(frozen=True)

    stable: bool | None
    reason: str | None
    window_samples_per_s: list[float]
    tolerance: float


def percentile_key(q: float) -> str:
    """The dictionary key of a percentile: ``99.9 -> "p99_9"``, ``50 -> "p50"``."""
    text = f"{q:g}"
    return "p" + text.replace(".", "_")


def _label(q: float) -> str:
    return f"p{q:g}"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile of sorted values by linear interpolation (numpy's default).

    Args:
        sorted_values: Samples in ascending order; at least one.
        q: Percentile in ``[0, 100]``.

    Returns:
        The interpolated percentile.

    Raises:
        ValueError: When there are no values or ``q`` is out of range.
    """
    n = len(sorted_values)
    if n == 0:
        raise ValueError("percentile of an empty series")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    h = (n - 1) * q / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    frac = h - lo
    return sorted_values[lo] + frac * (sorted_values[hi] - sorted_values[lo])


# --- special functions -------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < _FPMIN:
        d = _FPMIN
    d = 1.0 / d
    h = d
    # Convergence takes O(sqrt(max(a, b))) terms; the bound covers a, b ~ 1e8.
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = 1.0 + aa / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = 1.0 + aa / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)``.

    Args:
        a: First shape parameter, > 0.
        b: Second shape parameter, > 0.
        x: Point in ``[0, 1]``.

    Returns:
        ``I_x(a, b)`` in ``[0, 1]``.

    Raises:
        ValueError: For non-positive shape parameters.
    """
    if a <= 0 or b <= 0:
        raise ValueError(f"beta shape parameters must be positive, got a={a}, b={b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def student_t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` degrees of freedom."""
    x = df / (df + t * t)
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, x)
    return 1.0 - tail if t > 0 else tail


def student_t_ppf(p: float, df: float) -> float:
    """Quantile function of Student's t (inverse of :func:`student_t_cdf`).

    Args:
        p: Probability in ``(0, 1)``.
        df: Degrees of freedom, > 0.

    Returns:
        ``t`` such that ``P(T <= t) = p``.

    Raises:
        ValueError: When ``p`` is not in ``(0, 1)`` or ``df <= 0``.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"probability {p} is outside (0, 1)")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while student_t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if student_t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return regularized_incomplete_beta(n - k, k + 1, 1.0 - p)


# --- percentile intervals ----------------------------------------------------


def min_samples_for_percentile(q: float, confidence: float = 0.95) -> int:
    """Smallest sample count for which a distribution-free interval of the ``q``-th percentile exists.

    Both ends must be order statistics: ``(1-p)**n <= a/2`` and ``p**n <= a/2``
    with ``p = q/100`` and ``a = 1 - confidence``.

    Raises:
        ValueError: When ``q`` is not strictly inside (0, 100) or ``confidence`` not in (0, 1).
    """
    if not 0.0 < q < 100.0:
        raise ValueError(f"percentile {q} must be strictly between 0 and 100")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is outside (0, 1)")
    p = q / 100.0
    half_alpha = (1.0 - confidence) / 2.0
    need = 1
    for prob in (p, 1.0 - p):
        n = math.ceil(math.log(half_alpha) / math.log(prob))
        # Guard the ceiling against rounding on either side of an exact integer.
        while n > 1 and prob ** (n - 1) <= half_alpha:
            n -= 1
        while prob**n > half_alpha:
            n += 1
        need = max(need, n)
    return need


def percentile_ci_ranks(n: int, q: float, confidence: float = 0.95) -> tuple[int, int] | None:
    """1-based ranks ``(l, u)`` of the order statistics bounding the ``q``-th percentile.

    ``P(X_(l) <= xi_p <= X_(u)) >= confidence`` for any continuous
    distribution; ``l`` is as large and ``u`` as small as that allows, with
    each tail holding at most ``(1 - confidence)/2``.

    Returns:
        The ranks, or ``None`` when ``n`` is too small for such an interval.

    Raises:
        ValueError: For an invalid ``q`` or ``confidence``.
    """
    if n < min_samples_for_percentile(q, confidence):
        return None
    p = q / 100.0
    half_alpha = (1.0 - confidence) / 2.0

    # Largest l with B(l-1) <= a/2; B(0) = (1-p)^n <= a/2 holds, so l >= 1.
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if binomial_cdf(mid - 1, n, p) <= half_alpha:
            lo = mid
        else:
            hi = mid - 1
    lower = lo
    # Smallest u with B(u-1) >= 1 - a/2; B(n-1) = 1 - p^n >= 1 - a/2 holds, so u <= n.
    lo, hi = 1, n
    while lo < hi:
        mid = (lo + hi) // 2
        if binomial_cdf(mid - 1, n, p) >= 1.0 - half_alpha:
            hi = mid
        else:
            lo = mid + 1
    upper = max(lo, lower)
    return lower, upper


def _percentile_estimate(
    sorted_values: Sequence[float], q: float, confidence: float
) -> PercentileEstimate:
    n = len(sorted_values)
    need = min_samples_for_percentile(q, confidence)
    ranks = percentile_ci_ranks(n, q, confidence)
    if ranks is None:
        return PercentileEstimate(
            q=q,
            value=None,
            ci_low=None,
            ci_high=None,
            confidence=confidence,
            samples_needed=need,
            insufficient=(
                f"insufficient samples for {_label(q)}: need {need - n} more "
                f"(have {n}; a {confidence:.0%} distribution-free interval needs {need})"
            ),
        )
    lower, upper = ranks
    return PercentileEstimate(
        q=q,
        value=percentile(sorted_values, q),
        ci_low=sorted_values[lower - 1],
        ci_high=sorted_values[upper - 1],
        confidence=confidence,
        samples_needed=need,
    )


def summarize(
    values: Sequence[float],
    *,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    confidence: float = 0.95,
) -> Summary:
    """Summarise a series of samples.

    Args:
        values: The samples (any order); at least one.
        percentiles: Percentiles to estimate, each strictly inside (0, 100).
        confidence: Coverage of the mean and percentile intervals.

    Returns:
        The summary; percentiles the count cannot support carry ``value=None``
        and an ``insufficient`` reason.

    Raises:
        ValueError: For an empty series, a non-finite value, or an invalid
            percentile or confidence.
    """
    n = len(values)
    if n == 0:
        raise ValueError("cannot summarise an empty series")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence {confidence} is outside (0, 1)")
    xs = sorted(float(v) for v in values)
    if not all(math.isfinite(v) for v in xs):
        raise ValueError("samples must be finite numbers")
    mean = math.fsum(xs) / n
    median = percentile(xs, 50.0)
    mad = percentile(sorted(abs(v - median) for v in xs), 50.0)
    std = sem = cv = ci_low = ci_high = None
    method: Literal["t", "bootstrap"] | None = None
    if n >= 2:
        var = math.fsum((v - mean) ** 2 for v in xs) / (n - 1)
        std = math.sqrt(var)
        sem = std / math.sqrt(n)
        cv = std / mean if mean != 0 else None
        t = student_t_ppf(1.0 - (1.0 - confidence) / 2.0, n - 1)
        ci_low, ci_high = mean - t * sem, mean + t * sem
        method = "t"
        if xs[0] >= 0.0 and ci_low < 0.0:
            # Few, skewed samples of a non-negative metric (a latency): the
            # t-interval leaves the metric's range ("238 [-27.7, 504]"). A
            # percentile bootstrap of the mean stays inside the data's range.
            ci_low, ci_high = _bootstrap_mean_interval(xs, confidence)
            method = "bootstrap"
    return Summary(
        count=n,
        mean=mean,
        std=std,
        cv=cv,
        sem=sem,
        min=xs[0],
        max=xs[-1],
        median=median,
        mad=mad,
        mean_ci_low=ci_low,
        mean_ci_high=ci_high,
        mean_ci_method=method,
        confidence=confidence,
        percentiles={
            percentile_key(q): _percentile_estimate(xs, q, confidence) for q in percentiles
        },
    )


def _bootstrap_mean_interval(
    xs: Sequence[float], confidence: float, resamples: int = 2000
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean (seeded: the same samples give the same interval)."""
    rng = random.Random(0x5EED)
    n = len(xs)
    means = sorted(math.fsum(rng.choices(xs, k=n)) / n for _ in range(resamples))
    alpha = (1.0 - confidence) / 2.0
    return percentile(means, 100.0 * alpha), percentile(means, 100.0 * (1.0 - alpha))


def assess_stability(
    latency_ms: Sequence[float],
    samples_per_iteration: int,
    *,
    windows: int = 3,
    tolerance: float = 0.10,
) -> StabilityResult:
    """Split a run into consecutive windows and check that their throughputs agree.

    A window's throughput is its samples over the sum of its iteration
    latencies. The run is stable when ``max / min - 1 <= tolerance``.

    Args:
        latency_ms: Per-iteration latencies in run order.
        samples_per_iteration: Samples one iteration processes.
        windows: Number of windows (3, as perf_analyzer uses).
        tolerance: Allowed relative spread.

    Returns:
        The verdict with the per-window throughputs.
    """
    n = len(latency_ms)
    if n < 3 * windows:
        return StabilityResult(
            stable=None,
            reason=f"too few iterations to judge stability ({n}; need {3 * windows})",
            window_samples_per_s=[],
            tolerance=tolerance,
        )
    size = n // windows
    rates: list[float] = []
    for w in range(windows):
        chunk = latency_ms[w * size : (w + 1) * size] if w < windows - 1 else latency_ms[w * size :]
        total_s = math.fsum(chunk) / 1000.0
        rates.append(samples_per_iteration * len(chunk) / total_s if total_s > 0 else math.inf)
    lo, hi = min(rates), max(rates)
    spread = hi / lo - 1.0 if lo > 0 else math.inf
    if spread <= tolerance:
        return StabilityResult(
            stable=True, reason=None, window_samples_per_s=rates, tolerance=tolerance
        )
    shown = ", ".join(f"{r:.4g}" for r in rates)
    return StabilityResult(
        stable=False,
        reason=(
            f"unstable: the {windows} consecutive windows ran at {shown} samples/s, "
            f"a {spread:.0%} spread (> {tolerance:.0%})"
        ),
        window_samples_per_s=rates,
        tolerance=tolerance,
    )
