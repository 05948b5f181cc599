"""Plot family ``scaling``: throughput across MIG profiles, whole and per compute slice."""

from __future__ import annotations

from migperf.report.data import MIG_OFF, ReportData
from migperf.report.plots.base import MARKERS, Family, Palette, Plot
from migperf.report.plots.canvas import Canvas, style_axes
from migperf.report.plots.rows import groups, measured, profiles, slug, what


def scaling_family(data: ReportData, palette: Palette) -> Family:
    """Throughput relative to the full GPU, and per compute slice, across profiles.

    Args:
        data: The report's runs.
        palette: The report's colours.

    Returns:
        A figure per workload, task, precision and model arguments measured on
        two or more profiles; notes name the configurations without a reference run.
    """
    name = "Scaling across MIG profiles"
    description = (
        "How throughput scales with the slice of the GPU a job gets: left, each profile's "
        "throughput relative to the full GPU (MIG off, or the largest profile measured); "
        "right, throughput per compute slice relative to the full GPU's. Above 1 on the "
        "right, n instances of that profile (7 x 1g) do more work than one full GPU (1 x 7g)."
    )
    rows = measured(data)
    rows = rows[rows["samples_per_s"].notna()] if "samples_per_s" in rows.columns else rows.iloc[:0]
    rows = rows[rows["compute_slices"].notna()]
    plots: list[Plot] = []
    notes: list[str] = []
    for gkey, grp in groups(rows, ["workload", "task", "precision", "model_args"]):
        labels = profiles(grp)
        if len(labels) < 2:
            continue
        ref_label = MIG_OFF if MIG_OFF in labels else labels[-1]
        slices = {
            str(p): int(s) for p, s in zip(grp["profile_label"], grp["compute_slices"], strict=True)
        }
        canvas = Canvas(2)
        ax1, ax2 = canvas.axes
        xs = list(range(len(labels)))
        ref_slices = slices[ref_label]
        ax1.plot(
            xs,
            [slices[p] / ref_slices for p in labels],
            linestyle="--",
            color="0.5",
            label="proportional to compute slices",
        )
        ax2.axhline(1.0, linestyle="--", color="0.5", label=f"{ref_label} (reference)")
        vary_seq = grp["seq_len"].nunique() > 1
        drawn = 0
        colour = palette.local()
        for i, (ckey, sub) in enumerate(groups(grp, ["batch_size", "seq_len"])):
            means = sub.groupby("profile_label")["samples_per_s"].mean()
            label = f"batch {ckey['batch_size']}" + (f", seq {ckey['seq_len']}" if vary_seq else "")
            if ref_label not in means.index:
                notes.append(f"{what(gkey)}, {label}: not measured on {ref_label}, left out")
                continue
            ref = float(means[ref_label])
            if not ref > 0:
                continue
            got = [(j, p) for j, p in enumerate(labels) if p in means.index]
            color = colour(label)
            marker = MARKERS[i % len(MARKERS)]
            ax1.plot(
                [j for j, _ in got],
                [float(means[p]) / ref for _, p in got],
                marker=marker,
                color=color,
                label=label,
            )
            ax2.plot(
                [j for j, _ in got],
                [(float(means[p]) / slices[p]) / (ref / ref_slices) for _, p in got],
                marker=marker,
                color=color,
                label=label,
            )
            drawn += 1
        if not drawn:
            continue
        ticks = [f"{p}\n({slices[p]} slice{'s' if slices[p] != 1 else ''})" for p in labels]
        for ax, ylabel in (
            (ax1, f"throughput / {ref_label}'s"),
            (ax2, f"throughput per compute slice / {ref_label}'s"),
        ):
            style_axes(
                ax,
                xlabel="MIG profile (compute slices)",
                ylabel=ylabel,
                categories=ticks,
                ylim=(0, None),
                legend={"fontsize": 8},
            )
        title = f"{name}: {what(gkey)}"
        caption = (
            f"{what(gkey)}: throughput (samples/s) of each profile divided by the {ref_label}'s "
            f"({ref_slices} compute slices), and the same per compute slice. A point above 1 on the "
            f"right means filling the GPU with that profile beats one {ref_label}."
        )
        plots.append(canvas.render(slug("scaling", *gkey.values()), title, caption, grp))
    missing = (
        None
        if plots
        else (
            "needs successful exclusive runs of one workload on two or more MIG profiles "
            "(list several layouts, or `instances: each`)"
        )
    )
    return Family("scaling", name, description, tuple(plots), missing, tuple(notes))
