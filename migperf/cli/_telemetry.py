"""Telemetry for the ``bench`` commands: the options, opening the monitor, the table.

Kept apart from :mod:`migperf.cli.bench` so the commands only gain three
options and two calls. Nothing here imports NVML, torch or rich at import time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from migperf.cli._common import CliState, stderr, stdout
from migperf.cli.bench_common import fmt_number
from migperf.errors import MigperfError

if TYPE_CHECKING:
    from migperf.bench.device import DeviceSelection
    from migperf.bench.monitor import RunMonitor
    from migperf.bench.result import WorkerResult

__all__ = [
    "DcgmUrlOpt",
    "TelemetryIntervalOpt",
    "TelemetryOpt",
    "print_telemetry",
    "telemetry_monitor",
]

TelemetryOpt = Annotated[
    bool | None,
    typer.Option(
        "--telemetry/--no-telemetry",
        help="Sample GPU telemetry (NVML: power, energy counter, clocks, temperature, per-slice "
        "memory and activity) in this process during every run and store it with each result. "
        "Default: on for GPUs and simulated GPUs, off for --device cpu.",
        show_default=False,
    ),
]
TelemetryIntervalOpt = Annotated[
    float,
    typer.Option(
        "--telemetry-interval-ms", min=1.0, help="NVML sampling interval in milliseconds."
    ),
]
DcgmUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--dcgm-url",
        help="Also scrape a running dcgm-exporter, e.g. http://localhost:9400/metrics, for "
        "per-GPU-instance profiling metrics (see docs/telemetry.md).",
        show_default=False,
    ),
]


@contextlib.contextmanager
def telemetry_monitor(
    st: CliState,
    selection: DeviceSelection,
    *,
    telemetry: bool | None,
    interval_ms: float,
    dcgm_url: str | None,
) -> Iterator[RunMonitor | None]:
    """A started :class:`RunMonitor` for the selected device, or None when telemetry is off.

    Telemetry never stops a benchmark: when NVML or the device cannot be
    opened, a NOTE says why on stderr and the runs go on without it.
    """
    err = stderr()
    explicit = telemetry is True
    if telemetry is False or (selection.kind == "cpu" and not selection.simulated):
        if explicit:
            err.print("NOTE: --telemetry: the runs use the CPU; there is no GPU to sample.")
        yield None
        return
    from migperf.bench.launch import optional_monitor
    from migperf.nvml import open_nvml
    from migperf.telemetry.target import resolve_target

    def unavailable(message: str) -> None:
        err.print(f"NOTE: no telemetry: {message}", soft_wrap=True)

    try:
        nvml = open_nvml(st.simulate if selection.simulated else None, read_only=True)
    except MigperfError as exc:
        if explicit or selection.kind == "cuda":
            unavailable(exc.message)
        yield None
        return
    with nvml:
        try:
            env = None if selection.simulated else selection.env()
            target = resolve_target(nvml, selection.requested, env)
        except MigperfError as exc:
            unavailable(exc.message)
            target = None
        else:
            if target is None and explicit:
                err.print("NOTE: --telemetry: the runs use the CPU; there is no GPU to sample.")
        if target is None:
            yield None
            return
        with optional_monitor(
            nvml,
            [target],
            interval_s=interval_ms / 1000.0,
            dcgm_url=dcgm_url,
            on_unavailable=unavailable,
            on_warning=lambda w: err.print(f"NOTE: {w}", soft_wrap=True),
        ) as monitor:
            yield monitor


def print_telemetry(results: list[WorkerResult], repeats: int = 1) -> None:
    """A table of each run's telemetry summary, then what is missing and why (once)."""
    rows = [r for r in results if r.telemetry is not None]
    if not rows:
        return
    from rich.table import Table

    first = rows[0].telemetry
    assert first is not None
    s0 = first.summary
    where = s0.target or "GPU"
    title = f"telemetry · {where}"
    if s0.simulated:
        title += " · SIMULATED GPU"
    table = Table(title=title, title_justify="left")
    table.add_column("batch", justify="right")
    if repeats > 1:
        table.add_column("run", justify="right")
    for col in ("power W mean", "power W max", "energy J", "J/sample"):
        table.add_column(col, justify="right")
    tokens = any(r.telemetry and r.telemetry.summary.energy_per_1k_tokens_j for r in rows)
    if tokens:
        table.add_column("J/1k tokens", justify="right")
    table.add_column("activity %", justify="right")
    table.add_column("slice MiB max", justify="right")
    table.add_column("temp °C max", justify="right")
    table.add_column("readings", justify="right")
    notes: list[str] = []
    reasons: dict[str, str] = {}
    for r in rows:
        assert r.telemetry is not None
        s = r.telemetry.summary
        g = s.gpu
        row = [str(r.batch_size)]
        if repeats > 1:
            row.append(str((r.spec.repeat_index + 1) if r.spec else "-"))
        row += [
            fmt_number(g.power_mean_w if g else None),
            fmt_number(g.power_max_w if g else None),
            fmt_number(g.energy_j if g else None),
            fmt_number(s.energy_per_sample_j, 3),
        ]
        if tokens:
            row.append(fmt_number(s.energy_per_1k_tokens_j, 3))
        act = s.activity
        if act is not None and act.sm_util_pct is not None:
            row.append(f"{fmt_number(act.sm_util_pct, 3)} SM ({act.source})")
        elif act is not None and act.graphics_util_pct is not None:
            row.append(f"{fmt_number(act.graphics_util_pct, 3)} ({act.source})")
        else:
            row.append("n/a")
        row.append(fmt_number(s.instance.memory_used_max_mib if s.instance else None, 5))
        row.append(fmt_number(g.temperature_max_c if g else None, 3))
        row.append(str(g.samples if g else 0))
        table.add_row(*row)
        for n in s.notes:
            if n not in notes:
                notes.append(n)
        for metric, why in s.unsupported.items():
            reasons.setdefault(metric, why)
        series = r.telemetry.series
        for e in series.errors if series is not None else []:
            text = f"{e.what}: {e.message} ({e.count}x); sampling went on"
            if text not in notes:
                notes.append(text)
    out = stdout()
    out.print(table)
    out.print(
        "• power, energy and temperature are whole-GPU values (no per-slice sensor exists); "
        "energy is the energy counter's difference over each measurement window",
        soft_wrap=True,
    )
    for n in notes:
        out.print(f"• {n}", soft_wrap=True)
    by_reason: dict[str, list[str]] = {}
    for metric, why in reasons.items():
        by_reason.setdefault(why, []).append(metric)
    for why, metrics in by_reason.items():
        out.print(f"• not available: {', '.join(metrics)}: {why}", soft_wrap=True)
