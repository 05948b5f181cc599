"""Compute instances as real drivers make them: variants that share a name, placements the driver picks.

Sources: nvml.h (NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE_REV1 = 7,
_7_SLICE_NVL = 8), docs/reference/mig-facts.md 5 and 6 (``-lcip`` captures;
the placement grid beyond ``0:1``, ``1:1`` is unverified [U]) and the issue
"The simulated GPU as strict as a real driver": real drivers list CI profile 7
(26 SMs on an H100 2g instance) and profile 8 (on an A100 7g instance), and
``nvidia-smi mig -cci 0,1 -gi 1`` on a 3g instance creates a 1c and a 2c.
"""

from __future__ import annotations

import pytest

from migperf import errors
from migperf.mig.apply import converge
from migperf.mig.layout import place_compute_instances
from migperf.mig.manager import apply_layout
from migperf.mig.snapshot import take_snapshot
from migperf.nvml.catalog import CI_ID_OF_SLICES, get_model
from migperf.nvml.ci_profiles import CI_GRID_CONFIDENCE, ci_profiles
from migperf.nvml.facade import Nvml


def test_cci_0_1_on_a_3g_makes_a_1c_and_a_2c(sim_a100_80gb: Nvml) -> None:
    nvml = sim_a100_80gb
    gi = nvml.create_gpu_instance(0, 9)
    assert nvml.create_compute_instance(0, gi, 0) == 0
    assert nvml.create_compute_instance(0, gi, 1) == 1
    [inst] = nvml.gpu_instances(0)
    got = [
        (c.profile, c.placement.start, c.placement.size)
        for c in inst.compute_instances
        if c.placement
    ]
    assert got == [("1c.3g.40gb", 0, 1), ("2c.3g.40gb", 1, 2)]
    with pytest.raises(errors.InsufficientResourcesError):
        nvml.create_compute_instance(0, gi, 0)  # 3 of 3 slices are used


def test_a_layout_the_driver_placed_is_restored_as_found(sim_a100_80gb: Nvml) -> None:
    """A snapshot holding driver-chosen CI placements (2c at 1:2) can be put back."""
    nvml = sim_a100_80gb
    gi = nvml.create_gpu_instance(0, 9)
    nvml.create_compute_instance(0, gi, 0)
    nvml.create_compute_instance(0, gi, 1)
    found = take_snapshot(nvml, 0)
    apply_layout(nvml, 0, "7g.80gb")
    converge(nvml, 0, found)
    assert take_snapshot(nvml, 0).same_layout(found)


def test_place_compute_instances_keeps_the_aligned_plan_and_tolerates_the_rest() -> None:
    assert CI_GRID_CONFIDENCE == "U"
    # Splits that fit at multiples of their sizes are planned as before.
    plan = place_compute_instances(3, [2, 1])
    assert plan is not None and [(p.start, p.size) for p in plan] == [(0, 2), (2, 1)]
    # What the driver would make of 4c + 3c in a 7g: not refused on an unverified grid.
    fit = place_compute_instances(7, [4, 3])
    assert fit is not None and [(p.start, p.size) for p in fit] == [(0, 4), (4, 3)]
    assert place_compute_instances(7, [4, 4]) is None


def test_h100_2g_lists_a_rev1_1c_with_26_sms_next_to_the_plain_one(sim_h100: Nvml) -> None:
    nvml = sim_h100
    gi = nvml.create_gpu_instance(0, 14, 0)
    rows = [(c.profile, c.profile_id, c.sm_count) for c in nvml.compute_instance_profiles(0, gi)]
    assert rows == [("1c.2g.20gb", 0, 16), ("2g.20gb", 1, 32), ("1c.2g.20gb", 7, 26)]
    ci = nvml.create_compute_instance(0, gi, 7)
    [dev] = nvml.mig_devices(0)
    assert dev.sm_count == 26 and dev.name.endswith("MIG 1c.2g.20gb")
    [inst] = nvml.gpu_instances(0)
    assert [(c.ci_id, c.profile_id) for c in inst.compute_instances] == [(ci, 7)]
    # 26 + 16 SMs are more than the 2g instance's 32: the plain 1c no longer fits.
    with pytest.raises(errors.InsufficientResourcesError):
        nvml.create_compute_instance(0, gi, 0)


def test_a100_7g_lists_the_nvl_variant_under_the_same_name(sim_a100_40gb: Nvml) -> None:
    nvml = sim_a100_40gb
    gi = nvml.create_gpu_instance(0, 0)
    same_name = [c for c in nvml.compute_instance_profiles(0, gi) if c.profile == "7g.40gb"]
    assert [(c.profile_id, c.compute_slices, c.sm_count) for c in same_name] == [
        (4, 7, 98),
        (8, 7, 98),
    ]
    nvml.create_compute_instance(0, gi, 8)
    [inst] = nvml.gpu_instances(0)
    assert [(c.profile, c.profile_id) for c in inst.compute_instances] == [("7g.40gb", 8)]
    with pytest.raises(errors.InsufficientResourcesError):
        nvml.create_compute_instance(0, gi, 4)  # the NVL instance holds the whole GPU instance


def test_plain_profile_ids_by_size_never_pick_a_variant() -> None:
    assert CI_ID_OF_SLICES[1] == 0 and CI_ID_OF_SLICES[7] == 4
    h100 = get_model("h100-80gb")
    two_g = h100.profile_by_id(14)
    assert two_g is not None
    ids = [f.profile_id for f in ci_profiles(h100, two_g)]
    assert ids == [0, 1, 7]
