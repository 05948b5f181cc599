"""MIGPERF_SIM_FAULTS: a rule that could never fire is an error naming it and the valid choices."""

from __future__ import annotations

import pytest

from migperf.errors import UsageError
from migperf.nvml.sim.faults import (
    ENV_VAR,
    ERROR_NAMES,
    SIMULATED_FUNCTIONS,
    canonical_function,
    parse_faults,
)


def _error(text: str) -> str:
    with pytest.raises(UsageError) as info:
        parse_faults(text)
    return info.value.message


def test_a_function_the_simulator_lacks_is_named_with_the_valid_ones() -> None:
    msg = _error("nvmlDeviceCreateGpuInstanse@2=InUse")
    assert msg.startswith(
        f"{ENV_VAR}: rule 'nvmlDeviceCreateGpuInstanse@2=InUse': the simulator has no function "
        "'nvmlDeviceCreateGpuInstanse' (did you mean nvmlDeviceCreateGpuInstance"
    )
    assert "nvmlGpuInstanceDestroy" in msg  # the list of valid functions
    assert "nvmlDeviceResetGpu" in _error("nvmlDeviceResetGpu=Unknown")


def test_an_unknown_error_name_or_code_lists_the_valid_ones() -> None:
    msg = _error("nvmlGpuInstanceDestroy=InUze")
    assert "rule 'nvmlGpuInstanceDestroy=InUze': unknown action 'InUze' (did you mean InUse" in msg
    assert "InsufficientResources" in msg and "GpuIsLost" in msg
    assert "1000 is not an NVML error code" in _error("nvmlGpuInstanceDestroy=1000")
    assert "calls are counted from 1" in _error("nvmlGpuInstanceDestroy@0=InUse")


def test_unicode_digits_are_not_numbers() -> None:
    assert "cannot parse" in _error("nvmlGpuInstanceDestroy@٣=InUse")
    assert "cannot parse" in _error("nvmlGpuInstanceDestroy=٢٣")


def test_every_bad_rule_is_reported_at_once() -> None:
    msg = _error("nvmlNope=InUse; nvmlGpuInstanceDestroy=InUse; nvmlGpuInstanceDestroy=Boom")
    assert "rule 'nvmlNope=InUse'" in msg and "rule 'nvmlGpuInstanceDestroy=Boom'" in msg


def test_good_rules_still_parse_and_version_suffixes_are_ignored() -> None:
    rules = parse_faults(
        "nvmlDeviceGetCount_v2@3+=Unknown; nvmlGpuInstanceDestroy=19; "
        "nvmlDeviceGetGpuInstanceProfileInfoV=crash"
    )
    assert [(r.function, r.nth, r.and_after, r.action) for r in rules] == [
        ("nvmlDeviceGetCount", 3, True, 999),
        ("nvmlGpuInstanceDestroy", None, False, 19),
        ("nvmlDeviceGetGpuInstanceProfileInfo", None, False, "crash"),
    ]
    assert "InUse" in ERROR_NAMES


def test_the_function_list_matches_the_simulator() -> None:
    from migperf.nvml.sim.lib import SimNvmlLib, fault_name

    simulated = {
        fault_name(name)
        for name in dir(SimNvmlLib)
        if name.startswith("nvml") and hasattr(getattr(SimNvmlLib, name), "__wrapped__")
    }
    assert simulated == SIMULATED_FUNCTIONS
    assert all(
        canonical_function(n) == fault_name(n) for n in dir(SimNvmlLib) if n.startswith("nvml")
    )
