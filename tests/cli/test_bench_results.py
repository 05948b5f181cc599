"""``bench --results`` stores like ``migperf run`` (#24: the README said find-max-qps stores its capacity)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.results import load


def invoke(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, list(args))
    return res.exit_code, res.output


def _mig_uuid() -> str:
    code, out = invoke("--simulate", "a100-40gb", "mig", "apply", "3g.20gb")
    assert code == 0, out
    code, out = invoke("--simulate", "a100-40gb", "mig", "show", "--json")
    return str(json.loads(out)[0]["instances"][0]["compute_instances"][0]["mig_uuid"])


def test_bench_results_are_stored_with_their_slice_and_a_rerun_is_a_new_attempt(
    tmp_path: Path,
) -> None:
    uuid = _mig_uuid()
    db = tmp_path / "b.db"
    args = (
        "--simulate",
        "a100-40gb",
        "bench",
        "infer",
        "--model",
        "gemm",
        "--model-arg",
        "n=32",
        "--device",
        uuid,
        "--min-iterations",
        "2",
        "--min-duration",
        "0",
        "--max-duration",
        "0.3",
    )
    for _ in range(2):
        code, out = invoke(*args, "--results", str(db))
        assert code == 0, out
        assert f"stored 1 result(s) in {db}" in out
    frame = load(db, wide=True, all_attempts=True)
    assert sorted(frame["attempt"]) == [1, 2]
    row = load(db, wide=True).iloc[0]  # the latest attempt
    assert (row["experiment"], row["profile"], row["gpu_name"], row["layout"]) == (
        "bench",
        "3g.20gb",
        "NVIDIA A100-SXM4-40GB",
        "3g.20gb",
    )
    assert bool(row["simulated"]) and row["samples_per_s"] > 0
    code, out = invoke("results", "show", "--results", str(db))
    assert code == 0 and "3g.20gb" in out and "gemm" in out


def test_without_results_nothing_is_written(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    code, out = invoke(
        "--simulate",
        "a100-40gb",
        "bench",
        "infer",
        "--model",
        "gemm",
        "--model-arg",
        "n=32",
        "--device",
        "cpu",
        "--min-iterations",
        "2",
        "--min-duration",
        "0",
        "--max-duration",
        "0.3",
    )
    assert code == 0, out
    assert not (tmp_path / "results").exists() and "stored" not in out


def test_a_device_the_simulated_machine_lacks_is_refused(tmp_path: Path) -> None:
    # A real GPU leaves a worker pinned to an unknown MIG UUID no CUDA device;
    # the simulator used to measure on the CPU anyway.
    base = ("bench", "infer", "--model", "gemm", "--model-arg", "n=32", "--max-duration", "0.3")
    code, out = invoke(
        "--simulate", "a100-40gb", *base, "--device", "MIG-00000000-0000-0000-0000-000000000000"
    )
    assert code == 1 and "no such device on the simulated a100-40gb" in out and "mig apply" in out
    code, out = invoke("--simulate", "a100-40gb:2", *base, "--device", "2")
    assert code == 1 and "its GPU indices are 0..1" in out
