"""``migperf mig ...``: look at and (with the partition manager) change MIG layouts."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from migperf.cli._common import open_for_reading, print_json, stderr, stdout
from migperf.errors import GpuNotFoundError, MigNotSupportedError

app = typer.Typer(help="Inspect MIG profiles and instances.", no_args_is_help=True)

GpuOption = Annotated[
    int | None,
    typer.Option("--gpu", "-i", help="GPU index (default: every GPU).", min=0),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _indices(nvml: object, gpu: int | None) -> list[int]:
    from migperf.nvml.facade import Nvml

    assert isinstance(nvml, Nvml)
    count = nvml.gpu_count()
    if gpu is None:
        return list(range(count))
    if gpu >= count:
        raise GpuNotFoundError(
            f"GPU {gpu} does not exist: this machine has {count} GPU(s)",
            hint="list them with `migperf gpus`",
        )
    return [gpu]


@app.command("profiles")
def profiles(ctx: typer.Context, gpu: GpuOption = None, as_json: JsonOption = False) -> None:
    """GPU-instance profiles and their placements (`nvidia-smi mig -lgip` and `-lgipp`)."""
    out = []
    with open_for_reading(ctx) as nvml:
        for i in _indices(nvml, gpu):
            info = nvml.gpu(i)
            if not info.mig_capable:
                if gpu is not None:
                    raise MigNotSupportedError(
                        f"GPU {i} ({info.name}) does not support MIG",
                        hint="MIG needs an A100, A30, H100, H200, B200 or RTX PRO Blackwell GPU",
                    )
                continue
            out.append((info, nvml.gpu_instance_profiles(i)))
        simulated = nvml.simulated
        # Placements and free counts need root (nvml.h): say so, never show a number.
        missing = {
            info.index: {
                k: v
                for k, v in nvml.unavailable(info.index).items()
                if k in ("placements", "instances_free")
            }
            for info, _ in out
        }
    labels = {"placements": "placements and memory slices", "instances_free": "free counts"}
    for index, gone in missing.items():
        for key, why in gone.items():
            stderr().print(
                f"NOTE: GPU {index}: {labels[key]} unavailable: {why}", markup=False, soft_wrap=True
            )
    if as_json:
        if gpu is not None:
            print_json([p.to_dict() for p in out[0][1]] if out else [])
        else:
            print_json(
                [
                    {
                        "gpu_index": info.index,
                        "name": info.name,
                        "mig_enabled": bool(info.mig_mode and info.mig_mode.current),
                        "simulated": simulated,
                        "profiles": [p.to_dict() for p in profs],
                        "unavailable": missing[info.index],
                    }
                    for info, profs in out
                ]
            )
        return
    from rich.table import Table

    if not out:
        stderr().print("No MIG-capable GPU found.")
        return
    console = stdout()
    for info, profs in out:
        mig_on = bool(info.mig_mode and info.mig_mode.current)
        title = f"GPU {info.index}: {info.name}" + (" (simulated)" if simulated else "")
        table = Table(title=title, title_justify="left")
        for col in (
            "profile",
            "ID",
            "free/total",
            "SMs",
            "memory",
            "slices c/m",
            "CE",
            "DEC",
            "ENC",
            "JPEG",
            "OFA",
            "placements",
        ):
            table.add_column(col, justify="left" if col in ("profile", "placements") else "right")
        for p in profs:
            free = "?" if p.instances_free is None else str(p.instances_free)
            starts = ",".join(str(pl.start) for pl in p.placements)
            size = p.placements[0].size if p.placements else 0
            # No placements: NVML refused them (a NOTE says why); unknown, not 0.
            where = f"{{{starts}}}:{size}" if p.placements else "?"
            table.add_row(
                p.profile,
                str(p.profile_id),
                f"{free}/{p.instances_total}",
                str(p.sm_count),
                f"{p.memory_mib} MiB",
                f"{p.compute_slices}/{p.memory_slices if p.placements else '?'}",
                str(p.engines.copy),
                str(p.engines.decoder),
                str(p.engines.encoder),
                str(p.engines.jpeg),
                str(p.engines.ofa),
                where,
            )
        console.print(table)
        if not mig_on:
            console.print(
                f"MIG mode is disabled on GPU {info.index}: these are the profiles it will offer "
                "once enabled (`migperf mig enable --gpu "
                f"{info.index}`); free counts are unknown until then."
            )


@app.command("show")
def show(ctx: typer.Context, gpu: GpuOption = None, as_json: JsonOption = False) -> None:
    """Current GPU instances, compute instances and MIG devices (`nvidia-smi mig -lgi` / `-lci`)."""
    from migperf.mig.hold import gpu_status

    out = []
    notes: dict[int, str] = {}
    with open_for_reading(ctx) as nvml:
        for i in _indices(nvml, gpu):
            info = nvml.gpu(i)
            out.append((info, nvml.gpu_instances(i) if info.mig_capable else []))
            notes[i] = gpu_status(nvml, i).describe() if info.mig_capable else ""
        simulated = nvml.simulated
        # Listing instances needs root (nvml.h): the view is then rebuilt from MIG
        # devices, and what it lacks is said, not hidden.
        hidden = {info.index: nvml.unavailable(info.index).get("gpu_instances") for info, _ in out}
    for index, why in hidden.items():
        if why:
            stderr().print(
                f"NOTE: GPU {index}: GPU instances unavailable: {why}",
                markup=False,
                soft_wrap=True,
            )
    if as_json:
        print_json(
            [
                {
                    "gpu_index": info.index,
                    "name": info.name,
                    "mig_mode": (
                        {"current": info.mig_mode.current, "pending": info.mig_mode.pending}
                        if info.mig_mode
                        else None
                    ),
                    "simulated": simulated,
                    "status": notes.get(info.index) or None,
                    "instances": [gi.to_dict() for gi in gis],
                    "unavailable": (
                        {"gpu_instances": hidden[info.index]} if hidden[info.index] else {}
                    ),
                }
                for info, gis in out
            ]
        )
        return
    from rich.table import Table

    console = stdout()
    for info, gis in out:
        if notes.get(info.index):
            console.print(f"GPU {info.index}: {notes[info.index]}", markup=False, soft_wrap=True)
        title = f"GPU {info.index}: {info.name}" + (" (simulated)" if simulated else "")
        if info.mig_mode is None:
            console.print(f"{title}: MIG not supported")
            continue
        if not info.mig_mode.current:
            pending = " (pending enable: reset the GPU)" if info.mig_mode.pending else ""
            console.print(f"{title}: MIG disabled{pending}")
            continue
        if not gis:
            if hidden.get(info.index):
                # GPU instances without a compute instance are invisible without root.
                console.print(f"{title}: MIG enabled, no MIG devices visible to this user")
            else:
                console.print(f"{title}: MIG enabled, no GPU instances")
            continue
        table = Table(title=title, title_justify="left")
        for col in (
            "GI",
            "profile",
            "placement",
            "CI",
            "CI profile",
            "SMs",
            "memory",
            "MIG device UUID",
        ):
            table.add_column(
                col, justify="right" if col in ("GI", "CI", "SMs", "memory") else "left"
            )
        for gi in gis:
            placement = str(gi.placement) if gi.placement else "?"
            if not gi.compute_instances:
                table.add_row(
                    str(gi.gi_id), gi.profile, placement, "-", "(no compute instance)", "", "", ""
                )
            for k, ci in enumerate(gi.compute_instances):
                table.add_row(
                    str(gi.gi_id) if k == 0 else "",
                    gi.profile if k == 0 else "",
                    placement if k == 0 else "",
                    str(ci.ci_id),
                    ci.profile,
                    str(ci.sm_count),
                    f"{ci.memory_mib} MiB",
                    ci.mig_uuid,
                )
        console.print(table)


# ----------------------------------------------------------------- changes

GpuTargetOption = Annotated[
    str,
    typer.Option("--gpu", "-i", help="GPU index, or 'all'.", metavar="N|all"),
]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Destroy instances even if processes run on them.")
]


def _targets(nvml: object, gpu: str) -> list[int]:
    from migperf.errors import UsageError

    if gpu.strip().lower() == "all":
        return _indices(nvml, None)
    try:
        index = int(gpu)
    except ValueError:
        raise UsageError(
            f"--gpu {gpu!r} is not a GPU index or 'all'", hint="e.g. --gpu 0 or --gpu all"
        ) from None
    if index < 0:
        raise UsageError(
            f"--gpu {gpu!r} is not a GPU index or 'all'", hint="e.g. --gpu 0 or --gpu all"
        )
    return _indices(nvml, index)


def _print_plan(result: object, *, dry_run: bool) -> None:
    from migperf.mig.apply import ApplyResult

    assert isinstance(result, ApplyResult)
    console = stdout()
    g = result.gpu_index
    if result.recovered is not None:
        console.print(f"GPU {g}: replayed a journal left by an interrupted change first")
    if not result.steps:
        console.print(
            f"GPU {g}: already in the requested layout ({result.before.describe()}); nothing to do"
        )
        return
    head = "would" if dry_run else "did"
    console.print(f"GPU {g}: {result.before.describe()}  ->  {result.after.describe()}")
    for step in result.steps:
        console.print(f"  {head} {step.describe()}")


def _mode_command(ctx: typer.Context, gpu: str, enable: bool, as_json: bool) -> None:
    from migperf.cli._common import open_for_changes
    from migperf.errors import GpuInUseError
    from migperf.mig.hold import hold_gpus

    results = []
    with open_for_changes(ctx) as nvml:
        targets = _targets(nvml, gpu)
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


@app.command("enable")
def enable(ctx: typer.Context, gpu: GpuTargetOption = "all", as_json: JsonOption = False) -> None:
    """Enable MIG mode (`nvidia-smi -i N -mig 1`); explains a pending change."""
    _mode_command(ctx, gpu, True, as_json)


@app.command("disable")
def disable(ctx: typer.Context, gpu: GpuTargetOption = "all", as_json: JsonOption = False) -> None:
    """Disable MIG mode (`nvidia-smi -i N -mig 0`); GPU instances must be destroyed first."""
    _mode_command(ctx, gpu, False, as_json)


@app.command("reset")
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
        for i in _targets(nvml, gpu):
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
            _print_plan(result, dry_run=dry_run)


@app.command("restore")
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
        for i in _targets(nvml, gpu):
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


# ------------------------------------------------------- layouts and apply

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", help="Plan for a GPU model without a GPU (e.g. h100-80gb), instead of --gpu."
    ),
]


def _geometry_and_name(
    ctx: typer.Context, model: str | None, gpu: int | None
) -> tuple[object, str]:
    from migperf.errors import UsageError
    from migperf.mig.solver import MigGeometry
    from migperf.nvml.catalog import get_model

    if model is not None:
        if gpu is not None:
            raise UsageError(
                "--model and --gpu are exclusive",
                hint="plan for a model, or for a GPU of this machine",
            )
        geometry = MigGeometry.for_model(model)
        return geometry, get_model(model).name
    with open_for_reading(ctx) as nvml:
        index = _indices(nvml, gpu if gpu is not None else 0)[0]
        info = nvml.gpu(index)
        return MigGeometry.from_profiles(
            nvml.gpu_instance_profiles(index)
        ), f"GPU {index} ({info.name})"


@app.command("check")
def check(
    ctx: typer.Context,
    layout: Annotated[str, typer.Argument(help="Layout, e.g. '3g.40gb,2g.20gb,1g.10gb*2'.")],
    gpu: GpuOption = None,
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check that a layout fits an empty GPU and show where each instance would go. Changes nothing."""
    from migperf.errors import InsufficientResourcesError
    from migperf.mig.solver import MigGeometry, check_layout

    geometry, where = _geometry_and_name(ctx, model, gpu)
    assert isinstance(geometry, MigGeometry)
    resolved = geometry.resolve(layout)
    result = check_layout(resolved, geometry)
    if as_json:
        print_json(
            {
                "layout": str(resolved),
                "target": where,
                "ok": result.ok,
                "reason": result.reason or None,
                "placements": [
                    {
                        "profile": p.name,
                        "start": p.placement.start,
                        "size": p.placement.size,
                        "compute": [{"start": c.start, "size": c.size} for c in p.compute],
                    }
                    for p in result.placements
                ],
            }
        )
        if not result.ok:
            raise typer.Exit(1)
        return
    if not result.ok:
        raise InsufficientResourcesError(
            f"{resolved} does not fit {where}: {result.reason}", hint=result.hint
        )
    assert result.solution is not None
    stdout().print(f"{resolved} fits {where} as: {result.solution}")


