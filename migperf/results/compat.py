"""Compatibility-matrix rows (``migperf compat``) as the results store keeps them.

One :class:`CompatRow` is one check of one framework in one compat session:
its verdict (``pass``, ``fail``, ``expected-fail``, ``skipped``), the error or
reason, its wall time, whether it ran on the simulated GPU (on the CPU), and
the versions involved. A session's rows are written in one transaction by
:meth:`migperf.results.ResultsStore.record_compat`, and read back with
:func:`compat_rows` (any store, also a read-only one or an older file, which
has none).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from migperf.results.schema import COMPAT_COLUMNS

__all__ = ["VERDICTS", "CompatRow", "compat_rows", "compat_sessions", "insert_compat"]

#: Every verdict a check can have.
VERDICTS = ("pass", "fail", "expected-fail", "skipped")


@dataclass(frozen=True)
class CompatRow:
    """One check of one framework in one compat session.

    Attributes:
        session: The compat session's id (``compat-YYYYMMDD-HHMMSS-xxxx``).
        started_unix: When the session started.
        device: The device the checks ran on (``MIG-<uuid>``, a GPU index, or a
            simulated device's name).
        second_device: The second device of the two-device checks, or None.
        gpu_name: The GPU (or MIG device) name NVML gives.
        driver_version: The driver's version (the simulator's for a simulated GPU).
        framework: ``pytorch``, ``torch.compile``, ``onnxruntime``, ``jax``, ...
        framework_version: Its version, when it was imported.
        check_name: ``import``, ``devices``, ``infer``, ``train``, ``devices-two``,
            ``data-parallel``, ``oom``, ``start``, ``query``.
        verdict: One of :data:`VERDICTS`.
        detail: What the check saw (pass), the error (fail, expected-fail), or why
            it did not run (skipped).
        wall_s: The check's wall time in seconds (None when it did not run).
        simulated: Measured on the simulated GPU, on the CPU: a pass here says
            nothing about a MIG slice.
        versions: Python, migperf, driver, the framework and its CUDA build.
    """

    session: str
    started_unix: float
    device: str | None
    second_device: str | None
    gpu_name: str | None
    driver_version: str | None
    framework: str
    framework_version: str | None
    check_name: str
    verdict: str
    detail: str | None
    wall_s: float | None
    simulated: bool
    versions: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data."""
        data = asdict(self)
        data["versions"] = dict(self.versions)
        return data


def insert_compat(con: sqlite3.Connection, rows: Sequence[CompatRow]) -> int:
    """Insert rows inside the caller's transaction; the number of rows inserted.

    Raises:
        ValueError: a row's verdict is not one of :data:`VERDICTS`.
        sqlite3.IntegrityError: a (session, framework, check) is stored already.
    """
    placeholders = ",".join("?" for _ in COMPAT_COLUMNS)
    for row in rows:
        if row.verdict not in VERDICTS:
            raise ValueError(f"verdict {row.verdict!r} is not one of {', '.join(VERDICTS)}")
        values = asdict(row)
        values["simulated"] = int(row.simulated)
        values["versions"] = json.dumps(dict(row.versions), sort_keys=True, default=str)
        con.execute(
            f"INSERT INTO compat ({', '.join(COMPAT_COLUMNS)}) VALUES ({placeholders})",
            tuple(values[c] for c in COMPAT_COLUMNS),
        )
    return len(rows)


class Queryable(Protocol):
    """What :func:`compat_rows` reads through: a :class:`~migperf.results.ResultsStore`."""

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a read query, as mappings."""


def _row(r: Mapping[str, Any]) -> CompatRow:
    values = {c: r[c] for c in COMPAT_COLUMNS}
    values["simulated"] = bool(values["simulated"])
    try:
        versions = json.loads(values["versions"] or "{}")
    except ValueError:
        versions = {}
    values["versions"] = versions if isinstance(versions, dict) else {}
    return CompatRow(**values)


def compat_rows(store: Queryable, session: str | None = None) -> list[CompatRow]:
    """The stored compat rows, in the order they were stored.

    Args:
        store: An open store (read-only is fine; an older file has no rows).
        session: Only this session's rows; None for every session's.
    """
    sql = f"SELECT {', '.join(COMPAT_COLUMNS)} FROM compat"
    params: tuple[Any, ...] = ()
    if session is not None:
        sql += " WHERE session=?"
        params = (session,)
    return [_row(r) for r in store.query(sql + " ORDER BY row_id", params)]


def compat_sessions(store: Queryable) -> list[str]:
    """The stored compat sessions, oldest first."""
    rows = store.query(
        "SELECT session, MIN(row_id) AS first FROM compat GROUP BY session ORDER BY first"
    )
    return [str(r["session"]) for r in rows]
