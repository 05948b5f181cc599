"""`python -m migperf.telemetry.probe`: which metrics a GPU gives in its current MIG mode."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from migperf.mig import apply_layout
from migperf.nvml.facade import Nvml
from migperf.telemetry.probe import main, probe_telemetry


def test_mig_enabled_hopper_lists_refusals_with_reasons_and_gpm_per_instance(
    sim_h100: Nvml,
) -> None:
    apply_layout(sim_h100, 0, "3g.40gb,2g.20gb")
    doc = probe_telemetry(sim_h100, gpm_wait_s=0.11)
    (gpu,) = doc["gpus"]
    assert doc["simulated"] is True and gpu["mig_enabled"] is True
    util = gpu["metrics"]["gpu_util_pct"]
    assert util["supported"] is False and util["value"] is None and "MIG" in util["reason"]
    assert gpu["metrics"]["energy_mj"]["supported"] is True
    assert [m["memory_total_mib"] for m in gpu["mig_memory"]] == [40448.0, 20096.0]
    gpm = gpu["gpm_activity"]
    assert gpm["supported"] is True
    # One reading per GPU instance; which ids they have depends on the GPU's id mapping.
    assert [r["gi_id"] for r in gpm["readings"]] == sorted(d.gi_id for d in sim_h100.mig_devices(0))
    assert all(r["interval_s"] >= 0.1 and r["sm_util_pct"] == 0.0 for r in gpm["readings"])


def test_ampere_says_gpm_is_missing_and_main_prints_json(
    sim: Callable[..., Nvml], capsys: pytest.CaptureFixture[str]
) -> None:
    doc = probe_telemetry(sim("a100-80gb:1:mig-off"))
    gpu = doc["gpus"][0]
    assert gpu["metrics"]["gpu_util_pct"]["supported"] is True  # MIG off: utilization works
    assert (
        gpu["gpm_activity"]
        == {
            "supported": False,
            "reason": gpu["gpm_activity"]["reason"],
        }
        and "Ampere" in gpu["gpm_activity"]["reason"]
    )
    assert main(["--simulate", "a100-40gb"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["gpus"][0]["name"] == "NVIDIA A100-SXM4-40GB"
