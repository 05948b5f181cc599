"""The results store's SQL schema, its migrations, and how an older file is read as is.

Schema versions (kept in ``meta``, key ``schema_version``):

* 1: ``runs`` with ``run_key`` UNIQUE: a key could be stored once only.
* 2: ``runs`` has ``attempt`` (1, 2, ...) and is UNIQUE on ``(run_key, attempt)``,
  so a rerun or a retried failure is a new row next to the earlier ones; the
  view ``latest_runs`` holds each run key's highest attempt. Upgrading a v1
  file rebuilds ``runs`` (SQLite cannot drop a UNIQUE constraint), keeping
  every ``run_id``, so ``metrics``, ``samples`` and ``telemetry`` rows stay
  attached; each old row becomes attempt 1.
* 3: ``compat`` holds ``migperf compat``'s matrices: one row per (session,
  framework, check) with its verdict, error or reason, wall time, whether it
  ran on the simulator, and the versions involved. Upgrading a v2 file only
  adds the (empty) table; a read-only connection sees an empty ``compat`` in
  an older file.

:data:`MIGRATIONS` upgrades a writable store; :data:`READ_AS_CURRENT` lets a
read-only connection see an older file with the current columns, through
TEMP views that shadow the file's own tables (SQLite looks names up in
``temp`` before ``main``), without writing a byte to the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 3

SCHEMA_V1 = """
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

#: The columns v1 and v2 share, in table order (v2 adds ``attempt`` after ``run_key``).
V1_RUN_COLUMNS = (
    "run_id",
    "run_key",
    "experiment",
    "config_hash",
    "started_unix",
    "finished_unix",
    "status",
    "error",
    "gpu_index",
    "gpu_name",
    "gpu_uuid",
    "driver_version",
    "layout",
    "profile",
    "mig_uuid",
    "device",
    "device_kind",
    "simulated",
    "workload",
    "task",
    "precision",
    "batch_size",
    "seq_len",
    "repeat",
    "params",
    "environment",
    "result",
)

_V1_REST = ", ".join(V1_RUN_COLUMNS[2:])

# Each run key's highest attempt. The correlated MAX uses the (run_key, attempt)
# index of the UNIQUE constraint, so this stays cheap on large stores.
LATEST_RUNS_VIEW = """
CREATE VIEW latest_runs AS
SELECT r.* FROM runs r
WHERE r.attempt = (SELECT MAX(a.attempt) FROM runs a WHERE a.run_key = r.run_key)
"""

SCHEMA_V2 = f"""
CREATE TABLE runs_v2 (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_key TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 1 CHECK (attempt >= 1),
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
    params TEXT NOT NULL DEFAULT '{{}}',
    environment TEXT NOT NULL DEFAULT '{{}}',
    result TEXT,
    UNIQUE (run_key, attempt)
);
INSERT INTO runs_v2 (run_id, run_key, attempt, {_V1_REST})
    SELECT run_id, run_key, 1, {_V1_REST} FROM runs ORDER BY run_id;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'runs_v2', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'runs_v2');
UPDATE sqlite_sequence
    SET seq = (SELECT MAX(seq) FROM sqlite_sequence WHERE name IN ('runs', 'runs_v2'))
    WHERE name = 'runs_v2';
DROP INDEX IF EXISTS runs_config;
DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;
CREATE INDEX runs_config ON runs (config_hash);
{LATEST_RUNS_VIEW}
"""
# The sqlite_sequence lines carry AUTOINCREMENT's high-water mark over, so a
# run_id is never handed out twice, not even one whose row was deleted by hand.

#: The columns of ``compat`` after ``row_id``, in table order.
COMPAT_COLUMNS = (
    "session",
    "started_unix",
    "device",
    "second_device",
    "gpu_name",
    "driver_version",
    "framework",
    "framework_version",
    "check_name",
    "verdict",
    "detail",
    "wall_s",
    "simulated",
    "versions",
)

SCHEMA_V3 = """
CREATE TABLE compat (
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    started_unix REAL NOT NULL,
    device TEXT,
    second_device TEXT,
    gpu_name TEXT,
    driver_version TEXT,
    framework TEXT NOT NULL,
    framework_version TEXT,
    check_name TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('pass', 'fail', 'expected-fail', 'skipped')),
    detail TEXT,
    wall_s REAL,
    simulated INTEGER NOT NULL DEFAULT 0,
    versions TEXT NOT NULL DEFAULT '{}',
    UNIQUE (session, framework, check_name)
);
CREATE INDEX compat_session ON compat (session)
"""


def statements(con: sqlite3.Connection, script: str) -> None:
    """Run a ``;``-separated script statement by statement, inside the caller's transaction.

    ``executescript()`` would COMMIT the enclosing transaction first; a
    migration must be all-or-nothing.

    Raises:
        sqlite3.Error: a statement failed (the caller rolls back).
    """
    for statement in script.split(";"):
        if statement.strip():
            con.execute(statement)


#: version -> migration that upgrades a store from ``version - 1`` (run in one transaction,
#: with foreign keys off: the runs table is rebuilt under the rows that reference it).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: lambda con: statements(con, SCHEMA_V1),
    2: lambda con: statements(con, SCHEMA_V2),
    3: lambda con: statements(con, SCHEMA_V3),
}

# A v1 file seen with v2's columns: every row is attempt 1 and its own latest attempt.
_READ_V1 = f"""
CREATE TEMP VIEW runs AS
    SELECT run_id, run_key, 1 AS attempt, {_V1_REST} FROM main.runs;
CREATE TEMP VIEW latest_runs AS SELECT * FROM temp.runs
"""

# A v2 file has no compat matrices: an empty compat of the current shape.
_READ_V2 = (
    "CREATE TEMP VIEW compat AS SELECT NULL AS row_id, "
    + ", ".join(f"NULL AS {c}" for c in COMPAT_COLUMNS)
    + " WHERE 0"
)

#: version -> TEMP views that let a read-only connection query an older file as the current one.
READ_AS_CURRENT: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: lambda con: statements(con, _READ_V1),
    2: lambda con: statements(con, _READ_V2),
}
