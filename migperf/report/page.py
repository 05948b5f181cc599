"""``migperf report``: the HTML page, the Markdown summary and the plot files.

:func:`build_report` reads a store (optionally filtered), draws every plot
family of :mod:`migperf.report.plots` and writes into one folder::

    index.html       self-contained: every plot inline as SVG, CSS and a few
                     lines of script inline; nothing is fetched to view it
    report.md        the same tables, with the plots as PNG links
    plots/<slug>.png and plots/<slug>.svg, one pair per plot
    .migperf-report  marks the folder as a report's (only a new, empty or
                     report folder is written into: migperf.report.folder)

Tables list every run with its headline numbers (throughput, mean latency
with its confidence interval, p50, p99, memory, energy per sample), and every
run that did not finish (failed, crashed, OOM, timeout, skipped, layout
failed) with the reason the store recorded: an unfinished run is never left
out of a report. Simulated results are flagged in the page header, in the
Markdown and, as a watermark, on every plot. When the store holds
``migperf compat`` matrices, the latest one per device is a table of its own
(:mod:`migperf.report.compat_table`).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from migperf import __version__
from migperf.report.compat_table import compat_html, compat_markdown, latest_matrices
from migperf.report.data import ReportData, is_missing, load_report_data

if TYPE_CHECKING:
    import pandas as pd

    from migperf.report.plots import Family
    from migperf.results.compat import CompatRow


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote.

    Attributes:
        out_dir: The report folder.
        html_path: ``index.html``.
        markdown_path: ``report.md``.
        plot_files: Every PNG and SVG written.
        families: Each plot family, with its plots or why it has none.
        runs: Runs covered.
        not_ok: Runs that did not finish ``ok`` (listed in the failure table).
        simulated: Whether any run ran on the simulator.
    """

    out_dir: Path
    html_path: Path
    markdown_path: Path
    plot_files: tuple[Path, ...]
    families: tuple[Family, ...]
    runs: int
    not_ok: int
    simulated: bool

    @property
    def plot_count(self) -> int:
        """Number of figures drawn."""
        return sum(len(f.plots) for f in self.families)


def build_report(
    results: Path | str, out_dir: Path | str, filters: Mapping[str, Sequence[str]] | None = None
) -> ReportResult:
    """Write the HTML report, Markdown summary and plot files of a results store.

    Args:
        results: The SQLite results store.
        out_dir: Folder to write into: new, empty, or an earlier report's (see
            :mod:`migperf.report.folder`), whose files are replaced, including its
            ``plots/*.png`` and ``plots/*.svg``.
        filters: Column -> accepted values (see :func:`migperf.report.data.parse_filters`).

    Raises:
        UsageError: no store, an empty store, no run matches the filters, or
            ``out_dir`` is a file or a non-empty folder that is not a report's.
        MigperfError: the store is not a readable migperf store, or the output
            folder cannot be written.
    """
    from migperf.errors import MigperfError
    from migperf.report.folder import check_report_folder, write_marker
    from migperf.report.plots import draw_all

    data = load_report_data(results, filters)
    out = Path(out_dir)
    # Before the (slow) plots: a folder we may not write into is refused at once.
    check_report_folder(out)
    # A store of `migperf compat` matrices only has no runs to plot.
    families = draw_all(data) if not data.runs.empty else []
    plots_dir = out / "plots"
    written: list[Path] = []
    try:
        plots_dir.mkdir(parents=True, exist_ok=True)
        # The marker first: a report stopped half-way is still recognised as one.
        write_marker(out, __version__)
        # Plots of an earlier report into the same folder would otherwise linger
        # next to the new ones and be mistaken for current results.
        for old in [*plots_dir.glob("*.png"), *plots_dir.glob("*.svg")]:
            old.unlink()
        for family in families:
            for plot in family.plots:
                png, svg = plots_dir / f"{plot.slug}.png", plots_dir / f"{plot.slug}.svg"
                png.write_bytes(plot.png)
                svg.write_text(plot.svg, encoding="utf-8")
                written += [png, svg]
        html_path = out / "index.html"
        md_path = out / "report.md"
        compat = latest_matrices(results)
        html_path.write_text(render_html(data, families, compat), encoding="utf-8")
        md_path.write_text(render_markdown(data, families, compat), encoding="utf-8")
    except OSError as exc:
        raise MigperfError(
            f"cannot write the report to {out}: {exc.strerror or exc}",
            hint="pass --out with a folder you can write to",
        ) from None
    return ReportResult(
        out_dir=out,
        html_path=html_path,
        markdown_path=md_path,
        plot_files=tuple(written),
        families=tuple(families),
        runs=len(data.runs),
        not_ok=len(data.not_ok),
        simulated=bool(data.runs["simulated"].any()),
    )


