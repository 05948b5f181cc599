"""Where migperf keeps its state (simulated machines, journals, locks)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """migperf's state directory.

    ``MIGPERF_STATE_DIR`` when set, else ``$XDG_STATE_HOME/migperf``, else
    ``~/.local/state/migperf``. Not created here; writers create what they need.
    """
    env = os.environ.get("MIGPERF_STATE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "state"
    return base / "migperf"
