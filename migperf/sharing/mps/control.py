"""The MPS control program: finding it, its environment, its stdin protocol, the limit formats.

The control program is ``control=`` (a path, a command line, or an argv
list), else ``MIGPERF_MPS_CONTROL``, else ``nvidia-cuda-mps-control`` on
``PATH``. :func:`simulated_control` names the simulator
(:mod:`migperf.sharing.sim_mps_control`) that stands in on machines without a
GPU; it speaks the same protocol, so the daemon code has one code path.

A running daemon is asked one command at a time, as ``echo <command> |
nvidia-cuda-mps-control`` with the daemon's pipe directory in the
environment (:class:`ControlChannel`).

Starting, asking and stopping a daemon by hand::

    export CUDA_VISIBLE_DEVICES=MIG-...
    export CUDA_MPS_PIPE_DIRECTORY=/tmp/x/pipe CUDA_MPS_LOG_DIRECTORY=/tmp/x/log
    nvidia-cuda-mps-control -d
    echo get_server_list | nvidia-cuda-mps-control
    echo quit | nvidia-cuda-mps-control
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from migperf.errors import MigperfError, UsageError
from migperf.sharing import sim_mps_control
from migperf.sharing.mps.records import MpsInfo

__all__ = [
    "CONTROL_ENV",
    "DEFAULT_CONTROL",
    "LOG_ENV",
    "MEM_ENV",
    "PIPE_ENV",
    "THREAD_ENV",
    "ControlChannel",
    "daemon_env",
    "device_text",
    "format_pinned_mem_limit",
    "format_thread_percentage",
    "last_line",
    "launch_daemon",
    "parse_client_list",
    "parse_server_list",
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
_MAX_COMMANDS = 200
_NOT_FOUND = "cannot find mps control daemon"


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


def device_text(device: str | int) -> str:
    """The device a daemon serves, as ``CUDA_VISIBLE_DEVICES`` names it.

    Args:
        device: A GPU index, ``GPU-<uuid>`` or ``MIG-<uuid>`` (also the older
            ``MIG-GPU-<uuid>/<gi>/<ci>``).

    Returns:
        The index without leading zeros, or the UUID as given.

    Raises:
        UsageError: When ``device`` is none of these.
    """
    text = str(device).strip()
    if text.isdigit():
        return str(int(text))
    if _DEVICE_RE.match(text):
        return text
    raise UsageError(
        f"MPS device {text!r} is not a GPU index, GPU-<uuid> or MIG-<uuid>",
        hint="list GPU indices and MIG device UUIDs with `migperf gpus` or `nvidia-smi -L`",
    )


def last_line(text: str) -> str:
    """The last non-blank line of ``text``, stripped ("" when there is none)."""
    return next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")


def daemon_env(
    base: Mapping[str, str], device: str, argv: Sequence[str], pipe_dir: Path, log_dir: Path
) -> dict[str, str]:
    """The environment of a daemon, and of every control command sent to it.

    Args:
        base: The environment to start from (without ``CUDA_MPS_*`` variables).
        device: The one device the daemon serves.
        argv: The control program's argv.
        pipe_dir: The daemon's private ``CUDA_MPS_PIPE_DIRECTORY``.
        log_dir: Its ``CUDA_MPS_LOG_DIRECTORY``.

    Returns:
        A new dict.
    """
    env = dict(base)
    env["CUDA_VISIBLE_DEVICES"] = device
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    env[PIPE_ENV] = str(pipe_dir)
    env[LOG_ENV] = str(log_dir)
    if list(argv[1:3]) == ["-m", sim_mps_control.MODULE]:
        root = str(Path(sim_mps_control.__file__).resolve().parent.parent.parent)
        old = env.get("PYTHONPATH")
        env["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    return env


def launch_daemon(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    device: str,
    deadline: float,
    timeout_s: float,
) -> None:
    """Run ``<control> -d``, which forks the daemon and returns at once when it works.

    Args:
        argv: The control program's argv.
        env: The daemon's environment (see :func:`daemon_env`).
        device: The device it will serve (for messages).
        deadline: ``time.monotonic()`` by which ``-d`` must have returned.
        timeout_s: The whole start timeout (for messages).

    Raises:
        MigperfError: When the program cannot run, does not return in time, or
            exits with an error.
    """
    cmd = " ".join([*argv, "-d"])
    with tempfile.TemporaryFile("w+") as out:
        try:
            proc = subprocess.Popen(
                [*argv, "-d"],
                stdin=subprocess.DEVNULL,
                # A file, not a pipe: a daemon that keeps its parent's
                # stdout open must not make us wait for it.
                stdout=out,
                stderr=subprocess.STDOUT,
                env=dict(env),
                start_new_session=True,
            )
        except OSError as exc:
            raise MigperfError(
                f"cannot start the MPS control daemon for {device}: `{cmd}` failed: {exc}",
                hint=f"check the control program, or set {CONTROL_ENV}",
            ) from exc
        try:
            rc = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise MigperfError(
                f"cannot start the MPS control daemon for {device}: `{cmd}` did not "
                f"return within {timeout_s:g} s",
                hint="`nvidia-cuda-mps-control -d` returns at once when it works; check "
                "the driver installation (nvidia-smi) and dmesg",
            ) from None
        out.seek(0)
        text = out.read()
    if rc != 0:
        raise MigperfError(
            f"cannot start the MPS control daemon for {device}: `{cmd}` exited with "
            f"status {rc}" + (f": {last_line(text)}" if text.strip() else ""),
            hint="see the message above; MPS needs a Volta or newer GPU with a working "
            "driver, and a device that no other MPS daemon of another user serves",
        )


def parse_server_list(answer: str) -> list[int]:
    """The server pids in an answer to ``get_server_list``."""
    return [int(w) for w in answer.split() if w.isdigit()]


def parse_client_list(answer: str) -> list[int] | None:
    """The client pids in an answer to ``get_client_list <pid>``; None if it lists none it can.

    A daemon that does not know the command answers with words, not pids.
    """
    words = answer.split()
    if any(not w.isdigit() for w in words):
        return None
    return [int(w) for w in words]


class ControlChannel:
    """The control channel of one started daemon: one command per run of the control program.

    Every command, its answer and its exit status are recorded in
    ``info.commands`` (the first 200; the rest are only counted in
    ``info.commands_dropped``, as repeated polls can make many).

    Args:
        argv: The control program's argv.
        env: The daemon's environment (see :func:`daemon_env`).
        device: The device the daemon serves (for messages).
        pipe_dir: The daemon's pipe directory (for hints).
        log_dir: The daemon's log directory (for hints).
        info: Where commands are recorded.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        device: str,
        pipe_dir: Path,
        log_dir: Path,
        info: MpsInfo,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.device = device
        self.pipe_dir = pipe_dir
        self.log_dir = log_dir
        self.info = info

    def query(self, command: str, *, timeout_s: float) -> str:
        """Send one command to the daemon through the control program's stdin.

        Args:
            command: E.g. ``get_server_list``, ``get_client_list 1234``, ``quit``.
            timeout_s: Longest wait for the answer.

        Returns:
            What the control program printed.

        Raises:
            MigperfError: When the daemon cannot be reached or does not answer in time.
        """
        try:
            proc = subprocess.run(
                self.argv,
                input=command + "\n",
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=self.env,
            )
        except subprocess.TimeoutExpired:
            self._record(command, None, None, f"no answer within {timeout_s:g} s")
            raise MigperfError(
                f"the MPS control daemon for {self.device} does not answer `{command}` "
                f"within {timeout_s:g} s",
                hint=f"its log is in {self.log_dir}; stop it with "
                f"`echo quit | CUDA_MPS_PIPE_DIRECTORY={self.pipe_dir} nvidia-cuda-mps-control`",
            ) from None
        except OSError as exc:
            self._record(command, None, None, str(exc))
            raise MigperfError(
                f"cannot run the MPS control program {self.argv[0]}: {exc}",
                hint=f"check the control program, or set {CONTROL_ENV}",
            ) from exc
        out, err = proc.stdout, proc.stderr.strip()
        self._record(command, out.strip(), proc.returncode, err or None)
        if proc.returncode != 0 or _NOT_FOUND in (out + err).lower():
            detail = last_line(err) or last_line(out) or f"exit status {proc.returncode}"
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
