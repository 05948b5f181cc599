"""Which simulated machine an experiment runs on when this machine has no NVIDIA driver.

One rule for every command: without a driver and without ``--simulate``,
migperf uses a simulated GPU (:data:`migperf.nvml.FALLBACK_MODEL` for commands
that name no GPU model). An experiment names its GPU model implicitly, through
the profile names of its layouts (``1g.10gb`` is an A100-80GB's or an
H100-80GB's, ``1g.6gb`` an A30's), or explicitly with ``simulate:``; this
module turns that into the ``--simulate`` spec the run uses, so a config made
for an A30 runs on a simulated A30 rather than failing on the default A100.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migperf.experiments.config import ExperimentConfig

__all__ = ["profile_names", "simulated_machine_for"]

_PROFILE = re.compile(r"^(\d+g\.\d+gb(?:[+-](?:me|gfx))?)")


def profile_names(cfg: ExperimentConfig) -> set[str]:
    """Every MIG profile name the config's layouts and instance choices spell out."""
    texts = list(cfg.layouts)
    for arm in cfg.sharing:
        texts += list(arm.layouts or [])
    for job in [*cfg.jobs, *cfg.neighbors]:
        inst = job.instances
        if isinstance(inst, list):
            texts += [str(x) for x in inst]
    if isinstance(cfg.instances, list):
        texts += [str(x) for x in cfg.instances]
    names: set[str] = set()
    for text in texts:
        for part in str(text).split(","):
            m = _PROFILE.match(part.strip().lower())
            if m:
                names.add(m.group(1))
    return names


def simulated_machine_for(cfg: ExperimentConfig) -> str:
    """The ``--simulate`` spec for ``cfg`` on a machine without a driver.

    ``simulate:`` when the config sets it; else the first GPU model (the
    default fallback first, then the catalog's order) that has every profile
    the layouts name, with as many GPUs as ``gpus`` needs.
    """
    if cfg.simulate:
        return cfg.simulate
    from migperf.nvml import FALLBACK_MODEL
    from migperf.nvml.catalog import MODELS

    count = 1 if cfg.gpus == "all" else max(cfg.gpus) + 1
    names = profile_names(cfg)
    chosen = FALLBACK_MODEL
    for key in [FALLBACK_MODEL, *MODELS]:
        model = MODELS[key]
        if model.mig_capable and names <= {p.name for p in model.profiles}:
            chosen = key
            break
    return chosen if count == 1 else f"{chosen}:{count}"
