"""Changing a GPU's MIG layout as a transaction, under the GPU's lease.

``converge`` is the one way migperf changes instances: lease the GPU
(:mod:`migperf.mig.lease`; a lease this process already holds nests), put
back what a dead holder left (its journals), snapshot the current state,
write the journal, destroy and create with explicit placements, verify that
the GPU now holds exactly the target, and clear the journal. If anything
fails (an NVML error, a failed verification, Ctrl-C), it rolls back to the
snapshot before re-raising, so the GPU is never left half-partitioned; a
rollback or restore is not cut short by a second Ctrl-C. Only a rollback
that itself fails leaves the journal for ``migperf mig restore``.

:func:`~migperf.mig.hold.hold_gpus` leases several GPUs for a longer change
(an experiment, ``plan --verify``, :func:`apply_targets` on several GPUs)
and records the layouts it found, so a SIGKILLed holder's GPUs are all put
back by the next command that leases any of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from migperf.errors import GpuInUseError, MigNotSupportedError, MigperfError
from migperf.mig.hold import hold_gpus, lease_gpu
from migperf.mig.journal import Journal, OriginalLayout
from migperf.mig.lease import leases
from migperf.mig.recovery import busy_instances, check_recorded_layout, recover, rollback
from migperf.mig.snapshot import MigSnapshot, Step, execute_steps, plan_changes, take_snapshot
from migperf.nvml.facade import Nvml
from migperf.procs import signals_deferred


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
    change_mode: bool = False,
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
        change_mode: Switch MIG mode too when ``target.mig_enabled`` differs
            from the GPU's (an experiment's ``disabled`` layout, and putting
            the original mode back); the switch is a step of the transaction.

    Raises:
        MigNotSupportedError: MIG mode is off and the target has instances
            (and not ``change_mode``), or the GPU has no MIG.
        ResetRequiredError: the mode change would need a GPU reset (nothing
            stays changed).
        GpuInUseError: instances to destroy have processes and not ``force``.
        LockHeldError: another migperf process is changing this GPU.
        RolledBackError: a step or the verification failed; the GPU is back
            in its previous state.
        RollbackFailedError: the rollback failed too; the journal remains.
    """
    info = nvml.gpu(gpu_index)
    mig_on = bool(info.mig_mode and info.mig_mode.current)
    if info.mig_mode is None and (target.instances or target.mig_enabled != mig_on):
        raise MigNotSupportedError(
            f"GPU {gpu_index} ({info.name}) does not support MIG",
            hint="list GPUs with `migperf gpus`",
        )
    if target.instances and not mig_on and not (change_mode and target.mig_enabled):
        raise MigNotSupportedError(
            f"MIG mode is disabled on GPU {gpu_index} ({info.name})",
            hint=f"enable it first with `migperf mig enable --gpu {gpu_index}` "
            f"(nvidia-smi -i {gpu_index} -mig 1)",
        )
    if target.mig_enabled != mig_on and not change_mode:
        if not target.mig_enabled:
            raise MigNotSupportedError(
                f"the target has MIG mode disabled, but MIG mode is enabled on GPU {gpu_index} "
                f"({info.name})",
                hint=f"destroy the instances and disable it with `migperf mig reset --gpu "
                f"{gpu_index}` and `migperf mig disable --gpu {gpu_index}`",
            )
        target = replace(target, mig_enabled=mig_on)  # "no instances" means no change of mode
    journal = Journal(info.uuid, root, nvml.machine, gpu_index)
    if dry_run:
        pending = journal.read()
        before = pending.before if pending else take_snapshot(nvml, gpu_index)
        steps = plan_changes(before, target)
        return ApplyResult(gpu_index, before, target, tuple(steps), dry_run=True)
    if nvml.read_only:
        nvml.require_writable(f"change the MIG layout of GPU {gpu_index}")
    with hold_gpus(nvml, [gpu_index], command=command or "migperf", root=root) as hold:
        recovered = hold.recovered.get(gpu_index)
        pending = journal.read()
        if pending is not None:
            # A change of this very process that failed to roll back.
            check_recorded_layout(nvml, gpu_index, pending.before, journal.path)
            rollback(nvml, gpu_index, pending.before)
            journal.clear()
            recovered = pending.before
        before = take_snapshot(nvml, gpu_index)
        steps = plan_changes(before, target)
        if not steps:
            return ApplyResult(gpu_index, before, before, (), dry_run=False, recovered=recovered)
        if not force:
            busy = busy_instances(nvml, gpu_index, steps)
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
                rollback(nvml, gpu_index, before)
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


