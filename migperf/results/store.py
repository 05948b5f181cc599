"""The results store: one SQLite file that never loses a measured result.

Each finished run is written in its own transaction as soon as it finishes
(WAL mode, synchronous=FULL), so a crash or SIGKILL loses at most the run in
flight. A run is keyed by ``run_key`` (the experiment's config hash plus
everything that identifies the run) and an ``attempt`` (1, 2, ...): measuring
a run again (``--rerun``, or ``--resume`` retrying a failure) stores a new
attempt next to the earlier ones, and storing the same (key, attempt) twice
is a no-op, so a record delivered twice is stored once. Readers use each
key's latest attempt (the ``latest_runs`` view) unless they ask for all.

Tables (schema version in ``meta``; :data:`MIGRATIONS` upgrades older files,
see :mod:`migperf.results.schema`):

* ``runs``: one row per run attempt: status, error, GPU, driver, layout, slot,
  workload parameters, environment, and the full result document (JSON).
* ``metrics``: one row per (run, metric): the headline numbers.
* ``samples``: raw per-iteration latencies (JSON arrays) per run.
* ``telemetry``: the run's telemetry summary and series (JSON), when sampled.
* ``compat``: ``migperf compat``'s matrices, one row per (session, framework,
  check) (:mod:`migperf.results.compat`).

``ResultsStore(path, read_only=True)`` opens a store for reading only (SQLite
``mode=ro``): it never creates, migrates or changes the file, and reads a
v1 file as is (every row is attempt 1).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from migperf.errors import MigperfError, UsageError
from migperf.results.schema import MIGRATIONS, READ_AS_CURRENT, SCHEMA_VERSION

if TYPE_CHECKING:
    from migperf.results.compat import CompatRow

__all__ = [
    "DEFAULT_PATH",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "RecordSink",
    "ResultsStore",
    "RunRecord",
    "decode_params",
]

DEFAULT_PATH = Path("results") / "migperf.db"


@dataclass(frozen=True)
class RunRecord:
    """One run attempt as the runner hands it to the store.

    ``attempt`` numbers the measurements of one ``run_key``: 1 for the first,
    N+1 for a run measured again after attempt N (the runner picks it from
    :meth:`ResultsStore.latest_attempts`).
    """

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
    # Last, so records built positionally (run_key, experiment, ...) keep working.
    attempt: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data (for a cluster node streaming it to the driver)."""
        data: dict[str, Any] = json.loads(json.dumps(asdict(self), default=str))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        """A record from :meth:`to_dict` (metric ``(value, unit)`` tuples come back as lists).

        Unknown keys are ignored, so a newer node's record still loads; a record
        from a node without attempts is attempt 1.
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
        """Store one record; its row id, or None when its (run key, attempt) was already stored."""

    def stored_keys(self, config_hash: str) -> set[str]:
        """The run keys with any stored attempt for a config hash."""

    def latest_attempts(self, config_hash: str) -> dict[str, tuple[int, str]]:
        """Run key -> (its highest stored attempt, that attempt's status), for a config hash."""


_NOT_A_STORE_HINT = (
    "point --results at a migperf results store (default results/migperf.db), or at a new path"
)


class ResultsStore:
    """An open results database.

    Args:
        path: The SQLite file. For writing it is created, with its folder, when
            missing, and an older migperf store is upgraded in one transaction.
        read_only: Open with SQLite's ``mode=ro``: no folder or file is created,
            no WAL setup, no migration; an older (v1) store is read as is, every
            row being attempt 1.

    Raises:
        UsageError: ``read_only`` and there is no file at ``path``.
        MigperfError: the file is not a SQLite database, is a SQLite file that
            is not a migperf store, is from a newer migperf, or cannot be
            opened (its folder cannot be created, permissions, ...).
    """

    def __init__(self, path: Path | str = DEFAULT_PATH, *, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            self._con = self._open_read_only()
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MigperfError(
                f"cannot create the folder of the results store {self.path}: {exc.strerror or exc}",
                hint="pass --results with a path in a folder you can write to",
            ) from None
        if self.path.is_dir():
            raise UsageError(
                f"the results store {self.path} is a folder, not a file",
                hint="pass --results with a .db file path, e.g. results/migperf.db",
            )
        try:
            self._con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None
        try:
            self._check_is_store(self._version())
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=FULL")
            self._con.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except MigperfError:
            self._con.close()
            raise
        except sqlite3.Error as exc:
            self._con.close()
            raise self._unusable(exc) from None

    # ------------------------------------------------------------- opening

    def _unusable(self, exc: sqlite3.Error) -> MigperfError:
        return MigperfError(
            f"{self.path} is not a usable migperf results store: {exc}",
            hint=_NOT_A_STORE_HINT,
        )

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.exists():
            raise UsageError(
                f"no results store at {self.path}",
                hint="run an experiment first (`migperf run CONFIG`), or pass --results",
            )
        if self.path.is_dir():
            raise UsageError(
                f"the results store {self.path} is a folder, not a file",
                hint="pass --results with a .db file path, e.g. results/migperf.db",
            )
        con = self._connect_ro(immutable=False)
        try:
            try:
                version = self._version()
            except sqlite3.OperationalError:
                if not self._needs_immutable():
                    raise
                con.close()
                con = self._connect_ro(immutable=True)
                version = self._version()
            self._check_is_store(version)
            if version < SCHEMA_VERSION:
                # Shadow the file's tables with TEMP views of the current shape;
                # TEMP objects live outside the file, so nothing is written.
                for v in range(version, SCHEMA_VERSION):
                    READ_AS_CURRENT[v](con)
            con.execute("PRAGMA query_only=ON")
        except MigperfError:
            con.close()
            raise
        except sqlite3.Error as exc:
            con.close()
            raise self._unusable(exc) from None
        return con

    def _connect_ro(self, *, immutable: bool) -> sqlite3.Connection:
        uri = f"file:{quote(str(self.path.absolute()))}?mode=ro" + (
            "&immutable=1" if immutable else ""
        )
        try:
            self._con = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None
        return self._con

    def _needs_immutable(self) -> bool:
        """Whether a WAL store can only be read as immutable: a folder we cannot write.

        A WAL reader needs the ``-shm`` file, and creates it when missing; in a
        read-only folder (a shared or archived results folder) it cannot. With
        no ``-wal`` file there, no writer is active (a writer keeps its ``-wal``
        until the last connection closes), so reading the file as immutable is safe.
        """
        wal = self.path.with_name(self.path.name + "-wal")
        return not os.access(self.path.parent, os.W_OK) and not wal.exists()

    def _version(self) -> int:
        """The file's schema version: 0 for a new (or empty) file, -1 for a foreign SQLite file.

        Raises:
            sqlite3.DatabaseError: the file is not a SQLite database.
            MigperfError: the stored version is not a number.
        """
        names = {
            r[0]
            for r in self._con.execute(
                "SELECT name FROM main.sqlite_master WHERE type IN ('table', 'view')"
            )
        }
        row = None
        if "meta" in names:
            row = self._con.execute(
                "SELECT value FROM main.meta WHERE key='schema_version'"
            ).fetchone()
        if row is None:
            # An empty meta table alone is what a v1-era migperf left when it was
            # stopped while creating a store: still a new store. Anything else
            # belongs to another program, and adding our tables to it would be
            # a change nobody asked for.
            own = names <= {"meta"} and (
                "meta" not in names
                or self._con.execute("SELECT COUNT(*) FROM main.meta").fetchone()[0] == 0
            )
            return 0 if own else -1
        try:
            return int(row[0])
        except ValueError:
            raise MigperfError(
                f"{self.path} is not a usable migperf results store: its schema version "
                f"{row[0]!r} is not a number",
                hint=_NOT_A_STORE_HINT,
            ) from None

    def _check_is_store(self, version: int) -> None:
        if version < 0 or (version == 0 and self.read_only):
            raise MigperfError(
                f"{self.path} is a SQLite file but not a migperf results store "
                "(it has no migperf schema_version)",
                hint=_NOT_A_STORE_HINT,
            )
        if version > SCHEMA_VERSION:
            raise MigperfError(
                f"{self.path} has results schema {version}, newer than this migperf's "
                f"{SCHEMA_VERSION}",
                hint="upgrade migperf to read it (pip install -U migperf)",
            )

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return
        con = self._con
        # A rebuild of `runs` under rows that reference it needs foreign keys off
        # (the pragma is a no-op inside a transaction); foreign_key_check below
        # proves the rebuilt table still holds every referenced run_id.
        con.execute("PRAGMA foreign_keys=OFF")
        try:
            with self._transaction():
                # Read again under the write lock: another process may have
                # upgraded the file since we looked.
                version = self._version()
                self._check_is_store(version)
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[v](con)
                if version < SCHEMA_VERSION:
                    con.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                    orphans = con.execute("PRAGMA foreign_key_check").fetchall()
                    if orphans:
                        raise MigperfError(
                            f"upgrading {self.path} to results schema {SCHEMA_VERSION} would "
                            f"leave {len(orphans)} row(s) without their run; nothing was changed",
                            hint="keep this file as it is and report the problem; "
                            "`migperf results export --results FILE` still reads it",
                        )
        finally:
            con.execute("PRAGMA foreign_keys=ON")

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

    @property
    def schema_version(self) -> int:
        """The file's schema version (a read-only store may be older than this migperf's)."""
        return max(self._version(), 0)

    # ------------------------------------------------------------- writing

    def has_run(self, run_key: str) -> bool:
        """Whether any attempt of a run with this key is stored."""
        return (
            self._con.execute("SELECT 1 FROM runs WHERE run_key=?", (run_key,)).fetchone()
            is not None
        )

    def stored_keys(self, config_hash: str) -> set[str]:
        """Run keys with any stored attempt (whatever its status) for one config hash."""
        rows = self._con.execute(
            "SELECT DISTINCT run_key FROM runs WHERE config_hash=?", (config_hash,)
        )
        return {r[0] for r in rows}

    def latest_attempts(self, config_hash: str) -> dict[str, tuple[int, str]]:
        """Run key -> (its highest attempt, that attempt's status), for one config hash.

        What ``--resume`` decides by (skip a key whose latest attempt is ok, oom
        or skipped; retry the others as attempt N+1) and ``--rerun`` numbers by.
        """
        rows = self._con.execute(
            "SELECT run_key, attempt, status FROM latest_runs WHERE config_hash=?", (config_hash,)
        )
        return {str(k): (int(a), str(s)) for k, a, s in rows}

    def record(self, rec: RunRecord) -> int | None:
        """Store one run attempt in one transaction.

        Returns:
            The new row's ``run_id``; None when this (run_key, attempt) is
            already stored (a record delivered twice is stored once).

        Raises:
            MigperfError: the store is open read-only, the attempt is below 1,
                or SQLite refuses the row (a required field is missing).
        """
        if self.read_only:
            raise MigperfError(
                f"cannot store run {rec.run_key}: {self.path} is open read-only",
                hint="open the store without read_only=True to record runs",
            )
        if rec.attempt < 1:
            raise MigperfError(
                f"cannot store run {rec.run_key}: attempt {rec.attempt} is below 1",
                hint="number attempts from 1 (latest_attempts() gives the last one)",
            )
        d = json.dumps
        try:
            with self._transaction() as con:
                cur = con.execute(
                    """INSERT INTO runs (run_key, attempt, experiment, config_hash, started_unix,
                       finished_unix, status, error, gpu_index, gpu_name, gpu_uuid, driver_version,
                       layout, profile, mig_uuid, device, device_kind, simulated, workload, task,
                       precision, batch_size, seq_len, repeat, params, environment, result)
                       VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
                       ON CONFLICT (run_key, attempt) DO NOTHING""",
                    (
                        rec.run_key,
                        rec.attempt,
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
                # Only the (run_key, attempt) conflict is ignored: OR IGNORE would
                # also drop a row with a NULL status, silently.
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
        except sqlite3.IntegrityError as exc:
            raise MigperfError(
                f"cannot store run {rec.run_key} (attempt {rec.attempt}) in {self.path}: {exc}",
                hint="this is a bug in whatever built the record; the run must be measured again",
            ) from None
        return run_id

    def record_compat(self, rows: Sequence[CompatRow]) -> int:
        """Store one compatibility matrix (``migperf compat``) in one transaction.

        Returns:
            The number of rows stored.

        Raises:
            MigperfError: the store is open read-only, or a row is refused (an
                unknown verdict, or a (session, framework, check) stored already).
        """
        if self.read_only:
            raise MigperfError(
                f"cannot store the compat matrix: {self.path} is open read-only",
                hint="open the store without read_only=True to record compat rows",
            )
        from migperf.results.compat import insert_compat

        try:
            with self._transaction() as con:
                return insert_compat(con, rows)
        except (ValueError, sqlite3.IntegrityError) as exc:
            raise MigperfError(
                f"cannot store the compat matrix in {self.path}: {exc}",
                hint="this is a bug in whatever built the rows; run `migperf compat` again",
            ) from None

    # ------------------------------------------------------------- reading

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        """Run a read query (rows behave as tuples and mappings).

        ``runs`` holds every attempt, ``latest_runs`` each run key's latest one.
        """
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
