"""One private MPS control daemon per device, its clients' environment, and proof that MPS is on.

:class:`MpsDaemon` owns the whole life of one ``nvidia-cuda-mps-control``
daemon for one device (a GPU index or UUID, or one MIG device UUID; on MIG
each MIG device gets its own daemon):

1. **Start.** ``nvidia-cuda-mps-control -d`` runs with
   ``CUDA_VISIBLE_DEVICES=<device>`` and a pipe and log directory of its own
   (``CUDA_MPS_PIPE_DIRECTORY`` / ``CUDA_MPS_LOG_DIRECTORY`` in a fresh
   private directory), so it never meets a system-wide daemon in
   ``/tmp/nvidia-mps`` and needs no root.
2. **Verify.** CUDA silently runs a client *without* MPS when it cannot
   reach the daemon, so nothing is taken on trust: the daemon must answer
   ``get_server_list`` on its control channel right after it starts, and once
   clients run, :meth:`MpsDaemon.verify` requires a server to exist and (via
   ``get_client_list <server pid>``) to list them.
3. **Clients.** :meth:`MpsDaemon.client_env` gives each client the daemon's
   pipe directory and its limits: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``
   (1-100; it "will only further constrain" a default set on the daemon) and
   ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` in the ``0=<N>M`` form (the client
   sees exactly one device, ordinal 0).
4. **Stop.** Clients are stopped first (``terminate_client`` through the
   daemon, as NVIDIA advises before signalling a client that may have GPU
   work in flight, then SIGTERM, a wait, and SIGKILL), then the daemon gets
   ``quit``; one that does not exit in time is killed by its pid, and any
   server it leaves is killed too. Used as a context manager, this happens in
   ``finally``: nothing is left running, whatever the body did.

Everything asked and answered is kept in :class:`MpsInfo` (daemon pid, pipe
directory, server pid, clients, thread percentages, every control command and
its answer) for the stored result.

The control program is ``control=`` (a path, a command line, or an argv
list), else ``MIGPERF_MPS_CONTROL``, else ``nvidia-cuda-mps-control`` on
``PATH``. :func:`simulated_control` names the simulator
(:mod:`migperf.sharing.sim_mps_control`) that stands in on machines without a
GPU; it speaks the same protocol, so this module has one code path.

Commands that do the same by hand::

    export CUDA_VISIBLE_DEVICES=MIG-...
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/x/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/x/log
    nvidia-cuda-mps-control -d
    echo get_server_list | nvidia-cuda-mps-control
    echo quit | nvidia-cuda-mps-control
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from migperf.errors import MigperfError, UsageError
from migperf.procs import pid_alive
from migperf.sharing import sim_mps_control
from migperf.sharing.sim_mps_control import register_client, register_client_from_env

__all__ = [
    "CONTROL_ENV",
    "DEFAULT_CONTROL",
    "ClientExit",
    "MpsDaemon",
    "MpsInfo",
    "format_pinned_mem_limit",
    "format_thread_percentage",
    "mps_daemons",
    "mps_for_run",
    "register_client",
    "register_client_from_env",
    "resolve_control",
    "simulated_control",
]

CONTROL_ENV = "MIGPERF_MPS_CONTROL"
DEFAULT_CONTROL = "nvidia-cuda-mps-control"
PIPE_ENV = "CUDA_MPS_PIPE_DIRECTORY"
LOG_ENV = "CUDA_MPS_LOG_DIRECTORY"
THREAD_ENV = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"
MEM_ENV = "CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# R470+ drivers name MIG devices MIG-<uuid>; older ones MIG-GPU-<uuid>/<gi>/<ci>.
_DEVICE_RE = re.compile(rf"^(?:MIG-(?:{_UUID}|GPU-{_UUID}/\d+/\d+)|GPU-{_UUID})$")
# A unix socket path must fit sun_path (108 bytes); MPS puts more sockets next to `control`.
_MAX_PIPE_DIR = 80
_MAX_COMMANDS = 200
_NOT_FOUND = "cannot find mps control daemon"

_active_lock = threading.Lock()
_active: dict[str, str] = {}  # device -> pipe directory of this process's daemon on it


def simulated_control() -> list[str]:
    """The argv of the simulated control program (for simulated GPUs)."""
    return sim_mps_control.control_argv()


def resolve_control(
    control: str | Sequence[str] | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    """The control program's argv, with its executable found.

    Args:
        control: A path or command line (split like a shell would), or an argv
            list; None: ``MIGPERF_MPS_CONTROL``, else ``nvidia-cuda-mps-control``.
        env: Environment whose ``PATH`` and ``MIGPERF_MPS_CONTROL`` apply
            (``os.environ`` when None).

    Raises:
        MigperfError: When the executable does not exist or is not executable.
        UsageError: When ``control`` is empty.
    """
    env = os.environ if env is None else env
    source = "control="
    if control is None:
        control = env.get(CONTROL_ENV) or DEFAULT_CONTROL
        source = CONTROL_ENV if env.get(CONTROL_ENV) else "PATH"
    argv = shlex.split(control) if isinstance(control, str) else [str(a) for a in control]
    if not argv:
        raise UsageError(
            f"the MPS control program given by {source} is empty",
            hint=f"give a path such as /usr/bin/{DEFAULT_CONTROL}",
        )
    exe = argv[0]
    found = shutil.which(exe, path=env.get("PATH", os.defpath))
    if found is None:
        where = "does not exist or is not executable" if os.sep in exe else "is not on PATH"
        raise MigperfError(
            f"cannot start MPS: the control program {exe} {where}",
            hint=f"{DEFAULT_CONTROL} ships with the NVIDIA driver (e.g. the "
            "nvidia-compute-utils package); install it or set "
            f"{CONTROL_ENV}=/path/to/{DEFAULT_CONTROL}. On a simulated GPU use "
            f"`{CONTROL_ENV}='python -m {sim_mps_control.MODULE}'`",
        )
    return [found, *argv[1:]]


def format_thread_percentage(value: float) -> str:
    """``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` for ``value`` (1 to 100).

    Raises:
        UsageError: When ``value`` is not a number from 1 to 100.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 100:
        raise UsageError(
            f"MPS thread_percentage {value!r} is not a number from 1 to 100",
            hint="give the share of the device's SMs a client may use, e.g. thread_percentage: 50",
        )
    return str(int(value)) if float(value).is_integer() else f"{float(value):g}"


def format_pinned_mem_limit(mib: int) -> str:
    """``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` for a limit of ``mib`` MiB on the client's device 0.

    The variable takes ``<ordinal>=<size>`` pairs (``0=4G,1=2G``); an MPS
    client here sees exactly one device, ordinal 0.

    Raises:
        UsageError: When ``mib`` is not a positive whole number.
    """
    if isinstance(mib, bool) or not isinstance(mib, int) or mib <= 0:
        raise UsageError(
            f"MPS pinned_mem_limit_mib {mib!r} is not a positive whole number of MiB",
            hint="give the device memory a client may allocate, e.g. pinned_mem_limit_mib: 4096",
        )
    return f"0={mib}M"


def _device_text(device: str | int) -> str:
    text = str(device).strip()
    if text.isdigit():
        return str(int(text))
    if _DEVICE_RE.match(text):
        return text
    raise UsageError(
        f"MPS device {text!r} is not a GPU index, GPU-<uuid> or MIG-<uuid>",
        hint="list GPU indices and MIG device UUIDs with `migperf gpus` or `nvidia-smi -L`",
    )


# ------------------------------------------------------------------ /proc


def _environ_has(pid: int, entry: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return entry.encode() in fh.read().split(b"\0")
    except OSError:
        return False


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# ---------------------------------------------------------------- records


@dataclass(frozen=True)
class ClientExit:
    """How one MPS client ended when the daemon stopped its clients.

    Attributes:
        pid: The client's process id.
        outcome: ``exited`` (status 0 before it was stopped), ``crashed``
            (non-zero status or a signal before it was stopped), ``terminated``
            (ended after SIGTERM), ``killed`` (needed SIGKILL), ``gone``
            (already ended, status unknown: only a pid was given).
        returncode: Its exit status (negative: the signal), when known.
    """

    pid: int
    outcome: str
    returncode: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclass
class MpsInfo:
    """What one MPS daemon was asked and answered, for the stored result.

    Filled in as the daemon lives; :meth:`to_dict` is the record to store.

    Attributes:
        device: The device the daemon serves (``CUDA_VISIBLE_DEVICES``).
        control: The control program's argv.
        pipe_dir: ``CUDA_MPS_PIPE_DIRECTORY``.
        log_dir: ``CUDA_MPS_LOG_DIRECTORY``.
        daemon_pid: The control daemon's pid.
        default_thread_percentage: Set on the daemon with
            ``set_default_active_thread_percentage`` (None: MPS's 100).
        server_pid: The MPS server the clients were verified on.
        server_pids: Every server ``get_server_list`` listed at verification.
        client_pids: The clients the servers listed at verification.
        client_count: ``len(client_pids)``.
        thread_percentages: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` of each client
            environment handed out, in order (None: not set).
        pinned_mem_limits: ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` of each, in order.
        verified: Whether the clients were seen under an MPS server.
        clients: How each stopped client ended (:class:`ClientExit` dicts).
        stopped: ``quit`` (the daemon obeyed), ``killed`` (killed by pid),
            ``unknown`` (its pid was never learnt), None while it runs.
        commands: Every control command: ``command``, ``answer``, ``rc`` (the
            first 200; repeated polls can make more).
        commands_dropped: How many commands were not kept.
        warnings: Things that went wrong but did not stop the run.
        started_unix: When the daemon was started.
        stopped_unix: When it was gone.
    """

    device: str
    control: list[str]
    pipe_dir: str
    log_dir: str
    daemon_pid: int | None = None
    default_thread_percentage: float | None = None
    server_pid: int | None = None
    server_pids: list[int] = field(default_factory=list)
    client_pids: list[int] = field(default_factory=list)
    client_count: int = 0
    thread_percentages: list[float | None] = field(default_factory=list)
    pinned_mem_limits: list[str | None] = field(default_factory=list)
    verified: bool = False
    clients: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None
    commands: list[dict[str, Any]] = field(default_factory=list)
    commands_dropped: int = 0
    warnings: list[str] = field(default_factory=list)
    started_unix: float | None = None
    stopped_unix: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------- daemon


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
        self.device = _device_text(device)
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
        self._tracked: list[Any] = []
        self._client_server: dict[int, int] = {}
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
        deadline = time.monotonic() + self.start_timeout_s
        self._launch(deadline)
        self._await_pipe(deadline)
        try:
            self.query("get_server_list")
        except MigperfError as exc:
            raise self._start_error(exc.message) from exc
        if self.default_thread_percentage is not None:
            pct = format_thread_percentage(self.default_thread_percentage)
            self.query(f"set_default_active_thread_percentage {pct}")

    def _daemon_env(self) -> dict[str, str]:
        env = dict(self._base_env)
        env["CUDA_VISIBLE_DEVICES"] = self.device
        env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        env[PIPE_ENV] = str(self.pipe_dir)
        env[LOG_ENV] = str(self.log_dir)
        if self._argv[1:3] == ["-m", sim_mps_control.MODULE]:
            root = str(Path(sim_mps_control.__file__).resolve().parent.parent.parent)
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = root + (os.pathsep + old if old else "")
        return env

    def _launch(self, deadline: float) -> None:
        cmd = " ".join([*self._argv, "-d"])
        with tempfile.TemporaryFile("w+") as out:
            try:
                proc = subprocess.Popen(
                    [*self._argv, "-d"],
                    stdin=subprocess.DEVNULL,
                    # A file, not a pipe: a daemon that keeps its parent's
                    # stdout open must not make us wait for it.
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=self._daemon_env(),
                    start_new_session=True,
                )
            except OSError as exc:
                raise MigperfError(
                    f"cannot start the MPS control daemon for {self.device}: `{cmd}` failed: {exc}",
                    hint=f"check the control program, or set {CONTROL_ENV}",
                ) from exc
            try:
                rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise MigperfError(
                    f"cannot start the MPS control daemon for {self.device}: `{cmd}` did not "
                    f"return within {self.start_timeout_s:g} s",
                    hint="`nvidia-cuda-mps-control -d` returns at once when it works; check "
                    "the driver installation (nvidia-smi) and dmesg",
                ) from None
            text = _read_all(out)
        if rc != 0:
            raise MigperfError(
                f"cannot start the MPS control daemon for {self.device}: `{cmd}` exited with "
                f"status {rc}" + (f": {_last_line(text)}" if text.strip() else ""),
                hint="see the message above; MPS needs a Volta or newer GPU with a working "
                "driver, and a device that no other MPS daemon of another user serves",
            )

    def _await_pipe(self, deadline: float) -> None:
        control = self.pipe_dir / sim_mps_control.CONTROL_SOCKET
        pid_file = self.pipe_dir / sim_mps_control.PID_FILE
        grace: float | None = None  # a pid file may follow the pipe a moment later
        while True:
            pid = self._read_pid_file(pid_file)
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
            self.info.daemon_pid = self._scan_for_daemon()
        pid = self.info.daemon_pid
        if pid is not None and not pid_alive(pid):
            raise self._start_error(f"the daemon (pid {pid}) exited right after starting")

    def _read_pid_file(self, path: Path) -> int | None:
        try:
            text = path.read_text().strip()
        except OSError:
            return None
        if not text.isdigit():
            return None
        pid = int(text)
        # Only a process that carries our private pipe directory is ours to signal.
        return pid if self._owned(pid) or not pid_alive(pid) else None

    def _owned(self, pid: int) -> bool:
        return _environ_has(pid, f"{PIPE_ENV}={self.pipe_dir}")

    def _scan_for_daemon(self) -> int | None:
        marker = os.path.basename(self._argv[-1]).encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            pid = int(entry)
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read()
            except OSError:
                continue
            if marker in cmdline and self._owned(pid) and pid_alive(pid):
                return pid
        return None

    def _start_error(self, why: str) -> MigperfError:
        pid = self.info.daemon_pid
        if pid is not None and not pid_alive(pid) and "exited" not in why:
            why += f"; the daemon (pid {pid}) is no longer running"
        last = _last_line(self._control_log())
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
        """
        timeout = self.command_timeout_s if timeout_s is None else timeout_s
        try:
            proc = subprocess.run(
                self._argv,
                input=command + "\n",
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._daemon_env(),
            )
        except subprocess.TimeoutExpired:
            self._record(command, None, None, f"no answer within {timeout:g} s")
            raise MigperfError(
                f"the MPS control daemon for {self.device} does not answer `{command}` "
                f"within {timeout:g} s",
                hint=f"its log is in {self.log_dir}; stop it with "
                f"`echo quit | CUDA_MPS_PIPE_DIRECTORY={self.pipe_dir} nvidia-cuda-mps-control`",
            ) from None
        except OSError as exc:
            self._record(command, None, None, str(exc))
            raise MigperfError(
                f"cannot run the MPS control program {self._argv[0]}: {exc}",
                hint=f"check the control program, or set {CONTROL_ENV}",
            ) from exc
        out, err = proc.stdout, proc.stderr.strip()
        self._record(command, out.strip(), proc.returncode, err or None)
        if proc.returncode != 0 or _NOT_FOUND in (out + err).lower():
            detail = _last_line(err) or _last_line(out) or f"exit status {proc.returncode}"
            raise MigperfError(
                f"the MPS control daemon for {self.device} did not take `{command}`: {detail}",
                hint=f"is the daemon still running? Its log is in {self.log_dir}",
            )
        return out

    def _record(self, command: str, answer: str | None, rc: int | None, error: str | None) -> None:
        if len(self.info.commands) >= _MAX_COMMANDS:
            self.info.commands_dropped += 1
            return
        entry: dict[str, Any] = {"command": command, "answer": answer, "rc": rc}
        if error:
            entry["error"] = error
        self.info.commands.append(entry)

    def server_pids(self) -> list[int]:
        """The MPS servers of this daemon (``get_server_list``).

        Raises:
            MigperfError: When the daemon does not answer.
        """
        return [int(w) for w in self.query("get_server_list").split() if w.isdigit()]

    def client_pids(self, server_pid: int) -> list[int] | None:
        """The clients of one server (``get_client_list <pid>``); None if the daemon cannot say.

        Raises:
            MigperfError: When the daemon does not answer.
        """
        words = self.query(f"get_client_list {server_pid}").split()
        if any(not w.isdigit() for w in words):
            return None
        return [int(w) for w in words]

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
        pct = None if thread_percentage is None else format_thread_percentage(thread_percentage)
        mem = (
            None if pinned_mem_limit_mib is None else format_pinned_mem_limit(pinned_mem_limit_mib)
        )
        env = {
            k: v
            for k, v in (os.environ if base is None else base).items()
            if not k.startswith("CUDA_MPS_")
        }
        env[PIPE_ENV] = str(self.pipe_dir)
        env[LOG_ENV] = str(self.log_dir)
        if pct is not None:
            env[THREAD_ENV] = pct
        if mem is not None:
            env[MEM_ENV] = mem
        if pin_device:
            if self.device.isdigit():
                env.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                env["CUDA_VISIBLE_DEVICES"] = self.device
        self.info.thread_percentages.append(
            None if thread_percentage is None else float(thread_percentage)
        )
        self.info.pinned_mem_limits.append(mem)
        return env

    def track(self, *clients: Any) -> None:
        """Have :meth:`stop` stop these clients (Popen objects, objects with ``pid``, or pids)."""
        self._tracked.extend(clients)

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
        want = (
            None
            if expect_clients is None or isinstance(expect_clients, int)
            else {int(p) for p in expect_clients}
        )
        count = expect_clients if isinstance(expect_clients, int) else None
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive("verify its clients")
            servers = self.server_pids()
            listed: dict[int, int] = {}
            supported = True
            for spid in servers:
                pids = self.client_pids(spid)
                if pids is None:
                    supported = False
                    continue
                listed.update((p, spid) for p in pids)
            done = bool(servers) and (
                (want is None and count is None)
                or not supported
                or (want is not None and want <= set(listed))
                or (count is not None and len(listed) >= count)
            )
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        self.info.server_pids = servers
        self.info.server_pid = servers[0] if servers else None
        self.info.client_pids = sorted(listed)
        self.info.client_count = len(listed)
        self._client_server.update(listed)
        if not servers:
            raise MigperfError(
                f"MPS is not active on {self.device}: no MPS server runs after {timeout_s:g} s, "
                "so the clients did not connect (CUDA then runs them without MPS and says nothing)",
                hint=f"the clients need {PIPE_ENV}={self.pipe_dir} (from MpsDaemon.client_env) "
                f"and must initialise CUDA; the daemon's log is {self.log_dir}/control.log",
            )
        if not supported:
            self.info.warnings.append(
                "the MPS daemon cannot list clients (get_client_list); only the server was verified"
            )
        elif want is not None and not want <= set(listed):
            missing = sorted(want - set(listed))
            dead = [p for p in missing if not pid_alive(p)]
            raise MigperfError(
                f"MPS on {self.device}: client(s) {', '.join(map(str, missing))} are not connected "
                f"to MPS server {servers[0]} after {timeout_s:g} s"
                + (f" (exited: {', '.join(map(str, dead))})" if dead else "")
                + f"; it lists {', '.join(map(str, sorted(listed))) or 'no clients'}",
                hint=f"the clients need {PIPE_ENV}={self.pipe_dir} in their environment; a client "
                "that fails before it initialises CUDA never connects",
            )
        elif count is not None and len(listed) < count:
            raise MigperfError(
                f"MPS on {self.device}: {len(listed)} client(s) connected after {timeout_s:g} s, "
                f"expected {count}",
                hint=f"the clients need {PIPE_ENV}={self.pipe_dir} in their environment",
            )
        self.info.verified = True
        return self.info

    def _check_alive(self, doing: str) -> None:
        pid = self.info.daemon_pid
        if pid is not None and not pid_alive(pid):
            raise MigperfError(
                f"cannot {doing}: the MPS control daemon for {self.device} (pid {pid}) "
                "is no longer running",
                hint=f"its log is in {self.log_dir}; the clients may have run without MPS",
            )

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
        entries: list[tuple[int, Any, int | None]] = []  # (pid, popen or None, rc before stop)
        for c in clients:
            if isinstance(c, int) and not isinstance(c, bool):
                entries.append((c, None, None))
                continue
            pid = getattr(c, "pid", None)
            if pid is None:
                continue
            popen = (
                c
                if callable(getattr(c, "poll", None)) and callable(getattr(c, "wait", None))
                else None
            )
            entries.append((int(pid), popen, popen.poll() if popen is not None else None))

        def running(pid: int, popen: Any) -> bool:
            return popen.poll() is None if popen is not None else pid_alive(pid)

        signalled = []
        for pid, popen, before in entries:
            if before is not None or not running(pid, popen):
                continue
            spid = self._client_server.get(pid)
            if spid is not None and self.running:
                try:
                    self.query(f"terminate_client {spid} {pid}")
                except MigperfError as exc:
                    self.info.warnings.append(
                        f"terminate_client {spid} {pid} failed: {exc.message}"
                    )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        deadline = time.monotonic() + timeout
        killed = set()
        for pid, popen, _ in entries:
            if pid not in signalled:
                continue
            if not self._wait_client(pid, popen, max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
                self._wait_client(pid, popen, 5.0)
        out = []
        for pid, popen, before in entries:
            rc = popen.poll() if popen is not None else None
            if before is not None:
                outcome = "exited" if before == 0 else "crashed"
            elif pid in killed:
                outcome = "killed"
            elif pid in signalled:
                outcome = "terminated"
            elif popen is not None:
                outcome = "exited" if rc == 0 else "crashed"
            else:
                outcome = "gone"
            ended = ClientExit(pid=pid, outcome=outcome, returncode=rc)
            if outcome == "crashed":
                how = (
                    f"was killed by {_signal_name(-rc)}"
                    if rc is not None and rc < 0
                    else f"exited with status {rc}"
                )
                self.info.warnings.append(f"MPS client {pid} {how} before it was stopped")
            out.append(ended)
            self.info.clients.append(ended.to_dict())
        return out

    @staticmethod
    def _wait_client(pid: int, popen: Any, timeout_s: float) -> bool:
        if popen is not None:
            try:
                popen.wait(timeout=timeout_s)
                return True
            except subprocess.TimeoutExpired:
                return False
        return _wait_gone(pid, timeout_s)

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
            everything = [*self._tracked, *clients]
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
        elif _wait_gone(pid, self.quit_timeout_s):
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
            pid = self._scan_for_daemon()
            self.info.daemon_pid = pid
        if pid is not None and pid_alive(pid) and self._owned(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            if not _wait_gone(pid, 1.0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 5.0)
        self._kill_leftover_servers()

    def _kill_leftover_servers(self) -> None:
        if self._pipe_dir is None:
            return
        for spid in self.info.server_pids:
            if pid_alive(spid) and self._owned(spid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(spid, signal.SIGKILL)
                _wait_gone(spid, 5.0)
                self.info.warnings.append(f"MPS server {spid} outlived its daemon and was killed")

    def _cleanup(self) -> None:
        self._stopped = True
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
        if self._claimed:
            with _active_lock:
                _active.pop(self.device, None)
            self._claimed = False


def _read_all(fh: IO[str]) -> str:
    fh.seek(0)
    return fh.read()


def _last_line(text: str) -> str:
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


@contextlib.contextmanager
def mps_daemons(
    devices: Iterable[str | int],
    *,
    control: str | Sequence[str] | None = None,
    log_root: str | Path | None = None,
    default_thread_percentage: float | None = None,
    **kwargs: Any,
) -> Iterator[dict[str, MpsDaemon]]:
    """Started daemons for several devices (one each; on MIG, one per MIG device).

    All are stopped on exit, also when the body raises or one of them fails to
    start (those already started are stopped before the error propagates).

    Args:
        devices: Devices (duplicates are served once).
        control: The control program (see :func:`resolve_control`).
        log_root: Each daemon logs in ``<log_root>/<device>``; default: private dirs.
        default_thread_percentage: Passed to every daemon.
        **kwargs: Other :class:`MpsDaemon` arguments (timeouts, ``env``, ``base_dir``).

    Yields:
        Device -> its started daemon.

    Raises:
        MigperfError: When a daemon does not start.
    """
    daemons: dict[str, MpsDaemon] = {}
    try:
        for dev in dict.fromkeys(_device_text(d) for d in devices):
            log_dir = None if log_root is None else Path(log_root) / re.sub(r"[^\w.-]", "_", dev)
            daemon = MpsDaemon(
                dev,
                control=control,
                log_dir=log_dir,
                default_thread_percentage=default_thread_percentage,
                **kwargs,
            )
            daemon.start()
            daemons[dev] = daemon
        yield daemons
    finally:
        for daemon in reversed(list(daemons.values())):
            daemon.stop()


class _Verifier(threading.Thread):
    """Polls one daemon until it lists ``count`` clients, or until told to stop."""

    def __init__(
        self,
        daemon: MpsDaemon,
        count: int,
        on_verified: Callable[[], None],
        interval_s: float = 0.5,
    ) -> None:
        super().__init__(name=f"mps-verify-{daemon.device}", daemon=True)
        self.mps = daemon
        self.count = count
        self.on_verified = on_verified
        self.interval_s = interval_s
        self.done = threading.Event()
        self.last_error: str | None = None

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.mps.verify(self.count, timeout_s=0.0)
                self.on_verified()
                return
            except MigperfError as exc:
                self.last_error = exc.message
                if not self.mps.running:
                    return
            self.done.wait(self.interval_s)

    def finish(self) -> None:
        self.done.set()
        self.join(timeout=self.mps.command_timeout_s * 3)
        if not self.mps.info.verified:
            self.mps.info.warnings.append(
                "the clients were never seen under MPS, so they may have run without it"
                + (f": {self.last_error}" if self.last_error else "")
            )


def _refresh(out: dict[str, dict[str, Any]], device: str, daemon: MpsDaemon) -> None:
    out[device] = daemon.info.to_dict()


@contextlib.contextmanager
def mps_for_run(
    nvml: Any,
    run: Any,
    jobs: Sequence[Any],
    *,
    root: str | Path | None = None,
    control: str | Sequence[str] | None = None,
) -> Iterator[dict[str, dict[str, Any]]]:
    """MPS for one experiment run: daemons up, client environments set, verified, all stopped.

    Duck-typed on the experiment runner's objects: each job has ``device``
    (a GPU index as text, or a MIG device UUID), a mutable ``env`` dict and a
    ``member`` with ``client`` (None for a job that is not an MPS client, such
    as a neighbour), ``thread_percentage`` and ``pinned_mem_limit_mib``;
    ``run`` has ``gpu_index`` and ``run_key``.

    One daemon serves each device the clients use; on a real whole GPU it is
    pinned by the GPU's UUID. Each client's ``env`` is replaced in place by
    its MPS environment (a simulated slot keeps its CPU-only device setting).
    While the body runs, a background check waits until each daemon lists
    all its clients (``verified``); a daemon never seen with them gets a
    warning instead. On exit every daemon is stopped, also on error.

    Args:
        nvml: The run's NVML facade (:class:`migperf.nvml.facade.Nvml`).
        run: The run plan.
        jobs: The run's jobs.
        root: migperf's state directory; daemon logs are kept in
            ``<root>/mps/<run_key>/<device>`` (default: private, removed).
        control: The control program; default: the simulator on a simulated
            GPU, else ``MIGPERF_MPS_CONTROL`` or ``nvidia-cuda-mps-control``.

    Yields:
        Device -> its :meth:`MpsInfo.to_dict`, refreshed once its clients are
        verified and again when the daemons have stopped.

    Raises:
        MigperfError: When a daemon cannot be started.
        UsageError: When a client's limits are invalid.
    """
    simulated = bool(getattr(nvml, "simulated", False))
    if control is None and simulated and not os.environ.get(CONTROL_ENV):
        control = simulated_control()
    clients = [j for j in jobs if getattr(j.member, "client", None) is not None]
    devices = list(dict.fromkeys(str(j.device) for j in clients))
    log_root = None if root is None else Path(root) / "mps" / str(getattr(run, "run_key", "run"))
    out: dict[str, dict[str, Any]] = {}
    daemons: dict[str, MpsDaemon] = {}
    verifiers: list[_Verifier] = []
    try:
        for dev in devices:
            target = dev
            if dev.isdigit() and not simulated:
                target = nvml.gpu(int(dev)).uuid
            log_dir = None if log_root is None else log_root / re.sub(r"[^\w.-]", "_", dev)
            daemon = MpsDaemon(target, control=control, log_dir=log_dir)
            daemon.start()
            daemons[dev] = daemon
            out[dev] = daemon.info.to_dict()
        for j in clients:
            env = daemons[str(j.device)].client_env(
                j.env,
                thread_percentage=j.member.thread_percentage,
                pinned_mem_limit_mib=j.member.pinned_mem_limit_mib,
                pin_device=not simulated,
            )
            j.env.clear()
            j.env.update(env)
        for dev, daemon in daemons.items():
            count = sum(1 for j in clients if str(j.device) == dev)
            verifier = _Verifier(daemon, count, functools.partial(_refresh, out, dev, daemon))
            verifier.start()
            verifiers.append(verifier)
        yield out
    finally:
        for verifier in verifiers:
            verifier.finish()
        for dev, daemon in reversed(list(daemons.items())):
            daemon.stop()
            out[dev] = daemon.info.to_dict()
