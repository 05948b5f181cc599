"""How co-located workers share a device: MPS daemons, time-slicing checks, interference.

* :mod:`migperf.sharing.mps`: the lifecycle of a private MPS control daemon
  per device (a GPU, or one MIG device), the environment of its clients, and
  the verification that they really run under MPS.
* :mod:`migperf.sharing.sim_mps_control`: a simulated ``nvidia-cuda-mps-control``
  that speaks the same stdin protocol, for machines without a GPU.
* :mod:`migperf.sharing.timeslice`: time-slicing needs a compute mode that lets
  several processes open the device; it is read and recorded, never changed.
* :mod:`migperf.sharing.interference`: what co-location cost each job, from
  stored runs.

Nothing here imports torch or pynvml at import time.

Usage::

    clients = [MpsClient(device="MIG-...", env=dict(os.environ), thread_percentage=50)]
    with mps_for_run(nvml, clients, run_key="run1") as info:
        run_workers(c.env for c in clients)  # each env now points at its MPS daemon
"""

from __future__ import annotations

from migperf.sharing.interference import interference_table
from migperf.sharing.mps import MpsClient, MpsDaemon, MpsInfo, mps_daemons, mps_for_run
from migperf.sharing.timeslice import check_timeslicing

__all__ = [
    "MpsClient",
    "MpsDaemon",
    "MpsInfo",
    "check_timeslicing",
    "interference_table",
    "mps_daemons",
    "mps_for_run",
]
