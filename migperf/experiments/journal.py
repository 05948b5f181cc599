"""The experiment journal: the layouts to give back if a run is killed.

Before an experiment changes any layout it writes, atomically, each GPU's
layout as it found it. A SIGKILLed run leaves the file behind; the next run
of the same experiment (or a cluster node planning it) finds it and restores
those layouts instead of the ones it sees. The file is removed once every
GPU is restored.

One file per experiment and machine:
``<state dir>/experiments/<sim-MACHINE|real>/<config hash>.json``.

This is the experiment's journal; a single layout change has its own
write-ahead journal in :mod:`migperf.mig.journal`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from migperf.mig.snapshot import MigSnapshot
from migperf.nvml.facade import Nvml
from migperf.paths import state_dir

__all__ = ["ExperimentJournal"]


@dataclass(frozen=True)
class ExperimentJournal:
    """The journal file of one experiment on one machine.

    Attributes:
        path: Where it lives (it may not exist).
    """

    path: Path

    @classmethod
    def for_experiment(
        cls, nvml: Nvml, config_hash: str, root: Path | None = None
    ) -> ExperimentJournal:
        """The journal of the experiment with ``config_hash`` on the machine ``nvml`` drives.

        Args:
            nvml: Open NVML (a simulated machine has journals of its own).
            config_hash: The experiment's :meth:`ExperimentConfig.config_hash`.
            root: migperf's state directory (default: :func:`migperf.paths.state_dir`).
        """
        machine = f"sim-{nvml.machine}" if nvml.machine else "real"
        return cls((root or state_dir()) / "experiments" / machine / f"{config_hash}.json")

    def exists(self) -> bool:
        """Whether a killed run left this journal."""
        return self.path.exists()

    def read(self) -> dict[int, MigSnapshot | None]:
        """GPU index -> its original layout (None: MIG was off) from the journal."""
        data = json.loads(self.path.read_text())
        return {
            int(k): MigSnapshot.from_dict(v) if v else None for k, v in data["originals"].items()
        }

    def write(self, experiment: str, originals: Mapping[int, MigSnapshot | None]) -> None:
        """Record the original layouts, atomically (a crash leaves the old file or the new one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "config": experiment,
                    "originals": {
                        str(g): (s.to_dict() if s else None) for g, s in originals.items()
                    },
                }
            )
        )
        os.replace(tmp, self.path)

    def remove(self) -> None:
        """Forget the journal: every GPU is back in its original layout."""
        self.path.unlink(missing_ok=True)
