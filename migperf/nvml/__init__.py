"""The hardware boundary: the only package that talks to NVML.

:func:`open_nvml` gives an initialised :class:`~migperf.nvml.facade.Nvml`
backed by the real driver (nvidia-ml-py's ``pynvml``) or by the simulated NVML
(:mod:`migperf.nvml.sim`). Everything above this package sees migperf's own
types (:mod:`migperf.nvml.types`), never pynvml. Example::

    with open_nvml(allow_fallback=True) as nvml:
        for gpu in nvml.gpus():
            print(gpu.index, gpu.name, gpu.mig_mode)
"""

from __future__ import annotations

from migperf.nvml.backend import (
    FALLBACK_MODEL,
    READ_ONLY_ENV,
    SIMULATE_ENV,
    env_read_only,
    open_nvml,
)

__all__ = ["FALLBACK_MODEL", "READ_ONLY_ENV", "SIMULATE_ENV", "env_read_only", "open_nvml"]
