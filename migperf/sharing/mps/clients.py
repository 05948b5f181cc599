"""The clients of one MPS daemon: their environment, proof that they run under MPS, their stop.

CUDA silently runs a client *without* MPS when it cannot reach the daemon,
so nothing is taken on trust: :meth:`MpsClients.verify` requires a server to
exist and (via ``get_client_list <server pid>``) to list the clients.
Clients are stopped with ``terminate_client`` through the daemon first, as
NVIDIA advises before signalling a client that may have GPU work in flight,
then SIGTERM, a wait, and SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from migperf.errors import MigperfError
from migperf.procs import pid_alive
from migperf.sharing.mps.control import (
    LOG_ENV,
    MEM_ENV,
    PIPE_ENV,
    THREAD_ENV,
    format_pinned_mem_limit,
    format_thread_percentage,
)
from migperf.sharing.mps.process import signal_name, wait_gone
from migperf.sharing.mps.records import ClientExit, MpsInfo

__all__ = ["ClientHost", "MpsClients"]


class ClientHost(Protocol):
    """What :class:`MpsClients` needs of the daemon its clients connect to.

    Attributes:
        info: The daemon's record; client facts are written into it.
    """

    info: MpsInfo

    @property
    def device(self) -> str:
        """The device the daemon serves."""
        ...

    @property
    def pipe_dir(self) -> Path:
        """The daemon's ``CUDA_MPS_PIPE_DIRECTORY``."""
        ...

    @property
    def log_dir(self) -> Path:
        """The daemon's ``CUDA_MPS_LOG_DIRECTORY``."""
        ...

    @property
    def running(self) -> bool:
        """Whether the daemon runs."""
        ...

    def query(self, command: str, *, timeout_s: float | None = None) -> str:
        """Send one control command; its answer.

        Raises:
            MigperfError: When the daemon does not answer.
        """
        ...

    def server_pids(self) -> list[int]:
        """The daemon's MPS servers.

        Raises:
            MigperfError: When the daemon does not answer.
        """
        ...

    def client_pids(self, server_pid: int) -> list[int] | None:
        """The clients of one server; None if the daemon cannot say.

        Raises:
            MigperfError: When the daemon does not answer.
        """
        ...


