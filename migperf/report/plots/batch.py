"""Plot family ``batch``: latency (p50, p99) and throughput vs batch size."""

from __future__ import annotations

from migperf.report.data import ReportData
from migperf.report.plots.base import Family, Palette
from migperf.report.plots.sweep import sweep_family


def batch_family(data: ReportData, palette: Palette) -> Family:
    """Latency (p50, p99) and throughput vs batch size, one line per profile.

    Args:
        data: The report's runs.
        palette: The report's colours.

    Returns:
        A figure per workload, task, precision, model arguments and sequence length.
    """
    return sweep_family(
        data,
        palette,
        x="batch_size",
        fixed="seq_len",
        key="batch",
        name="Latency and throughput vs batch size",
        axis="batch size",
    )
