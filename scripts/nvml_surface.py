#!/usr/bin/env python3
"""Call the NVML functions monitoring tools use and record what the driver answers.

``python scripts/nvml_surface.py [--simulate SPEC]`` prints one JSON document:
for the system, each GPU and each MIG device, every function in ``CALLS`` with
its value (structs as dicts) or the exact NVML error it raised. Read-only: only
``nvmlDeviceGet*`` / ``nvmlSystemGet*`` queries, nothing that sets state.

Run on a real GPU (``scripts/device-check`` does) and on the simulator with the
same model, the two documents show where the simulated driver differs from the
real one; ``docs/validation/`` keeps the real answers the simulator's tests
compare against.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import sys
from collections.abc import Callable
from typing import Any

SYSTEM_CALLS = [
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetNVMLVersion",
    "nvmlSystemGetCudaDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlDeviceGetCount",
]

# (function, extra positional args after the handle)
DEVICE_CALLS: list[tuple[str, tuple[Any, ...]]] = [
    ("nvmlDeviceGetName", ()),
    ("nvmlDeviceGetUUID", ()),
    ("nvmlDeviceGetSerial", ()),
    ("nvmlDeviceGetIndex", ()),
    ("nvmlDeviceGetMinorNumber", ()),
    ("nvmlDeviceGetBrand", ()),
    ("nvmlDeviceGetArchitecture", ()),
    ("nvmlDeviceGetCudaComputeCapability", ()),
    ("nvmlDeviceGetBoardPartNumber", ()),
    ("nvmlDeviceGetVbiosVersion", ()),
    ("nvmlDeviceGetInforomImageVersion", ()),
    ("nvmlDeviceGetVirtualizationMode", ()),
    ("nvmlDeviceGetPersistenceMode", ()),
    ("nvmlDeviceGetComputeMode", ()),
    ("nvmlDeviceGetDisplayMode", ()),
    ("nvmlDeviceGetDisplayActive", ()),
    ("nvmlDeviceGetAccountingMode", ()),
    ("nvmlDeviceGetAccountingPids", ()),
    ("nvmlDeviceGetMigMode", ()),
    ("nvmlDeviceIsMigDeviceHandle", ()),
    ("nvmlDeviceGetMaxMigDeviceCount", ()),
    ("nvmlDeviceGetGpuInstanceId", ()),
    ("nvmlDeviceGetComputeInstanceId", ()),
    ("nvmlDeviceGetMemoryInfo", ()),
    ("nvmlDeviceGetBAR1MemoryInfo", ()),
    ("nvmlDeviceGetUtilizationRates", ()),
    ("nvmlDeviceGetEncoderUtilization", ()),
    ("nvmlDeviceGetDecoderUtilization", ()),
    ("nvmlDeviceGetJpgUtilization", ()),
    ("nvmlDeviceGetOfaUtilization", ()),
    ("nvmlDeviceGetEncoderCapacity", (0,)),
    ("nvmlDeviceGetEncoderStats", ()),
    ("nvmlDeviceGetFBCStats", ()),
    ("nvmlDeviceGetComputeRunningProcesses", ()),
    ("nvmlDeviceGetComputeRunningProcesses_v2", ()),
    ("nvmlDeviceGetComputeRunningProcesses_v3", ()),
    ("nvmlDeviceGetGraphicsRunningProcesses", ()),
    ("nvmlDeviceGetGraphicsRunningProcesses_v2", ()),
    ("nvmlDeviceGetGraphicsRunningProcesses_v3", ()),
    ("nvmlDeviceGetMPSComputeRunningProcesses", ()),
    ("nvmlDeviceGetMPSComputeRunningProcesses_v3", ()),
    ("nvmlDeviceGetFanSpeed", ()),
    ("nvmlDeviceGetNumFans", ()),
    ("nvmlDeviceGetTemperature", (0,)),
    ("nvmlDeviceGetTemperatureThreshold", (0,)),  # shutdown
    ("nvmlDeviceGetTemperatureThreshold", (1,)),  # slowdown
    ("nvmlDeviceGetTemperatureThreshold", (2,)),  # mem max
    ("nvmlDeviceGetTemperatureThreshold", (3,)),  # gpu max
    ("nvmlDeviceGetPerformanceState", ()),
    ("nvmlDeviceGetPowerState", ()),
    ("nvmlDeviceGetPowerUsage", ()),
    ("nvmlDeviceGetTotalEnergyConsumption", ()),
    ("nvmlDeviceGetPowerManagementMode", ()),
    ("nvmlDeviceGetPowerManagementLimit", ()),
    ("nvmlDeviceGetPowerManagementLimitConstraints", ()),
    ("nvmlDeviceGetPowerManagementDefaultLimit", ()),
    ("nvmlDeviceGetEnforcedPowerLimit", ()),
    ("nvmlDeviceGetClockInfo", (0,)),  # graphics
    ("nvmlDeviceGetClockInfo", (1,)),  # sm
    ("nvmlDeviceGetClockInfo", (2,)),  # mem
    ("nvmlDeviceGetMaxClockInfo", (0,)),
    ("nvmlDeviceGetMaxClockInfo", (1,)),
    ("nvmlDeviceGetMaxClockInfo", (2,)),
    ("nvmlDeviceGetApplicationsClock", (0,)),
    ("nvmlDeviceGetApplicationsClock", (2,)),
    ("nvmlDeviceGetDefaultApplicationsClock", (0,)),
    ("nvmlDeviceGetCurrentClocksThrottleReasons", ()),
    ("nvmlDeviceGetCurrentClocksEventReasons", ()),
    ("nvmlDeviceGetSupportedClocksThrottleReasons", ()),
    ("nvmlDeviceGetPciInfo", ()),
    ("nvmlDeviceGetPciInfo_v3", ()),
    ("nvmlDeviceGetCurrPcieLinkGeneration", ()),
    ("nvmlDeviceGetMaxPcieLinkGeneration", ()),
    ("nvmlDeviceGetCurrPcieLinkWidth", ()),
    ("nvmlDeviceGetMaxPcieLinkWidth", ()),
    ("nvmlDeviceGetPcieThroughput", (0,)),  # tx
    ("nvmlDeviceGetPcieThroughput", (1,)),  # rx
    ("nvmlDeviceGetPcieReplayCounter", ()),
    ("nvmlDeviceGetEccMode", ()),
    ("nvmlDeviceGetTotalEccErrors", (0, 1)),  # uncorrected, aggregate
    ("nvmlDeviceGetTotalEccErrors", (1, 0)),  # corrected, volatile
    ("nvmlDeviceGetRetiredPagesPendingStatus", ()),
    ("nvmlDeviceGetRemappedRows", ()),
    ("nvmlDeviceGetRowRemapperHistogram", ()),
    ("nvmlDeviceGetNvLinkState", (0,)),
    ("nvmlDeviceGetNvLinkVersion", (0,)),
    ("nvmlDeviceGetNvLinkState", (17,)),
    ("nvmlDeviceGetNvLinkState", (18,)),
    ("nvmlDeviceGetGspFirmwareMode", ()),
    ("nvmlDeviceGetGspFirmwareVersion", ()),
    ("nvmlDeviceGetNumGpuCores", ()),
    ("nvmlDeviceGetMemoryBusWidth", ()),
    ("nvmlDeviceGetAttributes", ()),
    ("nvmlDeviceGetBusType", ()),
    ("nvmlDeviceGetSamples", (1, 0)),  # total power samples since 0
]


def plain(value: Any, depth: int = 0) -> Any:
    """A JSON-safe rendering of an NVML return value (structs as dicts)."""
    if depth > 4:
        return repr(value)
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (list, tuple)):
        items = [plain(v, depth + 1) for v in value[:8]]
        return items + ([f"... {len(value)} items"] if len(value) > 8 else [])
    if isinstance(value, ctypes.Array):
        return plain(list(value), depth)
    if isinstance(value, ctypes.Structure):
        out = {}
        for field in value._fields_:
            name = field[0]
            if name.startswith("reserved"):
                continue
            out[name] = plain(getattr(value, name), depth + 1)
        return out
    if hasattr(value, "value") and isinstance(value, ctypes._SimpleCData):
        return plain(value.value, depth)
    return repr(value)


def call(nvml: Any, name: str, *args: Any) -> dict[str, Any]:
    """One call's answer: ``{"value": ...}`` or ``{"error": ..., "code": ...}``."""
    fn: Callable[..., Any] | None = getattr(nvml, name, None)
    if fn is None:
        return {"error": "not in this pynvml"}
    try:
        return {"value": plain(fn(*args))}
    except nvml.NVMLError as exc:
        return {"error": type(exc).__name__, "code": getattr(exc, "value", None)}
    except Exception as exc:  # noqa: BLE001 - recorded, never fatal
        return {"error": f"{type(exc).__name__}: {exc}"}


