"""Warm workers: one process per device serves consecutive runs, and builds each model once.

A fresh worker (:mod:`migperf.bench.process`) pays its imports, the device's
initialisation and the model's build for every run: seconds of GPU time per
run in which nothing is measured. A :class:`WarmPool` keeps one worker alive
per device and hands it run after run (``python -m migperf.bench.worker
--serve``, or a fork of a :class:`~migperf.bench.zygote.Zygote` that has
already imported torch and the sweep's models). The worker keeps the model it
built for every later run that shares it (workload, model arguments,
precision: batch sizes, sequence lengths, scenarios, repeats differ) and
resets between runs what a fresh process would not have (peak-memory
statistics, the allocator's caches, torch.compile's caches).

A worker is retired, and the next run on its device gets a new one:

* after any result that is not ``ok`` (an error, out of memory; the worker
  exits by itself), a crash, or a run past its timeout (killed with its
  process group);
* when its device is asked for with a different environment;
* by :meth:`WarmPool.release_devices`, which the experiment runner calls
  before a layout changes (a live CUDA context would block destroying its
  MIG instance), and by :meth:`WarmPool.close`.

It dies with its parent however the parent ends: end of input on its stdin,
and ``PR_SET_PDEATHSIG`` (see :mod:`migperf.bench.worker`).

An emulated slice (:mod:`migperf.bench.emulation`) is enforced per run as in
a fresh worker: the memory limit is set when the worker starts on its device
(every run on it has the same), the CPU budget is armed at each run's
release and closed at its end (:func:`~migperf.bench.throttle.govern`).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import migperf
from migperf.bench.emulation import EMULATION_ENV
from migperf.bench.result import ProcessInfo, WorkerResult, load_result, unanswered
from migperf.bench.spec import BenchSpec
from migperf.bench.throttle import govern
from migperf.bench.worker import PARENT_PID_ENV, READY_FD_ENV
from migperf.bench.zygote import Forked, Zygote
from migperf.errors import MigperfError

__all__ = ["WarmPool", "WarmWorker", "WorkerUse"]

_PACKAGE_ROOT = str(Path(migperf.__file__).resolve().parent.parent)
_RETIRE_GRACE_S = 5.0


@dataclass(frozen=True)
class WorkerUse:
    """How one run's worker ran, for the stored result.

    Attributes:
        mode: ``warm`` (a worker serving several runs) or ``fresh`` (one process per run).
        pid: The worker process.
        run_in_process: This was the worker's n-th run (1 for a fresh worker).
        model_cached: The run reused a model an earlier run of the worker built
            (``None`` when the worker did not say).
        forked: The worker was forked from a zygote (imports already done).
    """

    mode: str
    pid: int | None
    run_in_process: int
    model_cached: bool | None = None
    forked: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form stored with the run."""
        return {
            "mode": self.mode,
            "run_in_process": self.run_in_process,
            "model_cached": self.model_cached,
            "forked": self.forked,
        }


