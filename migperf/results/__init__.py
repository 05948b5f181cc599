"""The results store (SQLite) and its pandas view.

``migperf.results.load(path, **filters)`` returns a tidy DataFrame: one row per
(run, metric); ``wide=True`` gives one row per run.
"""

from __future__ import annotations

from migperf.results.frames import export, load
from migperf.results.store import DEFAULT_PATH, SCHEMA_VERSION, ResultsStore, RunRecord

__all__ = ["DEFAULT_PATH", "SCHEMA_VERSION", "ResultsStore", "RunRecord", "export", "load"]
