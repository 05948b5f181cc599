"""Changing a GPU's MIG layout as a transaction.

``converge`` is the one way migperf changes instances: take the GPU's lock,
replay any journal a crash left, snapshot the current state, write the
journal, destroy and create with explicit placements, verify that the GPU now
holds exactly the target, and clear the journal. If anything fails (an NVML
error, a failed verification, Ctrl-C), it rolls back to the snapshot before
re-raising, so the GPU is never left half-partitioned. Only a rollback that
itself fails leaves the journal for ``migperf mig restore``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from migperf.errors import GpuInUseError, MigNotSupportedError, MigperfError
from migperf.mig.journal import GpuLock, Journal
from migperf.mig.snapshot import MigSnapshot, Step, execute_steps, plan_changes, take_snapshot
from migperf.nvml.facade import Nvml


@dataclass(frozen=True)
class ApplyResult:
    """What a change did (or, for a dry run, would do)."""

    gpu_index: int
    before: MigSnapshot
    after: MigSnapshot
    steps: tuple[Step, ...]
    dry_run: bool
    recovered: MigSnapshot | None = None  # state restored from a crash journal first


class RolledBackError(MigperfError):
    """A change failed and the GPU was restored to its previous state."""


class RollbackFailedError(MigperfError):
    """A change failed and so did the rollback; a journal was left to replay."""


def _busy_instances(nvml: Nvml, gpu_index: int, steps: list[Step]) -> list[str]:
    """Instances the steps would destroy that have running processes."""
    doomed = {
        (s.instance.profile_id, s.instance.start, s.instance.size)
        for s in steps
        if s.action.startswith("destroy")
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


def _rollback(nvml: Nvml, gpu_index: int, to: MigSnapshot) -> None:
    execute_steps(nvml, gpu_index, plan_changes(take_snapshot(nvml, gpu_index), to))
    if not take_snapshot(nvml, gpu_index).same_layout(to):
        raise MigperfError(f"GPU {gpu_index} does not match the snapshot after rollback")


def converge(
    nvml: Nvml,
    gpu_index: int,
    target: MigSnapshot,
    *,
    force: bool = False,
    dry_run: bool = False,
    command: str = "",
    root: Path | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> ApplyResult:
    """Make GPU ``gpu_index`` hold exactly ``target``'s instances, transactionally.

    Args:
        nvml: An open NVML facade (read-only mode refuses before any change).
        gpu_index: The GPU.
        target: The instances wanted, with explicit placements.
        force: Destroy instances even if processes run on them (the driver
            may still refuse with "in use").
        dry_run: Compute and return the plan; change nothing, take no lock.
        command: Recorded in the journal, for people reading it.
        root: migperf state directory (tests).
        on_step: Called after each completed step (progress display).

    Raises:
        MigNotSupportedError: MIG mode is off and the target has instances.
        GpuInUseError: instances to destroy have processes and not ``force``.
        LockHeldError: another migperf process is changing this GPU.
        RolledBackError: a step or the verification failed; the GPU is back
            in its previous state.
        RollbackFailedError: the rollback failed too; the journal remains.
    """
    info = nvml.gpu(gpu_index)
    if target.instances and not (info.mig_mode and info.mig_mode.current):
        if info.mig_mode is None:
            raise MigNotSupportedError(
                f"GPU {gpu_index} ({info.name}) does not support MIG",
                hint="list GPUs with `migperf gpus`",
            )
        raise MigNotSupportedError(
            f"MIG mode is disabled on GPU {gpu_index} ({info.name})",
            hint=f"enable it first with `migperf mig enable --gpu {gpu_index}` (nvidia-smi -i {gpu_index} -mig 1)",
        )
    journal = Journal(info.uuid, root, nvml.machine)
    if dry_run:
        pending = journal.read()
        before = pending.before if pending else take_snapshot(nvml, gpu_index)
        steps = plan_changes(before, target)
        return ApplyResult(gpu_index, before, target, tuple(steps), dry_run=True)
    if nvml.read_only:
        nvml.require_writable(f"change the MIG layout of GPU {gpu_index}")
    with GpuLock(info.uuid, gpu_index, root, nvml.machine):
        recovered = None
        pending = journal.read()
        if pending is not None:
            _rollback(nvml, gpu_index, pending.before)
            journal.clear()
            recovered = pending.before
        before = take_snapshot(nvml, gpu_index)
        steps = plan_changes(before, target)
        if not steps:
            return ApplyResult(gpu_index, before, before, (), dry_run=False, recovered=recovered)
        if not force:
            busy = _busy_instances(nvml, gpu_index, steps)
            if busy:
                raise GpuInUseError(
                    f"refusing to destroy instances on GPU {gpu_index} that have running processes: "
                    + "; ".join(busy),
                    hint="stop those processes, or pass --force to try anyway",
                )
        journal.write(before, target, command)
        try:
            execute_steps(nvml, gpu_index, steps, on_step)
            after = take_snapshot(nvml, gpu_index)
            if not after.same_layout(target):
                raise MigperfError(
                    f"verification failed on GPU {gpu_index}: wanted {target.describe()}, found {after.describe()}"
                )
        except BaseException as exc:
            reason = (
                exc.message
                if isinstance(exc, MigperfError)
                else (type(exc).__name__ + (f": {exc}" if str(exc) else ""))
            )
            try:
                _rollback(nvml, gpu_index, before)
            except BaseException as rb_exc:  # noqa: BLE001 - any failure keeps the journal
                rb = rb_exc.message if isinstance(rb_exc, MigperfError) else repr(rb_exc)
                raise RollbackFailedError(
                    f"changing GPU {gpu_index} failed ({reason}) and restoring its previous layout failed too ({rb})",
                    hint=f"the journal {journal.path} records the previous layout; replay it with "
                    f"`migperf mig restore --gpu {gpu_index}`",
                ) from exc
            journal.clear()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            hint = exc.hint if isinstance(exc, MigperfError) else ""
            raise RolledBackError(
                f"changing GPU {gpu_index} failed and was rolled back to its previous layout "
                f"({before.describe()}): {reason}",
                hint=hint,
            ) from exc
        journal.clear()
        return ApplyResult(
            gpu_index, before, after, tuple(steps), dry_run=False, recovered=recovered
        )


def restore(nvml: Nvml, gpu_index: int, *, root: Path | None = None) -> ApplyResult | None:
    """Replay the journal a crashed change left on GPU ``gpu_index``.

    Returns:
        What was done, or None when there is no journal.
    """
    info = nvml.gpu(gpu_index)
    journal = Journal(info.uuid, root, nvml.machine)
    pending = journal.read()
    if pending is None:
        return None
    if nvml.read_only:
        nvml.require_writable(f"restore the MIG layout of GPU {gpu_index}")
    with GpuLock(info.uuid, gpu_index, root, nvml.machine):
        pending = journal.read()
        if pending is None:
            return None
        before = take_snapshot(nvml, gpu_index)
        steps = plan_changes(before, pending.before)
        _rollback(nvml, gpu_index, pending.before)
        journal.clear()
        return ApplyResult(
            gpu_index, before, take_snapshot(nvml, gpu_index), tuple(steps), dry_run=False
        )


def empty_target(nvml: Nvml, gpu_index: int) -> MigSnapshot:
    """The target with no instances (``migperf mig reset``)."""
    info = nvml.gpu(gpu_index)
    return MigSnapshot(gpu_index, info.uuid, bool(info.mig_mode and info.mig_mode.current), ())


@contextmanager
def applied(
    nvml: Nvml,
    gpu_index: int,
    target: MigSnapshot,
    *,
    force: bool = False,
    root: Path | None = None,
) -> Iterator[ApplyResult]:
    """Apply ``target`` for the duration of a ``with`` block, then restore the previous layout.

    The benchmark runner uses this so that a sweep always gives the GPU back as
    it found it, also when the block raises or is interrupted.
    """
    result = converge(
        nvml, gpu_index, target, force=force, root=root, command="migperf (scoped layout)"
    )
    try:
        yield result
    finally:
        converge(
            nvml,
            gpu_index,
            result.before,
            force=force,
            root=root,
            command="migperf (restore scoped layout)",
        )