def _env_key(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """What makes two runs' environments the same worker's: all of it but the launch's group id."""
    items = dict(env)
    raw = items.get(EMULATION_ENV)
    if raw:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            data = json.loads(raw)
            data.pop("group", None)
            items[EMULATION_ENV] = json.dumps(data, sort_keys=True)
    return tuple(sorted(items.items()))


class WarmWorker:
    """One live worker serving runs on one device (see the module docstring).

    Args:
        env: Its environment (from the first run on its device).
        zygote: Fork it from this zygote when the environment allows; else exec a new interpreter.
        python: Interpreter for an exec'ed worker.
        stderr_lines: How many stderr lines of a run its result keeps.

    Raises:
        MigperfError: When no process could be started.
    """

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        zygote: Zygote | None = None,
        python: str | None = None,
        stderr_lines: int = 40,
    ) -> None:
        self.key = _env_key(env)
        self.runs = 0
        self._stderr_lines = stderr_lines
        self._cond = threading.Condition()
        self._results: collections.deque[str] = collections.deque()
        self._stderr: collections.deque[tuple[int, str]] = collections.deque(maxlen=400)
        self._stderr_seq = 0
        self._ready = False
        self._returncode: int | None = None
        self._exited = False
        self._on_event: Callable[[dict[str, Any]], None] | None = None
        self._model_cached: bool | None = None
        self._forked: Forked | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        if zygote is not None and zygote.can_fork(env):
            self._forked = zygote.spawn(env)
            self.pid = self._forked.pid
            fds = (
                self._forked.stdin,
                self._forked.stdout,
                self._forked.stderr,
                self._forked.events,
            )
        else:
            fds = self._exec(env, python)
        self._stdin = os.fdopen(fds[0], "wb", buffering=0)
        for target, fd in ((self._read_stdout, fds[1]), (self._read_stderr, fds[2])):
            threading.Thread(target=target, args=(fd,), daemon=True).start()
        threading.Thread(target=self._read_events, args=(fds[3],), daemon=True).start()
        threading.Thread(target=self._reap, daemon=True).start()

    @property
    def forked(self) -> bool:
        """Whether it was forked from a zygote."""
        return self._forked is not None

    def _exec(self, env: Mapping[str, str], python: str | None) -> tuple[int, int, int, int]:
        full = dict(env)
        old = full.get("PYTHONPATH")
        full["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + old if old else "")
        full[PARENT_PID_ENV] = str(os.getpid())
        pipes = [os.pipe() for _ in range(4)]  # stdin, stdout, stderr, events
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
        ours = (pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0])
        full[READY_FD_ENV] = str(theirs[3])
        try:
            self._proc = subprocess.Popen(
                [python or sys.executable, "-m", "migperf.bench.worker", "--serve"],
                stdin=theirs[0],
                stdout=theirs[1],
                stderr=theirs[2],
                env=full,
                pass_fds=(theirs[3],),
                start_new_session=True,
            )
        except OSError as exc:
            for fd in ours:
                os.close(fd)
            raise MigperfError(f"the warm worker did not start: {exc}") from exc
        finally:
            for fd in theirs:
                os.close(fd)
        self.pid = self._proc.pid
        return ours

    # -- readers -----------------------------------------------------------

    def _read_stdout(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as stream:
            for raw in stream:
                with self._cond:
                    self._results.append(raw.decode("utf-8", "replace"))
                    self._cond.notify_all()

    def _read_stderr(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as stream:
            for raw in stream:
                with self._cond:
                    self._stderr_seq += 1
                    self._stderr.append((self._stderr_seq, raw.decode("utf-8", "replace").rstrip()))

    def _read_events(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as stream:
            for raw in stream:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(event, dict):
                    continue
                with self._cond:
                    if event.get("event") == "ready":
                        self._ready = True
                        self._cond.notify_all()
                    if event.get("phase") == "warmup" and "model_cached" in event:
                        self._model_cached = bool(event["model_cached"])
                    on_event = self._on_event
                if on_event is not None:
                    with contextlib.suppress(Exception):  # a display never stops a run
                        on_event(event)

    def _reap(self) -> None:
        if self._proc is not None:
            rc: int | None = self._proc.wait()
        else:
            assert self._forked is not None
            rc = self._forked.wait(None)
        with self._cond:
            self._returncode = rc
            self._exited = True
            self._cond.notify_all()

    # -- runs --------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        with self._cond:
            return not self._exited

    def run(
        self,
        spec: BenchSpec,
        env: Mapping[str, str],
        timeout_s: float,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[WorkerResult, WorkerUse]:
        """Run one spec on this worker and return its result (never raises for a worker failure).

        A spec with the barrier is released as soon as it is ready; an
        emulated device's CPU budget (from ``env``) applies from then on.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        with self._cond:
            self.runs += 1
            self._ready = False
            self._model_cached = None
            self._on_event = on_event
            mark = self._stderr_seq
        governed = govern(self.pid, env, armed=not spec.barrier)
        timed_out = False
        line: str | None = None
        try:
            self._send(spec.to_line() + "\n")
            if spec.barrier:
                state = self._wait(lambda: self._ready or bool(self._results), deadline)
                if state and self._ready:
                    if governed is not None:
                        governed.arm()
                    self._send("go\n")
            if self._wait(lambda: bool(self._results), deadline):
                with self._cond:
                    line = self._results.popleft()
            elif self.alive:
                timed_out = True
                self.kill()
        except BaseException:
            self.kill()
            raise
        finally:
            if governed is not None:
                governed.close()
            with self._cond:
                self._on_event = None
        use = WorkerUse(
            mode="warm",
            pid=self.pid,
            run_in_process=self.runs,
            model_cached=self._model_cached,
            forked=self.forked,
        )
        return self._interpret(spec, line, t0, timeout_s, timed_out, mark), use

    def _wait(self, predicate: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``predicate`` holds (``True``), the worker exits or the deadline passes."""
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if self._exited or left <= 0:
                    return predicate()
                self._cond.wait(min(left, 0.5))
            return True

    def _send(self, text: str) -> None:
        with contextlib.suppress(BrokenPipeError, OSError):
            self._stdin.write(text.encode())

    def _interpret(
        self,
        spec: BenchSpec,
        line: str | None,
        t0: float,
        timeout_s: float,
        timed_out: bool,
        mark: int,
    ) -> WorkerResult:
        if line is None and not timed_out:
            self._wait(lambda: self._exited, time.monotonic() + 5.0)
        with self._cond:
            tail = [text for seq, text in self._stderr if seq > mark][-self._stderr_lines :]
            rc = self._returncode
        info = ProcessInfo(
            pid=self.pid,
            returncode=rc,
            wall_duration_s=time.monotonic() - t0,
            timeout_s=timeout_s,
            timed_out=timed_out,
            stderr_tail=tail,
        )
        if line is not None:
            try:
                doc = load_result(line.strip())
            except MigperfError:
                doc = None
            if doc is not None:
                return doc.model_copy(update={"process": info, "simulated": spec.simulated})
        return unanswered(spec, info)

    # -- ending ------------------------------------------------------------

    def kill(self) -> None:
        """Kill the worker and its process group (SIGKILL)."""
        if not self.alive:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    def retire(self, grace_s: float = _RETIRE_GRACE_S) -> None:
        """End the worker: end of input, then SIGKILL past ``grace_s``; returns once it exited."""
        with contextlib.suppress(OSError):
            self._stdin.close()
        if not self._wait(lambda: self._exited, time.monotonic() + grace_s):
            self.kill()
            self._wait(lambda: self._exited, time.monotonic() + grace_s)


class WarmPool:
    """Warm workers by device, started from a zygote that preloads the sweep's workloads.

    Args:
        workloads: Workload names the zygote imports ahead (their modules and model classes).
        zygote: Fork workers from a zygote (else each worker is a new interpreter).
        python: Interpreter (this one by default).
    """

    def __init__(
        self, workloads: Sequence[str] = (), *, zygote: bool = True, python: str | None = None
    ) -> None:
        self.workloads = sorted(set(workloads))
        self.use_zygote = zygote
        self.python = python
        self._zygote: Zygote | None = None
        self._workers: dict[str, WarmWorker] = {}
        self.started = 0
        self.model_builds = 0
        self.runs = 0

    def prepare(self, env: Mapping[str, str]) -> None:
        """Start the zygote now (its imports overlap whatever the caller does next)."""
        if self.use_zygote and self._zygote is None:
            try:
                self._zygote = Zygote(env, self.workloads, python=self.python)
            except MigperfError:
                self.use_zygote = False  # exec'ed workers still serve warm

    def run(
        self,
        spec: BenchSpec,
        env: Mapping[str, str],
        *,
        device: str,
        timeout_s: float,
        on_started: Callable[[int], None] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[WorkerResult, WorkerUse]:
        """Run ``spec`` on the device's warm worker (started when there is none or it cannot serve).

        Returns:
            The result and how its worker ran. ``timeout`` and ``crashed`` are
            results, and retire the worker.

        Raises:
            MigperfError: When no worker process could be started.
        """
        worker = self._workers.get(device)
        if worker is not None and (not worker.alive or worker.key != _env_key(env)):
            self._retire(device)
            worker = None
        if worker is None:
            self.prepare(env)
            worker = WarmWorker(env, zygote=self._zygote, python=self.python)
            self._workers[device] = worker
            self.started += 1
        if on_started is not None:
            on_started(worker.pid)
        result, use = worker.run(spec, env, timeout_s, on_event=on_event)
        self.runs += 1
        if use.model_cached is not True:
            self.model_builds += 1
        if result.status != "ok" or not worker.alive:
            self._retire(device)
        return result, use

    def _retire(self, device: str) -> None:
        worker = self._workers.pop(device, None)
        if worker is not None:
            worker.retire()

    def release_devices(self) -> None:
        """Retire every worker (before a layout changes): each has exited when this returns."""
        for device in list(self._workers):
            self._retire(device)

    def close(self) -> None:
        """Retire every worker and end the zygote."""
        try:
            self.release_devices()
        finally:
            if self._zygote is not None:
                self._zygote.close()
                self._zygote = None

    def __enter__(self) -> WarmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
