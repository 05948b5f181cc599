"""The plot families in report order, and :func:`draw_all`, which draws them.

Adding a family: write ``plots/<key>.py`` with a :data:`~migperf.report.plots.base.DrawFamily`
function and list it in :data:`FAMILIES` at the place its section belongs.
"""

from __future__ import annotations

from migperf.report.data import ReportData
from migperf.report.plots.arrival import arrival_family
from migperf.report.plots.base import DrawFamily, Family, Palette
from migperf.report.plots.batch import batch_family
from migperf.report.plots.capacity import capacity_family
from migperf.report.plots.cdf import cdf_family
from migperf.report.plots.interference import interference_family
from migperf.report.plots.resources import resources_family
from migperf.report.plots.rows import profiles
from migperf.report.plots.scaling import scaling_family
from migperf.report.plots.seqlen import seq_family

#: The families in report order (the order of the page's sections).
FAMILIES: tuple[DrawFamily, ...] = (
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
    """Every family of plots for these runs (each possibly empty, with its reason).

    Args:
        data: The report's runs.

    Returns:
        One :class:`~migperf.report.plots.base.Family` per entry of :data:`FAMILIES`, in order.
    """
    palette = Palette()
    # Profiles take their colours first, in size order, so a profile's colour is
    # the same in every figure whatever the family that happens to draw it first.
    for prof in profiles(data.runs):
        palette.color(prof)
    return [family(data, palette) for family in FAMILIES]
