"""The records an MPS daemon leaves for the stored result: what it was asked, how its clients ended."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClientExit", "MpsInfo"]


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
