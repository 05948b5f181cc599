"""A process that has imported torch (and the sweep's models) once, and forks warm workers.

A worker's fixed cost is mostly imports: ``import torch`` takes about a
second, transformers and a model class two more. A sweep over several layouts
needs a new worker per MIG device (a process keeps its CUDA context, and so
its device, for life; a live context blocks destroying the instance), so
every layout would pay the imports again. The zygote pays them once: it
imports torch, migperf's worker and the workload modules the sweep uses, and
never touches a device or runs a parallel region; a worker is then a
``fork()`` of it (tens of milliseconds), which binds its device when it first
uses it: ``CUDA_VISIBLE_DEVICES`` is read at CUDA's initialisation, which
happens in the worker, not here (the same reason ``multiprocessing``'s
forkserver may preload torch).

Protocol (a ``SOCK_SEQPACKET`` socket pair, the zygote's end named by
``MIGPERF_ZYGOTE_FD``): the parent sends the worker's environment as JSON
with four descriptors (its stdin, stdout, stderr and event pipe); the zygote
forks and answers ``{"spawned": pid}``; when a worker exits it sends
``{"exit": pid, "returncode": rc}``. End of input (the parent closed the
socket or died) ends the zygote; it dies with its parent
(``PR_SET_PDEATHSIG``), and every worker dies with it the same way.

After the imports the zygote freezes its objects
(:func:`~migperf.bench.worker_kit.freeze_imports`, as the CPython
documentation advises before ``fork()``): a worker's collections then pass
over what it made itself, not the ~400k objects torch and transformers left
(0.3-0.4 s a full collection on a busy core).

Variables read at import time (``OMP_WAIT_POLICY``...) are the zygote's: a
worker whose environment differs in anything but :data:`LATE_BOUND` is not
forked from it (see :meth:`Zygote.can_fork`). ``OMP_NUM_THREADS`` is applied
in the worker with ``torch.set_num_threads``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import migperf
from migperf.errors import MigperfError

__all__ = ["LATE_BOUND", "ZYGOTE_FD_ENV", "Forked", "Zygote", "main"]

#: Environment variable naming the zygote's end of the socket pair.
ZYGOTE_FD_ENV = "MIGPERF_ZYGOTE_FD"

#: Variables a forked worker may set differently from its zygote: read after the fork.
LATE_BOUND = frozenset(
    {
        "CUDA_VISIBLE_DEVICES",
        "MIGPERF_EMULATION",
        "MIGPERF_PARENT_PID",
        "MIGPERF_READY_FD",
        "OMP_NUM_THREADS",
        ZYGOTE_FD_ENV,
    }
)

_PACKAGE_ROOT = str(Path(migperf.__file__).resolve().parent.parent)
_MAX_MESSAGE = 1 << 20


def _preload(workloads: Sequence[str]) -> None:
    """Import what the workers will (torch, the worker, each workload), then freeze it all."""
    from migperf.bench.worker_kit import freeze_imports, preload_workload

    for module in (
        "torch",
        "migperf.bench.worker",
        "migperf.bench.harness",
        "migperf.bench.stats",
        "migperf.bench.environment",
    ):
        importlib.import_module(module)
    for name in workloads:
        preload_workload(name)
    freeze_imports()


def _worker_child(env: dict[str, str], fds: list[int], sock: socket.socket) -> None:
    """In the forked child: become a warm worker on the given pipes. Never returns."""
    code = 1
    try:
        os.setsid()  # its own process group: a timeout kills it and what it spawned
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        sock.close()
        stdin_fd, stdout_fd, stderr_fd, event_fd = fds
        for src, dst in ((stdin_fd, 0), (stdout_fd, 1), (stderr_fd, 2)):
            os.dup2(src, dst)
            os.close(src)
        env = dict(env)
        env["MIGPERF_READY_FD"] = str(event_fd)
        env["MIGPERF_PARENT_PID"] = str(os.getppid())  # dies with the zygote
        os.environ.clear()
        os.environ.update(env)
        sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
        sys.stderr = io.TextIOWrapper(
            io.FileIO(2, "w", closefd=False), encoding="utf-8", line_buffering=True
        )
        threads = env.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            import torch

            torch.set_num_threads(int(threads))
        from migperf.bench.worker import main as worker_main

        code = worker_main(["--serve"])
    except BaseException:  # noqa: BLE001 - the child must never return into the zygote
        with contextlib.suppress(Exception):
            import traceback

            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """The zygote: preload, then fork a worker per request until end of input."""
    from migperf.bench.worker import PARENT_PID_ENV

    parent = os.environ.get(PARENT_PID_ENV)
    if parent and sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != int(parent):
            return 1
    sock = socket.socket(fileno=int(os.environ[ZYGOTE_FD_ENV]))
    _preload(argv if argv is not None else sys.argv[1:])
    try:
        sock.send(json.dumps({"loaded": os.getpid()}).encode())
    except OSError:
        return 0  # the parent closed before the imports were done
    while True:
        _reap(sock)
        ready, _, _ = select.select([sock], [], [], 0.05)
        if not ready:
            continue
        try:
            msg, fds, _, _ = socket.recv_fds(sock, _MAX_MESSAGE, 4)
        except OSError:
            return 0
        if not msg:
            return 0  # the parent is gone; the workers follow through their death signal
        env = json.loads(msg)
        pid = os.fork()
        if pid == 0:
            _worker_child(env, list(fds), sock)
        for fd in fds:
            os.close(fd)
        sock.send(json.dumps({"spawned": pid}).encode())


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        with contextlib.suppress(OSError):
            sock.send(
                json.dumps({"exit": pid, "returncode": os.waitstatus_to_exitcode(status)}).encode()
            )


class Forked:
    """A worker forked by a :class:`Zygote`: its pid and the parent's ends of its pipes."""

    def __init__(self, zygote: Zygote, pid: int, stdin: int, stdout: int, stderr: int, events: int):
        self.zygote = zygote
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.events = events

    def returncode(self) -> int | None:
        """The exit status once it exited (negative: killed by that signal), else ``None``."""
        return self.zygote.returncode(self.pid)

    def wait(self, timeout_s: float | None) -> int | None:
        """Wait for its exit; the exit status, or ``None`` when still running after ``timeout_s``."""
        return self.zygote.wait_exit(self.pid, timeout_s)


