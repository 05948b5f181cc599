"""A simulated ``nvidia-cuda-mps-control`` for machines without a GPU.

It is invoked like the real program and speaks its stdin protocol, so
:class:`migperf.sharing.mps.MpsDaemon` runs the same code against it as
against a driver::

    python -m migperf.sharing.sim_mps_control -d        # start a daemon in the background
    python -m migperf.sharing.sim_mps_control -f        # ... in the foreground
    echo get_server_list | python -m migperf.sharing.sim_mps_control
    echo quit | python -m migperf.sharing.sim_mps_control

Like the real one it is addressed through ``CUDA_MPS_PIPE_DIRECTORY`` and logs
to ``CUDA_MPS_LOG_DIRECTORY``; unlike the real one it refuses to run without
them, so it can never touch a system-wide ``/tmp/nvidia-mps``. Its files:

* ``<pipe>/control``: the unix socket the daemon listens on (the real
  daemon's name for it);
* ``<pipe>/nvidia-cuda-mps-control.pid``: the daemon's pid, as the real
  daemon writes it;
* ``<log>/control.log``: what happened, in the real log's shape
  (``[date time Control PID] message``);
* ``<log>/commands.log``: every control command it was asked, one per line,
  so tests can assert on exactly what migperf asked.

Each request is one connection carrying one line; the answer is the rest of
the stream. Control commands (the legacy v2 interface): ``get_server_list``,
``get_server_status PID``, ``get_client_list PID``, ``start_server -uid UID``,
``shutdown_server PID [-f]``, ``set_default_active_thread_percentage P``,
``get_default_active_thread_percentage``, ``set_active_thread_percentage PID P``,
``set_default_device_pinned_mem_limit DEV VALUE``,
``terminate_client SERVER CLIENT``, ``quit``.

A simulated MPS client (a benchmark worker on a simulated GPU, which runs on
the CPU and so never opens a CUDA context) announces itself with
:func:`register_client`; as with real MPS the first client makes the daemon
start a server, a separate process whose pid ``get_server_list`` prints and
that lists the client in ``get_client_list``. A client that exits drops off
the list. A client that cannot reach the daemon gets ``None`` and carries on,
as CUDA silently runs without MPS when the daemon is unreachable.

Faults for tests, comma-separated in ``MIGPERF_SIM_MPS``:

* ``never-start``: ``-d`` exits 0 but no daemon ever appears;
* ``fail-start``: ``-d`` prints an error and exits 1;
* ``crash-after-start``: the daemon creates its socket and pid file, then dies;
* ``no-answer``: the daemon accepts requests and never answers them;
* ``ignore-quit``: the daemon ignores ``quit`` and SIGTERM (only SIGKILL ends it).

The daemon also ends by itself when its socket file is removed or after
``MIGPERF_SIM_MPS_MAX_LIFETIME_S`` seconds (default 3600), so a crashed test
run cannot leave it behind for long.

This module imports only the standard library: the benchmark worker imports it
to register, and the daemon starts fast.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from migperf.procs import pid_alive

__all__ = [
    "CONTROL_SOCKET",
    "FAULTS_ENV",
    "MODULE",
    "PID_FILE",
    "control_argv",
    "main",
    "register_client",
    "register_client_from_env",
    "write_wrapper",
]

MODULE = "migperf.sharing.sim_mps_control"
FAULTS_ENV = "MIGPERF_SIM_MPS"
LIFETIME_ENV = "MIGPERF_SIM_MPS_MAX_LIFETIME_S"
CONTROL_SOCKET = "control"
PID_FILE = "nvidia-cuda-mps-control.pid"
COMMANDS_LOG = "commands.log"
CONTROL_LOG = "control.log"
NOT_FOUND = "Cannot find MPS control daemon process"
_REGISTER = "__register_client"
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)
_FAULTS = ("never-start", "fail-start", "crash-after-start", "no-answer", "ignore-quit")


def control_argv(python: str | None = None) -> list[str]:
    """The command line that runs this simulator in place of ``nvidia-cuda-mps-control``."""
    return [python or sys.executable, "-m", MODULE]


def write_wrapper(directory: str | Path, name: str = "nvidia-cuda-mps-control") -> Path:
    """Write an executable script that runs the simulator, e.g. to put it on ``PATH``.

    Args:
        directory: Where to write it (created if missing).
        name: The script's file name.

    Returns:
        The script's path.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / name
    path.write_text(
        "#!/bin/sh\n"
        "# migperf's simulated MPS control program (migperf.sharing.sim_mps_control).\n"
        f'PYTHONPATH="{_PACKAGE_ROOT}${{PYTHONPATH:+:$PYTHONPATH}}" '
        f'exec "{sys.executable}" -m {MODULE} "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


# ------------------------------------------------------------------ clients


def _request(pipe_dir: str | Path, line: str, timeout_s: float | None) -> str | None:
    """Send one request line to the daemon; its answer, or None when it cannot be reached."""
    path = os.path.join(os.fspath(pipe_dir), CONTROL_SOCKET)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout_s)
        try:
            sock.connect(path)
        except OSError:
            return None
        sock.sendall((line.strip() + "\n").encode())
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        sock.close()


