"""The parent side of compute emulation: a CPU-time budget per simulated device, kept with SIGSTOP.

A worker on a simulated MIG slice may use the share of this host's cores its
slice's SMs are of the GPU (:mod:`migperf.bench.emulation`). The kernel's own
means, a cgroup CPU quota, needs a writable cgroup hierarchy (root, a
delegated cgroup v2 subtree), which CI runners and most containers do not
give; this works wherever the parent may signal its own children and reads
their CPU clocks, so simulated numbers are the same on a laptop and in CI.

:class:`CpuGovernor` keeps a token bucket per device ("group"): every tick
(5 ms) it reads the CPU time each armed worker used (its process CPU clock,
nanoseconds, all threads), credits the group its cores times the elapsed
time and debits what was used; a group in debt has its workers stopped
(``SIGSTOP``) until the credit is back, then continued (``SIGCONT``). So the
group's CPU time over any second is its share, exactly on average, whatever
else loads the host (which can take a share away, never add to it). Workers in one group (time-sliced processes, MPS
clients) compete inside the group's share; an MPS client also has a bucket of
its own (its thread percentage). Unused credit is capped at a short burst,
as a CFS quota forfeits what a period did not use, and a group's credit
starts empty when its first worker is armed: how long a worker took to get
ready (a fresh one's imports, a warm one's milliseconds) buys it nothing. The share comes as
run-and-pause cycles (on a 1g share with two threads, about 5 ms running
and 30 ms stopped), so a small slice's latency percentiles include pauses a
real slice, which runs slower but steadily, would not have.

A worker is armed when it is released at the barrier (it measures from
then): importing torch and building the model are host work that a real
slice does not slow down. :func:`govern` is what
:class:`~migperf.bench.process.WorkerProcess` calls.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from migperf.bench.emulation import emulation_from_env

__all__ = ["CpuGovernor", "Governed", "cpu_seconds", "govern"]

_TICK_S = 0.005
_BURST_S = 0.05


def _cpu_clock(pid: int) -> int:
    # Linux's clock id of a process's CPU clock (MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)).
    return ((~pid) << 3) | 2


def cpu_seconds(pid: int) -> float | None:
    """CPU time a process used so far (all its threads), or ``None`` when it cannot be read."""
    try:
        return time.clock_gettime(_cpu_clock(pid))
    except (OSError, OverflowError, AttributeError):
        pass
    try:  # another Unix, or a kernel without process clocks: 10 ms ticks from procfs
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


@dataclass(eq=False)
class _Member:
    pid: int
    own_cores: float | None
    armed: bool
    last_cpu: float = 0.0
    credit: float = 0.0
    stopped: bool = False


@dataclass(eq=False)
class _Group:
    cores: float
    last: float
    credit: float = 0.0
    members: list[_Member] = field(default_factory=list)


class Governed:
    """One worker under a :class:`CpuGovernor`: arm it when it starts measuring, close it when it exits."""

    def __init__(self, governor: CpuGovernor, group: str, member: _Member) -> None:
        self._governor = governor
        self._group = group
        self._member = member

    @property
    def pid(self) -> int:
        """The governed process."""
        return self._member.pid

    def arm(self) -> None:
        """Charge the process's CPU time from now on."""
        self._governor._arm(self._group, self._member)

    def close(self) -> None:
        """Stop governing the process (continuing it if it is stopped). Idempotent."""
        self._governor._detach(self._group, self._member)


