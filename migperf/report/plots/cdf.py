"""Plot family ``cdf``: latency CDFs from the raw samples, per profile and sharing mode."""

from __future__ import annotations

import math
from collections.abc import Sequence

from migperf.report.data import ReportData, profile_sort_key
from migperf.report.plots.base import Family, Palette, Plot
from migperf.report.plots.canvas import Canvas, style_axes
from migperf.report.plots.rows import groups, series_label, slug, what, where

# A CDF of millions of samples is drawn from this many quantiles: the SVG stays small.
_CDF_POINTS = 400
# More panels than this split a figure into parts, so each panel stays readable.
_MAX_PANELS = 6


def _cdf_points(values: Sequence[float]) -> tuple[list[float], list[float]]:
    import numpy as np

    arr = np.sort(np.asarray(values, dtype=float))
    n = len(arr)
    if n > _CDF_POINTS:
        q = np.linspace(0.0, 1.0, _CDF_POINTS)
        return list(np.quantile(arr, q)), list(q)
    return list(arr), [(i + 1) / n for i in range(n)]


def cdf_family(data: ReportData, palette: Palette) -> Family:
    """Latency CDFs from the raw samples, one line per profile and sharing mode.

    Args:
        data: The report's runs (raw samples are read from its store).
        palette: The report's colours.

    Returns:
        A figure (or several parts) per workload, task, precision, model arguments
        and scenario, one panel per batch size, sequence length and target QPS.
    """
    name = "Latency CDF"
    description = (
        "Distribution of per-iteration (or per-query) latency from the raw samples, one line "
        "per MIG profile and sharing mode (MIG, MPS, time-slicing); the dotted line marks p99."
    )
    runs = data.ok
    runs = runs[runs["role"] != "neighbor"].copy()
    if "target_qps" not in runs.columns:
        runs["target_qps"] = float("nan")
    ids = [int(r) for r in runs["run_id"]]
    enough = [len(data.latency_samples(r)) >= 2 for r in ids]
    runs = where(runs, enough)
    plots: list[Plot] = []
    for gkey, grp in groups(runs, ["workload", "task", "precision", "model_args", "scenario"]):
        panels = groups(grp, ["batch_size", "seq_len", "target_qps"])
        parts = math.ceil(len(panels) / _MAX_PANELS)
        size = math.ceil(len(panels) / parts)
        for part, start in enumerate(range(0, len(panels), size)):
            chunk = panels[start : start + size]
            canvas = Canvas(len(chunk), width=4.6, height=3.6)
            for ax, (pkey, sub) in zip(canvas.axes, chunk, strict=True):
                series: dict[str, list[float]] = {}
                for rid, prof, sharing, role in zip(
                    sub["run_id"], sub["profile_label"], sub["sharing"], sub["role"], strict=True
                ):
                    series.setdefault(series_label(prof, sharing, role), []).extend(
                        data.latency_samples(int(rid))
                    )
                lo, hi = math.inf, 0.0
                colour = palette.local()
                for i, label in enumerate(sorted(series, key=profile_sort_key)):
                    xs, ys = _cdf_points(series[label])
                    lo, hi = min(lo, xs[0]), max(hi, xs[-1])
                    ax.plot(
                        xs,
                        ys,
                        label=label,
                        color=colour(label),
                        linewidth=1.5,
                        linestyle=("-", "--", "-.", ":")[i // 10 % 4],
                        drawstyle="steps-post",
                    )
                if lo > 0 and hi / lo > 20:
                    ax.set_xscale("log")
                ax.axhline(0.99, linestyle=":", color="0.4", linewidth=1)
                style_axes(
                    ax,
                    xlabel="latency (ms)",
                    ylabel="fraction of samples ≤ latency",
                    ylim=(0, 1.01),
                    title=what(pkey, gkey["workload"]) or "all runs",
                    legend={"fontsize": 7, "loc": "lower right"},
                )
            suffix = f" (part {part + 1} of {parts})" if parts > 1 else ""
            title = f"{name}: {what(gkey)}{suffix}"
            caption = (
                f"{what(gkey)}: cumulative distribution of the raw latency samples per "
                "profile and sharing mode; each panel is one batch size (sequence length, "
                "target QPS)."
            )
            rows = grp[grp["run_id"].isin([r for _, sub in chunk for r in sub["run_id"]])]
            plots.append(
                canvas.render(slug("cdf", *gkey.values(), part or None), title, caption, rows)
            )
    missing = None if plots else "no successful run stored raw latency samples"
    return Family("cdf", name, description, tuple(plots), missing)
