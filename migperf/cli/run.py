"""``migperf run``, ``migperf config`` and ``migperf results``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from migperf.cli._common import (
    DEFAULT_RESULTS,
    ResultsOption,
    open_for_reading,
    print_json,
    state,
    stderr,
    stdout,
)

config_app = typer.Typer(help="Experiment config files.", no_args_is_help=True)
results_app = typer.Typer(help="Look at and export stored results.", no_args_is_help=True)


def run_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/quickstart.yaml.")],
    results: ResultsOption = DEFAULT_RESULTS,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip runs already stored for this config.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change and measure nothing.")
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Where the runs execute: local (this machine), or ray[:ADDRESS] (every node of a "
            'Ray cluster with the migperf_host resource; needs `pip install "migperf[ray]"`). '
            "Default: the config's executor field, else local.",
        ),
    ] = None,
) -> None:
    """Run an experiment: each layout in turn, every job on its slices, every result stored."""
    from migperf.errors import ReadOnlyError
    from migperf.experiments.config import load_config
    from migperf.experiments.plan import CURRENT
    from migperf.experiments.runner import ExperimentRunner, plan_experiment
    from migperf.results.store import ResultsStore

    cfg = load_config(config)
    from migperf.experiments.executor import parse_executor

    where = parse_executor(executor) if executor else parse_executor(cfg.executor, f"{config}")
    if where.kind != "local":
        from migperf.cli.run_cluster import run_on_cluster

        run_on_cluster(ctx, cfg, config, where, results, resume=resume, dry_run=dry_run)
        return
    t0 = time.monotonic()
    with open_for_reading(ctx) as nvml:
        plan = plan_experiment(nvml, cfg, str(config))
        plan_s = time.monotonic() - t0
        changes = any(layout.strip().lower() != CURRENT for layout in cfg.layouts)
        err = stderr()
        sim = (
            " on a SIMULATED GPU (workloads run on the CPU; every result is marked simulated)"
            if nvml.simulated
            else ""
        )
        err.print(
            f"{cfg.name}: {len(cfg.layouts)} layout(s) x {len(plan.gpus)} GPU(s), {len(plan.runs)} run(s){sim}; "
            f"estimated {plan.estimated_duration_s() / 60:.1f} min",
            soft_wrap=True,
        )
        if dry_run:
            _print_plan(plan)
            return
        if changes and nvml.read_only and not nvml.simulated:
            raise ReadOnlyError(
                f"refusing to run {config}: it changes MIG layouts and read-only mode is on",
                hint="use `layouts: [current]` to measure the GPU as it is, or drop --read-only",
            )
        with ResultsStore(results) as store:
            runner = ExperimentRunner(
                nvml, plan, store, resume=resume, on_event=_Progress(len(plan.runs))
            )
            report = runner.run()
    report.time_s["plan"] = plan_s
    overhead = report.wall_s - report.time_s["measure"]
    err.print(
        f"{'INTERRUPTED: ' if report.interrupted else ''}{report.stored} run(s) stored ok, {report.failed} failed or skipped, "
        f"{report.skipped_existing} already stored; results in {results}. Wall {report.wall_s:.1f} s, of which measuring "
        f"{report.time_s['measure']:.1f} s and migperf's own {overhead:.1f} s "
        f"(partitioning {report.time_s['partition']:.1f} s, worker start/build/warmup {report.time_s['workers']:.1f} s, "
        f"store {report.time_s['store']:.2f} s). Layouts {'restored' if report.restored else 'NOT restored'}.",
        soft_wrap=True,
    )
    if report.interrupted:
        raise typer.Exit(130)


def _print_plan(plan: Any) -> None:
    console = stdout()
    for (li, gpu), snap in sorted(plan.targets.items()):
        layout = plan.config.layouts[li]
        shown = snap.describe() if snap is not None else "(GPU as it is, MIG off)"
        console.print(f"layout {li + 1}: {layout} on GPU {gpu}: {shown}")
    for i, run in enumerate(plan.runs, 1):
        console.print(f"  run {i}: {run.describe()}")


class _Progress:
    """Progress on stderr: layout k of n, run i of m, the last metric, time left."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.t0 = time.monotonic()
        self.err = stderr()

    def __call__(self, kind: str, **info: Any) -> None:
        if kind == "layout":
            self.err.print(
                f"[bold]layout {info['index'] + 1}/{info['total']}[/]: {info['layout']} ({info['runs']} run(s) to do)"
            )
        elif kind == "layout_failed":
            self.err.print(
                f"[red]layout failed on GPU {info['gpu']}[/]: {info['error']} (rolled back; its runs are recorded as failed)",
                soft_wrap=True,
            )
        elif kind == "run_done":
            self.done += 1
            elapsed = time.monotonic() - self.t0
            left = elapsed / self.done * (self.total - self.done)
            results = info.get("results") or []
            if len(results) > 1:
                # A co-located group: the measured jobs' sum, and how many were ok.
                jobs = [
                    r for r, m in zip(results, info["run"].members, strict=False) if m.role == "job"
                ]
                ok = [r for r in jobs if r.status == "ok"]
                total = sum(r.throughput.samples_per_s for r in ok if r.throughput)
                metric = f"{len(ok)}/{len(jobs)} job(s) ok, {total:.1f} samples/s together"
                bad = next((r for r in results if r.status != "ok"), None)
                if bad is not None and bad.error is not None:
                    metric += f"; {bad.status}: {bad.error.message}"
                status = "ok" if len(ok) == len(jobs) and bad is None else "FAILED"
            elif results:
                r = results[0]
                tp = r.throughput.samples_per_s if r.throughput else None
                metric = f"{tp:.1f} samples/s" if tp else (r.error.message if r.error else r.status)
                status = r.status
            else:
                metric, status = info.get("error", ""), info.get("status", "")
            self.err.print(
                f"  run {self.done}/{self.total} {status}: {info['run'].describe()}: {metric} (~{left:.0f} s left)",
                soft_wrap=True,
            )
        elif kind in ("telemetry_off", "telemetry_warning"):
            why = info.get("error") or info.get("warning")
            prefix = "no telemetry: " if kind == "telemetry_off" else ""
            self.err.print(f"NOTE: {prefix}{why}", soft_wrap=True, markup=False)
        elif kind == "interrupted":
            self.err.print("[yellow]interrupted: restoring the GPU; finished runs are stored[/]")
        elif kind == "recovered":
            self.err.print(
                f"found the journal of an interrupted run ({info['path']}): its original layouts will be restored"
            )
        elif kind == "restore_failed":
            self.err.print(
                f"[red]restoring GPU {info['gpu']} failed[/]: {info['error']}; run `migperf mig restore`",
                soft_wrap=True,
            )


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of experiment files."""
    from migperf.experiments.config import json_schema

    print_json(json_schema())


@config_app.command("check")
def check_config(
    ctx: typer.Context, config: Annotated[Path, typer.Argument(help="Experiment YAML.")]
) -> None:
    """Validate a config against this machine's GPUs and print its plan. Changes nothing."""
    from migperf.experiments.config import load_config
    from migperf.experiments.runner import plan_experiment

    cfg = load_config(config)
    with open_for_reading(ctx) as nvml:
        plan = plan_experiment(nvml, cfg, str(config))
    stdout().print(
        f"{config}: valid; {len(plan.runs)} run(s), estimated {plan.estimated_duration_s() / 60:.1f} min"
    )
    _ = state(ctx)


