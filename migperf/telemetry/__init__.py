"""GPU telemetry around benchmark runs: NVML sampling, dcgm-exporter scraping, alignment.

Map of the package (imports stay light: pydantic only; ``prometheus_client``
loads when exporter text is parsed):

* :mod:`migperf.telemetry.sampler` -- :class:`~migperf.telemetry.sampler.NvmlSampler`,
  a background thread in the parent reading board sensors, per-MIG-device
  memory and NVML GPM activity through the :class:`~migperf.nvml.facade.Nvml` facade.
* :mod:`migperf.telemetry.dcgm` -- dcgm-exporter ``/metrics`` parser and
  :class:`~migperf.telemetry.dcgm.DcgmScraper`.
* :mod:`migperf.telemetry.energy` -- energy from counter differences (wrap, reset).
* :mod:`migperf.telemetry.summary` -- :func:`~migperf.telemetry.summary.summarize_window`:
  a run's window to power, energy, J per sample, activity, memory.
* :mod:`migperf.telemetry.target` -- ``--device`` to the GPU / MIG device NVML sees.
* :mod:`migperf.telemetry.model` -- the series and summary stored with each result.
* :mod:`migperf.telemetry.probe` -- which metrics this GPU gives in its current
  MIG mode (``python -m migperf.telemetry.probe``).

The benchmark side (starting the sampler around worker runs, registering
workers on simulated GPUs) is :mod:`migperf.bench.monitor`. docs/telemetry.md
explains the choices. Example::

    target = resolve_target(nvml, "MIG-5f0e...")  # a GPU index or a MIG device
    sampler = NvmlSampler(nvml, [target.gpu_index], interval_s=0.1)
"""

from __future__ import annotations

from migperf.telemetry.dcgm import DcgmScraper
from migperf.telemetry.model import TelemetryResult
from migperf.telemetry.sampler import NvmlSampler
from migperf.telemetry.summary import summarize_window
from migperf.telemetry.target import TelemetryTarget, resolve_target

__all__ = [
    "DcgmScraper",
    "NvmlSampler",
    "TelemetryResult",
    "TelemetryTarget",
    "resolve_target",
    "summarize_window",
]
