"""``migperf bench train|infer``: measure one workload over a batch-size sweep.

Thin layer over :mod:`migperf.bench`: parse options, run the sweep in worker
processes, print a table (or JSON). torch and transformers are never
imported here; they load in the worker processes only.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from migperf.bench.workloads import workload_names
from migperf.cli import bench_scenarios as sc
from migperf.cli._common import print_json, simulate_or_fallback, state, stderr, stdout
from migperf.cli._telemetry import DcgmUrlOpt, TelemetryIntervalOpt, TelemetryOpt
from migperf.cli.bench_common import (
    TIMEOUT_MARGIN_S,
    Fault,
    RunsFailedError,
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

__all__ = ["RunsFailedError", "app", "parse_model_args"]

app = typer.Typer(
    name="bench",
    help="Measure training and inference throughput and latency of one workload.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


BenchResultsOpt = Annotated[
    Path | None,
    typer.Option(
        "--results",
        help="Also store each result in this results store, as `migperf run` does "
        "(`results show`, `report`, `compare` and `plan` read it).",
        show_default=False,
    ),
]


class PrecisionChoice(str, Enum):
    """Numeric precision of the workload."""

    fp32 = "fp32"
    fp16 = "fp16"
    bf16 = "bf16"


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Workload: " + ", ".join(workload_names()) + ".", show_default=False
    ),
]
BatchOpt = Annotated[
    str,
    typer.Option(
        "--batch-size",
        "-b",
        help="Comma-separated batch sizes, run in ascending order; sizes above one that ran out of memory are skipped.",
    ),
]
SeqLenOpt = Annotated[
    int, typer.Option("--seq-len", min=1, help="Tokens per sequence (language workloads).")
]
PrecisionOpt = Annotated[
    PrecisionChoice, typer.Option("--precision", help="fp32, or fp16 / bf16 under torch.autocast.")
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        "-d",
        help="cpu, a GPU index (0), or a MIG device UUID (MIG-...). Default: the first CUDA device "
        "the worker sees, else the CPU.",
        show_default=False,
    ),
]
MinItOpt = Annotated[
    int, typer.Option("--min-iterations", min=1, help="Measure at least this many iterations.")
]
MinDurOpt = Annotated[
    float,
    typer.Option(
        "--min-duration", min=0.0, help="...and at least this many seconds (both must be met)."
    ),
]
MaxDurOpt = Annotated[
    float,
    typer.Option(
        "--max-duration", min=0.001, help="Stop measuring after this many seconds regardless."
    ),
]
WarmupOpt = Annotated[
    int | None,
    typer.Option(
        "--warmup",
        min=0,
        help="Warmup iterations, kept but not in statistics. Default: 10 infer, 40 train.",
        show_default=False,
    ),
]
RepeatsOpt = Annotated[
    int,
    typer.Option(
        "--repeats",
        "-r",
        min=1,
        help="Separate worker processes per batch size; reports the spread.",
    ),
]
ModelArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--model-arg",
        "-a",
        help="KEY=VALUE override of a config field or workload argument (repeatable), "
        "e.g. num_hidden_layers=2, image_size=128. Values are JSON (2, 0.1, [1,1,1,1]) or plain strings.",
        show_default=False,
    ),
]
CompileOpt = Annotated[bool, typer.Option("--compile", help="Wrap the model in torch.compile.")]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--timeout",
        min=1.0,
        help=f"Seconds before a worker is killed. Default: --max-duration + {TIMEOUT_MARGIN_S:g}.",
        show_default=False,
    ),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the random weights and inputs.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON list of results for scripts.")]
InjectOpt = Annotated[
    Fault | None, typer.Option("--inject", hidden=True, help="Inject a fault (testing).")
]


@app.command("train")
def train(
    ctx: typer.Context,
    model: ModelOpt,
    batch_size: BatchOpt = "1",
    seq_len: SeqLenOpt = 128,
    precision: PrecisionOpt = PrecisionChoice.fp32,
    device: DeviceOpt = None,
    min_iterations: MinItOpt = 10,
    min_duration: MinDurOpt = 5.0,
    max_duration: MaxDurOpt = 60.0,
    warmup: WarmupOpt = None,
    repeats: RepeatsOpt = 1,
    model_arg: ModelArgOpt = None,
    compile_: CompileOpt = False,
    timeout: TimeoutOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    inject: InjectOpt = None,
    telemetry: TelemetryOpt = None,
    telemetry_interval_ms: TelemetryIntervalOpt = 100.0,
    dcgm_url: DcgmUrlOpt = None,
    results: BenchResultsOpt = None,
) -> None:
    """Training: forward, loss, backward, optimizer step (SGD for vision, AdamW for language)."""
    _bench(ctx, "train", **locals_but_ctx(locals()))


@app.command("infer")
def infer(
    ctx: typer.Context,
    model: ModelOpt,
    batch_size: BatchOpt = "1",
    seq_len: SeqLenOpt = 128,
    precision: PrecisionOpt = PrecisionChoice.fp32,
    device: DeviceOpt = None,
    min_iterations: MinItOpt = 10,
    min_duration: MinDurOpt = 5.0,
    max_duration: MaxDurOpt = 60.0,
    warmup: WarmupOpt = None,
    repeats: RepeatsOpt = 1,
    model_arg: ModelArgOpt = None,
    compile_: CompileOpt = False,
    timeout: TimeoutOpt = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    inject: InjectOpt = None,
    telemetry: TelemetryOpt = None,
    telemetry_interval_ms: TelemetryIntervalOpt = 100.0,
    dcgm_url: DcgmUrlOpt = None,
    results: BenchResultsOpt = None,
    scenario: sc.ScenarioOpt = None,
    qps: sc.QpsOpt = None,
    slo_ms: sc.SloOpt = None,
    slo_percentile: sc.SloPercentileOpt = None,
    samples_per_query: sc.SamplesPerQueryOpt = None,
    concurrency: sc.ConcurrencyOpt = None,
    max_queue_delay_ms: sc.QueueDelayOpt = 0.0,
    min_queries: sc.MinQueriesOpt = None,
    max_queries: sc.MaxQueriesOpt = None,
    expected_qps: sc.ExpectedQpsOpt = None,
    expected_latency_ms: sc.ExpectedLatencyOpt = None,
    qsl_size: sc.QslSizeOpt = None,
    find_max_qps: sc.FindMaxOpt = False,
    qps_precision: sc.QpsPrecisionOpt = 0.05,
    max_trials: sc.MaxTrialsOpt = 12,
    log_dir: sc.LogDirOpt = None,
) -> None:
    """Inference: forward passes under torch.inference_mode() with the model in eval().

    With --scenario, the model serves requests under an MLPerf LoadGen scenario
    (or a closed loop) through a dynamic batcher, and each run reports LoadGen's
    verdict in plain words; --find-max-qps searches the highest server QPS within
    the latency SLO.
    """
    plain, scenario_options = sc.split_options(locals_but_ctx(locals()))
    if scenario_options is not None:
        sc.run_scenario_command(ctx, "infer", plain, scenario_options)
        return
    _bench(ctx, "infer", **plain)


def locals_but_ctx(values: dict[str, Any]) -> dict[str, Any]:
    """The command's options without the click context."""
    return {k: v for k, v in values.items() if k != "ctx"}


