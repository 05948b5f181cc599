"""Choosing and opening the NVML backend: the real driver or the simulated one.

:func:`open_nvml` picks the backend (a ``--simulate`` spec or
``MIGPERF_SIMULATE`` selects the simulator, else nvidia-ml-py's ``pynvml``),
falls back to a simulated ``a100-40gb`` where the caller allows it, applies
read-only mode (``MIGPERF_READ_ONLY``), and returns an initialised
:class:`~migperf.nvml.facade.Nvml`. pynvml and the facade are imported only
when NVML is opened, so importing this module costs nothing.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml

from migperf.nvml.session import FALLBACK_MODEL

SIMULATE_ENV = "MIGPERF_SIMULATE"
READ_ONLY_ENV = "MIGPERF_READ_ONLY"


def env_read_only() -> bool:
    """Whether ``MIGPERF_READ_ONLY`` asks for read-only mode."""
    return os.environ.get(READ_ONLY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def open_nvml(
    simulate: str | None = None,
    *,
    allow_fallback: bool = False,
    read_only: bool | None = None,
    fallback: str | None = None,
) -> Nvml:
    """Open NVML on this machine, real or simulated, initialised.

    Args:
        simulate: A ``--simulate`` spec (``a100-80gb:8``). None means
            ``MIGPERF_SIMULATE`` if set, else the real driver.
        allow_fallback: When no driver is found, use a simulated
            ``a100-40gb`` instead of failing. Only read-only and benchmark
            commands pass True; commands that change a GPU never fall back.
        read_only: Refuse every change to a GPU. None means ``MIGPERF_READ_ONLY``.
        fallback: The simulated machine to fall back to (default
            :data:`FALLBACK_MODEL`); an experiment passes the one its layouts need.

    Raises:
        NvmlUnavailableError: no driver and no fallback allowed.
        UsageError: the simulate spec is invalid.
    """
    from migperf.errors import NvmlUnavailableError
    from migperf.nvml.facade import Nvml

    ro = env_read_only() if read_only is None else read_only
    spec = simulate or os.environ.get(SIMULATE_ENV) or None
    if spec:
        from migperf.nvml.sim import simulated_pynvml

        return Nvml(simulated_pynvml(spec), simulated=True, read_only=ro).init()
    import pynvml

    real = Nvml(pynvml, simulated=False, read_only=ro)
    try:
        return real.init()
    except NvmlUnavailableError as exc:
        if not allow_fallback:
            raise
        from migperf.nvml.sim import simulated_pynvml

        machine = fallback or FALLBACK_MODEL
        reason = f"{exc.message}; using a simulated {machine} instead (as `--simulate {machine}` would)"
        return Nvml(
            simulated_pynvml(machine), simulated=True, read_only=ro, fallback_reason=reason
        ).init()
