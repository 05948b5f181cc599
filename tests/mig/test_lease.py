"""GPU leases and journals, tried the way an operator breaks them: two shells, kills, bad files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migperf.cli.main import app
from migperf.mig import lease as lease_module
from migperf.mig.hold import hold_gpus
from migperf.mig.journal import Journal, OriginalLayout
from migperf.mig.lease import GpuLease, lease_dir
from migperf.mig.manager import apply_layout, target_for_layout
from migperf.mig.snapshot import InstanceState, MigSnapshot, take_snapshot
from migperf.nvml import open_nvml
from migperf.procs import signals_deferred

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    r = runner.invoke(app, list(args))
    return r.exit_code, r.stdout, r.stderr


def layout(spec: str, gpu: int = 0) -> str:
    with open_nvml(spec) as nvml:
        return take_snapshot(nvml, gpu).describe()


def migperf(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "migperf", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_a_change_is_refused_while_another_process_leases_the_gpu() -> None:
    with open_nvml("a100-80gb") as nvml:
        apply_layout(nvml, 0, "1g.10gb*2")
        uuid = nvml.gpu(0).uuid
    before = layout("a100-80gb")
    held = GpuLease(
        uuid, 0, command="migperf run a.yaml", experiment="a", machine="a100-80gb-x1"
    ).acquire()
    try:
        proc = migperf("--simulate", "a100-80gb", "mig", "apply", "7g.80gb", "--gpu", "0")
    finally:
        held.release()
    assert proc.returncode != 0
    assert f"GPU 0 is leased by PID {os.getpid()}" in proc.stderr
    assert "`migperf run a.yaml`, experiment a" in proc.stderr
    assert layout("a100-80gb") == before
    # Released: the same command goes through.
    assert migperf("--simulate", "a100-80gb", "mig", "apply", "7g.80gb").returncode == 0


def test_leases_nest_within_one_process_and_are_free_again_after() -> None:
    with open_nvml("a30") as nvml, hold_gpus(nvml, [0], command="outer") as hold:
        # The runner holds the lease and its own layout changes take it again.
        apply_layout(nvml, 0, "2g.12gb*2")
        assert hold.recovered == {}
    with open_nvml("a30") as nvml:
        probe = GpuLease(nvml.gpu(0).uuid, 0, command="probe", machine=nvml.machine)
    assert probe.holder() is None


KILLED_HOLDER = """
import os, signal
from migperf.nvml import open_nvml
from migperf.mig.hold import hold_gpus
from migperf.mig.manager import apply_layout
from migperf.mig.snapshot import take_snapshot
with open_nvml("a100-80gb") as nvml, hold_gpus(nvml, [0], command="migperf run killed.yaml") as hold:
    hold.keep_originals({0: take_snapshot(nvml, 0)})
    apply_layout(nvml, 0, "3g.40gb*2")
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_holders_layout_is_put_back_by_whatever_command_leases_the_gpu_next() -> None:
    with open_nvml("a100-80gb") as nvml:
        apply_layout(nvml, 0, "1g.10gb*3")
    before = layout("a100-80gb")
    proc = subprocess.run([sys.executable, "-c", KILLED_HOLDER], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert layout("a100-80gb") != before  # left in the dead holder's layout
    code, out, _ = run("--simulate", "a100-80gb", "mig", "show")
    assert "left a layout to put back" in out
    # Another command than the killed one puts the old layout back.
    code, out, err = run("--simulate", "a100-80gb", "mig", "restore")
    assert code == 0, err
    assert layout("a100-80gb") == before
    code, out, _ = run("--simulate", "a100-80gb", "mig", "restore")
    assert "nothing to restore" in out


def test_apply_on_two_gpus_killed_during_the_second_puts_both_back() -> None:
    spec = "a100-80gb:2"
    before = [layout(spec, 0), layout(spec, 1)]
    # The 2nd GPU-instance create is the first one on GPU 1: die there.
    faults = {"MIGPERF_SIM_FAULTS": "nvmlDeviceCreateGpuInstanceWithPlacement@2=crash"}
    proc = migperf("--simulate", spec, "mig", "apply", "3g.40gb", "--gpu", "all", env=faults)
    assert proc.returncode == -signal.SIGKILL
    assert layout(spec, 0) != before[0]  # GPU 0 was changed before the crash
    code, _, err = run("--simulate", spec, "mig", "restore")
    assert code == 0, err
    assert [layout(spec, 0), layout(spec, 1)] == before


def test_a_corrupt_journal_is_refused_with_its_file_and_what_to_do() -> None:
    with open_nvml("a100-40gb") as nvml:
        apply_layout(nvml, 0, "2g.10gb*2")
        journal = Journal(nvml.gpu(0).uuid, machine=nvml.machine)
    before = layout("a100-40gb")
    journal.path.write_text("")  # a power cut while it was written
    code, _, err = run("--simulate", "a100-40gb", "mig", "apply", "7g.40gb", "--gpu", "0")
    assert code == 1
    assert str(journal.path) in err and "not JSON" in err
    assert "migperf mig restore --gpu 0 --discard" in err
    assert "Traceback" not in err
    assert layout("a100-40gb") == before
    code, out, err = run("--simulate", "a100-40gb", "mig", "restore", "--gpu", "0", "--discard")
    assert code == 0 and "discarded" in out, err
    assert not journal.path.exists() and layout("a100-40gb") == before
    code, _, err = run("--simulate", "a100-40gb", "mig", "apply", "7g.40gb", "--gpu", "0")
    assert code == 0, err


def test_a_readable_but_impossible_journal_never_destroys_anything() -> None:
    with open_nvml("a100-40gb") as nvml:
        apply_layout(nvml, 0, "1g.5gb*4")
        uuid = nvml.gpu(0).uuid
        # A 3g.20gb (profile 9) cannot start at memory slice 1.
        bogus = MigSnapshot(0, uuid, True, (InstanceState(1, 4, 9, "3g.20gb", ()),))
        Journal(uuid, machine=nvml.machine).write(bogus, None, "a hand-edited journal")
    before = layout("a100-40gb")
    code, _, err = run("--simulate", "a100-40gb", "mig", "apply", "7g.40gb", "--gpu", "0")
    assert code == 1 and "cannot start at memory slice 1" in err
    assert layout("a100-40gb") == before
    with open_nvml("a100-40gb") as nvml:
        other = MigSnapshot(0, "GPU-someone-else", True, ())
        OriginalLayout(uuid, machine=nvml.machine).write(other, "elsewhere")
        Journal(uuid, machine=nvml.machine).clear()
    code, _, err = run("--simulate", "a100-40gb", "mig", "restore", "--gpu", "0")
    assert code == 1 and "is for GPU GPU-someone-else" in err
    assert layout("a100-40gb") == before


def test_an_empty_layout_is_refused_instead_of_destroying_everything() -> None:
    with open_nvml("a30") as nvml:
        apply_layout(nvml, 0, "1g.6gb*4")
    before = layout("a30")
    code, _, err = run("--simulate", "a30", "mig", "apply", "", "--gpu", "0")  # "$UNSET"
    assert code == 2
    assert "empty" in err and "migperf mig reset --gpu 0" in err
    assert layout("a30") == before
    with open_nvml("a30") as nvml, pytest.raises(Exception, match="empty"):
        target_for_layout(nvml, 0, "   ")


def test_leases_and_journals_live_in_one_machine_wide_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MIGPERF_STATE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    shared = tmp_path / "run" / "migperf"
    monkeypatch.setattr(lease_module, "SHARED_DIRS", (shared, tmp_path / "tmp" / "migperf"))
    d = lease_dir(None)
    # Not under anyone's home, so root and every user exclude each other on a real GPU.
    assert d == shared / "real"
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE(d.stat().st_mode) == 0o1777
    held = GpuLease("GPU-real", 0, command="test").acquire()
    try:
        assert stat.S_IMODE(held.path.stat().st_mode) == 0o666
        assert json.loads(held.path.read_text())["command"] == "test"
    finally:
        held.release()
    # An unwritable first choice falls back to the second.
    shared.chmod(0o500)
    try:
        if os.geteuid() != 0:  # root writes anyway
            assert lease_dir(None) == tmp_path / "tmp" / "migperf" / "real"
    finally:
        shared.chmod(0o1777)


def test_a_restore_is_not_cut_short_by_more_signals() -> None:
    seen: list[int] = []
    with signals_deferred(seen.append, redeliver=False) as got:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        finished = True  # the block ran to its end
    assert finished and got == [signal.SIGINT, signal.SIGTERM] == seen
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        signal.raise_signal(signal.SIGINT)  # delivered once the block is done (raise_signal: to this thread, not to a Ray thread an earlier test left)


def test_sigterm_during_mig_apply_rolls_back_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import migperf.mig.apply as apply_module

    with open_nvml("a100-80gb") as nvml:
        apply_layout(nvml, 0, "1g.10gb*4")
    before = layout("a100-80gb")
    real = apply_module.execute_steps

    def killed_midway(nvml, gpu_index, steps, on_step=None):  # type: ignore[no-untyped-def]
        real(nvml, gpu_index, steps[:1], on_step)  # one step done, then the operator's kill
        signal.raise_signal(signal.SIGTERM)
        real(nvml, gpu_index, steps[1:], on_step)

    monkeypatch.setattr(apply_module, "execute_steps", killed_midway)
    code, _, err = run("--simulate", "a100-80gb", "mig", "apply", "7g.80gb", "--gpu", "0")
    assert code == 143
    assert "SIGTERM" in err and "rolled back" in err
    assert layout("a100-80gb") == before
