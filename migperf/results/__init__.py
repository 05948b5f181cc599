"""The results store (SQLite) and its pandas view.

``migperf.results.load(path, **filters)`` returns a tidy DataFrame: one row per
(run, metric); ``wide=True`` gives one row per run. Example::

    with ResultsStore("results/migperf.db") as store:
        done = store.stored_keys(config_hash)
    frame = load("results/migperf.db", wide=True, experiment="quickstart")
"""

from __future__ import annotations

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
    "RecordSink",
    "ResultsStore",
    "RunRecord",
    "decode_params",
    "export",
    "load",
]
