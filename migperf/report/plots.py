"""The report's figures, drawn with matplotlib's Agg canvas into PNG and SVG.

Each *family* of plots answers one question of the MIGPerf study, and draws a
figure only for the data that can answer it (a line needs points, a sweep
needs two values); when it draws nothing it says why, so an empty section is
never a mystery:

* latency (p50, p99) and throughput vs batch size, one line per MIG profile,
  per (workload, task, precision, model arguments, sequence length);
* the same vs sequence length, when a sweep varied it;
* scaling across profiles: throughput relative to the full GPU (MIG off, or
  the largest profile measured) and throughput per compute slice relative to
  the full GPU's (above 1: n small instances beat one big one);
* GPU activity, memory used and energy per sample, per profile;
* latency CDFs from the raw samples, one line per profile and sharing mode;
* p99 latency (and completed rate) vs the server scenario's arrival rate, MIG vs
  MPS vs time-slicing;
* normalized progress, STP and p99 inflation of co-located jobs, from
  :func:`migperf.sharing.interference.interference_table`;
* the maximum QPS under the latency SLO per profile.

Every figure carries a footer naming the GPU, driver and migperf version of
its runs, and, when any of them ran on the simulator, a diagonal
"simulated GPU (CPU execution)" watermark across each axes, so a simulated
number cannot be mistaken for a measured one even when the PNG travels alone.

matplotlib is imported here and only here (ARCHITECTURE.md), and this module
is imported only by ``migperf report``, so ``migperf --help`` never loads it.
Figures are ``matplotlib.figure.Figure`` objects on an explicit Agg canvas:
no pyplot, no global backend switch, nothing shared between figures.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migperf.report.data import (
    MIG_OFF,
    ReportData,
    is_missing,
    profile_sort_key,
    provenance,
    uses_seq_len,
)

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Text of the watermark on every axes of a figure with simulated runs.
WATERMARK = "simulated GPU (CPU execution)"
#: SVG group id of the watermark (``<g id="migperf-watermark...">``).
WATERMARK_GID = "migperf-watermark"

_CDF_POINTS = 400
_MAX_PANELS = 6
_MAX_GROUPS = 24


@dataclass(frozen=True)
class Plot:
    """One rendered figure.

    Attributes:
        slug: File stem (``plots/<slug>.png``) and HTML anchor.
        title: What the figure shows (also its suptitle).
        caption: How to read it.
        footer: GPU, driver and migperf version of its runs.
        simulated: Whether any of its runs ran on the simulator (watermarked).
        png: The PNG file.
        svg: The SVG document.
    """

    slug: str
    title: str
    caption: str
    footer: str
    simulated: bool
    png: bytes
    svg: str


@dataclass(frozen=True)
class Family:
    """The plots of one kind, or why there are none.

    Attributes:
        key: Short id (``batch``, ``scaling``, ...), the HTML section anchor.
        name: Section title.
        description: What the section answers.
        plots: The figures drawn.
        missing: Why nothing was drawn (None when ``plots`` is not empty).
        notes: Data left out of the figures, and why.
    """

    key: str
    name: str
    description: str
    plots: tuple[Plot, ...]
    missing: str | None = None
    notes: tuple[str, ...] = ()


@dataclass
class _Palette:
    """Series colours: each MIG profile keeps one colour across the whole report.

    Profiles are registered first, in size order, and take the ``tab10``
    colours; any other series (batch sizes, sharing modes) gets the next
    ``Dark2`` colour *within its figure* (:meth:`local`), so the few series
    of one figure never end up with near-identical shades.
    """

    colors: dict[str, Any] = field(default_factory=dict)

    def color(self, label: str) -> Any:
        if label not in self.colors:
            from matplotlib import colormaps

            cmap = colormaps["tab10"] if len(self.colors) < 10 else colormaps["tab20"]
            self.colors[label] = cmap(len(self.colors) % cmap.N)
        return self.colors[label]

    def local(self) -> Callable[[str], Any]:
        """A colour chooser for one figure: profiles as everywhere, others from ``Dark2``."""
        from matplotlib import colormaps

        cmap = colormaps["Dark2"]
        seen: dict[str, Any] = {}

        def choose(label: str) -> Any:
            if label in self.colors:
                return self.colors[label]
            if label not in seen:
                seen[label] = cmap(len(seen) % cmap.N)
            return seen[label]

        return choose


_MARKERS = "osD^v<>pPX*h"


# --------------------------------------------------------------- helpers


def _has(rows: pd.DataFrame, column: str) -> bool:
    return column in rows.columns and bool(rows[column].notna().any())


def _where(rows: pd.DataFrame, mask: Sequence[bool]) -> pd.DataFrame:
    """Rows where ``mask`` is true (a plain list, even an empty one, is a row mask here)."""
    return rows.iloc[[i for i, keep in enumerate(mask) if keep]]


def _sortable(value: Any) -> tuple[int, float, str]:
    if is_missing(value):
        return (2, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _groups(rows: pd.DataFrame, keys: Sequence[str]) -> list[tuple[dict[str, Any], pd.DataFrame]]:
    """Split rows by the values of ``keys`` (None and NaN are one value), in a stable order."""
    buckets: dict[tuple[Any, ...], list[int]] = {}
    for i, values in enumerate(zip(*(rows[k].tolist() for k in keys), strict=True)):
        key = tuple(None if is_missing(v) else v for v in values)
        buckets.setdefault(key, []).append(i)
    order = sorted(buckets, key=lambda k: tuple(_sortable(v) for v in k))
    return [(dict(zip(keys, k, strict=True)), rows.iloc[buckets[k]]) for k in order]


def _model_args(text: Any) -> str:
    if is_missing(text) or text in ("{}", ""):
        return ""
    import json

    try:
        args = json.loads(text)
    except ValueError:
        return str(text)
    return ", ".join(f"{k}={v}" for k, v in sorted(args.items()))


def _what(key: dict[str, Any], workload: Any = None) -> str:
    """``bert-base infer fp32 (num_hidden_layers=2), seq 128`` for a group key.

    ``workload`` names the workload when the key does not (a panel inside a
    figure of one workload): the sequence length is shown for language models only.
    """
    parts = [str(key[k]) for k in ("workload", "task", "precision") if key.get(k) is not None]
    text = " ".join(parts)
    workload = key.get("workload", workload)
    args = _model_args(key.get("model_args"))
    if args:
        text += f" ({args})"
    for name, word in (
        ("batch_size", "batch"),
        ("seq_len", "seq"),
        ("scenario", "scenario"),
        ("target_qps", "target QPS"),
    ):
        if name == "seq_len" and not uses_seq_len(workload):
            continue
        if name in key and not is_missing(key[name]):
            value = key[name]
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            text += f", {word} {shown}"
    return text.lstrip(", ")


def _slug(*parts: Any) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:120] or "plot"


def _series_label(row_profile: str, sharing: Any, role: Any = None) -> str:
    label = str(row_profile)
    if not is_missing(sharing) and sharing != "exclusive":
        label += f" · {sharing}"
    if role == "baseline":
        label += " · alone"
    return label


def _profiles(rows: pd.DataFrame) -> list[str]:
    return sorted({str(p) for p in rows["profile_label"]}, key=profile_sort_key)


def _fmt(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.3g}"


class _Canvas:
    """A figure with panels, watermarked and footed when rendered."""

    def __init__(self, panels: int, *, width: float = 5.0, height: float = 3.8) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.cols = min(panels, 3)
        self.rows = math.ceil(panels / self.cols)
        self.fig: Figure = Figure(
            figsize=(width * self.cols, height * self.rows + 0.8), layout="constrained"
        )
        FigureCanvasAgg(self.fig)
        grid = self.fig.subplots(self.rows, self.cols, squeeze=False)
        flat = [ax for row in grid for ax in row]
        for ax in flat[panels:]:
            ax.remove()
        self.axes: list[Axes] = flat[:panels]

    def render(self, slug: str, title: str, caption: str, rows: pd.DataFrame) -> Plot:
        import matplotlib

        fig = self.fig
        footer = provenance(rows)
        simulated = bool(rows["simulated"].any())
        fig.suptitle(title, fontsize=12, fontweight="bold")
        # Leave a strip at the bottom for the footer: constrained layout does
        # not know about free-standing figure text.
        from matplotlib.layout_engine import ConstrainedLayoutEngine

        engine = fig.get_layout_engine()
        if isinstance(engine, ConstrainedLayoutEngine):
            strip = 0.35 / fig.get_figheight()
            engine.set(rect=(0, strip, 1, 1 - strip))
        fig.text(
            0.5,
            0.08 / fig.get_figheight(),
            footer,
            ha="center",
            va="bottom",
            fontsize=8,
            color="0.35",
        )
        if simulated:
            for ax in self.axes:
                _watermark(ax, fig, self.rows, self.cols)
        png = io.BytesIO()
        svg = io.BytesIO()
        # Text stays text in the SVG (searchable, selectable); the hash salt
        # makes the SVG's element ids unique per plot and stable across runs.
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": slug}):
            fig.savefig(png, format="png", dpi=110, metadata={"Software": None})
            # The layout is settled by the first save; keep it rather than solve it again.
            fig.set_layout_engine("none")
            fig.savefig(svg, format="svg", metadata={"Date": None})
        return Plot(
            slug=slug,
            title=title,
            caption=caption,
            footer=footer,
            simulated=simulated,
            png=png.getvalue(),
            svg=svg.getvalue().decode("utf-8"),
        )


def _watermark(ax: Axes, fig: Figure, rows: int, cols: int) -> None:
    w, h = fig.get_figwidth() / cols, (fig.get_figheight() - 0.8) / rows
    angle = math.degrees(math.atan2(h, w))
    size = min(26.0, 0.75 * math.hypot(w, h) * 72 / (len(WATERMARK) * 0.6))
    ax.text(
        0.5,
        0.5,
        WATERMARK,
        transform=ax.transAxes,
        rotation=angle,
        rotation_mode="anchor",
        ha="center",
        va="center",
        fontsize=size,
        fontweight="bold",
        color="tab:red",
        alpha=0.22,
        zorder=10,
        gid=WATERMARK_GID,
    )


def _xaxis(ax: Axes, values: Sequence[float], label: str) -> None:
    values = sorted({float(v) for v in values if not is_missing(v)})
    if values and values[0] > 0 and values[-1] / values[0] >= 4:
        ax.set_xscale("log", base=2)
    if 0 < len(values) <= 12:
        # The swept values themselves, not 1.25, 1.5, ... between batch sizes 1 and 2.
        ax.set_xticks(values)
        ax.set_xticklabels([_fmt(v) for v in values])
        ax.minorticks_off()
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def _line(
    ax: Axes, agg: pd.DataFrame, label: str, color: Any, marker: str, *, spread: bool = True
) -> None:
    ax.plot(agg.index, agg["mean"], marker=marker, label=label, color=color, linewidth=1.6)
    if spread and bool((agg["max"] > agg["min"]).any()):
        ax.fill_between(agg.index, agg["min"], agg["max"], color=color, alpha=0.15, linewidth=0)


def _measured(data: ReportData) -> pd.DataFrame:
    """Successful exclusive throughput runs of measured jobs (the study's main figures)."""
    runs = data.ok
    return runs[
        (runs["role"] == "job") & (runs["sharing"] == "exclusive") & runs["scenario"].isna()
    ]


# ------------------------------------------------------------- families


def _sweep(
    data: ReportData, palette: _Palette, *, x: str, fixed: str, key: str, name: str, axis: str
) -> Family:
    description = (
        f"{name}, one line per MIG profile (shaded: spread over repeats and slots), "
        f"per workload, task, precision, model arguments and {'sequence length' if fixed == 'seq_len' else 'batch size'}."
    )
    rows = _measured(data)
    if x == "seq_len":
        rows = _where(rows, [uses_seq_len(w) for w in rows["workload"]])
    plots: list[Plot] = []
    for gkey, grp in _groups(rows, ["workload", "task", "precision", "model_args", fixed]):
        if grp[x].nunique() < 2:
            continue
        panels = [
            (m, label)
            for m, label in (
                ("latency_p50_ms", "p50 latency (ms)"),
                ("latency_p99_ms", "p99 latency (ms)"),
            )
            if _has(grp, m)
        ]
        if not panels and _has(grp, "latency_mean_ms"):
            panels.append(("latency_mean_ms", "mean latency (ms)"))
        if _has(grp, "samples_per_s"):
            panels.append(("samples_per_s", "throughput (samples/s)"))
        if not panels:
            continue
        canvas = _Canvas(len(panels))
        for ax, (metric, label) in zip(canvas.axes, panels, strict=True):
            for i, prof in enumerate(_profiles(grp)):
                sub = grp[grp["profile_label"] == prof]
                agg = sub.groupby(x)[metric].agg(["mean", "min", "max"]).dropna().sort_index()
                if not agg.empty:
                    _line(ax, agg, prof, palette.color(prof), _MARKERS[i % len(_MARKERS)])
            _xaxis(ax, grp[x].tolist(), axis)
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
        canvas.axes[0].legend(title="MIG profile", fontsize=8)
        title = f"{name}: {_what(gkey)}"
        caption = (
            f"{name} for {_what(gkey)}. Each line is one MIG profile ({MIG_OFF}: the whole GPU "
            "with MIG disabled); points are means over repeats and slots of the same profile."
        )
        parts = [v for k, v in gkey.items() if k != "seq_len" or uses_seq_len(gkey["workload"])]
        plots.append(canvas.render(_slug(key, *parts), title, caption, grp))
    missing = None
    if not plots:
        what = "batch sizes" if x == "batch_size" else "sequence lengths"
        kind = "workload" if x == "batch_size" else "language model"
        missing = (
            f"no {kind} has successful exclusive runs at two or more {what} "
            f"(sweep `{x}` in the config to draw this)"
        )
    return Family(key, name, description, tuple(plots), missing)


def batch_family(data: ReportData, palette: _Palette) -> Family:
    """Latency (p50, p99) and throughput vs batch size, one line per profile."""
    return _sweep(
        data,
        palette,
        x="batch_size",
        fixed="seq_len",
        key="batch",
        name="Latency and throughput vs batch size",
        axis="batch size",
    )


def seq_family(data: ReportData, palette: _Palette) -> Family:
    """Latency and throughput vs sequence length (language models), one line per profile."""
    return _sweep(
        data,
        palette,
        x="seq_len",
        fixed="batch_size",
        key="seqlen",
        name="Latency and throughput vs sequence length",
        axis="sequence length (tokens)",
    )


def scaling_family(data: ReportData, palette: _Palette) -> Family:
    """Throughput relative to the full GPU, and per compute slice, across profiles."""
    name = "Scaling across MIG profiles"
    description = (
        "How throughput scales with the slice of the GPU a job gets: left, each profile's "
        "throughput relative to the full GPU (MIG off, or the largest profile measured); "
        "right, throughput per compute slice relative to the full GPU's. Above 1 on the "
        "right, n instances of that profile (7 x 1g) do more work than one full GPU (1 x 7g)."
    )
    rows = _measured(data)
    rows = rows[rows["samples_per_s"].notna()] if "samples_per_s" in rows.columns else rows.iloc[:0]
    rows = rows[rows["compute_slices"].notna()]
    plots: list[Plot] = []
    notes: list[str] = []
    for gkey, grp in _groups(rows, ["workload", "task", "precision", "model_args"]):
        labels = _profiles(grp)
        if len(labels) < 2:
            continue
        ref_label = MIG_OFF if MIG_OFF in labels else labels[-1]
        slices = {
            str(p): int(s) for p, s in zip(grp["profile_label"], grp["compute_slices"], strict=True)
        }
        canvas = _Canvas(2)
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
        for i, (ckey, sub) in enumerate(_groups(grp, ["batch_size", "seq_len"])):
            means = sub.groupby("profile_label")["samples_per_s"].mean()
            label = f"batch {ckey['batch_size']}" + (f", seq {ckey['seq_len']}" if vary_seq else "")
            if ref_label not in means.index:
                notes.append(f"{_what(gkey)}, {label}: not measured on {ref_label}, left out")
                continue
            ref = float(means[ref_label])
            if not ref > 0:
                continue
            got = [(j, p) for j, p in enumerate(labels) if p in means.index]
            color = colour(label)
            marker = _MARKERS[i % len(_MARKERS)]
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
        for ax in canvas.axes:
            ax.set_xticks(xs)
            ax.set_xticklabels(ticks, fontsize=8)
            ax.set_xlabel("MIG profile (compute slices)")
            ax.grid(alpha=0.3)
            ax.set_ylim(bottom=0)
        ax1.set_ylabel(f"throughput / {ref_label}'s")
        ax2.set_ylabel(f"throughput per compute slice / {ref_label}'s")
        ax1.legend(fontsize=8)
        ax2.legend(fontsize=8)
        title = f"{name}: {_what(gkey)}"
        caption = (
            f"{_what(gkey)}: throughput (samples/s) of each profile divided by the {ref_label}'s "
            f"({ref_slices} compute slices), and the same per compute slice. A point above 1 on the "
            f"right means filling the GPU with that profile beats one {ref_label}."
        )
        plots.append(canvas.render(_slug("scaling", *gkey.values()), title, caption, grp))
    missing = (
        None
        if plots
        else (
            "needs successful exclusive runs of one workload on two or more MIG profiles "
            "(list several layouts, or `instances: each`)"
        )
    )
    return Family("scaling", name, description, tuple(plots), missing, tuple(notes))


_RESOURCE_PANELS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("activity_graphics_pct", "activity_sm_pct", "gpu_util_mean_pct"), "GPU activity (%)"),
    (
        ("instance_memory_used_max_mib", "gpu_memory_used_max_mib", "peak_memory_mib"),
        "memory used (MiB)",
    ),
    (("energy_per_sample_j",), "energy per sample (J)"),
)


