"""Which devices the matrix runs on, and how a check tells a documented MIG limit from a failure."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest

from migperf.compat import choose_target
from migperf.compat.probes.kit import Context, ExpectedFail, trim
from migperf.errors import UsageError
from migperf.nvml.facade import Nvml


def with_two_slices(sim: Callable[..., Nvml]) -> Nvml:
    nvml = sim("a100-40gb")
    for _ in range(2):
        gi = nvml.create_gpu_instance(0, 19)  # 1g.5gb
        nvml.create_compute_instance(0, gi, 0)
    return nvml


def test_the_first_mig_device_is_chosen_with_a_partner_from_another_gpu_instance(
    sim: Callable[..., Nvml],
) -> None:
    nvml = with_two_slices(sim)
    a, b = nvml.mig_devices(0)
    t = choose_target(nvml)
    assert t.simulated and t.first.mig and t.first.label == f"{a.mig_uuid} (simulated)"
    assert t.first.cuda_visible == ""  # the simulator never hands CUDA a device
    assert t.first.memory_mib == a.memory_mib and "MIG 1g.5gb" in t.first.name
    assert t.second is not None and t.second.label == f"{b.mig_uuid} (simulated)"
    named = choose_target(nvml, b.mig_uuid, a.mig_uuid)
    assert named.first.label.startswith(b.mig_uuid) and named.second is not None


def test_a_gpu_without_slices_is_gpu_0_and_the_partner_is_missing(sim: Callable[..., Nvml]) -> None:
    t = choose_target(sim("a100-40gb"))
    assert t.first.label == "GPU 0 (simulated)" and t.second is None
    assert t.second_missing == "needs two GPUs"


def test_bad_devices_are_refused_with_the_list(sim: Callable[..., Nvml]) -> None:
    nvml = with_two_slices(sim)
    a, _ = nvml.mig_devices(0)
    with pytest.raises(UsageError, match="no MIG device MIG-00000000") as info:
        choose_target(nvml, "MIG-00000000-0000-0000-0000-000000000000")
    assert a.mig_uuid in (info.value.hint or "")
    with pytest.raises(UsageError, match="neither a GPU index nor a MIG device"):
        choose_target(nvml, "cuda:1")
    with pytest.raises(UsageError, match="same device"):
        choose_target(nvml, a.mig_uuid, a.mig_uuid)


def fake_torch_cuda(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    import torch

    props = SimpleNamespace(name="NVIDIA H200 MIG 1g.18gb", uuid="abc", total_memory=18 << 30)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: props.name)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: props)


def test_one_device_seen_of_two_mig_devices_is_the_documented_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from migperf.compat.probes.torch_probe import check_devices_two

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-x-abc,MIG-y")
    fake_torch_cuda(monkeypatch, 1)
    mig = Context("pytorch", "torch", "", devices=("MIG-x-abc", "MIG-y"), mig=True)
    with pytest.raises(
        ExpectedFail, match="sees 1 of 2 exposed.*cuda:0 is MIG-x-abc.*one MIG device"
    ):
        check_devices_two(mig)
    # Two whole GPUs of which the process sees one: that is a failure, not a MIG limit.
    gpus = Context("pytorch", "torch", "", devices=("0", "1"), mig=False)
    with pytest.raises(RuntimeError, match="expected 2"):
        check_devices_two(gpus)
    fake_torch_cuda(monkeypatch, 2)
    assert check_devices_two(mig).startswith("sees 2 of 2 exposed")


def test_errors_are_kept_whole_up_to_the_limit_then_by_their_ends() -> None:
    assert trim("a\n  b") == "a b"
    long = "start " + "x" * 2000 + " end"
    short = trim(long, 100)
    assert len(short) <= 100 and short.startswith("start") and short.endswith("end")