def _bench(
    ctx: typer.Context,
    task: str,
    *,
    model: str,
    batch_size: str,
    seq_len: int,
    precision: PrecisionChoice,
    device: str | None,
    min_iterations: int,
    min_duration: float,
    max_duration: float,
    warmup: int | None,
    repeats: int,
    model_arg: list[str] | None,
    compile_: bool,
    timeout: float | None,
    seed: int,
    as_json: bool,
    inject: Fault | None,
    telemetry: bool | None = None,
    telemetry_interval_ms: float = 100.0,
    dcgm_url: str | None = None,
    results: Path | None = None,
) -> None:
    from migperf.bench.device import resolve_device
    from migperf.bench.series import parse_batch_sizes
    from migperf.bench.spec import parse_spec
    from migperf.bench.workloads import workload_info

    info = workload_info(model)
    if task not in info.tasks:
        raise UsageError(
            f"{info.name} supports only {' and '.join(info.tasks)}",
            hint=f"run `migperf bench {info.tasks[0]} --model {info.name}`",
        )
    sizes = parse_batch_sizes(batch_size)
    simulate = simulate_or_fallback(ctx, device)
    selection = resolve_device(device, simulated=bool(simulate))
    check_simulated_device(simulate, device)
    spec = parse_spec(
        {
            "workload": info.name,
            "task": task,
            "batch_size": sizes[0],
            "seq_len": seq_len,
            "precision": precision.value,
            "compile": compile_,
            "model_args": parse_model_args(model_arg),
            "warmup_iterations": warmup,
            "min_iterations": min_iterations,
            "min_duration_s": min_duration,
            "max_duration_s": max_duration,
            "seed": seed,
            "expect_device": selection.kind,
            "device_label": selection.requested,
            "simulated": selection.simulated,
            "inject_crash": inject is Fault.crash,
            "inject_hang": inject is Fault.hang,
            "inject_oom": inject is Fault.oom,
        }
    )
    timeout_s = timeout if timeout is not None else max_duration + TIMEOUT_MARGIN_S
    err = stderr()
    if selection.simulated:
        err.print(
            f"NOTE: simulated GPU ({simulate}): the workload runs on this host's CPU; results are marked simulated."
        )

    from migperf.cli._telemetry import print_telemetry, telemetry_monitor

    with telemetry_monitor(
        state(ctx),
        selection,
        telemetry=telemetry,
        interval_ms=telemetry_interval_ms,
        dcgm_url=dcgm_url,
    ) as monitor:
        measured = run_with_progress(spec, sizes, repeats, selection.env(), timeout_s, monitor)

    if results is not None:
        store_and_say(results, measured, device=device, simulate=simulate, repeats=repeats)
    if as_json:
        print_json([r.to_dict() for r in measured])
    else:
        _print_tables(measured, spec, selection.label, repeats)
        print_telemetry(measured, repeats)
    raise_if_failed(measured)


