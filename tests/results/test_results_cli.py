"""``migperf results list|show|export``: attempts, read-only opening, and output paths.

Asserted as a user sees it: the exit code, the ERROR/HINT text, and that
nothing was written or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.results import ResultsStore, RunRecord
from tests.results.v1store import write_v1_store


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """Key a crashed once and then ran ok (attempt 2); key b ran ok once."""
    db = tmp_path / "r.db"
    with ResultsStore(db) as s:
        for key, status, attempt in (("a", "crashed", 1), ("a", "ok", 2), ("b", "ok", 1)):
            s.record(
                RunRecord(
                    run_key=key,
                    experiment="exp",
                    config_hash="h",
                    status=status,
                    started_unix=1_700_000_000.0,
                    workload="gemm",
                    batch_size=1 if key == "a" else 2,
                    error="worker crashed" if status != "ok" else None,
                    metrics={"samples_per_s": (5.0 * attempt, "1/s")} if status == "ok" else {},
                    attempt=attempt,
                )
            )
    return db


def test_list_counts_runs_by_their_latest_attempt(store: Path) -> None:
    code, out = invoke("results", "list", "--results", str(store), "--json")
    assert code == 0, out
    [row] = json.loads(out)
    assert (row["experiment"], row["runs"], row["ok"], row["attempts"]) == ("exp", 2, 2, 3)
    code, out = invoke("results", "list", "--results", str(store))
    assert code == 0 and "attempts" in out


def test_show_gives_latest_attempts_and_all_of_them_on_request(store: Path) -> None:
    code, out = invoke("results", "show", "--results", str(store), "--json")
    assert code == 0, out
    rows = json.loads(out)
    assert sorted((r["batch_size"], r["status"]) for r in rows) == [(1, "ok"), (2, "ok")]
    code, out = invoke("results", "show", "--results", str(store), "--json", "--all-attempts")
    assert code == 0, out
    rows = json.loads(out)
    assert sorted((r["batch_size"], r["attempt"], r["status"]) for r in rows) == [
        (1, 1, "crashed"),
        (1, 2, "ok"),
        (2, 1, "ok"),
    ]
    code, out = invoke("results", "show", "--results", str(store), "--all-attempts")
    assert code == 0 and "3 attempt(s)" in out and "worker crashed" in out
    code, out = invoke("results", "show", "--results", str(store))
    assert code == 0 and "2 run(s)" in out and "worker crashed" not in out


def test_export_has_the_attempt_column_and_all_attempts_on_request(
    store: Path, tmp_path: Path
) -> None:
    import pandas as pd

    latest, every = tmp_path / "latest.csv", tmp_path / "all.csv"
    code, out = invoke("results", "export", str(latest), "--results", str(store))
    assert code == 0 and "wrote 2 row(s)" in out
    code, out = invoke("results", "export", str(every), "--results", str(store), "--all-attempts")
    assert code == 0 and "wrote 3 row(s)" in out
    assert sorted(pd.read_csv(latest)["attempt"]) == [1, 2]
    assert sorted(pd.read_csv(every)["attempt"]) == [1, 1, 2]


def test_reading_commands_never_change_a_v1_store(tmp_path: Path) -> None:
    db = write_v1_store(tmp_path / "v1.db")
    before = digest(db)
    code, out = invoke("results", "list", "--results", str(db), "--json")
    assert code == 0, out
    assert json.loads(out)[0]["runs"] == 3
    code, out = invoke("results", "show", "--results", str(db), "--json")
    assert code == 0 and len(json.loads(out)) == 3
    code, out = invoke("results", "export", str(tmp_path / "o.csv"), "--results", str(db))
    assert code == 0 and "wrote 3 row(s)" in out
    assert digest(db) == before
    con = sqlite3.connect(db)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
    con.close()


@pytest.mark.parametrize("command", ["list", "show", "export"])
def test_a_file_that_is_not_a_store_is_a_clean_error(tmp_path: Path, command: str) -> None:
    foreign = tmp_path / "notes.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE notes (text TEXT)")
    con.commit()
    con.close()
    corrupt = tmp_path / "corrupt.db"
    corrupt.write_bytes(b"\x00garbage" * 512)
    missing = tmp_path / "missing" / "r.db"
    extra = [str(tmp_path / "o.csv")] if command == "export" else []
    for db, code_wanted, text in (
        (foreign, 1, "is a SQLite file but not a migperf results store"),
        (corrupt, 1, "is not a usable migperf results store"),
        (missing, 2, "no results store at"),
    ):
        before = digest(db) if db.exists() else None
        code, out = invoke("results", command, *extra, "--results", str(db))
        assert code == code_wanted, out
        assert str(db) in out.replace("\n", "")
        assert text in out and "HINT:" in out and "Traceback" not in out
        assert (digest(db) if db.exists() else None) == before
    assert not (tmp_path / "missing").exists() and not (tmp_path / "o.csv").exists()


# ------------------------------------------------------------ output paths


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_export_to_a_folder_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports"
    out.mkdir()
    code, text = invoke("results", "export", str(out), "--results", str(store))
    assert code == 2
    assert f"cannot export to {out}: it is a folder" in text.replace("\n", "")
    assert "HINT: give a file name" in text
    assert _files(out) == []


def test_export_into_a_missing_folder_is_refused(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "nowhere" / "deeper" / "o.csv"
    code, text = invoke("results", "export", str(out), "--results", str(store))
    assert code == 2
    assert "does not exist" in text and "mkdir -p" in text
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_export_into_a_read_only_folder_is_refused(store: Path, tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, text = invoke("results", "export", str(folder / "o.csv"), "--results", str(store))
        assert code == 2 and "is not writable" in text and "HINT:" in text
        assert _files(folder) == []
    finally:
        folder.chmod(0o755)


def test_a_write_that_fails_midway_leaves_nothing_and_the_old_file_intact(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import pandas as pd

    out = tmp_path / "o.csv"
    out.write_text("yesterday's export\n")

    def half_then_disk_full(self: pd.DataFrame, path: Path, **kw: object) -> None:
        Path(path).write_text("run_id,run_key\n1,")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pd.DataFrame, "to_csv", half_then_disk_full)
    code, text = invoke("results", "export", str(out), "--results", str(store))
    assert code == 2, text
    assert f"cannot write {out}" in text.replace("\n", "") and "No space left" in text
    assert out.read_text() == "yesterday's export\n"
    # No temporary file left behind (the store's own WAL files aside).
    assert [f for f in _files(tmp_path) if not f.startswith("r.db")] == ["o.csv"]


@pytest.mark.parametrize(
    ("name", "fmt", "first"),
    [("o.json", None, "["), ("o.csv", None, "run_id,run_key,"), ("o.CSV", None, "run_id,run_key,"), ("o.txt", "json", "[")],
)
def test_export_format_follows_the_file_name(
    store: Path, tmp_path: Path, name: str, fmt: str | None, first: str
) -> None:
    out = tmp_path / name
    code, _ = invoke("results", "export", str(out), "--results", str(store), *(["--format", fmt] if fmt else []))
    assert code == 0
    text = out.read_text()
    assert text.lstrip().startswith(first)
    if first == "[":
        assert len(json.loads(text)) == 2  # strict JSON, one object per run


@pytest.mark.parametrize(
    ("name", "fmt", "message"),
    [
        ("o.xlsx", None, "cannot tell the export format of"),
        ("o", None, "cannot tell the export format of"),
        ("o.json", "csv", "--format csv but"),
        ("o.csv", "xml", "unknown export format 'xml'"),
    ],
)
def test_export_refuses_a_format_it_would_not_write(
    store: Path, tmp_path: Path, name: str, fmt: str | None, message: str
) -> None:
    # Before: out.json and out.xlsx silently got CSV.
    out = tmp_path / name
    code, text = invoke("results", "export", str(out), "--results", str(store), *(["--format", fmt] if fmt else []))
    assert code == 2 and message in text.replace("\n", " ") and "HINT:" in text
    assert not out.exists() and _files(tmp_path) == ["r.db"]


def test_an_unstable_run_is_flagged_where_its_numbers_are_read(tmp_path: Path) -> None:
    # bench said "unstable"; results show and the report did not (#24).
    from migperf.experiments.records import metrics_of
    from migperf.report.page import build_report

    class _Stab:
        stable = False
        window_samples_per_s = [100.0, 60.0, 98.0]

    class _Result:
        throughput = latency_ms = timing = scenario = telemetry = None
        stability = _Stab()

    metrics = metrics_of(_Result())
    assert metrics["unstable"] == (1.0, "flag") and round(metrics["window_spread"][0], 3) == 0.667
    db = tmp_path / "u.db"
    with ResultsStore(db) as s:
        for key, flag in (("a", 1.0), ("b", 0.0)):
            s.record(
                RunRecord(
                    run_key=key, experiment="exp", config_hash="h", status="ok",
                    started_unix=1_700_000_000.0, workload="gemm", batch_size=1 if key == "a" else 2,
                    metrics={"samples_per_s": (5.0, "1/s"), "unstable": (flag, "flag")},
                )
            )
    code, out = invoke("results", "show", "--results", str(db))
    assert code == 0 and "ok*" in out and "* unstable (1 run(s))" in out.replace("\n", " ")
    report = build_report(db, tmp_path / "rep", {})
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.count("ok (unstable)") == 1
    assert report is not None
