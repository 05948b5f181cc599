"""The simulated module has pynvml's exact surface and quirks (docs/reference/mig-facts.md 0.1 #5, 8)."""

from __future__ import annotations

import ctypes
import inspect
from collections.abc import Callable

import pynvml
import pytest

from migperf.nvml.facade import Nvml
from migperf.nvml.sim import simulated_pynvml


def test_every_pynvml_function_exists_with_the_same_signature() -> None:
    sim = simulated_pynvml("a100-40gb")
    for name, fn in vars(pynvml).items():
        if inspect.isfunction(fn) and name.startswith("nvml"):
            assert inspect.signature(getattr(sim, name)) == inspect.signature(fn), name


def test_exceptions_and_structs_are_pynvml_s_own_classes() -> None:
    sim = simulated_pynvml("a100-40gb")
    assert sim.NVMLError_InUse is pynvml.NVMLError_InUse
    assert sim.c_nvmlGpuInstancePlacement_t is pynvml.c_nvmlGpuInstancePlacement_t
    assert sim.nvmlInit is not pynvml.nvmlInit  # but bound to the simulated library


def test_is_mig_device_handle_returns_a_c_uint(sim_h100: Nvml) -> None:
    n = sim_h100.nvml
    gi = sim_h100.create_gpu_instance(0, 19)
    sim_h100.create_compute_instance(0, gi, 0)
    parent = n.nvmlDeviceGetHandleByIndex(0)
    mig = n.nvmlDeviceGetMigDeviceHandleByIndex(parent, 0)
    ret = n.nvmlDeviceIsMigDeviceHandle(mig)
    assert isinstance(ret, ctypes.c_uint)
    assert bool(ret) is True and (ret == 1) is False  # the quirk real code must survive
    assert not n.nvmlDeviceIsMigDeviceHandle(parent)
    back = n.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    assert n.nvmlDeviceGetUUID(back) == n.nvmlDeviceGetUUID(parent)
    assert n.nvmlDeviceGetHandleByUUID(n.nvmlDeviceGetUUID(mig)) is not None


def test_mig_mode_is_a_list_of_two_ints(sim_h100: Nvml) -> None:
    n = sim_h100.nvml
    assert n.nvmlDeviceGetMigMode(n.nvmlDeviceGetHandleByIndex(0)) == [1, 1]


def test_two_call_placement_pattern(sim_h100: Nvml) -> None:
    n = sim_h100.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    cnt = ctypes.c_uint(0)
    assert n.nvmlDeviceGetGpuInstancePossiblePlacements(h, 9, None, ctypes.byref(cnt)) == 0
    assert cnt.value == 2
    arr = (n.c_nvmlGpuInstancePlacement_t * cnt.value)()
    n.nvmlDeviceGetGpuInstancePossiblePlacements(h, 9, arr, ctypes.byref(cnt))
    assert [(p.start, p.size) for p in arr] == [(0, 4), (4, 4)]


def test_profile_info_v2_refuses_with_mig_off_and_v1_answers(sim_h100_mig_off: Nvml) -> None:
    n = sim_h100_mig_off.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_1_SLICE)
    info = n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_1_SLICE, 1)
    assert info.id == 19
    # Possible placements answer "regardless of whether MIG is enabled" (nvml.h).
    cnt = ctypes.c_uint(0)
    n.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, None, ctypes.byref(cnt))
    assert cnt.value == 7


def test_profile_index_and_id_are_different_numbers(sim_h100: Nvml) -> None:
    n = sim_h100.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    by_index = n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_1_SLICE_REV2)
    assert by_index.id == 15
    assert n.nvmlDeviceGetGpuInstanceProfileInfoById(h, 15).multiprocessorCount == 26
    assert by_index.name == "MIG 1g.20gb"  # pynvml structs decode char arrays
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_COUNT)
    with pytest.raises(pynvml.NVMLError_NotSupported):  # a constant H100 does not offer
        n.nvmlDeviceGetGpuInstanceProfileInfo(h, n.NVML_GPU_INSTANCE_PROFILE_1_SLICE_GFX)


def test_gpu_instances_buffer_pattern(sim_a100_40gb: Nvml) -> None:
    n = sim_a100_40gb.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    for _ in range(3):
        n.nvmlDeviceCreateGpuInstance(h, 19)
    info = n.nvmlDeviceGetGpuInstanceProfileInfoById(h, 19)
    arr = (n.c_nvmlGpuInstance_t * info.instanceCount)()
    cnt = ctypes.c_uint(info.instanceCount)
    n.nvmlDeviceGetGpuInstances(h, 19, arr, ctypes.byref(cnt))
    assert cnt.value == 3
    starts = sorted(n.nvmlGpuInstanceGetInfo(arr[i]).placement.start for i in range(cnt.value))
    assert starts == [4, 5, 6]


def test_unknown_functions_are_function_not_found(sim: Callable[..., Nvml]) -> None:
    # A symbol the simulated library lacks reads as an older driver's missing one.
    n = sim("a100-40gb").nvml
    with pytest.raises(pynvml.NVMLError_FunctionNotFound):
        n.nvmlDeviceGetNvLinkRemotePciInfo(n.nvmlDeviceGetHandleByIndex(0), 0)
