"""Plot family ``capacity``: the maximum QPS under the latency SLO, per profile."""

from __future__ import annotations

from migperf.report.data import ReportData, is_missing, profile_sort_key
from migperf.report.plots.base import Family, Palette, Plot
from migperf.report.plots.canvas import Canvas, style_axes
from migperf.report.plots.rows import fmt, groups, series_label, slug, what


def capacity_family(data: ReportData, palette: Palette) -> Family:
    """Max QPS under the latency SLO, per profile and sharing mode.

    Args:
        data: The report's runs.
        palette: The report's colours.

    Returns:
        A bar chart per workload, task, precision, model arguments and sequence
        length of the runs that searched for their max QPS.
    """
    name = "Max QPS under the SLO per profile"
    description = (
        "The highest arrival rate each profile served within the latency SLO "
        "(`find_max_qps: true`); a profile that missed the SLO even at the lowest rate "
        "shows an empty bar marked 'missed'."
    )
    runs = data.ok
    runs = runs[(runs["role"] != "neighbor") & runs["find_max_qps"].astype(bool)]
    if "max_qps_under_slo" not in runs.columns:
        runs = runs.assign(max_qps_under_slo=float("nan"))
    plots: list[Plot] = []
    for gkey, grp in groups(runs, ["workload", "task", "precision", "model_args", "seq_len"]):
        grp = grp.assign(
            series=[
                series_label(p, s)
                for p, s in zip(grp["profile_label"], grp["sharing"], strict=True)
            ]
        )
        labels = sorted(set(grp["series"]), key=profile_sort_key)
        configs = groups(grp, ["batch_size"])
        canvas = Canvas(1, width=max(6.0, 0.9 * len(labels) * len(configs) + 2))
        ax = canvas.axes[0]
        colour = palette.local()
        width = 0.8 / max(1, len(configs))
        top = (
            float(grp["max_qps_under_slo"].max()) if grp["max_qps_under_slo"].notna().any() else 1.0
        )
        labelled: set[str] = set()
        for i, (ckey, sub) in enumerate(configs):
            means = sub.groupby("series")["max_qps_under_slo"].mean()
            clabel = f"batch {ckey['batch_size']}"
            for j, series in enumerate(labels):
                if series not in set(sub["series"]):
                    continue
                x = j + (i - (len(configs) - 1) / 2) * width
                value = means.get(series, float("nan"))
                if is_missing(value):
                    ax.text(
                        x,
                        top * 0.02,
                        "missed the SLO\nat every rate",
                        ha="center",
                        va="bottom",
                        fontsize=8,
                        color="tab:red",
                    )
                    continue
                ax.bar(
                    x,
                    float(value),
                    width=width * 0.95,
                    color=colour(clabel),
                    label=None if clabel in labelled else clabel,
                )
                labelled.add(clabel)
                ax.text(x, float(value), fmt(float(value)), ha="center", va="bottom", fontsize=7)
        style_axes(
            ax,
            xlabel="MIG profile (and sharing mode)",
            ylabel="max QPS under the SLO (queries/s)",
            categories=labels,
            xlim=(-0.6, len(labels) - 0.4),
            ylim=(0, top * 1.15),
            grid="y",
            legend={"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)},
        )
        slo = sorted(
            {
                f"p{fmt(p)} ≤ {fmt(ms)} ms"
                for p, ms in zip(
                    grp.get("slo_percentile", [float("nan")] * len(grp)),
                    grp.get("slo_latency_ms", [float("nan")] * len(grp)),
                    strict=True,
                )
                if not is_missing(p) and not is_missing(ms)
            }
        )
        title = f"{name}: {what(gkey)}"
        caption = (
            f"{what(gkey)}: the highest arrival rate served within the SLO"
            + (f" ({', '.join(slo)})" if slo else "")
            + " per profile and sharing mode."
        )
        plots.append(canvas.render(slug("capacity", *gkey.values()), title, caption, grp))
    missing = (
        None
        if plots
        else "no successful scenario run searched for its max QPS (`find_max_qps: true`)"
    )
    return Family("capacity", name, description, tuple(plots), missing)
