"""One simulator fallback: the same model for every command, an experiment's own GPU model for `run`.

Before (#24): `run`, `gpus` and `mig show` fell back to a simulated A100-40GB
while `mig apply` and `bench` refused and suggested an A100-80GB; every shipped
config but the quickstart failed on the fallback.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.experiments.config import load_config
from migperf.experiments.fallback import profile_names, simulated_machine_for

ROOT = Path(__file__).resolve().parents[2]
no_driver = pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")


def _cfg(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("config", "machine"),
    [
        ("quickstart.yaml", "a100-40gb"),
        ("mig-vs-mps-a30.yaml", "a30"),
        ("mig-vs-mps-a100-80gb.yaml", "a100-80gb"),
        ("mig-vs-mps-h100-80gb.yaml", "h100-80gb"),
        ("study-inference-per-profile.yaml", "a100-80gb"),
    ],
)
def test_each_shipped_config_names_the_gpu_model_it_was_written_for(config: str, machine: str) -> None:
    assert simulated_machine_for(load_config(ROOT / "configs" / config)) == machine


def test_profile_names_come_from_layouts_sharing_and_instances(tmp_path: Path) -> None:
    cfg = load_config(
        _cfg(
            tmp_path,
            "name: x\ngpus: [0, 1]\nlayouts: ['2g.12gb,1g.6gb*2', 'current']\n"
            "jobs: [{workload: gemm, instances: ['1g.6gb']}]\n",
        )
    )
    assert profile_names(cfg) == {"2g.12gb", "1g.6gb"}
    assert simulated_machine_for(cfg) == "a30:2"


def test_simulate_key_wins_is_checked_and_stays_out_of_the_hash(tmp_path: Path) -> None:
    base = "name: x\nlayouts: ['2g.20gb']\njobs: [{workload: gemm}]\n"
    plain = load_config(_cfg(tmp_path, base))
    pinned = load_config(_cfg(tmp_path, base + "simulate: h100-80gb\n"))
    assert simulated_machine_for(plain) == "a100-80gb" and simulated_machine_for(pinned) == "h100-80gb"
    assert plain.config_hash() == pinned.config_hash()  # same runs on a GPU, same keys
    code = CliRunner().invoke(app, ["config", "check", str(_cfg(tmp_path, base + "simulate: b999\n"))])
    assert code.exit_code == 2 and "b999" in code.output


@no_driver
def test_run_without_a_driver_uses_the_configs_gpu_model() -> None:
    res = CliRunner().invoke(app, ["run", str(ROOT / "configs" / "mig-vs-mps-a30.yaml"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "using a simulated a30 instead (as `--simulate a30` would)" in res.output


@no_driver
def test_changing_commands_refuse_without_a_driver_and_name_the_exact_simulate() -> None:
    res = CliRunner().invoke(app, ["mig", "apply", "1g.5gb"])
    assert res.exit_code == 1
    assert "does not fall back to a simulated one" in res.output
    assert "`migperf --simulate a100-40gb mig apply ...`" in res.output
    shown = CliRunner().invoke(app, ["gpus"])
    assert shown.exit_code == 0 and "a100-40gb" in shown.output  # the machine the hint names


@no_driver
def test_bench_on_a_gpu_device_without_a_driver_uses_the_same_fallback() -> None:
    res = CliRunner().invoke(
        app,
        ["bench", "infer", "--model", "gemm", "--model-arg", "n=32", "--device", "0",
         "--min-iterations", "2", "--min-duration", "0", "--max-duration", "0.5", "--json"],
    )
    assert res.exit_code == 0, res.output
    assert "using a simulated a100-40gb instead" in res.output


def test_a_capacity_search_counts_every_trial_as_measuring() -> None:
    # #24: the summary counted LoadGen's capacity-search trials as migperf's own overhead.
    from types import SimpleNamespace

    from migperf.experiments.records import measuring_seconds

    plain = SimpleNamespace(timing=SimpleNamespace(measured_duration_s=2.0), scenario=None)
    search = SimpleNamespace(
        timing=SimpleNamespace(measured_duration_s=2.0),
        scenario=SimpleNamespace(max_qps=SimpleNamespace(search_duration_s=17.5)),
    )
    assert measuring_seconds(plain) == 2.0 and measuring_seconds(search) == 17.5


def test_a_first_guess_for_warm_workers_is_closer_to_what_they_cost() -> None:
    from migperf.experiments.estimates import DEFAULT_OVERHEAD_S, DEFAULT_WARM_OVERHEAD_S, RunTimes

    t = RunTimes(Path("/nonexistent"))
    assert t.seconds("gemm", "infer", True, 1.0, warm=True) == (DEFAULT_WARM_OVERHEAD_S + 1.0, False)
    assert t.seconds("gemm", "infer", True, 1.0) == (DEFAULT_OVERHEAD_S + 1.0, False)