@app.command("layouts")
def layouts(
    ctx: typer.Context,
    gpu: GpuOption = None,
    model: ModelOption = None,
    variants: Annotated[
        bool,
        typer.Option(
            "--variants", help="Include media-engine and graphics variants (+me, -me, +gfx)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Every maximal layout of a GPU (no further instance fits), with a count."""
    from migperf.mig.solver import MigGeometry, enumerate_maximal_layouts

    geometry, where = _geometry_and_name(ctx, model, gpu)
    assert isinstance(geometry, MigGeometry)
    found = enumerate_maximal_layouts(geometry, include_me_variants=variants)
    if as_json:
        print_json({"target": where, "count": len(found), "layouts": [str(x) for x in found]})
        return
    console = stdout()
    kind = "" if variants else " (without +me/-me/+gfx variants; --variants adds them)"
    console.print(f"{len(found)} maximal layouts for {where}{kind}:")
    for x in found:
        console.print(f"  {x}")


@app.command("apply")
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
        for i in _targets(nvml, gpu):
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
                _print_plan(converge(nvml, i, target, dry_run=True, command=command), dry_run=True)
            return
        apply_targets(
            nvml,
            plans,
            force=force,
            command=command,
            on_applied=lambda result: _print_plan(result, dry_run=False),
            on_undone=lambda result: stderr().print(
                f"GPU {result.gpu_index}: restored {result.before.describe()}"
            ),
        )


@app.command("export")
def export(
    ctx: typer.Context,
    gpu: GpuTargetOption = "all",
    name: Annotated[
        str, typer.Option("--name", "-c", help="Config name in the exported file.")
    ] = "current",
) -> None:
    """Print the current layout as a mig-parted `version: v1` config (like `nvidia-mig-parted export`)."""
    from migperf.mig.migparted import export_migparted, migparted_counts

    per_gpu = []
    with open_for_reading(ctx) as nvml:
        for i in _targets(nvml, gpu):
            info = nvml.gpu(i)
            if info.mig_mode is None:
                continue
            gis = nvml.gpu_instances(i)
            counts = migparted_counts(
                (
                    gi.profile,
                    [ci.placement.size if ci.placement else 0 for ci in gi.compute_instances]
                    or None,
                )
                for gi in gis
            )
            per_gpu.append((i, info.pci_device_id, info.mig_mode.current, counts))
    sys.stdout.write(export_migparted(per_gpu, name=name))
