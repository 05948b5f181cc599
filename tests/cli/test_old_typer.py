"""The CLI under an older typer (0.15, as on the lent H200's image), not only the newest.

On that image every migperf command died at start (a typer attribute newer
releases have). ``.ci/run`` installs typer 0.15 into a folder of its own and
names it in ``MIGPERF_TEST_OLD_TYPER``; without it these tests are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

OLD = os.environ.get("MIGPERF_TEST_OLD_TYPER")
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not OLD,
    reason="set MIGPERF_TEST_OLD_TYPER to a `pip install --target` folder with typer 0.15 (.ci/run does)",
)


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["--simulate", "a100-40gb", "gpus"], 0, "NVIDIA A100-SXM4-40GB"),
        (["--simulate", "a100-40gb", "mig", "apply", "9g.99gb"], 2, "unknown MIG profile 9g.99gb"),
        (["gpuz"], 2, "Did you mean 'gpus'?"),
        (["--help"], 0, "Commands"),
        (["mig", "layouts", "--model", "a30"], 0, "1g.6gb*4"),
        (["config", "check"], 2, "Missing argument 'CONFIG'"),
    ],
)
def test_the_cli_runs_under_an_older_typer(
    tmp_path: Path, args: list[str], code: int, text: str
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": f"{OLD}{os.pathsep}{ROOT}",
        "MIGPERF_STATE_DIR": str(tmp_path),
    }
    probe = subprocess.run(
        [sys.executable, "-c", "import typer; print(typer.__version__)"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert probe.stdout.startswith("0.15"), probe.stdout + probe.stderr
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
