"""The parent side: run specs in fresh worker processes and read back one result each.

* :func:`run_worker` runs one spec and always returns a
  :class:`~migperf.bench.result.WorkerResult`: a worker past its timeout is
  killed (with its whole process group) and reported as ``timeout``; one that
  dies without a result is ``crashed`` with the last lines of its stderr.
* :class:`WorkerGroup` / :func:`run_group` co-locate workers: start N, wait
  until all are warmed up and ready, release them together so their
  measurement windows overlap, collect every result. If one fails before it
  is ready, the others are released from the barrier with end of input and
  report ``aborted``.

Each worker gets its own process session, stdout (the result), stderr (logs,
kept as a bounded tail), stdin (the spec, then ``go``) and a dedicated pipe
for its events (``MIGPERF_READY_FD``): the barrier's ready event and the
run's phases, which ``on_event`` is told as they arrive.
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
from typing import IO, TYPE_CHECKING, Any

import migperf
from migperf.bench.result import ErrorInfo, ProcessInfo, WorkerResult, load_result, unanswered
from migperf.bench.spec import BenchSpec
from migperf.bench.throttle import Governed, govern
from migperf.bench.worker import PARENT_PID_ENV, READY_FD_ENV
from migperf.errors import MigperfError, UsageError

if TYPE_CHECKING:
    from migperf.bench.warm import WorkerUse

__all__ = ["GroupResult", "WorkerGroup", "WorkerProcess", "run_group", "run_worker"]

_PACKAGE_ROOT = str(Path(migperf.__file__).resolve().parent.parent)


class WorkerProcess:
    """One worker process running one spec.

    Args:
        spec: What to run.
        env: The worker's environment (from :func:`migperf.bench.device.worker_env`);
            ``None`` inherits this process's.
        timeout_s: Wall-clock limit from start to exit; past it the worker is killed.
        python: Interpreter to run (this one by default).
        stderr_lines: How many of the worker's last stderr lines to keep.
        on_stderr: Called with each stderr line as it arrives (from a reader thread).
        on_event: Called with each event the worker reports (a dict with
            ``event``: ``phase`` or ``ready``), from a reader thread.
    """

    def __init__(
        self,
        spec: BenchSpec,
        env: Mapping[str, str] | None = None,
        *,
        timeout_s: float = 600.0,
        python: str | None = None,
        stderr_lines: int = 40,
        on_stderr: Callable[[str], None] | None = None,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.spec = spec
        self._on_event = on_event
        self.env = dict(os.environ if env is None else env)
        self.timeout_s = timeout_s
        self.python = python or sys.executable
        self._tail: collections.deque[str] = collections.deque(maxlen=stderr_lines)
        self._on_stderr = on_stderr
        self._stdout = bytearray()
        self._proc: subprocess.Popen[bytes] | None = None
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()
        self._ready_closed = threading.Event()
        self._ready_info: dict[str, Any] | None = None
        self._start_error: OSError | None = None
        self._timed_out = False
        self._watchdog: threading.Timer | None = None
        self._exited_at: float | None = None
        self._t0 = 0.0
        self._deadline = 0.0
        self._result: WorkerResult | None = None
        self._governed: Governed | None = None

    # -- lifecycle -------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The worker's process id, once started."""
        return self._proc.pid if self._proc else None

    @property
    def ready_unix_s(self) -> float | None:
        """When the worker reported ready (its own clock), if it has."""
        return None if self._ready_info is None else self._ready_info.get("unix_s")

    @property
    def stdout_text(self) -> str:
        """Everything the worker wrote on stdout so far (the result document, nothing else)."""
        return bytes(self._stdout).decode("utf-8", "replace")

    def start(self) -> None:
        """Start the process and send the spec. Never raises for a failed start.

        A failure to start (no interpreter, no fork) is kept and reported by
        :meth:`wait` as a ``crashed`` result.
        """
        env = dict(self.env)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + old if old else "")
        env[PARENT_PID_ENV] = str(os.getpid())
        # The event pipe: the barrier's ready event and the run's phases.
        ready_r, ready_w = os.pipe()
        env[READY_FD_ENV] = str(ready_w)
        pass_fds: tuple[int, ...] = (ready_w,)
        self._t0 = time.monotonic()
        self._deadline = self._t0 + self.timeout_s
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", "migperf.bench.worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                pass_fds=pass_fds,
                # Own session: a timeout kills the worker and anything it spawned.
                start_new_session=True,
            )
        except OSError as exc:
            self._start_error = exc
            for fd in (ready_r, ready_w):
                if fd is not None:
                    os.close(fd)
            self._ready_closed.set()
            return
        finally:
            if ready_w is not None and self._start_error is None:
                os.close(ready_w)
        proc = self._proc
        # An emulated slice's CPU share applies from the release (the measurement) on.
        self._governed = govern(proc.pid, self.env, armed=not self.spec.barrier)
        # The deadline holds whether or not anyone is waiting on this worker yet.
        self._watchdog = threading.Timer(self.timeout_s, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        waiter = threading.Thread(target=self._reap, daemon=True)
        waiter.start()
        self._spawn(self._read_stdout, proc.stdout)
        self._spawn(self._read_stderr, proc.stderr)
        self._spawn(self._read_ready, os.fdopen(ready_r, "rb"))
        try:
            proc.stdin.write((self.spec.to_line() + "\n").encode())
            proc.stdin.flush()
            if not self.spec.barrier:
                proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # died at once; wait() reports it

    def _spawn(self, target: Callable[[IO[bytes]], None], stream: IO[bytes]) -> None:
        t = threading.Thread(target=target, args=(stream,), daemon=True)
        t.start()
        self._threads.append(t)

    def _reap(self) -> None:
        assert self._proc is not None
        self._proc.wait()
        self._exited_at = time.monotonic()
        if self._governed is not None:
            self._governed.close()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _read_stdout(self, stream: IO[bytes]) -> None:
        for chunk in iter(lambda: stream.read(65536), b""):
            self._stdout.extend(chunk)
        stream.close()

    def _read_stderr(self, stream: IO[bytes]) -> None:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self._tail.append(line)
            if self._on_stderr is not None:
                self._on_stderr(line)
        stream.close()

    def _read_ready(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("event") == "ready":
                self._ready_info = event
                self._ready.set()
            if self._on_event is not None:
                with contextlib.suppress(Exception):  # a display never stops a run
                    self._on_event(event)
        stream.close()
        self._ready_closed.set()

    # -- barrier ---------------------------------------------------------

    def is_ready(self) -> bool:
        """Whether the worker has reported ready at the barrier."""
        return self._ready.is_set()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until the worker is ready at the barrier.

        Args:
            timeout_s: Longest wait; the worker's own deadline bounds it too.

        Returns:
            ``True`` when ready; ``False`` when it exited, closed its ready
            channel, or the wait timed out.

        Raises:
            UsageError: When the spec has no barrier.
        """
        if not self.spec.barrier:
            raise UsageError("wait_ready() needs a spec with barrier: true")
        deadline = self._deadline
        if timeout_s is not None:
            deadline = min(deadline, time.monotonic() + timeout_s)
        while not self._ready.is_set():
            if self._ready_closed.is_set() or self._proc is None or self._proc.poll() is not None:
                return self._ready.is_set()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._ready.wait(min(left, 0.05))
        return True

    def release(self) -> None:
        """Send ``go``: the worker starts measuring. Harmless if it already died."""
        if self._governed is not None:
            self._governed.arm()
        self._send_and_close(b"go\n")

    def abort(self) -> None:
        """Close stdin without ``go``: a worker at the barrier ends as ``aborted``."""
        self._send_and_close(b"")

    def _send_and_close(self, data: bytes) -> None:
        if self._proc is None or self._proc.stdin is None or self._proc.stdin.closed:
            return
        try:
            if data:
                self._proc.stdin.write(data)
                self._proc.stdin.flush()
            self._proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    # -- ending ------------------------------------------------------------

    def _expire(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._timed_out = True
            self.kill()

    def kill(self) -> None:
        """Kill the worker and its process group (SIGKILL)."""
        if self._proc is None or self._proc.poll() is not None:
            return
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            self._proc.kill()

    def wait(self) -> WorkerResult:
        """Wait for the worker (up to its deadline) and return its result.

        Never raises for a worker failure: past the deadline the worker is
        killed (``timeout``); without a result document it is ``crashed``.
        """
        if self._result is not None:
            return self._result
        if self._proc is None:
            exc = self._start_error
            self._result = WorkerResult.for_spec(
                self.spec,
                "crashed",
                error=ErrorInfo(
                    kind=type(exc).__name__ if exc else "NotStarted",
                    message=f"the worker did not start: {exc}"
                    if exc
                    else "the worker was never started",
                    hint=f"check the interpreter {self.python}",
                    phase="process",
                ),
                process=ProcessInfo(
                    pid=None, returncode=None, wall_duration_s=0.0, timeout_s=self.timeout_s
                ),
            )
            return self._result
        try:
            # The watchdog kills at the deadline; the grace covers a wedged watchdog thread.
            self._proc.wait(timeout=max(0.0, self._deadline - time.monotonic()) + 10.0)
        except subprocess.TimeoutExpired:
            self._expire()
            self._proc.wait()
        if self._watchdog is not None:
            self._watchdog.cancel()
        # The reaper thread stamps the exit; fall back to now if it has not run yet.
        for _ in range(100):
            if self._exited_at is not None:
                break
            time.sleep(0.01)
        wall = (self._exited_at or time.monotonic()) - self._t0
        timed_out = self._timed_out
        self._close_stdin()
        for t in self._threads:
            t.join(timeout=5.0)
        info = ProcessInfo(
            pid=self._proc.pid,
            returncode=self._proc.returncode,
            wall_duration_s=wall,
            timeout_s=self.timeout_s,
            timed_out=timed_out,
            stderr_tail=list(self._tail),
        )
        self._result = self._interpret(info)
        return self._result

    def _close_stdin(self) -> None:
        if self._proc is not None and self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()

    def _interpret(self, info: ProcessInfo) -> WorkerResult:
        doc = self._document()
        if doc is not None:
            update: dict[str, Any] = {"process": info, "simulated": self.spec.simulated}
            if info.timed_out:
                # The numbers were complete; only the exit hung (e.g. device teardown).
                update["warnings"] = [
                    *doc.warnings,
                    f"the worker wrote its result but did not exit within {self.timeout_s:g} s and was killed",
                ]
            # The parent owns `simulated`: it is a property of the slot, not of what the worker saw.
            return doc.model_copy(update=update)
        return unanswered(self.spec, info)

    def _document(self) -> WorkerResult | None:
        text = bytes(self._stdout).decode("utf-8", "replace").strip()
        if not text:
            return None
        for candidate in (text, text.splitlines()[-1]):
            try:
                return load_result(candidate)
            except MigperfError:
                continue
        return None


def run_worker(
    spec: BenchSpec,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 600.0,
    *,
    on_stderr: Callable[[str], None] | None = None,
    on_started: Callable[[int], None] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> WorkerResult:
    """Run one spec in a fresh worker process.

    A spec with ``barrier: true`` is released as soon as it is ready.

    Args:
        spec: What to run.
        env: The worker's environment (see :func:`migperf.bench.device.worker_env`).
        timeout_s: Wall-clock limit; the worker is killed past it.
        on_stderr: Called with each stderr line of the worker.
        on_started: Called with the worker's pid once it runs (e.g. to
            register it on a simulated GPU for telemetry).
        on_event: Called with each event the worker reports (its phases).

    Returns:
        The result; ``timeout`` and ``crashed`` are results, not exceptions.
        An interrupt kills the worker before it propagates, so the worker
        never outlives the call holding its device.
    """
    worker = WorkerProcess(spec, env, timeout_s=timeout_s, on_stderr=on_stderr, on_event=on_event)
    try:
        worker.start()
        if on_started is not None and worker.pid is not None:
            on_started(worker.pid)
        if spec.barrier:
            if worker.wait_ready():
                worker.release()
            else:
                worker.abort()
        return worker.wait()
    except BaseException:
        worker.kill()
        raise


@dataclass(frozen=True)
class GroupResult:
    """What a co-located group produced.

    Attributes:
        results: One result per job, in job order.
        released: Whether every worker was ready and all were released together.
        release_unix_s: When the parent released them (``None`` if it did not).
        release_spread_s: Time between the first and the last ``go`` written.
        workers: How each job's worker ran (``warm`` or ``fresh``), in job
            order; ``None`` when the caller did not say.
    """

    results: list[WorkerResult]
    released: bool
    release_unix_s: float | None
    release_spread_s: float | None
    workers: list[WorkerUse] | None = None


class WorkerGroup:
    """Co-located workers behind one barrier: start all, wait until all are ready, release all.

    Args:
        jobs: ``(spec, env)`` per worker; every spec is run with ``barrier: true``.
        timeout_s: Wall-clock limit of each worker.
    """

    def __init__(
        self,
        jobs: Sequence[tuple[BenchSpec, Mapping[str, str] | None]],
        *,
        timeout_s: float = 600.0,
    ) -> None:
        if not jobs:
            raise UsageError("a worker group needs at least one job")
        self.workers = [
            WorkerProcess(spec.model_copy(update={"barrier": True}), env, timeout_s=timeout_s)
            for spec, env in jobs
        ]
        self.release_unix_s: float | None = None
        self.release_spread_s: float | None = None

    def __enter__(self) -> WorkerGroup:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for w in self.workers:
            w.abort()
        if exc[0] is not None:
            for w in self.workers:
                w.kill()

    def start(self) -> None:
        """Start every worker (they build and warm up in parallel)."""
        for w in self.workers:
            w.start()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Wait until every worker is ready; ``False`` as soon as one cannot be."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for w in self.workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not w.wait_ready(left):
                return False
        return True

    def release(self) -> float:
        """Send ``go`` to every worker, back to back. Returns the release time (unix seconds)."""
        first = time.perf_counter()
        self.release_unix_s = time.time()
        for w in self.workers:
            w.release()
        self.release_spread_s = time.perf_counter() - first
        return self.release_unix_s

    def abort(self) -> None:
        """Abandon the barrier: every waiting worker ends as ``aborted``."""
        for w in self.workers:
            w.abort()

    def collect(self) -> list[WorkerResult]:
        """Wait for every worker and return the results in job order."""
        return [w.wait() for w in self.workers]

    def release_when_ready(
        self, ready_timeout_s: float | None = None
    ) -> tuple[list[WorkerResult], bool]:
        """After :meth:`start`: release all together once all are ready (else abort all), collect.

        Every worker is killed if this is interrupted, so none outlives its parent.

        Returns:
            The results in job order, and whether the group was released.
        """
        try:
            if self.wait_ready(ready_timeout_s):
                self.release()
                released = True
            else:
                self.abort()
                released = False
            return self.collect(), released
        except BaseException:
            for w in self.workers:
                w.kill()
            raise


def run_group(
    jobs: Sequence[tuple[BenchSpec, Mapping[str, str] | None]],
    *,
    timeout_s: float = 600.0,
    ready_timeout_s: float | None = None,
) -> GroupResult:
    """Run co-located workers whose measurement windows start together.

    Args:
        jobs: ``(spec, env)`` per worker.
        timeout_s: Wall-clock limit of each worker.
        ready_timeout_s: Longest wait for all to be ready (default: their timeout).

    Returns:
        Every worker's result; when one failed before the barrier, the others
        are ``aborted`` and ``released`` is ``False``.

    Raises:
        UsageError: When ``jobs`` is empty.
    """
    group = WorkerGroup(jobs, timeout_s=timeout_s)
    try:
        group.start()
    except BaseException:
        for w in group.workers:
            w.kill()
        raise
    results, released = group.release_when_ready(ready_timeout_s)
    return GroupResult(
        results=results,
        released=released,
        release_unix_s=group.release_unix_s,
        release_spread_s=group.release_spread_s,
    )
