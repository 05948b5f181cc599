"""``migperf plan``: the fewest GPUs, and their MIG layouts, that serve a demand at its SLOs.

Reads a demand file, a results store and any capacities files
(``--capacities FILE``, CSV or YAML); prints the plan (per GPU: layout, which
service on which instance, MPS processes, load against capacity), which
capacity rows each service used and from where, the solver's proven gap and
time, the GPUs saved against the baselines, and writes the plan as a
mig-parted config (with an MPS side file when the plan runs MPS inside MIG).
With ``--verify`` it applies the plan and runs every service co-located. scipy,
pandas and the planner are imported inside the command, so ``migperf --help``
stays fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from migperf.cli._common import DEFAULT_RESULTS, ResultsOption, print_json, stderr, stdout

if TYPE_CHECKING:
    from migperf.nvml.facade import Nvml
    from migperf.planner.capacity import CapacityTable, MissingCapacity
    from migperf.planner.result import Plan
    from migperf.planner.verify import VerifyResult
    from migperf.planner.workflow import EventKind, PlanReport


def plan_command(
    ctx: typer.Context,
    demand_file: Annotated[
        Path,
        typer.Argument(metavar="DEMAND", help="Demand YAML, e.g. configs/demand-example.yaml."),
    ],
    results: ResultsOption = DEFAULT_RESULTS,
    capacities: Annotated[
        list[Path] | None,
        typer.Option(
            "--capacities",
            help="Capacities file (CSV or YAML; repeatable): capacity_qps per GPU model, profile, "
            "service and MPS processes, or raw throughput/latency points. Used with the store; "
            "a file's value wins for the same key.",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the plan as a mig-parted `version: v1` config."),
    ] = None,
    name: Annotated[
        str, typer.Option("--name", "-c", help="Configuration name in the mig-parted file.")
    ] = "migperf-plan",
    write_config: Annotated[
        Path | None,
        typer.Option(
            "--write-config",
            help="Write the experiment config that measures the missing capacities "
            "(one file per GPU model, suffixed with the model, when several lack data).",
        ),
    ] = None,
    assume_linear: Annotated[
        bool,
        typer.Option(
            "--assume-linear",
            help="Estimate missing capacities from the nearest measured profile, scaled by SM "
            "count (labelled 'estimate' everywhere).",
        ),
    ] = False,
    derate: Annotated[
        bool,
        typer.Option(
            "--derate",
            help="Scale capacities by the normalized progress measured in co-located MIG runs.",
        ),
    ] = False,
    gpu_count: Annotated[
        int | None,
        typer.Option(
            "--gpu-count",
            min=1,
            help="Use exactly this many GPUs and maximize the smallest coverage (overrides the "
            "demand's gpu_count).",
        ),
    ] = None,
    time_limit: Annotated[
        float, typer.Option("--time-limit", min=0.1, help="Solver time limit per program (s).")
    ] = 20.0,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Apply the plan, run every service at its share co-located (LoadGen server), "
            "report whether each SLO held, and restore the layouts.",
        ),
    ] = False,
    verify_duration: Annotated[
        float,
        typer.Option("--verify-duration", min=0.0, help="Minimum duration of each verify run (s)."),
    ] = 30.0,
    verify_min_queries: Annotated[
        int | None,
        typer.Option(
            "--verify-min-queries",
            min=1,
            help="LoadGen's minimum query count per verify run (default: enough for early stopping).",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=1.0, help="Wall-clock limit of each verify worker (s)."),
    ] = 900.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Plan MIG layouts: the fewest GPUs that serve every service at its SLO (from measured capacities)."""
    from migperf.planner.workflow import VerifyOptions, plan_demand

    err = stderr()

    def on_event(kind: EventKind, line: str) -> None:
        if kind != "verify" or not as_json:
            err.print(line, soft_wrap=True)

    def open_gpus() -> Nvml:
        from migperf.cli._common import open_for_changes

        return open_for_changes(ctx)

    report = plan_demand(
        demand_file,
        results,
        out=out,
        name=name,
        write_config=write_config,
        assume_linear=assume_linear,
        derate=derate,
        gpu_count=gpu_count,
        time_limit_s=time_limit,
        verify=VerifyOptions(
            open_gpus=open_gpus,
            min_duration_s=verify_duration,
            min_query_count=verify_min_queries,
            timeout_s=timeout,
        )
        if verify
        else None,
        on_event=on_event,
        capacities=tuple(capacities or ()),
    )
    failure = report.failure()
    if as_json:
        print_json(report.to_dict())
        if failure is not None:
            raise typer.Exit(1)
        return
    _print_report(report)
    if failure is not None:
        raise failure


