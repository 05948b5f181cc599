"""A GPU's MIG state as data, and the steps that turn one state into another.

A :class:`MigSnapshot` records what a rollback needs: each GPU instance's
profile and placement, and each compute instance's profile and placement. It
ignores the ids NVML hands out (they are not ours to choose), so two states are
equal when the same instances sit in the same places.

:func:`plan_changes` computes the destroy/create steps from one snapshot to
another, keeping every instance that already matches, and
:func:`execute_steps` performs them with explicit placements, so the result
does not depend on the driver's default placement or on creation order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from migperf.errors import MigperfError, ResetRequiredError
from migperf.nvml.facade import Nvml


@dataclass(frozen=True, order=True)
class ComputeState:
    """One compute instance: CI profile id and placement (in compute slices)."""

    start: int
    size: int
    profile_id: int


@dataclass(frozen=True, order=True)
class InstanceState:
    """One GPU instance: profile, placement (memory slices) and compute instances."""

    start: int
    size: int
    profile_id: int
    profile: str
    compute: tuple[ComputeState, ...]

    @property
    def key(self) -> tuple[int, int, int]:
        """Identity for keeping an instance: (profile id, start, size)."""
        return (self.profile_id, self.start, self.size)

    def describe(self) -> str:
        """``3g.40gb@4[2c,1c]`` style text."""
        cis = ",".join(f"{c.size}c" for c in self.compute)
        return f"{self.profile}@{self.start}" + (f"[{cis}]" if cis else "[no CI]")


@dataclass(frozen=True)
class MigSnapshot:
    """The MIG state of one GPU."""

    gpu_index: int
    gpu_uuid: str
    mig_enabled: bool
    instances: tuple[InstanceState, ...]

    def same_layout(self, other: MigSnapshot) -> bool:
        """Whether both describe the same MIG mode and the same instances in the same places."""
        return self.mig_enabled == other.mig_enabled and sorted(self.instances) == sorted(
            other.instances
        )

    def describe(self) -> str:
        """Human text: ``3g.40gb@4[3c], 1g.10gb@0[1c]``, ``(no instances)`` or ``(MIG disabled)``."""
        if not self.mig_enabled:
            return "(MIG disabled)"
        return ", ".join(i.describe() for i in sorted(self.instances)) or "(no instances)"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (journals)."""
        return {
            "gpu_index": self.gpu_index,
            "gpu_uuid": self.gpu_uuid,
            "mig_enabled": self.mig_enabled,
            "instances": [
                {
                    "profile_id": i.profile_id,
                    "profile": i.profile,
                    "start": i.start,
                    "size": i.size,
                    "compute": [
                        {"profile_id": c.profile_id, "start": c.start, "size": c.size}
                        for c in i.compute
                    ],
                }
                for i in sorted(self.instances)
            ],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MigSnapshot:
        """Inverse of :meth:`to_dict`."""
        return cls(
            gpu_index=int(d["gpu_index"]),
            gpu_uuid=str(d["gpu_uuid"]),
            mig_enabled=bool(d["mig_enabled"]),
            instances=tuple(
                InstanceState(
                    start=int(i["start"]),
                    size=int(i["size"]),
                    profile_id=int(i["profile_id"]),
                    profile=str(i["profile"]),
                    compute=tuple(
                        ComputeState(
                            start=int(c["start"]),
                            size=int(c["size"]),
                            profile_id=int(c["profile_id"]),
                        )
                        for c in i["compute"]
                    ),
                )
                for i in d["instances"]
            ),
        )


def take_snapshot(nvml: Nvml, gpu_index: int) -> MigSnapshot:
    """Record a GPU's current MIG state.

    Raises:
        MigperfError: when placements cannot be read (they need privileges), since
            a snapshot without placements could not be restored.
    """
    info = nvml.gpu(gpu_index)
    instances = []
    for gi in nvml.gpu_instances(gpu_index):
        if gi.placement is None or gi.profile_id is None:
            raise MigperfError(
                f"cannot record the MIG state of GPU {gpu_index}: placements of GPU instances are not readable",
                hint="run as root (NVML lists GPU instances only for privileged users)",
            )
        compute = []
        for ci in gi.compute_instances:
            assert ci.placement is not None and ci.profile_id is not None
            compute.append(
                ComputeState(
                    start=ci.placement.start, size=ci.placement.size, profile_id=ci.profile_id
                )
            )
        instances.append(
            InstanceState(
                start=gi.placement.start,
                size=gi.placement.size,
                profile_id=gi.profile_id,
                profile=gi.profile,
                compute=tuple(sorted(compute)),
            )
        )
    return MigSnapshot(
        gpu_index=gpu_index,
        gpu_uuid=info.uuid,
        mig_enabled=bool(info.mig_mode and info.mig_mode.current),
        instances=tuple(sorted(instances)),
    )


@dataclass(frozen=True)
class Step:
    """One change: destroy or create a GPU or compute instance."""

    action: str  # "destroy-ci", "destroy-gi", "create-gi", "create-ci", "mig-off", "mig-on"
    instance: InstanceState | None = None
    compute: ComputeState | None = None

    def describe(self) -> str:
        """``create 3g.40gb at 4:4`` style text, as a plan shows it."""
        if self.action in ("mig-off", "mig-on"):
            return f"{'disable' if self.action == 'mig-off' else 'enable'} MIG mode"
        i = self.instance
        assert i is not None
        if self.action == "destroy-gi":
            return f"destroy GPU instance {i.profile} at {i.start}:{i.size}"
        if self.action == "create-gi":
            return f"create GPU instance {i.profile} at {i.start}:{i.size}"
        assert self.compute is not None
        verb = "destroy" if self.action == "destroy-ci" else "create"
        return f"{verb} compute instance {self.compute.size}c at {self.compute.start} in {i.profile}@{i.start}"


def plan_changes(current: MigSnapshot, target: MigSnapshot) -> list[Step]:
    """Steps that turn ``current`` into ``target``, keeping what already matches.

    A GPU instance is kept when the same profile sits at the same placement;
    its compute instances are kept when they match exactly too. Destroys come
    first (compute instances before their GPU instance), then creates, largest
    GPU instance first.
    """
    if current.mig_enabled and not target.mig_enabled:
        # Everything goes first: the driver refuses to leave MIG mode with instances.
        return plan_changes(current, replace(target, mig_enabled=True)) + [Step("mig-off")]
    if target.mig_enabled and not current.mig_enabled:
        return [Step("mig-on")] + plan_changes(replace(current, mig_enabled=True), target)
    cur = {i.key: i for i in current.instances}
    tgt = {i.key: i for i in target.instances}
    destroys: list[Step] = []
    creates: list[Step] = []
    for key, inst in sorted(cur.items()):
        if key not in tgt:
            destroys += [Step("destroy-ci", inst, c) for c in inst.compute]
            destroys.append(Step("destroy-gi", inst))
        else:
            want = set(tgt[key].compute)
            destroys += [Step("destroy-ci", inst, c) for c in inst.compute if c not in want]
    for key, inst in sorted(tgt.items(), key=lambda kv: (-kv[1].size, kv[1].start)):
        if key not in cur:
            creates.append(Step("create-gi", inst))
            creates += [Step("create-ci", inst, c) for c in inst.compute]
        else:
            have = set(cur[key].compute)
            creates += [Step("create-ci", inst, c) for c in inst.compute if c not in have]
    return destroys + creates


def execute_steps(
    nvml: Nvml,
    gpu_index: int,
    steps: list[Step],
    on_step: Callable[[Step], None] | None = None,
) -> None:
    """Perform ``steps`` in order with explicit placements.

    GPU-instance ids are looked up from the current state by placement before
    each step, because NVML assigns them.

    Raises:
        MigperfError: the first step that fails; earlier steps stay done (the
            caller rolls back).
    """
    for step in steps:
        if step.action in ("mig-off", "mig-on"):
            _set_mode(nvml, gpu_index, step.action == "mig-on")
            if on_step is not None:
                on_step(step)
            continue
        inst = step.instance
        assert inst is not None
        if step.action == "create-gi":
            nvml.create_gpu_instance(gpu_index, inst.profile_id, inst.start, inst.size)
        else:
            gi_id = _gi_id_at(nvml, gpu_index, inst)
            if step.action == "destroy-gi":
                nvml.destroy_gpu_instance(gpu_index, gi_id)
            elif step.action == "create-ci":
                assert step.compute is not None
                nvml.create_compute_instance(
                    gpu_index, gi_id, step.compute.profile_id, step.compute.start
                )
            elif step.action == "destroy-ci":
                assert step.compute is not None
                nvml.destroy_compute_instance(
                    gpu_index, gi_id, _ci_id_at(nvml, gpu_index, gi_id, step.compute)
                )
            else:  # pragma: no cover - programming error
                raise ValueError(step.action)
        if on_step is not None:
            on_step(step)


def _gi_id_at(nvml: Nvml, gpu_index: int, inst: InstanceState) -> int:
    for gi in nvml.gpu_instances(gpu_index):
        if (
            gi.placement is not None
            and (gi.profile_id, gi.placement.start, gi.placement.size) == inst.key
        ):
            return gi.gi_id
    raise MigperfError(
        f"GPU instance {inst.profile} at {inst.start}:{inst.size} disappeared from GPU {gpu_index}",
        hint="another tool changed the GPU meanwhile; check `migperf mig show`",
    )


def _ci_id_at(nvml: Nvml, gpu_index: int, gi_id: int, c: ComputeState) -> int:
    for gi in nvml.gpu_instances(gpu_index):
        if gi.gi_id != gi_id:
            continue
        for ci in gi.compute_instances:
            if ci.placement is not None and (
                ci.profile_id,
                ci.placement.start,
                ci.placement.size,
            ) == (
                c.profile_id,
                c.start,
                c.size,
            ):
                return ci.ci_id
    raise MigperfError(
        f"compute instance {c.size}c at {c.start} disappeared from GPU instance {gi_id} on GPU {gpu_index}",
        hint="another tool changed the GPU meanwhile; check `migperf mig show`",
    )


def _set_mode(nvml: Nvml, gpu_index: int, enabled: bool) -> None:
    """Switch MIG mode now, or take the request back and say why it cannot happen now.

    Raises:
        ResetRequiredError: the driver keeps the change pending until a GPU
            reset (the GPU is in use, or the GPU needs one); migperf never resets
            a GPU, so the request is withdrawn and nothing stays pending.
    """
    mode, status = nvml.set_mig_mode(gpu_index, enabled)
    if mode.current == enabled:
        return
    nvml.set_mig_mode(gpu_index, not enabled)  # withdraw: nothing may stay pending
    want = "enable" if enabled else "disable"
    raise ResetRequiredError(
        f"cannot {want} MIG mode on GPU {gpu_index} now: the driver keeps the change pending "
        f"until the GPU is reset (activation status {status}), and migperf never resets a GPU",
        hint=f"stop every process on the GPU (nvidia-persistenced, DCGM included) and have an "
        f"administrator run `sudo nvidia-smi -i {gpu_index} -mig {int(enabled)}` and "
        f"`sudo nvidia-smi --gpu-reset -i {gpu_index}`; or leave `disabled` out of the layouts",
    )
