"""Plot family ``interference``: normalized progress, STP and p99 inflation of co-located jobs.

The numbers come from :func:`migperf.sharing.interference.interference_table`,
joined with the report's run columns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from migperf.report.data import ReportData, is_missing, profile_sort_key
from migperf.report.plots.base import Family, Palette, Plot
from migperf.report.plots.canvas import Canvas, style_axes
from migperf.report.plots.rows import fmt, groups, has, slug

if TYPE_CHECKING:
    import pandas as pd

# More co-located groups than this split a figure into parts, so tick labels stay readable.
_MAX_GROUPS = 24


def _interference(data: ReportData) -> tuple[pd.DataFrame | None, str | None]:
    """The interference table joined with the report's run columns, or why there is none."""
    runs = data.ok
    if not runs["group_id"].notna().any():
        return None, "no co-located runs in these results (sharing mig, mps or timeslice)"
    try:
        from migperf.sharing.interference import interference_table
    except ImportError:
        return None, (
            "this migperf has no migperf.sharing.interference module to compute normalized progress"
        )
    table = interference_table(data.raw)
    if table is None or len(table) == 0:
        return None, (
            "co-located runs have no baseline to normalize against "
            "(add `baselines: true` to the config)"
        )
    table = table.reset_index(drop="run_id" in table.columns)
    if "run_id" not in table.columns:
        return None, "interference_table returned rows without run_id"
    wanted = [
        c
        for c in (
            "run_id",
            "group_id",
            "sharing",
            "slot",
            "profile_label",
            "workload",
            "batch_size",
            "layout",
            "group_size",
            "simulated",
            "gpu_name",
            "driver_version",
            "migperf_version",
        )
        if c not in table.columns or c == "run_id"
    ]
    merged = table.merge(data.runs[wanted], on="run_id", how="inner")
    return merged, None


def _group_label(job: pd.Series) -> str:
    """``bert-base bs 8`` over the layout, for one co-located group's x tick."""
    bs = job.get("batch_size")
    layout = job.get("layout")
    text = f"{job.get('workload', '?')} bs {'?' if is_missing(bs) else fmt(float(bs))}"
    return text + ("" if is_missing(layout) else f"\n{str(layout)[:24]}")


def _panel_style(metric: str) -> tuple[str, dict[str, Any] | None]:
    """The y label of a panel, and its legend (only STP's has labelled artists)."""
    if metric == "np_slot":
        return "normalized progress (shared / alone)", None
    if metric == "stp":
        return "STP (sum of NP)", {"fontsize": 7}
    return "p99 latency shared / alone", None


def interference_family(data: ReportData, palette: Palette) -> Family:
    """Normalized progress, STP and p99 inflation of co-located jobs.

    Args:
        data: The report's runs.
        palette: The report's colours (bars are coloured by profile).

    Returns:
        A figure (or several parts) per sharing mode, one cluster of bars per
        co-located group; notes count the groups without a baseline.
    """
    name = "Co-located jobs: normalized progress and STP"
    description = (
        "Jobs that shared the GPU at the same time (one per MIG slice, MPS clients, or "
        "time-sliced processes): normalized progress (throughput shared / alone on the same "
        "slot; 1 = no interference), the group's system throughput STP (sum of NP; ideal = "
        "number of jobs) and p99 latency inflation (p99 shared / alone)."
    )
    table, why = _interference(data)
    if table is None:
        return Family("interference", name, description, (), why)
    notes: list[str] = []
    known = table.groupby("group_id")["np_slot"].transform(lambda s: bool(s.notna().any()))
    without = table.loc[~known.astype(bool), "group_id"].nunique()
    if without:
        notes.append(
            f"{without} co-located group(s) without a baseline run alone on the same slot "
            "(add `baselines: true` to the config)"
        )
    table = table[known.astype(bool)]
    if table.empty:
        return Family("interference", name, description, (), notes[0], tuple(notes))
    plots: list[Plot] = []
    for skey, sgrp in groups(table, ["sharing"]):
        by_group = groups(sgrp, ["group_id"])
        for part, start in enumerate(range(0, len(by_group), _MAX_GROUPS)):
            chunk = by_group[start : start + _MAX_GROUPS]
            panels = ["np_slot", "stp"]
            if has(sgrp, "p99_inflation"):
                panels.append("p99_inflation")
            canvas = Canvas(len(panels), width=max(5.0, 0.45 * len(chunk) + 2.5))
            labels = []
            for gi, (_, grp) in enumerate(chunk):
                first = grp.iloc[0]
                labels.append(_group_label(first))
                jobs = grp.sort_values("slot") if "slot" in grp.columns else grp
                n = len(jobs)
                width = 0.8 / max(1, n)
                for ax, metric in zip(canvas.axes, panels, strict=True):
                    if metric == "stp":
                        value = jobs["stp"].dropna()
                        if not value.empty:
                            ax.bar(
                                gi,
                                float(value.iloc[0]),
                                width=0.6,
                                color="tab:blue",
                                label="STP" if gi == 0 else None,
                            )
                            ax.scatter(
                                gi,
                                n,
                                marker="_",
                                s=300,
                                color="0.3",
                                label="ideal (jobs in group)" if gi == 0 else None,
                            )
                        continue
                    for j, (_, job) in enumerate(jobs.iterrows()):
                        value = job.get(metric)
                        if is_missing(value):
                            continue
                        prof = str(job.get("profile_label", job.get("slot", "")))
                        ax.bar(
                            gi + (j - (n - 1) / 2) * width,
                            float(value),
                            width=width * 0.95,
                            color=palette.color(prof),
                        )
            for ax, metric in zip(canvas.axes, panels, strict=True):
                if metric != "stp":
                    # 1 = the job ran as fast (or as slowly) as it did alone.
                    ax.axhline(1.0, linestyle="--", color="0.4")
                ylabel, legend = _panel_style(metric)
                style_axes(
                    ax,
                    ylabel=ylabel,
                    categories=labels,
                    tick_size=7,
                    tick_rotation=30,
                    grid="y",
                    legend=legend,
                )
            from matplotlib.patches import Patch

            profs = sorted({str(p) for p in sgrp.get("profile_label", [])}, key=profile_sort_key)
            canvas.axes[0].legend(
                handles=[Patch(color=palette.color(p), label=p) for p in profs], fontsize=7
            )
            suffix = f" (part {part + 1})" if len(by_group) > _MAX_GROUPS else ""
            rows = sgrp[sgrp["group_id"].isin([g["group_id"] for g, _ in chunk])]
            workloads = ", ".join(sorted({str(w) for w in rows["workload"]}))
            title = f"{name}: {skey['sharing']} ({workloads}){suffix}"
            caption = (
                f"Co-located groups shared by {skey['sharing']}: one cluster of bars per group "
                "(workload, batch size, layout), one bar per job, coloured by profile."
            )
            plots.append(
                canvas.render(
                    slug("interference", skey["sharing"], part or None), title, caption, rows
                )
            )
    return Family(
        "interference",
        name,
        description,
        tuple(plots),
        None if plots else "the interference table is empty",
        tuple(notes),
    )