# --- human output -------------------------------------------------------------


def _pct(result: WorkerResult, key: str) -> str:
    if result.latency_ms is None:
        return "-"
    est = result.latency_ms.percentiles.get(key)
    if est is None or est.value is None:
        return "n/a"
    return fmt_number(est.value)


def _print_tables(
    results: list[WorkerResult], spec: BenchSpec, device_label: str, repeats: int
) -> None:
    from rich.table import Table

    from migperf.bench.series import summarize_repeats
    from migperf.bench.workloads import workload_info

    out = stdout()
    family = workload_info(spec.workload).family
    env = next((r.environment for r in results if r.environment), None)
    where = f"{env.device_name} ({env.device_kind})" if env else device_label
    simulated = any(r.simulated for r in results)
    title = f"{spec.workload} {spec.task} · {spec.precision} · {where}"
    if simulated:
        title += " · SIMULATED (measured on CPU)"
    table = Table(title=title, title_justify="left")
    table.add_column("batch", justify="right")
    if repeats > 1:
        table.add_column("run", justify="right")
    table.add_column("status")
    table.add_column("samples/s", justify="right")
    extra: tuple[str, str] | None = ("tokens/s", "tokens_per_s") if family == "language" else None
    if spec.workload == "gemm":
        extra = ("TFLOP/s", "tflop_per_s")
    elif spec.workload == "memcpy":
        extra = ("GB/s", "gb_per_s")
    if extra:
        table.add_column(extra[0], justify="right")
    table.add_column("mean ms (95% CI)", justify="right")
    for key in ("p50", "p90", "p99"):
        table.add_column(f"{key} ms", justify="right")
    phases = ("forward", "backward", "optimizer") if spec.task == "train" else ()
    if phases:
        table.add_column("fwd/bwd/opt ms", justify="right")
    any_cuda = any(r.device_kind == "cuda" for r in results)
    if any_cuda:
        table.add_column("peak MiB", justify="right")
    table.add_column("iters", justify="right")

    notes: list[str] = []
    for r in results:
        row = [str(r.batch_size)]
        if repeats > 1:
            row.append(str((r.spec.repeat_index + 1) if r.spec else "-"))
        row.append(r.status)
        tp = r.throughput
        row.append(fmt_number(tp.samples_per_s) if tp else "-")
        if extra:
            row.append(fmt_number(getattr(tp, extra[1]) if tp else None))
        lat = r.latency_ms
        if lat is not None:
            ci = ""
            if lat.mean_ci_low is not None and lat.mean_ci_high is not None:
                ci = f" ±{fmt_number((lat.mean_ci_high - lat.mean_ci_low) / 2, 2)}"
            row.append(fmt_number(lat.mean) + ci)
        else:
            row.append("-")
        row.extend(_pct(r, key) for key in ("p50", "p90", "p99"))
        if phases:
            parts = [r.phase_ms.get(p) for p in phases]
            row.append("/".join(fmt_number(s.mean, 3) if s else "-" for s in parts))
        if any_cuda:
            row.append(fmt_number(r.peak_memory_mib, 5))
        row.append(str(r.timing.iterations) if r.timing else "-")
        table.add_row(*row)
        who = f"batch {r.batch_size}"
        if repeats > 1 and r.spec is not None:
            who += f" run {r.spec.repeat_index + 1}"
        if r.error is not None:
            notes.append(f"{who}: {r.status}: {r.error.message}")
        notes.extend(f"{who}: {w}" for w in r.warnings)
        if lat is not None:
            for key in ("p90", "p99"):
                est = lat.percentiles.get(key)
                if est is not None and est.insufficient:
                    notes.append(f"{who}: {est.insufficient}")
    out.print(table)

    if repeats > 1:
        spread = Table(title="spread over repeats (separate processes)", title_justify="left")
        for col in ("batch", "ok runs", "samples/s mean", "std", "CV", "95% CI of mean", "median"):
            spread.add_column(col, justify="right" if col != "batch" else "left")
        for s in summarize_repeats(results):
            sm = s.samples_per_s
            if sm is None:
                spread.add_row(str(s.batch_size), f"0/{s.runs}", "-", "-", "-", "-", "-")
                continue
            ci = (
                f"{fmt_number(sm.mean_ci_low)} – {fmt_number(sm.mean_ci_high)}"
                if sm.mean_ci_low is not None and sm.mean_ci_high is not None
                else "-"
            )
            cv = f"{sm.cv:.1%}" + (" (high)" if s.high_cv else "") if sm.cv is not None else "-"
            spread.add_row(
                str(s.batch_size),
                f"{s.runs_ok}/{s.runs}",
                fmt_number(sm.mean),
                fmt_number(sm.std),
                cv,
                ci,
                fmt_number(sm.median),
            )
            if s.high_cv:
                notes.append(
                    f"batch {s.batch_size}: repeats disagree (CV {sm.cv:.1%} > 10%); "
                    "results are not stable across processes"
                )
        out.print(spread)

    for note in notes:
        out.print(f"• {note}", soft_wrap=True)
