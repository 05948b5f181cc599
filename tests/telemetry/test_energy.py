"""Energy from counter differences: interpolation at the window's ends, wraps, resets."""

from __future__ import annotations

import pytest

from migperf.telemetry.energy import energy_between, unwrap_counter


def _counter(power_w: float, times: list[float], start_mj: float = 0.0) -> list[float]:
    return [start_mj + power_w * t * 1000.0 for t in times]


def test_energy_is_the_counter_difference_interpolated_at_the_window_ends() -> None:
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    cum = unwrap_counter(times, _counter(250.0, times, start_mj=5e9))
    # The window starts and ends between readings: 0.05 .. 0.43 s at 250 W.
    mj, covered, resets = energy_between(cum, 0.05, 0.43)
    assert mj == pytest.approx(250.0 * 0.38 * 1000.0)
    assert covered == pytest.approx(0.38)
    assert resets == 0


def test_a_window_beyond_the_readings_is_clipped_and_says_so() -> None:
    times = [1.0, 2.0, 3.0]
    cum = unwrap_counter(times, _counter(100.0, times))
    mj, covered, _ = energy_between(cum, 0.0, 2.5)
    assert mj == pytest.approx(100.0 * 1.5 * 1000.0)
    assert covered == pytest.approx(1.5)
    assert energy_between(cum, 5.0, 6.0) == (None, 0.0, 0)
    assert energy_between(unwrap_counter([1.0], [5.0]), 0.0, 2.0)[0] is None


@pytest.mark.parametrize("bits", [32, 64])
def test_a_counter_that_wraps_keeps_counting(bits: int) -> None:
    top = 2**bits
    times = [0.0, 1.0, 2.0, 3.0]
    # 300 W = 300,000 mJ per second; the register overflows between t=1 and t=2.
    raw = [top - 400_000, top - 100_000, 200_000, 500_000]
    cum = unwrap_counter(times, raw)
    assert cum.wraps == 1 and cum.resets == 0
    assert list(cum.energy_mj) == pytest.approx([0, 300_000, 600_000, 900_000])
    assert energy_between(cum, 0.0, 3.0)[0] == pytest.approx(900_000)


def test_a_counter_reset_counts_energy_since_the_reset_and_is_reported() -> None:
    times = [0.0, 1.0, 2.0, 3.0]
    # A driver reload between t=1 and t=2: the counter restarts from zero.
    raw = [123_456_789, 123_656_789, 150_000, 350_000]
    cum = unwrap_counter(times, raw)
    assert cum.resets == 1 and cum.wraps == 0
    assert list(cum.energy_mj) == pytest.approx([0, 200_000, 350_000, 550_000])
    mj, _, resets = energy_between(cum, 0.5, 3.0)
    assert resets == 1
    assert mj == pytest.approx(550_000 - 100_000)


def test_an_implausible_jump_after_a_reset_counts_as_nothing() -> None:
    cum = unwrap_counter([0.0, 0.1, 0.2], [5e12, 1e11, 1e11 + 20_000])
    # 1e11 mJ in 0.1 s would be a petawatt: not energy since a reset.
    assert cum.resets == 1
    assert list(cum.energy_mj) == pytest.approx([0, 0, 20_000])


def test_failed_readings_are_skipped_not_zero() -> None:
    times = [0.0, 1.0, 2.0, 3.0]
    cum = unwrap_counter(times, [1000.0, None, 201_000.0, 301_000.0])
    assert cum.times == (0.0, 2.0, 3.0)
    assert energy_between(cum, 0.0, 3.0)[0] == pytest.approx(300_000)
