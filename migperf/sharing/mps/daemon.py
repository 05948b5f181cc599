"""The lifecycle of one private MPS control daemon for one device.

:class:`MpsDaemon` owns the whole life of one ``nvidia-cuda-mps-control``
daemon for one device (a GPU index or UUID, or one MIG device UUID; on MIG
each MIG device gets its own daemon):

1. **Start.** ``nvidia-cuda-mps-control -d`` runs with
   ``CUDA_VISIBLE_DEVICES=<device>`` and a pipe and log directory of its own
   (``CUDA_MPS_PIPE_DIRECTORY`` / ``CUDA_MPS_LOG_DIRECTORY`` in a fresh
   private directory), so it never meets a system-wide daemon in
   ``/tmp/nvidia-mps`` and needs no root. It must answer ``get_server_list``
   on its control channel right after it starts.
2. **Clients.** Their environment, the proof that they run under MPS and
   their stop are :mod:`migperf.sharing.mps.clients`' job; the daemon offers
   them as :meth:`MpsDaemon.client_env`, :meth:`MpsDaemon.verify` and
   :meth:`MpsDaemon.stop_clients`.
3. **Stop.** Clients are stopped first, then the daemon gets ``quit``; one
   that does not exit in time is killed by its pid, and any server it leaves
   is killed too. Used as a context manager, this happens in ``finally``:
   nothing is left running, whatever the body did.

Everything asked and answered is kept in :class:`MpsInfo` for the stored result.

The control program and its protocol are in :mod:`migperf.sharing.mps.control`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from migperf.errors import MigperfError, UsageError
from migperf.procs import pid_alive
from migperf.sharing import sim_mps_control
from migperf.sharing.mps.clients import MpsClients
from migperf.sharing.mps.control import (
    ControlChannel,
    daemon_env,
    device_text,
    format_thread_percentage,
    last_line,
    launch_daemon,
    parse_client_list,
    parse_server_list,
    resolve_control,
)
from migperf.sharing.mps.process import find_daemon, owns_pipe, read_pid_file, wait_gone
from migperf.sharing.mps.records import ClientExit, MpsInfo

__all__ = ["MpsDaemon"]

# A unix socket path must fit sun_path (108 bytes); MPS puts more sockets next to `control`.
_MAX_PIPE_DIR = 80

_active_lock = threading.Lock()
_active: dict[str, str] = {}  # device -> pipe directory of this process's daemon on it


class MpsDaemon:
    """The lifecycle of one private MPS control daemon for one device.

    Use as a context manager: ``start()`` on entry, ``stop()`` (clients, then
    ``quit``, then kill if needed) on exit, also when the body raises::

        with MpsDaemon("MIG-...", control=simulated_control()) as mps:
            env = mps.client_env(base_env, thread_percentage=50)
            proc = subprocess.Popen(cmd, env=env)
            mps.track(proc)
            mps.verify(expect_clients=[proc.pid])
        mps.info.to_dict()

    Args:
        device: A GPU index, ``GPU-<uuid>`` or ``MIG-<uuid>``. Prefer UUIDs:
            with an index the daemon renumbers its device as 0, so clients
            must not keep ``CUDA_VISIBLE_DEVICES`` (see :meth:`client_env`).
        control: The control program (see :func:`resolve_control`).
        base_dir: Where to create the private directory holding the pipe
            directory (default: the system temp directory; the path must stay
            short, as unix socket paths are limited). Removed on stop.
        log_dir: Where the daemon logs (kept); default: inside the private
            directory, removed on stop.
        default_thread_percentage: Sent as
            ``set_default_active_thread_percentage`` right after start.
        env: Environment the daemon starts from (``os.environ`` when None);
            ``CUDA_MPS_*`` variables in it are dropped.
        start_timeout_s: Longest wait for the daemon to come up.
        command_timeout_s: Longest wait for one control command's answer.
        quit_timeout_s: Longest wait for the daemon to exit after ``quit``.
        client_stop_timeout_s: Longest wait for clients to exit after SIGTERM.

    Raises:
        UsageError: When ``device`` or ``default_thread_percentage`` is invalid.
    """

    def __init__(
        self,
        device: str | int,
        *,
        control: str | Sequence[str] | None = None,
        base_dir: str | Path | None = None,
        log_dir: str | Path | None = None,
        default_thread_percentage: float | None = None,
        env: Mapping[str, str] | None = None,
        start_timeout_s: float = 10.0,
        command_timeout_s: float = 10.0,
        quit_timeout_s: float = 10.0,
        client_stop_timeout_s: float = 5.0,
    ) -> None:
        self.device = device_text(device)
        if default_thread_percentage is not None:
            format_thread_percentage(default_thread_percentage)
        self.default_thread_percentage = default_thread_percentage
        self._control = control
        self._base_dir = None if base_dir is None else Path(base_dir)
        self._log_dir_arg = None if log_dir is None else Path(log_dir)
        self._base_env = {
            k: v
            for k, v in (os.environ if env is None else env).items()
            if not k.startswith("CUDA_MPS_")
        }
        self.start_timeout_s = start_timeout_s
        self.command_timeout_s = command_timeout_s
        self.quit_timeout_s = quit_timeout_s
        self.client_stop_timeout_s = client_stop_timeout_s
        self._argv: list[str] = []
        self._own_dir: Path | None = None
        self._pipe_dir: Path | None = None
        self._log_dir: Path | None = None
        self._claimed = False
        self._started = False
        self._stopped = False
        self._channel: ControlChannel | None = None
        self._clients = MpsClients(self)
        self.info = MpsInfo(device=self.device, control=[], pipe_dir="", log_dir="")

    # -- properties ------------------------------------------------------

    @property
    def pipe_dir(self) -> Path:
        """``CUDA_MPS_PIPE_DIRECTORY`` of this daemon (after :meth:`start`)."""
        if self._pipe_dir is None:
            raise UsageError(f"the MPS daemon for {self.device} has not been started")
        return self._pipe_dir

    @property
    def log_dir(self) -> Path:
        """``CUDA_MPS_LOG_DIRECTORY`` of this daemon (after :meth:`start`)."""
        if self._log_dir is None:
            raise UsageError(f"the MPS daemon for {self.device} has not been started")
        return self._log_dir

    @property
    def pid(self) -> int | None:
        """The control daemon's pid, once known."""
        return self.info.daemon_pid

    @property
    def running(self) -> bool:
        """Whether the daemon was started, is not stopped, and its process lives."""
        pid = self.info.daemon_pid
        return self._started and not self._stopped and (pid is None or pid_alive(pid))

    # -- start -----------------------------------------------------------

    def __enter__(self) -> MpsDaemon:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> MpsInfo:
        """Start the daemon and check that it answers on its control channel.

        Returns:
            :attr:`info`.

        Raises:
            MigperfError: When the control program is missing, exits with an
                error, never creates its pipe, dies, or does not answer; nothing
                is left running then.
            UsageError: When this daemon was started before, or another daemon
                of this process serves the same device.
        """
        if self._started or self._stopped or self._claimed:
            raise UsageError(f"the MPS daemon for {self.device} was already started")
        self._claim()
        try:
            self._start()
        except BaseException:
            self._force_down()
            self._cleanup()
            raise
        self._started = True
        return self.info

    def _claim(self) -> None:
        with _active_lock:
            other = _active.get(self.device)
            if other is not None:
                raise UsageError(
                    f"an MPS daemon for {self.device} already runs in this process (pipe {other})",
                    hint="use one daemon per device (on MIG, one per MIG device UUID); "
                    "stop the other one first",
                )
            _active[self.device] = "(starting)"
            self._claimed = True

    def _start(self) -> None:
        self._argv = resolve_control(self._control, self._base_env)
        self._own_dir = Path(tempfile.mkdtemp(prefix="migperf-mps-", dir=self._base_dir))
        pipe = self._own_dir / "pipe"
        if len(str(pipe)) > _MAX_PIPE_DIR:
            raise UsageError(
                f"the MPS pipe directory {pipe} is too long ({len(str(pipe))} characters; "
                f"MPS needs unix socket paths under {_MAX_PIPE_DIR})",
                hint="pass a shorter base_dir (or set TMPDIR to a short path such as /tmp)",
            )
        pipe.mkdir(mode=0o700)
        log = self._log_dir_arg or self._own_dir / "log"
        log.mkdir(parents=True, exist_ok=True)
        self._pipe_dir, self._log_dir = pipe, log
        with _active_lock:
            _active[self.device] = str(pipe)
        self.info = MpsInfo(
            device=self.device,
            control=list(self._argv),
            pipe_dir=str(pipe),
            log_dir=str(log),
            default_thread_percentage=self.default_thread_percentage,
            started_unix=time.time(),
        )
        env = daemon_env(self._base_env, self.device, self._argv, pipe, log)
        self._channel = ControlChannel(
            self._argv, env, device=self.device, pipe_dir=pipe, log_dir=log, info=self.info
        )
        deadline = time.monotonic() + self.start_timeout_s
        launch_daemon(
            self._argv, env, device=self.device, deadline=deadline, timeout_s=self.start_timeout_s
        )
        self._await_pipe(deadline)
        try:
            self.query("get_server_list")
        except MigperfError as exc:
            raise self._start_error(exc.message) from exc
        if self.default_thread_percentage is not None:
            pct = format_thread_percentage(self.default_thread_percentage)
            self.query(f"set_default_active_thread_percentage {pct}")

    def _await_pipe(self, deadline: float) -> None:
        control = self.pipe_dir / sim_mps_control.CONTROL_SOCKET
        pid_file = self.pipe_dir / sim_mps_control.PID_FILE
        grace: float | None = None  # a pid file may follow the pipe a moment later
        while True:
            pid = read_pid_file(pid_file, self.pipe_dir)
            if pid is not None:
                self.info.daemon_pid = pid
            now = time.monotonic()
            if control.exists():
                grace = now + 0.5 if grace is None else grace
                if pid is not None or now >= min(grace, deadline):
                    break
            elif now >= deadline:
                raise self._start_error(
                    f"its control pipe {control} did not appear within {self.start_timeout_s:g} s"
                )
            time.sleep(0.02)
        if self.info.daemon_pid is None:
            # Drivers that write no pid file: find the daemon by its private pipe directory.
            self.info.daemon_pid = find_daemon(self._argv, self.pipe_dir)
        pid = self.info.daemon_pid
        if pid is not None and not pid_alive(pid):
            raise self._start_error(f"the daemon (pid {pid}) exited right after starting")

    def _owned(self, pid: int) -> bool:
        return owns_pipe(pid, self.pipe_dir)

    def _start_error(self, why: str) -> MigperfError:
        pid = self.info.daemon_pid
        if pid is not None and not pid_alive(pid) and "exited" not in why:
            why += f"; the daemon (pid {pid}) is no longer running"
        last = last_line(self._control_log())
        return MigperfError(
            f"the MPS control daemon for {self.device} did not start: {why}"
            + (f" (last log line: {last})" if last else ""),
            hint="check that `nvidia-cuda-mps-control -d` works for this user on this device "
            "(with CUDA_MPS_PIPE_DIRECTORY and CUDA_MPS_LOG_DIRECTORY set to a private "
            "directory) and read its control.log; a GPU in PROHIBITED compute mode or a "
            "pre-Volta GPU cannot run MPS",
        )

    def _control_log(self) -> str:
        if self._log_dir is None:
            return ""
        try:
            return (self._log_dir / "control.log").read_text(errors="replace")
        except OSError:
            return ""

    # -- control channel -------------------------------------------------

    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        """Send one command to the daemon through the control program's stdin.

        ``echo <command> | nvidia-cuda-mps-control`` with this daemon's pipe
        directory. The command and its answer are recorded in :attr:`info`.

        Args:
            command: E.g. ``get_server_list``, ``get_client_list 1234``, ``quit``.
            timeout_s: Longest wait (default: ``command_timeout_s``).

        Returns:
            What the control program printed.

        Raises:
            MigperfError: When the daemon cannot be reached or does not answer in time.
            UsageError: When the daemon was never started.
        """
        if self._channel is None:
            raise UsageError(f"the MPS daemon for {self.device} has not been started")
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        return self._channel.query(command, timeout_s=timeout)

    def server_pids(self) -> list[int]:
        """The MPS servers of this daemon (``get_server_list``).

        Raises:
            MigperfError: When the daemon does not answer.
        """
        return parse_server_list(self.query("get_server_list"))

    def client_pids(self, server_pid: int) -> list[int] | None:
        """The clients of one server (``get_client_list <pid>``); None if the daemon cannot say.

        Raises:
            MigperfError: When the daemon does not answer.
        """
        return parse_client_list(self.query(f"get_client_list {server_pid}"))

    # -- clients ---------------------------------------------------------

    def client_env(
        self,
        base: Mapping[str, str] | None = None,
        *,
        thread_percentage: float | None = None,
        pinned_mem_limit_mib: int | None = None,
        pin_device: bool = True,
    ) -> dict[str, str]:
        """The environment of one MPS client of this daemon.

        Gives the client this daemon's pipe and log directory and its limits:
        ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (1-100; it "will only further
        constrain" a default set on the daemon) and
        ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` in the ``0=<N>M`` form (the client
        sees exactly one device, ordinal 0). Both are recorded in :attr:`info`.

        Args:
            base: The client's environment without MPS (e.g. a worker's
                :meth:`~migperf.bench.device.DeviceSelection.env`); ``os.environ``
                when None. Its ``CUDA_MPS_*`` variables are replaced.
            thread_percentage: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (1-100).
            pinned_mem_limit_mib: ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` as ``0=<N>M``.
            pin_device: Set ``CUDA_VISIBLE_DEVICES`` for MPS: the device's UUID,
                or, for a GPU index, no value at all (the MPS server shows its
                one device as 0, so an index other than 0 would be an error).
                False leaves ``base``'s value alone (a simulated GPU slot keeps
                its CPU-only setting).

        Returns:
            A new dict.

        Raises:
            UsageError: When a limit is out of range or the daemon was not started.
        """
        return self._clients.env(
            base,
            thread_percentage=thread_percentage,
            pinned_mem_limit_mib=pinned_mem_limit_mib,
            pin_device=pin_device,
        )

    def track(self, *clients: Any) -> None:
        """Have :meth:`stop` stop these clients (Popen objects, objects with ``pid``, or pids)."""
        self._clients.track(*clients)

    def verify(
        self, expect_clients: Collection[int] | int | None = None, *, timeout_s: float = 10.0
    ) -> MpsInfo:
        """Check that MPS is really on: a server runs and lists the clients.

        Call it once the clients have initialised CUDA (e.g. when benchmark
        workers report ready). CUDA runs a client that cannot reach the daemon
        without MPS and says nothing, so this is the only proof.

        Args:
            expect_clients: The client pids that must be listed, or how many
                clients must be; None only requires a server.
            timeout_s: How long clients may take to connect.

        Returns:
            :attr:`info`, with the server and client pids filled in.

        Raises:
            MigperfError: When the daemon died, no server runs, or expected
                clients are not listed within ``timeout_s``.
        """
        return self._clients.verify(expect_clients, timeout_s=timeout_s)

    def stop_clients(
        self, clients: Iterable[Any] = (), *, timeout_s: float | None = None
    ) -> list[ClientExit]:
        """Stop MPS clients: ``terminate_client`` through the daemon, SIGTERM, wait, SIGKILL.

        A client that had already ended with a non-zero status is reported as
        ``crashed`` (also in :attr:`info` ``warnings``).

        Args:
            clients: ``subprocess.Popen`` objects (their exit status is
                reported), objects with a ``pid`` attribute, or pids.
            timeout_s: How long they may take after SIGTERM (default:
                ``client_stop_timeout_s``).

        Returns:
            How each ended, in order (clients without a pid are skipped).
        """
        timeout = self.client_stop_timeout_s if timeout_s is None else timeout_s
        return self._clients.stop(clients, timeout_s=timeout)

    # -- stop ------------------------------------------------------------

    def stop(self, clients: Iterable[Any] = ()) -> MpsInfo:
        """Stop the clients (tracked and given), then the daemon. Never raises for a failure.

        The daemon gets ``quit``; if it has not exited after
        ``quit_timeout_s`` it is killed by its pid (SIGTERM, then SIGKILL),
        and so are servers it leaves behind. What happened is in
        :attr:`info` (``stopped``, ``clients``, ``warnings``). Safe to call twice.

        Returns:
            :attr:`info`.
        """
        if self._stopped or not self._started:
            return self.info
        try:
            everything = [*self._clients.tracked, *clients]
            if everything:
                self.stop_clients(everything)
        finally:
            try:
                self._quit()
            finally:
                self._cleanup()
        return self.info

    def _quit(self) -> None:
        pid = self.info.daemon_pid
        if pid is None or pid_alive(pid):
            try:
                self.query("quit")
            except MigperfError as exc:
                self.info.warnings.append(f"quit failed: {exc.message}")
        if pid is None:
            self.info.stopped = "unknown"
            self.info.warnings.append(
                "the MPS control daemon's pid was never learnt; it was asked to quit but "
                "could not be checked"
            )
        elif wait_gone(pid, self.quit_timeout_s):
            self.info.stopped = "quit"
        else:
            self.info.warnings.append(
                f"the MPS control daemon (pid {pid}) did not exit within "
                f"{self.quit_timeout_s:g} s of quit and was killed"
            )
            self._force_down()
            self.info.stopped = "killed"
        self._kill_leftover_servers()
        self.info.stopped_unix = time.time()

    def _force_down(self) -> None:
        """Kill the daemon by pid (SIGTERM, then SIGKILL) and whatever servers it left."""
        pid = self.info.daemon_pid
        if pid is None and self._pipe_dir is not None and self._argv:
            pid = find_daemon(self._argv, self.pipe_dir)
            self.info.daemon_pid = pid
        if pid is not None and pid_alive(pid) and self._owned(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not wait_gone(pid, 1.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                wait_gone(pid, 5.0)
        self._kill_leftover_servers()

    def _kill_leftover_servers(self) -> None:
        if self._pipe_dir is None:
            return
        for spid in self.info.server_pids:
            if pid_alive(spid) and self._owned(spid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(spid, signal.SIGKILL)
                wait_gone(spid, 5.0)
                self.info.warnings.append(f"MPS server {spid} outlived its daemon and was killed")

    def _cleanup(self) -> None:
        self._stopped = True
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
        if self._claimed:
            with _active_lock:
                _active.pop(self.device, None)
            self._claimed = False
