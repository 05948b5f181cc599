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

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from migperf.experiments.config import ExperimentConfig

__all__ = ["profile_names", "simulated_machine_for"]


def profile_names(cfg: ExperimentConfig) -> set[str]:
    """Every MIG profile name the config's layouts and instance choices spell out.

    Profiles given by id (``9``) name no model and are left out, as are the
    ``current`` and ``disabled`` layouts.
    """
    from migperf.errors import UsageError
    from migperf.experiments.sweep import CURRENT, DISABLED
    from migperf.mig.layout import parse_layout

    layouts = [*cfg.layouts, *(x for arm in cfg.sharing for x in arm.layouts or [])]
    picked: list[object] = list(cfg.instances) if isinstance(cfg.instances, list) else []
    for job in [*cfg.jobs, *cfg.neighbors]:
        if isinstance(job.instances, list):
            picked += job.instances
    names = {str(p).lower() for p in picked if not str(p).isdigit()}
    for text in layouts:
        if text in (CURRENT, DISABLED):
            continue
        try:
            names |= {i.profile for i in parse_layout(text).instances if isinstance(i.profile, str)}
        except UsageError:
            continue  # planning reports a bad layout with its place in the file
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