def device_answers(nvml: Any, handle: Any) -> dict[str, Any]:
    """Every ``DEVICE_CALLS`` entry on one handle, keyed ``name(args)``."""
    out = {}
    for name, args in DEVICE_CALLS:
        key = name if not args else f"{name}{args}".replace(",)", ")")
        out[key] = call(nvml, name, handle, *args)
    return out


def surface(nvml: Any) -> dict[str, Any]:
    """The whole machine's answers."""
    nvml.nvmlInit()
    try:
        doc: dict[str, Any] = {"system": {n: call(nvml, n) for n in SYSTEM_CALLS}, "gpus": []}
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            gpu: dict[str, Any] = {"index": i, "answers": device_answers(nvml, h), "mig_devices": []}
            try:
                current, _pending = nvml.nvmlDeviceGetMigMode(h)
            except nvml.NVMLError:
                current = 0
            if current:
                for j in range(nvml.nvmlDeviceGetMaxMigDeviceCount(h)):
                    try:
                        mh = nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, j)
                    except nvml.NVMLError as exc:
                        gpu["mig_devices"].append({"index": j, "handle_error": type(exc).__name__})
                        continue
                    gpu["mig_devices"].append({"index": j, "answers": device_answers(nvml, mh)})
            doc["gpus"].append(gpu)
        return doc
    finally:
        nvml.nvmlShutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--simulate", default=None, help="ask a simulated machine instead, e.g. h200")
    args = ap.parse_args(argv)
    if args.simulate:
        from migperf.nvml.sim import simulated_pynvml

        nvml: Any = simulated_pynvml(args.simulate)
    else:
        import pynvml

        nvml = pynvml
    try:
        doc = surface(nvml)
    except Exception as exc:  # noqa: BLE001 - the caller wants JSON either way
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    doc["simulated"] = bool(args.simulate)
    print(json.dumps(doc, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
