"""Lifecycle and error semantics of the simulated driver, seen through pynvml and the facade."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

import pynvml
import pytest

from migperf import errors
from migperf.nvml.facade import Nvml
from migperf.nvml.sim import control


def test_creating_without_placement_fails_in_the_guides_order(sim_a100_40gb: Nvml) -> None:
    # NVIDIA's guide: 1g, 1g, 2g, 3g created without placements runs out of
    # room even though the four fit when placed explicitly.
    nvml = sim_a100_40gb
    for pid in (19, 19, 14):
        nvml.create_gpu_instance(0, pid)
    with pytest.raises(errors.InsufficientResourcesError, match="Insufficient Resources"):
        nvml.create_gpu_instance(0, 9)


def test_explicit_placements_fit_the_same_four(sim_a100_40gb: Nvml) -> None:
    nvml = sim_a100_40gb
    for pid, start in ((9, 4), (14, 0), (19, 2), (19, 3)):
        nvml.create_gpu_instance(0, pid, start)
    got = sorted((gi.profile, gi.placement.start) for gi in nvml.gpu_instances(0) if gi.placement)
    assert got == [("1g.5gb", 2), ("1g.5gb", 3), ("2g.10gb", 0), ("3g.20gb", 4)]


def test_overlap_compute_and_instance_limits(sim_h100: Nvml) -> None:
    nvml = sim_h100
    nvml.create_gpu_instance(0, 9, 4)
    with pytest.raises(errors.InsufficientResourcesError):
        nvml.create_gpu_instance(0, 14, 4)  # slices 4-5 are held by the 3g
    for start in range(4):
        nvml.create_gpu_instance(0, 19, start)
    # 3 + 4 = 7 compute slices: nothing more fits, whatever memory is free.
    with pytest.raises(errors.InsufficientResourcesError):
        nvml.create_gpu_instance(0, 19)


def test_only_one_media_engine_instance(sim_h100: Nvml) -> None:
    nvml = sim_h100
    nvml.create_gpu_instance(0, 20, 0)
    with pytest.raises(errors.InsufficientResourcesError):
        nvml.create_gpu_instance(0, 20, 1)


def test_me_all_excludes_all_but_no_me_profiles(sim: Callable[..., Nvml]) -> None:
    nvml = sim("rtx-pro-6000")
    nvml.create_gpu_instance(0, 65, 0)  # 1g.24gb+me.all takes every media engine
    with pytest.raises(errors.InsufficientResourcesError):
        nvml.create_gpu_instance(0, 14, 3)
    nvml.create_gpu_instance(0, 67, 3)  # 1g.24gb-me needs none


def test_gi_ids_come_from_size_pools(sim_a100_80gb: Nvml) -> None:
    nvml = sim_a100_80gb
    assert nvml.create_gpu_instance(0, 9, 0) in (1, 2)
    assert nvml.create_gpu_instance(0, 14, 4) in range(3, 7)
    assert nvml.create_gpu_instance(0, 19, 6) in range(7, 15)


def test_destroying_a_gi_with_compute_instances_is_in_use(sim_h100: Nvml) -> None:
    nvml = sim_h100
    gi = nvml.create_gpu_instance(0, 9, 0)
    ci = nvml.create_compute_instance(0, gi, 2)
    with pytest.raises(errors.GpuInUseError, match="In use by another client"):
        nvml.destroy_gpu_instance(0, gi)
    nvml.destroy_compute_instance(0, gi, ci)
    nvml.destroy_gpu_instance(0, gi)
    assert nvml.gpu_instances(0) == []


def test_a_process_on_a_mig_device_blocks_its_destruction(sim_h100: Nvml) -> None:
    nvml = sim_h100
    gi = nvml.create_gpu_instance(0, 19, 0)
    ci = nvml.create_compute_instance(0, gi, 0)
    dev = nvml.mig_devices(0)[0]
    control.attach_process("h100-80gb", 0, mig_uuid=dev.mig_uuid, used_mib=2048)
    procs = nvml.processes(0, dev.mig_uuid)
    assert [(p.pid, p.gi_id, p.ci_id, p.used_memory_mib) for p in procs] == [
        (os.getpid(), gi, ci, 2048)
    ]
    with pytest.raises(errors.GpuInUseError):
        nvml.destroy_compute_instance(0, gi, ci)
    control.detach_process("h100-80gb", 0, os.getpid())
    nvml.destroy_compute_instance(0, gi, ci)


def test_processes_that_exit_are_forgotten(sim_h100: Nvml) -> None:
    nvml = sim_h100
    gi = nvml.create_gpu_instance(0, 19, 0)
    nvml.create_compute_instance(0, gi, 0)
    dead_pid = 2**22 + 12345  # above pid_max's default: never a live process
    control.attach_process("h100-80gb", 0, mig_uuid=nvml.mig_devices(0)[0].mig_uuid, pid=dead_pid)
    assert nvml.processes(0) == []


def test_compute_instances_have_stable_unique_mig_uuids(sim_h100: Nvml) -> None:
    nvml = sim_h100
    gi = nvml.create_gpu_instance(0, 9, 0)
    a = nvml.create_compute_instance(0, gi, 0)
    nvml.create_compute_instance(0, gi, 0)
    uuids = [d.mig_uuid for d in nvml.mig_devices(0)]
    assert len(set(uuids)) == 2 and all(u.startswith("MIG-") and len(u) == 40 for u in uuids)
    assert [d.mig_uuid for d in nvml.mig_devices(0)] == uuids  # stable
    nvml.destroy_compute_instance(0, gi, a)
    nvml.create_compute_instance(0, gi, 0)
    assert uuids[0] not in {d.mig_uuid for d in nvml.mig_devices(0)}  # a new instance, a new UUID


def test_mig_devices_are_ordered_by_gi_then_ci(sim_a100_40gb: Nvml) -> None:
    nvml = sim_a100_40gb
    g1 = nvml.create_gpu_instance(0, 19, 6)
    g2 = nvml.create_gpu_instance(0, 9, 0)
    for g, ci_pid in ((g1, 0), (g2, 2)):
        nvml.create_compute_instance(0, g, ci_pid)
    devs = nvml.mig_devices(0)
    assert [(d.gi_id, d.ci_id) for d in devs] == sorted((d.gi_id, d.ci_id) for d in devs)
    names = {d.gi_id: d.name for d in devs}
    assert names[g2] == "NVIDIA A100-SXM4-40GB MIG 3g.20gb"
    assert names[g1] == "NVIDIA A100-SXM4-40GB MIG 1g.5gb"


def test_remaining_capacity_counts_what_still_fits(sim_a100_40gb: Nvml) -> None:
    nvml = sim_a100_40gb
    nvml.create_gpu_instance(0, 9, 4)
    free = {p.profile: p.instances_free for p in nvml.gpu_instance_profiles(0)}
    assert free["3g.20gb"] == 1
    assert free["4g.20gb"] == 1
    assert free["1g.5gb"] == 4
    assert free["7g.40gb"] == 0


def test_mig_mode_changes_and_pending_state(sim: Callable[..., Nvml]) -> None:
    nvml = sim("h100-80gb:1:mig-off")
    assert nvml.gpu(0).mig_mode is not None and nvml.gpu(0).mig_mode.current is False
    mode, status = nvml.set_mig_mode(0, True)
    assert (mode.current, mode.pending, status) == (True, True, 0)
    mode, status = nvml.set_mig_mode(0, False)
    assert (mode.current, mode.pending) == (False, False)

    control.hold_mode_changes("h100-80gb:1:mig-off", 0)
    mode, status = nvml.set_mig_mode(0, True)
    assert (mode.current, mode.pending, status) == (False, True, pynvml.NVML_ERROR_IN_USE)
    assert nvml.gpu(0).mig_mode.is_pending_change
    control.reset_gpu("h100-80gb:1:mig-off", 0)
    assert nvml.mig_mode(0).current is True


def test_mig_cannot_be_disabled_with_instances(sim_h100: Nvml) -> None:
    sim_h100.create_gpu_instance(0, 0)
    with pytest.raises(errors.GpuInUseError):
        sim_h100.set_mig_mode(0, False)


def test_creating_with_mig_disabled_is_not_supported(sim_h100_mig_off: Nvml) -> None:
    with pytest.raises(errors.MigNotSupportedError) as info:
        sim_h100_mig_off.create_gpu_instance(0, 19)
    assert "migperf gpus" in info.value.hint


def test_profiles_are_listed_with_mig_disabled(sim_h100_mig_off: Nvml) -> None:
    profiles = sim_h100_mig_off.gpu_instance_profiles(0)
    assert {p.profile for p in profiles} >= {"1g.10gb", "7g.80gb"}
    assert all(p.instances_free is None for p in profiles)  # unknown, not invented


def test_unprivileged_user_cannot_change_but_can_read(sim: Callable[..., Nvml]) -> None:
    nvml = sim("a100-80gb:1:user")
    with pytest.raises(errors.NvmlPermissionError) as info:
        nvml.create_gpu_instance(0, 19)
    assert "root" in info.value.hint
    assert nvml.gpu(0).name == "NVIDIA A100-SXM4-80GB"
    assert {p.instances_free for p in nvml.gpu_instance_profiles(0)} == {None}


def test_unprivileged_view_is_rebuilt_from_mig_devices(sim: Callable[..., Nvml]) -> None:
    root = sim("a100-80gb:1")
    gi = root.create_gpu_instance(0, 9, 4)
    root.create_compute_instance(0, gi, 2)
    # The same machine seen without privileges (a second spec over one file is
    # not possible, so flip the flag in the state directly).
    from migperf.nvml.sim.state import MachineState, parse_machine_spec

    with MachineState(parse_machine_spec("a100-80gb:1")).transaction() as st:
        st["unprivileged"] = True
    gis = root.gpu_instances(0)
    assert [(g.gi_id, g.profile, g.placement) for g in gis] == [(gi, "3g.40gb", None)]
    assert gis[0].compute_instances[0].mig_uuid.startswith("MIG-")


def test_read_only_mode_refuses_every_change(sim: Callable[..., Nvml]) -> None:
    nvml = sim("a100-80gb", read_only=True)
    for call in (
        lambda: nvml.create_gpu_instance(0, 19),
        lambda: nvml.set_mig_mode(0, False),
        lambda: nvml.destroy_gpu_instance(0, 1),
        lambda: nvml.create_compute_instance(0, 1, 0),
        lambda: nvml.destroy_compute_instance(0, 1, 0),
    ):
        with pytest.raises(errors.ReadOnlyError, match="read-only"):
            call()
    assert nvml.gpu_instances(0) == []


def test_telemetry_is_plausible_and_not_supported_where_real_drivers_refuse(sim_h100: Nvml) -> None:
    n = sim_h100.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    idle_w = n.nvmlDeviceGetPowerUsage(h) / 1000
    assert 60 < idle_w < 80
    e1 = n.nvmlDeviceGetTotalEnergyConsumption(h)
    gi = sim_h100.create_gpu_instance(0, 0)
    sim_h100.create_compute_instance(0, gi, 4)
    control.attach_process("h100-80gb", 0, mig_uuid=sim_h100.mig_devices(0)[0].mig_uuid)
    busy_w = n.nvmlDeviceGetPowerUsage(h) / 1000
    assert busy_w > 500
    assert n.nvmlDeviceGetTotalEnergyConsumption(h) > e1  # the counter only grows
    assert n.nvmlDeviceGetTemperature(h, n.NVML_TEMPERATURE_GPU) > 50
    with pytest.raises(pynvml.NVMLError_NotSupported):
        n.nvmlDeviceGetUtilizationRates(h)  # MIG-enabled GPU (nvml.h)
    m = n.nvmlDeviceGetMigDeviceHandleByIndex(h, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        n.nvmlDeviceGetPowerUsage(m)


def test_utilization_works_without_mig(sim: Callable[..., Nvml]) -> None:
    n = sim("h100-80gb:1:mig-off").nvml
    u = n.nvmlDeviceGetUtilizationRates(n.nvmlDeviceGetHandleByIndex(0))
    assert (u.gpu, u.memory) == (0, 0)


def test_stale_gpu_instance_handles_are_rejected(sim_h100: Nvml) -> None:
    n = sim_h100.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    gih = n.nvmlDeviceCreateGpuInstance(h, 19)
    n.nvmlGpuInstanceDestroy(gih)
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        n.nvmlGpuInstanceGetInfo(gih)


def test_uninitialised_calls_fail_like_pynvml(sim_h100: Nvml) -> None:
    sim_h100.shutdown()
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        sim_h100.nvml.nvmlDeviceGetCount()


def test_placement_buffer_too_small_reports_insufficient_size(sim_h100: Nvml) -> None:
    n = sim_h100.nvml
    h = n.nvmlDeviceGetHandleByIndex(0)
    count = ctypes.c_uint(2)
    arr = (n.c_nvmlGpuInstancePlacement_t * 2)()
    with pytest.raises(pynvml.NVMLError_InsufficientSize):
        n.nvmlDeviceGetGpuInstancePossiblePlacements(h, 19, arr, ctypes.byref(count))
    assert count.value == 7