class MpsClients:
    """The clients of one daemon: hands out their environment, verifies and stops them.

    Args:
        host: The daemon.
    """

    def __init__(self, host: ClientHost) -> None:
        self.host = host
        self.tracked: list[Any] = []
        # Which server listed each client: terminate_client needs both pids.
        self._server_of: dict[int, int] = {}

    def env(
        self,
        base: Mapping[str, str] | None = None,
        *,
        thread_percentage: float | None = None,
        pinned_mem_limit_mib: int | None = None,
        pin_device: bool = True,
    ) -> dict[str, str]:
        """The environment of one client (see :meth:`MpsDaemon.client_env`).

        Args:
            base: The client's environment without MPS; ``os.environ`` when None.
            thread_percentage: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (1-100).
            pinned_mem_limit_mib: ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` as ``0=<N>M``.
            pin_device: Set ``CUDA_VISIBLE_DEVICES`` for MPS.

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
        host = self.host
        env[PIPE_ENV] = str(host.pipe_dir)
        env[LOG_ENV] = str(host.log_dir)
        if pct is not None:
            env[THREAD_ENV] = pct
        if mem is not None:
            env[MEM_ENV] = mem
        if pin_device:
            if host.device.isdigit():
                env.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                env["CUDA_VISIBLE_DEVICES"] = host.device
        host.info.thread_percentages.append(
            None if thread_percentage is None else float(thread_percentage)
        )
        host.info.pinned_mem_limits.append(mem)
        return env

    def track(self, *clients: Any) -> None:
        """Have the daemon's stop stop these clients (Popen objects, objects with ``pid``, or pids)."""
        self.tracked.extend(clients)

    def verify(
        self, expect_clients: Collection[int] | int | None = None, *, timeout_s: float = 10.0
    ) -> MpsInfo:
        """Check that MPS is really on: a server runs and lists the clients.

        Args:
            expect_clients: The client pids that must be listed, or how many
                clients must be; None only requires a server.
            timeout_s: How long clients may take to connect.

        Returns:
            The daemon's info, with the server and client pids filled in.

        Raises:
            MigperfError: When the daemon died, no server runs, or expected
                clients are not listed within ``timeout_s``.
        """
        host = self.host
        want = (
            None
            if expect_clients is None or isinstance(expect_clients, int)
            else {int(p) for p in expect_clients}
        )
        count = expect_clients if isinstance(expect_clients, int) else None
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_alive("verify its clients")
            servers = host.server_pids()
            listed: dict[int, int] = {}
            supported = True
            for spid in servers:
                pids = host.client_pids(spid)
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
        info = host.info
        info.server_pids = servers
        info.server_pid = servers[0] if servers else None
        info.client_pids = sorted(listed)
        info.client_count = len(listed)
        self._server_of.update(listed)
        if not servers:
            raise MigperfError(
                f"MPS is not active on {host.device}: no MPS server runs after {timeout_s:g} s, "
                "so the clients did not connect (CUDA then runs them without MPS and says nothing)",
                hint=f"the clients need {PIPE_ENV}={host.pipe_dir} (from MpsDaemon.client_env) "
                f"and must initialise CUDA; the daemon's log is {host.log_dir}/control.log",
            )
        if not supported:
            info.warnings.append(
                "the MPS daemon cannot list clients (get_client_list); only the server was verified"
            )
        elif want is not None and not want <= set(listed):
            missing = sorted(want - set(listed))
            dead = [p for p in missing if not pid_alive(p)]
            raise MigperfError(
                f"MPS on {host.device}: client(s) {', '.join(map(str, missing))} are not connected "
                f"to MPS server {servers[0]} after {timeout_s:g} s"
                + (f" (exited: {', '.join(map(str, dead))})" if dead else "")
                + f"; it lists {', '.join(map(str, sorted(listed))) or 'no clients'}",
                hint=f"the clients need {PIPE_ENV}={host.pipe_dir} in their environment; a client "
                "that fails before it initialises CUDA never connects",
            )
        elif count is not None and len(listed) < count:
            raise MigperfError(
                f"MPS on {host.device}: {len(listed)} client(s) connected after {timeout_s:g} s, "
                f"expected {count}",
                hint=f"the clients need {PIPE_ENV}={host.pipe_dir} in their environment",
            )
        info.verified = True
        return info

    def _check_alive(self, doing: str) -> None:
        host = self.host
        pid = host.info.daemon_pid
        if pid is not None and not pid_alive(pid):
            raise MigperfError(
                f"cannot {doing}: the MPS control daemon for {host.device} (pid {pid}) "
                "is no longer running",
                hint=f"its log is in {host.log_dir}; the clients may have run without MPS",
            )

    def stop(self, clients: Iterable[Any], *, timeout_s: float) -> list[ClientExit]:
        """Stop clients: ``terminate_client`` through the daemon, SIGTERM, wait, SIGKILL.

        A client that had already ended with a non-zero status is reported as
        ``crashed`` (also in the info's ``warnings``).

        Args:
            clients: ``subprocess.Popen`` objects (their exit status is
                reported), objects with a ``pid`` attribute, or pids.
            timeout_s: How long they may take after SIGTERM.

        Returns:
            How each ended, in order (clients without a pid are skipped).
        """
        host = self.host
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
            spid = self._server_of.get(pid)
            if spid is not None and host.running:
                try:
                    host.query(f"terminate_client {spid} {pid}")
                except MigperfError as exc:
                    host.info.warnings.append(
                        f"terminate_client {spid} {pid} failed: {exc.message}"
                    )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            signalled.append(pid)
        deadline = time.monotonic() + timeout_s
        killed = set()
        for pid, popen, _ in entries:
            if pid not in signalled:
                continue
            if not _wait_client(pid, popen, max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
                _wait_client(pid, popen, 5.0)
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
                    f"was killed by {signal_name(-rc)}"
                    if rc is not None and rc < 0
                    else f"exited with status {rc}"
                )
                host.info.warnings.append(f"MPS client {pid} {how} before it was stopped")
            out.append(ended)
            host.info.clients.append(ended.to_dict())
        return out


def _wait_client(pid: int, popen: Any, timeout_s: float) -> bool:
    if popen is not None:
        try:
            popen.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    return wait_gone(pid, timeout_s)
