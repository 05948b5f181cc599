"""`migperf run`, `migperf config`, `migperf results` as a user types them."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from migperf.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_dry_run_of_the_quickstart_prints_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    code, out, err = run(
        "--simulate",
        "h100-80gb",
        "run",
        str(ROOT / "configs/quickstart.yaml"),
        "--dry-run",
        "--results",
        str(tmp_path / "r.db"),
    )
    assert code == 0, err
    assert "layout 2: 9,9 on GPU 0: 3g.40gb@0[3c], 3g.40gb@4[3c]" in out
    assert "9 run(s)" in err
    assert not (tmp_path / "r.db").exists()


def test_every_shipped_config_is_valid() -> None:
    # demand-*.yaml are planner demand files (checked in tests/planner), not experiments.
    configs = sorted(
        c for c in (ROOT / "configs").glob("*.yaml") if not c.name.startswith("demand")
    )
    assert len(configs) >= 8
    for cfg in configs:
        spec = "a100-80gb"  # study-mig-disabled switches MIG off itself (layout `disabled`)
        if "a30" in cfg.name:
            spec = "a30"
        elif "h100" in cfg.name:
            spec = "h100-80gb"
        code, out, err = run("--simulate", spec, "config", "check", str(cfg))
        assert code == 0, f"{cfg}: {err}"
        assert "valid" in out


def test_run_then_results(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: cli\nlayouts: ['0']\nstop: {warmup_iterations: 1, min_iterations: 3, min_duration_s: 0, max_duration_s: 5}\n"
        "jobs: [{workload: gemm, model_args: {n: 32}}]\n"
    )
    db = tmp_path / "r.db"
    code, _, err = run("--simulate", "a100-80gb", "run", str(cfg), "--results", str(db))
    assert code == 0, err
    assert "1 run(s) stored ok" in err and "Layouts restored" in err and "SIMULATED" in err
    code, out, _ = run("results", "list", "--results", str(db), "--json")
    assert json.loads(out)[0]["experiment"] == "cli"
    code, out, _ = run("results", "show", "--results", str(db), "--json")
    [row] = json.loads(out)
    assert row["status"] == "ok" and row["profile"] == "7g.80gb" and row["samples_per_s"] > 0
    code, out, _ = run("results", "show", "--results", str(db))
    assert "SIMULATED" in out
    code, _, err = run("results", "export", str(tmp_path / "o.csv"), "--results", str(db))
    assert code == 0 and "wrote 1 row(s)" in err


def test_invalid_config_exits_2_with_every_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: bad\njobs:\n  - workload: nope\n    batch_size: 0\n")
    code, _, err = run("--simulate", "a100-80gb", "run", str(cfg))
    assert code == 2
    assert "bad.yaml:3: jobs[0].workload" in err and "bad.yaml:4: jobs[0].batch_size" in err


def test_schema_command() -> None:
    code, out, _ = run("config", "schema")
    assert code == 0 and json.loads(out)["title"] == "ExperimentConfig"


def test_results_of_a_missing_store() -> None:
    code, _, err = run("results", "show", "--results", "/nonexistent/x.db")
    assert code == 2 and "no results store" in err


TINY_RUN = (
    "name: ro\nlayouts: {layouts}\nstop: {{warmup_iterations: 1, min_iterations: 3, "
    "min_duration_s: 0, max_duration_s: 5}}\njobs: [{{workload: gemm, model_args: {{n: 32}}}}]\n"
)


def _layout(spec: str) -> str:
    from migperf.mig.snapshot import take_snapshot
    from migperf.nvml import open_nvml

    with open_nvml(spec) as nvml:
        return take_snapshot(nvml, 0).describe()


def test_read_only_refuses_a_run_that_changes_layouts_before_anything_is_measured(
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_RUN.format(layouts="['0']"))
    db = tmp_path / "r.db"
    before = _layout("a100-80gb")
    code, _, err = run(
        "--simulate", "a100-80gb", "--read-only", "run", str(cfg), "--results", str(db)
    )
    assert code != 0
    assert "refusing to run" in err and "read-only mode is on" in err
    assert "layouts: [current]" in err  # the hint says how to measure the GPU as it is
    assert not db.exists() and _layout("a100-80gb") == before
    # --dry-run only looks: it shows the plan even in read-only mode.
    code, out, err = run("--simulate", "a100-80gb", "--read-only", "run", str(cfg), "--dry-run")
    assert code == 0, err
    assert "layout 1: 0 on GPU 0" in out


def test_read_only_measures_the_current_layout_of_a_partitioned_gpu(tmp_path: Path) -> None:
    # The layout is measured as found: nothing to apply, so nothing read-only must refuse
    # (before, the runner re-applied the found layout and read-only failed every run).
    from migperf.mig.manager import apply_layout
    from migperf.nvml import open_nvml

    with open_nvml("a100-80gb") as nvml:
        apply_layout(nvml, 0, "1g.10gb*2")
    before = _layout("a100-80gb")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_RUN.format(layouts="[current]"))
    db = tmp_path / "r.db"
    code, _, err = run(
        "--simulate", "a100-80gb", "--read-only", "run", str(cfg), "--results", str(db)
    )
    assert code == 0, err
    assert "1 run(s) stored ok, 0 failed" in err
    assert "  run 1/1 ok: gemm infer bs=1" in err  # the progress line of the one printer
    code, out, _ = run("results", "show", "--results", str(db), "--json")
    [row] = json.loads(out)
    assert row["status"] == "ok" and row["profile"] == "1g.10gb"
    assert _layout("a100-80gb") == before


def test_the_library_enforces_read_only_too(tmp_path: Path) -> None:
    import pytest

    from migperf.errors import ReadOnlyError
    from migperf.experiments import ExperimentRunner, open_executor, parse_config, plan_experiment
    from migperf.nvml import open_nvml
    from migperf.results import ResultsStore

    cfg = parse_config(TINY_RUN.format(layouts="['9,9']"), "c.yaml")
    with open_nvml("a100-80gb", read_only=True) as nvml:
        assert plan_experiment(nvml, cfg, "c.yaml").runs  # a dry-run plan is allowed
        with pytest.raises(ReadOnlyError, match="changes MIG layouts"):
            plan_experiment(nvml, cfg, "c.yaml", dry_run=False)
        plan = plan_experiment(nvml, cfg, "c.yaml")
        with ResultsStore(tmp_path / "r.db") as store, pytest.raises(ReadOnlyError):
            ExperimentRunner(nvml, plan, store)
    with (
        open_executor("local", simulate="a100-80gb", read_only=True) as ex,
        pytest.raises(ReadOnlyError),
    ):
        ex.plan(cfg, "c.yaml", dry_run=False)


def test_json_output_is_strict_json_without_nan(tmp_path: Path) -> None:
    # A run without latency percentiles leaves NaN in the frame; scripts must still parse it.
    cfg = tmp_path / "c.yaml"
    cfg.write_text(TINY_RUN.format(layouts="['0']"))
    db = tmp_path / "r.db"
    code, _, err = run("--simulate", "a100-80gb", "run", str(cfg), "--results", str(db))
    assert code == 0, err
    code, out, _ = run("results", "show", "--results", str(db), "--json")
    assert code == 0 and "NaN" not in out
    json.loads(out, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_resume_counts_only_the_runs_left(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        TINY_RUN.format(layouts="['0']").replace(
            "n: 32}}", "n: 32}, sweep: {batch_size: [1, 2, 3]}}"
        )
    )
    db = tmp_path / "r.db"
    code, _, err = run("--simulate", "a100-80gb", "run", str(cfg), "--results", str(db))
    assert code == 0 and "run 3/3" in err, err
    con = __import__("sqlite3").connect(db)
    con.execute("DELETE FROM runs WHERE batch_size = 3")
    con.commit()
    con.close()
    code, _, err = run("--simulate", "a100-80gb", "run", str(cfg), "--results", str(db), "--resume")
    assert code == 0, err
    assert "run 1/1 ok" in err and "/3" not in err


def test_run_workers_flag_and_plain_phase_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "name: cli-workers\nlayouts: ['0']\nstop: {warmup_iterations: 1, min_iterations: 3, "
        "min_duration_s: 0, max_duration_s: 5}\njobs: [{workload: gemm, model_args: {n: 32}}]\n"
    )
    db = tmp_path / "r.db"
    code, _, err = run(
        "--simulate", "a100-80gb", "run", str(cfg), "--workers", "fresh", "--results", str(db)
    )
    assert code == 0, err
    # Not a terminal: one plain line per phase of the run.
    for phase in (
        "starting: gemm",
        "building gemm: gemm",
        "warming up (1 iterations)",
        "measuring (0-5 s)",
    ):
        assert phase in err, err
    import sqlite3

    (params,) = sqlite3.connect(db).execute("SELECT params FROM runs").fetchone()
    assert json.loads(params)["worker"]["mode"] == "fresh"
    code, _, err = run(
        "--simulate", "a100-80gb", "run", str(cfg), "--workers", "lukewarm", "--results", str(db)
    )
    assert code == 2 and "ERROR" in err and "warm or fresh" in err
