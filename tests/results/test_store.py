"""The results store: one transaction per run, no duplicates, pandas view."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from migperf.errors import MigperfError, UsageError
from migperf.results import SCHEMA_VERSION, ResultsStore, RunRecord, export, load


def rec(key: str, status: str = "ok", **kw: object) -> RunRecord:
    base = dict(
        run_key=key,
        experiment="e",
        config_hash="h",
        status=status,
        workload="gemm",
        batch_size=1,
        profile="1g.10gb",
        metrics={"samples_per_s": (10.0, "1/s")},
        samples={"latency_ms": [1.0, 2.0]},
    )
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]


def test_record_once_and_load_tidy_and_wide(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        assert store.record(rec("a")) is not None
        assert store.record(rec("a")) is None  # a key is stored once
        store.record(rec("b", status="crashed", metrics={}, samples={}, error="boom"))
        assert store.stored_keys("h") == {"a", "b"}
        run_id = store.query("SELECT run_id FROM runs WHERE run_key='a'")[0][0]
        assert store.samples(run_id) == [1.0, 2.0]
    tidy = load(db)
    assert len(tidy) == 2  # one metric row for a, one empty row for the failed b
    assert set(tidy["status"]) == {"ok", "crashed"}
    wide = load(db, wide=True, status="ok")
    assert list(wide["samples_per_s"]) == [10.0]
    with pytest.raises(UsageError, match="cannot filter on 'colour'"):
        load(db, colour="red")


def test_export_formats(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        store.record(rec("a"))
    assert export(db, tmp_path / "o.csv", "csv") == 1
    assert "samples_per_s" in (tmp_path / "o.csv").read_text()
    assert export(db, tmp_path / "o.json", "json") == 1
    with pytest.raises(UsageError, match="unknown export format"):
        export(db, tmp_path / "o.x", "xml")


def test_a_newer_store_is_refused_and_a_non_store_too(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    ResultsStore(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(SCHEMA_VERSION + 1),))
    con.commit()
    con.close()
    with pytest.raises(MigperfError, match="newer than this migperf"):
        ResultsStore(db)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(MigperfError, match="not a usable migperf results store"):
        ResultsStore(junk)


def test_missing_store_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no results store"):
        load(tmp_path / "nope.db")