def _print_report(report: PlanReport) -> None:
    err = stderr()
    if report.stage == "measurements":
        _print_missing(report.missing, None)
        for model, target in report.measurements.items():
            err.print(
                f"wrote {target}: measures {sum(1 for m in report.missing if m.model == model)} "
                f"missing value(s) on {model}; run it with `migperf run {target} --results "
                f"{report.results}` on that GPU",
                soft_wrap=True,
            )
        return
    if report.plan is None or report.table is None:
        _print_missing(report.missing, report.results)
        return
    _print_plan(report.plan, report.table)
    if report.mig_parted is not None:
        err.print(
            f"wrote the plan to {report.mig_parted} (apply it with "
            f"`migperf mig apply --config {report.mig_parted}`)",
            soft_wrap=True,
        )
    if report.mps_file is not None:
        err.print(
            f"wrote the MPS processes per MIG instance to {report.mps_file} (mig-parted does not "
            "start MPS; start the daemons and clients it lists)",
            soft_wrap=True,
        )
    elif report.out is not None:
        err.print(f"NOTE: the plan has no GPUs; {report.out} was not written", soft_wrap=True)
    if report.verify is not None:
        _print_verify(report.verify)


def _print_missing(missing: Sequence[MissingCapacity], results: Path | None) -> None:
    from rich.table import Table

    where = f" in {results}" if results is not None else ""
    table = Table(title=f"Missing capacities (never measured{where})", title_justify="left")
    for col in ("GPU model", "profile", "service / job", "note"):
        table.add_column(col)
    for m in missing:
        table.add_row(m.model, m.profile, m.job, m.note)
    stdout().print(table)


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _print_plan(plan: Plan, capacities: CapacityTable) -> None:
    from rich.table import Table

    console = stdout()
    err = stderr()
    kind = "fewest GPUs" if plan.mode == "min-gpus" else f"best coverage on {plan.gpu_count} GPU(s)"
    head = "Plan" if plan.feasible else "Best effort (the demand is NOT met)"
    table = Table(title=f"{head}: {plan.gpus_used} GPU(s), {kind}", title_justify="left")
    mps = plan.uses_mps
    cols = ("GPU", "layout", "instance", "serves", *(("MPS",) if mps else ()), "load")
    for col in (*cols, "capacity", "use"):
        table.add_column(
            col, justify="right" if col in ("MPS", "load", "capacity", "use") else "left"
        )
    for g in plan.gpus:
        where = f"{g.model} #{g.device}" + (f" node {g.node}" if g.node else "")
        seen: dict[str, int] = {}
        for k, inst in enumerate(g.instances):
            n = seen.get(inst.profile, 0)
            seen[inst.profile] = n + 1
            unit = "samples/s" if inst.kind == "train" else "QPS"
            cap = "-" if inst.capacity is None else f"{inst.capacity:,.1f} {unit}"
            if inst.estimate:
                cap += " (estimate)"
            use = (
                f"{inst.load / inst.capacity:.0%}"
                if inst.load is not None and inst.capacity
                else "-"
            )
            procs = (f"x{inst.processes}" if inst.processes > 1 else "-",) if mps else ()
            table.add_row(
                where if k == 0 else "",
                g.layout if k == 0 else "",
                f"{inst.profile}#{n}",
                inst.job or "(idle)",
                *procs,
                _num(inst.load),
                cap,
                use,
                end_section=k == len(g.instances) - 1,
            )
    console.print(table)

    jobs = Table(title="Services and training jobs", title_justify="left")
    for col in (
        "name",
        "SLO / floor",
        "demand",
        "required",
        "capacity",
        "coverage",
        "instances",
        "met",
    ):
        jobs.add_column(col, justify="left" if col in ("name", "SLO / floor", "met") else "right")
    for j in plan.jobs:
        unit = "QPS" if j.kind == "infer" else "samples/s"
        jobs.add_row(
            j.name,
            j.slo or f">= {j.demand:g} samples/s on one instance",
            f"{j.demand:,.1f} {unit}",
            f"{j.required:,.1f}",
            f"{j.capacity:,.1f}" + (" (estimate)" if j.estimate else ""),
            f"{j.coverage:.0%}" if j.demand else "-",
            str(j.instances),
            "yes" if j.met else "NO",
        )
    console.print(jobs)
    _print_used(plan)

    base = Table(title="Against the baselines", title_justify="left")
    for col in ("baseline", "GPUs", "saved by the plan", "detail"):
        base.add_column(col, justify="right" if col in ("GPUs", "saved by the plan") else "left")
    for b in plan.baselines:
        saved = plan.saved_vs(b)
        base.add_row(
            b.title + (f": {b.layout}" if b.layout else ""),
            "-" if b.gpus is None else str(b.gpus),
            "-" if saved is None else f"{saved} ({saved / b.gpus:.0%})" if b.gpus else str(saved),
            b.detail,
        )
    console.print(base)
    sv = plan.solver
    proof = ""
    if sv.gap is not None:
        what = "the GPU count" if plan.mode == "min-gpus" else "the coverage"
        proof = f" Gap HiGHS proved on {what}: {sv.gap:.2%}"
        if sv.lower_bound is not None and plan.mode == "min-gpus":
            proof += f" (no plan uses fewer than {sv.lower_bound} GPU(s))"
        proof += "."
    console.print(
        f"Solver: {sv.statement}.{proof} {sv.solves} program(s): main {sv.main_time_s:.2f} s, "
        f"HiGHS in all {sv.solve_time_s:.2f} s, planning {sv.time_s:.2f} s."
    )
    if sv.why:
        err.print(f"NOT OPTIMAL: {sv.why}", soft_wrap=True)
    estimated = [e for e in capacities.entries.values() if e.source == "estimate"]
    if estimated:
        est = Table(
            title="ESTIMATED capacities (--assume-linear: not measured, scaled by SM count)",
            title_justify="left",
        )
        for col in ("GPU model", "profile", "service / job", "capacity", "estimated from"):
            est.add_column(col, justify="right" if col == "capacity" else "left")
        for e in sorted(estimated, key=lambda e: (e.model, e.job, -e.base)):
            est.add_row(
                e.model, e.profile, e.job, f"{e.value:,.1f} {e.unit} (estimate)", e.estimated_from
            )
        console.print(est)
    for line in plan.explanation:
        err.print(f"WHY: {line}", soft_wrap=True)
    for note in plan.notes:
        err.print(f"NOTE: {note}", soft_wrap=True)