class Zygote:
    """The parent's handle on a zygote process.

    Args:
        env: The zygote's environment; workers forked from it may differ only
            in :data:`LATE_BOUND` variables.
        workloads: Workload names to preload.
        python: Interpreter (this one by default).

    Raises:
        MigperfError: When the process cannot be started.
    """

    def __init__(
        self, env: Mapping[str, str], workloads: Sequence[str] = (), python: str | None = None
    ) -> None:
        from migperf.bench.worker import PARENT_PID_ENV

        self.env = dict(env)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        full = dict(env)
        old = full.get("PYTHONPATH")
        full["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + old if old else "")
        full[PARENT_PID_ENV] = str(os.getpid())
        full[ZYGOTE_FD_ENV] = str(theirs.fileno())
        try:
            self.proc = subprocess.Popen(
                [python or sys.executable, "-m", "migperf.bench.zygote", *workloads],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=full,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise MigperfError(f"the worker zygote did not start: {exc}") from exc
        finally:
            theirs.close()
        self._sock = ours
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: list[dict[str, object]] = []
        self._exits: dict[int, int] = {}
        self._closed = False
        self._reader = threading.Thread(target=self._read, name="migperf-zygote", daemon=True)
        self._reader.start()

    def can_fork(self, env: Mapping[str, str]) -> bool:
        """Whether a worker with ``env`` may be forked from this zygote (same import-time variables)."""
        if self._closed or self.proc.poll() is not None:
            return False
        keys = (set(env) | set(self.env)) - LATE_BOUND
        return all(env.get(k) == self.env.get(k) for k in keys)

    def spawn(self, env: Mapping[str, str], timeout_s: float = 60.0) -> Forked:
        """Fork a warm worker with ``env`` (the zygote's, apart from :data:`LATE_BOUND`).

        Raises:
            MigperfError: When the zygote does not answer (it died, or is still importing past ``timeout_s``).
        """
        pipes = [os.pipe() for _ in range(4)]  # stdin, stdout, stderr, events
        theirs = [pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]]
        ours = [pipes[0][1], pipes[1][0], pipes[2][0], pipes[3][0]]
        try:
            with self._lock:
                with self._cond:
                    self._replies.clear()
                try:
                    socket.send_fds(self._sock, [json.dumps(dict(env)).encode()], theirs)
                except OSError as exc:
                    raise MigperfError(f"the worker zygote is gone: {exc}") from exc
                with self._cond:
                    got = self._cond.wait_for(
                        lambda: bool(self._replies) or self._closed, timeout=timeout_s
                    )
                    if not got or not self._replies:
                        raise MigperfError("the worker zygote did not fork a worker")
                    reply = self._replies.pop(0)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        pid = int(reply["spawned"])  # type: ignore[call-overload]
        return Forked(self, pid, *ours)

    def _read(self) -> None:
        while True:
            try:
                msg = self._sock.recv(_MAX_MESSAGE)
            except OSError:
                msg = b""
            if not msg:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            with contextlib.suppress(ValueError):
                doc = json.loads(msg)
                with self._cond:
                    if "exit" in doc:
                        self._exits[int(doc["exit"])] = int(doc["returncode"])
                    elif "spawned" in doc:
                        self._replies.append(doc)
                    self._cond.notify_all()

    def returncode(self, pid: int) -> int | None:
        """A forked worker's exit status, once the zygote reaped it."""
        with self._cond:
            return self._exits.get(pid)

    def wait_exit(self, pid: int, timeout_s: float | None) -> int | None:
        """Wait until a forked worker exited; its status, or ``None`` on timeout.

        Without the zygote (it died) a worker that is gone counts as killed.
        """
        with self._cond:
            self._cond.wait_for(
                lambda: pid in self._exits or (self._closed and not _alive(pid)),
                timeout=timeout_s,
            )
            if pid in self._exits:
                return self._exits[pid]
            return -signal.SIGKILL if self._closed and not _alive(pid) else None

    def close(self) -> None:
        """End the zygote (its idle workers have been retired by then)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=2.0)
        self._sock.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    # No interpreter teardown (a second with torch and transformers loaded):
    # the runner waits for the zygote's exit when it closes the pool.
    code = main()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)
