"""``migperf bench infer --scenario ...``: MLPerf LoadGen scenarios and the capacity search.

The options of the scenario mode of ``bench infer`` and what it does with
them: build a :class:`~migperf.bench.spec.BenchSpec` with a
:class:`~migperf.bench.scenario_spec.ScenarioSpec`, run it in worker
processes (one per max batch size and repeat), and print each run's verdict
in plain words, its QPS and latency, where LoadGen's logs are, and, with
``--find-max-qps``, the capacity found. Like the rest of the CLI it imports
neither torch nor LoadGen; the workers do.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from migperf.bench.scenario_spec import DEFAULT_LATENCY_TARGET_MS
from migperf.cli._common import print_json, simulate_or_fallback, state, stderr, stdout
from migperf.cli.bench_common import (
    TIMEOUT_MARGIN_S,
    Fault,
    check_simulated_device,
    fmt_number,
    parse_model_args,
    raise_if_failed,
    run_with_progress,
    store_and_say,
)
from migperf.errors import UsageError

if TYPE_CHECKING:
    from migperf.bench.result import WorkerResult
    from migperf.bench.spec import BenchSpec

__all__ = ["SCENARIO_OPTIONS", "ScenarioChoice", "run_scenario_command", "split_options"]


class ScenarioChoice(str, Enum):
    """Inference scenario (MLPerf LoadGen's four, and migperf's closed loop)."""

    single_stream = "single-stream"
    multi_stream = "multi-stream"
    server = "server"
    offline = "offline"
    closed_loop = "closed-loop"


ScenarioOpt = Annotated[
    ScenarioChoice | None,
    typer.Option(
        "--scenario",
        help="Serve the model under an MLPerf LoadGen scenario instead of timing back-to-back "
        "batches: single-stream, multi-stream, server (Poisson arrivals at --qps, judged against "
        "--slo-ms), offline; or closed-loop (--concurrency requests outstanding, not LoadGen). "
        "--batch-size is then the dynamic batcher's maximum batch size.",
        show_default=False,
    ),
]
QpsOpt = Annotated[
    float | None,
    typer.Option(
        "--qps",
        min=0.001,
        help="Server: arrival rate in queries per second. With --find-max-qps: where the search "
        "starts (default: half the capacity measured in warmup).",
        show_default=False,
    ),
]
SloOpt = Annotated[
    float | None,
    typer.Option(
        "--slo-ms",
        min=0.001,
        help=f"Latency target in ms at --slo-percentile. Server: LoadGen's target (default "
        f"{DEFAULT_LATENCY_TARGET_MS:g}); other scenarios: an extra check that does not change "
        "LoadGen's verdict.",
        show_default=False,
    ),
]
SloPercentileOpt = Annotated[
    float | None,
    typer.Option(
        "--slo-percentile",
        help="Percentile the target applies to: 50, 90, 95, 97, 99 or 99.9 "
        "(default: 90 single-stream, 99 otherwise).",
        show_default=False,
    ),
]
SamplesPerQueryOpt = Annotated[
    int | None,
    typer.Option(
        "--samples-per-query",
        min=1,
        help="Multi-stream: samples per query (default 8).",
        show_default=False,
    ),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=1,
        help="Closed-loop: requests kept outstanding (default 1).",
        show_default=False,
    ),
]
QueueDelayOpt = Annotated[
    float,
    typer.Option(
        "--max-queue-delay-ms",
        min=0.0,
        help="Dynamic batcher: how long the first queued sample may wait for a fuller batch.",
    ),
]
MinQueriesOpt = Annotated[
    int | None,
    typer.Option(
        "--min-queries",
        min=1,
        help="LoadGen's minimum query count (offline: minimum samples); with --min-duration. "
        "Default: enough for LoadGen's early stopping to bound the percentile, at least 100 "
        "(server p99: 918, multi-stream p99: 662).",
        show_default=False,
    ),
]
MaxQueriesOpt = Annotated[
    int | None,
    typer.Option("--max-queries", min=1, help="LoadGen's maximum query count.", show_default=False),
]
ExpectedQpsOpt = Annotated[
    float | None,
    typer.Option(
        "--expected-qps",
        min=0.001,
        help="Offline: samples/s LoadGen sizes its one query for (default: 1.5 x the warmup's "
        "estimate).",
        show_default=False,
    ),
]
ExpectedLatencyOpt = Annotated[
    float | None,
    typer.Option(
        "--expected-latency-ms",
        min=0.001,
        help="Single-/multi-stream: the latency per query LoadGen pre-generates queries for "
        "(default: a quarter of the warmup's; lower it if LoadGen runs out of queries).",
        show_default=False,
    ),
]
QslSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--qsl-size",
        min=1,
        help="Synthetic samples in LoadGen's query-sample library (default: 64 or the batch size).",
        show_default=False,
    ),
]
FindMaxOpt = Annotated[
    bool,
    typer.Option(
        "--find-max-qps",
        help="Server: search the highest QPS LoadGen judges VALID under --slo-ms (bisection over "
        "runs) and report it as the slice's capacity for this model and SLO.",
    ),
]
QpsPrecisionOpt = Annotated[
    float,
    typer.Option(
        "--qps-precision",
        min=0.001,
        max=0.999,
        help="--find-max-qps stops when the lowest INVALID QPS is within this fraction above "
        "the highest VALID one.",
    ),
]
MaxTrialsOpt = Annotated[
    int, typer.Option("--max-trials", min=2, help="--find-max-qps: most LoadGen runs.")
]
LogDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--log-dir",
        help="Where LoadGen's logs are kept, one subdirectory per run "
        "(default: results/loadgen under the current directory).",
        show_default=False,
    ),
]

#: The scenario options with their defaults; any other value needs --scenario.
SCENARIO_OPTIONS: dict[str, Any] = {
    "scenario": None,
    "qps": None,
    "slo_ms": None,
    "slo_percentile": None,
    "samples_per_query": None,
    "concurrency": None,
    "max_queue_delay_ms": 0.0,
    "min_queries": None,
    "max_queries": None,
    "expected_qps": None,
    "expected_latency_ms": None,
    "qsl_size": None,
    "find_max_qps": False,
    "qps_precision": 0.05,
    "max_trials": 12,
    "log_dir": None,
}

_FLAGS = {name: "--" + name.replace("_", "-") for name in SCENARIO_OPTIONS}


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Split ``bench infer``'s options into the plain ones and the scenario ones.

    Returns:
        ``(plain options, scenario options or None without --scenario)``.

    Raises:
        UsageError: When a scenario option is given without ``--scenario``.
    """
    plain = {k: v for k, v in options.items() if k not in SCENARIO_OPTIONS}
    chosen = {k: options.get(k, d) for k, d in SCENARIO_OPTIONS.items()}
    if chosen["scenario"] is not None:
        return plain, chosen
    stray = [_FLAGS[k] for k, d in SCENARIO_OPTIONS.items() if chosen[k] != d]
    if stray:
        raise UsageError(
            f"{', '.join(stray)} only apply with --scenario",
            hint="e.g. `migperf bench infer --model resnet50 --scenario server --qps 200 --slo-ms 50`",
        )
    return plain, None


