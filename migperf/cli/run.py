"""``migperf run`` (one path for every executor) and ``migperf config``."""

from __future__ import annotations

import threading
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


def run_command(
    ctx: typer.Context,
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/quickstart.yaml.")],
    results: ResultsOption = DEFAULT_RESULTS,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Run only what the store lacks for this config, and retry runs whose last "
            "attempt failed.",
        ),
    ] = False,
    rerun: Annotated[
        bool,
        typer.Option(
            "--rerun",
            help="Measure every run again; the new attempts are stored next to the old ones "
            "(results and reports show the latest).",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan; change and measure nothing.")
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            "--executor",
            help="Where the runs execute: local (this machine), ray[:ADDRESS] (every node of a "
            'Ray cluster with the migperf_host resource; needs `pip install "migperf[ray]"`), '
            "or slurm[:PARTITION] (Slurm batch jobs; options in the config's executor field). "
            "Default: the config's executor field, else local.",
        ),
    ] = None,
    workers: Annotated[
        str | None,
        typer.Option(
            "--workers",
            help="warm: one worker per device serves its consecutive runs and builds each model "
            "once; fresh: a new process for every run (full isolation, slower). Default: the "
            "config's workers field, else warm. Each stored result says which.",
        ),
    ] = None,
) -> None:
    """Run an experiment: each layout in turn, every job on its slices, every result stored.

    Exits 0 when every run ended ok and every layout was restored, 1 when a
    run did not (failed, crashed, timed out, out of memory, invalid, skipped)
    or a layout could not be restored, 2 for a usage error (nothing ran), and 130/143/129 after Ctrl-C/SIGTERM/SIGHUP (finished runs stored,
    layouts restored).
    """
    from migperf.errors import UsageError
    from migperf.experiments.config import load_config
    from migperf.experiments.executor import open_executor
    from migperf.experiments.executor_spec import parse_executor
    from migperf.results.store import ResultsStore

    cfg = load_config(config)
    if workers is not None:
        if workers not in ("warm", "fresh"):
            raise UsageError(
                f"--workers {workers!r}: choose warm or fresh",
                hint="warm (the default) reuses a worker per device; fresh starts one per run",
            )
        cfg = cfg.model_copy(update={"workers": workers})
    where = parse_executor(executor) if executor else parse_executor(cfg.executor, f"{config}")
    if executor and isinstance(cfg.executor, dict):
        # `--executor slurm` with `executor: {slurm: {...}}` in the config: its options apply.
        from_config = parse_executor(cfg.executor, f"{config}")
        if from_config.kind == where.kind:
            where = type(where)(
                where.kind, where.address or from_config.address, from_config.options
            )
    st = state(ctx)
    err = stderr()
    t0 = time.monotonic()
    from migperf.experiments.fallback import simulated_machine_for

    with open_executor(
        where, simulate=st.simulate, read_only=st.read_only, fallback=simulated_machine_for(cfg)
    ) as ex:
        for note in ex.notes:
            err.print(f"NOTE: {note}", soft_wrap=True, markup=False)
        plan = ex.plan(cfg, str(config), dry_run=dry_run)
        plan_s = time.monotonic() - t0
        err.print(plan.headline(), soft_wrap=True, markup=False)
        if dry_run:
            for line in plan.describe():
                # Descriptions carry "[mps]", "[baseline]": not markup.
                stdout().print(line, markup=False)
            return
        progress = Progress(len(plan.runs))
        with ResultsStore(results) as store:
            try:
                report = ex.run(plan, store, resume=resume, rerun=rerun, on_event=progress)
            finally:
                progress.close()
    report.time_s["plan"] = plan_s
    print_summary(report, results)
    if report.interrupted:
        # 130 after Ctrl-C, 143 after SIGTERM, 129 after SIGHUP, as a shell reports them.
        raise typer.Exit(128 + int(getattr(report, "signal", None) or 2))
    if report.failed or (cfg.restore and not report.restored):
        # A run that did not end ok, or a GPU not given back: a CI job must not go on as if fine.
        raise typer.Exit(1)