@results_app.command("list")
def results_list(
    results: ResultsOption = DEFAULT_RESULTS,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Experiments in a store, with their run counts."""
    from migperf.errors import UsageError
    from migperf.results.store import ResultsStore

    if not results.exists():
        raise UsageError(
            f"no results store at {results}",
            hint="run `migperf run CONFIG` first, or pass --results",
        )
    with ResultsStore(results) as store:
        rows = store.query(
            "SELECT experiment, config_hash, COUNT(*) AS runs, SUM(status='ok') AS ok, MIN(started_unix) AS first, "
            "MAX(finished_unix) AS last, MAX(simulated) AS simulated FROM runs GROUP BY experiment, config_hash ORDER BY last"
        )
    data = [dict(r) for r in rows]
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table(title=f"experiments in {results}", title_justify="left")
    for col in ("experiment", "config hash", "runs", "ok", "simulated", "last run"):
        table.add_column(col)
    for r in data:
        table.add_row(
            r["experiment"],
            r["config_hash"],
            str(r["runs"]),
            str(r["ok"]),
            "yes" if r["simulated"] else "no",
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last"])),
        )
    stdout().print(table)


@results_app.command("show")
def results_show(
    results: ResultsOption = DEFAULT_RESULTS,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only this experiment.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One line per run: layout, slice, workload, status and the headline numbers."""
    from migperf.results import load

    filters = {"experiment": experiment} if experiment else {}
    frame = load(results, wide=True, **filters)
    cols = [
        c
        for c in (
            "experiment",
            "gpu_name",
            "layout",
            "profile",
            "workload",
            "task",
            "precision",
            "batch_size",
            "seq_len",
            "status",
            "samples_per_s",
            "latency_mean_ms",
            "latency_p50_ms",
            "latency_p99_ms",
            "peak_memory_mib",
            "simulated",
            "error",
        )
        if c in frame.columns
    ]
    from migperf.sharing.interference import interference_table

    inter = interference_table(frame)
    if as_json:
        records = frame[["run_id", *cols]].to_dict(orient="records")
        by_run = {int(r["run_id"]): r for r in inter.to_dict(orient="records")}
        for rec in records:
            extra = by_run.get(int(rec["run_id"]))
            if extra is not None:
                rec.update(
                    {
                        k: (None if _isnan(extra[k]) else extra[k])
                        for k in ("sharing", "group_id", "np_slot", "np_gpu", "stp", "antt")
                        + ("stp_gpu", "p99_inflation", "alone_samples_per_s")
                    }
                )
            rec.pop("run_id")
        print_json(records)
        return
    from rich.table import Table

    table = Table(
        title=f"{len(frame)} run(s) in {results}"
        + (" (SIMULATED GPU: measured on the CPU)" if frame["simulated"].any() else ""),
        title_justify="left",
    )
    for c in cols:
        table.add_column(c)
    for _, row in frame[cols].iterrows():
        table.add_row(
            *[
                "" if _isnan(v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
                for v in row.tolist()
            ]
        )
    stdout().print(table)
    if not inter.empty:
        _print_interference(inter)


def _print_interference(inter: Any) -> None:
    """The co-located groups: normalized progress, STP, ANTT, p99 inflation."""
    from rich.table import Table

    table = Table(
        title="interference of co-located jobs (NP = throughput shared / alone; "
        "STP = sum of NP; ANTT = mean of 1/NP)",
        title_justify="left",
    )
    for col in (
        "group",
        "sharing",
        "slot",
        "role",
        "workload",
        "samples/s",
        "alone",
        "NP slot",
        "NP gpu",
        "STP",
        "ANTT",
        "p99 x",
    ):
        table.add_column(col)

    def f(v: Any) -> str:
        return "n/a" if _isnan(v) else f"{v:.3g}"

    groups = {g: i + 1 for i, g in enumerate(dict.fromkeys(inter["group_id"]))}
    for _, r in inter.iterrows():
        table.add_row(
            f"#{groups[r['group_id']]}",
            str(r["sharing"]),
            str(r["slot"]),
            str(r["role"]),
            f"{r['workload']} {r['task']} bs={r['batch_size']}",
            f(r["samples_per_s"]),
            f(r["alone_samples_per_s"]),
            f(r["np_slot"]),
            f(r["np_gpu"]),
            f(r["stp"]),
            f(r["antt"]),
            f(r["p99_inflation"]),
        )
    stdout().print(table)
    if inter["np_slot"].isna().any():
        stdout().print(
            "n/a: no run of the same job alone on that slot is stored; add `baselines: true` "
            "to the config to measure them.",
            soft_wrap=True,
        )


def _isnan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and v != v)


@results_app.command("export")
def results_export(
    out: Annotated[Path, typer.Argument(help="Output file.")],
    results: ResultsOption = DEFAULT_RESULTS,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, parquet or json.")] = "csv",
    tidy: Annotated[
        bool, typer.Option("--tidy", help="One row per run x metric instead of one per run.")
    ] = False,
) -> None:
    """Export results to CSV, Parquet or JSON."""
    from migperf.results import export

    n = export(results, out, fmt, wide=not tidy)
    stderr().print(f"wrote {n} row(s) to {out}")
