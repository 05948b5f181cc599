"""The ``migperf`` command: global options and the top-level commands."""

from __future__ import annotations

from typing import Annotated

import typer

from migperf import __version__
from migperf.cli import bench, mig, report, results, run
from migperf.cli import compat as compat_cli
from migperf.cli import plan as plan_cli
from migperf.cli import sim as sim_cli
from migperf.cli._common import (
    CliState,
    MigperfGroup,
    open_for_reading,
    print_json,
    stderr,
    stdout,
)

app = typer.Typer(
    cls=MigperfGroup,
    name="migperf",
    help="Benchmark deep-learning training and inference on NVIDIA MIG partitions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(mig.app, name="mig")
app.add_typer(bench.app, name="bench")
app.add_typer(run.config_app, name="config")
app.add_typer(results.results_app, name="results")
app.add_typer(sim_cli.app, name="sim")
app.command("run")(run.run_command)
app.command("report")(report.report_command)
app.command("compare")(report.compare_command)
app.command("plan")(plan_cli.plan_command)
app.command("compat")(compat_cli.compat_command)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"migperf {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    ctx: typer.Context,
    simulate: Annotated[
        str | None,
        typer.Option(
            "--simulate",
            envvar="MIGPERF_SIMULATE",
            metavar="MODEL[:COUNT][:mig-off]",
            help="Use a simulated GPU machine instead of the driver, e.g. a100-80gb:8. "
            "Models: a100-40gb, a100-80gb, a30, h100-80gb, h100-nvl, h200, rtx-pro-6000, l4.",
        ),
    ] = None,
    read_only: Annotated[
        bool,
        typer.Option(
            "--read-only",
            envvar="MIGPERF_READ_ONLY",
            help="Refuse every command that would change a GPU (MIG mode, instances).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    ctx.obj = CliState(simulate=simulate or None, read_only=read_only or None)


@app.command("gpus")
def gpus(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """List GPUs with their memory and MIG mode (like `nvidia-smi -L`)."""
    from migperf.mig.hold import gpu_status

    with open_for_reading(ctx) as nvml:
        infos = nvml.gpus()
        simulated = nvml.simulated
        notes = {
            g.index: gpu_status(nvml, g.index).describe() if g.mig_capable else "" for g in infos
        }
        # What NVML would not tell this user (the whole GPU's memory in MIG mode
        # needs root): said, never shown as a number.
        missing = {g.index: nvml.unavailable(g.index) for g in infos}
    for index, gone in missing.items():
        if "memory_mib" in gone:
            stderr().print(
                f"NOTE: GPU {index}: memory unavailable: {gone['memory_mib']}",
                markup=False,
                soft_wrap=True,
            )
    if as_json:
        print_json(
            [
                dict(
                    g.to_dict(),
                    simulated=simulated,
                    status=notes[g.index] or None,
                    unavailable={k: v for k, v in missing[g.index].items() if k == "memory_mib"},
                )
                for g in infos
            ]
        )
        return
    from rich.table import Table

    title = "GPUs" + (" (simulated)" if simulated else "")
    table = Table(title=title, title_justify="left")
    for col in ("#", "name", "UUID", "memory", "MIG mode", "MIG devices"):
        table.add_column(col, justify="right" if col in ("#", "memory", "MIG devices") else "left")
    for g in infos:
        if g.mig_mode is None:
            mode = "not supported"
        elif g.mig_mode.is_pending_change:
            mode = f"{'on' if g.mig_mode.current else 'off'} (pending {'on' if g.mig_mode.pending else 'off'}: reset needed)"
        else:
            mode = "on" if g.mig_mode.current else "off"
        mem = f"{g.memory_mib} MiB" if g.memory_mib is not None else "n/a"
        table.add_row(
            str(g.index), g.name, g.uuid, mem, mode, str(g.mig_devices) if g.mig_capable else "-"
        )
    stdout().print(table)
    for index, note in notes.items():
        if note:
            stdout().print(f"GPU {index}: {note}", markup=False, soft_wrap=True)


def main() -> None:
    """Console-script entry point."""
    app()
