"""Which telemetry this machine's GPUs give, in their current MIG mode.

``python -m migperf.telemetry.probe [--simulate SPEC]`` prints one JSON
document: per GPU, each board metric with its value or the reason NVML
refuses it, the memory of each MIG device, and whether NVML GPM activity
works (with one reading per GPU instance). Read-only: it changes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import Any

from migperf.nvml.facade import Nvml
from migperf.nvml.types import GPM_METRICS, GPU_METRICS

__all__ = ["main", "probe_telemetry"]


def probe_telemetry(nvml: Nvml, *, gpm_wait_s: float = 0.25) -> dict[str, Any]:
    """Read every telemetry metric once per GPU and say which ones work.

    Args:
        nvml: Open NVML.
        gpm_wait_s: Time between the two GPM samples (NVML wants > 0.1 s).

    Returns:
        JSON-ready data: ``{"simulated": ..., "gpus": [{"metrics": {...}, ...}]}``.
    """
    gpus = []
    for g in range(nvml.gpu_count()):
        info = nvml.gpu(g)
        mig_on = bool(info.mig_mode and info.mig_mode.current)
        s = nvml.sample_gpu(g)
        metrics = {}
        for m in GPU_METRICS:
            value = getattr(s, m)
            entry: dict[str, Any] = {"supported": m not in s.unsupported, "value": value}
            why = s.unsupported.get(m) or s.errors.get(m)
            if why:
                entry["reason"] = why
            metrics[m] = entry
        devices = nvml.mig_devices(g) if mig_on else []
        gpm_reason = nvml.gpm_support(g)
        gpm: dict[str, Any] = {"supported": gpm_reason is None}
        if gpm_reason is not None:
            gpm["reason"] = gpm_reason
        else:
            entities: list[int | None] = [None]
            if mig_on:
                entities = [*sorted({d.gi_id for d in devices})]
            for gi in entities:
                nvml.gpm_activity(g, gi)
            time.sleep(gpm_wait_s)
            readings = []
            for gi in entities:
                a = nvml.gpm_activity(g, gi)
                readings.append(
                    {
                        "gi_id": gi,
                        "interval_s": a.interval_s,
                        **{m: getattr(a, m) for m in GPM_METRICS},
                        **({"unsupported": a.unsupported} if a.unsupported else {}),
                        **({"errors": a.errors} if a.errors else {}),
                    }
                )
            gpm["readings"] = readings
        gpus.append(
            {
                "index": g,
                "name": info.name,
                "uuid": info.uuid,
                "architecture": info.architecture,
                "mig_enabled": mig_on,
                "metrics": metrics,
                "mig_memory": [dataclasses.asdict(r) for r in nvml.mig_memory(g, devices)],
                "gpm_activity": gpm,
            }
        )
    return {"simulated": nvml.simulated, "gpus": gpus}


def main(argv: list[str] | None = None) -> int:
    """Print :func:`probe_telemetry` as JSON; exit 1 when NVML cannot be opened."""
    from migperf.errors import MigperfError
    from migperf.nvml import open_nvml

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--simulate", default=None, help="probe a simulated machine instead")
    args = ap.parse_args(argv)
    try:
        with open_nvml(args.simulate, read_only=True) as nvml:
            doc = probe_telemetry(nvml)
    except MigperfError as exc:
        print(json.dumps({"error": exc.message, "hint": exc.hint}))
        return 1
    print(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
