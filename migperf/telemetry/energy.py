"""Energy from a cumulative counter: wrap and reset handling, window differences.

Energy is the difference of NVML's total-energy counter
(``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver was loaded),
not an integral of power readings: on A100/H100 the power sensor samples
only part of the time and ``nvmlDeviceGetPowerUsage`` is a 1 s average on
Hopper, so integrated power can be badly biased for bursty loads
(docs/reference/telemetry-and-sharing.md 1.5). The counter is read at every sample and
interpolated linearly at the window's two ends.

A counter can go backwards in two ways. It *wraps* (a 32- or 64-bit
register overflows: the value restarts near 0 just after being near 2^N) or
it *resets* (the driver reloaded, or the source changed). A negative step
is a wrap when the wrapped difference is a plausible amount of energy for
the time between the readings (below ``max_power_w`` times the gap);
otherwise it is a reset, and the energy after the reset is the new reading
itself (the counter restarted from zero), if that is plausible, else 0. The
energy between the last reading before a reset and the reset is lost; the
number of resets is reported so a reader knows.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MAX_POWER_W", "Cumulative", "energy_between", "unwrap_counter"]

#: No GPU board draws more than this; bounds what a counter step may mean.
MAX_POWER_W = 10_000.0

_WRAP_BITS = (32, 64)


@dataclass(frozen=True)
class Cumulative:
    """A counter turned into monotonic cumulative energy.

    Attributes:
        times: Reading times (seconds, increasing), readings without a value dropped.
        energy_mj: Energy since the first reading, at each time.
        resets: Times the counter reset (driver reload) between readings.
        wraps: Times the counter wrapped around.
        reset_times: The reading times right after each reset or wrap.
    """

    times: tuple[float, ...]
    energy_mj: tuple[float, ...]
    resets: int = 0
    wraps: int = 0
    reset_times: tuple[float, ...] = ()


def unwrap_counter(
    times: Sequence[float],
    values: Sequence[float | int | None],
    *,
    max_power_w: float = MAX_POWER_W,
) -> Cumulative:
    """Turn raw counter readings (mJ) into cumulative energy that never goes backwards.

    Args:
        times: Reading times in seconds, increasing.
        values: Counter readings in mJ; None where a reading failed.
        max_power_w: Upper bound on power, to tell a wrap from a reset.

    Returns:
        The cumulative series (readings without a value are left out).
    """
    out_t: list[float] = []
    out_e: list[float] = []
    resets = wraps = 0
    reset_times: list[float] = []
    prev_t: float | None = None
    # Raw readings stay ints where NVML gave ints: near 2**64 a float cannot tell 1 mJ apart.
    prev_v: float | int | None = None
    total = 0.0
    for t, v in zip(times, values, strict=False):
        if v is None:
            continue
        value = v
        if prev_v is not None and prev_t is not None:
            step = value - prev_v
            if step < 0:
                bound = max_power_w * max(t - prev_t, 0.0) * 1000.0 + 1000.0
                step, wrapped = _negative_step(prev_v, value, bound)
                if wrapped:
                    wraps += 1
                else:
                    resets += 1
                reset_times.append(t)
            total += float(step)
        out_t.append(t)
        out_e.append(total)
        prev_t, prev_v = t, value
    return Cumulative(tuple(out_t), tuple(out_e), resets, wraps, tuple(reset_times))


def _negative_step(prev: float | int, value: float | int, bound: float) -> tuple[float | int, bool]:
    """``(energy, wrapped)`` for a counter that went from ``prev`` down to ``value``."""
    for bits in _WRAP_BITS:
        top = 2**bits
        if prev < top:
            wrapped = value + top - prev
            if 0 <= wrapped <= bound:
                return wrapped, True
            break
    # A reset: the counter restarted from zero, so ``value`` accrued since then.
    return (value if 0 <= value <= bound else 0.0), False


def energy_between(
    cumulative: Cumulative, start_s: float, end_s: float
) -> tuple[float | None, float, int]:
    """Energy (mJ) between two times, interpolating the counter at both ends.

    The window is clipped to the readings' span; the caller decides what a
    partial coverage means.

    Returns:
        ``(energy_mj, covered_s, resets_inside)``; energy is None when fewer
        than two readings overlap the window.
    """
    t, e = cumulative.times, cumulative.energy_mj
    if len(t) < 2 or end_s <= start_s:
        return None, 0.0, 0
    lo, hi = max(start_s, t[0]), min(end_s, t[-1])
    if hi <= lo:
        return None, 0.0, 0
    resets = sum(1 for r in cumulative.reset_times if lo < r <= hi)
    return _at(t, e, hi) - _at(t, e, lo), hi - lo, resets


def _at(t: Sequence[float], e: Sequence[float], x: float) -> float:
    i = bisect.bisect_right(t, x)
    if i <= 0:
        return e[0]
    if i >= len(t):
        return e[-1]
    t0, t1 = t[i - 1], t[i]
    if t1 == t0:
        return e[i]
    return e[i - 1] + (e[i] - e[i - 1]) * (x - t0) / (t1 - t0)
