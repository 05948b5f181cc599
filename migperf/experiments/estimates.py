"""How long a run takes on this machine, learned from the runs it has done.

A run's wall time is its measuring window plus what migperf spends around it
(worker start, model build, warm-up), which depends on the workload and on
the machine far more than on anything in the config. The runner records each
finished run's overhead and window here, per (workload, task, real or
simulated GPU), as a moving average; planning estimates a new experiment
from them, and from a default where this machine has no history yet.

One small JSON file per user: ``<state dir>/run-times.json``. Losing it only
makes the next estimate less precise.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from migperf.paths import state_dir

__all__ = ["DEFAULT_OVERHEAD_S", "DEFAULT_WARM_OVERHEAD_S", "RunTimes"]

#: Overhead of a run with no history: a fresh Python with torch, a model build, warm-up.
DEFAULT_OVERHEAD_S = 8.0
#: The same with warm workers (the default): the process and often the model are
#: already there; seen 0.2-1.5 s per run plus a build per (device, model), 2 cores.
DEFAULT_WARM_OVERHEAD_S = 3.0
#: Weight of the newest observation in the moving average.
ALPHA = 0.3


def _key(workload: str, task: str, simulated: bool) -> str:
    return f"{'sim' if simulated else 'gpu'}:{workload}:{task}"


@dataclass
class RunTimes:
    """Learned seconds per run: key -> (overhead_s, window_s).

    Attributes:
        path: Where they are kept.
        times: ``sim:resnet18:infer`` -> ``[overhead_s, window_s]``.
    """

    path: Path
    times: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path | None = None) -> RunTimes:
        """This machine's history (empty when there is none or it cannot be read)."""
        path = (root or state_dir()) / "run-times.json"
        try:
            data = json.loads(path.read_text())
            times = {
                str(k): [float(v[0]), float(v[1])]
                for k, v in data.items()
                if isinstance(v, list) and len(v) == 2
            }
        except (OSError, ValueError, TypeError, IndexError):
            times = {}
        return cls(path, times)

    def seconds(
        self, workload: str, task: str, simulated: bool, min_window_s: float, *, warm: bool = False
    ) -> tuple[float, bool]:
        """A run's expected wall time, and whether it was learned (else a default).

        The window is at least the config's minimum duration; a learned longer
        window (a slow workload reaching its minimum iterations) wins. ``warm``:
        the default for a run with no history is a warm worker's overhead.
        """
        learned = self.times.get(_key(workload, task, simulated))
        if learned is None:
            default = DEFAULT_WARM_OVERHEAD_S if warm else DEFAULT_OVERHEAD_S
            return default + min_window_s, False
        overhead, window = learned
        return overhead + max(window, min_window_s), True

    def observe(
        self, workload: str, task: str, simulated: bool, overhead_s: float, window_s: float
    ) -> None:
        """Fold one finished run into the averages."""
        key = _key(workload, task, simulated)
        old = self.times.get(key)
        if old is None:
            self.times[key] = [overhead_s, window_s]
        else:
            self.times[key] = [
                old[0] + ALPHA * (overhead_s - old[0]),
                old[1] + ALPHA * (window_s - old[1]),
            ]

    def save(self) -> None:
        """Write them back; a failure costs only precision, so it is ignored."""
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.times, indent=1, sort_keys=True))
            os.replace(tmp, self.path)
