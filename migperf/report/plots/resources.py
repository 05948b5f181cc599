"""Plot family ``resources``: GPU activity, memory used and energy per sample, per profile."""

from __future__ import annotations

from migperf.report.data import ReportData
from migperf.report.plots.base import Family, Palette, Plot
from migperf.report.plots.canvas import Canvas, style_axes
from migperf.report.plots.rows import groups, has, measured, profiles, slug, what

# Each panel shows the first of its columns that has numbers: which of them a
# run fills depends on the telemetry it had.
_RESOURCE_PANELS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("activity_graphics_pct", "activity_sm_pct", "gpu_util_mean_pct"), "GPU activity (%)"),
    (
        ("instance_memory_used_max_mib", "gpu_memory_used_max_mib", "peak_memory_mib"),
        "memory used (MiB)",
    ),
    (("energy_per_sample_j",), "energy per sample (J)"),
)
#: Why a panel is missing when no run of a group has any of its columns.
_WHY_MISSING = {
    "GPU activity (%)": "no run has activity numbers: NVML gives per-slice activity through GPM "
    "on Hopper and newer GPUs only, NVML utilization is not reported with MIG on, and an Ampere "
    "GPU needs dcgm-exporter (telemetry.dcgm_url or --dcgm-url)",
    "memory used (MiB)": "no run has memory numbers (telemetry was off)",
    "energy per sample (J)": "no run has energy numbers (telemetry was off, or the GPU has no "
    "energy counter)",
}


def resources_family(data: ReportData, palette: Palette) -> Family:
    """GPU activity, memory used and energy per sample, per profile.

    Args:
        data: The report's runs.
        palette: The report's colours.

    Returns:
        A bar chart per workload, task, precision and model arguments with telemetry.
    """
    name = "GPU activity, memory and energy per profile"
    description = (
        "What each profile's runs used: engine activity (DCGM/GPM graphics or SM activity), "
        "the slice's memory in use, and energy per sample. Energy is the whole GPU's "
        "(NVML has no per-slice power sensor): it includes the idle draw of the other slices."
    )
    rows = measured(data)
    plots: list[Plot] = []
    for gkey, grp in groups(rows, ["workload", "task", "precision", "model_args"]):
        panels: list[tuple[str, str]] = []
        absent: list[str] = []
        for candidates, label in _RESOURCE_PANELS:
            metric = next((m for m in candidates if has(grp, m)), None)
            if metric is not None:
                panels.append((metric, label))
            else:
                absent.append(f"{label} is not drawn: {_WHY_MISSING[label]}")
        if not panels:
            continue
        labels = profiles(grp)
        configs = groups(grp, ["batch_size", "seq_len"])
        vary_seq = grp["seq_len"].nunique() > 1
        canvas = Canvas(len(panels))
        colour = palette.local()
        width = 0.8 / max(1, len(configs))
        for ax, (metric, label) in zip(canvas.axes, panels, strict=True):
            for i, (ckey, sub) in enumerate(configs):
                means = sub.groupby("profile_label")[metric].mean()
                clabel = f"batch {ckey['batch_size']}" + (
                    f", seq {ckey['seq_len']}" if vary_seq else ""
                )
                xs = [j + (i - (len(configs) - 1) / 2) * width for j in range(len(labels))]
                ys = [float(means.get(p, float("nan"))) for p in labels]
                ax.bar(xs, ys, width=width * 0.95, label=clabel, color=colour(clabel))
            last = ax is canvas.axes[-1] and len(configs) > 1
            style_axes(
                ax,
                xlabel="MIG profile",
                ylabel=f"{label}\n[{metric}]",
                ylabel_size=9,
                categories=labels,
                grid="y",
                legend={"fontsize": 8, "loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}
                if last
                else None,
            )
        title = f"{name}: {what(gkey)}"
        caption = (
            f"{what(gkey)}: "
            + ", ".join(f"{label} ({metric})" for metric, label in panels)
            + " per MIG profile; bars are means over repeats and slots."
            + "".join(f" {a}." for a in absent)
        )
        plots.append(canvas.render(slug("resources", *gkey.values()), title, caption, grp))
    missing = (
        None
        if plots
        else (
            "no successful exclusive run has activity, memory or energy numbers "
            "(telemetry is off, or the runs were not sampled)"
        )
    )
    return Family("resources", name, description, tuple(plots), missing)
