"""How co-located workers share a device: MPS daemons, time-slicing checks, interference.

* :mod:`migperf.sharing.mps`: the lifecycle of a private MPS control daemon
  per device (a GPU, or one MIG device), the environment of its clients, and
  the verification that they really run under MPS.
* :mod:`migperf.sharing.sim_mps_control`: a simulated ``nvidia-cuda-mps-control``
  that speaks the same stdin protocol, for machines without a GPU.
* :mod:`migperf.sharing.timeslice`: time-slicing needs a compute mode that lets
  several processes open the device; it is read and recorded, never changed.

Nothing here imports torch or pynvml at import time.
"""

from __future__ import annotations
