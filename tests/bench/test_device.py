"""--device parsing into worker environments."""

from __future__ import annotations

import pytest

from migperf.bench.device import resolve_device, worker_env
from migperf.errors import UsageError

MIG = "MIG-4f8d1a3e-2c5b-5e7a-9b1d-0123456789ab"
BASE = {"PATH": "/usr/bin", "CUDA_VISIBLE_DEVICES": "3"}


def test_cpu_hides_every_gpu() -> None:
    env = worker_env("cpu", base_env=BASE)
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["PATH"] == "/usr/bin"
    assert resolve_device("CPU").kind == "cpu"


def test_index_selects_that_gpu_in_nvidia_smi_order() -> None:
    env = worker_env(1, base_env=BASE)
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert resolve_device("0").label == "GPU 0"
    assert resolve_device("cuda:2").cuda_visible_devices == "2"


def test_mig_uuid_selects_that_mig_device() -> None:
    sel = resolve_device(MIG)
    assert sel.kind == "cuda" and sel.cuda_visible_devices == MIG
    assert sel.env(BASE)["CUDA_VISIBLE_DEVICES"] == MIG
    legacy = "MIG-GPU-4f8d1a3e-2c5b-5e7a-9b1d-0123456789ab/1/0"
    assert resolve_device(legacy).cuda_visible_devices == legacy


def test_auto_keeps_the_callers_visibility() -> None:
    sel = resolve_device(None)
    assert sel.kind == "auto"
    assert sel.env(BASE)["CUDA_VISIBLE_DEVICES"] == "3"


def test_simulated_slot_is_forced_onto_the_cpu() -> None:
    sel = resolve_device(MIG, simulated=True)
    assert sel.kind == "cpu" and sel.simulated
    assert sel.env(BASE)["CUDA_VISIBLE_DEVICES"] == ""
    assert "simulated" in sel.label


def test_workers_never_reach_the_network() -> None:
    env = worker_env("cpu", base_env={})
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


def test_base_env_is_not_modified() -> None:
    base = dict(BASE)
    worker_env("cpu", base_env=base)
    assert base == BASE


@pytest.mark.parametrize("bad", ["gpu0", "MIG-123", "-1", "cuda:x", "MIG-GPU-abc/1/0"])
def test_nonsense_is_a_usage_error_with_a_hint(bad: str) -> None:
    with pytest.raises(UsageError) as info:
        resolve_device(bad)
    assert "nvidia-smi -L" in info.value.hint
