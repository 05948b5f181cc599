"""Plot family ``arrival``: p99 latency and completed rate vs the server scenario's arrival rate."""

from __future__ import annotations

from migperf.report.data import ReportData, profile_sort_key
from migperf.report.plots.base import MARKERS, Family, Palette, Plot
from migperf.report.plots.canvas import Canvas, line, style_axes
from migperf.report.plots.rows import fmt, groups, has, series_label, slug, what


def arrival_family(data: ReportData, palette: Palette) -> Family:
    """p99 latency and completed rate vs the server scenario's target QPS.

    Args:
        data: The report's runs.
        palette: The report's colours.

    Returns:
        A figure per configuration run at two or more arrival rates, one line per
        profile and sharing mode (MIG vs MPS vs time-slicing).
    """
    name = "p99 latency vs arrival rate"
    description = (
        "The server scenario at several arrival rates (`scenario.target_qps`): p99 latency and "
        "the rate actually completed, one line per profile and sharing mode (MIG vs MPS vs "
        "time-slicing). Crosses mark rates where the SLO was missed."
    )
    runs = data.ok
    needed = ("target_qps", "latency_p99_ms")
    if not all(c in runs.columns for c in needed):
        return Family(
            "arrival", name, description, (), "no server-scenario run swept `scenario.target_qps`"
        )
    runs = runs[
        (runs["role"] != "neighbor") & runs["target_qps"].notna() & runs["latency_p99_ms"].notna()
    ]
    plots: list[Plot] = []
    for gkey, grp in groups(
        runs, ["workload", "task", "precision", "model_args", "batch_size", "seq_len"]
    ):
        grp = grp.assign(
            series=[
                series_label(p, s)
                for p, s in zip(grp["profile_label"], grp["sharing"], strict=True)
            ]
        )
        if grp.groupby("series")["target_qps"].nunique().max() < 2:
            continue
        panels = [("latency_p99_ms", "p99 latency (ms)")]
        if has(grp, "samples_per_s"):
            panels.append(("samples_per_s", "completed (samples/s)"))
        canvas = Canvas(len(panels))
        colour = palette.local()
        for ax, (metric, label) in zip(canvas.axes, panels, strict=True):
            for i, series in enumerate(sorted(set(grp["series"]), key=profile_sort_key)):
                sub = grp[grp["series"] == series]
                agg = sub.groupby("target_qps")[metric].agg(["mean", "min", "max"]).sort_index()
                color = colour(series)
                line(ax, agg, series, color, MARKERS[i % len(MARKERS)])
                if metric == "latency_p99_ms" and "slo_met" in sub.columns:
                    missed = sub[sub["slo_met"] == 0].groupby("target_qps")[metric].mean()
                    if not missed.empty:
                        ax.scatter(
                            missed.index,
                            missed.values,
                            marker="x",
                            s=70,
                            color="tab:red",
                            zorder=5,
                            label="SLO missed" if i == 0 else None,
                        )
            if metric == "latency_p99_ms" and has(grp, "slo_latency_ms"):
                slo = sorted(set(grp["slo_latency_ms"].dropna()))
                if len(slo) == 1:
                    ax.axhline(
                        slo[0],
                        linestyle="--",
                        color="tab:red",
                        linewidth=1,
                        label=f"SLO {fmt(slo[0])} ms",
                    )
            if metric == "samples_per_s":
                # One sample per query in the server scenario: completed = offered.
                offered = sorted(set(grp["target_qps"]))
                ax.plot(offered, offered, linestyle=":", color="0.5", label="completed = offered")
            style_axes(
                ax,
                xlabel="target arrival rate (queries/s)",
                ylabel=label,
                swept=grp["target_qps"].tolist(),
                ylim=(0, None),
                legend={"fontsize": 7},
            )
        title = f"{name}: {what(gkey)}"
        caption = (
            f"{what(gkey)}, server scenario: p99 latency per sample at each target arrival "
            "rate, and the completed rate; one line per profile and sharing mode."
        )
        plots.append(canvas.render(slug("arrival", *gkey.values()), title, caption, grp))
    missing = (
        None
        if plots
        else ("needs server-scenario runs at two or more `scenario.target_qps` values")
    )
    return Family("arrival", name, description, tuple(plots), missing)