def resources_family(data: ReportData, palette: _Palette) -> Family:
    """GPU activity, memory used and energy per sample, per profile."""
    name = "GPU activity, memory and energy per profile"
    description = (
        "What each profile's runs used: engine activity (DCGM/GPM graphics or SM activity), "
        "the slice's memory in use, and energy per sample. Energy is the whole GPU's "
        "(NVML has no per-slice power sensor): it includes the idle draw of the other slices."
    )
    rows = _measured(data)
    plots: list[Plot] = []
    for gkey, grp in _groups(rows, ["workload", "task", "precision", "model_args"]):
        panels: list[tuple[str, str]] = []
        for candidates, label in _RESOURCE_PANELS:
            metric = next((m for m in candidates if _has(grp, m)), None)
            if metric is not None:
                panels.append((metric, label))
        if not panels:
            continue
        labels = _profiles(grp)
        configs = _groups(grp, ["batch_size", "seq_len"])
        vary_seq = grp["seq_len"].nunique() > 1
        canvas = _Canvas(len(panels))
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
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, fontsize=8)
            ax.set_xlabel("MIG profile")
            ax.set_ylabel(f"{label}\n[{metric}]", fontsize=9)
            ax.grid(alpha=0.3, axis="y")
        if len(configs) > 1:
            canvas.axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        title = f"{name}: {_what(gkey)}"
        caption = (
            f"{_what(gkey)}: "
            + ", ".join(f"{label} ({metric})" for metric, label in panels)
            + " per MIG profile; bars are means over repeats and slots."
        )
        plots.append(canvas.render(_slug("resources", *gkey.values()), title, caption, grp))
    missing = (
        None
        if plots
        else (
            "no successful exclusive run has activity, memory or energy numbers "
            "(telemetry is off, or the runs were not sampled)"
        )
    )
    return Family("resources", name, description, tuple(plots), missing)


