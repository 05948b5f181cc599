"""The ``migperf`` command: global options and the top-level commands."""

from __future__ import annotations

from typing import Annotated

import typer

from migperf import __version__
from migperf.cli._common import (
    CliState,
    LazyCommand,
    MigperfGroup,
    open_for_reading,
    print_json,
    stderr,
    stdout,
)

#: Every top-level command, in ``migperf --help`` order, with its line there.
#: A command's module is imported only when that command is used, so
#: ``migperf --help`` and ``migperf gpus`` import none of them (#18; timed by
#: ``benchmarks/cli_start.py``). ``tests/cli/test_lazy_commands.py`` checks
#: that this table names every command and that each line is the real one.
COMMANDS: dict[str, LazyCommand] = {
    "run": LazyCommand(
        "migperf.cli.run:run_command",
        "Run an experiment: each layout in turn, every job on its slices, every result stored.",
    ),
    "report": LazyCommand(
        "migperf.cli.report:report_command",
        "Write an HTML report with plots (PNG and SVG too) and a Markdown summary of stored results.",
    ),
    "compare": LazyCommand(
        "migperf.cli.report:compare_command",
        "Compare two stores (or two config hashes in one store); exit 1 on a regression.",
    ),
    "plan": LazyCommand(
        "migperf.cli.plan:plan_command",
        "Plan MIG layouts: the fewest GPUs that serve every service at its SLO "
        "(from measured capacities).",
    ),
    "compat": LazyCommand(
        "migperf.cli.compat:compat_command",
        "Run the framework and serving-system compatibility matrix on a MIG slice.",
    ),
    "gpus": LazyCommand(
        "migperf.cli.main:gpus", "List GPUs with their memory and MIG mode (like `nvidia-smi -L`)."
    ),
    "mig": LazyCommand("migperf.cli.mig:app", "Inspect MIG profiles and instances."),
    "bench": LazyCommand(
        "migperf.cli.bench:app",
        "Measure training and inference throughput and latency of one workload.",
    ),
    "config": LazyCommand("migperf.cli.run:config_app", "Experiment config files."),
    "results": LazyCommand("migperf.cli.results:results_app", "Look at and export stored results."),
    "sim": LazyCommand(
        "migperf.cli.sim:app", "Run other programs against the simulated GPU (needs --simulate)."
    ),
}


class RootGroup(MigperfGroup):
    """``migperf``: :class:`MigperfGroup` with the commands of :data:`COMMANDS`."""

    lazy_commands = COMMANDS


app = typer.Typer(
    cls=RootGroup,
    name="migperf",
    help="Benchmark deep-learning training and inference on NVIDIA MIG partitions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


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
