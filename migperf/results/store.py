"""The results store: one SQLite file that never loses a measured result.

Each finished run is written in its own transaction as soon as it finishes
(WAL mode, synchronous=FULL), so a crash or SIGKILL loses at most the run in
flight. A run is keyed by ``run_key`` (the experiment's config hash plus
everything that identifies the run), and a key is stored at most once: a
resumed or retried sweep never stores a run twice.

Tables (schema version in ``meta``; :data:`MIGRATIONS` upgrades older files):

* ``runs``: one row per run: status, error, GPU, driver, layout, slot,
  workload parameters, environment, and the full result document (JSON).
* ``metrics``: one row per (run, metric): the headline numbers.
* ``samples``: raw per-iteration latencies (JSON arrays) per run.
* ``telemetry``: the run's telemetry summary and series (JSON), when sampled.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from migperf.errors import MigperfError

SCHEMA_VERSION = 1
DEFAULT_PATH = Path("results") / "migperf.db"

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_key TEXT NOT NULL UNIQUE,
    experiment TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    started_unix REAL,
    finished_unix REAL NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    gpu_index INTEGER,
    gpu_name TEXT,
    gpu_uuid TEXT,
    driver_version TEXT,
    layout TEXT,
    profile TEXT,
    mig_uuid TEXT,
    device TEXT,
    device_kind TEXT,
    simulated INTEGER NOT NULL DEFAULT 0,
    workload TEXT,
    task TEXT,
    precision TEXT,
    batch_size INTEGER,
    seq_len INTEGER,
    repeat INTEGER,
    params TEXT NOT NULL DEFAULT '{}',
    environment TEXT NOT NULL DEFAULT '{}',
    result TEXT
);
CREATE INDEX IF NOT EXISTS runs_config ON runs (config_hash);
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    name TEXT NOT NULL,
    value REAL,
    unit TEXT,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    kind TEXT NOT NULL,
    values_json TEXT NOT NULL,
    PRIMARY KEY (run_id, kind)
);
CREATE TABLE IF NOT EXISTS telemetry (
    run_id INTEGER PRIMARY KEY REFERENCES runs(run_id),
    summary TEXT,
    series TEXT
);
"""


def _statements(con: sqlite3.Connection, script: str) -> None:
    # executescript() would COMMIT the enclosing transaction first; a
    # migration must be all-or-nothing, so run the statements one by one.
    for statement in script.split(";"):
        if statement.strip():
            con.execute(statement)


#: version -> migration that upgrades a store from ``version - 1``.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: lambda con: _statements(con, _SCHEMA_V1),
}