def _cdf_points(values: Sequence[float]) -> tuple[list[float], list[float]]:
    import numpy as np

    arr = np.sort(np.asarray(values, dtype=float))
    n = len(arr)
    if n > _CDF_POINTS:
        q = np.linspace(0.0, 1.0, _CDF_POINTS)
        return list(np.quantile(arr, q)), list(q)
    return list(arr), [(i + 1) / n for i in range(n)]


def cdf_family(data: ReportData, palette: _Palette) -> Family:
    """Latency CDFs from the raw samples, one line per profile and sharing mode."""
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
    has = [len(data.latency_samples(r)) >= 2 for r in ids]
    runs = _where(runs, has)
    plots: list[Plot] = []
    for gkey, grp in _groups(runs, ["workload", "task", "precision", "model_args", "scenario"]):
        panels = _groups(grp, ["batch_size", "seq_len", "target_qps"])
        parts = math.ceil(len(panels) / _MAX_PANELS)
        size = math.ceil(len(panels) / parts)
        for part, start in enumerate(range(0, len(panels), size)):
            chunk = panels[start : start + size]
            canvas = _Canvas(len(chunk), width=4.6, height=3.6)
            for ax, (pkey, sub) in zip(canvas.axes, chunk, strict=True):
                series: dict[str, list[float]] = {}
                for rid, prof, sharing, role in zip(
                    sub["run_id"], sub["profile_label"], sub["sharing"], sub["role"], strict=True
                ):
                    series.setdefault(_series_label(prof, sharing, role), []).extend(
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
                ax.set_ylim(0, 1.01)
                ax.set_xlabel("latency (ms)")
                ax.set_ylabel("fraction of samples ≤ latency")
                ax.set_title(_what(pkey, gkey["workload"]) or "all runs", fontsize=9)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7, loc="lower right")
            suffix = f" (part {part + 1} of {parts})" if parts > 1 else ""
            title = f"{name}: {_what(gkey)}{suffix}"
            caption = (
                f"{_what(gkey)}: cumulative distribution of the raw latency samples per "
                "profile and sharing mode; each panel is one batch size (sequence length, "
                "target QPS)."
            )
            rows = grp[grp["run_id"].isin([r for _, sub in chunk for r in sub["run_id"]])]
            plots.append(
                canvas.render(_slug("cdf", *gkey.values(), part or None), title, caption, rows)
            )
    missing = None if plots else "no successful run stored raw latency samples"
    return Family("cdf", name, description, tuple(plots), missing)


