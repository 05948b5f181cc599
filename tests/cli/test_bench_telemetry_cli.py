"""`migperf bench ... --telemetry/--no-telemetry` on simulated GPUs, through typer's CliRunner."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from migperf.bench.device import resolve_device
from migperf.cli import bench
from migperf.cli._common import CliState
from migperf.cli._telemetry import telemetry_monitor

runner = CliRunner()
QUICK = ["--warmup", "1", "--min-iterations", "3", "--min-duration", "0.5"]
GEMM = ["--model", "gemm", "--model-arg", "n=32", *QUICK]


def _app(simulate: str | None) -> typer.Typer:
    parent = typer.Typer()

    @parent.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = CliState(simulate=simulate)

    parent.add_typer(bench.app, name="bench")
    return parent


def test_json_carries_the_telemetry_summary_on_a_simulated_gpu() -> None:
    result = runner.invoke(
        _app("h100-80gb"),
        ["bench", "infer", *GEMM, "--device", "0", "--telemetry-interval-ms", "50", "--json"],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)[0]
    assert doc["status"] == "ok" and doc["simulated"] is True
    summary = doc["telemetry"]["summary"]
    assert summary["simulated"] is True and summary["target"] == "GPU 0"
    gpu = summary["gpu"]
    assert gpu["scope"] == "whole_gpu" and gpu["samples"] >= 5
    assert gpu["power_mean_w"] > 500  # the worker keeps the simulated H100 busy
    assert gpu["energy_j"] > 0 and summary["energy_per_sample_j"] > 0
    # MIG is enabled on the simulated H100: utilization is missing, with NVML's reason.
    assert "gpu_util_pct" not in doc["telemetry"]["series"]["gpus"][0]["columns"]
    assert "MIG-enabled" in summary["unsupported"]["gpu_util_pct"]
    assert doc["telemetry"]["series"]["interval_s"] == 0.05


def test_table_shows_telemetry_with_gpm_activity_of_the_whole_gpu() -> None:
    shown = runner.invoke(_app("h200:1:mig-off"), ["bench", "infer", *GEMM, "--device", "0"])
    assert shown.exit_code == 0, shown.output
    assert "telemetry · GPU 0 · SIMULATED GPU" in shown.stdout
    assert "J/sample" in shown.stdout and "nvml_gpm" in shown.stdout
    assert "whole-GPU values" in shown.stdout


def test_no_telemetry_and_cpu_runs_open_no_monitor(capsys: pytest.CaptureFixture[str]) -> None:
    sim_gpu = resolve_device("0", simulated=True)
    with telemetry_monitor(
        CliState(simulate="h200"), sim_gpu, telemetry=False, interval_ms=100, dcgm_url=None
    ) as monitor:
        assert monitor is None
    with telemetry_monitor(
        CliState(), resolve_device("cpu"), telemetry=True, interval_ms=100, dcgm_url=None
    ) as monitor:
        assert monitor is None
    assert "no GPU to sample" in capsys.readouterr().err
    # On by default for a simulated GPU: a started monitor on its GPU.
    with telemetry_monitor(
        CliState(simulate="h200"), sim_gpu, telemetry=None, interval_ms=20, dcgm_url=None
    ) as monitor:
        assert monitor is not None and monitor.sampler.running
        assert monitor.targets[0].gpu_index == 0 and monitor.sampler.interval_s == 0.02
    assert not monitor.sampler.running


def test_a_device_the_simulator_lacks_means_no_telemetry_not_a_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = resolve_device("MIG-4f8d1a3e-2c5b-5e7a-9b1d-0123456789ab", simulated=True)
    with telemetry_monitor(
        CliState(simulate="a100-40gb"), missing, telemetry=None, interval_ms=100, dcgm_url=None
    ) as monitor:
        assert monitor is None
    assert "no telemetry: no MIG device" in capsys.readouterr().err
