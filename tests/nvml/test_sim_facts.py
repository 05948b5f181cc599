"""The simulator, read through the facade, reproduces docs/reference/mig-facts.md for every model.

The expected rows are copied from docs/reference/mig-facts.md (sections 3, 4
and 13), not from migperf's catalog, so a typo in the catalog fails here.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from migperf.nvml.facade import Nvml

EIGHT = {  # id: (instances, compute slices, starts, size)
    19: (7, 1, (0, 1, 2, 3, 4, 5, 6), 1),
    20: (1, 1, (0, 1, 2, 3, 4, 5, 6), 1),
    15: (4, 1, (0, 2, 4, 6), 2),
    14: (3, 2, (0, 2, 4), 2),
    9: (2, 3, (0, 4), 4),
    5: (1, 4, (0,), 4),
    0: (1, 7, (0,), 8),
}

# model: {id: (name, SMs, MiB)}
FACTS = {
    "a100-40gb": {
        19: ("1g.5gb", 14, 4864),
        20: ("1g.5gb+me", 14, 4864),
        15: ("1g.10gb", 14, 9984),
        14: ("2g.10gb", 28, 9984),
        9: ("3g.20gb", 42, 20096),
        5: ("4g.20gb", 56, 20096),
        0: ("7g.40gb", 98, 40448),
    },
    "a100-80gb": {
        19: ("1g.10gb", 14, 9728),
        20: ("1g.10gb+me", 14, 9728),
        15: ("1g.20gb", 14, 19968),
        14: ("2g.20gb", 28, 19968),
        9: ("3g.40gb", 42, 40192),
        5: ("4g.40gb", 56, 40192),
        0: ("7g.80gb", 98, 80896),
    },
    "h100-80gb": {
        19: ("1g.10gb", 16, 9984),
        20: ("1g.10gb+me", 16, 9984),
        15: ("1g.20gb", 26, 20096),
        14: ("2g.20gb", 32, 20096),
        9: ("3g.40gb", 60, 40448),
        5: ("4g.40gb", 64, 40448),
        0: ("7g.80gb", 132, 81152),
    },
    "h100-nvl": {
        19: ("1g.12gb", 16, 11008),
        20: ("1g.12gb+me", 16, 11008),
        15: ("1g.24gb", 26, 22144),
        14: ("2g.24gb", 32, 22144),
        9: ("3g.47gb", 60, 47488),
        5: ("4g.47gb", 64, 47488),
        0: ("7g.94gb", 132, 95360),
    },
    "h200": {
        19: ("1g.18gb", 16, 16384),
        20: ("1g.18gb+me", 16, 16384),
        # A real H200, driver 580.159.04, 2026-12-04 (docs/validation/nvidia-h200-2026-12-04.json).
        15: ("1g.35gb", 26, 33280),
        14: ("2g.35gb", 32, 33280),
        9: ("3g.71gb", 60, 71424),
        5: ("4g.71gb", 64, 71424),
        0: ("7g.141gb", 132, 143360),
    },
}

NAMES = {
    "a100-40gb": "NVIDIA A100-SXM4-40GB",
    "a100-80gb": "NVIDIA A100-SXM4-80GB",
    "h100-80gb": "NVIDIA H100 80GB HBM3",
    "h100-nvl": "NVIDIA H100 NVL",
    "h200": "NVIDIA H200",
    "a30": "NVIDIA A30",
    "rtx-pro-6000": "NVIDIA RTX PRO 6000 Blackwell Server Edition",
}
PCI = {
    "a100-40gb": "0x20B010DE",
    "a100-80gb": "0x20B210DE",
    "h100-80gb": "0x233010DE",
    "h100-nvl": "0x232110DE",
    "h200": "0x233510DE",
    "a30": "0x20B710DE",
    "rtx-pro-6000": "0x2BB510DE",
}


@pytest.mark.parametrize("model", sorted(FACTS))
def test_eight_slice_gpus_match_the_fact_sheet(sim: Callable[..., Nvml], model: str) -> None:
    nvml = sim(model)
    info = nvml.gpu(0)
    assert info.name == NAMES[model]
    assert info.pci_device_id_hex == PCI[model]
    got = {p.profile_id: p for p in nvml.gpu_instance_profiles(0)}
    assert set(got) == set(FACTS[model])
    for pid, (name, sms, mib) in FACTS[model].items():
        p = got[pid]
        inst, cs, starts, size = EIGHT[pid]
        assert (p.profile, p.sm_count, p.memory_mib) == (name, sms, mib), pid
        assert (p.instances_total, p.compute_slices) == (inst, cs), pid
        assert tuple(pl.start for pl in p.placements) == starts, pid
        assert {pl.size for pl in p.placements} == {size}, pid
        assert p.instances_free == inst  # nothing created yet


def test_a30_matches_the_fact_sheet(sim: Callable[..., Nvml]) -> None:
    nvml = sim("a30")
    assert nvml.gpu(0).name == "NVIDIA A30"
    rows = {
        p.profile_id: (
            p.profile,
            p.sm_count,
            p.memory_mib,
            p.instances_total,
            tuple(pl.start for pl in p.placements),
            p.memory_slices,
        )
        for p in nvml.gpu_instance_profiles(0)
    }
    assert rows == {
        14: ("1g.6gb", 14, 5952, 4, (0, 1, 2, 3), 1),
        21: ("1g.6gb+me", 14, 5952, 1, (0, 1, 2, 3), 1),
        5: ("2g.12gb", 28, 11968, 2, (0, 2), 2),
        6: ("2g.12gb+me", 28, 11968, 1, (0, 2), 2),
        0: ("4g.24gb", 56, 24000, 1, (0,), 4),
    }


def test_rtx_pro_6000_uses_a_twelve_unit_grid(sim: Callable[..., Nvml]) -> None:
    nvml = sim("rtx-pro-6000")
    rows = {
        p.profile_id: (
            p.profile,
            p.sm_count,
            tuple(pl.start for pl in p.placements),
            p.memory_slices,
        )
        for p in nvml.gpu_instance_profiles(0)
    }
    assert rows[14] == ("1g.24gb", 46, (0, 3, 6, 9), 3)
    assert rows[5] == ("2g.48gb", 94, (0, 6), 6)
    assert rows[0] == ("4g.96gb", 188, (0,), 12)
    assert rows[65][0] == "1g.24gb+me.all"
    assert rows[67][0] == "1g.24gb-me"
    assert rows[47][0] == "1g.24gb+gfx"


def test_gpu_without_mig_reports_no_mig(sim: Callable[..., Nvml]) -> None:
    info = sim("l4").gpu(0)
    assert info.name == "NVIDIA L4"
    assert info.mig_capable is False and info.mig_mode is None


def test_compute_instance_profiles_follow_the_lcip_captures(sim_a100_40gb: Nvml) -> None:
    """The -lcip captures (mig-facts.md 6), plus the 7_SLICE_NVL variant (id 8).

    Real drivers list CI profile 8 on an A100 7g instance, with the same name
    as the plain 7g profile (issue "The simulated GPU as strict as a real
    driver"; nvml.h NVML_COMPUTE_INSTANCE_PROFILE_7_SLICE_NVL): the row was
    added on purpose.
    """
    nvml = sim_a100_40gb
    gi7 = nvml.create_gpu_instance(0, 0)
    rows = [
        (c.profile, c.profile_id, c.instances_total, c.sm_count)
        for c in nvml.compute_instance_profiles(0, gi7)
    ]
    assert rows == [
        ("1c.7g.40gb", 0, 7, 14),
        ("2c.7g.40gb", 1, 3, 28),
        ("3c.7g.40gb", 2, 2, 42),
        ("4c.7g.40gb", 3, 1, 56),
        ("7g.40gb", 4, 1, 98),
        ("7g.40gb", 8, 1, 98),
    ]
    nvml.destroy_gpu_instance(0, gi7)
    gi4 = nvml.create_gpu_instance(0, 5)
    rows = [
        (c.profile, c.profile_id, c.instances_total) for c in nvml.compute_instance_profiles(0, gi4)
    ]
    # No 3c on a 4g GPU instance (S8l, S8o).
    assert rows == [("1c.4g.20gb", 0, 4), ("2c.4g.20gb", 1, 2), ("4g.20gb", 3, 1)]
