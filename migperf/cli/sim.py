"""``migperf sim``: the simulated GPU for other programs."""

from __future__ import annotations

from typing import Annotated

import typer

from migperf.cli._common import state
from migperf.errors import UsageError

app = typer.Typer(
    help="Run other programs against the simulated GPU (needs --simulate).",
    no_args_is_help=True,
)


@app.command(
    "exec",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
def exec_command(
    ctx: typer.Context,
    command: Annotated[
        list[str],
        typer.Argument(
            help="The program and its arguments, after --.", metavar="-- COMMAND [ARGS]..."
        ),
    ],
) -> None:
    """Run COMMAND with `import pynvml` answered by the simulated machine.

    COMMAND and the Python processes it starts see the machine --simulate
    names, over the same state as other migperf commands (a layout made with
    `migperf --simulate SPEC mig apply` is what they see). Exits with
    COMMAND's exit code. Example:

        migperf --simulate a100-80gb:2 sim exec -- nvitop --once
    """
    from migperf.nvml.sim.intercept import run_simulated

    spec = state(ctx).simulate
    if not spec:
        raise UsageError(
            "`migperf sim exec` needs a simulated machine",
            hint="name one with --simulate, e.g. migperf --simulate a100-80gb:2 sim exec -- "
            "nvitop --once",
        )
    raise typer.Exit(run_simulated(spec, command))