class CpuGovernor:
    """Token buckets of CPU time per device, enforced on worker processes with SIGSTOP/SIGCONT.

    Args:
        tick_s: How often the budgets are checked.
        burst_s: Unused credit is capped at this many seconds of the share.
    """

    def __init__(self, tick_s: float = _TICK_S, burst_s: float = _BURST_S) -> None:
        self.tick_s = tick_s
        self.burst_s = burst_s
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._thread: threading.Thread | None = None

    def attach(
        self,
        pid: int,
        *,
        group: str,
        group_cores: float,
        own_cores: float | None = None,
        armed: bool = True,
    ) -> Governed:
        """Govern a process.

        Args:
            pid: The worker.
            group: Its device in this launch; members of a group share ``group_cores``.
            group_cores: CPU cores the group may use together.
            own_cores: CPU cores this process may use on its own (an MPS client).
            armed: Charge it from now on; else from :meth:`Governed.arm`.

        Returns:
            The handle to arm and close it with.
        """
        member = _Member(pid=pid, own_cores=own_cores, armed=False)
        with self._lock:
            g = self._groups.get(group)
            if g is None:
                g = self._groups[group] = _Group(cores=group_cores, last=time.monotonic())
            g.members.append(member)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="migperf-cpu-governor", daemon=True
                )
                self._thread.start()
        handle = Governed(self, group, member)
        if armed:
            handle.arm()
        return handle

    def _arm(self, group: str, m: _Member) -> None:
        cpu = cpu_seconds(m.pid)
        with self._lock:
            if m.armed:
                return
            m.last_cpu = cpu if cpu is not None else 0.0
            m.credit = 0.0
            m.armed = True
            g = self._groups.get(group)
            if g is not None and not any(o.armed for o in g.members if o is not m):
                # The device's budget starts empty at its first release: no burst
                # saved up while its workers imported and built (a fresh worker's
                # seconds of imports would buy it more than a warm one's milliseconds).
                g.credit = 0.0
                g.last = time.monotonic()

    def _detach(self, group: str, m: _Member) -> None:
        with self._lock:
            g = self._groups.get(group)
            if g is None or m not in g.members:
                return
            g.members.remove(m)
            if not g.members:
                del self._groups[group]
            if m.stopped:
                self._signal(m, stop=False)

    @staticmethod
    def _signal(m: _Member, *, stop: bool) -> None:
        m.stopped = stop
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(m.pid, signal.SIGSTOP if stop else signal.SIGCONT)

    def _run(self) -> None:
        try:
            while True:
                with self._lock:
                    if not self._groups:
                        self._thread = None
                        return
                    now = time.monotonic()
                    for g in self._groups.values():
                        self._tick(g, now)
                time.sleep(self.tick_s)
        except BaseException:
            # Never leave a worker stopped behind a dead governor.
            with self._lock:
                for g in self._groups.values():
                    for m in g.members:
                        if m.stopped:
                            self._signal(m, stop=False)
                self._groups.clear()
                self._thread = None
            raise

    def _tick(self, g: _Group, now: float) -> None:
        dt = now - g.last
        g.last = now
        used_total = 0.0
        for m in g.members:
            if not m.armed:
                continue
            cpu = cpu_seconds(m.pid)
            if cpu is None:  # exited; its reaper detaches it
                continue
            used = max(0.0, cpu - m.last_cpu)
            m.last_cpu = cpu
            used_total += used
            if m.own_cores is not None:
                m.credit = min(m.credit + m.own_cores * dt - used, self._cap(m.own_cores))
        g.credit = min(g.credit + g.cores * dt - used_total, self._cap(g.cores))
        for m in g.members:
            over = g.credit < 0 or (m.own_cores is not None and m.credit < 0)
            want_stop = m.armed and over
            if want_stop != m.stopped:
                self._signal(m, stop=want_stop)

    def _cap(self, cores: float) -> float:
        # At least two ticks' worth, so a steady load exactly at the share never loses credit.
        return cores * max(self.burst_s, 2 * self.tick_s)


_GOVERNOR = CpuGovernor()


def govern(pid: int, env: Mapping[str, str], *, armed: bool) -> Governed | None:
    """Put a worker under this process's governor when its environment hands it a CPU share.

    Args:
        pid: The worker, just started.
        env: The environment it was started with (see
            :func:`migperf.bench.emulation.emulation_env`).
        armed: Charge it from now on; else from :meth:`Governed.arm` (its release).

    Returns:
        The handle, or ``None`` when the worker may use the whole host.
    """
    emulation = emulation_from_env(env)
    if emulation is None or not emulation.throttled:
        return None
    cores = emulation.device_cores
    if cores is None:
        return None
    return _GOVERNOR.attach(
        pid,
        group=emulation.group or f"pid-{pid}",
        group_cores=cores,
        own_cores=emulation.client_cores,
        armed=armed,
    )
