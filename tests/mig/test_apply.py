"""The transactional partition manager: changes land whole or not at all."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from migperf import errors
from migperf.mig.apply import (
    RollbackFailedError,
    RolledBackError,
    applied,
    converge,
    empty_target,
    restore,
)
from migperf.mig.journal import Journal
from migperf.mig.lease import GpuLease
from migperf.mig.snapshot import (
    ComputeState,
    InstanceState,
    MigSnapshot,
    plan_changes,
    take_snapshot,
)
from migperf.nvml import open_nvml
from migperf.nvml.facade import Nvml
from migperf.nvml.sim import control

# A100-40GB: 3g.20gb@4 + 2g.10gb@0 + 1g.5gb@2 + 1g.5gb@3, one full CI each.
GUIDE = (
    InstanceState(4, 4, 9, "3g.20gb", (ComputeState(0, 3, 2),)),
    InstanceState(0, 2, 14, "2g.10gb", (ComputeState(0, 2, 1),)),
    InstanceState(2, 1, 19, "1g.5gb", (ComputeState(0, 1, 0),)),
    InstanceState(3, 1, 19, "1g.5gb", (ComputeState(0, 1, 0),)),
)


def target(nvml: Nvml, *instances: InstanceState) -> MigSnapshot:
    return MigSnapshot(0, nvml.gpu(0).uuid, True, tuple(sorted(instances)))


def layout_of(nvml: Nvml) -> list[str]:
    return sorted(i.describe() for i in take_snapshot(nvml, 0).instances)


def test_apply_creates_exactly_the_target(sim_a100_40gb: Nvml) -> None:
    result = converge(sim_a100_40gb, 0, target(sim_a100_40gb, *GUIDE))
    assert layout_of(sim_a100_40gb) == sorted(i.describe() for i in GUIDE)
    assert len(result.steps) == 8 and result.after.same_layout(result.after)
    assert len(sim_a100_40gb.mig_devices(0)) == 4


def test_matching_instances_are_kept(sim_a100_40gb: Nvml) -> None:
    nvml = sim_a100_40gb
    converge(nvml, 0, target(nvml, *GUIDE))
    uuid_3g = next(d.mig_uuid for d in nvml.mig_devices(0) if "3g" in d.name)
    new = (GUIDE[0], InstanceState(0, 4, 5, "4g.20gb", (ComputeState(0, 4, 3),)))
    result = converge(nvml, 0, target(nvml, *new))
    assert uuid_3g in {d.mig_uuid for d in nvml.mig_devices(0)}  # untouched, same UUID
    assert not any(s.instance.profile == "3g.20gb" for s in result.steps)


def test_dry_run_changes_nothing(sim_a100_40gb: Nvml) -> None:
    result = converge(sim_a100_40gb, 0, target(sim_a100_40gb, *GUIDE), dry_run=True)
    assert result.dry_run and len(result.steps) == 8
    assert sim_a100_40gb.gpu_instances(0) == []


@pytest.mark.parametrize(
    "fault",
    [
        "nvmlDeviceCreateGpuInstanceWithPlacement@1=InsufficientResources",
        "nvmlDeviceCreateGpuInstanceWithPlacement@3=Unknown",
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement@2=InsufficientResources",
        "nvmlGpuInstanceCreateComputeInstanceWithPlacement@4=GpuIsLost",
        "nvmlComputeInstanceDestroy@1=InUse",
        "nvmlGpuInstanceDestroy@2=InUse",
    ],
)
def test_any_failing_step_rolls_back_to_the_exact_previous_state(
    sim_a100_40gb: Nvml, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    nvml = sim_a100_40gb
    start = (
        InstanceState(0, 4, 9, "3g.20gb", (ComputeState(0, 2, 1), ComputeState(2, 1, 0))),
        InstanceState(4, 2, 14, "2g.10gb", (ComputeState(0, 2, 1),)),
        InstanceState(6, 1, 19, "1g.5gb", (ComputeState(0, 1, 0),)),
    )
    converge(nvml, 0, target(nvml, *start))
    before = take_snapshot(nvml, 0)
    uuids = {d.mig_uuid for d in nvml.mig_devices(0)}
    monkeypatch.setenv("MIGPERF_SIM_FAULTS", fault)
    with pytest.raises(RolledBackError, match="rolled back to its previous layout"):
        converge(nvml, 0, target(nvml, *GUIDE))
    monkeypatch.delenv("MIGPERF_SIM_FAULTS")
    assert take_snapshot(nvml, 0).same_layout(before)
    assert not Journal(before.gpu_uuid, machine=nvml.machine).path.exists()
    # Kept instances keep their UUIDs; recreated ones are new, as on a driver.
    assert len({d.mig_uuid for d in nvml.mig_devices(0)}) == len(uuids)


def test_failed_verification_rolls_back(
    sim_a100_40gb: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    import migperf.mig.apply as apply_mod

    real = apply_mod.take_snapshot
    calls = {"n": 0}

    def lying_snapshot(nvml: Nvml, gpu: int) -> MigSnapshot:
        calls["n"] += 1
        snap = real(nvml, gpu)
        return (
            MigSnapshot(snap.gpu_index, snap.gpu_uuid, True, snap.instances[:-1])
            if calls["n"] == 2
            else snap
        )

    monkeypatch.setattr(apply_mod, "take_snapshot", lying_snapshot)
    with pytest.raises(RolledBackError, match="verification failed"):
        converge(sim_a100_40gb, 0, target(sim_a100_40gb, *GUIDE))
    assert sim_a100_40gb.gpu_instances(0) == []


def test_a_failed_rollback_leaves_a_journal_that_restore_replays(
    sim_a100_40gb: Nvml, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = sim_a100_40gb
    # Every destroy fails: the apply's 4th create fails, and undoing the first
    # three creates is impossible until the fault clears.
    monkeypatch.setenv(
        "MIGPERF_SIM_FAULTS",
        "nvmlDeviceCreateGpuInstanceWithPlacement@3=Unknown;nvmlComputeInstanceDestroy=InUse",
    )
    with pytest.raises(RollbackFailedError) as info:
        converge(nvml, 0, target(nvml, *GUIDE))
    assert "migperf mig restore --gpu 0" in info.value.hint
    monkeypatch.delenv("MIGPERF_SIM_FAULTS")
    assert nvml.gpu_instances(0) != []
    result = restore(nvml, 0)
    assert result is not None
    assert nvml.gpu_instances(0) == []
    assert restore(nvml, 0) is None


def test_sigkill_mid_apply_leaves_a_journal_and_restore_brings_the_old_layout_back(
    state_dir: Path,
) -> None:
    with open_nvml("a100-40gb") as nvml:
        converge(nvml, 0, target(nvml, InstanceState(0, 8, 0, "7g.40gb", (ComputeState(0, 7, 4),))))
        before = take_snapshot(nvml, 0)
    code = (
        "from migperf.nvml import open_nvml\n"
        "from migperf.mig.apply import converge\n"
        "from tests.mig.test_apply import GUIDE, target\n"
        "with open_nvml('a100-40gb') as n:\n"
        "    converge(n, 0, target(n, *GUIDE))\n"
    )
    env = {**os.environ, "MIGPERF_SIM_FAULTS": "nvmlDeviceCreateGpuInstanceWithPlacement@3=crash"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == -9, proc.stderr
    with open_nvml("a100-40gb") as nvml:
        assert not take_snapshot(nvml, 0).same_layout(before)  # half-done
        assert Journal(before.gpu_uuid, machine=nvml.machine).read() is not None
        restore(nvml, 0)
        assert take_snapshot(nvml, 0).same_layout(before)


def test_next_apply_replays_a_crash_journal_first(sim_a100_40gb: Nvml) -> None:
    nvml = sim_a100_40gb
    before = take_snapshot(nvml, 0)
    Journal(before.gpu_uuid, machine=nvml.machine).write(before, None, "crashed run")
    nvml.create_gpu_instance(0, 0)  # the crashed run's half-done work
    result = converge(nvml, 0, target(nvml, GUIDE[0]))
    assert result.recovered is not None and result.recovered.instances == ()
    assert layout_of(nvml) == [GUIDE[0].describe()]


def test_instances_with_processes_are_not_destroyed_without_force(sim_a100_40gb: Nvml) -> None:
    nvml = sim_a100_40gb
    converge(nvml, 0, target(nvml, *GUIDE))
    dev = next(d for d in nvml.mig_devices(0) if "3g" in d.name)
    control.attach_process("a100-40gb", 0, mig_uuid=dev.mig_uuid)
    with pytest.raises(errors.GpuInUseError, match=f"PID {os.getpid()}") as info:
        converge(nvml, 0, empty_target(nvml, 0))
    assert "--force" in info.value.hint
    assert len(nvml.gpu_instances(0)) == 4
    # --force tries; the driver still refuses while the process lives, and the
    # transaction puts everything back.
    with pytest.raises(RolledBackError):
        converge(nvml, 0, empty_target(nvml, 0), force=True)
    assert len(nvml.gpu_instances(0)) == 4
    control.detach_process("a100-40gb", 0, os.getpid())
    converge(nvml, 0, empty_target(nvml, 0))
    assert nvml.gpu_instances(0) == []


def test_a_second_process_gets_the_lock_holder_at_once(sim_a100_40gb: Nvml) -> None:
    uuid = sim_a100_40gb.gpu(0).uuid
    holder = GpuLease(uuid, 0, command="migperf run hold.yaml", machine=sim_a100_40gb.machine)
    holder.acquire()
    try:
        code = (
            "from migperf.nvml import open_nvml\n"
            "from migperf.mig.apply import converge, empty_target\n"
            "with open_nvml('a100-40gb') as n:\n"
            "    converge(n, 0, empty_target(n, 0))\n"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        # The refusal names the holder: its PID and what it runs.
        assert f"GPU 0 is leased by PID {os.getpid()}" in proc.stderr
        assert "`migperf run hold.yaml`" in proc.stderr
    finally:
        holder.release()


def test_read_only_refuses_and_changes_nothing(sim: Callable[..., Nvml]) -> None:
    nvml = sim("a100-40gb", read_only=True)
    with pytest.raises(errors.ReadOnlyError):
        converge(nvml, 0, target(nvml, *GUIDE))
    assert nvml.gpu_instances(0) == []
    assert converge(nvml, 0, target(nvml, *GUIDE), dry_run=True).steps  # planning is fine


def test_mig_disabled_is_refused_with_the_enable_command(sim: Callable[..., Nvml]) -> None:
    nvml = sim("a100-40gb:1:mig-off")
    with pytest.raises(errors.MigNotSupportedError) as info:
        converge(nvml, 0, MigSnapshot(0, nvml.gpu(0).uuid, False, GUIDE))
    assert "migperf mig enable --gpu 0" in info.value.hint


def test_scoped_layout_restores_the_previous_one_even_on_error(sim_a100_40gb: Nvml) -> None:
    nvml = sim_a100_40gb
    converge(nvml, 0, target(nvml, GUIDE[0]))
    with pytest.raises(RuntimeError), applied(nvml, 0, target(nvml, *GUIDE)):
        assert len(nvml.gpu_instances(0)) == 4
        raise RuntimeError("benchmark crashed")
    assert layout_of(nvml) == [GUIDE[0].describe()]


def test_plan_destroys_compute_instances_before_their_gpu_instance() -> None:
    a = MigSnapshot(0, "GPU-x", True, (GUIDE[0],))
    b = MigSnapshot(0, "GPU-x", True, (GUIDE[1],))
    actions = [s.action for s in plan_changes(a, b)]
    assert actions == ["destroy-ci", "destroy-gi", "create-gi", "create-ci"]
