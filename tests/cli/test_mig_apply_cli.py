"""`migperf mig apply / check / layouts / export`: what a user types and sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.mig.snapshot import take_snapshot
from migperf.nvml import open_nvml

runner = CliRunner()

BALANCED = {
    "a100-40gb": ("0x20B010DE", {"1g.5gb": 2, "2g.10gb": 1, "3g.20gb": 1}),
    "a100-80gb": ("0x20B210DE", {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}),
    "h100-80gb": ("0x233010DE", {"1g.10gb": 2, "2g.20gb": 1, "3g.40gb": 1}),
    "a30": ("0x20B710DE", {"1g.6gb": 2, "2g.12gb": 1}),
    "h100-nvl": ("0x232110DE", {"1g.12gb": 2, "2g.24gb": 1, "3g.47gb": 1}),
    "h200": ("0x233510DE", {"1g.18gb": 2, "2g.35gb": 1, "3g.71gb": 1}),
    "rtx-pro-6000": ("0x2BB510DE", {"1g.24gb": 2, "2g.48gb": 1}),
}


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def counts(spec: str, gpu: int = 0) -> dict[str, int]:
    with open_nvml(spec) as n:
        out: dict[str, int] = {}
        for gi in n.gpu_instances(gpu):
            out[gi.profile] = out.get(gi.profile, 0) + 1
        return out


def test_the_guides_failing_order_applies_and_shows_exactly_those_four() -> None:
    code, out, err = run("--simulate", "a100-40gb", "mig", "apply", "1g.5gb,1g.5gb,2g.10gb,3g.20gb")
    assert code == 0, err
    code, out, _ = run("--simulate", "a100-40gb", "mig", "show", "--json")
    gis = json.loads(out)[0]["instances"]
    assert sorted(g["profile"] for g in gis) == ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]
    assert all(len(g["compute_instances"]) == 1 for g in gis)


@pytest.mark.parametrize("model", sorted(BALANCED))
def test_mig_parted_all_balanced_applies_and_round_trips(model: str, tmp_path: Path) -> None:
    pci, devices = BALANCED[model]
    body = "\n".join(f'        "{k}": {v}' for k, v in devices.items())
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        "version: v1\nmig-configs:\n  all-disabled:\n    - devices: all\n      mig-enabled: false\n"
        f'  all-balanced:\n    - device-filter: "{pci}"\n      devices: all\n      mig-enabled: true\n'
        f"      mig-devices:\n{body}\n"
    )
    code, _, err = run(
        "--simulate", model, "mig", "apply", "--config", str(cfg), "--name", "all-balanced"
    )
    assert code == 0, err
    assert counts(model) == devices
    code, exported, _ = run("--simulate", model, "mig", "export")
    assert code == 0
    (tmp_path / "exported.yaml").write_text(exported)
    run("--simulate", model, "mig", "reset")
    assert counts(model) == {}
    code, _, err = run("--simulate", model, "mig", "apply", "-f", str(tmp_path / "exported.yaml"))
    assert code == 0, err
    assert counts(model) == devices


def test_a_device_filter_that_does_not_match_leaves_the_gpu_alone(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        'version: v1\nmig-configs:\n  x:\n    - device-filter: "0x20B010DE"\n      devices: all\n'
        '      mig-enabled: true\n      mig-devices:\n        "1g.5gb": 7\n'
    )
    code, _, _ = run("--simulate", "h100-80gb", "mig", "apply", "-f", str(cfg))
    assert code == 0 and counts("h100-80gb") == {}


def test_reapplying_keeps_matching_instances() -> None:
    run("--simulate", "h100-80gb", "mig", "apply", "3g.40gb,2g.20gb,1g.10gb*2")
    with open_nvml("h100-80gb") as n:
        keep = {d.mig_uuid for d in n.mig_devices(0) if "3g" in d.name}
    code, out, _ = run("--simulate", "h100-80gb", "mig", "apply", "3g.40gb,4g.40gb")
    assert code == 0 and "destroy GPU instance 3g" not in out
    with open_nvml("h100-80gb") as n:
        assert keep <= {d.mig_uuid for d in n.mig_devices(0)}


def test_compute_splits_and_explicit_placements() -> None:
    code, _, err = run("--simulate", "a100-80gb", "mig", "apply", "3g.40gb@0[2c,1c],1g.10gb@6")
    assert code == 0, err
    with open_nvml("a100-80gb") as n:
        gis = {gi.profile: gi for gi in n.gpu_instances(0)}
    assert gis["3g.40gb"].placement.start == 0
    assert sorted(c.profile for c in gis["3g.40gb"].compute_instances) == [
        "1c.3g.40gb",
        "2c.3g.40gb",
    ]
    assert gis["1g.10gb"].placement.start == 6


def test_dry_run_prints_the_plan_and_changes_nothing() -> None:
    code, out, _ = run("--simulate", "a30", "--read-only", "mig", "apply", "2g.12gb*2", "--dry-run")
    assert code == 0 and "would create GPU instance 2g.12gb at 0:2" in out
    assert counts("a30") == {}


@pytest.mark.parametrize(
    ("layout", "message", "code"),
    [
        ("3g.20gb", "3g.20gb", 2),  # a profile of another GPU model (A100-40GB name on an H100)
        ("1g.10gb*8", "at most 7 instances of 1g.10gb", 1),
        ("4g.40gb,4g.40gb", "at most 1 instance of 4g.40gb", 1),
        ("3g.40gb,,2g", "", 2),
        ("7g.80gb[5c]", "5c", 2),
    ],
)
def test_bad_layouts_fail_clearly_and_change_nothing(layout: str, message: str, code: int) -> None:
    run("--simulate", "h100-80gb", "mig", "apply", "2g.20gb")
    with open_nvml("h100-80gb") as n:
        before = take_snapshot(n, 0)
    got, _, err = run("--simulate", "h100-80gb", "mig", "apply", layout)
    assert got == code, err
    assert err.startswith("ERROR:") and message in err and "Traceback" not in err
    with open_nvml("h100-80gb") as n:
        assert take_snapshot(n, 0).same_layout(before)


def test_bad_mig_parted_files_change_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(
        "version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: true\n      mig-devices: {}\nextra: 1\n"
    )
    code, _, err = run("--simulate", "a30", "mig", "apply", "-f", str(cfg))
    assert code == 2 and "extra" in err and "bad.yaml" in err
    cfg.write_text(
        "version: v1\nmig-configs:\n  x:\n    - devices: all\n      mig-enabled: false\n"
        '      mig-devices:\n        "1g.6gb": 1\n'
    )
    code, _, err = run("--simulate", "a30", "mig", "apply", "-f", str(cfg))
    assert code == 2 and "mig-enabled" in err
    assert counts("a30") == {}


def test_all_or_nothing_across_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    # The second GPU's second create fails: GPU 0, already done, is put back too.
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", "nvmlDeviceCreateGpuInstanceWithPlacement@4=Unknown")
    code, _, err = run("--simulate", "a30:2", "mig", "apply", "2g.12gb*2", "--gpu", "all")
    assert code == 1 and "rolled back" in err
    monkeypatch.delenv("MIGPERF_SIM_FAULTS")
    assert counts("a30:2", 0) == {} and counts("a30:2", 1) == {}


def test_check_and_layouts_need_no_gpu() -> None:
    code, out, _ = run("mig", "check", "4g.40gb,3g.40gb", "--model", "h100-80gb")
    assert code == 0 and "4g.40gb@0" in out and "3g.40gb@4" in out
    code, out, _ = run("mig", "check", "7g.80gb,1g.10gb", "--model", "h100-80gb", "--json")
    assert code == 1 and json.loads(out)["ok"] is False
    code, out, _ = run("mig", "layouts", "--model", "a30", "--json")
    assert code == 0 and json.loads(out)["count"] == 4
    code, out, _ = run("mig", "layouts", "--model", "h100-80gb")
    assert code == 0 and out.startswith("28 maximal layouts")


def test_layouts_of_a_live_gpu() -> None:
    code, out, _ = run("--simulate", "a30", "mig", "layouts", "--gpu", "0", "--json")
    assert code == 0 and "2g.12gb,1g.6gb*2" in json.loads(out)["layouts"]


def test_layouts_and_check_cover_every_gpu_by_default() -> None:
    # The help says "default: every GPU"; GPUs of one model share one answer.
    code, out, _ = run("--simulate", "a30:3", "mig", "layouts", "--json")
    assert code == 0
    docs = json.loads(out)
    assert [d["target"] for d in docs] == ["GPUs 0-2 (NVIDIA A30)"] and docs[0]["count"] == 4
    code, out, _ = run("--simulate", "a30:3", "mig", "check", "2g.12gb*2")
    assert code == 0 and "fits GPUs 0-2 (NVIDIA A30)" in out
    code, out, err = run("--simulate", "a30:3", "mig", "check", "4g.24gb*2")
    assert code == 1 and "does not fit GPUs 0-2" in err
    # A machine without a MIG-capable GPU: a clear error pointing at --model.
    code, _, err = run("--simulate", "l4", "mig", "layouts")
    assert code == 1 and "no GPU of this machine supports MIG" in err and "--model" in err


def test_apply_needs_a_layout_or_a_config() -> None:
    code, _, err = run("--simulate", "a30", "mig", "apply")
    assert code == 2 and "LAYOUT or --config" in err


def test_changing_commands_never_fall_back_to_the_simulator() -> None:
    code, _, err = run("mig", "apply", "1g.5gb")
    assert code == 1 and "driver is not available" in err and "does not fall back" in err
    assert "using a simulated" not in err  # no NOTE of a fallback: nothing was changed anywhere