def run_scenario_command(
    ctx: typer.Context, task: str, plain: dict[str, Any], opts: dict[str, Any]
) -> None:
    """Run ``bench infer --scenario``: build the spec, run the workers, print the verdicts.

    Raises:
        UsageError: For an invalid combination of options.
        RunsFailedError: When a run crashed, timed out or was aborted.
    """
    from migperf.bench.device import resolve_device
    from migperf.bench.scenarios import DEFAULT_LOG_ROOT
    from migperf.bench.series import parse_batch_sizes
    from migperf.bench.spec import parse_spec
    from migperf.bench.workloads import workload_info

    info = workload_info(plain["model"])
    if task not in info.tasks:
        raise UsageError(
            f"{info.name} supports only {' and '.join(info.tasks)}",
            hint=f"run `migperf bench {info.tasks[0]} --model {info.name}`",
        )
    name = ScenarioChoice(opts["scenario"]).value
    if name == "server" and opts["qps"] is None and not opts["find_max_qps"]:
        raise UsageError(
            "--scenario server needs --qps (the Poisson arrival rate) or --find-max-qps",
            hint="e.g. --qps 200 --slo-ms 50, or --find-max-qps --slo-ms 50 to find the capacity",
        )
    if opts["find_max_qps"] and name != "server":
        raise UsageError(
            f"--find-max-qps searches server-scenario rates; it does not apply to {name}",
            hint="use --scenario server --find-max-qps --slo-ms 50",
        )
    for key, only in (
        ("qps", ("server",)),
        ("concurrency", ("closed-loop",)),
        ("samples_per_query", ("multi-stream",)),
        ("expected_qps", ("offline",)),
        ("expected_latency_ms", ("single-stream", "multi-stream")),
        ("slo_ms", ("single-stream", "multi-stream", "server", "closed-loop")),
        ("slo_percentile", ("single-stream", "multi-stream", "server", "closed-loop")),
    ):
        if opts[key] is not None and name not in only:
            where = " or ".join(only)
            raise UsageError(
                f"{_FLAGS[key]} applies to --scenario {where}, not {name}",
                hint=f"drop {_FLAGS[key]}",
            )
    sizes = parse_batch_sizes(plain["batch_size"])
    simulate = simulate_or_fallback(ctx, plain["device"])
    selection = resolve_device(plain["device"], simulated=bool(simulate))
    check_simulated_device(simulate, plain["device"])
    log_root = Path(opts["log_dir"] or DEFAULT_LOG_ROOT).expanduser().resolve()
    scenario: dict[str, Any] = {
        "name": name,
        "target_qps": opts["qps"],
        "latency_target_ms": opts["slo_ms"],
        "latency_percentile": opts["slo_percentile"],
        "samples_per_query": opts["samples_per_query"],
        "concurrency": opts["concurrency"],
        "max_queue_delay_ms": opts["max_queue_delay_ms"],
        "min_query_count": opts["min_queries"],
        "max_query_count": opts["max_queries"],
        "expected_qps": opts["expected_qps"],
        "expected_latency_ms": opts["expected_latency_ms"],
        "qsl_size": opts["qsl_size"],
        "find_max_qps": opts["find_max_qps"],
        "qps_precision": opts["qps_precision"],
        "max_trials": opts["max_trials"],
    }
    spec = parse_spec(
        {
            "workload": info.name,
            "task": task,
            "batch_size": sizes[0],
            "seq_len": plain["seq_len"],
            "precision": plain["precision"].value,
            "compile": plain["compile_"],
            "model_args": parse_model_args(plain["model_arg"]),
            "warmup_iterations": plain["warmup"],
            "min_duration_s": plain["min_duration"],
            "max_duration_s": plain["max_duration"],
            "seed": plain["seed"],
            "expect_device": selection.kind,
            "device_label": selection.requested,
            "simulated": selection.simulated,
            "scenario": scenario,
            "loadgen_log_dir": str(log_root),
            "inject_crash": plain.get("inject") is Fault.crash,
            "inject_hang": plain.get("inject") is Fault.hang,
            "inject_oom": plain.get("inject") is Fault.oom,
        }
    )
    per_run = plain["max_duration"]
    if opts["find_max_qps"]:
        # Each trial may run to max_duration and then drain what is queued.
        per_run = opts["max_trials"] * (plain["max_duration"] * 2 + 30.0)
    timeout_s = plain["timeout"] if plain["timeout"] is not None else per_run + TIMEOUT_MARGIN_S
    err = stderr()
    if selection.simulated:
        err.print(
            f"NOTE: simulated GPU ({simulate}): the workload runs on this host's CPU; results are marked simulated."
        )
    if info.family == "synthetic":
        err.print(f"NOTE: {info.name} is a SYNTHETIC workload: no model runs; it tests migperf.")
    if name != "closed-loop":
        err.print(f"LoadGen logs go to {log_root}/<run>/")

    from migperf.cli._telemetry import print_telemetry, telemetry_monitor

    with telemetry_monitor(
        state(ctx),
        selection,
        telemetry=plain.get("telemetry"),
        interval_ms=plain.get("telemetry_interval_ms", 100.0),
        dcgm_url=plain.get("dcgm_url"),
    ) as monitor:
        results = run_with_progress(
            spec, sizes, plain["repeats"], selection.env(), timeout_s, monitor
        )

    if plain.get("results") is not None:
        store_and_say(
            plain["results"], results, device=plain["device"], simulate=simulate, repeats=plain["repeats"]
        )
    if plain["as_json"]:
        print_json([r.to_dict() for r in results])
    else:
        _print_scenario_tables(results, spec, selection.label, plain["repeats"])
        print_telemetry(results, plain["repeats"])
    raise_if_failed(results)