def register_client(
    pipe_dir: str | Path,
    pid: int,
    thread_percentage: float | None = None,
    pinned_mem_limit: str | None = None,
    *,
    timeout_s: float = 5.0,
) -> int | None:
    """Announce a simulated MPS client to the daemon, as a CUDA context would.

    Args:
        pipe_dir: The client's ``CUDA_MPS_PIPE_DIRECTORY``.
        pid: The client's process id; it drops off the client list when it exits.
        thread_percentage: Its ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE``, if set.
        pinned_mem_limit: Its ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT``, if set.
        timeout_s: Longest wait for the daemon's answer.

    Returns:
        The pid of the server the client was attached to, or None when no daemon
        answered (the client then runs without MPS, as CUDA does).
    """
    pct = "-" if thread_percentage is None else f"{float(thread_percentage):g}"
    mem = "-" if not pinned_mem_limit else pinned_mem_limit.replace(" ", "")
    try:
        answer = _request(pipe_dir, f"{_REGISTER} {int(pid)} {pct} {mem}", timeout_s)
    except OSError:
        return None
    if answer is None:
        return None
    word = answer.strip()
    return int(word) if word.isdigit() else None


def register_client_from_env(
    env: Mapping[str, str] | None = None, pid: int | None = None
) -> int | None:
    """:func:`register_client` with the settings of an MPS client's environment.

    Args:
        env: The client's environment (``os.environ`` when None).
        pid: The client's pid (this process when None).

    Returns:
        The server pid, or None when ``CUDA_MPS_PIPE_DIRECTORY`` is unset or no
        daemon answered.
    """
    env = os.environ if env is None else env
    pipe_dir = env.get("CUDA_MPS_PIPE_DIRECTORY")
    if not pipe_dir:
        return None
    raw_pct = env.get("CUDA_MPS_ACTIVE_THREAD_PERCENTAGE")
    try:
        pct = float(raw_pct) if raw_pct else None
    except ValueError:
        pct = None
    return register_client(
        pipe_dir,
        os.getpid() if pid is None else pid,
        pct,
        env.get("CUDA_MPS_PINNED_DEVICE_MEM_LIMIT") or None,
    )


# ------------------------------------------------------------------- daemon


def _faults(env: Mapping[str, str]) -> set[str]:
    return {f.strip() for f in env.get(FAULTS_ENV, "").split(",") if f.strip()}


