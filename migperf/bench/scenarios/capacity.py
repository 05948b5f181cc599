"""The capacity search: the highest rate a scenario judges valid, by bracketing and bisection."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from migperf.bench.scenarios.loadgen_log import format_qps
from migperf.errors import UsageError

__all__ = ["find_max_qps"]


def find_max_qps(
    run_at: Callable[[float], tuple[bool, Any]],
    *,
    start_qps: float,
    precision: float = 0.05,
    max_trials: int = 12,
    min_qps: float = 0.5,
) -> tuple[float | None, float | None, list[tuple[float, bool, Any]], str | None]:
    """Search the highest rate ``run_at`` judges valid, to a relative precision.

    Brackets by doubling from ``start_qps`` while valid (or halving while
    invalid), then bisects at the geometric midpoint until
    ``hi / lo - 1 <= precision``. Validity is assumed to fall with the rate;
    each rate is run once.

    Args:
        run_at: Runs one trial at a rate; returns ``(valid, anything)``.
        start_qps: The first rate tried.
        precision: Relative width at which to stop.
        max_trials: Most trials.
        min_qps: Give up when an invalid rate would be halved below this.

    Returns:
        ``(highest valid rate, lowest invalid rate, trials as (rate, valid, payload), reason)``;
        ``reason`` says why the answer is missing or not converged.

    Raises:
        UsageError: For a non-positive start, precision or trial count.
    """
    if start_qps <= 0 or precision <= 0 or max_trials < 1:
        raise UsageError(
            f"find_max_qps: start_qps ({start_qps}), precision ({precision}) and "
            f"max_trials ({max_trials}) must be positive"
        )
    trials: list[tuple[float, bool, Any]] = []
    lo: float | None = None
    hi: float | None = None

    def trial(qps: float) -> bool:
        valid, payload = run_at(qps)
        trials.append((qps, valid, payload))
        return valid

    qps = start_qps
    while len(trials) < max_trials:
        if trial(qps):
            lo = qps
            if hi is not None:
                break
            qps *= 2.0
        else:
            hi = qps
            if lo is not None:
                break
            if qps / 2.0 < min_qps:
                return (
                    None,
                    hi,
                    trials,
                    (
                        f"no rate down to {format_qps(qps)} QPS met the target; the search stops "
                        f"below {format_qps(min_qps)} QPS"
                    ),
                )
            qps /= 2.0
    if lo is None or hi is None:
        which = "invalid" if lo is None else "valid"
        return (
            lo,
            hi,
            trials,
            f"every one of the {len(trials)} trials was {which}; raise max_trials",
        )
    while hi / lo - 1.0 > precision and len(trials) < max_trials:
        mid = math.sqrt(lo * hi)
        if trial(mid):
            lo = mid
        else:
            hi = mid
    reason = None
    if hi / lo - 1.0 > precision:
        reason = (
            f"stopped after {len(trials)} trials at {hi / lo - 1.0:.1%} precision "
            f"(asked {precision:.1%}); raise max_trials"
        )
    return lo, hi, trials, reason
