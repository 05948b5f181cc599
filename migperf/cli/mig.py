"""``migperf mig ...``: look at and (with the partition manager) change MIG layouts."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from migperf.cli import mig_change
from migperf.cli._common import open_for_reading, print_json, stderr, stdout
from migperf.cli.mig_common import GpuOption, GpuTargetOption, JsonOption, gpu_indices, target_gpus
from migperf.errors import MigNotSupportedError

app = typer.Typer(help="Inspect MIG profiles and instances.", no_args_is_help=True)


@app.command("profiles")
def profiles(ctx: typer.Context, gpu: GpuOption = None, as_json: JsonOption = False) -> None:
    """GPU-instance profiles and their placements (`nvidia-smi mig -lgip` and `-lgipp`)."""
    out = []
    with open_for_reading(ctx) as nvml:
        for i in gpu_indices(nvml, gpu):
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
        for i in gpu_indices(nvml, gpu):
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

app.command("enable")(mig_change.enable)
app.command("disable")(mig_change.disable)
app.command("reset")(mig_change.reset)
app.command("restore")(mig_change.restore_cmd)

# ------------------------------------------------------- layouts and apply

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model", help="Plan for a GPU model without a GPU (e.g. h100-80gb), instead of --gpu."
    ),
]


def _targets(ctx: typer.Context, model: str | None, gpu: int | None) -> list[tuple[object, str]]:
    """The geometries to plan on, each with where it came from.

    ``--model``: that model. ``--gpu N``: that GPU. Neither: every MIG-capable GPU
    of this machine, one target per distinct GPU model (``GPUs 0-7 (NVIDIA ...)``),
    since GPUs of one model share one geometry.
    """
    from migperf.errors import UsageError
    from migperf.mig.solver import MigGeometry
    from migperf.mig.solver.explain import index_ranges
    from migperf.nvml.catalog import get_model

    if model is not None:
        if gpu is not None:
            raise UsageError(
                "--model and --gpu are exclusive",
                hint="plan for a model, or for a GPU of this machine",
            )
        return [(MigGeometry.for_model(model), get_model(model).name)]
    with open_for_reading(ctx) as nvml:
        groups: dict[str, tuple[object, list[int]]] = {}
        skipped: list[str] = []
        for index in gpu_indices(nvml, gpu):
            info = nvml.gpu(index)
            if gpu is None and not info.mig_capable:
                skipped.append(f"GPU {index} ({info.name})")
                continue
            if info.name not in groups:
                groups[info.name] = (MigGeometry.from_profiles(nvml.gpu_instance_profiles(index)), [])
            groups[info.name][1].append(index)
    if not groups:
        raise MigNotSupportedError(
            f"no GPU of this machine supports MIG ({', '.join(skipped) or 'no GPUs'})",
            hint="plan for a model without a GPU with --model, e.g. --model h100-80gb",
        )
    out = []
    for name, (geometry, indices) in groups.items():
        label = f"GPU {indices[0]}" if len(indices) == 1 else f"GPUs {','.join(index_ranges(indices))}"
        out.append((geometry, f"{label} ({name})"))
    return out


def _one_or_list(items: list[dict[str, object]], single: bool) -> object:
    """JSON shape by the flags, never by the machine: one object for --gpu/--model, else a list."""
    return items[0] if single else items


@app.command("check")
def check(
    ctx: typer.Context,
    layout: Annotated[str, typer.Argument(help="Layout, e.g. '3g.40gb,2g.20gb,1g.10gb*2'.")],
    gpu: GpuOption = None,
    model: ModelOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check that a layout fits an empty GPU and show where each instance would go. Changes nothing.

    Without --gpu or --model every GPU model of this machine is checked; --json
    then prints a list (one object per GPU model), with --gpu/--model one object.
    """
    from migperf.errors import InsufficientResourcesError
    from migperf.mig.solver import MigGeometry, check_layout

    targets = _targets(ctx, model, gpu)
    docs: list[dict[str, object]] = []
    failures: list[tuple[str, object]] = []
    lines: list[str] = []
    for geometry, where in targets:
        assert isinstance(geometry, MigGeometry)
        resolved = geometry.resolve(layout)
        result = check_layout(resolved, geometry)
        docs.append(
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
        if result.ok:
            assert result.solution is not None
            lines.append(f"{resolved} fits {where} as: {result.solution}")
        else:
            failures.append((f"{resolved} does not fit {where}: {result.reason}", result.hint))
    if as_json:
        print_json(_one_or_list(docs, gpu is not None or model is not None))
        if failures:
            raise typer.Exit(1)
        return
    console = stdout()
    for line in lines:
        console.print(line)
    if failures:
        message = "; ".join(m for m, _ in failures)
        hint = failures[0][1]
        raise InsufficientResourcesError(message, hint=hint if isinstance(hint, str) else "")


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
    """Every maximal layout of a GPU (no further instance fits), with a count.

    Without --gpu or --model: every GPU model of this machine; --json then prints
    a list (one object per GPU model), with --gpu/--model one object.
    """
    from migperf.mig.solver import MigGeometry, enumerate_maximal_layouts

    docs: list[dict[str, object]] = []
    for geometry, where in _targets(ctx, model, gpu):
        assert isinstance(geometry, MigGeometry)
        found = enumerate_maximal_layouts(geometry, include_me_variants=variants)
        docs.append({"target": where, "count": len(found), "layouts": [str(x) for x in found]})
    if as_json:
        print_json(_one_or_list(docs, gpu is not None or model is not None))
        return
    console = stdout()
    kind = "" if variants else " (without +me/-me/+gfx variants; --variants adds them)"
    for doc in docs:
        found_names = doc["layouts"]
        assert isinstance(found_names, list)
        console.print(f"{doc['count']} maximal layouts for {doc['target']}{kind}:")
        for x in found_names:
            console.print(f"  {x}")


app.command("apply")(mig_change.apply)


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
        for i in target_gpus(nvml, gpu):
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