def arrival_family(data: ReportData, palette: _Palette) -> Family:
    """p99 latency and completed rate vs the server scenario's target QPS."""
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
    for gkey, grp in _groups(
        runs, ["workload", "task", "precision", "model_args", "batch_size", "seq_len"]
    ):
        grp = grp.assign(
            series=[
                _series_label(p, s)
                for p, s in zip(grp["profile_label"], grp["sharing"], strict=True)
            ]
        )
        if grp.groupby("series")["target_qps"].nunique().max() < 2:
            continue
        panels = [("latency_p99_ms", "p99 latency (ms)")]
        if _has(grp, "samples_per_s"):
            panels.append(("samples_per_s", "completed (samples/s)"))
        canvas = _Canvas(len(panels))
        colour = palette.local()
        for ax, (metric, label) in zip(canvas.axes, panels, strict=True):
            for i, series in enumerate(sorted(set(grp["series"]), key=profile_sort_key)):
                sub = grp[grp["series"] == series]
                agg = sub.groupby("target_qps")[metric].agg(["mean", "min", "max"]).sort_index()
                color = colour(series)
                _line(ax, agg, series, color, _MARKERS[i % len(_MARKERS)])
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
            if metric == "latency_p99_ms" and _has(grp, "slo_latency_ms"):
                slo = sorted(set(grp["slo_latency_ms"].dropna()))
                if len(slo) == 1:
                    ax.axhline(
                        slo[0],
                        linestyle="--",
                        color="tab:red",
                        linewidth=1,
                        label=f"SLO {_fmt(slo[0])} ms",
                    )
            if metric == "samples_per_s":
                # One sample per query in the server scenario: completed = offered.
                offered = sorted(set(grp["target_qps"]))
                ax.plot(offered, offered, linestyle=":", color="0.5", label="completed = offered")
            _xaxis(ax, grp["target_qps"].tolist(), "target arrival rate (queries/s)")
            ax.set_ylabel(label)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=7)
        title = f"{name}: {_what(gkey)}"
        caption = (
            f"{_what(gkey)}, server scenario: p99 latency per sample at each target arrival "
            "rate, and the completed rate; one line per profile and sharing mode."
        )
        plots.append(canvas.render(_slug("arrival", *gkey.values()), title, caption, grp))
    missing = (
        None
        if plots
        else ("needs server-scenario runs at two or more `scenario.target_qps` values")
    )
    return Family("arrival", name, description, tuple(plots), missing)


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
    text = f"{job.get('workload', '?')} bs {'?' if is_missing(bs) else _fmt(float(bs))}"
    return text + ("" if is_missing(layout) else f"\n{str(layout)[:24]}")


