"""CLI commands that change a GPU: enable/disable, reset, restore, read-only."""

from __future__ import annotations

from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.mig.apply import converge
from migperf.mig.journal import Journal
from migperf.mig.snapshot import ComputeState, InstanceState, MigSnapshot, take_snapshot
from migperf.nvml import open_nvml
from migperf.nvml.sim import control

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_enable_and_disable_mig() -> None:
    spec = "h100-80gb:2:mig-off"
    code, out, _ = run("--simulate", spec, "mig", "enable", "--gpu", "1")
    assert code == 0 and "GPU 1: MIG mode enabled" in out
    with open_nvml(spec) as n:
        assert [g.mig_mode.current for g in n.gpus()] == [False, True]
    code, out, _ = run("--simulate", spec, "mig", "disable")
    assert code == 0 and out.count("MIG mode disabled") == 2


def test_pending_enable_is_explained() -> None:
    spec = "a100-80gb:1:mig-off"
    control.hold_mode_changes(spec, 0)
    code, _, err = run("--simulate", spec, "mig", "enable", "--gpu", "0")
    assert code == 0
    assert "pending enable" in err and "nvidia-smi --gpu-reset -i 0" in err
    code, out, _ = run("--simulate", spec, "gpus")
    assert "reset needed" in out


def test_disable_with_instances_says_to_reset_first() -> None:
    with open_nvml("a30") as n:
        n.create_gpu_instance(0, 0)
    code, _, err = run("--simulate", "a30", "mig", "disable", "--gpu", "0")
    assert code == 1 and "migperf mig reset --gpu 0" in err


def test_enable_on_a_gpu_without_mig_fails() -> None:
    code, _, err = run("--simulate", "l4", "mig", "enable")
    assert code == 1 and "does not support MIG" in err


def test_reset_destroys_everything_and_dry_run_does_not() -> None:
    with open_nvml("a100-40gb") as n:
        gi = n.create_gpu_instance(0, 9, 0)
        n.create_compute_instance(0, gi, 2)
        n.create_gpu_instance(0, 19, 6)
    code, out, _ = run("--simulate", "a100-40gb", "mig", "reset", "--dry-run")
    assert code == 0 and "would destroy GPU instance 3g.20gb at 0:4" in out
    with open_nvml("a100-40gb") as n:
        assert len(n.gpu_instances(0)) == 2
    code, out, _ = run("--simulate", "a100-40gb", "mig", "reset", "--gpu", "0")
    assert code == 0 and "did destroy compute instance 3c at 0" in out
    with open_nvml("a100-40gb") as n:
        assert n.gpu_instances(0) == []


def test_read_only_refuses_every_changing_command() -> None:
    for args in (["mig", "enable"], ["mig", "disable"], ["mig", "reset"], ["mig", "restore"]):
        code, _, err = run("--simulate", "a100-40gb:1:mig-off", "--read-only", *args)
        assert code == 1 and "read-only mode is on" in err, args


def test_read_only_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MIGPERF_READ_ONLY", "1")
    code, _, err = run("--simulate", "a100-40gb", "mig", "reset")
    assert code == 1 and "read-only" in err


def test_restore_replays_a_journal() -> None:
    with open_nvml("a100-40gb") as n:
        before = take_snapshot(n, 0)
        converge(
            n,
            0,
            MigSnapshot(
                0,
                before.gpu_uuid,
                True,
                (InstanceState(0, 8, 0, "7g.40gb", (ComputeState(0, 7, 4),)),),
            ),
        )
        Journal(before.gpu_uuid, machine=n.machine).write(before, None, "a crashed apply")
    code, out, _ = run("--simulate", "a100-40gb", "mig", "restore")
    assert code == 0 and "GPU 0: restored (no instances)" in out
    code, out, _ = run("--simulate", "a100-40gb", "mig", "restore")
    assert "no journal" in out


def test_bad_gpu_target() -> None:
    code, _, err = run("--simulate", "a100-40gb", "mig", "reset", "--gpu", "first")
    assert code == 2 and "--gpu 'first' is not a GPU index or 'all'" in err
    code, _, err = run("--simulate", "a100-40gb", "mig", "reset", "--gpu", "3")
    assert code == 1 and "GPU 3 does not exist" in err
