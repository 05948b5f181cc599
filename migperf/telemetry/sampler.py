"""A background NVML sampler for the parent process.

:class:`NvmlSampler` reads, every ``interval_s`` (100 ms by default), each
chosen physical GPU's board telemetry (:meth:`Nvml.sample_gpu`: power,
instant power, the energy counter, SM and memory clocks, temperature,
utilization where NVML gives it, memory, clock event reasons) and the memory
of each of its MIG devices; and every ``gpm_interval_s`` (1 s) the NVML GPM
activity of each GPU instance (or of the whole GPU with MIG off) on Hopper
and newer.

It runs in a thread of the parent, never in the measured worker, so the
worker's timing loop is untouched; its cost is measured by
``benchmarks/sampler_overhead.py``.

CPU. On the simulator a reading (board metrics and one MIG device) costs
0.6-0.8 ms of CPU at 100 ms on a 2-core VM, about 0.3 ms when run back to
back, i.e. under 1 % of one core at 100 ms; its NVML calls run as one
simulator transaction (:meth:`Nvml.batch`). ``benchmarks/sampler_overhead.py
--real`` measures a real driver. Ticks follow a deadline schedule (the n-th
reading is due at start + n * interval, whatever the previous one cost; a
reading that overruns skips ticks instead of bursting). On Linux the thread
also lowers its own CPU priority to ``nice`` 19 (``setpriority`` on its
thread id: Linux threads are tasks, so only this thread is reniced, not the
process, its other threads or the workers it starts), so that a CPU-bound
workload sharing the cores runs first. The kernel weighs nice only among
tasks of one scheduling group: with autogroup on (``/proc/sys/kernel/
sched_autogroup_enabled``, tasks in the root cpu cgroup) every session is its
own group, and a worker started in a new session (as
:mod:`migperf.bench.process` starts them) competes with the parent's session
as a whole, so there the lower priority changes nothing and the reading's
own cost is what remains. Best effort: any failure is ignored.

Time. Each reading is stamped with ``time.monotonic_ns()`` and converted to
unix seconds with one (monotonic, wall) pair taken at start. Workers report
their windows in unix seconds from the same host clock; converting from the
monotonic clock keeps the series continuous if NTP steps the wall clock
mid-run (the offset error is the few microseconds between the two reads).

Failure. A metric NVML does not support is recorded once with its reason
and not asked again; it is never stored as 0. A failing reading (a driver
error) is counted in :attr:`TelemetrySeries.errors` and sampling goes on:
telemetry never ends a benchmark.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import re
import sys
import threading
import time
from collections.abc import Collection, Sequence
from typing import Any

from migperf.errors import MigperfError, UsageError
from migperf.nvml.facade import Nvml
from migperf.nvml.types import GPM_METRICS, GPU_METRICS, MigDevice
from migperf.telemetry.model import (
    ActivitySeries,
    GpuSeries,
    MigDeviceSeries,
    SamplerError,
    SamplerStats,
    TelemetrySeries,
)

__all__ = ["DEFAULT_GPM_INTERVAL_S", "DEFAULT_INTERVAL_S", "DEFAULT_NICE", "NvmlSampler"]

#: Default sampling interval of the board sensors (issue: 100 ms).
DEFAULT_INTERVAL_S = 0.1
#: Default GPM interval: NVML needs > 100 ms between samples; DCGM's default is 1 s.
DEFAULT_GPM_INTERVAL_S = 1.0
_GPM_MIN_INTERVAL_S = 0.1
#: CPU priority the sampling thread gives itself on Linux (19: the lowest).
DEFAULT_NICE = 19
_PROFILE = re.compile(r"MIG (\S+)$")
_GPU_COLUMNS = (*GPU_METRICS, "memory_total_mib")


class NvmlSampler:
    """Sample GPUs in a background thread; read the series afterwards.

    Use as a context manager, or :meth:`start` / :meth:`stop`::

        with NvmlSampler(nvml, [0]) as sampler:
            result = run_worker(spec, env)
        series = sampler.series(result.timing.window_start_unix_s, result.timing.window_end_unix_s)

    Args:
        nvml: Open NVML (real or simulated). Only the sampler's thread and
            the caller use it; the facade is safe to share.
        gpu_indices: Physical GPUs to sample (default: all).
        interval_s: Board-sensor interval.
        gpm_interval_s: NVML GPM interval (rounded to a whole number of
            ticks, at least 100 ms).
        gpm: Read NVML GPM activity where the GPU supports it.
        mig_uuids: MIG devices whose memory (and whose GPU instances' GPM
            activity) to read; None reads every MIG device of the sampled
            GPUs. A run needs only its own slice; each device read costs one
            NVML call per tick.
        nice: CPU priority (nice value) of the sampling thread on Linux, so
            that a CPU-bound workload on the same cores goes first; only that
            thread changes, never the process. None keeps the caller's.

    Raises:
        UsageError: for a non-positive interval.
    """

    def __init__(
        self,
        nvml: Nvml,
        gpu_indices: Sequence[int] | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        gpm_interval_s: float = DEFAULT_GPM_INTERVAL_S,
        gpm: bool = True,
        mig_uuids: Collection[str] | None = None,
        nice: int | None = DEFAULT_NICE,
    ) -> None:
        if not interval_s > 0 or not gpm_interval_s > 0:
            raise UsageError(
                f"telemetry interval must be positive, got {interval_s:g} s / GPM {gpm_interval_s:g} s",
                hint="use e.g. --telemetry-interval-ms 100",
            )
        self.nvml = nvml
        self.interval_s = float(interval_s)
        self.gpm_every = max(
            1,
            round(gpm_interval_s / self.interval_s),
            math.ceil(_GPM_MIN_INTERVAL_S / self.interval_s - 1e-9),
        )
        self._want_gpm = gpm
        self.nice = nice
        self._mig_filter = None if mig_uuids is None else set(mig_uuids)
        self._requested = None if gpu_indices is None else list(dict.fromkeys(gpu_indices))
        self._gpus: list[int] = []
        self._info: dict[int, dict[str, Any]] = {}
        self._mig: dict[int, list[MigDevice]] = {}
        self._profiles: dict[str, str | None] = {}
        self._skip: dict[int, set[str]] = {}
        self._unsupported: dict[int, dict[str, str]] = {}
        self._gpm_entities: dict[int, list[int | None]] = {}
        self._gpm_unsupported: dict[tuple[int, int | None], dict[str, str]] = {}
        self._gpm_last: dict[tuple[int, int | None], float] = {}
        self._gpu_cols: dict[int, dict[str, list[Any]]] = {}
        self._mig_cols: dict[str, dict[str, list[Any]]] = {}
        self._gpm_cols: dict[tuple[int, int | None], dict[str, list[Any]]] = {}
        self._errors: dict[tuple[str, str], list[Any]] = {}
        self._lock = threading.Lock()
        self._sample_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mono0 = 0
        self._unix0 = 0
        self._tick = 0
        self._samples = 0
        self._missed = 0
        self._read_sum_s = 0.0
        self._read_max_s = 0.0
        self._cpu_s = 0.0
        self._started_mono: float | None = None
        self._stopped_mono: float | None = None

    # ------------------------------------------------------------ lifecycle

    def __enter__(self) -> NvmlSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """Whether the sampling thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> NvmlSampler:
        """Find what to sample, take a first reading, start the thread.

        Raises:
            GpuNotFoundError: when a requested GPU does not exist.
        """
        if self._thread is not None:
            return self
        self._discover()
        self._anchor_clock()
        self._started_mono = time.monotonic()
        self.sample_now()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="migperf-nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and take a last reading (so every window ends inside the series)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=max(5.0, 10 * self.interval_s))
        self._thread = None
        self.sample_now(gpm=True)
        self._stopped_mono = time.monotonic()

    def _anchor_clock(self) -> None:
        # The pair read closest together gives the best monotonic-to-unix offset.
        best: tuple[int, int, int] | None = None
        for _ in range(5):
            a = time.monotonic_ns()
            u = time.time_ns()
            b = time.monotonic_ns()
            if best is None or b - a < best[0]:
                best = (b - a, (a + b) // 2, u)
        assert best is not None
        _, self._mono0, self._unix0 = best

    def to_unix_s(self, mono_ns: int) -> float:
        """Unix seconds of a ``time.monotonic_ns()`` reading (after :meth:`start`)."""
        return (self._unix0 + (mono_ns - self._mono0)) / 1e9

    def _discover(self) -> None:
        nvml = self.nvml
        gpus = self._requested if self._requested is not None else list(range(nvml.gpu_count()))
        for g in gpus:
            info = nvml.gpu(g)
            mig_on = bool(info.mig_mode and info.mig_mode.current)
            self._info[g] = {"uuid": info.uuid, "name": info.name, "mig_enabled": mig_on}
            devices = nvml.mig_devices(g) if mig_on else []
            if self._mig_filter is not None:
                devices = [d for d in devices if d.mig_uuid in self._mig_filter]
            self._mig[g] = devices
            for d in devices:
                m = _PROFILE.search(d.name)
                self._profiles[d.mig_uuid] = m[1] if m else None
                self._mig_cols[d.mig_uuid] = {
                    "t_unix_s": [],
                    "memory_used_mib": [],
                    "memory_total_mib": [],
                }
            self._skip[g] = set()
            self._unsupported[g] = {}
            self._gpu_cols[g] = {"t_unix_s": [], "t_mono_s": [], **{c: [] for c in _GPU_COLUMNS}}
            entities: list[int | None] = []
            if self._want_gpm:
                reason = nvml.gpm_support(g)
                if reason is None:
                    gis = sorted({d.gi_id for d in devices})
                    entities = list(gis) if mig_on else [None]
                else:
                    self._unsupported[g]["gpm_activity"] = reason
            self._gpm_entities[g] = entities
            for gi in entities:
                self._gpm_cols[(g, gi)] = {
                    "t_start_unix_s": [],
                    "t_end_unix_s": [],
                    **{m: [] for m in GPM_METRICS},
                }
                self._gpm_unsupported[(g, gi)] = {}
            self._gpus.append(g)

    # --------------------------------------------------------------- sampling

    def _lower_priority(self) -> None:
        """Renice the calling thread (only it) to :attr:`nice`; best effort, Linux only."""
        if self.nice is None or not sys.platform.startswith("linux"):
            # Elsewhere a native thread id is no process id: setpriority would miss or worse.
            return
        with contextlib.suppress(OSError, AttributeError, ValueError):
            tid = threading.get_native_id()
            # Never raise the priority (unprivileged users cannot anyway).
            nice = max(self.nice, os.getpriority(os.PRIO_PROCESS, tid))
            os.setpriority(os.PRIO_PROCESS, tid, nice)

    def _loop(self) -> None:
        self._lower_priority()
        cpu0 = time.thread_time()
        done = self._cpu_s
        next_t = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_t - time.monotonic())):
            self.sample_now()
            self._cpu_s = done + time.thread_time() - cpu0
            next_t += self.interval_s
            now = time.monotonic()
            if now > next_t:
                # A reading overran its tick: skip the missed ticks, never burst.
                missed = math.floor((now - next_t) / self.interval_s) + 1
                self._missed += missed
                next_t += missed * self.interval_s

    def sample_now(self, gpm: bool | None = None) -> None:
        """Take one reading of everything now (the thread calls this every tick).

        Args:
            gpm: Also take GPM samples; None follows the GPM schedule.
        """
        with self._sample_lock:
            t0 = time.monotonic()
            do_gpm = (self._tick % self.gpm_every == 0) if gpm is None else gpm
            self._tick += 1
            # One reading, one simulator transaction (nothing on a real driver). Should
            # it fail to open, read unbatched; should it fail to close (save), count it:
            # telemetry never ends a benchmark.
            batch = contextlib.ExitStack()
            with contextlib.suppress(Exception):
                batch.enter_context(self.nvml.batch())
            try:
                for g in self._gpus:
                    self._sample_gpu(g, do_gpm)
            finally:
                try:
                    batch.close()
                except Exception as exc:
                    self._error("nvml.batch", _describe(exc), self.to_unix_s(time.monotonic_ns()))
            dt = time.monotonic() - t0
            self._samples += 1
            self._read_sum_s += dt
            self._read_max_s = max(self._read_max_s, dt)

    def _sample_gpu(self, g: int, do_gpm: bool) -> None:
        mono = time.monotonic_ns()
        t_unix = self.to_unix_s(mono)
        try:
            s = self.nvml.sample_gpu(g, skip=self._skip[g])
        except Exception as exc:  # telemetry never ends a benchmark
            self._error(f"gpu{g}.sample", _describe(exc), t_unix)
            row: dict[str, Any] = {}
        else:
            for metric, why in s.unsupported.items():
                self._unsupported[g].setdefault(metric, why)
                self._skip[g].add(metric)
            for metric, why in s.errors.items():
                self._error(f"gpu{g}.{metric}", why, t_unix)
            row = {c: getattr(s, c) for c in _GPU_COLUMNS}
        with self._lock:
            cols = self._gpu_cols[g]
            cols["t_unix_s"].append(t_unix)
            cols["t_mono_s"].append(mono / 1e9)
            for c in _GPU_COLUMNS:
                cols[c].append(row.get(c))
        if self._mig[g]:
            self._sample_mig(g, t_unix)
        if do_gpm:
            for gi in list(self._gpm_entities[g]):
                self._sample_gpm(g, gi)

    def _sample_mig(self, g: int, t_unix: float) -> None:
        try:
            readings = self.nvml.mig_memory(g, self._mig[g])
        except Exception as exc:  # counted, never raised
            self._error(f"gpu{g}.mig_memory", _describe(exc), t_unix)
            readings = []
        by_uuid = {r.mig_uuid: r for r in readings}
        with self._lock:
            for d in self._mig[g]:
                r = by_uuid.get(d.mig_uuid)
                if r is not None and r.error:
                    self._error_locked(f"gpu{g}.{d.mig_uuid}.memory", r.error, t_unix)
                cols = self._mig_cols[d.mig_uuid]
                cols["t_unix_s"].append(t_unix)
                cols["memory_used_mib"].append(None if r is None else r.memory_used_mib)
                cols["memory_total_mib"].append(None if r is None else r.memory_total_mib)

    def _sample_gpm(self, g: int, gi: int | None) -> None:
        key = (g, gi)
        last = self._gpm_last.get(key)
        if last is not None and time.monotonic() - last < _GPM_MIN_INTERVAL_S:
            return  # NVML: GPM samples must be more than 100 ms apart
        self._gpm_last[key] = time.monotonic()
        try:
            act = self.nvml.gpm_activity(g, gi)
        except Exception as exc:  # counted, never raised
            self._error(f"gpu{g}.gpm", _describe(exc), self.to_unix_s(time.monotonic_ns()))
            return
        t_end = self.to_unix_s(time.monotonic_ns())
        where = f"gpu{g}" + ("" if gi is None else f".gi{gi}")
        for metric, why in act.errors.items():
            self._error(f"{where}.{metric}", why, t_end)
        if act.unsupported:
            self._gpm_unsupported[key].update(act.unsupported)
            if all(m in act.unsupported for m in GPM_METRICS):
                # Nothing to read on this entity: stop asking.
                self._gpm_entities[g].remove(gi)
                return
        if act.interval_s is None:
            return
        with self._lock:
            cols = self._gpm_cols[key]
            cols["t_start_unix_s"].append(t_end - act.interval_s)
            cols["t_end_unix_s"].append(t_end)
            for m in GPM_METRICS:
                cols[m].append(getattr(act, m))

    def _error(self, what: str, message: str, t_unix: float) -> None:
        with self._lock:
            self._error_locked(what, message, t_unix)

    def _error_locked(self, what: str, message: str, t_unix: float) -> None:
        entry = self._errors.get((what, message))
        if entry is None:
            self._errors[(what, message)] = [1, t_unix, t_unix]
        else:
            entry[0] += 1
            entry[2] = t_unix

    # ----------------------------------------------------------------- output

    @property
    def stats(self) -> SamplerStats:
        """Readings taken, their cost, and the sampler thread's CPU time so far."""
        end = self._stopped_mono if self._stopped_mono is not None else time.monotonic()
        return SamplerStats(
            interval_s=self.interval_s,
            samples=self._samples,
            missed_ticks=self._missed,
            read_ms_mean=self._read_sum_s / self._samples * 1000 if self._samples else None,
            read_ms_max=self._read_max_s * 1000 if self._samples else None,
            cpu_s=self._cpu_s,
            wall_s=None if self._started_mono is None else end - self._started_mono,
        )

    def unsupported(self) -> dict[int, dict[str, str]]:
        """Per GPU: metric name to the reason NVML does not give it (recorded once)."""
        with self._lock:
            return {g: dict(u) for g, u in self._unsupported.items()}

    def series(
        self, start_unix_s: float | None = None, end_unix_s: float | None = None
    ) -> TelemetrySeries:
        """The readings, all of them or those around a window.

        With a window, each series keeps the readings inside it plus the one
        just before and the one just after (so the energy counter can be
        interpolated at both ends); activity rows are kept when their
        interval overlaps the window.
        """
        lo = -math.inf if start_unix_s is None else start_unix_s
        hi = math.inf if end_unix_s is None else end_unix_s
        with self._lock:
            gpus = []
            for g in self._gpus:
                cols = self._gpu_cols[g]
                a, b = _bracket(cols["t_unix_s"], lo, hi)
                unsupported = dict(self._unsupported[g])
                kept = {
                    c: v[a:b]
                    for c, v in cols.items()
                    if not (c in unsupported and all(x is None for x in v))
                    and not (c == "memory_total_mib" and "memory_used_mib" in unsupported)
                }
                info = self._info[g]
                gpus.append(
                    GpuSeries(
                        gpu_index=g,
                        gpu_uuid=info["uuid"],
                        name=info["name"],
                        mig_enabled=info["mig_enabled"],
                        columns=kept,
                        unsupported=unsupported,
                    )
                )
            migs = []
            for g in self._gpus:
                for d in self._mig[g]:
                    cols = self._mig_cols[d.mig_uuid]
                    a, b = _bracket(cols["t_unix_s"], lo, hi)
                    migs.append(
                        MigDeviceSeries(
                            gpu_index=g,
                            mig_uuid=d.mig_uuid,
                            gi_id=d.gi_id,
                            ci_id=d.ci_id,
                            profile=self._profiles.get(d.mig_uuid),
                            columns={c: v[a:b] for c, v in cols.items()},
                        )
                    )
            activity = []
            for (g, gi), cols in self._gpm_cols.items():
                keep = [
                    i
                    for i, (t0, t1) in enumerate(
                        zip(cols["t_start_unix_s"], cols["t_end_unix_s"], strict=True)
                    )
                    if t1 >= lo and t0 <= hi
                ]
                unsupported = dict(self._gpm_unsupported[(g, gi)])
                activity.append(
                    ActivitySeries(
                        gpu_index=g,
                        gi_id=gi,
                        scope="whole_gpu" if gi is None else "gpu_instance",
                        columns={
                            c: [v[i] for i in keep]
                            for c, v in cols.items()
                            if not (c in unsupported and all(x is None for x in v))
                        },
                        unsupported=unsupported,
                    )
                )
            errors = [
                SamplerError(
                    what=what, message=msg, count=e[0], first_unix_s=e[1], last_unix_s=e[2]
                )
                for (what, msg), e in self._errors.items()
                if e[2] >= lo and e[1] <= hi
            ]
        return TelemetrySeries(
            interval_s=self.interval_s,
            gpus=gpus,
            mig_devices=migs,
            activity=activity,
            errors=errors,
            stats=self.stats,
        )


def _bracket(t: list[float], lo: float, hi: float) -> tuple[int, int]:
    """Slice bounds of the readings in ``[lo, hi]`` plus one on each side."""
    a = max(bisect.bisect_left(t, lo) - 1, 0)
    b = min(bisect.bisect_right(t, hi) + 1, len(t))
    return a, max(a, b)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MigperfError):
        return exc.message
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