def _print_used(plan: Plan) -> None:
    """Which capacity rows each service and job used, and where each came from."""
    from rich.table import Table

    rows = [(j, u) for j in plan.jobs for u in j.used]
    if not rows:
        return
    table = Table(title="Capacities used (and where they came from)", title_justify="left")
    for col in ("name", "GPU model", "profile", "MPS", "capacity", "instances", "from"):
        table.add_column(col, justify="right" if col in ("capacity", "instances") else "left")
    for j, u in rows:
        unit = "QPS" if j.kind == "infer" else "samples/s"
        table.add_row(
            j.name,
            u.model,
            u.profile,
            f"x{u.processes}" if u.processes > 1 else "-",
            f"{u.capacity:,.1f} {unit}",
            str(u.instances),
            u.origin or "-",
        )
    stdout().print(table)


def _print_verify(checked: VerifyResult) -> None:
    from rich.table import Table

    sim = " (SIMULATED GPU: workers ran on the CPU)" if checked.simulated else ""
    table = Table(title=f"Verification, all services co-located{sim}", title_justify="left")
    for col in ("name", "SLO / floor", "target", "achieved", "worst latency", "held", "detail"):
        table.add_column(
            col, justify="right" if col in ("target", "achieved", "worst latency") else "left"
        )
    for j in checked.jobs:
        bad = next(
            (
                (f"MPS client {i.mps_client}: " if i.mps_client is not None else "") + i.verdict
                for i in j.instances
                if not i.held
            ),
            "",
        )
        table.add_row(
            j.name,
            j.slo or f">= {j.target:g} samples/s",
            _num(j.target),
            _num(j.achieved),
            "-" if j.worst_latency_ms is None else f"{j.worst_latency_ms:.1f} ms",
            "yes" if j.held else "NO",
            bad,
        )
    stdout().print(table)
    stderr().print(
        "layouts restored" if checked.restored else "WARNING: layouts NOT restored", soft_wrap=True
    )
