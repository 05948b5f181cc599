"""``migperf report`` and ``migperf compare``.

Both read a results store only; neither touches a GPU. matplotlib, pandas and
scipy are imported inside the commands, so ``migperf --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from migperf.cli._common import DEFAULT_RESULTS, ResultsOption, print_json, stderr, stdout


def report_command(
    results: ResultsOption = DEFAULT_RESULTS,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Report folder (default: a 'report' folder next to the store): new, empty, or "
            "an earlier migperf report's, whose files are replaced.",
        ),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            metavar="KEY=VALUE",
            help="Only runs whose column KEY is VALUE (repeatable; a repeated KEY means any "
            "of its values), e.g. workload=resnet50, profile=1g.10gb, sharing=mps, status=ok.",
        ),
    ] = None,
) -> None:
    """Write an HTML report with plots (PNG and SVG too) and a Markdown summary of stored results."""
    from migperf.report.data import parse_filters
    from migperf.report.page import build_report

    chosen = parse_filters(filters or [])
    folder = out if out is not None else results.parent / "report"
    report = build_report(results, folder, chosen)
    err = stderr()
    drawn = [f.name for f in report.families if f.plots]
    err.print(
        f"wrote {report.html_path} ({report.plot_count} plot(s): {', '.join(drawn) or 'none'}), "
        f"{report.markdown_path} and {len(report.plot_files)} PNG/SVG file(s) in "
        f"{report.out_dir / 'plots'}",
        soft_wrap=True,
    )
    err.print(
        f"{report.runs} run(s)"
        + (f", {report.not_ok} not ok (listed with their reasons)" if report.not_ok else "")
        + (
            "; SIMULATED results: plots are watermarked 'simulated GPU (emulated on CPU)'"
            if report.simulated
            else ""
        ),
        soft_wrap=True,
    )


def compare_command(
    a: Annotated[
        str, typer.Argument(metavar="A", help="Side A (before): a results store, or a config hash.")
    ],
    b: Annotated[
        str, typer.Argument(metavar="B", help="Side B (after): a results store, or a config hash.")
    ],
    results: ResultsOption = DEFAULT_RESULTS,
    threshold: Annotated[
        float,
        typer.Option("--threshold", help="Smallest relative change that counts (0.05 = 5 %)."),
    ] = 0.05,
    alpha: Annotated[
        float, typer.Option("--alpha", help="Significance level of Welch's t-test.")
    ] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Compare two stores (or two config hashes in one store); exit 1 on a regression.

    Runs are matched by GPU, layout, profile, workload, task, precision, batch size,
    sequence length, model arguments, scenario, sharing and role, across repeats.
    Throughput and p50/p99 latency changes are tested with Welch's t-test (over the
    repeats, or over the raw latency samples when there is one repeat). Exit code 1
    when a change goes the bad way by more than --threshold with p < --alpha, or a
    run ok in A fails in B; 0 otherwise. Runs on one side only are listed.
    """
    from migperf.report.compare import compare_results, resolve_sides

    side_a, side_b = resolve_sides(a, b, results)
    comparison = compare_results(side_a, side_b, threshold=threshold, alpha=alpha)
    if as_json:
        print_json(comparison.to_dict())
    else:
        _print_comparison(comparison)
    if comparison.regressed:
        raise typer.Exit(1)


_STYLE = {
    "regression": "bold red",
    "improvement": "green",
    "not significant": "yellow",
    "untested": "yellow",
}


def _print_comparison(c: Any) -> None:
    from rich.table import Table

    from migperf.report.compare import run_label

    console = stdout()
    gpus = c.gpus
    one_gpu = len(gpus) <= 1

    def label(key: dict[str, Any]) -> str:
        return run_label(key, gpu=not one_gpu)

    table = Table(
        title=f"A = {c.a.label}\nB = {c.b.label}\n"
        + (f"GPU {gpus[0]}; " if one_gpu and gpus else "")
        + f"{c.matched} matched run(s); regression = worse by more than {c.threshold:.0%} "
        f"with p < {c.alpha:g}",
        title_justify="left",
    )
    for col in ("run", "metric", "A", "B", "change", "p", "test", "verdict"):
        table.add_column(col, justify="right" if col in ("A", "B", "change", "p") else "left")
    for ch in c.changes:
        style = _STYLE.get(ch.verdict, "")
        table.add_row(
            label(ch.run),
            ch.metric,
            f"{ch.a_mean:.4g}",
            f"{ch.b_mean:.4g}",
            "" if ch.change is None else f"{ch.change:+.1%}",
            "" if ch.p_value is None else f"{ch.p_value:.2g}",
            ch.test,
            f"[{style}]{ch.verdict}[/]" if style else ch.verdict,
        )
    console.print(table)
    for title, entries, style in (
        ("ok in A, not ok in B (counted as regressions)", c.broken, "bold red"),
        ("matched but not compared", c.not_compared, ""),
        ("compared over their ok runs only (some runs not ok)", c.partial, "yellow"),
        ("only in A", c.only_a, ""),
        ("only in B", c.only_b, ""),
    ):
        if not entries:
            continue
        console.print(
            f"[{style}]{title}[/]: {len(entries)}" if style else f"{title}: {len(entries)}"
        )
        for entry in entries:
            detail = entry.get("why") or ""
            if "b" in entry and isinstance(entry["b"], dict):
                detail = (
                    f"A {', '.join(entry['a']['statuses'])}; B {', '.join(entry['b']['statuses'])}"
                )
                errors = entry["b"]["errors"] or entry["a"]["errors"]
                if errors:
                    detail += f": {errors[0]}"
            elif "statuses" in entry:
                detail = ", ".join(entry["statuses"])
            console.print(
                f"  {label(entry['key'])}" + (f" ({detail})" if detail else ""), soft_wrap=True
            )
    regressions = len(c.regressions) + len(c.broken)
    verdict = (
        f"[bold red]{regressions} regression(s)[/]" if regressions else "[green]no regression[/]"
    )
    console.print(f"{verdict} (threshold {c.threshold:.0%}, alpha {c.alpha:g})")
