"""What every plot family shares: the figure and family records, and the colours.

A family is a function ``(ReportData, Palette) -> Family`` (:data:`DrawFamily`);
:mod:`migperf.report.plots.registry` lists them in report order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from migperf.report.data import ReportData

#: Line markers, one per series in the order a figure draws them.
MARKERS = "osD^v<>pPX*h"


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
class Palette:
    """Series colours: each MIG profile keeps one colour across the whole report.

    Profiles are registered first, in size order, and take the ``tab10``
    colours; any other series (batch sizes, sharing modes) gets the next
    ``Dark2`` colour *within its figure* (:meth:`local`), so the few series
    of one figure never end up with near-identical shades.

    Attributes:
        colors: Series label -> colour given so far, report-wide.
    """

    colors: dict[str, Any] = field(default_factory=dict)

    def color(self, label: str) -> Any:
        """The report-wide colour of a series, given on first use.

        Args:
            label: The series (a MIG profile, as a rule).

        Returns:
            A matplotlib RGBA tuple.
        """
        if label not in self.colors:
            from matplotlib import colormaps

            cmap = colormaps["tab10"] if len(self.colors) < 10 else colormaps["tab20"]
            self.colors[label] = cmap(len(self.colors) % cmap.N)
        return self.colors[label]

    def local(self) -> Callable[[str], Any]:
        """A colour chooser for one figure: profiles as everywhere, others from ``Dark2``.

        Returns:
            A function from series label to matplotlib RGBA tuple.
        """
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


#: One plot family: draws its figures for these runs, or says why it has none.
DrawFamily: TypeAlias = Callable[["ReportData", Palette], Family]