@dataclass(frozen=True)
class RunRecord:
    """One run as the runner hands it to the store."""

    run_key: str
    experiment: str
    config_hash: str
    status: str
    started_unix: float | None = None
    error: str | None = None
    gpu_index: int | None = None
    gpu_name: str | None = None
    gpu_uuid: str | None = None
    driver_version: str | None = None
    layout: str | None = None
    profile: str | None = None
    mig_uuid: str | None = None
    device: str | None = None
    device_kind: str | None = None
    simulated: bool = False
    workload: str | None = None
    task: str | None = None
    precision: str | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    repeat: int | None = None
    params: Mapping[str, Any] | None = None
    environment: Mapping[str, Any] | None = None
    result: Mapping[str, Any] | None = None
    metrics: Mapping[str, tuple[float | None, str]] | None = None
    samples: Mapping[str, list[float]] | None = None
    telemetry: Mapping[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data (for a cluster node streaming it to the driver)."""
        data: dict[str, Any] = json.loads(json.dumps(asdict(self), default=str))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """A record from :meth:`to_dict` (metric ``(value, unit)`` tuples come back as lists).

        Unknown keys are ignored, so a newer node's record still loads.
        """
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        if values.get("metrics") is not None:
            values["metrics"] = {k: (v[0], v[1]) for k, v in values["metrics"].items()}
        return cls(**values)


def decode_params(text: Any) -> dict[str, Any]:
    """A stored ``params`` (or ``environment``) column as a dict; ``{}`` when empty or not JSON."""
    if isinstance(text, Mapping):
        return dict(text)
    if not isinstance(text, (str, bytes)) or not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class RecordSink(Protocol):
    """Where a runner puts its records: a :class:`ResultsStore`, or a cluster node's stream."""

    def record(self, rec: RunRecord) -> int | None:
        """Store one record; its row id, or None when its run key was already stored."""

    def stored_keys(self, config_hash: str) -> set[str]:
        """The run keys already stored for a config hash."""


class ResultsStore:
    """An open results database.

    Args:
        path: The SQLite file (created with its folder when missing).

    Raises:
        MigperfError: the file is not a migperf store, or is newer than this migperf.
    """

    def __init__(self, path: Path | str = DEFAULT_PATH) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise MigperfError(
                f"{self.path} is not a usable migperf results store: {exc}",
                hint="point --results at a migperf .db file, or at a new path",
            ) from None

    def _migrate(self) -> None:
        con = self._con
        con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise MigperfError(
                f"{self.path} has results schema {version}, newer than this migperf's {SCHEMA_VERSION}",
                hint="upgrade migperf to read it",
            )
        for v in range(version + 1, SCHEMA_VERSION + 1):
            with self._transaction():
                MIGRATIONS[v](con)
                con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(v),))

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._con.execute("BEGIN IMMEDIATE")
        try:
            yield self._con
        except BaseException:
            self._con.execute("ROLLBACK")
            raise
        self._con.execute("COMMIT")

    def close(self) -> None:
        """Close the database."""
        self._con.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------- writing

    def has_run(self, run_key: str) -> bool:
        """Whether a run with this key is stored."""
        return (
            self._con.execute("SELECT 1 FROM runs WHERE run_key=?", (run_key,)).fetchone()
            is not None
        )

    def stored_keys(self, config_hash: str) -> set[str]:
        """Run keys stored for one config hash (what ``--resume`` skips)."""
        rows = self._con.execute("SELECT run_key FROM runs WHERE config_hash=?", (config_hash,))
        return {r[0] for r in rows}

    def record(self, rec: RunRecord) -> int | None:
        """Store one run in one transaction; None when its key is already stored."""
        d = json.dumps
        with self._transaction() as con:
            cur = con.execute(
                """INSERT OR IGNORE INTO runs (run_key, experiment, config_hash, started_unix, finished_unix,
                   status, error, gpu_index, gpu_name, gpu_uuid, driver_version, layout, profile, mig_uuid,
                   device, device_kind, simulated, workload, task, precision, batch_size, seq_len, repeat,
                   params, environment, result)
                   VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                (
                    rec.run_key,
                    rec.experiment,
                    rec.config_hash,
                    rec.started_unix,
                    time.time(),
                    rec.status,
                    rec.error,
                    rec.gpu_index,
                    rec.gpu_name,
                    rec.gpu_uuid,
                    rec.driver_version,
                    rec.layout,
                    rec.profile,
                    rec.mig_uuid,
                    rec.device,
                    rec.device_kind,
                    int(rec.simulated),
                    rec.workload,
                    rec.task,
                    rec.precision,
                    rec.batch_size,
                    rec.seq_len,
                    rec.repeat,
                    d(dict(rec.params or {}), sort_keys=True),
                    d(dict(rec.environment or {}), sort_keys=True),
                    d(rec.result) if rec.result is not None else None,
                ),
            )
            if cur.rowcount == 0:
                return None
            run_id = int(cur.lastrowid or 0)
            for name, (value, unit) in (rec.metrics or {}).items():
                con.execute("INSERT INTO metrics VALUES (?,?,?,?)", (run_id, name, value, unit))
            for kind, values in (rec.samples or {}).items():
                con.execute("INSERT INTO samples VALUES (?,?,?)", (run_id, kind, d(values)))
            if rec.telemetry is not None:
                con.execute(
                    "INSERT INTO telemetry VALUES (?,?,?)",
                    (run_id, d(rec.telemetry.get("summary")), d(rec.telemetry.get("series"))),
                )
        return run_id

    # ------------------------------------------------------------- reading

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read query (rows behave as tuples and mappings)."""
        self._con.row_factory = sqlite3.Row
        try:
            return list(self._con.execute(sql, params))
        finally:
            self._con.row_factory = None

    def samples(self, run_id: int, kind: str = "latency_ms") -> list[float]:
        """Raw samples of one run."""
        row = self._con.execute(
            "SELECT values_json FROM samples WHERE run_id=? AND kind=?", (run_id, kind)
        ).fetchone()
        return json.loads(row[0]) if row else []
