"""Time-slicing needs a compute mode that lets several processes open the device."""

from __future__ import annotations

from typing import Any

import pytest

from migperf.errors import MigperfError
from migperf.nvml.facade import Nvml
from migperf.sharing.timeslice import check_timeslicing, compute_modes


def _set_mode(nvml: Nvml, gpu_index: int, mode: int) -> None:
    """What `sudo nvidia-smi -i N -c MODE` does to the simulated machine."""
    lib: Any = nvml.nvml.sim_lib
    with lib.machine.transaction() as st:
        st["gpus"][gpu_index]["compute_mode"] = mode


def _mode_in_state(nvml: Nvml, gpu_index: int) -> int:
    lib: Any = nvml.nvml.sim_lib
    return int(lib.machine.read()["gpus"][gpu_index]["compute_mode"])


def _mig_device(nvml: Nvml) -> str:
    gi = nvml.create_gpu_instance(0, 19)  # 1g.10gb on an A100 80GB
    nvml.create_compute_instance(0, gi, 0)
    return nvml.mig_devices(0)[0].mig_uuid


def test_default_mode_is_recorded(sim_h100_mig_off: Nvml) -> None:
    assert sim_h100_mig_off.compute_mode(0) == "DEFAULT"
    assert check_timeslicing(sim_h100_mig_off, 0, ["0"]) == {"0": "DEFAULT"}
    assert check_timeslicing(sim_h100_mig_off, 0) == {"0": "DEFAULT"}


@pytest.mark.parametrize(
    ("mode", "name", "why"),
    [
        (3, "EXCLUSIVE_PROCESS", "only one process may use it"),
        (2, "PROHIBITED", "no process may use it"),
        (1, "EXCLUSIVE_THREAD", "only one thread of one process"),
    ],
)
def test_one_process_modes_are_refused_and_left_alone(
    sim_h100_mig_off: Nvml, mode: int, name: str, why: str
) -> None:
    _set_mode(sim_h100_mig_off, 0, mode)
    assert compute_modes(sim_h100_mig_off, 0, ["0"]) == {"0": name}
    with pytest.raises(
        MigperfError, match=f"cannot time-slice GPU 0: its compute mode is {name}"
    ) as err:
        check_timeslicing(sim_h100_mig_off, 0, ["0"])
    assert why in err.value.message
    assert "sudo nvidia-smi -i 0 -c DEFAULT" in err.value.hint
    assert "never changes" in err.value.hint
    assert _mode_in_state(sim_h100_mig_off, 0) == mode  # migperf did not touch it


def test_mig_devices_are_asked_through_their_own_handles(sim_a100_80gb: Nvml) -> None:
    uuid = _mig_device(sim_a100_80gb)
    # NVML answers only for MIG device handles while MIG is on.
    assert sim_a100_80gb.compute_mode(0) is None
    assert compute_modes(sim_a100_80gb, 0) == {"0": "unknown"}
    assert check_timeslicing(sim_a100_80gb, 0, [uuid]) == {uuid: "DEFAULT"}
    _set_mode(sim_a100_80gb, 0, 3)
    with pytest.raises(MigperfError, match=f"cannot time-slice {uuid} on GPU 0"):
        check_timeslicing(sim_a100_80gb, 0, [uuid])


def test_an_unknown_mig_device_is_an_error(sim_a100_80gb: Nvml) -> None:
    with pytest.raises(MigperfError, match="MIG-00000000-0000-0000-0000-000000000000"):
        check_timeslicing(sim_a100_80gb, 0, ["MIG-00000000-0000-0000-0000-000000000000"])
