"""The report's figures, drawn with matplotlib's Agg canvas into PNG and SVG.

Each *family* of plots answers one question of the MIGPerf study, and draws a
figure only for the data that can answer it (a line needs points, a sweep
needs two values); when it draws nothing it says why, so an empty section is
never a mystery. One module per family, listed in report order by
:data:`~migperf.report.plots.registry.FAMILIES`:

* :mod:`~.batch`: latency (p50, p99) and throughput vs batch size, one line per
  MIG profile, per (workload, task, precision, model arguments, sequence length);
* :mod:`~.seqlen`: the same vs sequence length, when a sweep varied it
  (both drawn by :mod:`~.sweep`);
* :mod:`~.scaling`: throughput relative to the full GPU (MIG off, or the largest
  profile measured) and throughput per compute slice relative to the full GPU's
  (above 1: n small instances beat one big one);
* :mod:`~.resources`: GPU activity, memory used and energy per sample, per profile;
* :mod:`~.cdf`: latency CDFs from the raw samples, one line per profile and sharing mode;
* :mod:`~.arrival`: p99 latency (and completed rate) vs the server scenario's
  arrival rate, MIG vs MPS vs time-slicing;
* :mod:`~.interference`: normalized progress, STP and p99 inflation of co-located
  jobs, from :func:`migperf.sharing.interference.interference_table`;
* :mod:`~.capacity`: the maximum QPS under the latency SLO per profile.

What they share: :mod:`~.base` (the Plot and Family records, the colours),
:mod:`~.canvas` (figure, axis style, footer, simulator watermark, saving) and
:mod:`~.rows` (grouping and naming runs). matplotlib is imported only inside
this package's functions, and the package only by ``migperf report``, so
``migperf --help`` never loads it. Usage::

    from migperf.report.data import load_report_data
    from migperf.report.plots import draw_all
    print([(f.key, len(f.plots), f.missing) for f in draw_all(load_report_data("migperf.db"))])
"""

from __future__ import annotations

from migperf.report.plots.base import DrawFamily, Family, Palette, Plot
from migperf.report.plots.canvas import WATERMARK, WATERMARK_GID
from migperf.report.plots.registry import FAMILIES, draw_all

__all__ = [
    "FAMILIES",
    "WATERMARK",
    "WATERMARK_GID",
    "DrawFamily",
    "Family",
    "Palette",
    "Plot",
    "draw_all",
]
