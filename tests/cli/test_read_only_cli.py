"""The read-only CLI: what a user sees, and the exit codes scripts rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from migperf import __version__
from migperf.cli.main import app
from migperf.nvml import open_nvml

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_h100_profiles_json_lists_1g_20gb_as_in_the_fact_sheet() -> None:
    code, out, _ = run("--simulate", "h100-80gb", "mig", "profiles", "--json")
    assert code == 0
    [gpu] = json.loads(out)
    p = next(p for p in gpu["profiles"] if p["profile"] == "1g.20gb")
    assert p["profile_id"] == 15 and p["sm_count"] == 26
    assert p["placements"] == [{"start": s, "size": 2} for s in (0, 2, 4, 6)]
    assert gpu["simulated"] is True


def test_profiles_json_for_one_gpu_is_a_flat_list_with_the_documented_keys() -> None:
    code, out, _ = run("--simulate", "a100-40gb", "mig", "profiles", "--gpu", "0", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {
        "profile",
        "profile_id",
        "instances_total",
        "instances_free",
        "sm_count",
        "memory_mib",
        "compute_slices",
        "memory_slices",
        "placements",
    } <= set(rows[0])
    assert [r["profile"] for r in rows][:3] == ["7g.40gb", "4g.20gb", "3g.20gb"]


def test_a30_gpus_json() -> None:
    code, out, _ = run("--simulate", "a30", "gpus", "--json")
    assert code == 0
    [gpu] = json.loads(out)
    assert gpu["name"] == "NVIDIA A30"
    assert gpu["mig_mode"] == {"current": True, "pending": True}
    assert {"index", "name", "uuid", "memory_mib", "mig_capable", "mig_mode", "mig_devices"} <= set(
        gpu
    )


def test_gpus_table_for_a_dgx() -> None:
    code, out, _ = run("--simulate", "a100-80gb:8", "gpus")
    assert code == 0
    assert out.count("NVIDIA A100-SXM4-80GB") == 8
    assert "(simulated)" in out


def test_environment_variable_selects_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIGPERF_SIMULATE", "h200:2")
    code, out, _ = run("gpus", "--json")
    assert code == 0
    assert [g["name"] for g in json.loads(out)] == ["NVIDIA H200", "NVIDIA H200"]


def test_mig_show_json_lists_instances_with_uuids() -> None:
    with open_nvml("a100-80gb") as n:
        gi = n.create_gpu_instance(0, 9, 4)
        n.create_compute_instance(0, gi, 1)
        n.create_compute_instance(0, gi, 0)
    code, out, _ = run("--simulate", "a100-80gb", "mig", "show", "--json")
    assert code == 0
    [gpu] = json.loads(out)
    [inst] = gpu["instances"]
    assert inst["profile"] == "3g.40gb" and inst["placement"] == {"start": 4, "size": 4}
    assert [c["profile"] for c in inst["compute_instances"]] == ["2c.3g.40gb", "1c.3g.40gb"]
    assert all(c["mig_uuid"].startswith("MIG-") for c in inst["compute_instances"])
    code, out, _ = run("--simulate", "a100-80gb", "mig", "show")
    assert "3g.40gb" in out and "4:4" in out and "MIG-" in out


def test_profiles_are_listed_when_mig_is_disabled_and_the_output_says_so() -> None:
    code, out, _ = run("--simulate", "h100-80gb:1:mig-off", "mig", "profiles")
    assert code == 0
    assert "1g.10gb" in out and "MIG mode is disabled" in out
    code, out, _ = run("--simulate", "h100-80gb:1:mig-off", "mig", "show")
    assert "MIG disabled" in out


def test_errors_are_one_message_and_a_hint_with_exit_code_1() -> None:
    code, out, err = run("--simulate", "l4", "mig", "profiles", "--gpu", "0")
    assert code == 1
    assert "ERROR: GPU 0 (NVIDIA L4) does not support MIG" in err
    assert "HINT:" in err
    assert "Traceback" not in err + out
    code, _, err = run("--simulate", "a30", "mig", "show", "--gpu", "5")
    assert code == 1 and "GPU 5 does not exist: this machine has 1 GPU(s)" in err


def test_usage_errors_exit_2() -> None:
    code, _, err = run("--simulate", "a900", "gpus")
    assert code == 2 and "unknown GPU model 'a900'" in err and "a100-80gb" in err
    code, _, _ = run("gpus", "--no-such-flag")
    assert code == 2
    code, _, _ = run("mig", "profiles", "--gpu", "-1")
    assert code == 2


def test_version() -> None:
    code, out, _ = run("--version")
    assert code == 0 and out.strip() == f"migperf {__version__}"


def test_no_driver_falls_back_to_a_simulated_a100_and_says_so() -> None:
    # This machine has no NVIDIA driver (CI never does), so pynvml cannot load.
    code, out, err = run("gpus", "--json")
    assert code == 0
    assert json.loads(out)[0]["name"] == "NVIDIA A100-SXM4-40GB"
    assert json.loads(out)[0]["simulated"] is True
    assert "driver is not available" in err and "simulated a100-40gb" in err


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import sys, migperf.cli.main\n"
        "from typer.testing import CliRunner\n"
        "CliRunner().invoke(migperf.cli.main.app, ['--help'])\n"
        "print(sorted(m for m in ('torch', 'pandas', 'pynvml', 'transformers', 'matplotlib', 'numpy',"
        " 'rich', 'pydantic', 'yaml', 'migperf.bench', 'migperf.nvml', 'migperf.cli.bench',"
        " 'migperf.cli.run', 'migperf.cli.mig') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_console_script_runs() -> None:
    exe = os.path.join(os.path.dirname(sys.executable), "migperf")
    proc = subprocess.run(
        [exe, "--simulate", "a30", "gpus", "--json"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["name"] == "NVIDIA A30"


# ------------------------------------------------------------- without root


def _user_machine_with_a_3g_and_an_empty_2g() -> None:
    """An H100 laid out by root, then seen by a user without privileges.

    Without root, NVML refuses the parent's memory in MIG mode (reported on
    A100, H100, H200), placements, free counts and instance lists (nvml.h
    "Requires privileged user"; docs/reference/mig-facts.md 8.4, 9).
    """
    from migperf.nvml.sim.state import MachineState, parse_machine_spec

    with open_nvml("h100-80gb") as n:
        gi = n.create_gpu_instance(0, 9, 4)
        n.create_compute_instance(0, gi, 2)
        n.create_gpu_instance(0, 14, 0)
    with MachineState(parse_machine_spec("h100-80gb")).transaction() as st:
        st["unprivileged"] = True


def test_gpus_without_root_says_the_memory_is_unavailable() -> None:
    _user_machine_with_a_3g_and_an_empty_2g()
    code, out, err = run("--simulate", "h100-80gb", "gpus")
    assert code == 0 and "Traceback" not in out + err
    assert "n/a" in out
    assert (
        "NOTE: GPU 0: memory unavailable: nvmlDeviceGetMemoryInfo: Insufficient Permissions" in err
    )
    code, out, _ = run("--simulate", "h100-80gb", "gpus", "--json")
    [gpu] = json.loads(out)
    assert (
        gpu["memory_mib"] is None and "Insufficient Permissions" in gpu["unavailable"]["memory_mib"]
    )


def test_mig_profiles_without_root_marks_placements_and_free_counts_unknown() -> None:
    _user_machine_with_a_3g_and_an_empty_2g()
    code, out, err = run("--simulate", "h100-80gb", "mig", "profiles")
    assert code == 0 and "Traceback" not in out + err
    row = next(line for line in out.splitlines() if "3g.40gb" in line)
    assert "?/2" in row and "3/?" in row and "{" not in row  # no invented placements
    assert "NOTE: GPU 0: placements and memory slices unavailable" in err
    assert "NOTE: GPU 0: free counts unavailable" in err
    code, out, _ = run("--simulate", "h100-80gb", "mig", "profiles", "--json")
    [gpu] = json.loads(out)
    assert set(gpu["unavailable"]) == {"placements", "instances_free"}
    p = next(p for p in gpu["profiles"] if p["profile"] == "3g.40gb")
    assert (p["placements"], p["memory_slices"], p["instances_free"]) == ([], None, None)


def test_mig_show_without_root_says_what_it_cannot_see() -> None:
    _user_machine_with_a_3g_and_an_empty_2g()
    code, out, err = run("--simulate", "h100-80gb", "mig", "show")
    assert code == 0 and "Traceback" not in out + err
    assert "3g.40gb" in out and "MIG-" in out
    assert "NOTE: GPU 0: GPU instances unavailable" in err
    assert "without a compute instance not visible" in err.replace("\n", " ")
    code, out, _ = run("--simulate", "h100-80gb", "mig", "show", "--json")
    [gpu] = json.loads(out)
    [inst] = gpu["instances"]  # the 2g without a compute instance is invisible, and said so
    assert inst["placement"] is None and "gpu_instances" in gpu["unavailable"]


def test_mig_show_without_root_and_without_mig_devices_claims_no_emptiness() -> None:
    from migperf.nvml.sim.state import MachineState, parse_machine_spec

    with open_nvml("a100-80gb") as n:
        n.create_gpu_instance(0, 0)  # a GPU instance without a compute instance
    with MachineState(parse_machine_spec("a100-80gb")).transaction() as st:
        st["unprivileged"] = True
    code, out, err = run("--simulate", "a100-80gb", "mig", "show")
    assert code == 0 and "no GPU instances" not in out
    assert "no MIG devices visible to this user" in out and "NOTE:" in err


def test_usage_mistakes_get_error_and_hint_with_a_suggestion() -> None:
    from typer.testing import CliRunner

    from migperf.cli.main import app

    for args, said, hint in (
        (["run", "--resum", "c.yaml"], "No such option: --resum", "migperf run --help"),
        (["results", "shwo"], "Did you mean 'show'?", "migperf results --help"),
        (["--bogus"], "No such option: --bogus", "migperf --help"),
    ):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2, args
        assert f"ERROR: {said}" in r.stderr or (said in r.stderr and "ERROR:" in r.stderr)
        assert f"HINT: see `{hint}`" in r.stderr
        assert "Usage:" not in r.stderr
