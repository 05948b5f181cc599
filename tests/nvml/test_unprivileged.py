"""A user without root on a MIG GPU: NVML refuses what nvml.h says needs privileges.

Sources: nvml.h ("Requires privileged user" on placements, remaining capacity,
GetGpuInstances/ById and the compute-instance equivalents; the parent's memory
in MIG mode is "aggregate information, only if the caller has appropriate
privileges"), docs/reference/mig-facts.md 8.4 and 9, and the issue "The
simulated GPU as strict as a real driver" (nvmlDeviceGetMemoryInfo on the
parent returns NoPermission for non-root users, reported on A100, H100, H200).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import pynvml
import pytest

from migperf import errors
from migperf.nvml.facade import Nvml
from migperf.nvml.sim.state import MachineState, parse_machine_spec
from migperf.telemetry.sampler import NvmlSampler


def as_user(spec: str) -> None:
    """The same machine, seen from then on by a user without privileges."""
    with MachineState(parse_machine_spec(spec)).transaction() as st:
        st["unprivileged"] = True


@pytest.fixture
def user_h100(sim: Callable[..., Nvml]) -> Nvml:
    """An H100 with a 3g instance (one MIG device) and a 2g one without compute instances."""
    nvml = sim("h100-80gb")
    gi = nvml.create_gpu_instance(0, 9, 4)
    nvml.create_compute_instance(0, gi, 2)
    nvml.create_gpu_instance(0, 14, 0)
    as_user("h100-80gb")
    return nvml


@pytest.mark.parametrize("model", ["a100-80gb", "h100-80gb", "h200"])
def test_the_parents_memory_in_mig_mode_is_refused(sim: Callable[..., Nvml], model: str) -> None:
    """Reported on A100, H100, H200: NoPermission, on both memory structs."""
    n = sim(f"{model}:1:user").nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        n.nvmlDeviceGetMemoryInfo(h)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        n.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)


def test_with_mig_off_the_parents_memory_is_anyones(sim: Callable[..., Nvml]) -> None:
    n = sim("h100-80gb:1:mig-off:user").nvml
    assert n.nvmlDeviceGetMemoryInfo(n.nvmlDeviceGetHandleByIndex(0)).total > 0


def test_privileged_calls_are_refused_and_the_free_ones_answer(user_h100: Nvml) -> None:
    """nvml.h marks these "Requires privileged user"; MIG devices stay readable."""
    n = user_h100.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    count = ctypes.c_uint(0)
    refused = [
        lambda: n.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, None, ctypes.byref(count)),
        lambda: n.nvmlDeviceGetGpuInstanceRemainingCapacity(h, 19),
        lambda: n.nvmlDeviceGetGpuInstanceById(h, 1),
        lambda: n.nvmlDeviceGetComputeRunningProcesses(h),  # the parent's aggregate
    ]
    for call in refused:
        with pytest.raises(pynvml.NVMLError_NoPermission):
            call()
    m = n.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    assert n.nvmlDeviceGetMemoryInfo(m).total > 0
    assert n.nvmlDeviceGetComputeRunningProcesses(m) == []
    assert n.nvmlDeviceGetAttributes(m).multiprocessorCount == 60


def test_compute_instance_queries_need_privileges_too(sim: Callable[..., Nvml]) -> None:
    """A GPU-instance handle taken while privileged: its CI queries are refused after."""
    nvml = sim("a100-80gb")
    n = nvml.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    gih = n.nvmlDeviceGetGpuInstanceById(h, nvml.create_gpu_instance(0, 9, 0))
    n.nvmlGpuInstanceCreateComputeInstance(gih, 2)
    as_user("a100-80gb")
    arr = (n.c_nvmlComputeInstance_t * 1)()
    count = ctypes.c_uint(1)
    for call in (
        lambda: n.nvmlGpuInstanceGetComputeInstanceRemainingCapacity(gih, 0),
        lambda: n.nvmlGpuInstanceGetComputeInstancePossiblePlacements(
            gih, 0, None, ctypes.byref(count)
        ),
        lambda: n.nvmlGpuInstanceGetComputeInstances(gih, 2, arr, ctypes.byref(count)),
        lambda: n.nvmlGpuInstanceGetComputeInstanceById(gih, 0),
    ):
        with pytest.raises(pynvml.NVMLError_NoPermission):
            call()


def test_the_facade_falls_back_and_says_what_it_could_not_read(user_h100: Nvml) -> None:
    nvml = user_h100
    info = nvml.gpu(0)
    assert info.memory_mib is None and info.mig_devices == 1  # unknown, never a wrong number
    assert "Insufficient Permissions" in nvml.unavailable(0)["memory_mib"]
    profiles = {p.profile: p for p in nvml.gpu_instance_profiles(0)}
    assert profiles["3g.40gb"].instances_free is None and profiles["3g.40gb"].placements == ()
    assert profiles["3g.40gb"].to_dict()["memory_slices"] is None
    missing = nvml.unavailable(0)
    assert "nvmlDeviceGetGpuInstancePossiblePlacements" in missing["placements"]
    assert "nvmlDeviceGetGpuInstanceRemainingCapacity" in missing["instances_free"]
    [gi] = nvml.gpu_instances(0)  # the 2g without a compute instance cannot be seen
    assert (gi.profile, gi.placement) == ("3g.40gb", None)
    assert gi.compute_instances[0].profile_id is None  # REV1/NVL variants share sizes
    assert "without a compute instance not visible" in nvml.unavailable(0)["gpu_instances"]
    with pytest.raises(errors.NvmlPermissionError) as exc:
        nvml.processes(0)
    assert "root" in exc.value.hint


def test_a_1g_and_its_media_variant_are_told_apart_by_their_engines(
    sim: Callable[..., Nvml],
) -> None:
    """1g.10gb and 1g.10gb+me have the same slices and memory (mig-facts.md 3.4)."""
    nvml = sim("h100-80gb")
    for pid, start in ((20, 0), (19, 1)):
        gi = nvml.create_gpu_instance(0, pid, start)
        nvml.create_compute_instance(0, gi, 0)
    root_view = {gi.gi_id: gi.profile for gi in nvml.gpu_instances(0)}
    as_user("h100-80gb")
    user_view = {gi.gi_id: gi.profile for gi in nvml.gpu_instances(0)}
    assert user_view == root_view and sorted(user_view.values()) == ["1g.10gb", "1g.10gb+me"]


def test_telemetry_sampling_marks_the_parents_memory_unavailable(user_h100: Nvml) -> None:
    dev = user_h100.mig_devices(0)[0]
    user_h100.attach_simulated_process(0, os.getpid(), mig_uuid=dev.mig_uuid, used_mib=512)
    s = user_h100.sample_gpu(0)
    assert s.memory_used_mib is None and s.memory_total_mib is None
    why = s.unsupported["memory_used_mib"]
    assert "Insufficient Permissions" in why and "privileged" in why
    assert s.power_w is not None and s.energy_mj is not None  # board sensors need no root
    [mem] = user_h100.mig_memory(0)
    assert mem.error is None and mem.memory_used_mib is not None and mem.memory_used_mib > 512
    sampler = NvmlSampler(user_h100, [0], interval_s=0.05)
    sampler.start()
    sampler.stop()
    series = sampler.series()
    assert "Insufficient Permissions" in series.gpus[0].unsupported["memory_used_mib"]
    assert series.mig_devices[0].columns["memory_used_mib"][0] == mem.memory_used_mib
