"""Whether a process still runs, as the kernel and the NVIDIA driver see it.

Standard library only: the simulated MPS control program imports it too.
"""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie (exited, not yet reaped) does not: it holds
    no GPU context, so the driver has already forgotten it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, and it exists
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            # The state follows the parenthesised command name; Z is a zombie, X dead.
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except (OSError, IndexError):
        return True  # no /proc (not Linux): kill(0) succeeded
