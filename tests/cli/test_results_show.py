"""`migperf results show` as a person reads it: fits the terminal, says what is missing and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app

CONFIG = (
    "name: show\nlayouts: ['0', '9,9']\ninstances: each\n"
    "stop: {warmup_iterations: 1, min_iterations: 3, min_duration_s: 0, max_duration_s: 5}\n"
    "jobs: [{workload: gemm, model_args: {n: 32}, sweep: {batch_size: [1, 8]}}]\n"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("show")
    (tmp / "c.yaml").write_text(CONFIG)
    r = CliRunner().invoke(
        app,
        ["--simulate", "a100-80gb", "run", str(tmp / "c.yaml"), "--results", str(tmp / "r.db")],
        env={"MIGPERF_STATE_DIR": str(tmp / "state")},
    )
    assert r.exit_code == 0, r.stderr
    return tmp / "r.db"


def show(store: Path, *args: str, columns: int = 80) -> str:
    r = CliRunner().invoke(
        app, ["results", "show", "--results", str(store), *args], env={"COLUMNS": str(columns)}
    )
    assert r.exit_code == 0, r.stderr
    return r.stdout


def test_at_80_columns_the_essential_columns_are_whole(store: Path) -> None:
    out = show(store)
    assert all(len(line) <= 80 for line in out.splitlines())
    assert "…" not in out
    header = next(line for line in out.splitlines() if "workload" in line)
    for name in ("workload", "slice", "batch", "status", "samples/s", "p50 ms"):
        assert name in header
    assert "7g.80gb" in out and "3g.40gb" in out
    assert "simulated" not in header.lower()  # the title says it once, no column of True
    assert "more columns with --wide" in out


def test_blank_percentiles_say_why(store: Path) -> None:
    out = " ".join(show(store).split())
    assert "p50 ms blank where a run measured fewer samples than the percentile needs" in out


def test_wide_and_columns(store: Path) -> None:
    wide = show(store, "--wide", columns=200)
    assert "layout" in wide and "experiment" in wide
    assert "seq" not in next(line for line in wide.splitlines() if "workload" in line)  # gemm
    chosen = show(store, "--columns", "workload,slice,samples/s")
    header = next(line for line in chosen.splitlines() if "workload" in line)
    assert "status" not in header and "samples/s" in header
    r = CliRunner().invoke(app, ["results", "show", "--results", str(store), "--columns", "nope"])
    assert r.exit_code == 2 and "unknown column(s) nope" in r.stderr


def test_json_keeps_every_field(store: Path) -> None:
    rows = json.loads(show(store, "--json"))
    assert len(rows) == 6 and {"layout", "profile", "samples_per_s"} <= set(rows[0])
