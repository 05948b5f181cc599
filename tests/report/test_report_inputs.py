"""What a report and a comparison read (latest attempts, read-only) and where a report may write."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.report import build_report
from migperf.report.compare import Side, compare_results
from migperf.report.folder import MARKER, is_report_folder
from migperf.results.store import ResultsStore, RunRecord, decode_params
from tests.report.conftest import StoreWriter
from tests.report.test_compare import _store
from tests.results.v1store import write_v1_store


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _small_store(path: Path) -> Path:
    w = StoreWriter(path)
    for bs in (1, 2):
        w.throughput_run("1g.10gb", 1, bs, telemetry=False)
    w.close()
    return path


def _another_attempt(db: Path, where: str, *, status: str, attempt: int) -> int:
    """Store another attempt of each run matching ``where`` (a copy of it with ``status``)."""
    with ResultsStore(db) as store:
        rows = store.query(f"SELECT * FROM runs WHERE {where}")
        for r in rows:
            store.record(
                RunRecord(
                    run_key=r["run_key"],
                    experiment=r["experiment"],
                    config_hash=r["config_hash"],
                    status=status,
                    error=None if status == "ok" else "CUDA out of memory (stale attempt)",
                    gpu_name=r["gpu_name"],
                    driver_version=r["driver_version"],
                    layout=r["layout"],
                    profile=r["profile"],
                    workload=r["workload"],
                    task=r["task"],
                    precision=r["precision"],
                    batch_size=r["batch_size"],
                    seq_len=r["seq_len"],
                    repeat=r["repeat"],
                    params=decode_params(r["params"]),
                    attempt=attempt,
                )
            )
    return len(rows)


# ------------------------------------------------------------ latest attempts


def test_compare_and_report_judge_each_run_by_its_latest_attempt(tmp_path: Path) -> None:
    a = _store(tmp_path / "a.db", seed=11)
    b = _store(tmp_path / "b.db", seed=12)
    # In B, 1g bs 8 ran out of memory first and was then retried ok: renumber the
    # ok rows as attempt 2 and store the failures as attempt 1.
    con = sqlite3.connect(b)
    con.execute("UPDATE runs SET attempt = 2 WHERE profile = '1g.10gb' AND batch_size = 8")
    con.commit()
    con.close()
    _another_attempt(b, "profile = '1g.10gb' AND batch_size = 8", status="oom", attempt=1)
    # ...and 3g bs 1 was fine at first, but its rerun (attempt 2) ran out of memory.
    broke = _another_attempt(b, "profile = '3g.40gb' AND batch_size = 1", status="oom", attempt=2)
    assert broke == 3

    c = compare_results(Side(a), Side(b))
    assert [(e["key"]["profile"], e["key"]["batch_size"]) for e in c.broken] == [("3g.40gb", 1)]
    # The retried 1g bs 8 runs compare as plain ok runs: their stale failures are not pooled in.
    assert not c.partial and not c.not_compared and not c.only_a and not c.only_b
    assert {(ch.run["profile"], ch.run["batch_size"]) for ch in c.changes} == {
        ("1g.10gb", 1),
        ("1g.10gb", 8),
        ("3g.40gb", 8),
    }

    report = build_report(b, tmp_path / "report")
    assert report.runs == 12 and report.not_ok == 3
    html = (tmp_path / "report" / "index.html").read_text()
    assert html.count("CUDA out of memory (stale attempt)") == 3  # the 3g reruns only


def test_report_and_compare_read_a_v1_store_without_changing_it(tmp_path: Path) -> None:
    db = write_v1_store(tmp_path / "v1.db")
    before = digest(db)
    code, out = invoke("report", "--results", str(db), "--out", str(tmp_path / "rep"))
    assert code == 0, out
    assert "3 run(s), 1 not ok" in out
    code, out = invoke("compare", "h1", "h1", "--results", str(db), "--json")
    assert code == 0, out
    assert digest(db) == before


@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_file_that_is_not_a_store_is_a_clean_error(tmp_path: Path, command: str) -> None:
    foreign = tmp_path / "notes.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE notes (text TEXT)")
    con.commit()
    con.close()
    before = digest(foreign)
    args = ["report", "--results", str(foreign), "--out", str(tmp_path / "rep")]
    if command == "compare":
        args = ["compare", str(foreign), str(foreign)]
    code, out = invoke(*args)
    assert code == 1, out
    assert "is a SQLite file but not a migperf results store" in out and str(foreign) in out
    assert "HINT:" in out and "Traceback" not in out
    assert digest(foreign) == before and not (tmp_path / "rep").exists()


# ------------------------------------------------------------ --out


def test_report_refuses_a_folder_that_holds_something_else(tmp_path: Path) -> None:
    db = _small_store(tmp_path / "r.db")
    out = tmp_path / "Documents"
    out.mkdir()
    (out / "thesis.tex").write_text("\\documentclass{article}")
    (out / "plots").mkdir()
    (out / "plots" / "figure1.png").write_bytes(b"my own figure")
    code, text = invoke("report", "--results", str(db), "--out", str(out))
    assert code == 2, text
    flat = text.replace("\n", "")
    assert f"refusing to write the report into {out}" in flat
    assert "not empty (plots, thesis.tex)" in flat
    assert "HINT: pass --out with an empty (or new) folder" in flat
    # Nothing was written, nothing deleted.
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == [
        "plots",
        "plots/figure1.png",
        "thesis.tex",
    ]
    assert (out / "plots" / "figure1.png").read_bytes() == b"my own figure"


def test_report_refuses_a_file_as_its_folder(tmp_path: Path) -> None:
    db = _small_store(tmp_path / "r.db")
    out = tmp_path / "report.html"
    out.write_text("keep me")
    code, text = invoke("report", "--results", str(db), "--out", str(out))
    assert code == 2 and "it is a file, not a folder" in text and "HINT:" in text
    assert out.read_text() == "keep me"


def test_report_writes_into_a_new_an_empty_or_its_own_folder(tmp_path: Path) -> None:
    db = _small_store(tmp_path / "r.db")
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (tmp_path / "new" / "report", empty):
        code, text = invoke("report", "--results", str(db), "--out", str(out))
        assert code == 0, text
        assert (out / "index.html").is_file() and is_report_folder(out)
        marker = json.loads((out / MARKER).read_text())
        assert marker["generator"] == "migperf report"
    # A report folder, with a file the user added, is written again; the file stays.
    (empty / "notes.txt").write_text("mine")
    (empty / "plots" / "old-plot.png").write_bytes(b"stale")
    code, text = invoke("report", "--results", str(db), "--out", str(empty))
    assert code == 0, text
    assert (empty / "notes.txt").read_text() == "mine"
    assert not (empty / "plots" / "old-plot.png").exists()
