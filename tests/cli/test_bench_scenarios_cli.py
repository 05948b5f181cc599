"""`migperf bench infer --scenario ...` through typer's CliRunner, with real worker processes.

The runs use the SYNTHETIC ``sleep`` workload (a fixed service time, no
model) so that they are short and their outcome is known.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.bench import app
from migperf.errors import UsageError

runner = CliRunner()
SLEEP = [
    "--model",
    "sleep",
    "--model-arg",
    "service_ms=1",
    "--device",
    "cpu",
    "--warmup",
    "2",
    "--min-duration",
    "0.3",
]


def test_help_documents_the_scenarios() -> None:
    result = runner.invoke(app, ["infer", "--help"])
    assert result.exit_code == 0
    for text in (
        "--scenario",
        "single-stream",
        "closed-loop",
        "--qps",
        "--slo-ms",
        "--find-max-qps",
        "--concurrency",
        "--log-dir",
        "sleep",
    ):
        assert text in result.stdout, text


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenario", "server"], "--scenario server needs --qps"),
        (["--qps", "10"], "--qps only apply with --scenario"),
        (["--scenario", "offline", "--find-max-qps"], "does not apply to offline"),
        (["--scenario", "server", "--qps", "5", "--concurrency", "4"], "--concurrency applies"),
        (["--scenario", "offline", "--qps", "5"], "--qps applies to --scenario server"),
        (
            ["--scenario", "server", "--qps", "5", "--slo-percentile", "98"],
            "not one LoadGen reports",
        ),
    ],
)
def test_wrong_combinations_fail_before_any_worker(args: list[str], needle: str) -> None:
    result = runner.invoke(app, ["infer", "--model", "sleep", *args])
    assert isinstance(result.exception, UsageError), result.output
    assert needle in result.exception.message


def test_server_json_keeps_loadgen_logs_under_results_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["infer", *SLEEP, "--scenario", "server", "--qps", "200", "--slo-ms", "50", "--json"]
    result = runner.invoke(app, [*args, "--min-queries", "100"])
    assert result.exit_code == 0, result.output
    (doc,) = json.loads(result.stdout)
    assert doc["status"] == "ok" and doc["workload"] == "sleep"
    s = doc["scenario"]
    assert s["scenario"] == "server" and s["target_qps"] == 200 and s["latency_target_ms"] == 50
    assert s["verdict"].startswith(("VALID: ", "INVALID: "))
    assert s["completed_qps"] > 0 and s["latency_ms"]["p99"] > 0
    log_dir = Path(s["log_dir"])
    assert log_dir.parent == tmp_path / "results" / "loadgen"
    assert (log_dir / "mlperf_log_summary.txt").is_file()
    assert "LoadGen logs go to" in result.stderr and "SYNTHETIC" in result.stderr


def test_find_max_qps_prints_the_capacity_and_its_trials(tmp_path: Path) -> None:
    args = [
        "infer",
        *SLEEP,
        "--scenario",
        "server",
        "--find-max-qps",
        "--slo-ms",
        "10",
        "--slo-percentile",
        "95",
        "--qps-precision",
        "0.3",
        "--log-dir",
        str(tmp_path),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "max QPS under SLO" in out and "capacity search, max batch 1" in out
    assert "with p95 within 10 ms" in out
    assert "LoadGen logs of the search: " + str(tmp_path) in out.replace("\n", "")
    assert any(p.name.startswith("trial-01-qps-") for p in next(tmp_path.iterdir()).iterdir())


def test_closed_loop_table_says_it_is_not_loadgen(tmp_path: Path) -> None:
    args = ["infer", *SLEEP, "--scenario", "closed-loop", "--concurrency", "2", "-b", "2"]
    result = runner.invoke(app, [*args, "--log-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "sleep closed-loop" in result.stdout
    assert "closed loop at concurrency 2 (not LoadGen; no validity)" in result.stdout
    assert list(tmp_path.iterdir()) == []  # LoadGen never ran, so it left no logs
