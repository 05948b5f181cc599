"""Which folder a report may write into.

A report replaces the files of an earlier report in its folder (``index.html``,
``report.md``, ``plots/*.png|svg``), so it must never take over a folder that
holds something else: ``--out ~/Documents`` would otherwise get its plots
deleted. A folder is a report's when

* it holds :data:`MARKER`, the small JSON file every report writes first
  (so even an interrupted report is recognised), or
* it is a report written before the marker existed: an ``index.html`` whose
  title says ``migperf report``.

An empty or missing folder is always fine.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from migperf.errors import UsageError

#: The file that marks a folder as a migperf report's.
MARKER = ".migperf-report"

_LEGACY_TITLE = "<title>migperf report"


def is_report_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a report migperf wrote (with or without the marker file)."""
    if (folder / MARKER).is_file():
        return True
    page = folder / "index.html"
    try:
        with page.open(encoding="utf-8", errors="replace") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return _LEGACY_TITLE in head


def check_report_folder(folder: Path) -> None:
    """Refuse an output folder a report must not write into, before anything is drawn.

    Raises:
        UsageError: ``folder`` is a file, or a non-empty folder that is not an
            earlier migperf report.
    """
    if folder.exists() and not folder.is_dir():
        raise UsageError(
            f"cannot write the report to {folder}: it is a file, not a folder",
            hint="pass --out with an empty (or new) folder",
        )
    if not folder.is_dir() or is_report_folder(folder):
        return
    try:
        entries = sorted(p.name for p in folder.iterdir())
    except OSError as exc:
        raise UsageError(
            f"cannot write the report to {folder}: {exc.strerror or exc}",
            hint="pass --out with an empty (or new) folder you can write to",
        ) from None
    if entries:
        shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise UsageError(
            f"refusing to write the report into {folder}: the folder is not empty ({shown}) "
            "and holds no earlier migperf report, whose files a report replaces",
            hint="pass --out with an empty (or new) folder",
        )


def write_marker(folder: Path, version: str) -> Path:
    """Mark ``folder`` as a report folder (written before any other file of the report).

    Raises:
        OSError: the file cannot be written (the caller reports it).
    """
    marker = folder / MARKER
    marker.write_text(
        json.dumps({"generator": "migperf report", "version": version, "written_unix": time.time()})
        + "\n",
        encoding="utf-8",
    )
    return marker
