"""One private MPS control daemon per device, its clients' environment, and proof that MPS is on.

* :mod:`~migperf.sharing.mps.control`: finding the control program, its
  stdin protocol, the limit formats.
* :mod:`~migperf.sharing.mps.daemon`: :class:`MpsDaemon`, the lifecycle of one
  daemon (start, quit, kill, clean up).
* :mod:`~migperf.sharing.mps.clients`: the clients' environment, their
  verification under an MPS server, their stop.
* :mod:`~migperf.sharing.mps.run`: daemons for several devices, and
  :func:`mps_for_run` for one experiment run's :class:`MpsClient` list.
* :mod:`~migperf.sharing.mps.records`: :class:`MpsInfo` and :class:`ClientExit`,
  what is stored with a result.

Usage::

    with MpsDaemon("MIG-...", control=simulated_control()) as mps:
        env = mps.client_env(os.environ, thread_percentage=50)
    print(mps.info.to_dict())
"""

from __future__ import annotations

from migperf.sharing.mps.control import (
    CONTROL_ENV,
    DEFAULT_CONTROL,
    format_pinned_mem_limit,
    format_thread_percentage,
    resolve_control,
    simulated_control,
)
from migperf.sharing.mps.daemon import MpsDaemon
from migperf.sharing.mps.records import ClientExit, MpsInfo
from migperf.sharing.mps.run import MpsClient, mps_daemons, mps_for_run
from migperf.sharing.sim_mps_control import register_client, register_client_from_env

__all__ = [
    "CONTROL_ENV",
    "DEFAULT_CONTROL",
    "ClientExit",
    "MpsClient",
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
