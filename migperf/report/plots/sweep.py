"""Latency and throughput along one swept knob, one line per MIG profile.

Shared by the batch-size (:mod:`~migperf.report.plots.batch`) and
sequence-length (:mod:`~migperf.report.plots.seqlen`) families, which differ
only in the knob on the x axis and the one held fixed per figure.
"""

from __future__ import annotations

from migperf.report.data import MIG_OFF, ReportData, uses_seq_len
from migperf.report.plots.base import MARKERS, Family, Palette, Plot
from migperf.report.plots.canvas import Canvas, line, style_axes
from migperf.report.plots.rows import groups, has, measured, profiles, slug, what, where


def sweep_family(
    data: ReportData, palette: Palette, *, x: str, fixed: str, key: str, name: str, axis: str
) -> Family:
    """p50/p99 latency and throughput vs ``x``, one figure per configuration.

    Args:
        data: The report's runs.
        palette: The report's colours.
        x: Column on the x axis (``batch_size`` or ``seq_len``).
        fixed: Column held fixed within a figure (the other of the two).
        key: The family's key (section anchor, slug prefix).
        name: The family's title.
        axis: The x axis label.

    Returns:
        The family: a figure per configuration swept at two or more values of ``x``.
    """
    description = (
        f"{name}, one line per MIG profile (shaded: spread over repeats and slots), "
        f"per workload, task, precision, model arguments and {'sequence length' if fixed == 'seq_len' else 'batch size'}."
    )
    rows = measured(data)
    if x == "seq_len":
        rows = where(rows, [uses_seq_len(w) for w in rows["workload"]])
    plots: list[Plot] = []
    for gkey, grp in groups(rows, ["workload", "task", "precision", "model_args", fixed]):
        if grp[x].nunique() < 2:
            continue
        panels = [
            (m, label)
            for m, label in (
                ("latency_p50_ms", "p50 latency (ms)"),
                ("latency_p99_ms", "p99 latency (ms)"),
            )
            if has(grp, m)
        ]
        if not panels and has(grp, "latency_mean_ms"):
            panels.append(("latency_mean_ms", "mean latency (ms)"))
        if has(grp, "samples_per_s"):
            panels.append(("samples_per_s", "throughput (samples/s)"))
        if not panels:
            continue
        canvas = Canvas(len(panels))
        for ax, (metric, label) in zip(canvas.axes, panels, strict=True):
            for i, prof in enumerate(profiles(grp)):
                sub = grp[grp["profile_label"] == prof]
                agg = sub.groupby(x)[metric].agg(["mean", "min", "max"]).dropna().sort_index()
                if not agg.empty:
                    line(ax, agg, prof, palette.color(prof), MARKERS[i % len(MARKERS)])
            style_axes(
                ax,
                xlabel=axis,
                ylabel=label,
                swept=grp[x].tolist(),
                ylim=(0, None),
                legend={"title": "MIG profile", "fontsize": 8} if ax is canvas.axes[0] else None,
            )
        title = f"{name}: {what(gkey)}"
        caption = (
            f"{name} for {what(gkey)}. Each line is one MIG profile ({MIG_OFF}: the whole GPU "
            "with MIG disabled); points are means over repeats and slots of the same profile."
        )
        parts = [v for k, v in gkey.items() if k != "seq_len" or uses_seq_len(gkey["workload"])]
        plots.append(canvas.render(slug(key, *parts), title, caption, grp))
    missing = None
    if not plots:
        what_swept = "batch sizes" if x == "batch_size" else "sequence lengths"
        kind = "workload" if x == "batch_size" else "language model"
        missing = (
            f"no {kind} has successful exclusive runs at two or more {what_swept} "
            f"(sweep `{x}` in the config to draw this)"
        )
    return Family(key, name, description, tuple(plots), missing)