def _print_scenario_tables(
    results: list[WorkerResult], spec: BenchSpec, device_label: str, repeats: int
) -> None:
    from rich.table import Table

    out = stdout()
    sc = spec.scenario
    assert sc is not None
    env = next((r.environment for r in results if r.environment), None)
    where = f"{env.device_name} ({env.device_kind})" if env else device_label
    title = f"{spec.workload} {sc.name} · {spec.precision} · {where}"
    if any(r.simulated for r in results):
        title += " · SIMULATED (measured on CPU)"
    search = sc.find_max_qps
    table = Table(title=title, title_justify="left")
    table.add_column("max batch", justify="right")
    if repeats > 1:
        table.add_column("run", justify="right")
    table.add_column("status")
    table.add_column("verdict")
    if search:
        table.add_column("max QPS under SLO", justify="right")
    if sc.name == "server":
        table.add_column("target QPS", justify="right")
    table.add_column("samples/s", justify="right")
    for key in ("p50", "p90", "p99"):
        table.add_column(f"{key} ms", justify="right")
    table.add_column("queries", justify="right")
    table.add_column("mean batch", justify="right")
    notes: list[str] = []
    for r in results:
        s = r.scenario
        row = [str(r.batch_size)]
        if repeats > 1:
            row.append(str((r.spec.repeat_index + 1) if r.spec else "-"))
        row.append(r.status)
        if s is None:
            row.append("-")
            if search:
                row.append("-")
            if sc.name == "server":
                row.append("-")
            row.extend(["-"] * 6)
        else:
            row.append("VALID" if s.valid else "INVALID" if s.valid is False else "-")
            if search:
                row.append(fmt_number(s.max_qps_under_slo))
            if sc.name == "server":
                row.append(fmt_number(s.target_qps))
            lat = s.query_latency_ms or s.latency_ms
            row.append(fmt_number(s.completed_qps))
            row.extend(fmt_number(getattr(lat, key)) for key in ("p50", "p90", "p99"))
            row.append(f"{s.query_count:,}" if s.query_count is not None else "-")
            row.append(fmt_number(s.batching.mean_batch_size, 3) if s.batching else "-")
        table.add_row(*row)
        who = f"max batch {r.batch_size}"
        if repeats > 1 and r.spec is not None:
            who += f" run {r.spec.repeat_index + 1}"
        if r.error is not None:
            notes.append(f"{who}: {r.status}: {r.error.message}")
        if s is not None:
            notes.extend(_scenario_notes(who, s))
        notes.extend(f"{who}: {w}" for w in r.warnings if s is None or w != s.verdict)
    out.print(table)
    for r in results:
        if r.scenario is not None and r.scenario.max_qps is not None:
            _print_trials(r)
    for note in notes:
        out.print(f"• {note}", soft_wrap=True)


