"""The report's compatibility section: the latest ``migperf compat`` matrix per device.

A store may hold several matrices (one per slice profile, or one per software
update); the report shows the latest session of each device, one row per
(framework, check), with the verdict, its detail and the wall time. Rows
measured on the simulated GPU are marked: a pass there ran on the CPU.
"""

from __future__ import annotations

import html
import time
from collections.abc import Sequence
from pathlib import Path

from migperf.results.compat import CompatRow, compat_rows
from migperf.results.store import ResultsStore

__all__ = ["HEADER", "cells", "compat_html", "compat_markdown", "latest_matrices"]

#: The table's columns.
HEADER = ("device", "framework", "version", "check", "verdict", "simulated", "wall s", "detail")


def latest_matrices(path: Path | str) -> list[CompatRow]:
    """The rows of each device's latest compat session (none in a store without any)."""
    with ResultsStore(path, read_only=True) as store:
        rows = compat_rows(store)
    latest: dict[str | None, tuple[float, str]] = {}
    for r in rows:
        key = (r.started_unix, r.session)
        if r.device not in latest or key > latest[r.device]:
            latest[r.device] = key
    chosen = {session for _, session in latest.values()}
    return [r for r in rows if r.session in chosen]


def cells(row: CompatRow) -> list[str]:
    """One row's cells, in :data:`HEADER` order."""
    return [
        row.device or "",
        row.framework,
        row.framework_version or "",
        row.check_name,
        row.verdict,
        "yes" if row.simulated else "no",
        "" if row.wall_s is None else f"{row.wall_s:.2f}",
        row.detail or "",
    ]


def _sessions(rows: Sequence[CompatRow]) -> list[str]:
    seen: dict[str, CompatRow] = {}
    for r in rows:
        seen.setdefault(r.session, r)
    out = []
    for session, r in seen.items():
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.started_unix))
        mine = [x for x in rows if x.session == session]
        counts = {
            v: sum(x.verdict == v for x in mine)
            for v in ("pass", "fail", "expected-fail", "skipped")
        }
        summary = ", ".join(f"{n} {v}" for v, n in counts.items())
        sim = " (SIMULATED: ran on the CPU)" if r.simulated else ""
        out.append(f"{session} on {r.device} ({r.gpu_name}), {when}{sim}: {summary}")
    return out


_NOTE = (
    "Verdicts: pass; fail (the error); expected-fail (a MIG limitation NVIDIA documents: one "
    "MIG device per CUDA process, no NCCL or P2P across MIG devices); skipped (why: not "
    "installed, no CUDA, needs two MIG devices). Rows marked simulated ran on the CPU."
)


def compat_html(rows: Sequence[CompatRow]) -> str:
    """The section as HTML (a sortable table; failed rows tinted)."""
    e = html.escape
    out = ['<section id="compat"><h2>Framework compatibility</h2>']
    out.append(f'<p class="note">{e(_NOTE)}</p><ul>')
    out += [f"<li>{e(s)}</li>" for s in _sessions(rows)]
    out.append("</ul>")
    head = "".join(f"<th>{e(h)}</th>" for h in HEADER)
    body = []
    for r in rows:
        tds = "".join(
            f'<td class="num">{e(c)}</td>' if h == "wall s" and c else f"<td>{e(c)}</td>"
            for h, c in zip(HEADER, cells(r), strict=True)
        )
        body.append(f'<tr class="bad">{tds}</tr>' if r.verdict == "fail" else f"<tr>{tds}</tr>")
    out.append(
        f'<table class="sortable compat"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></section>"
    )
    return "\n".join(out)


def _md(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def compat_markdown(rows: Sequence[CompatRow]) -> list[str]:
    """The section as Markdown lines."""
    lines = ["## Framework compatibility", "", _NOTE, ""]
    lines += [f"* {_md(s)}" for s in _sessions(rows)]
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    lines += ["| " + " | ".join(_md(c) for c in cells(r)) + " |" for r in rows]
    lines.append("")
    return lines
