"""The report in a real browser: headless Chromium renders it without a console error.

CI installs the browser with ``apt-get install -y chromium`` (Debian's package,
``/usr/bin/chromium``); without it this test is skipped, saying so.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.slow,  # `pytest -m slow` (.ci/run runs it after the default suite)
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


def _open(page: Path, tmp_path: Path) -> tuple[str, Path]:
    shot = tmp_path / "page.png"
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2000",
        f"--screenshot={shot}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr, shot


def _distinct_colours(path: Path) -> int:
    import matplotlib.image as mpimg
    import numpy as np

    img = mpimg.imread(path)
    assert img.shape[:2] == (2000, 1280)
    rgb = (img[..., :3] * 255).astype(np.uint32)
    return len(np.unique((rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]))


@pytest.mark.parametrize("which", ["rich_report", "runner_report"])
def test_the_report_renders_in_headless_chromium(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    report: Any = request.getfixturevalue(which)
    log, shot = _open(report.html_path, tmp_path)
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    # The page's own check ran: every figure's inline SVG has a real size.
    expected = f"migperf report: {report.plot_count} figure(s) rendered, 0 problem(s)"
    assert any(expected in line for line in console), console
    assert not [line for line in console if "Uncaught" in line or "problem(s):" in line]
    assert "Uncaught" not in log
    # The screenshot shows a page, not a blank window: text, plot colours, anti-aliasing.
    assert _distinct_colours(shot) > 200