def interference_family(data: ReportData, palette: _Palette) -> Family:
    """Normalized progress, STP and p99 inflation of co-located jobs."""
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
    for skey, sgrp in _groups(table, ["sharing"]):
        groups = _groups(sgrp, ["group_id"])
        for part, start in enumerate(range(0, len(groups), _MAX_GROUPS)):
            chunk = groups[start : start + _MAX_GROUPS]
            panels = ["np_slot", "stp"]
            if _has(sgrp, "p99_inflation"):
                panels.append("p99_inflation")
            canvas = _Canvas(len(panels), width=max(5.0, 0.45 * len(chunk) + 2.5))
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
                ax.set_xticks(range(len(chunk)))
                ax.set_xticklabels(labels, fontsize=7, rotation=30, ha="right")
                ax.grid(alpha=0.3, axis="y")
                if metric == "np_slot":
                    ax.axhline(1.0, linestyle="--", color="0.4")
                    ax.set_ylabel("normalized progress (shared / alone)")
                elif metric == "stp":
                    ax.set_ylabel("STP (sum of NP)")
                    ax.legend(fontsize=7)
                else:
                    ax.axhline(1.0, linestyle="--", color="0.4")
                    ax.set_ylabel("p99 latency shared / alone")
            from matplotlib.patches import Patch

            profs = sorted({str(p) for p in sgrp.get("profile_label", [])}, key=profile_sort_key)
            canvas.axes[0].legend(
                handles=[Patch(color=palette.color(p), label=p) for p in profs], fontsize=7
            )
            suffix = f" (part {part + 1})" if len(groups) > _MAX_GROUPS else ""
            rows = sgrp[sgrp["group_id"].isin([g["group_id"] for g, _ in chunk])]
            workloads = ", ".join(sorted({str(w) for w in rows["workload"]}))
            title = f"{name}: {skey['sharing']} ({workloads}){suffix}"
            caption = (
                f"Co-located groups shared by {skey['sharing']}: one cluster of bars per group "
                "(workload, batch size, layout), one bar per job, coloured by profile."
            )
            plots.append(
                canvas.render(
                    _slug("interference", skey["sharing"], part or None), title, caption, rows
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


def capacity_family(data: ReportData, palette: _Palette) -> Family:
    """Max QPS under the latency SLO, per profile and sharing mode."""
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
    for gkey, grp in _groups(runs, ["workload", "task", "precision", "model_args", "seq_len"]):
        grp = grp.assign(
            series=[
                _series_label(p, s)
                for p, s in zip(grp["profile_label"], grp["sharing"], strict=True)
            ]
        )
        labels = sorted(set(grp["series"]), key=profile_sort_key)
        configs = _groups(grp, ["batch_size"])
        canvas = _Canvas(1, width=max(6.0, 0.9 * len(labels) * len(configs) + 2))
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
                ax.text(x, float(value), _fmt(float(value)), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.set_xlabel("MIG profile (and sharing mode)")
        ax.set_ylabel("max QPS under the SLO (queries/s)")
        ax.set_ylim(0, top * 1.15)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        slo = sorted(
            {
                f"p{_fmt(p)} ≤ {_fmt(ms)} ms"
                for p, ms in zip(
                    grp.get("slo_percentile", [float("nan")] * len(grp)),
                    grp.get("slo_latency_ms", [float("nan")] * len(grp)),
                    strict=True,
                )
                if not is_missing(p) and not is_missing(ms)
            }
        )
        title = f"{name}: {_what(gkey)}"
        caption = (
            f"{_what(gkey)}: the highest arrival rate served within the SLO"
            + (f" ({', '.join(slo)})" if slo else "")
            + " per profile and sharing mode."
        )
        plots.append(canvas.render(_slug("capacity", *gkey.values()), title, caption, grp))
    missing = (
        None
        if plots
        else "no successful scenario run searched for its max QPS (`find_max_qps: true`)"
    )
    return Family("capacity", name, description, tuple(plots), missing)


#: The families in report order.
FAMILIES: tuple[Callable[[ReportData, _Palette], Family], ...] = (
    batch_family,
    seq_family,
    scaling_family,
    resources_family,
    cdf_family,
    arrival_family,
    interference_family,
    capacity_family,
)


def draw_all(data: ReportData) -> list[Family]:
    """Every family of plots for these runs (each possibly empty, with its reason)."""
    palette = _Palette()
    for prof in _profiles(data.runs):
        palette.color(prof)
    return [family(data, palette) for family in FAMILIES]
