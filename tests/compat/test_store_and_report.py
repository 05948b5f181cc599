"""Compat rows in the results store (schema 3) and in ``migperf report``."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from migperf.errors import MigperfError
from migperf.results import SCHEMA_VERSION, CompatRow, ResultsStore, RunRecord, compat_rows
from migperf.results.schema import MIGRATIONS


def row(
    check: str,
    verdict: str,
    *,
    session: str = "compat-1",
    device: str = "MIG-a",
    t: float = 1.0,
    **kw: object,
) -> CompatRow:
    values: dict[str, object] = dict(
        session=session,
        started_unix=t,
        device=device,
        second_device="MIG-b",
        gpu_name="NVIDIA H200 MIG 1g.18gb",
        driver_version="580.1",
        framework="pytorch",
        framework_version="2.13.0",
        check_name=check,
        verdict=verdict,
        detail=f"{check} detail",
        wall_s=0.5,
        simulated=False,
        versions={"python": "3.11", "pytorch": "2.13.0"},
    )
    values.update(kw)
    return CompatRow(**values)  # type: ignore[arg-type]


def write_v2(path: Path) -> Path:
    con = sqlite3.connect(path)
    for v in (1, 2):
        MIGRATIONS[v](con)
    con.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    con.execute(
        "INSERT INTO runs (run_key, attempt, experiment, config_hash, finished_unix, status) "
        "VALUES ('k', 1, 'old', 'h', 1.0, 'ok')"
    )
    con.commit()
    con.close()
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rows_round_trip_and_a_session_is_stored_once(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    rows = [row("import", "pass"), row("devices-two", "expected-fail", detail="sees 1 of 2")]
    with ResultsStore(db) as store:
        assert store.schema_version == SCHEMA_VERSION == 3
        assert store.record_compat(rows) == 2
        with pytest.raises(MigperfError, match="cannot store the compat matrix"):
            store.record_compat([row("import", "pass")])  # the same (session, framework, check)
        with pytest.raises(MigperfError, match="verdict 'maybe'"):
            store.record_compat([row("oom", "maybe", session="compat-2")])
        assert compat_rows(store) == rows
    with ResultsStore(db, read_only=True) as store:
        assert compat_rows(store, "compat-1") == rows
        with pytest.raises(MigperfError, match="open read-only"):
            store.record_compat(rows)


def test_a_v2_store_reads_as_having_no_matrix_and_upgrades_keeping_its_runs(tmp_path: Path) -> None:
    db = write_v2(tmp_path / "v2.db")
    before = digest(db)
    with ResultsStore(db, read_only=True) as store:
        assert store.schema_version == 2 and compat_rows(store) == []
    assert digest(db) == before
    with ResultsStore(db) as store:
        assert store.schema_version == 3
        assert store.record_compat([row("import", "pass")]) == 1
        assert [r["run_key"] for r in store.query("SELECT run_key FROM latest_runs")] == ["k"]


def test_the_report_shows_each_devices_latest_matrix(tmp_path: Path) -> None:
    from migperf.report.compat_table import latest_matrices
    from migperf.report.data import load_report_data
    from migperf.report.page import render_html, render_markdown

    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        store.record(
            RunRecord(run_key="k", experiment="e", config_hash="h", status="ok", workload="gemm")
        )
        store.record_compat([row("import", "pass", session="old", t=1.0)])
        store.record_compat(
            [
                row("import", "pass", session="new", t=2.0),
                row("data-parallel", "fail", session="new", t=2.0, detail="NCCL error | boom"),
            ]
        )
        store.record_compat(
            [
                row(
                    "import",
                    "pass",
                    session="sim",
                    device="GPU 0 (simulated)",
                    t=1.5,
                    simulated=True,
                )
            ]
        )
    rows = latest_matrices(db)
    assert [(r.session, r.check_name) for r in rows] == [
        ("new", "import"),
        ("new", "data-parallel"),
        ("sim", "import"),
    ]
    data = load_report_data(db)
    page = render_html(data, [], rows)
    assert '<a href="#compat">Framework compatibility</a>' in page
    assert '<tr class="bad"><td>MIG-a</td><td>pytorch</td>' in page
    assert "SIMULATED: ran on the CPU" in page and "1 pass, 1 fail, 0 expected-fail" in page
    md = render_markdown(data, [], rows)
    assert "## Framework compatibility" in md
    assert (
        "| MIG-a | pytorch | 2.13.0 | data-parallel | fail | no | 0.50 | NCCL error \\| boom |"
        in md
    )
    # A store without matrices: no section.
    plain = tmp_path / "plain.db"
    with ResultsStore(plain) as store:
        store.record(RunRecord(run_key="k", experiment="e", config_hash="h", status="ok"))
    assert latest_matrices(plain) == []
    assert "Framework compatibility" not in render_html(load_report_data(plain), [], [])


def test_migperf_report_writes_the_compat_table(tmp_path: Path) -> None:
    from migperf.report import build_report

    db = tmp_path / "r.db"
    with ResultsStore(db) as store:
        store.record(RunRecord(run_key="k", experiment="e", config_hash="h", status="failed"))
        store.record_compat(
            [row("oom", "pass", detail="torch.OutOfMemoryError: CUDA out of memory")]
        )
    report = build_report(db, tmp_path / "report")
    page = report.html_path.read_text()
    assert '<section id="compat">' in page and "torch.OutOfMemoryError" in page
    assert "| MIG-a | pytorch | 2.13.0 | oom | pass |" in report.markdown_path.read_text()


def test_a_store_of_compat_matrices_only_gets_a_report(tmp_path: Path) -> None:
    # `migperf compat` then `migperf report`: it refused ("holds no runs") before.
    from typer.testing import CliRunner

    from migperf.cli.main import app

    db = tmp_path / "c.db"
    with ResultsStore(db) as store:
        store.record_compat([row("infer", "pass")])
    res = CliRunner().invoke(app, ["report", "--results", str(db), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert (
        "framework compatibility matrices only" in md
        and "| MIG-a | pytorch | 2.13.0 | infer | pass |" in md
    )
    assert "No plot" not in md  # no empty plot sections for a store without runs
    res = CliRunner().invoke(
        app,
        ["report", "--results", str(db), "--out", str(tmp_path / "r2"), "--filter", "workload=x"],
    )
    assert res.exit_code == 2  # a filter on runs still needs runs