class _Daemon:
    """The simulated control daemon's state and request loop."""

    def __init__(self, pipe_dir: Path, log_dir: Path, faults: set[str]) -> None:
        self.pipe_dir = pipe_dir
        self.log_dir = log_dir
        self.faults = faults
        self.pid = os.getpid()
        self.socket_path = pipe_dir / CONTROL_SOCKET
        self.pid_path = pipe_dir / PID_FILE
        self.default_pct = 100.0
        self.default_mem: dict[str, str] = {}
        # server pid -> {"uid", "thread_percentage", "clients": {pid: info}}
        self.servers: dict[int, dict[str, Any]] = {}
        self.held: list[socket.socket] = []
        self.stopping = False
        self.srv: socket.socket | None = None

    def log(self, message: str) -> None:
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        with open(self.log_dir / CONTROL_LOG, "a") as fh:
            fh.write(f"[{stamp}.{int(now * 1000) % 1000:03d} Control {self.pid:6d}] {message}\n")

    def record(self, command: str) -> None:
        with open(self.log_dir / COMMANDS_LOG, "a") as fh:
            fh.write(command + "\n")

    # -- servers -----------------------------------------------------------

    def start_server(self, uid: int) -> int:
        for spid, server in self.servers.items():
            if server["uid"] == uid:
                return spid
        pid = os.fork()
        if pid == 0:  # the simulated nvidia-cuda-mps-server
            try:
                # Hold no socket of the daemon's: a client waits for the end of its answer.
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                while os.getppid() == self.pid:
                    time.sleep(0.05)
            finally:
                os._exit(0)
        self.servers[pid] = {"uid": uid, "thread_percentage": self.default_pct, "clients": {}}
        self.log(f"Starting new server {pid} for user {uid}")
        return pid

    def stop_server(self, pid: int, timeout_s: float = 2.0) -> None:
        self.servers.pop(pid, None)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == 0:
                    time.sleep(0.02)
                    continue
            break
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.log(f"Server {pid} exited with status 0")

    def prune(self) -> None:
        for spid in list(self.servers):
            try:
                done, status = os.waitpid(spid, os.WNOHANG)
            except ChildProcessError:
                done, status = spid, 0
            if done:
                self.servers.pop(spid, None)
                self.log(f"Server {spid} exited with status {status}")
                continue
            clients = self.servers[spid]["clients"]
            for cpid in [c for c in clients if not pid_alive(c)]:
                clients.pop(cpid)
                self.log(f"Client {cpid} disconnected from server {spid}")

    # -- requests ----------------------------------------------------------

    def register(self, args: list[str]) -> str:
        cpid = int(args[0])
        pct = None if len(args) < 2 or args[1] == "-" else float(args[1])
        mem = None if len(args) < 3 or args[2] == "-" else args[2]
        spid = self.start_server(os.getuid())
        server = self.servers[spid]
        effective = (
            server["thread_percentage"] if pct is None else min(pct, server["thread_percentage"])
        )
        server["clients"][cpid] = {
            "thread_percentage": pct,
            "effective_thread_percentage": effective,
            "pinned_mem_limit": mem,
        }
        self.log(
            f"NEW CLIENT {cpid} from user {os.getuid()}: server {spid}, "
            f"active thread percentage {effective:g}"
            + (f", pinned device memory limit {mem}" if mem else "")
        )
        return f"{spid}\n"

    def handle(self, line: str) -> str | None:
        """The answer to one request; None to answer nothing and keep the connection."""
        words = line.split()
        if not words:
            return ""
        if words[0] == _REGISTER:
            return self.register(words[1:])
        self.record(line)
        self.log(f"Cmd:{line}")
        if "no-answer" in self.faults:
            return None
        self.prune()
        cmd, args = words[0], words[1:]
        try:
            return self.command(cmd, args)
        except (ValueError, IndexError):
            return f"Invalid arguments for {cmd}\n"

    def command(self, cmd: str, args: list[str]) -> str:
        if cmd == "get_server_list":
            return "".join(f"{p}\n" for p in sorted(self.servers))
        if cmd == "get_client_list":
            server = self.servers.get(int(args[0]))
            return "" if server is None else "".join(f"{c}\n" for c in sorted(server["clients"]))
        if cmd == "get_server_status":
            return "ACTIVE\n" if int(args[0]) in self.servers else ""
        if cmd == "start_server":
            uid = int(args[args.index("-uid") + 1]) if "-uid" in args else os.getuid()
            self.start_server(uid)
            return ""
        if cmd == "shutdown_server":
            pid = int(args[0])
            if pid in self.servers:
                self.stop_server(pid)
            return ""
        if cmd == "set_default_active_thread_percentage":
            pct = float(args[0])
            if not 0 < pct <= 100:
                raise ValueError(pct)
            self.default_pct = pct
            return f"{pct:.1f}\n"
        if cmd == "get_default_active_thread_percentage":
            return f"{self.default_pct:.1f}\n"
        if cmd == "set_active_thread_percentage":
            pid, pct = int(args[0]), float(args[1])
            if pid in self.servers and 0 < pct <= 100:
                self.servers[pid]["thread_percentage"] = pct
            return f"{pct:.1f}\n"
        if cmd == "set_default_device_pinned_mem_limit":
            self.default_mem[args[0]] = args[1]
            return ""
        if cmd == "terminate_client":
            server = self.servers.get(int(args[0]))
            if server is not None and server["clients"].pop(int(args[1]), None) is not None:
                self.log(f"Client {args[1]} terminated by request")
            return ""
        if cmd == "quit":
            if "ignore-quit" in self.faults:
                self.log("quit ignored (simulated fault ignore-quit)")
            else:
                self.stopping = True
            return ""
        return f"Unrecognized command: {cmd}\n"

    # -- loop --------------------------------------------------------------

    def serve(self, lifetime_s: float) -> int:
        self.pipe_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self.pid_path.write_text(f"{self.pid}\n")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(os.fspath(self.socket_path))
        srv.listen(16)
        self.srv = srv
        device = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.log(f"Starting control daemon using socket {self.socket_path}")
        self.log(
            "To connect CUDA applications to this daemon, set env "
            f"CUDA_MPS_PIPE_DIRECTORY={self.pipe_dir}"
        )
        self.log(f"CUDA_VISIBLE_DEVICES={device if device is not None else '(unset)'}")
        if "crash-after-start" in self.faults:
            self.log("crashing (simulated fault crash-after-start)")
            os._exit(1)
        if "ignore-quit" in self.faults:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        deadline = time.monotonic() + lifetime_s
        while not self.stopping:
            try:
                ready, _, _ = select.select([srv], [], [], 0.2)
            except InterruptedError:
                continue
            if not self.socket_path.exists():
                self.log("control socket removed; exiting")
                break
            if time.monotonic() > deadline:
                self.log(f"simulated daemon lifetime of {lifetime_s:g} s is over; exiting")
                break
            if not ready:
                self.prune()
                continue
            conn, _ = srv.accept()
            self.serve_one(conn)
        for spid in list(self.servers):
            self.stop_server(spid)
        srv.close()
        for path in (self.socket_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.log("Exit")
        return 0

    def serve_one(self, conn: socket.socket) -> None:
        conn.settimeout(2.0)
        data = b""
        try:
            while b"\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError:
            conn.close()
            return
        answer = self.handle(data.decode("utf-8", "replace").strip())
        if answer is None:
            self.held.append(conn)  # never answered: the caller waits until it gives up
            return
        with contextlib.suppress(OSError):
            conn.sendall(answer.encode())
        conn.close()


# --------------------------------------------------------------------- main


def _dirs(env: Mapping[str, str], need_log: bool) -> tuple[Path, Path | None] | str:
    pipe = env.get("CUDA_MPS_PIPE_DIRECTORY")
    log = env.get("CUDA_MPS_LOG_DIRECTORY")
    if not pipe or (need_log and not log):
        return (
            "the simulated MPS control program needs CUDA_MPS_PIPE_DIRECTORY"
            + (" and CUDA_MPS_LOG_DIRECTORY" if need_log else "")
            + " (it never uses the system-wide defaults)"
        )
    return Path(pipe), (Path(log) if log else None)


def _start_background(env: Mapping[str, str], pipe_dir: Path) -> int:
    faults = _faults(env)
    if "fail-start" in faults:
        print(
            "nvidia-cuda-mps-control: failed to start the daemon (simulated fault fail-start)",
            file=sys.stderr,
        )
        return 1
    if "never-start" in faults:
        return 0
    try:
        old = int((pipe_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        old = 0
    if old and pid_alive(old):
        print("An instance of this daemon is already running", file=sys.stderr)
        return 1
    child_env = dict(env)
    pp = child_env.get("PYTHONPATH")
    child_env["PYTHONPATH"] = _PACKAGE_ROOT + (os.pathsep + pp if pp else "")
    subprocess.Popen(
        [sys.executable, "-m", MODULE, "-f"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env,
        start_new_session=True,
        close_fds=True,
    )
    return 0


def _client(pipe_dir: Path) -> int:
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        answer = _request(pipe_dir, line, 60.0)
        if answer is None:
            print(NOT_FOUND, file=sys.stderr)
            return 1
        sys.stdout.write(answer)
        sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run as ``nvidia-cuda-mps-control [-d | -f]``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    env = os.environ
    mode = args[0] if args else ""
    if mode not in ("", "-d", "-f"):
        print(f"usage: nvidia-cuda-mps-control [-d | -f] (got {' '.join(args)})", file=sys.stderr)
        return 2
    dirs = _dirs(env, need_log=bool(mode))
    if isinstance(dirs, str):
        print(dirs, file=sys.stderr)
        return 2
    pipe_dir, log_dir = dirs
    unknown = _faults(env).difference(_FAULTS)
    if mode and unknown:
        print(f"unknown {FAULTS_ENV} fault(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if mode == "-d":
        return _start_background(env, pipe_dir)
    if mode == "-f":
        assert log_dir is not None
        try:
            lifetime = float(env.get(LIFETIME_ENV, "3600"))
        except ValueError:
            lifetime = 3600.0
        daemon = _Daemon(pipe_dir, log_dir, _faults(env))
        try:
            return daemon.serve(lifetime)
        except Exception as exc:
            with contextlib.suppress(OSError):
                daemon.log(f"fatal: {exc!r}")
            raise
    return _client(pipe_dir)


if __name__ == "__main__":
    sys.exit(main())
