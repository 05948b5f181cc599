"""Small driver behaviours the simulator reproduces: old MIG UUIDs, idle memory, GPM limits.

Sources: docs/reference/mig-facts.md 10 (the pre-R470 ``MIG-GPU-<uuid>/<gi>/<ci>``
form), 8.4 (per-instance memory), and the issue "The simulated GPU as strict as
a real driver": nvmlDeviceGetHandleByUUID accepts the older form; idle MIG
devices and idle parents report 11-249 MiB used, not 0; there is no GPM
sample for a GPU instance without compute instances.
"""

from __future__ import annotations

from collections.abc import Callable

import pynvml
import pytest

from migperf.nvml.facade import Nvml


def test_the_pre_r470_mig_uuid_form_finds_the_same_device(sim_h100: Nvml) -> None:
    nvml = sim_h100
    gi = nvml.create_gpu_instance(0, 9, 0)
    ci = nvml.create_compute_instance(0, gi, 2)
    gpu_uuid = nvml.gpu(0).uuid
    n = nvml.nvml
    h = n.nvmlDeviceGetHandleByUUID(f"MIG-{gpu_uuid}/{gi}/{ci}")
    assert n.nvmlDeviceGetUUID(h) == nvml.mig_devices(0)[0].mig_uuid
    assert bool(n.nvmlDeviceIsMigDeviceHandle(h))
    assert nvml.processes(0, f"MIG-{gpu_uuid}/{gi}/{ci}") == []
    for missing in (f"MIG-{gpu_uuid}/{gi}/{ci + 1}", f"MIG-{gpu_uuid}/{gi + 1}/{ci}"):
        with pytest.raises(pynvml.NVMLError_NotFound):
            n.nvmlDeviceGetHandleByUUID(missing)


@pytest.mark.parametrize("model", ["a100-40gb", "h100-80gb", "h200"])
def test_idle_devices_never_read_zero_memory_used(sim: Callable[..., Nvml], model: str) -> None:
    nvml = sim(model)
    gi = nvml.create_gpu_instance(0, 19, 0)
    nvml.create_compute_instance(0, gi, 0)
    gi = nvml.create_gpu_instance(0, 9, 4)
    nvml.create_compute_instance(0, gi, 2)
    for mem in nvml.mig_memory(0):
        assert mem.memory_used_mib is not None and 11 <= mem.memory_used_mib <= 249
    parent = nvml.sample_gpu(0).memory_used_mib  # root: the aggregate is readable
    assert parent is not None and 11 <= parent <= 249


def test_an_idle_gpu_without_mig_reads_some_memory_used(sim: Callable[..., Nvml]) -> None:
    used = sim("h100-80gb:1:mig-off").sample_gpu(0).memory_used_mib
    assert used is not None and 11 <= used <= 249


def test_no_gpm_sample_for_a_gpu_instance_without_compute_instances(sim_h100: Nvml) -> None:
    nvml = sim_h100
    gi = nvml.create_gpu_instance(0, 9, 0)
    n = nvml.nvml
    sample = n.nvmlGpmSampleAlloc()
    try:
        with pytest.raises(pynvml.NVMLError_NotFound):
            n.nvmlGpmMigSampleGet(n.nvmlDeviceGetHandleByIndex(0), gi, sample)
        refused = nvml.gpm_activity(0, gi)  # the facade says why instead of raising
        assert refused.interval_s is None and "Not Found" in refused.errors["sm_util_pct"]
        nvml.create_compute_instance(0, gi, 2)
        n.nvmlGpmMigSampleGet(n.nvmlDeviceGetHandleByIndex(0), gi, sample)
    finally:
        n.nvmlGpmSampleFree(sample)
