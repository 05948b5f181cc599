"""Processes and signals: whether a process still runs, and signals held off for a restore.

Standard library only: the simulated MPS control program imports it too.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["STOP_SIGNALS", "pid_alive", "signals_deferred", "signals_interrupt"]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie (exited, not yet reaped) does not: it holds
    no GPU context, so the driver has already forgotten it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, and it exists
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # The state follows the parenthesised command name; Z is a zombie, X dead.
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) succeeded


#: Signals that stop a command; a restore defers them until it has finished.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_deferred(
    on_signal: Callable[[int], None] | None = None, *, redeliver: bool = True
) -> Iterator[list[int]]:
    """Hold off SIGINT, SIGTERM and SIGHUP for the block; re-deliver the first one after it.

    A restore must not be cut short by an impatient second Ctrl-C: the GPU would
    stay in a layout nobody asked for. ``on_signal`` is told of each signal that
    arrives (to say that the restore is finishing). With ``redeliver`` False the
    caller handles what arrived (the yielded list) itself. Outside the main
    thread signals cannot be handled, and the block just runs.

    Yields:
        The signals received so far (numbers), in order.
    """
    got: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        got.append(signum)
        if on_signal is not None:
            on_signal(signum)

    try:
        old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield got
        return
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if got and redeliver:
            signal.raise_signal(got[0])


@contextlib.contextmanager
def signals_interrupt(stopped_by: list[int]) -> Iterator[None]:
    """Make SIGINT, SIGTERM and SIGHUP all raise KeyboardInterrupt in the block.

    So a kill or a closed terminal stops a command the way Ctrl-C does (a layout
    change in flight rolls back, a run restores its layouts). Each signal is
    appended to ``stopped_by``, so the caller can exit 128 + its number. Outside
    the main thread signals cannot be handled, and the block just runs.
    """

    def handler(signum: int, frame: Any) -> None:
        stopped_by.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