# ----------------------------------------------------------------- tables


def _num(value: Any) -> str:
    if is_missing(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _get(row: pd.Series, column: str) -> Any:
    return row[column] if column in row.index else None


def _ci(row: pd.Series) -> str:
    mean = _get(row, "latency_mean_ms")
    if is_missing(mean):
        return ""
    low, high = _get(row, "latency_mean_ci_low_ms"), _get(row, "latency_mean_ci_high_ms")
    if is_missing(low) or is_missing(high):
        return _num(mean)
    return f"{_num(mean)} [{_num(low)}, {_num(high)}]"


def _memory(row: pd.Series) -> str:
    for column in ("instance_memory_used_max_mib", "peak_memory_mib", "gpu_memory_used_max_mib"):
        value = _get(row, column)
        if not is_missing(value):
            return _num(value)
    return ""


def _where(row: pd.Series) -> str:
    slot = _get(row, "slot")
    return str(slot) if not is_missing(slot) else str(row["profile_label"])


#: (header, cell) of the runs table.
RUN_TABLE: tuple[tuple[str, Any], ...] = (
    ("run", lambda r: str(r["run_id"])),
    ("experiment", lambda r: str(r["experiment"])),
    ("layout", lambda r: _num(r["layout"])),
    ("slot", _where),
    ("sharing", lambda r: f"{r['sharing']}" + ("" if r["role"] == "job" else f" ({r['role']})")),
    ("workload", lambda r: f"{r['workload']} {r['task']} {r['precision']}"),
    ("batch", lambda r: _num(r["batch_size"])),
    ("seq", lambda r: _num(r["seq_len"])),
    ("repeat", lambda r: _num(r["repeat"])),
    ("status", lambda r: str(r["status"]) + (" (unstable)" if _get(r, "unstable") == 1.0 else "")),
    ("samples/s", lambda r: _num(_get(r, "samples_per_s"))),
    ("mean latency ms [95% CI]", _ci),
    ("p50 ms", lambda r: _num(_get(r, "latency_p50_ms"))),
    ("p99 ms", lambda r: _num(_get(r, "latency_p99_ms"))),
    ("memory MiB", _memory),
    ("energy/sample J", lambda r: _num(_get(r, "energy_per_sample_j"))),
)

#: (header, cell) of the table of runs that did not finish ok.
FAILURE_TABLE: tuple[tuple[str, Any], ...] = (
    ("run", lambda r: str(r["run_id"])),
    ("experiment", lambda r: str(r["experiment"])),
    ("layout", lambda r: _num(r["layout"])),
    ("slot", _where),
    ("workload", lambda r: f"{r['workload']} {r['task']} {r['precision']}"),
    ("batch", lambda r: _num(r["batch_size"])),
    ("seq", lambda r: _num(r["seq_len"])),
    ("repeat", lambda r: _num(r["repeat"])),
    ("status", lambda r: str(r["status"])),
    ("reason", lambda r: "(no reason recorded)" if is_missing(r["error"]) else str(r["error"])),
)


def _cells(frame: pd.DataFrame, table: Sequence[tuple[str, Any]]) -> list[list[str]]:
    return [[cell(row) for _, cell in table] for _, row in frame.iterrows()]


def _status_counts(data: ReportData) -> str:
    counts = data.runs["status"].value_counts()
    return ", ".join(f"{int(n)} {status}" for status, n in counts.items())


def _overview(data: ReportData) -> list[tuple[str, str]]:
    runs = data.runs
    experiments = sorted(
        {f"{e} ({h})" for e, h in zip(runs["experiment"], runs["config_hash"], strict=True)}
    )
    gpus = sorted({str(g) for g in runs["gpu_name"] if not is_missing(g)})
    started = [t for t in runs["started_unix"].tolist() if not is_missing(t)]
    finished = [t for t in runs["finished_unix"].tolist() if not is_missing(t)]
    span = ""
    if finished:
        fmt = "%Y-%m-%d %H:%M"
        span = (
            f"{time.strftime(fmt, time.localtime(min(started or finished)))} to "
            f"{time.strftime(fmt, time.localtime(max(finished)))}"
        )
    if runs.empty:
        return [
            ("results store", str(data.path)),
            ("runs", "none: this store holds framework compatibility matrices only"),
        ]
    rows = [
        ("results store", str(data.path)),
        ("runs", f"{len(runs)} ({_status_counts(data)})"),
        ("experiments", ", ".join(experiments)),
        ("GPUs", ", ".join(gpus) or "?"),
        ("measured", span),
    ]
    if data.filters:
        rows.append(("filters", " ".join(f"{k}={v}" for k, vs in data.filters.items() for v in vs)))
    return rows


# ------------------------------------------------------------------- HTML

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       margin: 0; background: #fafafa; }
header, main, footer { max-width: 1500px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 16px; }
h1 { font-size: 26px; margin: 8px 0; }
h2 { font-size: 20px; margin: 32px 0 8px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
h3 { font-size: 15px; margin: 4px 0 8px; }
nav { margin: 8px 0 16px; }
nav a { margin-right: 14px; }
a { color: #0b57d0; }
.banner { background: #fde7e9; border: 1px solid #e8a3ab; color: #8a1020; padding: 8px 12px;
          border-radius: 4px; font-weight: 600; }
.missing { color: #666; font-style: italic; }
.note { color: #555; font-size: 13px; }
figure.plot { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; margin: 16px 0;
              padding: 12px; }
figure.plot svg { display: block; max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 13px; margin-top: 6px; }
table { border-collapse: collapse; background: #fff; font-size: 12.5px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; position: sticky; top: 0; }
table.sortable th { cursor: pointer; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.bad td { background: #fff3f3; }
dl.overview { display: grid; grid-template-columns: max-content auto; gap: 2px 16px; }
dl.overview dt { font-weight: 600; }
dl.overview dd { margin: 0; }
footer { color: #777; font-size: 12px; padding: 24px; }
"""

# Checks in the viewer that every figure rendered (headless-browser tests read
# the console line), and sorts a table by the clicked column.
_SCRIPT = """
(function () {
  "use strict";
  var figures = document.querySelectorAll("figure.plot");
  var problems = [];
  figures.forEach(function (fig) {
    var svg = fig.querySelector("svg");
    if (!svg) { problems.push(fig.id + ": no SVG"); return; }
    var box = svg.getBoundingClientRect();
    if (box.width < 100 || box.height < 100) {
      problems.push(fig.id + ": drawn " + Math.round(box.width) + "x" + Math.round(box.height));
    }
  });
  function key(cell) {
    var text = cell.textContent.trim();
    var n = parseFloat(text);
    return isNaN(n) ? text.toLowerCase() : n;
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("th").forEach(function (th, col) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var asc = th.getAttribute("data-sort") !== "asc";
        rows.sort(function (a, b) {
          var x = key(a.cells[col]), y = key(b.cells[col]);
          if (typeof x !== typeof y) { x = String(x); y = String(y); }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        });
        rows.forEach(function (r) { body.appendChild(r); });
        th.setAttribute("data-sort", asc ? "asc" : "desc");
      });
    });
  });
  var message = "migperf report: " + figures.length + " figure(s) rendered, " +
    problems.length + " problem(s)";
  document.body.setAttribute("data-report-check", problems.length ? "failed" : "ok");
  if (problems.length) { console.error(message + ": " + problems.join("; ")); }
  else { console.log(message); }
})();
"""

_NUMERIC = re.compile(r"^-?[\d.]+(e[+-]?\d+)?( \[.*\])?$")


def _inline_svg(svg: str) -> str:
    """The ``<svg>`` element of an SVG document (no XML declaration or DOCTYPE)."""
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg


def _html_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "sortable", bad: str = ""
) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{e(c)}</td>' if c and _NUMERIC.match(c) else f"<td>{e(c)}</td>"
            for c in row
        )
        status_bad = bad and bad in header and row[list(header).index(bad)] != "ok"
        body.append(f'<tr class="bad">{cells}</tr>' if status_bad else f"<tr>{cells}</tr>")
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
    )


def render_html(
    data: ReportData, families: Sequence[Family], compat: Sequence[CompatRow] = ()
) -> str:
    """The self-contained HTML page (with the compat matrices' section when there are rows)."""
    e = html.escape
    simulated = bool(data.runs["simulated"].any())
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>migperf report: {e(str(data.path))}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>migperf report</h1>",
    ]
    if simulated:
        n = int(data.runs["simulated"].sum())
        out.append(
            f'<p class="banner">SIMULATED: {n} of {len(data.runs)} run(s) ran on migperf\'s '
            "simulated GPU (workloads executed on the CPU). Their numbers describe the CPU, "
            "not a GPU; their plots carry a 'simulated GPU (emulated on CPU)' watermark.</p>"
        )
    nav = ['<a href="#overview">Overview</a>']
    nav += [f'<a href="#{f.key}">{e(f.name)}</a>' for f in families]
    nav += ['<a href="#compat">Framework compatibility</a>'] if compat else []
    nav += ['<a href="#failures">Failed and skipped runs</a>', '<a href="#runs">All runs</a>']
    out.append(f"<nav>{''.join(nav)}</nav></header><main>")
    out.append('<section id="overview"><h2>Overview</h2><dl class="overview">')
    for k, v in _overview(data):
        out.append(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>")
    out.append("</dl></section>")
    for family in families:
        out.append(f'<section id="{family.key}"><h2>{e(family.name)}</h2>')
        out.append(f'<p class="note">{e(family.description)}</p>')
        if family.missing:
            out.append(f'<p class="missing">No plot: {e(family.missing)}.</p>')
        for note in family.notes:
            out.append(f'<p class="note">Left out: {e(note)}.</p>')
        for plot in family.plots:
            out.append(
                f'<figure class="plot" id="{e(plot.slug)}"><h3>{e(plot.title)}</h3>'
                f"{_inline_svg(plot.svg)}<figcaption>{e(plot.caption)} "
                f'<span class="note">{e(plot.footer)}</span> '
                f'<a href="plots/{e(plot.slug)}.png">PNG</a> · '
                f'<a href="plots/{e(plot.slug)}.svg">SVG</a></figcaption></figure>'
            )
        out.append("</section>")
    not_ok = data.not_ok
    if compat:
        out.append(compat_html(compat))
    out.append('<section id="failures"><h2>Failed and skipped runs</h2>')
    if not_ok.empty:
        out.append('<p class="note">Every run finished ok.</p>')
    else:
        out.append(
            f'<p class="note">{len(not_ok)} run(s) did not finish ok; the store kept each '
            "with its reason.</p>"
        )
        out.append(
            _html_table(
                [h for h, _ in FAILURE_TABLE],
                _cells(not_ok, FAILURE_TABLE),
                cls="sortable failures",
            )
        )
    out.append("</section>")
    out.append('<section id="runs"><h2>All runs</h2>')
    out.append(
        '<p class="note">Headline numbers per run; the mean latency comes with its 95% '
        "confidence interval. A status marked (unstable) means the run's measurement windows "
        "disagreed by more than 10 % in throughput: rerun it on a quiet machine before trusting it. "
        "Click a column header to sort.</p>"
    )
    out.append(_html_table([h for h, _ in RUN_TABLE], _cells(data.runs, RUN_TABLE), bad="status"))
    out.append("</section></main>")
    out.append(
        f"<footer>Generated by migperf {e(__version__)} on "
        f"{e(time.strftime('%Y-%m-%d %H:%M %Z'))}.</footer>"
    )
    out.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(out)


# --------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(
    data: ReportData, families: Sequence[Family], compat: Sequence[CompatRow] = ()
) -> str:
    """The Markdown summary: overview, plots as PNG links, compat matrices, failures, runs."""
    lines = ["# migperf report", ""]
    if data.runs["simulated"].any():
        lines += [
            "> **SIMULATED**: runs marked simulated ran on migperf's simulated GPU (workloads "
            "executed on the CPU); their plots carry a 'simulated GPU (emulated on CPU)' watermark.",
            "",
        ]
    lines += [f"* **{k}**: {_md_cell(v)}" for k, v in _overview(data)]
    lines.append("")
    for family in families:
        lines += [f"## {family.name}", "", family.description, ""]
        if family.missing:
            lines += [f"_No plot: {family.missing}._", ""]
        for note in family.notes:
            lines += [f"_Left out: {note}._", ""]
        for plot in family.plots:
            lines += [
                f"### {plot.title}",
                "",
                f"![{plot.title}](plots/{plot.slug}.png)",
                "",
                f"{plot.caption} ({plot.footer}; [SVG](plots/{plot.slug}.svg))",
                "",
            ]
    if compat:
        lines += compat_markdown(compat)
    lines += ["## Failed and skipped runs", ""]
    if data.not_ok.empty:
        lines += ["Every run finished ok.", ""]
    else:
        lines += _md_table([h for h, _ in FAILURE_TABLE], _cells(data.not_ok, FAILURE_TABLE))
        lines.append("")
    lines += [
        "## All runs",
        "",
        "Mean latency with its 95% confidence interval. A status marked (unstable): the run's "
        "measurement windows disagreed by more than 10 % in throughput; rerun it on a quiet machine.",
        "",
    ]
    lines += _md_table([h for h, _ in RUN_TABLE], _cells(data.runs, RUN_TABLE))
    lines += ["", f"_Generated by migperf {__version__}._", ""]
    return "\n".join(lines)