def escape(text: str) -> str:
    """Text for a rich console, its brackets not taken as markup (rich loads on first use)."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def print_summary(report: Any, results: Path) -> None:
    """What a run did, on stderr: per node (on a cluster), then one line for the whole run."""
    err = stderr()
    nodes = getattr(report, "nodes", None)
    for node in nodes or []:
        where = f"node {node['node_id'][:12]} ({node['host']}, {node['model']})"
        if node["lost"]:
            state_text = "[red]LOST[/]: its journal restores its layouts at its next run"
        elif node["restored"] is None:
            state_text = "nothing to do"
        else:
            state_text = "layouts restored" if node["restored"] else "[red]layouts NOT restored[/]"
        err.print(
            f"  {escape(where)}: {node['stored']} ok, {node['failed']} failed; {state_text}",
            soft_wrap=True,
        )
    head = (
        f"{'INTERRUPTED: ' if report.interrupted else ''}{report.stored} run(s) stored ok, "
        f"{report.failed} failed or skipped, {report.skipped_existing} already stored; "
        f"results in {escape(str(results))}."
    )
    t = report.time_s
    if nodes is not None:
        where = "restored on every node" if report.restored else "NOT restored everywhere"
        tail = (
            f" Wall {report.wall_s:.1f} s; measuring took {t['measure']:.1f} node-seconds. "
            f"Layouts {where}."
        )
    else:
        overhead = report.wall_s - t["measure"]
        tail = (
            f" Wall {report.wall_s:.1f} s, of which measuring {t['measure']:.1f} s and migperf's "
            f"own {overhead:.1f} s (partitioning {t['partition']:.1f} s, worker "
            f"start/build/warmup {t['workers']:.1f} s, store {t['store']:.2f} s). "
            f"Layouts {'restored' if report.restored else 'NOT restored'}."
        )
    err.print(head + tail, soft_wrap=True)


class Progress:
    """Progress on stderr, one line per event, for every executor.

    Takes the plain events of :mod:`migperf.experiments.events`; on a cluster
    each line starts with its node. The current run's phase (``run_start``,
    then the worker's ``run_phase`` events: building, warming up, measuring,
    a LoadGen trial) is a live line with the measuring window's bar on a
    terminal, and one plain line per phase otherwise (logs, CI).

    Args:
        total: Runs in the plan (a cluster's events count for themselves).
    """

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.t0 = time.monotonic()
        self.err = stderr()
        self.live = LivePhase(self.err) if self.err.is_terminal else None
        self._lock = threading.RLock()

    def close(self) -> None:
        """Take the live line down (call it once the run is over)."""
        if self.live is not None:
            self.live.stop()

    def __call__(self, kind: str, **info: Any) -> None:
        # Phases arrive from the workers' reader threads: one event at a time.
        with self._lock:
            self._event(kind, info)

    def _event(self, kind: str, info: dict[str, Any]) -> None:
        node = info.get("node")
        if kind in ("run_start", "run_phase"):
            self._phase(kind, info)
            return
        tag = escape(f"[{node.name}] ") if node is not None else ""
        text = {k: escape(v) if isinstance(v, str) else v for k, v in info.items()}
        say = self.err.print
        if kind == "started":
            self.total = info["runs"]  # --resume: only what is left to do is counted
        elif kind == "layout" and (node is None or info.get("runs")):
            say(
                f"{tag}[bold]layout {info['index'] + 1}/{info['total']}[/]: {text['layout']} "
                f"({info['runs']} run(s) to do)"
            )
        elif kind == "layout_failed":
            say(
                f"{tag}[red]layout failed on GPU {info['gpu']}[/]: {text['error']} "
                "(rolled back; its runs are recorded as failed)",
                soft_wrap=True,
            )
        elif kind == "run_done":
            self._run_done(tag, info)
        elif kind in ("telemetry_off", "telemetry_warning"):
            why = info.get("error") or info.get("warning")
            prefix = "no telemetry: " if kind == "telemetry_off" else ""
            say(f"{tag}NOTE: {prefix}{escape(str(why))}", soft_wrap=True)
        elif kind == "interrupted" and node is not None:
            say(f"{tag}stopped")
        elif kind == "interrupted":
            say(
                "[yellow]interrupted: stopping and restoring the GPU(s); finished runs are "
                "stored[/]"
            )
        elif kind == "recovered":
            say(
                f"{tag}GPU {info.get('gpu')}: put back {text.get('layout')}, the layout an "
                f"interrupted {text.get('command') or 'migperf command'} recorded",
                soft_wrap=True,
            )
        elif kind == "restoring":
            say(
                f"{tag}[yellow]restoring the GPU layouts first; this finishes, then migperf stops[/]"
            )
        elif kind == "restore_failed":
            say(
                f"{tag}[red]restoring GPU {info['gpu']} failed[/]: {text['error']}; run "
                "`migperf mig restore`" + (" on that node" if node is not None else ""),
                soft_wrap=True,
            )
        elif kind == "restored" and node is not None and info.get("gpus"):
            gpus = ", ".join(map(str, info["gpus"]))
            ok = "restored" if info.get("ok") else "[red]NOT restored[/]"
            say(f"{tag}layouts {ok} on GPU {gpus}")
        elif kind == "nodes":
            for n in info["nodes"]:
                say(escape(f"[{n.name}] {n.model}{' (simulated)' if n.simulated else ''}"))
        elif kind == "node_start":
            what = f"{info['runs']} run(s)" if info["runs"] else "restoring from its journal"
            say(f"{tag}started: {what} (runner pid {info['pid']})")
        elif kind == "node_lost":
            say(f"[red]{text['error']}[/] ({info['runs_left']} run(s) left)", soft_wrap=True)
        elif kind == "requeued":
            say(f"{tag}takes {info['runs']} run(s) of {escape(info['source'].name)}")
        elif kind == "jobs":
            for line in info["lines"]:
                say(escape(line), soft_wrap=True)
        elif kind == "forced":
            say(
                "[red]not waiting for the nodes' last results; closing them (each restores its "
                "layouts; Ctrl-C again kills them, and each node's journal restores it at its "
                "next run)[/]"
            )

    def _phase(self, kind: str, info: dict[str, Any]) -> None:
        node = info.get("node")
        tag = f"[{node.name}] " if node is not None else ""
        text = phase_text(kind, info)
        if self.live is not None:
            self.live.show(
                f"{tag}run {self.done + 1}/{self.total}: {info.get('description', '')}", text, info
            )
        else:
            self.err.print(
                escape(f"    {tag}{text}: {info.get('description', '')}"), soft_wrap=True
            )

    def _run_done(self, tag: str, info: dict[str, Any]) -> None:
        if self.live is not None:
            self.live.idle()
        self.done = info.get("done", self.done + 1)
        total = info.get("total", self.total)
        elapsed = time.monotonic() - self.t0
        left = elapsed / max(1, self.done) * (total - self.done)
        results = info.get("results") or []
        jobs = [r for r in results if r.get("role") != "neighbor"]
        bad = next((r for r in results if r["status"] != "ok"), None)
        if len(results) > 1:
            # A co-located group: the measured jobs' sum, and how many were ok.
            ok = [r for r in jobs if r["status"] == "ok"]
            together = sum(r["samples_per_s"] or 0.0 for r in ok)
            metric = f"{len(ok)}/{len(jobs)} job(s) ok, {together:.1f} samples/s together"
            if bad is not None and bad.get("error"):
                metric += f"; {bad['status']}: {bad['error']}"
            status = "ok" if len(ok) == len(jobs) and bad is None else "FAILED"
        elif results:
            r = results[0]
            tp = r.get("samples_per_s")
            metric = f"{tp:.1f} samples/s" if tp else (r.get("error") or r["status"])
            status = r["status"]
        else:
            metric, status = info.get("error") or "", info.get("status") or ""
        self.err.print(
            f"  {tag}run {self.done}/{total} {escape(status)}: {escape(info['description'])}: "
            f"{escape(metric)} (~{left:.0f} s left)",
            soft_wrap=True,
        )


def phase_text(kind: str, info: dict[str, Any]) -> str:
    """One phase of a run in words (``measuring (1-10 s)``, ``LoadGen trial 2 of 12``)."""
    if kind == "run_start":
        return "starting"
    phase = info.get("phase")
    if phase == "building":
        return f"building {info.get('workload', '')}".rstrip()
    if phase == "warmup":
        reused = "model reused; " if info.get("model_cached") else ""
        count = info.get("iterations")
        return f"{reused}warming up" + (f" ({count} iterations)" if count is not None else "")
    if phase == "measuring":
        lo, hi = info.get("min_s"), info.get("max_s")
        return "measuring" + (f" ({lo:g}-{hi:g} s)" if lo is not None and hi is not None else "")
    if phase == "trial":
        return f"LoadGen trial {info.get('trial')} of at most {info.get('trials')}"
    return str(phase)


class LivePhase:
    """The current run's phase as one live line on a terminal (elapsed, and a bar while measuring)."""

    def __init__(self, console: Any) -> None:
        from rich.live import Live

        self._what = ""
        self._text = ""
        self._since = time.monotonic()
        self._window: tuple[float, float] | None = None
        self._live = Live(self, console=console, transient=True, refresh_per_second=8)
        self._started = False

    def show(self, what: str, text: str, info: dict[str, Any]) -> None:
        """Switch to a new phase."""
        self._what, self._text, self._since = what, text, time.monotonic()
        lo, hi = info.get("min_s"), info.get("max_s")
        measuring = info.get("phase") == "measuring" and lo is not None and hi is not None
        self._window = (float(lo or 0.0), float(hi or 0.0)) if measuring else None
        if not self._started:
            self._live.start()
            self._started = True

    def idle(self) -> None:
        """Between runs: nothing to show."""
        self._what = self._text = ""

    def stop(self) -> None:
        """Remove the line."""
        if self._started:
            self._live.stop()
            self._started = False

    def __rich__(self) -> Any:
        from rich.text import Text

        if not self._what:
            return Text("")
        elapsed = time.monotonic() - self._since
        line = f"{self._what}: {self._text} {elapsed:.1f} s"
        if self._window is not None:
            lo, _ = self._window
            width = 20
            filled = min(width, int(width * elapsed / lo)) if lo > 0 else width
            line += f" [{'#' * filled}{'.' * (width - filled)}] of at least {lo:g} s"
        return Text(line, overflow="ellipsis", no_wrap=True)


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
    from migperf.experiments.fallback import simulated_machine_for
    from migperf.experiments.planning import plan_experiment

    cfg = load_config(config)
    with open_for_reading(ctx, fallback=simulated_machine_for(cfg)) as nvml:
        plan = plan_experiment(nvml, cfg, str(config))
    stdout().print(
        f"{config}: valid; {len(plan.runs)} run(s), estimated {plan.estimated_duration_s() / 60:.1f} min"
    )
    _ = state(ctx)
