"""Plot family ``seqlen``: latency and throughput vs sequence length (language models)."""

from __future__ import annotations

from migperf.report.data import ReportData
from migperf.report.plots.base import Family, Palette
from migperf.report.plots.sweep import sweep_family


def seq_family(data: ReportData, palette: Palette) -> Family:
    """Latency and throughput vs sequence length (language models), one line per profile.

    Args:
        data: The report's runs.
        palette: The report's colours.

    Returns:
        A figure per language model, task, precision, model arguments and batch size.
    """
    return sweep_family(
        data,
        palette,
        x="seq_len",
        fixed="batch_size",
        key="seqlen",
        name="Latency and throughput vs sequence length",
        axis="sequence length (tokens)",
    )
