"""``migperf results``: list, show and export what a store holds (each run's latest attempt)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from migperf.cli._common import DEFAULT_RESULTS, ResultsOption, print_json, stderr, stdout

results_app = typer.Typer(help="Look at and export stored results.", no_args_is_help=True)


@results_app.command("list")
def results_list(
    results: ResultsOption = DEFAULT_RESULTS,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Experiments in a store, with their run counts (each run counted by its latest attempt)."""
    from migperf.results.store import ResultsStore

    # Read-only: listing never creates, upgrades or changes the store.
    with ResultsStore(results, read_only=True) as store:
        rows = store.query(
            "SELECT experiment, config_hash, COUNT(*) AS runs, SUM(status='ok') AS ok, "
            "MIN(started_unix) AS first, MAX(finished_unix) AS last, MAX(simulated) AS simulated, "
            "(SELECT COUNT(*) FROM runs a WHERE a.config_hash = l.config_hash "
            "AND a.experiment = l.experiment) AS attempts "
            "FROM latest_runs l GROUP BY experiment, config_hash ORDER BY last"
        )
    data = [dict(r) for r in rows]
    if as_json:
        print_json(data)
        return
    from rich.table import Table

    table = Table(title=f"experiments in {results}", title_justify="left")
    for col in ("experiment", "config hash", "runs", "ok", "attempts", "simulated", "last run"):
        table.add_column(col)
    for r in data:
        table.add_row(
            r["experiment"],
            r["config_hash"],
            str(r["runs"]),
            str(r["ok"]),
            str(r["attempts"]),
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
    all_attempts: Annotated[
        bool,
        typer.Option(
            "--all-attempts", help="Every stored attempt of each run (default: its latest)."
        ),
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Every column, however wide the terminal.")
    ] = False,
    columns: Annotated[
        str | None,
        typer.Option(
            "--columns", help="Comma-separated columns to show (e.g. workload,slice,p99 ms)."
        ),
    ] = None,
) -> None:
    """One line per run (its latest attempt): slice, workload, status and the headline numbers.

    The table shows what fits the terminal, most useful first (workload, slice,
    batch, status, throughput and p50 always); --wide shows every column.
    """
    from migperf.results import load

    filters = {"experiment": experiment} if experiment else {}
    frame = load(results, wide=True, all_attempts=all_attempts, **filters)
    cols = [
        c
        for c in (
            "experiment",
            *(("attempt",) if all_attempts else ()),
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

    # Interference compares a group's jobs with their baselines: earlier attempts of
    # the same job would count twice, so it is always computed on the latest ones.
    latest = load(results, wide=True, all_attempts=False, **filters) if all_attempts else frame
    inter = interference_table(latest)
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
    shown = _fit_columns(frame, all_attempts=all_attempts, wide=wide, columns=columns)
    from rich.table import Table

    table = Table(
        title=f"{len(frame)} {'attempt' if all_attempts else 'run'}(s) in {results}"
        + (" (SIMULATED GPU: measured on the CPU)" if frame["simulated"].any() else ""),
        title_justify="left",
    )
    for col in shown:
        table.add_column(SHOW_COLUMNS.get(col, col), justify="right" if col in NUMERIC else "left")
    for _, row in frame.iterrows():
        table.add_row(*[_cell(col, row) for col in shown])
    stdout().print(table)
    blank = [
        (SHOW_COLUMNS[col], q)
        for col, q in (("latency_p50_ms", 50.0), ("latency_p99_ms", 99.0))
        if col in shown and frame[col].isna().any()
    ]
    if blank:
        need = ", ".join(f"{name}: {_samples_for(q)}" for name, q in blank)
        stdout().print(
            f"{' and '.join(n for n, _ in blank)} blank where a run measured fewer samples than "
            f"the percentile needs for a 95 % interval ({need}); raise stop.min_iterations or "
            "stop.min_duration_s.",
        )
    if "unstable" in frame.columns and (frame["unstable"] == 1.0).any():
        n = int((frame["unstable"] == 1.0).sum())
        stdout().print(
            f"* unstable ({n} run(s)): the run's three measurement windows disagreed by more than "
            "10 % in throughput (host contention, clocks, thermals); rerun those on a quiet machine "
            "(`migperf run CONFIG --rerun`) before trusting them.",
        )
    hidden = [SHOW_COLUMNS[c] for c in _present(frame, all_attempts) if c not in shown]
    if hidden and not wide and not columns:
        stdout().print(f"more columns with --wide: {', '.join(hidden)}")
    if not inter.empty:
        _print_interference(inter)


#: Columns of ``results show``: stored name -> header (units in the header), most useful first.
SHOW_COLUMNS: dict[str, str] = {
    "workload": "workload",
    "profile": "slice",
    "batch_size": "batch",
    "status": "status",
    "samples_per_s": "samples/s",
    "latency_p50_ms": "p50 ms",
    "latency_p99_ms": "p99 ms",
    "task": "task",
    "precision": "prec",
    "seq_len": "seq",
    "layout": "layout",
    "attempt": "attempt",
    "latency_mean_ms": "mean ms",
    "peak_memory_mib": "peak MiB",
    "experiment": "experiment",
    "gpu_name": "GPU",
    "error": "error",
}
NUMERIC = {"batch_size", "samples_per_s", "latency_p50_ms", "latency_p99_ms", "seq_len"}
NUMERIC |= {"attempt", "latency_mean_ms", "peak_memory_mib"}
#: Always shown, however narrow the terminal.
ESSENTIAL = ("workload", "profile", "batch_size", "status", "samples_per_s", "latency_p50_ms")
#: Workloads whose inputs have a sequence length (the others ignore ``seq_len``).
_LANGUAGE = ("bert", "distilbert", "minilm", "mpnet", "roberta", "gpt", "t5", "llama")


def _cell(col: str, row: Any) -> str:
    value = row.get(col)
    if col == "precision":
        from migperf.results.store import decode_params

        executed = decode_params(row.get("params")).get("precision_executed")
        if executed and executed != value:
            return f"{value}→{executed}"  # asked, then what the CPU ran
    if col == "status" and row.get("unstable") == 1.0:
        return f"{value}*"  # see the footnote: its windows disagreed
    if col == "profile" and _isnan(value):
        return "gpu"  # the whole GPU (MIG off or no MIG)
    if col == "seq_len" and not str(row.get("workload") or "").startswith(_LANGUAGE):
        return ""  # a vision or micro workload has no sequence
    if _isnan(value):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _present(frame: Any, all_attempts: bool) -> list[str]:
    """The columns that have something to show, in order of use."""
    out = []
    for col in SHOW_COLUMNS:
        if col not in frame.columns or (col == "attempt" and not all_attempts):
            continue
        cells = [_cell(col, row) for _, row in frame.iterrows()]
        if col in ESSENTIAL or any(cells):
            out.append(col)
    return out


def _fit_columns(frame: Any, *, all_attempts: bool, wide: bool, columns: str | None) -> list[str]:
    """The columns that fit the terminal: the essential ones, then as many more as fit.

    Raises:
        UsageError: ``--columns`` names a column ``results show`` does not have.
    """
    present = _present(frame, all_attempts)
    if columns:
        from migperf.errors import UsageError

        asked = [c.strip() for c in columns.split(",") if c.strip()]
        by_header = {h: c for c, h in SHOW_COLUMNS.items()}
        unknown = [c for c in asked if c not in SHOW_COLUMNS and c not in by_header]
        if unknown:
            raise UsageError(
                f"--columns: unknown column(s) {', '.join(unknown)}",
                hint=f"choose from {', '.join(SHOW_COLUMNS)}",
            )
        return [by_header.get(c, c) for c in asked]
    if wide:
        return present
    width = stdout().width
    used = 4  # the table's borders

    def need(col: str) -> int:
        cells = [_cell(col, row) for _, row in frame.iterrows()]
        return max([len(SHOW_COLUMNS[col]), *(len(c) for c in cells)]) + 3

    shown = [c for c in present if c in ESSENTIAL]
    used += sum(need(c) for c in shown)
    for col in present:
        if col in shown:
            continue
        if used + need(col) <= width:
            shown.append(col)
            used += need(col)
    return [c for c in present if c in shown]


def _samples_for(q: float) -> int:
    from migperf.bench.stats import min_samples_for_percentile

    return min_samples_for_percentile(q)


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
    out: Annotated[Path, typer.Argument(help="Output file: .csv, .json or .parquet.")],
    results: ResultsOption = DEFAULT_RESULTS,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="csv, parquet or json (default: from OUT's extension: .csv, .json, .parquet)."
        ),
    ] = None,
    tidy: Annotated[
        bool, typer.Option("--tidy", help="One row per run x metric instead of one per run.")
    ] = False,
    all_attempts: Annotated[
        bool,
        typer.Option(
            "--all-attempts",
            help="Every stored attempt of each run (default: its latest); see the attempt column.",
        ),
    ] = False,
) -> None:
    """Export results to CSV, Parquet or JSON (each run's latest attempt, with its attempt number)."""
    from migperf.results import export

    n = export(results, out, fmt, wide=not tidy, all_attempts=all_attempts)
    stderr().print(f"wrote {n} row(s) to {out}")
