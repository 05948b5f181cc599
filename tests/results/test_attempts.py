"""Schema 2: every measurement is kept as an attempt; v1 files upgrade with their rows intact."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest

from migperf.errors import MigperfError
from migperf.results import SCHEMA_VERSION, ResultsStore, RunRecord, export, load
from migperf.results.schema import MIGRATIONS
from tests.results.v1store import V1_RUNS, write_v1_store


def rec(key: str, status: str = "ok", attempt: int = 1, tput: float = 10.0) -> RunRecord:
    return RunRecord(
        run_key=key,
        experiment="e",
        config_hash="h",
        status=status,
        workload="gemm",
        batch_size=1,
        error=None if status == "ok" else f"{status} on attempt {attempt}",
        metrics={"samples_per_s": (tput, "1/s")} if status == "ok" else {},
        samples={"latency_ms": [1.0, 2.0]},
        attempt=attempt,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def columns(db: Path, table: str) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [r[1] for r in con.execute(f"PRAGMA table_info({table})")]
    finally:
        con.close()


# ------------------------------------------------------------ attempts


def test_a_rerun_is_a_new_attempt_and_a_repeated_record_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION >= 2
        first = store.record(rec("a", "crashed"))
        second = store.record(rec("a", "ok", attempt=2, tput=12.0))
        assert first is not None and second is not None and second > first
        # A cluster driver may get the same record twice: stored once, None the second time.
        assert store.record(rec("a", "ok", attempt=2, tput=99.0)) is None
        assert store.record(rec("b", "oom")) is not None
        assert store.latest_attempts("h") == {"a": (2, "ok"), "b": (1, "oom")}
        assert store.latest_attempts("other") == {}
        assert store.stored_keys("h") == {"a", "b"}
        assert store.has_run("a") and not store.has_run("c")
        assert len(store.query("SELECT * FROM runs")) == 3
        assert store.samples(second) == [1.0, 2.0]

    # Readers see each run's latest attempt, with its number...
    wide = load(db, wide=True)
    assert sorted(zip(wide["run_key"], wide["attempt"], wide["status"], strict=True)) == [
        ("a", 2, "ok"),
        ("b", 1, "oom"),
    ]
    assert wide.loc[wide["run_key"] == "a", "samples_per_s"].tolist() == [12.0]  # not the 99
    # ...and every attempt when they ask; filters apply after the latest is chosen.
    every = load(db, wide=True, all_attempts=True)
    assert sorted(zip(every["run_key"], every["attempt"], strict=True)) == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
    ]
    assert load(db, wide=True, status="crashed").empty
    assert len(load(db, wide=True, all_attempts=True, status="crashed")) == 1
    tidy = load(db)
    assert "attempt" in tidy.columns and set(tidy["attempt"]) == {1, 2}

    assert export(db, tmp_path / "latest.csv", "csv") == 2
    assert export(db, tmp_path / "all.csv", "csv", all_attempts=True) == 3
    import pandas as pd

    assert list(pd.read_csv(tmp_path / "all.csv")["attempt"]) == [1, 2, 1]
    assert list(pd.read_csv(tmp_path / "latest.csv")["attempt"]) == [2, 1]


def test_a_record_is_never_dropped_silently(tmp_path: Path) -> None:
    with ResultsStore(tmp_path / "r.db") as store:
        with pytest.raises(MigperfError, match="attempt 0 is below 1"):
            store.record(rec("a", attempt=0))
        # A row SQLite refuses (no status) is an error, not a quiet None.
        bad = RunRecord(run_key="a", experiment="e", config_hash="h", status=None)  # type: ignore[arg-type]
        with pytest.raises(MigperfError, match="cannot store run a") as info:
            store.record(bad)
        assert info.value.hint
        assert store.query("SELECT COUNT(*) FROM runs")[0][0] == 0
        assert store.query("SELECT COUNT(*) FROM metrics")[0][0] == 0


def test_attempt_travels_in_the_record_stream() -> None:
    r = rec("a", attempt=3)
    data = r.to_dict()
    assert data["attempt"] == 3 and RunRecord.from_dict(data) == r
    del data["attempt"]  # a node from before attempts
    assert RunRecord.from_dict(data).attempt == 1


# ------------------------------------------------------------ v1 upgrade


def test_a_v1_store_upgrades_in_place_with_every_row_attached(tmp_path: Path) -> None:
    db = write_v1_store(tmp_path / "v1.db")
    assert "attempt" not in columns(db, "runs")
    with ResultsStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION
        rows = store.query("SELECT run_id, run_key, attempt, status FROM runs ORDER BY run_id")
        assert [tuple(r) for r in rows] == [
            (1, "h1-a", 1, "ok"),
            (2, "h1-b", 1, "failed"),
            (3, "h1-c", 1, "ok"),
        ]
        # metrics, samples and telemetry still belong to the same runs.
        joined = store.query(
            "SELECT r.run_key, m.value FROM runs r JOIN metrics m ON m.run_id = r.run_id "
            "ORDER BY r.run_key"
        )
        assert [tuple(r) for r in joined] == [("h1-a", 100.0), ("h1-c", 300.0)]
        assert store.samples(1) == [1.0, 2.0, 3.0] and store.samples(3) == [0.5]
        assert store.query("SELECT COUNT(*) FROM telemetry")[0][0] == 2
        assert store.query("PRAGMA foreign_key_check") == []
        assert store.latest_attempts("h1") == {k: (1, v[0]) for k, v in V1_RUNS.items()}
        # What v1 could not do: the failed run measured again, as attempt 2.
        retry = store.record(
            RunRecord(run_key="h1-b", experiment="old", config_hash="h1", status="ok", attempt=2)
        )
        # AUTOINCREMENT's high-water mark survived: run_ids 4 and 5 are never reused.
        assert retry == 6
        assert store.latest_attempts("h1")["h1-b"] == (2, "ok")
    con = sqlite3.connect(db)
    meta = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    views = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='view'")]
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert meta == (str(SCHEMA_VERSION),) and views == ["latest_runs"] and "runs_v2" not in tables
    # Reopening an upgraded store changes nothing.
    ResultsStore(db).close()
    assert load(db, wide=True)["run_key"].tolist() == ["h1-a", "h1-c", "h1-b"]


def test_a_failed_upgrade_leaves_the_v1_file_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = write_v1_store(tmp_path / "v1.db")
    real = MIGRATIONS[2]

    def upgrade_then_die(con: sqlite3.Connection) -> None:
        real(con)  # the whole rebuild ran...
        raise sqlite3.OperationalError("disk I/O error")  # ...and then the disk failed

    monkeypatch.setitem(MIGRATIONS, 2, upgrade_then_die)
    with pytest.raises(MigperfError, match="disk I/O error") as info:
        ResultsStore(db)
    assert str(db) in info.value.message
    monkeypatch.undo()
    # One transaction: still v1, every row in place, no half-built table.
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
    assert con.execute("SELECT run_id, run_key FROM runs ORDER BY run_id").fetchall() == [
        (1, "h1-a"),
        (2, "h1-b"),
        (3, "h1-c"),
    ]
    names = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
    con.close()
    assert "runs_v2" not in names and "latest_runs" not in names
    assert "attempt" not in columns(db, "runs")
    # And the next writer upgrades it for real.
    with ResultsStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION


# ------------------------------------------------------------ read-only


def test_a_v1_store_is_read_as_is_without_a_byte_changed(tmp_path: Path) -> None:
    db = write_v1_store(tmp_path / "v1.db")
    before = digest(db)
    with ResultsStore(db, read_only=True) as store:
        assert store.schema_version == 1
        assert store.latest_attempts("h1") == {k: (1, v[0]) for k, v in V1_RUNS.items()}
        with pytest.raises(MigperfError, match="open read-only"):
            store.record(rec("x"))
    wide = load(db, wide=True)
    assert wide["attempt"].tolist() == [1, 1, 1]
    assert wide["samples_per_s"].tolist()[::2] == [100.0, 300.0]
    assert len(load(db, wide=True, all_attempts=True)) == 3
    assert digest(db) == before
    assert "attempt" not in columns(db, "runs")


def test_read_only_refuses_what_is_not_a_store_and_changes_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such.db"
    with pytest.raises(MigperfError, match="no results store at") as info:
        ResultsStore(missing, read_only=True)
    assert info.value.exit_code == 2 and info.value.hint
    assert not (tmp_path / "no").exists()  # no folder made, no file

    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"not a database at all" * 100)
    with pytest.raises(MigperfError, match="not a usable migperf results store") as info:
        ResultsStore(corrupt, read_only=True)
    assert str(corrupt) in info.value.message and info.value.hint

    foreign = tmp_path / "other.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE users (name TEXT)")
    con.execute("INSERT INTO users VALUES ('ada')")
    con.commit()
    con.close()
    before = digest(foreign)
    for read_only in (True, False):
        with pytest.raises(MigperfError, match="not a migperf results store") as info:
            ResultsStore(foreign, read_only=read_only)
        assert str(foreign) in info.value.message and "--results" in info.value.hint
    # No meta table, runs table or WAL switch was added to somebody else's database.
    assert digest(foreign) == before

    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(MigperfError, match="not a migperf results store"):
        ResultsStore(empty, read_only=True)
    assert empty.stat().st_size == 0

    folder = tmp_path / "folder.db"
    folder.mkdir()
    for read_only in (True, False):
        with pytest.raises(MigperfError, match="is a folder"):
            ResultsStore(folder, read_only=read_only)


def test_a_store_from_a_newer_migperf_is_refused_both_ways(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        store.record(rec("a"))
    con = sqlite3.connect(db)
    newer = SCHEMA_VERSION + 1
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(newer),))
    con.commit()
    con.close()
    before = digest(db)
    for read_only in (True, False):
        with pytest.raises(MigperfError, match=f"schema {newer}, newer than this migperf's {SCHEMA_VERSION}") as info:
            ResultsStore(db, read_only=read_only)
        assert str(db) in info.value.message and "upgrade migperf" in info.value.hint
    assert digest(db) == before


def test_an_interrupted_v1_creation_is_still_a_new_store(tmp_path: Path) -> None:
    # A v1-era migperf created `meta` outside its transaction: a file with only an
    # empty meta table is a store that was never finished, not a foreign file.
    db = tmp_path / "r.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    con.commit()
    con.close()
    with ResultsStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION and store.record(rec("a")) is not None


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_a_store_in_a_read_only_folder_is_readable(tmp_path: Path) -> None:
    # A WAL reader needs a -shm file it cannot create there: read as immutable instead.
    folder = tmp_path / "archive"
    folder.mkdir()
    with ResultsStore(folder / "r.db") as store:
        store.record(rec("a"))
    folder.chmod(0o555)
    try:
        assert load(folder / "r.db", wide=True)["run_key"].tolist() == ["a"]
        assert sorted(p.name for p in folder.iterdir()) == ["r.db"]
    finally:
        folder.chmod(0o755)
