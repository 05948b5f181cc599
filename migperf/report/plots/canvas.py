"""The figure every family draws on: panels, one axis style, footer, watermark, saving.

Every figure carries a footer naming the GPU, driver and migperf version of
its runs, and, when any of them ran on the simulator, a diagonal
"simulated GPU (emulated on CPU)" watermark across each axes, so a simulated
number cannot be mistaken for a measured one even when the PNG travels alone.

Figures are ``matplotlib.figure.Figure`` objects on an explicit Agg canvas:
no pyplot, no global backend switch, nothing shared between figures.
matplotlib is imported inside the functions, so importing the plots costs nothing
until a report is drawn.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from migperf.report.data import is_missing, provenance
from migperf.report.plots.base import Plot
from migperf.report.plots.rows import fmt

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Text of the watermark on every axes of a figure with simulated runs.
WATERMARK = "simulated GPU (emulated on CPU)"
#: SVG group id of the watermark (``<g id="migperf-watermark...">``).
WATERMARK_GID = "migperf-watermark"


class Canvas:
    """A figure with panels, watermarked and footed when rendered.

    Args:
        panels: Number of axes, laid out three to a row.
        width: Width of one panel (inches).
        height: Height of one panel (inches).

    Attributes:
        cols: Panels per row.
        rows: Rows of panels.
        fig: The figure, on an Agg canvas.
        axes: One axes per panel, row by row.
    """

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
        """Title, foot and (for simulated runs) watermark the figure, then save it.

        Args:
            slug: File stem and anchor (also salts the SVG's element ids).
            title: The figure's suptitle.
            caption: How to read it.
            rows: The runs drawn (for the footer and the watermark).

        Returns:
            The figure as PNG and SVG.
        """
        import matplotlib

        fig = self.fig
        footer = provenance(rows)
        simulated = bool(rows["simulated"].any())
        # Wrapped to the figure's width: a long group name must not run off both edges.
        fig.suptitle(fit_text(title, fig.get_figwidth(), 12), fontsize=12, fontweight="bold")
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


def _sweep_ticks(ax: Axes, swept: Sequence[Any]) -> None:
    values = sorted({float(v) for v in swept if not is_missing(v)})
    if values and values[0] > 0 and values[-1] / values[0] >= 4:
        ax.set_xscale("log", base=2)
    if 0 < len(values) <= 12:
        # The swept values themselves, not 1.25, 1.5, ... between batch sizes 1 and 2.
        ax.set_xticks(values)
        ax.set_xticklabels([fmt(v) for v in values])
        ax.minorticks_off()


def style_axes(
    ax: Axes,
    *,
    ylabel: str,
    xlabel: str | None = None,
    swept: Sequence[Any] | None = None,
    categories: Sequence[str] | None = None,
    tick_size: float = 8,
    tick_rotation: float | None = None,
    xlim: tuple[float, float] | None = None,
    ylim: tuple[float, float | None] | None = None,
    ylabel_size: float | None = None,
    grid: Literal["both", "y"] = "both",
    title: str | None = None,
    legend: Mapping[str, Any] | None = None,
) -> None:
    """Label, tick, grid and bound one panel, after its data is drawn.

    Call it last for each axes: the y limits freeze the autoscaled range, and the
    legend picks up only the artists drawn so far.

    Args:
        ax: The panel.
        ylabel: The y axis label.
        xlabel: The x axis label (None: none).
        swept: The x values of a sweep (batch sizes, arrival rates): ticks at
            exactly these values, on a log2 scale when they span a factor of 4.
        categories: One tick label per bar group at x = 0, 1, 2, ...
        tick_size: Font size of the category labels.
        tick_rotation: Slant of the category labels (right-aligned), for long ones.
        xlim: The x range.
        ylim: The y range; an upper bound of None keeps the autoscaled top.
        ylabel_size: Font size of the y label (None: the default).
        grid: ``both`` for line plots, ``y`` for bar charts.
        title: The panel's own title, in small type.
        legend: Keyword arguments of ``Axes.legend`` (None: no legend).
    """
    if swept is not None:
        _sweep_ticks(ax, swept)
    if categories is not None:
        ax.set_xticks(range(len(categories)))
        if tick_rotation is None:
            ax.set_xticklabels(categories, fontsize=tick_size)
        else:
            ax.set_xticklabels(categories, fontsize=tick_size, rotation=tick_rotation, ha="right")
    if xlim is not None:
        ax.set_xlim(*xlim)
    if xlabel is not None:
        ax.set_xlabel(xlabel)
    if ylabel_size is None:
        ax.set_ylabel(ylabel)
    else:
        ax.set_ylabel(ylabel, fontsize=ylabel_size)
    if ylim is not None:
        bottom, top = ylim
        if top is None:
            ax.set_ylim(bottom=bottom)
        else:
            ax.set_ylim(bottom, top)
    if grid == "y":
        ax.grid(alpha=0.3, axis="y")
    else:
        ax.grid(alpha=0.3)
    if title is not None:
        fig = ax.get_figure(root=True)
        width_in = ax.get_position().width * (fig.get_figwidth() if fig is not None else 6.4)
        ax.set_title(fit_text(title, width_in, 9), fontsize=9)
    if legend is not None:
        ax.legend(**legend)


def fit_text(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points.

    An average glyph is about 0.6 em wide (bold DejaVu Sans, matplotlib's default);
    at least 20 characters per line.
    """
    import textwrap

    per_line = max(20, int(width_in * 72 / (fontsize * 0.6)))
    return "\n".join(textwrap.wrap(text, per_line)) or text


def line(
    ax: Axes, agg: pd.DataFrame, label: str, color: Any, marker: str, *, spread: bool = True
) -> None:
    """One series as a line through its means, shaded between its min and max.

    Args:
        ax: The panel.
        agg: ``mean``, ``min`` and ``max`` columns, indexed by x.
        label: Legend label.
        color: Line colour.
        marker: Point marker.
        spread: Whether to shade the min-max band (when there is one).
    """
    ax.plot(agg.index, agg["mean"], marker=marker, label=label, color=color, linewidth=1.6)
    if spread and bool((agg["max"] > agg["min"]).any()):
        ax.fill_between(agg.index, agg["min"], agg["max"], color=color, alpha=0.15, linewidth=0)