def restore(
    nvml: Nvml,
    gpu_index: int,
    *,
    root: Path | None = None,
    discard: bool = False,
    command: str = "migperf mig restore",
) -> ApplyResult | None:
    """Put back the layout an interrupted command left recorded on GPU ``gpu_index``.

    Args:
        nvml: Open NVML.
        gpu_index: The GPU.
        root: migperf's state directory (tests).
        discard: Remove the journals instead of applying them (for one that
            cannot be used, or a layout that is fine as it is).
        command: Recorded as the lease holder.

    Returns:
        What was done, or None when nothing was recorded.

    Raises:
        LockHeldError: another process holds the GPU's lease (a running command's
            journals are not left over: they are still in use).
        JournalCorruptError: a journal cannot be used (nothing is changed).
    """
    info = nvml.gpu(gpu_index)
    journals = (
        Journal(info.uuid, root, nvml.machine, gpu_index),
        OriginalLayout(info.uuid, root, nvml.machine, gpu_index),
    )
    if not any(j.path.exists() for j in journals):
        return None
    nvml.require_writable(f"restore the MIG layout of GPU {gpu_index}")
    before = take_snapshot(nvml, gpu_index)
    lease = lease_gpu(nvml, gpu_index, command=command, root=root)
    with leases([lease]):
        if discard:
            for j in journals:
                j.clear()
            return ApplyResult(gpu_index, before, before, (), dry_run=False)
        restored = recover(nvml, gpu_index, root=root) if lease.fresh else None
        if restored is None:
            return None
        return ApplyResult(
            gpu_index,
            before,
            take_snapshot(nvml, gpu_index),
            tuple(plan_changes(before, restored)),
            dry_run=False,
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
    with hold_gpus(nvml, [gpu_index], command="migperf (scoped layout)", root=root) as hold:
        hold.keep_originals({gpu_index: take_snapshot(nvml, gpu_index)})
        result = converge(
            nvml, gpu_index, target, force=force, root=root, command="migperf (scoped layout)"
        )
        try:
            yield result
        finally:
            with signals_deferred():
                converge(
                    nvml,
                    gpu_index,
                    result.before,
                    force=force,
                    root=root,
                    command="migperf (restore scoped layout)",
                )
            hold.forget_original(gpu_index)


def apply_targets(
    nvml: Nvml,
    targets: list[tuple[int, MigSnapshot]],
    *,
    force: bool = False,
    command: str,
    root: Path | None = None,
    on_applied: Callable[[ApplyResult], None] | None = None,
    on_undone: Callable[[ApplyResult], None] | None = None,
) -> list[ApplyResult]:
    """Partition several GPUs as one transaction: every GPU changed, or every GPU as it was.

    All GPUs are leased first and their layouts recorded, so a crash or
    SIGKILL while changing the second GPU leaves every GPU to be put back by
    the next command that leases any of them, not only the one in flight.

    Args:
        nvml: Open NVML.
        targets: (GPU, the state it should hold), in the order to change them.
        force: Destroy instances even if processes run on them.
        command: Recorded with the lease and the journals.
        root: migperf's state directory (tests).
        on_applied: Told of each GPU changed.
        on_undone: Told of each GPU put back after a later GPU failed.

    Returns:
        One result per GPU, in order.

    Raises:
        LockHeldError: another process holds a GPU's lease (nothing changed).
        MigperfError: a GPU could not be changed; the GPUs already changed were
            put back (see :func:`converge` for the kinds).
    """
    gpus = [g for g, _ in targets]
    with hold_gpus(nvml, gpus, command=command, root=root) as hold:
        hold.keep_originals({g: take_snapshot(nvml, g) for g in gpus})
        done: list[ApplyResult] = []
        try:
            for gpu, target in targets:
                result = converge(nvml, gpu, target, force=force, command=command, root=root)
                done.append(result)
                if on_applied is not None:
                    on_applied(result)
        except BaseException:
            with signals_deferred():
                for result in reversed(done):
                    if result.steps:
                        converge(
                            nvml,
                            result.gpu_index,
                            result.before,
                            force=True,
                            command=f"{command} (undo)",
                            root=root,
                        )
                        if on_undone is not None:
                            on_undone(result)
            # Every GPU is as it was (an undo that failed raised above, keeping the records).
            for gpu in gpus:
                hold.forget_original(gpu)
            raise
        for gpu in gpus:
            hold.forget_original(gpu)
        return done
