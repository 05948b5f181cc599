"""The ``migperf mig`` commands that change a GPU: enable, disable, reset, restore, apply.

Each leases the GPUs it touches (:mod:`migperf.mig.lease`) and changes them as
one transaction through :mod:`migperf.mig.apply`; read-only mode refuses them
before they look at anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from migperf.cli._common import open_for_reading, print_json, stderr, stdout
from migperf.cli.mig_common import (
    DryRunOption,
    ForceOption,
    GpuTargetOption,
    JsonOption,
    print_plan,
    target_gpus,
)
from migperf.errors import MigNotSupportedError

__all__ = ["apply", "disable", "enable", "reset", "restore_cmd"]


def _mode_command(ctx: typer.Context, gpu: str, enable: bool, as_json: bool) -> None:
    from migperf.cli._common import open_for_changes
    from migperf.errors import GpuInUseError
    from migperf.mig.hold import hold_gpus

    results = []
    with open_for_changes(ctx) as nvml:
        targets = target_gpus(nvml, gpu)
        for i in targets:
            info = nvml.gpu(i)
            if not info.mig_capable:
                raise MigNotSupportedError(
                    f"GPU {i} ({info.name}) does not support MIG",
                    hint="choose a MIG-capable GPU with --gpu (see `migperf gpus`)",
                )
        command = f"migperf mig {'enable' if enable else 'disable'}"
        with hold_gpus(nvml, targets, command=command):
            for i in targets:
                if not enable and nvml.gpu_instances(i):
                    raise GpuInUseError(
                        f"cannot disable MIG on GPU {i}: it has {len(nvml.gpu_instances(i))} GPU instance(s)",
                        hint=f"destroy them first with `migperf mig reset --gpu {i}`",
                    )
                mode, status = nvml.set_mig_mode(i, enable)
                results.append((i, mode, status))
    want = "enable" if enable else "disable"
    if as_json:
        print_json(
            [
                {
                    "gpu_index": i,
                    "mig_mode": {"current": m.current, "pending": m.pending},
                    "activation_status": s,
                }
                for i, m, s in results
            ]
        )
    for i, mode, status in results:
        if mode.current == enable:
            if not as_json:
                stdout().print(f"GPU {i}: MIG mode {want}d")
            continue
        reason = (
            "the GPU is in use by another client" if status == 19 else f"activation status {status}"
        )
        stderr().print(
            f"WARNING: GPU {i}: MIG mode is pending {want} ({reason}). It takes effect after a GPU reset: "
            f"stop every process using the GPU (including nvidia-persistenced and DCGM), then run "
            f"`sudo nvidia-smi --gpu-reset -i {i}`, or reboot.",
            soft_wrap=True,
        )


def enable(ctx: typer.Context, gpu: GpuTargetOption = "all", as_json: JsonOption = False) -> None:
    """Enable MIG mode (`nvidia-smi -i N -mig 1`); explains a pending change."""
    _mode_command(ctx, gpu, True, as_json)


def disable(ctx: typer.Context, gpu: GpuTargetOption = "all", as_json: JsonOption = False) -> None:
    """Disable MIG mode (`nvidia-smi -i N -mig 0`); GPU instances must be destroyed first."""
    _mode_command(ctx, gpu, False, as_json)


def reset(
    ctx: typer.Context,
    gpu: GpuTargetOption = "all",
    force: ForceOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Destroy every GPU and compute instance, transactionally (`nvidia-smi mig -dci; -dgi`)."""
    from migperf.cli._common import open_for_changes
    from migperf.mig.apply import converge, empty_target

    opener = open_for_reading if dry_run else open_for_changes
    with opener(ctx) as nvml:
        for i in target_gpus(nvml, gpu):
            if nvml.mig_mode(i) is None:
                continue
            result = converge(
                nvml,
                i,
                empty_target(nvml, i),
                force=force,
                dry_run=dry_run,
                command="migperf mig reset",
            )
            print_plan(result, dry_run=dry_run)


def restore_cmd(
    ctx: typer.Context,
    gpu: GpuTargetOption = "all",
    discard: Annotated[
        bool,
        typer.Option(
            "--discard",
            help="Remove the journals instead of applying them (one that cannot be used, or "
            "a layout that is fine as it is).",
        ),
    ] = False,
) -> None:
    """Put back the layout an interrupted command left recorded (its journals), per GPU."""
    from migperf.cli._common import open_for_changes
    from migperf.mig.apply import restore

    with open_for_changes(ctx) as nvml:
        for i in target_gpus(nvml, gpu):
            if nvml.mig_mode(i) is None:
                continue
            result = restore(nvml, i, discard=discard)
            if result is None:
                stdout().print(f"GPU {i}: no journal; nothing to restore")
            elif discard:
                stdout().print(
                    f"GPU {i}: journals discarded; the GPU keeps {result.after.describe()}"
                )
            else:
                stdout().print(f"GPU {i}: restored {result.after.describe()}")


def apply(
    ctx: typer.Context,
    layout: Annotated[
        str | None,
        typer.Argument(help="Layout, e.g. '3g.40gb,2g.20gb,1g.10gb*2' or '7g.80gb[1c*7]'."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-f", help="A mig-parted `version: v1` file instead of LAYOUT."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", "-c", help="The config to apply from --config.")
    ] = None,
    gpu: GpuTargetOption = "all",
    force: ForceOption = False,
    dry_run: DryRunOption = False,
) -> None:
    """Partition GPUs into a layout as one transaction: all of it, or the previous layout back."""
    from migperf.cli._common import open_for_changes
    from migperf.errors import UsageError

    if (layout is None) == (config is None):
        raise UsageError(
            "give either a LAYOUT or --config FILE",
            hint="e.g. `migperf mig apply '3g.40gb,2g.20gb,1g.10gb*2' --gpu 0` or `migperf mig apply -f cfg.yaml -c all-balanced`",
        )
    opener = open_for_reading if dry_run else open_for_changes
    with opener(ctx) as nvml:
        from migperf.mig.apply import apply_targets, converge
        from migperf.mig.manager import target_for_layout

        plans = []  # validated for every GPU before any GPU changes
        for i in target_gpus(nvml, gpu):
            info = nvml.gpu(i)
            wanted_layout: object = layout
            if config is not None:
                from migperf.mig.migparted import layout_for_gpu, load_migparted, select_config

                entries = select_config(load_migparted(config), name)
                wanted = layout_for_gpu(entries, i, info.pci_device_id)
                if wanted is None:
                    continue
                mig_enabled, wanted_layout = wanted
                if not mig_enabled:
                    if info.mig_mode is not None and info.mig_mode.current:
                        raise UsageError(
                            f"{config}: the config disables MIG on GPU {i}",
                            hint=f"run `migperf mig reset --gpu {i}` then `migperf mig disable --gpu {i}`",
                        )
                    continue
            if not info.mig_capable:
                raise MigNotSupportedError(
                    f"GPU {i} ({info.name}) does not support MIG", hint="choose a GPU with --gpu"
                )
            plans.append((i, target_for_layout(nvml, i, wanted_layout)))  # type: ignore[arg-type]
        command = f"migperf mig apply {layout or config}"
        if dry_run:
            for i, target in plans:
                print_plan(converge(nvml, i, target, dry_run=True, command=command), dry_run=True)
            return
        apply_targets(
            nvml,
            plans,
            force=force,
            command=command,
            on_applied=lambda result: print_plan(result, dry_run=False),
            on_undone=lambda result: stderr().print(
                f"GPU {result.gpu_index}: restored {result.before.describe()}"
            ),
        )
