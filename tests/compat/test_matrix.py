"""``migperf compat`` on the simulated GPU: the matrix a user gets on a machine without a GPU.

One full matrix run (every framework and server, on the CPU) is shared by the
tests of this module; the failure tests run one framework each, through the
check processes' PYTHONPATH hook (``--pythonpath``) with a broken stand-in.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from migperf.results import ResultsStore, compat_rows

ROOT = Path(__file__).resolve().parents[2]


def migperf(*args: str, state: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGPERF_")}
    env["MIGPERF_STATE_DIR"] = str(state)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "migperf", "--simulate", "a100-40gb", "compat", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )


def strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise ValueError(f"not strict JSON: {name}")

    return json.loads(text, parse_constant=refuse)


#: The whole matrix, each framework in its own process: `pytest -m slow` (.ci/run runs it).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("compat")
    db = tmp / "r.db"
    t0 = time.monotonic()
    proc = migperf("--json", "--results", str(db), state=tmp / "state")
    return {
        "proc": proc,
        "db": db,
        "wall": time.monotonic() - t0,
        "data": strict(proc.stdout) if proc.stdout else None,
    }


def rows_of(data: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["framework"], r["check_name"]): r for r in data["rows"]}


def test_the_cpu_matrix_exits_0_and_prints_strict_json(full: dict[str, Any]) -> None:
    proc = full["proc"]
    assert proc.returncode == 0, proc.stderr
    data = full["data"]
    assert data["simulated"] is True and data["target"]["first"]["cuda_visible"] == ""
    assert data["counts"]["fail"] == 0 and data["counts"]["pass"] >= 12
    assert sum(data["counts"].values()) == len(data["rows"])
    assert proc.stderr == ""  # --json: nothing but the JSON, not even progress


def test_pytorch_onnxruntime_and_jax_run_on_the_cpu_and_say_simulated(full: dict[str, Any]) -> None:
    rows = rows_of(full["data"])
    for fw, checks in {
        "pytorch": ("import", "infer", "train"),
        "torch.compile": ("import", "infer", "train"),
        "onnxruntime": ("import", "infer"),
        "jax": ("import", "infer", "train"),
        "http-torchscript": ("start", "query"),
    }.items():
        for check in checks:
            row = rows[(fw, check)]
            assert row["verdict"] == "pass", row
            assert row["simulated"] is True and row["wall_s"] > 0
    assert "on cpu" in rows[("pytorch", "infer")]["detail"]
    assert "compiled" in rows[("torch.compile", "infer")]["detail"]
    assert "CPUExecutionProvider" in rows[("onnxruntime", "infer")]["detail"]
    assert "loss" in rows[("jax", "train")]["detail"]
    assert rows[("http-torchscript", "query")]["detail"].endswith("on cpu")
    assert rows[("pytorch", "import")]["framework_version"].startswith("2.")
    versions = rows[("jax", "infer")]["versions"]
    assert versions["jax"] == rows[("jax", "infer")]["framework_version"]
    assert versions["python"] == sys.version.split()[0] and versions["driver"]


def test_cuda_only_checks_are_skipped_not_faked_on_the_simulator(full: dict[str, Any]) -> None:
    rows = rows_of(full["data"])
    for fw in ("pytorch", "onnxruntime", "jax"):
        for check in ("devices", "oom", "devices-two", "data-parallel"):
            if (fw, check) not in rows:
                continue  # onnxruntime has no data-parallel mode
            row = rows[(fw, check)]
            assert row["verdict"] == "skipped", row
            assert row["detail"].startswith("no CUDA"), row
    assert ("onnxruntime", "train") not in rows  # an inference runtime: no training row


def test_absent_frameworks_are_skipped_with_what_installs_them(full: dict[str, Any]) -> None:
    rows = rows_of(full["data"])
    expect = {
        "tensorflow": ("tensorflow", "tensorflow"),
        "paddle": ("paddle", "paddlepaddle"),
        "ray-serve": ("ray.serve", "ray[serve]"),
    }
    for fw, (module, extra) in expect.items():
        try:
            present = importlib.util.find_spec(module) is not None
        except ImportError:
            present = False
        if present and fw != "ray-serve":
            continue
        fw_rows = [r for (f, _), r in rows.items() if f == fw]
        if fw == "ray-serve" and fw_rows[0]["verdict"] != "skipped":
            continue  # ray[serve] is installed here
        assert fw_rows and all(r["verdict"] == "skipped" for r in fw_rows)
        assert all(
            r["detail"].startswith("not installed") and extra in r["detail"] for r in fw_rows
        )
    if shutil.which("tritonserver") is None:
        assert rows[("triton", "start")]["verdict"] == "skipped"
        assert "tritonserver" in rows[("triton", "start")]["detail"]


def test_the_stored_rows_are_the_printed_ones(full: dict[str, Any]) -> None:
    data = full["data"]
    with ResultsStore(full["db"], read_only=True) as store:
        stored = compat_rows(store, data["session"])
        assert compat_rows(store, "no-such-session") == []
    assert [r.to_dict() for r in stored] == data["rows"]
    assert {r.session for r in stored} == {data["session"]} and all(r.simulated for r in stored)
    assert data["results"] == str(full["db"])


def broken_tensorflow(tmp: Path, body: str) -> Path:
    pkg = tmp / "fake" / "tensorflow"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(body)
    return pkg.parent


def test_a_framework_whose_import_raises_is_a_fail_with_its_error(tmp_path: Path) -> None:
    path = broken_tensorflow(
        tmp_path, 'raise ImportError("libcudart.so.12: cannot open shared object file")\n'
    )
    db = tmp_path / "r.db"
    proc = migperf(
        "-F", "tensorflow", "--pythonpath", str(path), "--results", str(db), state=tmp_path / "s"
    )
    assert proc.returncode == 1, proc.stderr
    assert "ImportError: libcudart.so.12: cannot open shared object file" in proc.stdout
    assert "1 fail" in proc.stderr and "SIMULATED" in proc.stdout
    with ResultsStore(db, read_only=True) as store:
        rows = {r.check_name: r for r in compat_rows(store)}
    assert rows["import"].verdict == "fail"
    assert rows["import"].detail == "ImportError: libcudart.so.12: cannot open shared object file"
    assert {r.verdict for c, r in rows.items() if c != "import"} == {"skipped"}
    assert (
        rows["infer"].detail == rows["data-parallel"].detail == "import failed (see the import row)"
    )


def test_a_hanging_check_times_out_and_a_dying_one_reports_its_exit(tmp_path: Path) -> None:
    path = broken_tensorflow(tmp_path / "hang", "import time\ntime.sleep(120)\n")
    t0 = time.monotonic()
    proc = migperf(
        "-F",
        "tensorflow",
        "--pythonpath",
        str(path),
        "--timeout",
        "3",
        "--json",
        "--no-store",
        state=tmp_path / "s",
    )
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 1
    rows = rows_of(strict(proc.stdout))
    assert rows[("tensorflow", "import")]["verdict"] == "fail"
    assert rows[("tensorflow", "import")]["detail"].startswith("timed out after 3 s")
    assert 2.5 < rows[("tensorflow", "import")]["wall_s"] < 30
    assert rows[("tensorflow", "oom")]["verdict"] == "skipped"

    path = broken_tensorflow(
        tmp_path / "die",
        "import sys, os\nsys.stderr.write('boom in native code\\n')\nos._exit(7)\n",
    )
    proc = migperf(
        "-F", "tensorflow", "--pythonpath", str(path), "--json", "--no-store", state=tmp_path / "s"
    )
    assert proc.returncode == 1
    row = rows_of(strict(proc.stdout))[("tensorflow", "import")]
    assert row["verdict"] == "fail"
    assert row["detail"] == "the check process exited with code 7: boom in native code"


def test_an_unknown_framework_is_a_usage_error(tmp_path: Path) -> None:
    proc = migperf("-F", "pytorch,mxnet", "--no-store", state=tmp_path / "s")
    assert proc.returncode == 2
    assert "ERROR: unknown framework 'mxnet'" in proc.stderr
    assert "HINT: choose from: pytorch, torch.compile, onnxruntime" in proc.stderr
