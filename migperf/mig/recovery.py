"""Putting back what a migperf process left half-done: its change in flight, its recorded layout.

A dead lease holder (:mod:`migperf.mig.lease`) may leave two journals
(:mod:`migperf.mig.journal`). :func:`recover` checks that each describes a
layout this GPU can hold, waits for the holder's dying workers to leave their
slices, and rolls the GPU back, through Ctrl-C.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from migperf.errors import GpuInUseError, MigperfError
from migperf.mig.journal import Journal, OriginalLayout, corrupt
from migperf.mig.snapshot import MigSnapshot, Step, execute_steps, plan_changes, take_snapshot
from migperf.nvml.facade import Nvml
from migperf.procs import signals_deferred

__all__ = [
    "IDLE_WAIT_S",
    "Recovered",
    "busy_instances",
    "check_recorded_layout",
    "recover",
    "rollback",
]

#: ``on_recover(gpu_index, layout, command)``: a dead holder's layout was put back.
Recovered = Callable[[int, MigSnapshot, str], None]


def busy_instances(nvml: Nvml, gpu_index: int, steps: list[Step]) -> list[str]:
    """Instances the steps would destroy that have running processes, described for people."""
    doomed = {
        (s.instance.profile_id, s.instance.start, s.instance.size)
        for s in steps
        if s.action.startswith("destroy") and s.instance is not None
    }
    if not doomed:
        return []
    busy = []
    for gi in nvml.gpu_instances(gpu_index):
        if (
            gi.placement is None
            or (gi.profile_id, gi.placement.start, gi.placement.size) not in doomed
        ):
            continue
        for ci in gi.compute_instances:
            if not ci.mig_uuid:
                continue
            pids = [p.pid for p in nvml.processes(gpu_index, ci.mig_uuid)]
            if pids:
                busy.append(
                    f"{gi.profile} at {gi.placement} (GI {gi.gi_id}): PID {', '.join(map(str, pids))}"
                )
    return busy


def rollback(nvml: Nvml, gpu_index: int, to: MigSnapshot) -> None:
    """Make the GPU hold ``to`` again, through Ctrl-C, and check that it does.

    Raises:
        MigperfError: a step failed, or the GPU does not match ``to`` afterwards.
    """
    with signals_deferred():
        execute_steps(nvml, gpu_index, plan_changes(take_snapshot(nvml, gpu_index), to))
    if not take_snapshot(nvml, gpu_index).same_layout(to):
        raise MigperfError(f"GPU {gpu_index} does not match the snapshot after rollback")


def check_recorded_layout(nvml: Nvml, gpu_index: int, layout: MigSnapshot, path: Path) -> None:
    """Refuse a journal's layout that this GPU cannot hold, before anything is destroyed.

    Raises:
        JournalCorruptError: another GPU's layout, an unknown profile, a
            placement the profile does not allow, or overlapping instances.
    """
    info = nvml.gpu(gpu_index)
    if layout.gpu_uuid != info.uuid:
        raise corrupt(path, gpu_index, f"it is for GPU {layout.gpu_uuid}, not {info.uuid}")
    if not layout.instances:
        return
    profiles = {p.profile_id: p for p in nvml.gpu_instance_profiles(gpu_index)}
    used: set[int] = set()
    for inst in layout.instances:
        profile = profiles.get(inst.profile_id)
        if profile is None:
            raise corrupt(path, gpu_index, f"GPU {gpu_index} has no profile {inst.profile_id}")
        if (inst.start, inst.size) not in {(p.start, p.size) for p in profile.placements}:
            raise corrupt(
                path, gpu_index, f"{profile.profile} cannot start at memory slice {inst.start}"
            )
        slices = set(range(inst.start, inst.start + inst.size))
        if slices & used:
            raise corrupt(path, gpu_index, "its instances overlap")
        used |= slices


#: How long a recovery waits for a dead holder's workers to leave their slices.
IDLE_WAIT_S = 15.0


def await_idle(nvml: Nvml, gpu_index: int, steps: list[Step]) -> None:
    """Wait until the instances ``steps`` destroy have no process left, or say who holds them.

    A SIGKILLed holder's workers die with it, but not in the same instant: the
    driver lists a process until its context is torn down.

    Raises:
        GpuInUseError: processes still run on them after :data:`IDLE_WAIT_S`.
    """
    deadline = time.monotonic() + IDLE_WAIT_S
    while True:
        busy = busy_instances(nvml, gpu_index, steps)
        if not busy:
            return
        if time.monotonic() > deadline:
            raise GpuInUseError(
                f"cannot put back the recorded layout of GPU {gpu_index}: processes still run on "
                "instances it would destroy: " + "; ".join(busy),
                hint="stop those processes, then run `migperf mig restore`",
            )
        time.sleep(0.1)


def recover(
    nvml: Nvml, gpu_index: int, *, root: Path | None = None, on_recover: Recovered | None = None
) -> MigSnapshot | None:
    """Put back what a dead lease holder left on a GPU: its change in flight, then its original layout.

    Call with the GPU's lease held. Runs to the end even through Ctrl-C.

    Returns:
        The layout put back, or None when nothing was pending.

    Raises:
        JournalCorruptError: a journal cannot be used (nothing is changed).
        MigperfError: the layout could not be put back (the journals stay).
    """
    info = nvml.gpu(gpu_index)
    journal = Journal(info.uuid, root, nvml.machine, gpu_index)
    original = OriginalLayout(info.uuid, root, nvml.machine, gpu_index)
    pending = journal.read()
    kept = original.read()
    if pending is None and kept is None:
        return None
    if pending is not None:
        check_recorded_layout(nvml, gpu_index, pending.before, journal.path)
    if kept is not None:
        check_recorded_layout(nvml, gpu_index, kept[0], original.path)
    nvml.require_writable(f"restore the MIG layout of GPU {gpu_index}")
    for layout in (pending.before if pending else None, kept[0] if kept else None):
        if layout is not None:
            await_idle(nvml, gpu_index, plan_changes(take_snapshot(nvml, gpu_index), layout))
    restored = None
    for layout, done in (
        (pending.before if pending else None, journal.clear),
        (kept[0] if kept else None, original.clear),
    ):
        if layout is None:
            continue
        try:
            rollback(nvml, gpu_index, layout)
        except MigperfError as exc:
            raise MigperfError(
                f"GPU {gpu_index} holds a layout an interrupted migperf command left, and putting "
                f"back the recorded one ({layout.describe()}) failed: {exc.message}",
                hint=f"retry with `migperf mig restore --gpu {gpu_index}`; if the GPU is as it "
                f"should be, drop the record with `migperf mig restore --gpu {gpu_index} --discard`",
            ) from exc
        done()
        restored = layout
    if restored is not None and on_recover is not None:
        on_recover(gpu_index, restored, kept[1] if kept else pending.command if pending else "")
    return restored