def _scenario_notes(who: str, s: Any) -> list[str]:
    notes = [f"{who}: {s.verdict}"]
    m = s.max_qps
    if m is not None:
        if m.max_qps_under_slo is not None:
            above = (
                f"; {fmt_number(m.lowest_invalid_qps)} QPS was INVALID"
                if m.lowest_invalid_qps is not None
                else ""
            )
            precision = (
                f" (precision {m.achieved_precision:.1%})"
                if m.achieved_precision is not None
                else ""
            )
            notes.append(
                f"{who}: capacity {fmt_number(m.max_qps_under_slo)} QPS with p{m.slo_percentile:g} "
                f"within {fmt_number(m.slo_latency_ms)} ms{above}{precision}"
            )
        if m.reason:
            notes.append(f"{who}: capacity search: {m.reason}")
    if m is not None and m.log_dir:
        notes.append(f"{who}: LoadGen logs of the search: {m.log_dir} (one directory per trial)")
    elif s.log_dir:
        notes.append(f"{who}: LoadGen logs: {s.log_dir}")
    return notes


def _print_trials(r: WorkerResult) -> None:
    from rich.table import Table

    s = r.scenario
    assert s is not None and s.max_qps is not None
    m = s.max_qps
    table = Table(
        title=f"capacity search, max batch {r.batch_size}: p{m.slo_percentile:g} within "
        f"{fmt_number(m.slo_latency_ms)} ms",
        title_justify="left",
    )
    for col in ("trial", "target QPS", "verdict", f"p{m.slo_percentile:g} ms", "samples/s"):
        table.add_column(col, justify="left" if col == "verdict" else "right")
    for i, t in enumerate(m.trials, 1):
        table.add_row(
            str(i),
            fmt_number(t.target_qps),
            "VALID" if t.valid else "INVALID",
            fmt_number(t.target_percentile_latency_ms),
            fmt_number(t.completed_qps),
        )
    stdout().print(table)
