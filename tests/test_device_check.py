"""scripts/device-check without a GPU: honest about it, valid JSON, read-only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_without_a_gpu_it_measures_nothing_and_says_why(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "device-check"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary == json.loads(out.read_text())
    assert summary["read_only"] is True
    assert summary["verdict"].startswith("no real GPU")
    assert "runs" not in summary
    assert summary["gpus"]["result"][0]["simulated"] is True
