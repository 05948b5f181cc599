"""``migperf compat``: which frameworks and servers work on a MIG slice.

Runs :func:`migperf.compat.run_matrix` on one device (a MIG device, a GPU, or
the simulated GPU), stores the rows in the results store, and prints them as
a table or as JSON. Exit code 1 when a check failed unexpectedly (``fail``);
``expected-fail`` and ``skipped`` rows do not fail the command. Nothing here
changes a GPU, so it runs in read-only mode too. Frameworks are imported only
in the check processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from migperf.cli._common import (
    DEFAULT_RESULTS,
    ResultsOption,
    open_for_reading,
    print_json,
    stderr,
    stdout,
)

if TYPE_CHECKING:
    from migperf.compat import CompatMatrix
    from migperf.results.compat import CompatRow

_STYLE = {"pass": "green", "fail": "bold red", "expected-fail": "yellow", "skipped": "dim"}


def compat_command(
    ctx: typer.Context,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            "-d",
            help="MIG-<uuid> or a GPU index (default: the first MIG device, else GPU 0; "
            "the simulated GPU with --simulate).",
        ),
    ] = None,
    second_device: Annotated[
        str | None,
        typer.Option(
            "--second-device",
            help="The other device of the two-device checks (default: another MIG device "
            "of the same GPU, else the next GPU).",
        ),
    ] = None,
    frameworks: Annotated[
        list[str] | None,
        typer.Option(
            "--framework",
            "-F",
            help="Only these (repeatable or comma-separated): pytorch, torch.compile, "
            "onnxruntime, jax, tensorflow, paddle, http-torchscript, ray-serve, triton.",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Each check's time limit in seconds.")
    ] = 120.0,
    pythonpath: Annotated[
        list[Path] | None,
        typer.Option(
            "--pythonpath",
            help="A folder to put first on the check processes' PYTHONPATH (repeatable), "
            "e.g. a framework build to test instead of the installed one.",
        ),
    ] = None,
    results: ResultsOption = DEFAULT_RESULTS,
    no_store: Annotated[
        bool, typer.Option("--no-store", help="Do not keep the matrix in the results store.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Run the framework and serving-system compatibility matrix on a MIG slice.

    Each framework's checks run in processes of their own, pinned to the device
    by CUDA_VISIBLE_DEVICES: import, devices seen, a small model's inference and
    training, two devices exposed, data-parallel across them, and an allocation
    past the device's memory. Verdicts: pass, fail (the error), expected-fail (a
    limitation NVIDIA documents), skipped (why). Exit 1 when a check failed.
    """
    from migperf.compat import choose_target, resolve_frameworks, run_matrix

    names = [n.strip() for item in frameworks or [] for n in item.split(",") if n.strip()]
    chosen = [f.key for f in resolve_frameworks(names)]  # a bad name fails before NVML opens
    with open_for_reading(ctx) as nvml:
        target = choose_target(nvml, device, second_device)
    err = stderr()
    if not as_json:
        err.print(
            f"compat matrix on {target.first.label} ({target.first.name})"
            + (f", second device {target.second.label}" if target.second else "")
            + f": {len(chosen)} framework(s), each check within {timeout:g} s",
            markup=False,
            soft_wrap=True,
        )

    def progress(row: CompatRow) -> None:
        if not as_json:
            err.print(f"  {row.framework} {row.check_name}: {row.verdict}", markup=False)

    matrix = run_matrix(
        target, chosen, timeout_s=timeout, extra_path=pythonpath or (), on_row=progress
    )
    stored = None
    if not no_store:
        from migperf.results.store import ResultsStore

        with ResultsStore(results) as store:
            store.record_compat(matrix.rows)
        stored = results
    if as_json:
        data = matrix.to_dict()
        data["results"] = str(stored) if stored else None
        print_json(data)
    else:
        print_matrix(matrix)
        counts = ", ".join(f"{n} {v}" for v, n in matrix.counts().items())
        where = f"; stored as {matrix.session} in {stored}" if stored else ""
        err.print(f"{counts}{where}", markup=False, soft_wrap=True)
    if matrix.failed:
        raise typer.Exit(1)


def print_matrix(matrix: CompatMatrix) -> None:
    """The matrix as a table: one row per check; a framework, its version and a
    repeated reason are said once."""
    from rich.markup import escape
    from rich.table import Table

    t = matrix.target
    title = f"compat {matrix.session}: {t.first.label} ({t.first.name})"
    if t.second:
        title += f"; second device {t.second.label}"
    if t.simulated:
        title += "\nSIMULATED: checks ran on the CPU; a pass here says nothing about a MIG slice"
    table = Table(title=escape(title), title_justify="left")
    for col in ("framework", "version", "check", "verdict", "sim", "wall s", "detail"):
        table.add_column(col, justify="right" if col == "wall s" else "left", overflow="fold")
    previous: tuple[str, str | None] | None = None
    for r in matrix.rows:
        first = previous is None or previous[0] != r.framework
        same = previous == (r.framework, r.detail) and r.verdict == "skipped"
        previous = (r.framework, r.detail)
        style = _STYLE[r.verdict]
        table.add_row(
            escape(r.framework) if first else "",
            escape(r.framework_version or "") if first else "",
            r.check_name,
            f"[{style}]{r.verdict}[/]",
            "yes" if r.simulated else "",
            "" if r.wall_s is None else f"{r.wall_s:.2f}",
            '"' if same else escape(r.detail or ""),
        )
    stdout().print(table)
