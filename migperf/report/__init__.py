"""Reports on stored results: plots, HTML and Markdown pages, and run-to-run comparison.

* :func:`build_report` (``migperf report``) draws the MIGPerf study's figures and more
  from a results store into a self-contained HTML page, PNG/SVG files and a Markdown
  summary (:mod:`migperf.report.page`, :mod:`migperf.report.plots`);
* :func:`compare_results` (``migperf compare``) matches the runs of two stores or two
  config hashes and tests each change for significance (:mod:`migperf.report.compare`).

Importing this package is cheap: matplotlib and scipy load only when a report is
drawn or a comparison is tested. Usage::

    from migperf.report import build_report
    report = build_report("results/migperf.db", "results/report")
    print(report.html_path, report.plot_count, [f.key for f in report.families if f.missing])
"""

from __future__ import annotations

from migperf.report.compare import Comparison, compare_results
from migperf.report.page import ReportResult, build_report

__all__ = ["Comparison", "ReportResult", "build_report", "compare_results"]
