"""MPS for a set of devices at once: one daemon each, and the whole set for one experiment run.

:func:`mps_daemons` starts a daemon per device and stops them all on exit.
:func:`mps_for_run` does the same for one experiment run's :class:`MpsClient`
list, rewrites each client's environment in place, and checks in the
background that every daemon lists all its clients.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf.errors import MigperfError
from migperf.sharing.mps.control import CONTROL_ENV, device_text, simulated_control
from migperf.sharing.mps.daemon import MpsDaemon

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml

__all__ = ["MpsClient", "mps_daemons", "mps_for_run"]


@dataclass
class MpsClient:
    """One MPS client of a run, as :func:`mps_for_run` needs it.

    Attributes:
        device: The device it runs on: a GPU index as text, or a MIG device UUID.
        env: Its environment; :func:`mps_for_run` replaces the contents of
            this very dict with the client's MPS environment, so the caller's
            reference sees the change.
        thread_percentage: ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` (None: not set).
        pinned_mem_limit_mib: ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` in MiB (None: not set).
    """

    device: str
    env: dict[str, str]
    thread_percentage: float | None = None
    pinned_mem_limit_mib: int | None = None


def _log_dir(log_root: Path | None, device: str) -> Path | None:
    # A MIG UUID of the older form holds slashes; keep one flat directory per device.
    return None if log_root is None else log_root / re.sub(r"[^\w.-]", "_", device)


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
        control: The control program (see :func:`~migperf.sharing.mps.control.resolve_control`).
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
        root = None if log_root is None else Path(log_root)
        for dev in dict.fromkeys(device_text(d) for d in devices):
            log_dir = _log_dir(root, dev)
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
    nvml: Nvml,
    clients: Sequence[MpsClient],
    *,
    run_key: str,
    root: str | Path | None = None,
    control: str | Sequence[str] | None = None,
) -> Iterator[dict[str, dict[str, Any]]]:
    """MPS for one experiment run: daemons up, client environments set, verified, all stopped.

    One daemon serves each device the clients use; on a real whole GPU it is
    pinned by the GPU's UUID. Each client's ``env`` is replaced in place by
    its MPS environment (a simulated slot keeps its CPU-only device setting).
    While the body runs, a background check waits until each daemon lists
    all its clients (``verified``); a daemon never seen with them gets a
    warning instead. On exit every daemon is stopped, also on error.

    Args:
        nvml: The run's NVML facade.
        clients: The run's MPS clients (not its other jobs, such as neighbours).
        run_key: The run's key; names its log directory.
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
    simulated = bool(nvml.simulated)
    if control is None and simulated and not os.environ.get(CONTROL_ENV):
        control = simulated_control()
    devices = list(dict.fromkeys(c.device for c in clients))
    log_root = None if root is None else Path(root) / "mps" / run_key
    out: dict[str, dict[str, Any]] = {}
    daemons: dict[str, MpsDaemon] = {}
    verifiers: list[_Verifier] = []
    try:
        for dev in devices:
            target = dev
            if dev.isdigit() and not simulated:
                target = nvml.gpu(int(dev)).uuid
            daemon = MpsDaemon(target, control=control, log_dir=_log_dir(log_root, dev))
            daemon.start()
            daemons[dev] = daemon
            out[dev] = daemon.info.to_dict()
        for c in clients:
            env = daemons[c.device].client_env(
                c.env,
                thread_percentage=c.thread_percentage,
                pinned_mem_limit_mib=c.pinned_mem_limit_mib,
                pin_device=not simulated,
            )
            c.env.clear()
            c.env.update(env)
        for dev, daemon in daemons.items():
            count = sum(1 for c in clients if c.device == dev)
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
