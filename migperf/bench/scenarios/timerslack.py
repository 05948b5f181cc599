"""Timed waits that end when they should: Linux timer slack for the threads that schedule queries.

Linux lets a timed sleep end up to the thread's *timer slack* late (50 us
by default, ``prctl(2)``), so that wake-ups can be merged. LoadGen's server
scenario sleeps until each query's scheduled time (``sleep_until``) and
measures latency from that scheduled time, so every query's latency carried
LoadGen's own lateness: 60-100 us per query on a quiet 2-core VM, 0.6-1 % of
a 10 ms service time (``benchmarks/loadgen_accuracy.py``, which reads it from
LoadGen's trace). A slack of 1 ns brings it to about 20 us.

The slack is a per-thread setting that new threads inherit, so
:func:`precise_timers` is entered on the thread that runs the LoadGen test
before the batcher's threads start: LoadGen's issuing thread, its logging
thread and the batcher's threads all get it, the threads the model built
earlier do not, and the calling thread gets its old slack back at the end.
Where there is no ``prctl`` (not Linux) it changes nothing.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["PRECISE_SLACK_NS", "precise_timers", "timer_slack_ns"]

#: The slack :func:`precise_timers` sets (the smallest prctl accepts: 0 means "the default").
PRECISE_SLACK_NS = 1
_PR_SET_TIMERSLACK = 29
_PR_GET_TIMERSLACK = 30


def _prctl() -> Any | None:
    """``prctl(option, arg)`` with its arguments as the kernel reads them (unsigned long)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int

    def call(option: int, arg: int) -> int:
        zero = ctypes.c_ulong(0)
        return int(fn(ctypes.c_int(option), ctypes.c_ulong(arg), zero, zero, zero))

    return call


def timer_slack_ns() -> int | None:
    """This thread's timer slack in ns, or ``None`` where the OS has no such setting."""
    prctl = _prctl()
    if prctl is None:
        return None
    value = prctl(_PR_GET_TIMERSLACK, 0)
    return value if value >= 0 else None


@contextmanager
def precise_timers(slack_ns: int = PRECISE_SLACK_NS) -> Iterator[int | None]:
    """Run the block with this thread's timer slack at ``slack_ns``; yields the slack it had.

    Threads started inside the block keep the precise slack for their life;
    the calling thread gets its previous slack back on the way out, also when
    the block raises. Yields ``None`` and changes nothing where the slack
    cannot be read or set.
    """
    prctl = _prctl()
    before = timer_slack_ns()
    if prctl is None or before is None or prctl(_PR_SET_TIMERSLACK, slack_ns) != 0:
        yield None
        return
    try:
        yield before
    finally:
        prctl(_PR_SET_TIMERSLACK, before)
