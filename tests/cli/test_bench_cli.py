"""`migperf bench train|infer` through typer's CliRunner, with real (tiny) worker processes."""

from __future__ import annotations

import json
import subprocess
import sys

import typer
from typer.testing import CliRunner

from migperf.cli import bench
from migperf.cli._common import CliState
from migperf.cli.bench import RunsFailedError, app, parse_model_args
from migperf.errors import UsageError

runner = CliRunner()
QUICK = ["--device", "cpu", "--warmup", "1", "--min-iterations", "3", "--min-duration", "0.05"]
GEMM = ["--model", "gemm", "--model-arg", "n=32", *QUICK]


def test_import_is_light() -> None:
    code = (
        "import sys, migperf.cli.bench; "
        "heavy = [m for m in ('torch', 'transformers', 'pandas', 'numpy', 'pynvml') if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_the_workloads_and_options() -> None:
    result = runner.invoke(app, ["infer", "--help"])
    assert result.exit_code == 0
    for text in (
        "resnet50",
        "bert-large",
        "memcpy",
        "--batch-size",
        "--model-arg",
        "--repeats",
        "--json",
    ):
        assert text in result.stdout
    assert "--inject" not in result.stdout


def test_infer_json_is_a_list_of_results_with_real_numbers() -> None:
    result = runner.invoke(app, ["infer", *GEMM, "--batch-size", "2", "--json"])
    assert result.exit_code == 0, result.output
    docs = json.loads(result.stdout)
    assert isinstance(docs, list) and len(docs) == 1
    doc = docs[0]
    assert doc["status"] == "ok" and doc["batch_size"] == 2 and doc["device_kind"] == "cpu"
    assert doc["simulated"] is False
    assert doc["throughput"]["tflop_per_s"] > 0
    assert doc["timing"]["iterations"] >= 3
    assert len(doc["latency_samples_ms"]) == doc["timing"]["iterations"]


def test_table_with_repeats_reports_the_spread() -> None:
    result = runner.invoke(app, ["infer", *GEMM, "--repeats", "2"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "gemm infer" in out and "TFLOP/s" in out
    assert "spread over repeats" in out and "2/2" in out
    assert "p99 ms" in out


def test_oom_stops_the_sweep_and_is_not_a_failure() -> None:
    result = runner.invoke(
        app, ["infer", *GEMM, "--batch-size", "1,2,4", "--inject", "oom", "--json"]
    )
    assert result.exit_code == 0, result.output
    statuses = [(d["batch_size"], d["status"]) for d in json.loads(result.stdout)]
    assert statuses == [(1, "oom"), (2, "skipped"), (4, "skipped")]


def test_crash_prints_results_then_raises() -> None:
    result = runner.invoke(app, ["infer", *GEMM, "--inject", "crash", "--json"])
    assert isinstance(result.exception, RunsFailedError)
    assert "1 of 1 runs failed" in result.exception.message
    assert json.loads(result.stdout)[0]["status"] == "crashed"


def test_unknown_model_arg_becomes_a_usage_error() -> None:
    result = runner.invoke(app, ["infer", *GEMM, "--model-arg", "size=3"])
    assert isinstance(result.exception, UsageError)
    assert "unknown model arg 'size' for gemm" in result.exception.message


def test_input_errors_fail_before_any_worker_starts() -> None:
    for args, needle in [
        (["infer", "--model", "resnet5O"], "did you mean resnet50"),
        (["train", "--model", "gemm"], "supports only infer"),
        (["infer", "--model", "gemm", "--batch-size", "1,x"], "not a positive integer"),
        (["infer", "--model", "gemm", "--device", "gpu0"], "is not a device"),
        (["infer", "--model", "gemm", "--model-arg", "n"], "is not KEY=VALUE"),
        (
            ["infer", "--model", "gemm", "--min-duration", "9", "--max-duration", "1"],
            "max_duration_s",
        ),
    ]:
        result = runner.invoke(app, args)
        assert isinstance(result.exception, UsageError), (args, result.output)
        assert needle in result.exception.message, args


def test_model_arg_values_are_json_or_strings() -> None:
    assert parse_model_args(["n=2", "depths=[1,1]", "act=gelu", "eps=1e-5", "flag=true"]) == {
        "n": 2,
        "depths": [1, 1],
        "act": "gelu",
        "eps": 1e-5,
        "flag": True,
    }


def test_train_language_model_table() -> None:
    tiny = (
        "num_hidden_layers=1",
        "hidden_size=32",
        "num_attention_heads=2",
        "intermediate_size=64",
        "vocab_size=128",
    )
    args = [
        "train",
        "--model",
        "bert-base",
        "--seq-len",
        "16",
        *QUICK,
        *[f"--model-arg={kv}" for kv in tiny],
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "tokens/s" in result.stdout and "fwd/bwd/opt ms" in result.stdout


def test_global_simulate_runs_on_cpu_and_marks_results() -> None:
    parent = typer.Typer()

    @parent.callback()
    def _root(ctx: typer.Context) -> None:
        ctx.obj = CliState(simulate="a100-40gb")

    parent.add_typer(bench.app, name="bench")
    # A MIG device the simulated machine has (one it lacks is refused, as a real GPU would).
    from migperf.mig import apply_layout
    from migperf.nvml import open_nvml

    with open_nvml("a100-40gb") as nvml:
        apply_layout(nvml, 0, "1g.5gb")
        mig = nvml.mig_devices(0)[0].mig_uuid
    args = [
        "bench",
        "infer",
        *GEMM[:4],
        "--warmup",
        "1",
        "--min-iterations",
        "3",
        "--min-duration",
        "0.05",
    ]
    result = runner.invoke(parent, [*args, "--device", mig, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)[0]
    assert doc["simulated"] is True and doc["device_kind"] == "cpu"
    assert doc["spec"]["device_label"] == mig
    assert "simulated GPU" in result.stderr
