"""The framework and serving-system compatibility matrix (``migperf compat``).

Will a stack see a MIG slice, run on it, and respect its memory; what breaks
with two slices (one CUDA device per process, no NCCL across MIG devices)?
:func:`run_matrix` runs each framework's smoke checks in check processes of
their own, pinned to one device by ``CUDA_VISIBLE_DEVICES`` (and to two for
the two-device checks), and gives each check a verdict: ``pass``, ``fail``
(with the error), ``expected-fail`` (a limitation NVIDIA documents, see
``docs/reference/mig-compat.md``) or ``skipped`` (with why). On the simulated
GPU the checks that can run on the CPU do, and every row says ``simulated``.
Example::

    from migperf.compat import choose_target, run_matrix
    from migperf.nvml import open_nvml

    with open_nvml(allow_fallback=True, read_only=True) as nvml:
        target = choose_target(nvml)            # the first MIG device, else GPU 0
    matrix = run_matrix(target, ["pytorch", "jax"], timeout_s=120)
    with ResultsStore("results/migperf.db") as store:
        store.record_compat(matrix.rows)

Nothing here changes a GPU; frameworks are imported only in the check processes.
"""

from __future__ import annotations

from migperf.compat.frameworks import CHECKS, FRAMEWORKS, SERVING, Framework
from migperf.compat.runner import CompatMatrix, resolve_frameworks, run_matrix
from migperf.compat.targets import CompatTarget, Exposure, choose_target

__all__ = [
    "CHECKS",
    "FRAMEWORKS",
    "SERVING",
    "CompatMatrix",
    "CompatTarget",
    "Exposure",
    "Framework",
    "choose_target",
    "resolve_frameworks",
    "run_matrix",
]
