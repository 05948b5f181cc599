"""The results store (SQLite) and its pandas view.

``migperf.results.load(path, **filters)`` returns a tidy DataFrame: one row per
(run, metric); ``wide=True`` gives one row per run. A run measured again is
stored as a new attempt; readers get each run's latest attempt unless they pass
``all_attempts=True``. Example::

    with ResultsStore("results/migperf.db") as store:
        latest = store.latest_attempts(config_hash)  # run_key -> (attempt, status)
    frame = load("results/migperf.db", wide=True, experiment="quickstart")

``migperf compat``'s matrices are kept in the same file (:mod:`migperf.results.compat`)::

    with ResultsStore("results/migperf.db", read_only=True) as store:
        rows = compat_rows(store)  # CompatRow: framework, check_name, verdict, ...
"""

from __future__ import annotations

from migperf.results.compat import VERDICTS, CompatRow, compat_rows, compat_sessions
from migperf.results.frames import export, load
from migperf.results.store import (
    DEFAULT_PATH,
    SCHEMA_VERSION,
    RecordSink,
    ResultsStore,
    RunRecord,
    decode_params,
)

__all__ = [
    "DEFAULT_PATH",
    "SCHEMA_VERSION",
    "VERDICTS",
    "CompatRow",
    "RecordSink",
    "ResultsStore",
    "RunRecord",
    "compat_rows",
    "compat_sessions",
    "decode_params",
    "export",
    "load",
]
