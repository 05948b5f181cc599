"""The simulated H200 answers NVML as the real one did.

The real answers are docs/validation/nvidia-h200-2026-12-04.json, key
``nvml_surface``: ``scripts/nvml_surface.py`` run on an NVIDIA H200, driver
580.159.04, MIG disabled, on 2026-12-04. The same script runs here on a
simulated ``h200:mig-off``; every function must answer the same way (a value,
or the same NVML error class), and static facts must have the same value.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from migperf.nvml.sim import simulated_pynvml

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "docs" / "validation" / "nvidia-h200-2026-12-04.json"

#: Facts of the board and its driver settings, not readings: the same value or a bug.
STATIC = [
    "nvmlDeviceGetName",
    "nvmlDeviceGetBrand",
    "nvmlDeviceGetArchitecture",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetBoardPartNumber",
    "nvmlDeviceGetVbiosVersion",
    "nvmlDeviceGetInforomImageVersion",
    "nvmlDeviceGetVirtualizationMode",
    "nvmlDeviceGetPersistenceMode",
    "nvmlDeviceGetComputeMode",
    "nvmlDeviceGetDisplayMode",
    "nvmlDeviceGetDisplayActive",
    "nvmlDeviceGetAccountingMode",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetNumFans",
    "nvmlDeviceGetTemperatureThreshold(0)",
    "nvmlDeviceGetTemperatureThreshold(1)",
    "nvmlDeviceGetTemperatureThreshold(2)",
    "nvmlDeviceGetTemperatureThreshold(3)",
    "nvmlDeviceGetPowerManagementMode",
    "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetPowerManagementLimitConstraints",
    "nvmlDeviceGetPowerManagementDefaultLimit",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetMaxClockInfo(0)",
    "nvmlDeviceGetMaxClockInfo(1)",
    "nvmlDeviceGetMaxClockInfo(2)",
    "nvmlDeviceGetApplicationsClock(0)",
    "nvmlDeviceGetApplicationsClock(2)",
    "nvmlDeviceGetDefaultApplicationsClock(0)",
    "nvmlDeviceGetSupportedClocksThrottleReasons",
    "nvmlDeviceGetCurrPcieLinkGeneration",
    "nvmlDeviceGetMaxPcieLinkGeneration",
    "nvmlDeviceGetCurrPcieLinkWidth",
    "nvmlDeviceGetMaxPcieLinkWidth",
    "nvmlDeviceGetEccMode",
    "nvmlDeviceGetGspFirmwareMode",
    "nvmlDeviceGetNumGpuCores",
    "nvmlDeviceGetMemoryBusWidth",
    "nvmlDeviceGetBusType",
    "nvmlDeviceGetEncoderCapacity(0)",
]


def _surface_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "nvml_surface", ROOT / "scripts" / "nvml_surface.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real() -> dict[str, Any]:
    doc = json.loads(RECORD.read_text(encoding="utf-8"))["nvml_surface"]
    assert doc["gpus"][0]["answers"]["nvmlDeviceGetName"]["value"] == "NVIDIA H200"
    assert doc["gpus"][0]["answers"]["nvmlDeviceGetMigMode"]["value"] == [0, 0]
    return doc


@pytest.fixture
def simulated(state_dir: Path) -> dict[str, Any]:
    return _surface_script().surface(simulated_pynvml("h200:mig-off", state_dir))


def _kind(answer: dict[str, Any]) -> str:
    return str(answer.get("error", "value"))


def test_every_recorded_function_answers_as_the_real_driver_did(
    real: dict[str, Any], simulated: dict[str, Any]
) -> None:
    recorded = real["gpus"][0]["answers"]
    ours = simulated["gpus"][0]["answers"]
    assert len(recorded) > 90
    differ = {
        name: (_kind(answer), _kind(ours[name]))
        for name, answer in recorded.items()
        if _kind(answer) != _kind(ours[name])
    }
    assert differ == {}
    assert {_kind(a) for a in ours.values()} <= {
        "value",
        "NVMLError_NotSupported",
        "NVMLError_InvalidArgument",
    }


@pytest.mark.parametrize("name", STATIC)
def test_static_facts_have_the_real_values(
    real: dict[str, Any], simulated: dict[str, Any], name: str
) -> None:
    assert simulated["gpus"][0]["answers"][name] == real["gpus"][0]["answers"][name]


def test_memory_total_and_the_system_are_the_real_ones(
    real: dict[str, Any], simulated: dict[str, Any]
) -> None:
    memory = simulated["gpus"][0]["answers"]["nvmlDeviceGetMemoryInfo"]["value"]
    assert (
        memory["total"] == real["gpus"][0]["answers"]["nvmlDeviceGetMemoryInfo"]["value"]["total"]
    )
    assert 0 < memory["used"] < memory["total"]
    assert simulated["system"]["nvmlDeviceGetCount"] == real["system"]["nvmlDeviceGetCount"]
    ours = simulated["system"]["nvmlSystemGetCudaDriverVersion_v2"]
    assert ours == real["system"]["nvmlSystemGetCudaDriverVersion_v2"]


def test_the_catalog_has_the_real_mig_profiles() -> None:
    from migperf.nvml.catalog import get_model

    recorded = json.loads(RECORD.read_text(encoding="utf-8"))["mig_profiles"]["result"][0]
    model = get_model("h200")
    for row in recorded["profiles"]:
        p = model.profile_by_id(row["profile_id"])
        assert p is not None, row["profile"]
        assert (p.name, p.index, p.memory_mib, p.sm_count, p.instances, p.confidence) == (
            row["profile"],
            row["index"],
            row["memory_mib"],
            row["sm_count"],
            row["instances_total"],
            "V",
        )
        assert list(p.starts) == [pl["start"] for pl in row["placements"]]


# On a MIG device handle nvml.h documents these as not supported: "On MIG-enabled
# GPUs, querying device utilization rates / encoder / decoder utilization is not
# currently supported", and the core count "not supported by the device or a mig
# device" (go-nvml pkg/nvml/nvml.h @ 2f9e261; docs/reference/nvml-surface.md).
REFUSED_ON_MIG = [
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetEncoderUtilization",
    "nvmlDeviceGetDecoderUtilization",
    "nvmlDeviceGetJpgUtilization",
    "nvmlDeviceGetOfaUtilization",
    "nvmlDeviceGetNumGpuCores",
    "nvmlDeviceGetSamples(1, 0)",
]


def test_a_mig_device_refuses_what_nvml_documents_as_unsupported(state_dir: Path) -> None:
    from migperf.nvml.sim import control

    nvml = simulated_pynvml("h200", state_dir)
    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    gi = nvml.nvmlDeviceCreateGpuInstance(h, 9)  # 3g.71gb
    nvml.nvmlGpuInstanceCreateComputeInstance(gi, 2)
    mig_uuid = nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetMigDeviceHandleByIndex(h, 0))
    control.attach_process("h200", 0, mig_uuid=mig_uuid, used_mib=4096, root=state_dir)
    nvml.nvmlShutdown()
    doc = _surface_script().surface(nvml)
    parent = doc["gpus"][0]["answers"]
    (mig,) = [m for m in doc["gpus"][0]["mig_devices"] if "answers" in m]
    answers = mig["answers"]
    for name in REFUSED_ON_MIG:
        assert answers[name]["error"] == "NVMLError_NotSupported", name
        assert parent[name]["error"] == "NVMLError_NotSupported", name  # MIG enabled
    # A MIG device is a device of its own: identity and per-instance memory answer.
    assert answers["nvmlDeviceGetUUID"]["value"] == mig_uuid
    assert answers["nvmlDeviceGetMemoryInfo"]["value"]["total"] == 71424 * 1024 * 1024
    assert answers["nvmlDeviceGetGpuInstanceId"]["value"] >= 0
    assert answers["nvmlDeviceGetComputeMode"]["value"] == 0
    assert parent["nvmlDeviceGetComputeMode"]["error"] == "NVMLError_NotSupported"
    # The worker on it is listed there by every version of the process list.
    nvml.nvmlInit()
    try:
        handle = nvml.nvmlDeviceGetMigDeviceHandleByIndex(nvml.nvmlDeviceGetHandleByIndex(0), 0)
        for name in (
            "nvmlDeviceGetComputeRunningProcesses",
            "nvmlDeviceGetComputeRunningProcesses_v2",
            "nvmlDeviceGetComputeRunningProcesses_v3",
        ):
            (proc,) = getattr(nvml, name)(handle)
            assert (proc.pid, proc.usedGpuMemory) == (os.getpid(), 4096 * 1024 * 1024), name
            assert proc.gpuInstanceId == answers["nvmlDeviceGetGpuInstanceId"]["value"], name
        assert nvml.nvmlDeviceGetGraphicsRunningProcesses(handle) == []
        assert nvml.nvmlDeviceGetMPSComputeRunningProcesses(handle) == []
    finally:
        nvml.nvmlShutdown()
