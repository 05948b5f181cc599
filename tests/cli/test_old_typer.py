"""The CLI under older typer releases, not only the newest.

On the lent H200's image (typer 0.27.2) every migperf command died at start: it
looked for an attribute only newer typer options have. ``.ci/run`` installs
typer 0.27.2 and 0.15.1 into folders of their own and names them in
``MIGPERF_TEST_OLD_TYPER`` (``os.pathsep``-separated); without it these tests
are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

OLD = [p for p in os.environ.get("MIGPERF_TEST_OLD_TYPER", "").split(os.pathsep) if p]
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not OLD,
    reason="set MIGPERF_TEST_OLD_TYPER to `pip install --target` folders with older typers (.ci/run does)",
)


@pytest.mark.parametrize("folder", OLD)
@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--simulate", "a100-40gb", "gpus"], 0, "NVIDIA A100-SXM4-40GB"),
        (["--simulate", "a100-40gb", "mig", "apply", "9g.99gb"], 2, "unknown MIG profile 9g.99gb"),
        (["gpuz"], 2, "Did you mean 'gpus'?"),
        (["--help"], 0, "Commands"),
        (["mig", "layouts", "--model", "a30"], 0, "1g.6gb*4"),
        (["config", "check"], 2, "Missing argument"),
    ],
)
def test_the_cli_runs_under_an_older_typer(
    tmp_path: Path, folder: str, args: list[str], code: int, text: str
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}",
        "MIGPERF_STATE_DIR": str(tmp_path),
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import typer; print(typer.__file__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.startswith(folder), (
        probe.stdout + probe.stderr
    )  # that typer, not the venv's
    proc = subprocess.run(
        [sys.executable, "-m", "migperf", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out
    assert text in out and "Traceback" not in out
